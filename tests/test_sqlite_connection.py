"""The SQLite connection runs a statement on the event loop's thread only when it cannot
wait: inside a transaction it opened with BEGIN, with small parameters. Everything else,
COMMIT (the fsync) above all, runs on the connection's own thread; order is kept."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from mailgate.storage.sqlite.connection import INLINE_PARAMETER_LIMIT, SqliteConnection

pytestmark = pytest.mark.sqlite_only("the SQLite engine's own connection")


async def _connection(tmp_path: Path) -> tuple[SqliteConnection, list[int]]:
    """A connection whose SQL function where() records the thread that ran it."""
    conn = await SqliteConnection.open(tmp_path / "x.db")
    threads: list[int] = []

    def where(*_: object) -> int:
        threads.append(threading.get_ident())
        return 1

    conn.raw.create_function("where_", -1, where)
    await conn.execute("CREATE TABLE t (v)")
    return conn, threads


async def test_statements_inside_begin_run_on_the_loop_thread(tmp_path: Path) -> None:
    conn, threads = await _connection(tmp_path)
    loop_thread = threading.get_ident()
    await conn.execute("SELECT where_()")  # outside a transaction: the connection's thread
    await conn.execute("BEGIN IMMEDIATE")
    await conn.execute("SAVEPOINT sp1")
    await conn.execute("INSERT INTO t VALUES (where_())")
    await conn.execute("ROLLBACK TO sp1")  # the transaction stays open
    await conn.execute("INSERT INTO t VALUES (where_(?))", ("x" * 10,))
    await conn.execute("RELEASE sp1")
    await conn.execute("INSERT INTO t VALUES (where_(?))", ("x" * (INLINE_PARAMETER_LIMIT + 1),))
    await conn.execute("COMMIT")
    await conn.execute("SELECT where_()")
    assert [t == loop_thread for t in threads] == [False, True, True, False, False]
    assert await conn.execute_fetchall("SELECT count(*) FROM t") == [(2,)]
    await conn.close()


async def test_another_tasks_statement_during_a_transaction_runs_on_the_thread(
        tmp_path: Path) -> None:
    # A read from another task (the digest's report, a status query on the writer) while
    # an intake transaction is open may scan whole tables: it must not run on the event
    # loop's thread, where it would stop every other task for as long as it takes.
    conn, threads = await _connection(tmp_path)
    loop_thread = threading.get_ident()
    await conn.execute("BEGIN IMMEDIATE")
    await conn.execute("INSERT INTO t VALUES (where_())")  # the transaction's own: inline
    await asyncio.create_task(conn.execute_fetchall("SELECT where_() FROM t"))
    await conn.execute("INSERT INTO t VALUES (where_())")
    await conn.execute("COMMIT")
    assert [t == loop_thread for t in threads] == [True, False, True]
    await conn.close()


async def test_results_and_errors_as_aiosqlite_gave_them(tmp_path: Path) -> None:
    conn, _ = await _connection(tmp_path)
    await conn.execute("BEGIN IMMEDIATE")
    cur = await conn.execute("INSERT INTO t VALUES (1)")
    assert cur.lastrowid == 1 and cur.rowcount == 1
    await conn.executemany("INSERT INTO t VALUES (?)", [(2,), (3,)])
    async with conn.execute("SELECT v FROM t ORDER BY v") as rows:
        assert await rows.fetchone() == (1,)
        assert await rows.fetchall() == [(2,), (3,)]
    with pytest.raises(Exception, match="no such table"):
        await conn.execute("INSERT INTO missing VALUES (1)")
    assert conn.in_transaction  # a failed statement leaves the transaction to the caller
    await conn.execute("ROLLBACK")
    assert not conn.in_transaction
    assert await conn.execute_fetchall("SELECT count(*) FROM t") == [(0,)]
    await conn.close()


async def test_a_closed_connection_refuses_work(tmp_path: Path) -> None:
    conn, _ = await _connection(tmp_path)
    await conn.close()
    with pytest.raises(Exception, match="closed"):
        await conn.execute("SELECT 1")


async def test_a_failed_commit_leaves_no_transaction_open(tmp_path: Path) -> None:
    # SQLite keeps the transaction open when COMMIT fails (a deferred constraint here; a
    # full disk or SQLITE_BUSY in the field): the store must roll it back, or every next
    # BEGIN fails and a later COMMIT would write the failed batch after all.
    from mailgate.storage.store import Store
    from tests.harness import database

    store = await Store.open(database(tmp_path / "state"))
    try:
        async with store.transaction() as tx:
            await tx.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
            await tx.execute("CREATE TABLE child (parent INTEGER REFERENCES parent (id) "
                             "DEFERRABLE INITIALLY DEFERRED)")
        with pytest.raises(sqlite3.IntegrityError):
            async with store.transaction() as tx:
                await tx.execute("INSERT INTO child VALUES (1)")  # checked at COMMIT
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO parent VALUES (1)")
        assert await store.fetch_all("SELECT * FROM child") == []
        assert await store.fetch_all("SELECT * FROM parent") == [(1,)]
    finally:
        await store.close()
