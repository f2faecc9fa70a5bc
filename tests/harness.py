"""One switch for the suite's database engine: MAILGATE_TEST_ENGINE=sqlite (the default) or
postgresql.

A test gets its database from here, never by spelling a path itself:

- `database(state_dir)`: what `Store.open` takes — the SQLite file in that state directory,
  or (postgresql mode) a fresh database on the session's private PostgreSQL, one per state
  directory, so two daemons in one test do not share one by accident;
- `database_table(state_dir)`: the `[database]` table a mailgate.toml needs for it ("" on
  SQLite, whose database lives in the state directory);
- `query(target, sql, *args)`: read rows back from either engine, synchronously, with
  `?` placeholders; `snapshot` and `counts` read several statements in one transaction.

Tests that are about SQLite itself (its file, its pragmas, its locks, migrations from old
SQLite schemas) carry `@pytest.mark.sqlite_only("why")` and are skipped in postgresql mode
with that reason (tests/conftest.py).
"""

from __future__ import annotations

import os
import sqlite3
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # tests.postgres imports tests.mailservers, which imports this module
    from tests.postgres import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
ENGINE_VARIABLE = "MAILGATE_TEST_ENGINE"
ENGINES = ("sqlite", "postgresql")
SQLITE_FILE = "mailgate.sqlite3"


def engine() -> str:
    chosen = os.environ.get(ENGINE_VARIABLE, "sqlite") or "sqlite"
    if chosen not in ENGINES:
        raise ValueError(f"{ENGINE_VARIABLE}={chosen!r}: expected one of {', '.join(ENGINES)}")
    return chosen


def on_postgresql() -> bool:
    return engine() == "postgresql"


def postgresql_in_checkout() -> bool:
    """Whether this checkout has the PostgreSQL engine: its `postgresql` extra (the driver)
    in pyproject.toml. scripts/dev.py asks the same question."""
    with (ROOT / "pyproject.toml").open("rb") as file:
        extras = tomllib.load(file)["project"].get("optional-dependencies", {})
    return "postgresql" in extras


@dataclass
class Databases:
    """The databases of one test: a fresh PostgreSQL database per state directory."""

    server: PostgresServer
    urls: dict[Path, str] = field(default_factory=dict)

    def url(self, state_dir: Path) -> str:
        key = Path(os.path.abspath(state_dir))
        if key not in self.urls:
            self.urls[key] = self.server.create_database()
        return self.urls[key]


# Set for the running test by the autouse fixture in conftest.py, in postgresql mode only.
_current: Databases | None = None


def use(databases: Databases | None) -> None:
    global _current
    _current = databases


def database(state_dir: Path) -> Path | str:
    """What Store.open takes for the daemon whose state directory is STATE_DIR."""
    if not on_postgresql():
        return Path(state_dir) / SQLITE_FILE
    if _current is None:
        raise RuntimeError("postgresql mode, but no test database: is the test running "
                           "under pytest with tests/conftest.py?")
    return _current.url(state_dir)


def database_table(state_dir: Path) -> str:
    """The mailgate.toml [database] table for STATE_DIR's database ("" on SQLite)."""
    target = database(state_dir)
    return f'[database]\nurl = "{target}"\n' if isinstance(target, str) else ""


def query(target: Path | str, sql: str, *args: object) -> list[tuple]:
    """The rows of one statement (`?` placeholders) on either engine."""
    if isinstance(target, Path):
        with sqlite3.connect(target, timeout=10) as db:
            rows = [tuple(row) for row in db.execute(sql, args)]
        db.close()  # the context manager commits, it does not close
        return rows
    import psycopg  # only postgresql mode needs the driver

    with psycopg.connect(target) as conn:
        cursor = conn.execute(sql.replace("?", "%s"), args)
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []


def snapshot(target: Path | str, statements: dict[str, str]) -> dict[str, list[tuple]]:
    """The rows of each of STATEMENTS, all read in one transaction, so that they agree.

    Separate reads of a database a daemon is writing can see a half: the outbox before a
    commit (nothing queued), then the mailbox position after it (all read), and a test
    would "settle" on a state that never was.
    """
    if isinstance(target, Path):
        db = sqlite3.connect(target, timeout=10, isolation_level=None)
        try:
            db.execute("BEGIN")  # a read transaction: one WAL snapshot for every statement
            rows = {name: [tuple(r) for r in db.execute(sql)] for name, sql in statements.items()}
            db.execute("COMMIT")
        finally:
            db.close()
        return rows
    import psycopg

    with psycopg.connect(target) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # one snapshot
        with conn.transaction():
            return {name: [tuple(r) for r in conn.execute(sql).fetchall()]
                    for name, sql in statements.items()}


# What a daemon test settles on: tickets, messages, the outbox, the quarantine, the
# furthest mailbox position (one snapshot of them: `counts(target, DAEMON_STATE)`).
DAEMON_STATE = {
    "tickets": "SELECT COUNT(*) FROM tickets",
    "messages": "SELECT COUNT(*) FROM messages",
    "queued": "SELECT COUNT(*) FROM outbox WHERE status = 'queued'",
    "acks": "SELECT COUNT(*) FROM outbox",
    "quarantine": "SELECT COUNT(*) FROM quarantine",
    "last_uid": "SELECT COALESCE(MAX(last_uid), 0) FROM mailboxes",
}


def counts(target: Path | str, statements: dict[str, str]) -> dict[str, int]:
    """Each of STATEMENTS' one number (a one-row, one-column SELECT), read in one snapshot."""
    return {name: int(value) for name, [(value,)] in snapshot(target, statements).items()}


def scalar(target: Path | str, sql: str, *args: object) -> object:
    """The one value of a one-row, one-column statement."""
    [(value,)] = query(target, sql, *args)
    return value
