"""The private PostgreSQL the suite runs on: fresh databases that are empty, separate from
each other, and reachable only as the URL says."""

from __future__ import annotations

import pytest

from tests.postgres import PostgresServer

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install psycopg)")


def test_a_fresh_database_is_empty_and_writable(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    assert url.startswith(f"postgresql://postgres@127.0.0.1:{postgres_server.port}/")
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)
        conn.execute("CREATE TABLE t (n integer)")
        conn.execute("INSERT INTO t VALUES (42)")
        assert conn.execute("SELECT n FROM t").fetchall() == [(42,)]


def test_each_database_is_its_own(postgres_server: PostgresServer) -> None:
    first, second = postgres_server.create_database(), postgres_server.create_database()
    assert first != second
    with psycopg.connect(first, autocommit=True) as conn:
        conn.execute("CREATE TABLE only_here (n integer)")
    with psycopg.connect(second, autocommit=True) as conn:
        found = conn.execute("SELECT to_regclass('public.only_here')").fetchone()
    assert found == (None,)


def test_the_server_listens_on_loopback_only(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        setting = conn.execute("SHOW listen_addresses").fetchone()
    assert setting == ("127.0.0.1",)


async def test_an_async_connection_works(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT current_database()")
        assert (await cur.fetchone()) == (url.rsplit("/", 1)[1],)
