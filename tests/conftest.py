"""Fixtures that start real servers: a session-wide Dovecot, a per-test aiosmtpd sink."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.mailservers import DovecotServer, ImapAccount, SmtpSink, find_dovecot


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    binary = find_dovecot()
    if binary is None:
        message = ("Dovecot is not installed (apt-get install dovecot-imapd, or run "
                   "`python3 scripts/dev.py test` as root to install it)")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    server = DovecotServer(binary)
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def imap_account(dovecot: DovecotServer) -> ImapAccount:
    return dovecot.add_user()


@pytest.fixture
async def smtp_sink() -> AsyncIterator[SmtpSink]:
    sink = SmtpSink()
    await sink.start()
    yield sink
    await sink.stop()
