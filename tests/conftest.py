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


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own, which it may restart or kill (tests/postgres.py):
    the session's server is shared by every other test and must stay up."""
    reason = unusable_postgres()
    if reason is not None:
        missing(reason)
    bindir = find_postgres()
    assert bindir is not None
    server = PostgresServer(bindir, survives_kill=True)
    server.start()
    yield server
    server.cleanup()


# --- the engine switch (tests/harness.py) ------------------------------------------------

def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only(reason): a test about SQLite itself; "
                            "skipped when MAILGATE_TEST_ENGINE=postgresql")
    config.addinivalue_line("markers", "postgresql_only(reason): a test about the PostgreSQL "
                            "engine itself; skipped unless MAILGATE_TEST_ENGINE=postgresql")


def pytest_report_header() -> str:
    return f"database engine: {harness.engine()} (${harness.ENGINE_VARIABLE})"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each engine's own tests run in that engine's mode only."""
    other, label, default = (("sqlite_only", "SQLite only", "about SQLite itself")
                             if harness.on_postgresql() else
                             ("postgresql_only", "PostgreSQL only", "about PostgreSQL itself"))
    for item in items:
        marker = item.get_closest_marker(other)
        if marker:
            why = marker.args[0] if marker.args else default
            item.add_marker(pytest.mark.skip(reason=f"{label}: {why}"))


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
