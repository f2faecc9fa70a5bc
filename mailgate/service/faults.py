"""Crash points for the crash-safety tests.

`MAILGATE_CRASHPOINT=after_send mailgate run` makes the process die (like SIGKILL, no
cleanup) the first time it reaches that point, so a test can hit a precise instant such as
"the SMTP server said 250 but the outbox row is not yet marked sent". Unset, it costs one
string comparison.
"""

from __future__ import annotations

import os

_ARMED = os.environ.get("MAILGATE_CRASHPOINT", "")


def crashpoint(name: str) -> None:
    if name == _ARMED:
        os._exit(137)
