"""Fixtures that start real servers: a session-wide Dovecot and PostgreSQL, a per-test
aiosmtpd sink."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests import harness
from tests.environment import missing
from tests.mailservers import DovecotServer, ImapAccount, SmtpSink, find_dovecot
from tests.postgres import PostgresServer, find_postgres, unusable_postgres


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    binary = find_dovecot()
    if binary is None:
        message = ("Dovecot is not installed (apt-get install dovecot-imapd, or run "
                   "`python3 scripts/dev.py test` as root to install it)")
        missing(message)
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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One private PostgreSQL for the session; `create_database()` gives each test its own."""
    reason = unusable_postgres()
    if reason is not None:
        missing(reason)
    bindir = find_postgres()
    assert bindir is not None
    server = PostgresServer(bindir)
    server.start()
    yield server
    server.cleanup()


# --- the engine switch (tests/harness.py) ------------------------------------------------

def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only(reason): a test about SQLite itself; "
                            "skipped when MAILGATE_TEST_ENGINE=postgresql")


def pytest_report_header() -> str:
    return f"database engine: {harness.engine()} (${harness.ENGINE_VARIABLE})"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not harness.on_postgresql():
        return
    for item in items:
        marker = item.get_closest_marker("sqlite_only")
        if marker:
            why = marker.args[0] if marker.args else "about SQLite itself"
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {why}"))


@pytest.fixture(autouse=True)
def test_databases(request: pytest.FixtureRequest) -> Iterator[None]:
    """In postgresql mode, each test's databases (created when first asked for) live on
    the session's PostgreSQL; in sqlite mode they are files in the test's directory."""
    if not harness.on_postgresql() or request.node.get_closest_marker("sqlite_only"):
        yield
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    harness.use(harness.Databases(server))
    yield
    harness.use(None)
