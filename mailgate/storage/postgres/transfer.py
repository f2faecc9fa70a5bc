"""Copy an SQLite installation into an empty PostgreSQL database (`mailgate migrate --to`).

Every table of the SQLite file is copied (in foreign-key order, so a table that a future
migration adds is carried too), row for row with its ids; each attachment file under
<state>/attachments goes into attachment_blobs. All of it happens in ONE PostgreSQL
transaction, which also compares every table's row count with the source before it
commits: a failure at any point -- a crash, a lost connection, a count that differs --
leaves the target as it was (schema created, no rows), and the copy can simply be run
again. A target that holds any mailgate row is refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from mailgate.storage.postgres.dialect import ID_TABLES
from mailgate.storage.store import Store, Tx

CHUNK = 500  # rows per INSERT round trip
# Kept by each engine itself, never copied.
_NOT_COPIED = frozenset({"schema_version", "attachment_blobs"})


class TransferError(RuntimeError):
    """The copy was refused or failed; nothing was left in the target."""


@dataclass
class Transferred:
    counts: dict[str, int] = field(default_factory=dict)  # table -> rows, equal on both
    blobs: int = 0
    missing_files: list[str] = field(default_factory=list)  # attachments rows naming none


async def copy_sqlite(source: Store, target: Store,
                      progress: Callable[[str, int], None] = lambda table, rows: None,
                      ) -> Transferred:
    """Copy `source` (SQLite, at the latest schema) into `target` (PostgreSQL, migrated,
    empty) in one transaction; the per-table counts, verified equal."""
    if source.engine.name != "sqlite" or target.engine.name != "postgresql":
        raise TransferError("copies an SQLite database into a PostgreSQL one")
    tables = await _sqlite_tables(source)
    await _refuse_unless_empty(target, tables)
    done = Transferred()
    async with target.transaction() as tx:
        for table in tables:
            columns = await _columns(source, table)
            copied = await _copy_table(source, tx, table, columns)
            progress(table, copied)
        if "attachments" in tables:
            await _copy_blobs(source, target, tx, done)
        await _move_identities(tx, tables)
        for table in tables:
            [(want,)] = await source.fetch_all(f'SELECT COUNT(*) FROM "{table}"')
            row = await tx.fetch_one(f'SELECT COUNT(*) FROM "{table}"')
            have = int(row[0]) if row else -1
            if have != want:  # the exception rolls every table back
                raise TransferError(f"{table}: {want} rows in SQLite, {have} copied; "
                                    f"nothing was kept in the target")
            done.counts[table] = int(want)
    # Statistics for the copied rows now, not when autovacuum gets round to it: without
    # them the planner takes a table of a million rows for an empty one, and a reply's
    # threading lookup and a new mail's dedupe lookup scan (intake at 200,000 tickets fell
    # from 177 to 31 msgs/s until ANALYZE ran: 1.4 s).
    async with target.transaction() as tx:
        for table in tables:
            await tx.execute(f'ANALYZE "{table}"')
    return done


async def _sqlite_tables(source: Store) -> list[str]:
    """The source's tables, each after the tables its foreign keys name."""
    rows = await source.fetch_all(
        "SELECT name FROM sqlite_master WHERE type = 'table' "
        "AND name NOT LIKE 'sqlite_%' ORDER BY name")
    names = [r[0] for r in rows if r[0] not in _NOT_COPIED]
    needs = {name: {r[2] for r in await source.fetch_all(
        f'PRAGMA foreign_key_list("{name}")')} - {name} for name in names}
    ordered: list[str] = []
    while len(ordered) < len(names):
        ready = [n for n in names if n not in ordered and needs[n] <= set(ordered)]
        if not ready:
            cycle = sorted(set(names) - set(ordered))
            raise TransferError(f"foreign keys form a cycle among {cycle}")
        ordered += ready
    return ordered


async def _refuse_unless_empty(target: Store, tables: list[str]) -> None:
    rows = await target.fetch_all(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = "
        "current_schema() AND table_type = 'BASE TABLE'")
    present = {r[0] for r in rows}
    missing = [t for t in tables if t not in present]
    if missing:
        raise TransferError(f"the target has no table {', '.join(missing)}: is this "
                            f"mailgate older than the SQLite database?")
    for table in (*tables, "attachment_blobs"):
        if await target.fetch_one(f'SELECT 1 FROM "{table}" LIMIT 1'):
            raise TransferError(f"the target is not empty ({table} has rows); "
                                f"migrate --to copies into an empty database only")


async def _columns(source: Store, table: str) -> list[str]:
    return [r[1] for r in await source.fetch_all(f'PRAGMA table_info("{table}")')]


async def _copy_table(source: Store, tx: Tx, table: str, columns: list[str]) -> int:
    """A chunk at a time, so a large messages table never sits in memory: by its one key
    column (or rowid) where it has one, else (a composite key) by offset."""
    names = ", ".join(f'"{c}"' for c in columns)
    insert = (f'INSERT INTO "{table}" ({names}) '
              f"VALUES ({', '.join('?' * len(columns))})")
    info = await source.fetch_all(f'PRAGMA table_info("{table}")')
    keys = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]]
    reader = await source.reader()
    copied, last = 0, None
    while True:
        if len(keys) <= 1:
            key = f'"{keys[0]}"' if keys else "rowid"
            where = f"WHERE {key} > ?" if last is not None else ""
            rows = list(await reader.execute_fetchall(
                f'SELECT {key}, {names} FROM "{table}" {where} ORDER BY {key} LIMIT {CHUNK}',
                (last,) if last is not None else ()))
            values = [tuple(r[1:]) for r in rows]
            last = rows[-1][0] if rows else last
        else:
            order = ", ".join(f'"{k}"' for k in keys)
            values = [tuple(r) for r in await reader.execute_fetchall(
                f'SELECT {names} FROM "{table}" ORDER BY {order} LIMIT {CHUNK} OFFSET ?',
                (copied,))]
        if not values:
            return copied
        await tx.conn.executemany(insert, values)
        copied += len(values)


async def _copy_blobs(source: Store, target: Store, tx: Tx, done: Transferred) -> None:
    """Each attachment file a row names, into attachment_blobs (inside the transaction:
    a failed copy leaves no blob behind either)."""
    files = source.engine.attachments(source.state_dir)
    rows = await source.fetch_all(
        "SELECT DISTINCT sha256 FROM attachments WHERE sha256 IS NOT NULL ORDER BY sha256")
    for (digest,) in rows:
        data = await asyncio.to_thread(files.read, digest) if files else None
        if data is None:
            done.missing_files.append(digest)
            continue
        await tx.execute(
            "INSERT INTO attachment_blobs (sha256, size, data, created_at) "
            "VALUES (?, ?, ?, extract(epoch FROM now()))", (digest, len(data), data))
        done.blobs += 1


async def _move_identities(tx: Tx, tables: list[str]) -> None:
    """Copied ids were given explicitly: start each identity after the highest one."""
    for table in tables:
        if table in ID_TABLES:
            await tx.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"coalesce(max(id), 0) + 1, false) FROM \"{table}\"")
