"""What the commands load before they work: the database (only at this mailgate's
schema) and the directory (for business calendars; a command goes on without one)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from mailgate.cli.output import say
from mailgate.config.settings import config_path, load_config
from mailgate.errors import ConfigError
from mailgate.storage import errors as store_errors
from mailgate.storage.schema import MIGRATIONS
from mailgate.storage.store import Store

if TYPE_CHECKING:
    from mailgate.config.directory import Directory


def with_store(args: argparse.Namespace, work: Callable[[Store], Awaitable[int]],
               any_schema: bool = False) -> int:
    """Run work on the database; unless any_schema (backup), only on one at this
    version's schema: an older one would fail halfway with a bare SQLite error."""
    config = load_config(config_path(args.config), secrets="none")
    if config.database_server is not None:  # its password, when this shell can read it
        config = load_config(config_path(args.config), secrets="available")
    elif not config.database.exists():
        say(f"{config.database}: no database yet (has `mailgate run` been started?)",
            file=sys.stderr)
        return 1

    async def go() -> int:
        try:
            store = await Store.open(config.store_target, migrate=False,
                                     password=config.store_password,
                                     state_dir=config.state_dir)
        except store_errors.STORE_ERRORS as exc:  # the server is down, no such database or role
            say(f"cannot open the database: {exc}", file=sys.stderr)
            return 1
        try:
            version = await store.schema_version()
            if not any_schema and version != len(MIGRATIONS):
                say(f"{store.describe()}: schema {version}, this mailgate needs "
                    f"{len(MIGRATIONS)}; "
                    + ("run `mailgate migrate` (with the service stopped)"
                         if version < len(MIGRATIONS) else "upgrade mailgate"),
                    file=sys.stderr)
                return 1
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(go())


def directory_or_none(args: argparse.Namespace) -> Directory | None:
    """The directory, for business calendars; without one, time counts as 24x7."""
    from mailgate.config.loader import load_directory_of

    try:
        return load_directory_of(config_path(args.config))
    except ConfigError as exc:
        say(f"note: directory not loaded ({exc.problems[0]}); counting business time as "
            f"24x7", file=sys.stderr)
        return None


def known_departments(command: str, directory: Directory | None,
                      keys: Sequence[str]) -> bool:
    """A typo in --department would silently match nothing: say so instead."""
    unknown = [k for k in keys if directory and k not in directory.departments]
    if unknown and directory:
        say(f"mailgate {command}: --department {unknown[0]!r}: unknown department "
            f"(known: {', '.join(directory.departments)})", file=sys.stderr)
        return False
    return True
