"""The database as a file: its schema version read before anything opens it (the daemon's
start check), and a checked copy of it taken while the daemon runs (`mailgate backup`).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from mailgate.storage.store import Store

STEPS = 50  # a backup with progress copies in about this many steps
MIN_STEP_PAGES = 64


class NotAFile(ValueError):
    """backup() was given a store whose database is not an SQLite file."""


def schema_version_of(path: Path) -> int:
    """The schema version the file at `path` holds (0 for an empty one). Raises one of
    storage.errors.STORE_ERRORS if the file is not a database it can read."""
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


async def backup(store: Store, target: Path,
                 progress: Callable[[int, int], None] | None = None) -> None:
    """Copy the live database beside TARGET, check the copy, then move it into place.

    A half-written copy never carries the target's name, so an interrupted backup cannot
    pass for a good one. With `progress` the copy runs in about STEPS steps and calls it
    with (pages done, pages in all) after each; without, in one step. Raises OSError or
    one of storage.errors.STORE_ERRORS (also when the copy fails its integrity check),
    and NotAFile for a database that is not an SQLite file (PostgreSQL: pg_dump copies it).
    """
    if store.engine.name != "sqlite":
        raise NotAFile(f"{store.describe()} is a {store.engine.name} database, not an "
                       f"SQLite file: back it up with the server's tools (pg_dump)")
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))  # personal data
    try:
        # the connection's own thread runs the copy, hence check_same_thread=False.
        copy = sqlite3.connect(partial, check_same_thread=False)
        try:
            # One step (pages=0): a consistent snapshot; in WAL mode the daemon keeps writing.
            # In steps, SQLite restarts the copy if another connection writes in between,
            # so the result is a consistent snapshot either way.
            if progress is not None:
                rows = await store.conn.execute_fetchall("PRAGMA page_count")
                pages = max(MIN_STEP_PAGES, int(rows[0][0]) // STEPS)
                await store.conn.backup(copy, pages=pages, progress=_pages_done(progress))
            else:
                await store.conn.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal
            verdict = copy.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            copy.close()
        if verdict != "ok":
            raise sqlite3.DatabaseError(f"the copy failed its integrity check: {verdict}")
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _pages_done(progress: Callable[[int, int], None]) -> Callable[[int, int, int], None]:
    """sqlite3's backup callback, (status, remaining, total) pages, as (done, total)."""
    def callback(status: int, remaining: int, total: int) -> None:
        progress(total - remaining, total)
    return callback
