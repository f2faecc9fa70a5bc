"""The private PostgreSQL the suite runs on: fresh databases that are empty, separate from
each other, and reachable only as the URL says."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests import harness
from tests.environment import missing
from tests.harness import postgresql_in_checkout
from tests.postgres import PostgresServer


def driver() -> ModuleType:
    """psycopg: installed with the `postgresql` extra, which scripts/dev.py installs once
    the checkout has it (a skip before that, even under CI)."""
    try:
        import psycopg
    except ImportError:
        reason = "psycopg is not installed (pip install -e '.[postgresql]')"
        if not postgresql_in_checkout():
            pytest.skip(f"{reason}; this checkout has no PostgreSQL engine yet")
        missing(reason)
    return psycopg


def test_a_fresh_database_is_empty_and_writable(postgres_server: PostgresServer) -> None:
    psycopg = driver()
    url = postgres_server.create_database()
    assert url.startswith(f"postgresql://postgres@127.0.0.1:{postgres_server.port}/")
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)
        conn.execute("CREATE TABLE t (n integer)")
        conn.execute("INSERT INTO t VALUES (42)")
        assert conn.execute("SELECT n FROM t").fetchall() == [(42,)]


def test_each_database_is_its_own(postgres_server: PostgresServer) -> None:
    psycopg = driver()
    first, second = postgres_server.create_database(), postgres_server.create_database()
    assert first != second
    with psycopg.connect(first, autocommit=True) as conn:
        conn.execute("CREATE TABLE only_here (n integer)")
    with psycopg.connect(second, autocommit=True) as conn:
        found = conn.execute("SELECT to_regclass('public.only_here')").fetchone()
    assert found == (None,)


def test_the_server_listens_on_loopback_only(postgres_server: PostgresServer) -> None:
    psycopg = driver()
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        setting = conn.execute("SHOW listen_addresses").fetchone()
    assert setting == ("127.0.0.1",)


async def test_an_async_connection_works(postgres_server: PostgresServer) -> None:
    psycopg = driver()
    url = postgres_server.create_database()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT current_database()")
        assert (await cur.fetchone()) == (url.rsplit("/", 1)[1],)


def test_postgresql_mode_gives_each_state_directory_its_own_database(
        postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    driver()
    monkeypatch.setenv(harness.ENGINE_VARIABLE, "postgresql")
    monkeypatch.setattr(harness, "_current", harness.Databases(postgres_server))
    first, second = harness.database(tmp_path / "a"), harness.database(tmp_path / "b")
    assert isinstance(first, str) and first.startswith("postgresql://")
    assert first != second and harness.database(tmp_path / "a") == first
    assert harness.database_table(tmp_path / "a") == f'[database]\nurl = "{first}"\n'
    harness.query(first, "CREATE TABLE t (n integer)")
    harness.query(first, "INSERT INTO t VALUES (?)", 7)
    assert harness.scalar(first, "SELECT n FROM t WHERE n = ?", 7) == 7


def test_sqlite_mode_keeps_the_database_in_the_state_directory(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(harness.ENGINE_VARIABLE, raising=False)
    assert harness.database(tmp_path / "state") == tmp_path / "state" / "mailgate.sqlite3"
    assert harness.database_table(tmp_path / "state") == ""
    monkeypatch.setenv(harness.ENGINE_VARIABLE, "mysql")
    with pytest.raises(ValueError, match="expected one of sqlite, postgresql"):
        harness.engine()
