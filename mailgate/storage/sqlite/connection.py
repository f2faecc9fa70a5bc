"""One sqlite3 connection with the part of aiosqlite's API mailgate uses, and fewer hand-offs.

aiosqlite sends every statement to the connection's thread and wakes the event loop with
its result: ten statements a message are twenty thread switches, and on two cores each one
wakes a thread on the other core that then waits for the GIL (bench/profile.py showed a
third of the daemon's time in that hand-off). Here a statement runs in one of two places:

- on the caller's thread (the event loop), when it cannot wait on anything: from the task
  that opened the transaction with BEGIN (the single writer already holds SQLite's
  write lock, and in WAL mode nothing it reads is locked by others), with small
  parameters, and with nothing queued for the thread (statements keep their order).
  Such a statement works on the page cache and writes WAL frames without syncing:
  microseconds, like any other pure-Python step of processing a mail;
- on the connection's own thread for everything that may wait or take long: BEGIN (the
  busy timeout while another process writes), COMMIT and ROLLBACK (the fsync of
  synchronous=FULL), statements outside a transaction (reads that may scan, the reader
  connection), other tasks' statements while a transaction is open (a digest's report,
  a status read: they may scan too), statements carrying a large value (a big mail's raw
  bytes), scripts, backups.

Durability is SQLite's and unchanged: nothing is durable before COMMIT returns, and COMMIT
runs exactly as before (synchronous=FULL, WAL).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# Parameters bigger than this (bytes or characters, summed) go to the thread: copying a
# large value into the WAL is real work the event loop should not do.
INLINE_PARAMETER_LIMIT = 64 * 1024
# After this many statements on the event loop in a row, let other tasks run once: a batch
# must not starve the outbox (acknowledgements go out while the batch is processed: with
# one yield per 64 statements a burst's acks waited for the end of intake and the burst
# took twice as long), the listener or the other mailboxes' watchers. A yield is one turn
# of the loop, no thread switch: 4 measured best (bench, 1,000 mails: 1 and 64 slower).
INLINE_RUN_BEFORE_YIELD = 4
_ENDS_TRANSACTION = ("COMMIT", "END", "ROLLBACK")


class Cursor:
    """A finished statement's rows, as aiosqlite's cursor hands them out."""

    def __init__(self, rows: list, rowcount: int, lastrowid: int | None) -> None:
        self._rows = rows
        self._next = 0
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    async def fetchone(self) -> Any:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    async def fetchall(self) -> list:
        rest, self._next = self._rows[self._next:], len(self._rows)
        return rest


class _Pending:
    """conn.execute(...)'s result: awaited, or used as `async with ... as cur`."""

    def __init__(self, work: Awaitable[Cursor]) -> None:
        self._work = work

    def __await__(self) -> Generator[Any, None, Cursor]:
        return self._work.__await__()

    async def __aenter__(self) -> Cursor:
        return await self._work

    async def __aexit__(self, *exc: object) -> None:
        return None


class SqliteConnection:
    def __init__(self, raw: sqlite3.Connection, thread: ThreadPoolExecutor) -> None:
        self.raw = raw
        self._thread = thread
        self._queued = 0  # jobs handed to the thread and not finished there
        self._queued_lock = threading.Lock()
        self._begun = False  # a transaction opened by BEGIN on this connection is open
        self._owner: asyncio.Task | None = None  # the task that sent that BEGIN
        self._inline_run = 0

    @classmethod
    async def open(cls, path: Path, name: str = "sqlite") -> SqliteConnection:
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        try:
            raw = await asyncio.get_running_loop().run_in_executor(
                thread, lambda: sqlite3.connect(path, isolation_level=None,
                                                check_same_thread=False))
        except BaseException:
            thread.shutdown(wait=False)
            raise
        return cls(raw, thread)

    @property
    def in_transaction(self) -> bool:
        return self.raw.in_transaction

    def execute(self, sql: str, parameters: Sequence | Mapping = ()) -> _Pending:
        return _Pending(self._statement(sql, parameters))

    async def execute_fetchall(self, sql: str, parameters: Sequence | Mapping = ()) -> list:
        return await (await self._statement(sql, parameters)).fetchall()

    async def executemany(self, sql: str, parameters: Iterable[Sequence | Mapping]) -> Cursor:
        rows = list(parameters)

        def run() -> Cursor:
            cur = self.raw.executemany(sql, rows)
            return Cursor([], cur.rowcount, cur.lastrowid)

        if self._may_run_inline(_size(value for row in rows for value in _values(row))):
            return await self._inline(run)
        return await self._in_thread(run)

    async def executescript(self, script: str) -> None:
        await self._in_thread(lambda: self.raw.executescript(script))
        self._begun = self.raw.in_transaction

    async def backup(self, target: sqlite3.Connection, *, pages: int = -1,
                     progress: Callable[[int, int, int], object] | None = None) -> None:
        await self._in_thread(lambda: self.raw.backup(target, pages=pages, progress=progress))

    async def commit(self) -> None:
        await self._in_thread(self.raw.commit)

    async def close(self) -> None:
        try:
            await self._in_thread(self.raw.close)
        finally:
            self._thread.shutdown(wait=False)

    async def _statement(self, sql: str, parameters: Sequence | Mapping) -> Cursor:
        def run() -> Cursor:
            cur = self.raw.execute(sql, parameters)
            try:
                rows = cur.fetchall() if cur.description else []
                return Cursor(rows, cur.rowcount, cur.lastrowid)
            finally:
                cur.close()

        head = sql.lstrip()[:8].upper()
        if head.startswith("BEGIN"):
            cursor = await self._in_thread(run)
            self._begun, self._owner = True, asyncio.current_task()
            return cursor
        if head.startswith(_ENDS_TRANSACTION) and not _rolls_back_to_savepoint(sql):
            try:
                return await self._in_thread(run)
            finally:
                self._begun = self.raw.in_transaction
                self._owner = self._owner if self._begun else None
        if self._may_run_inline(_size(_values(parameters))):
            return await self._inline(run)
        return await self._in_thread(run)

    def _may_run_inline(self, parameter_size: int) -> bool:
        return (self._begun and self._queued == 0 and self.raw.in_transaction
                and parameter_size <= INLINE_PARAMETER_LIMIT
                and asyncio.current_task() is self._owner)

    async def _inline(self, run: Callable[[], T]) -> T:
        self._inline_run += 1
        if self._inline_run >= INLINE_RUN_BEFORE_YIELD:
            self._inline_run = 0
            await asyncio.sleep(0)
            if not self._may_run_inline(0):  # something was queued meanwhile: keep order
                return await self._in_thread(run)
        return run()

    async def _in_thread(self, run: Callable[[], T]) -> T:
        self._inline_run = 0
        with self._queued_lock:
            self._queued += 1

        def job() -> T:
            # Counted down here, when the connection is really free again: a caller that
            # was cancelled while waiting must not let the next statement run inline
            # beside a job still running on the thread.
            try:
                return run()
            finally:
                with self._queued_lock:
                    self._queued -= 1

        try:
            done = asyncio.get_running_loop().run_in_executor(self._thread, job)
        except RuntimeError as exc:  # the thread is shut down: the job never ran
            with self._queued_lock:
                self._queued -= 1
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.") from exc
        return await done


def _rolls_back_to_savepoint(sql: str) -> bool:
    """ROLLBACK TO name keeps the transaction open, unlike ROLLBACK."""
    return sql.upper().split(None, 2)[:2] == ["ROLLBACK", "TO"]


def _values(parameters: Sequence | Mapping) -> Iterable[Any]:
    return parameters.values() if isinstance(parameters, Mapping) else parameters


def _size(values: Iterable[Any]) -> int:
    # Asked before nearly every statement: a plain loop over exact types, not isinstance
    # in a generator (4 % of an intake burst's event-loop time).
    total = 0
    for value in values:
        if type(value) in _SIZED:
            total += len(value)
    return total


_SIZED = frozenset({bytes, str, memoryview})
