"""Schema migrations are all or nothing: a failing or killed migration leaves the database
at its old version with its data intact, and the next start applies it again."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mailgate.storage import schema
from mailgate.storage.store import Store
from tests.factories import ROOT, harness, mail

pytestmark = pytest.mark.sqlite_only("migrations from older SQLite schemas (PRAGMA user_version)")

CURRENT = len(schema.MIGRATIONS)

# A migration slow enough to be killed in the middle: it writes millions of rows.
SLOW_MIGRATION = """
    CREATE TABLE extra (x INTEGER);
    INSERT INTO extra WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c
        LIMIT {rows}) SELECT x FROM c;
"""

MIGRATE_WITH_EXTRA = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from mailgate.storage import schema
    from mailgate.storage.store import Store
    schema.MIGRATIONS = (*schema.MIGRATIONS, sys.argv[2])
    async def main():
        store = await Store.open(Path(sys.argv[1]))
        await store.close()
    asyncio.run(main())
""")


async def ticketed_database(path: Path) -> None:
    """A database at the current version holding one ticket."""
    h = await harness(path.parent.parent)  # harness uses <dir>/state/mailgate.sqlite3
    try:
        outcome = await h.deliver(mail("keep me"))
        assert outcome.action == "ticket"
    finally:
        await h.store.close()


def version_and_tables(path: Path) -> tuple[int, set[str], int]:
    with sqlite3.connect(path) as db:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tickets = db.execute("SELECT COUNT(*) FROM tickets").fetchone()[0]
    return version, tables, tickets


def migrate_in_subprocess(path: Path, rows: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", MIGRATE_WITH_EXTRA, str(path), SLOW_MIGRATION.format(rows=rows)],
        cwd=ROOT, stderr=subprocess.DEVNULL)


async def test_failing_migration_is_rolled_back(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state" / "mailgate.sqlite3"
    await ticketed_database(path)
    broken = "CREATE TABLE half (x INTEGER); INSERT INTO half VALUES (1); THIS IS NOT SQL;"
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, broken))
    with pytest.raises(RuntimeError, match=f"migration {CURRENT + 1} failed"):
        await Store.open(path)
    version, tables, tickets = version_and_tables(path)
    assert (version, tickets) == (CURRENT, 1)
    assert "half" not in tables


async def test_sigkill_during_migration_leaves_old_version_then_completes(
        tmp_path: Path) -> None:
    path = tmp_path / "state" / "mailgate.sqlite3"
    await ticketed_database(path)
    process = migrate_in_subprocess(path, rows=200_000_000)
    wal = path.with_name(path.name + "-wal")
    deadline = time.monotonic() + 30
    while not (wal.exists() and wal.stat().st_size > 1_000_000):  # well inside the migration
        assert process.poll() is None, "the migration ended before it could be killed"
        assert time.monotonic() < deadline, "the migration never started writing"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)

    version, tables, tickets = version_and_tables(path)
    assert (version, tickets) == (CURRENT, 1)
    assert "extra" not in tables

    again = migrate_in_subprocess(path, rows=1000)
    assert again.wait(timeout=60) == 0
    version, tables, tickets = version_and_tables(path)
    assert (version, tickets) == (CURRENT + 1, 1)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM extra").fetchone()[0] == 1000


async def test_database_newer_than_mailgate_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "mailgate.sqlite3"
    await ticketed_database(path)
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {CURRENT + 5}")
    with pytest.raises(RuntimeError, match="newer than this mailgate"):
        await Store.open(path)
