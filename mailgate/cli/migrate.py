"""`mailgate migrate --to postgresql://...`: move an SQLite installation to PostgreSQL.

The daemon must be stopped (the state directory's lock is held for the copy); the target
database must exist and be empty. The password comes from --password-file, else libpq's own
places (PGPASSWORD, ~/.pgpass), never from the command line; URLs are printed without one.
Afterwards set `[database] url` in mailgate.toml and start mailgate on the new database.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from mailgate.cli.output import print_json, say
from mailgate.config.safefile import MAX_SECRET_BYTES, read_regular
from mailgate.config.settings import config_path, load_config
from mailgate.service.startup import StartError, daemon_lock
from mailgate.storage.schema import MIGRATIONS
from mailgate.storage.store import Store


def cmd_migrate_to(args: argparse.Namespace) -> int:
    from mailgate.storage.postgres.engine import mask

    url: str = args.to
    if not url.startswith(("postgresql://", "postgres://")):
        say(f"mailgate migrate: --to {mask(url)}: expected a postgresql:// URL",
            file=sys.stderr)
        return 1
    config = load_config(config_path(args.config), secrets="none")
    if config.database_server is not None:
        say(f"mailgate migrate: {config.path} already uses PostgreSQL "
            f"({mask(config.database_server.url)}); --to copies an SQLite installation",
            file=sys.stderr)
        return 1
    if not config.database.exists():
        say(f"mailgate migrate: {config.database}: no database to copy", file=sys.stderr)
        return 1
    try:
        password = _password(args.password_file)
    except OSError as exc:
        say(f"mailgate migrate: --password-file: {exc}", file=sys.stderr)
        return 1
    try:  # the SQLite file must not change while it is copied
        with daemon_lock(config.state_dir, "stop it first (systemctl stop mailgate), then "
                                           "run mailgate migrate --to again"):
            return asyncio.run(_copy(args, config.database, url, password))
    except StartError as exc:
        say(f"mailgate migrate: {exc}", file=sys.stderr)
        return 1


def _password(path: str | None) -> str | None:
    if path is None:
        return None
    return read_regular(Path(path), MAX_SECRET_BYTES).decode("utf-8").rstrip("\r\n")


async def _copy(args: argparse.Namespace, database: Path, url: str,
                password: str | None) -> int:
    from mailgate.storage import errors as store_errors
    from mailgate.storage.postgres.engine import mask
    from mailgate.storage.postgres.transfer import TransferError, copy_sqlite

    source = await Store.open(database, migrate=False)
    try:
        version = await source.schema_version()
        if version != len(MIGRATIONS):
            say(f"mailgate migrate: {database}: schema {version}; run `mailgate migrate` "
                f"first (this mailgate's is {len(MIGRATIONS)})", file=sys.stderr)
            return 1
        try:
            target = await Store.open(url, password=password)
        except store_errors.STORE_ERRORS as exc:
            say(f"mailgate migrate: {mask(url)}: {_hide(str(exc), password)}",
                file=sys.stderr)
            return 1
        try:
            done = await copy_sqlite(source, target)
        except (TransferError, *store_errors.STORE_ERRORS) as exc:
            say(f"mailgate migrate: {mask(url)}: {_hide(str(exc), password)}; the target "
                f"holds no copied row", file=sys.stderr)
            return 1
        finally:
            await target.close()
    finally:
        await source.close()
    if args.json:
        print_json({"from": str(database), "to": mask(url), "tables": done.counts,
                    "attachment_blobs": done.blobs, "missing_files": done.missing_files})
        return 0
    say(f"copied {database} to {mask(url)}; rows per table (verified equal):")
    for table, count in done.counts.items():
        say(f"  {table:<20} {count}")
    say(f"  {'attachment files':<20} {done.blobs}")
    if done.missing_files:
        say(f"  warning: {len(done.missing_files)} attachment file(s) named in the database "
            f"were not in {database.parent / 'attachments'}: {', '.join(done.missing_files)}")
    say(f'next: set [database] url = "{mask(url)}" in mailgate.toml (password in '
        f"password_file, password_env or password_credential) and start mailgate")
    return 0


def _hide(text: str, password: str | None) -> str:
    return text.replace(password, "***") if password else text
