"""SQLite: one connection, one writer, WAL, synchronous=FULL (connection.py runs it).

Transactions are serialised by the Store's asyncio lock and begin IMMEDIATE, so the single
writer never meets another; after COMMIT returns the data is on disk, which is what lets
the SMTP listener answer 250 and the IMAP position move forward.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from mailgate.storage import schema
from mailgate.storage.attachments import AttachmentStore
from mailgate.storage.sqlite.connection import SqliteConnection


class SqliteEngine:
    name = "sqlite"
    shared = False
    begin = "BEGIN IMMEDIATE"

    def __init__(self, conn: SqliteConnection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._reader: SqliteConnection | None = None
        self._reader_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> SqliteEngine:
        _prepare_file(path)
        conn = await SqliteConnection.open(path, "sqlite-writer")
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=FULL")
            await conn.execute("PRAGMA foreign_keys=ON")
            await conn.execute("PRAGMA busy_timeout=10000")
        except BaseException:
            # Close on any failure: the connection's thread must not outlive it.
            await conn.close()
            raise
        return cls(conn, path)

    def describe(self) -> str:
        return str(self.path)

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.close()
        await self.conn.close()

    async def reader(self) -> SqliteConnection:
        """The read-only second connection, with a thread of its own."""
        async with self._reader_lock:
            if self._reader is None:
                reader = await SqliteConnection.open(self.path, "sqlite-reader")
                await reader.execute("PRAGMA query_only=ON")
                await reader.execute("PRAGMA busy_timeout=10000")
                self._reader = reader
        return self._reader

    async def ready(self) -> None:
        """A file does not go away: nothing to reconnect."""

    async def lock_key(self, conn: SqliteConnection, key: str) -> None:
        """The one writer holds every key already."""

    async def lock_keys(self, conn: SqliteConnection, keys: Sequence[str]) -> None:
        """The one writer holds every key already."""

    def attachments(self, state_dir: Path | None) -> AttachmentStore | None:
        return AttachmentStore.of(state_dir) if state_dir is not None else None

    async def claim_outgoing(self, columns: str, now: float, limit: int,
                             keep: set[int]) -> list[tuple]:
        raise NotImplementedError("one daemon per SQLite file: Store.due_outgoing")

    async def on_claims_connection(self, sql: str, rows: list[Sequence]) -> None:
        raise NotImplementedError("one daemon per SQLite file: no claims connection")

    async def columns(self, table: str) -> set[str]:
        rows = await self.conn.execute_fetchall(f"PRAGMA table_info({table})")
        return {r[1] for r in rows}

    async def schema_version(self) -> int:
        async with self.conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def migrate(self) -> int:
        """Apply pending migrations, each atomically with its version bump."""
        migrations = schema.MIGRATIONS  # read at call time: tests append a broken one
        version = await self.schema_version()
        if version > len(migrations):
            raise RuntimeError(f"{self.path}: database schema {version} is newer than this "
                               f"mailgate ({len(migrations)}); upgrade mailgate")
        for number in range(version + 1, len(migrations) + 1):
            script = migrations[number - 1]
            try:
                await self.conn.executescript(
                    f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
            except sqlite3.Error as exc:
                # executescript stops at the failing statement with the transaction open:
                # undo the half-applied migration so the file stays at the old version.
                if self.conn.in_transaction:
                    await self.conn.execute("ROLLBACK")
                raise RuntimeError(f"{self.path}: migration {number} failed: {exc}") from exc
        return len(migrations) - version


def _prepare_file(path: Path) -> None:
    """State directory 0700 and database 0600 before SQLite creates anything."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
