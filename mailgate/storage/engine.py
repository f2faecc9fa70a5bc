"""What the Store needs from a database engine: SQLite (embedded) or PostgreSQL (shared).

`Connection` is the small part of aiosqlite's connection API that mailgate's SQL runs
through; the SQLite engine hands out its own (sqlite/connection.py), the PostgreSQL engine
an adapter that translates each statement (postgres/dialect.py). `Engine` is what differs
beyond the statements: opening, migrations, how a write transaction begins, and the few
things several writers need (a lock per message key, claiming outbox rows).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from mailgate.storage.attachments import Attachments

T = TypeVar("T")


class Cursor(Protocol):
    rowcount: int
    lastrowid: int | None

    async def fetchone(self) -> Any: ...
    async def fetchall(self) -> Iterable[Any]: ...


class Connection(Protocol):
    def execute(self, sql: str, parameters: Sequence | Mapping = ...) -> Any:
        """Awaitable (a Cursor) and an async context manager (yielding one)."""

    async def execute_fetchall(self, sql: str,
                               parameters: Sequence | Mapping = ...) -> Iterable[Any]: ...
    async def executemany(self, sql: str, parameters: Iterable[Sequence | Mapping]) -> Any: ...

    @property
    def in_transaction(self) -> bool: ...


@runtime_checkable
class Pipelining(Protocol):
    """A networked connection's way to save round trips (PostgreSQL): inside pipeline(),
    a statement sent with send() (or executemany()) is not waited for; its error, if any,
    is raised by the next statement that waits, or when the block ends. SQLite's
    connection has no such thing: a round trip there is a hop to its thread."""

    def pipeline(self) -> AbstractAsyncContextManager[None]: ...
    async def send(self, sql: str, parameters: Sequence | Mapping = ...) -> None: ...
    async def defer(self, sql: str, parameters: Sequence | Mapping = ...,
                    ) -> Callable[[], Awaitable[list[tuple]]]:
        """Sent now, its rows when the returned function is awaited (one wait for several
        statements' rows, or none if they came back with another's)."""
    async def drop_pending(self) -> None:
        """After a failure inside pipeline(): settle what was sent, errors ignored."""


def answered(value: T) -> Callable[[], Awaitable[T]]:
    """A result known already, in the shape of one that is awaited later (defer)."""
    async def answer() -> T:
        return value
    return answer


@runtime_checkable
class BinaryRows(Protocol):
    """A networked connection that can hand a read's rows over in the server's binary
    form (PostgreSQL): a float is eight bytes copied instead of text parsed, a third of
    the CPU for a report's 80,000 rows. For columns of text, integers and floats only:
    numeric and json would come back as the driver's own types, not as SQLite's."""

    async def execute_fetchall_binary(self, sql: str,
                                      parameters: Sequence | Mapping = ...) -> list[tuple]: ...


class Engine(Protocol):
    name: str  # "sqlite" | "postgresql"
    # Several processes may write at once: row locks and key locks matter (PostgreSQL).
    shared: bool
    begin: str  # the statement that opens a write transaction
    conn: Connection  # the writer

    async def reader(self) -> Connection: ...
    async def schema_version(self) -> int: ...
    async def columns(self, table: str) -> set[str]: ...
    async def claim_outgoing(self, columns: str, now: float, limit: int,
                             keep: set[int]) -> list[tuple]:
        """Shared engines: due outbox rows (these columns) that this process holds now."""
    async def on_claims_connection(self, sql: str, rows: list[Sequence]) -> None:
        """Shared engines: `sql` per row, one transaction, beside the writer connection."""
    async def migrate(self) -> int: ...
    async def close(self) -> None: ...
    async def lock_key(self, conn: Connection, key: str) -> None:
        """Hold until the transaction ends: others locking the same key wait."""
    async def lock_keys(self, conn: Connection, keys: Sequence[str]) -> None:
        """lock_key for each, at once, in an order every node shares."""
    async def ready(self) -> None:
        """Before a transaction: reconnect if the connection was lost."""
    def attachments(self, state_dir: Path | None) -> Attachments | None:
        """Where attachment files go (None: not kept)."""
    def describe(self) -> str:
        """For messages and logs: never a password."""
