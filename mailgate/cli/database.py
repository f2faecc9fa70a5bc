"""`mailgate backup` and `migrate`: the SQLite file, copied while the service runs (a
PostgreSQL database is copied with pg_dump: backup says how), and the database's schema --
the SQLite file's or the [database] server's -- brought up to this version."""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
from pathlib import Path

from mailgate.cli.loading import with_store
from mailgate.cli.output import print_json, say
from mailgate.cli.progress import Progress
from mailgate.config.settings import Config, config_path, load_config
from mailgate.service.startup import StartError, daemon_lock
from mailgate.storage import database_file
from mailgate.storage import errors as store_errors
from mailgate.storage.schema import MIGRATIONS
from mailgate.storage.store import Store


def cmd_backup(args: argparse.Namespace) -> int:
    target = Path(args.file).absolute()
    config = load_config(config_path(args.config), secrets="none")
    if config.database_server is not None:
        say(pg_dump_advice(config.database_server.url, target), file=sys.stderr)
        return 1
    database = config.database
    refusal = _backup_refusal(target, database, args.force)
    if refusal:
        say(refusal, file=sys.stderr)
        return 1

    async def work(store: Store) -> int:
        started = time.monotonic()
        progress = Progress(f"backup to {target.name}")
        try:
            await _backup(store, target, progress)
        except (OSError, *store_errors.STORE_ERRORS) as exc:
            say(f"backup to {target} failed: {exc}", file=sys.stderr)
            return 1
        report = {"database": str(database), "file": str(target),
                  "bytes": target.stat().st_size, "seconds": round(time.monotonic() - started, 3),
                  "schema_version": await store.schema_version()}
        if args.json:
            print_json(report)
        else:
            say(f"backed up {database} to {target}: {_size(report['bytes'])} in "
                f"{report['seconds']:.2f} s (schema {report['schema_version']})")
        return 0

    return with_store(args, work, any_schema=True)


def pg_dump_advice(url: str, target: Path) -> str:
    """What to run instead on PostgreSQL, in one line: the server's own dump tool (the URL
    in mailgate.toml never holds the password; pg_dump asks, or reads ~/.pgpass)."""
    command = shlex.join(["pg_dump", "--format=custom", f"--file={target}", url])
    return (f"mailgate backup copies an SQLite file, but this installation's database is on "
            f"PostgreSQL: back it up with `{command}` (or the server's own backups)")


def _backup_refusal(target: Path, database: Path, force: bool) -> str | None:
    if target.resolve() == database.resolve():
        return f"{target}: that is the live database itself; choose another file"
    if target.is_dir():
        return f"{target}: is a directory; name the backup file, e.g. {target}/mailgate.sqlite3"
    if target.exists() and not force:
        return f"{target}: already exists; pass --force to overwrite it"
    return None


async def _backup(store: Store, target: Path, progress: Progress | None = None) -> None:
    """database_file.backup, showing a percentage as it goes when progress is enabled
    (stderr is a terminal); otherwise in one step, silently."""
    if progress is None or not progress.enabled:
        await database_file.backup(store, target)
        return
    progress.fraction(0, 1)
    try:
        await database_file.backup(store, target, progress.fraction)
    finally:
        progress.done()


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


def cmd_migrate(args: argparse.Namespace) -> int:
    if args.to:
        from mailgate.cli.migrate import cmd_migrate_to

        return cmd_migrate_to(args)
    config = load_config(config_path(args.config), secrets="none")
    if config.database_server is not None:  # its password, when this shell can read it
        config = load_config(config_path(args.config), secrets="available")
    elif args.check and not config.database.exists():
        return _migrate_report(args, str(config.database), 0, 0, "no database yet")
    if args.check:
        return _migrate_now(args, config)
    try:  # changing the schema under a running daemon would break it halfway
        with daemon_lock(config.state_dir, "stop it first (systemctl stop mailgate), then "
                                           "run mailgate migrate again"):
            return _migrate_now(args, config)
    except StartError as exc:
        say(f"mailgate migrate: {exc}", file=sys.stderr)
        return 1


def _migrate_now(args: argparse.Namespace, config: Config) -> int:
    """The database [database] names (PostgreSQL), else the SQLite file, brought to this
    version's schema; with --check only reported."""

    async def go() -> int:
        try:  # SQLite creates the file when missing; PostgreSQL's database must exist
            store = await Store.open(config.store_target, migrate=False,
                                     password=config.store_password,
                                     state_dir=config.state_dir)
        except store_errors.STORE_ERRORS as exc:
            say(f"cannot open the database: {exc}", file=sys.stderr)
            return 1
        try:
            before = await store.schema_version()
            if not args.check and before < len(MIGRATIONS):
                await store.migrate()
            after = await store.schema_version()
        except RuntimeError as exc:  # newer than this mailgate, or a migration failed
            say(exc, file=sys.stderr)
            return 1
        finally:
            await store.close()
        return _migrate_report(args, store.describe(), before, after, "")

    return asyncio.run(go())


def _migrate_report(args: argparse.Namespace, database: str, before: int, after: int,
                    note: str) -> int:
    latest = len(MIGRATIONS)
    pending = max(0, latest - after)
    if args.json:
        print_json({"database": database, "from": before, "to": after,
                    "latest": latest, "pending": pending})
    elif after > latest:
        say(f"{database}: schema {after} is newer than this mailgate ({latest}); "
            f"upgrade mailgate", file=sys.stderr)
    elif pending:
        say(f"{database}: {note or f'schema {after}'}; {pending} migration(s) pending "
            f"(latest {latest}); run `mailgate migrate`")
    elif before != after:
        say(f"{database}: migrated from schema {before} to {after}")
    else:
        say(f"{database}: schema {after}, up to date")
    return 1 if pending or after > latest else 0
