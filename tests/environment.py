"""What a test needs from the machine and does not find: a skip on a workstation, a failure
under CI=true, where scripts/dev.py installs everything the suite needs, so an absence there
is a broken setup that must not pass as green."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def missing(message: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)
