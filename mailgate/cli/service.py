"""`mailgate run` and `demo`: the daemon, under systemd or on localhost."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from mailgate.config.loader import load_setup
from mailgate.config.settings import config_path
from mailgate.service.log import get_logger
from mailgate.service.startup import check_database, daemon_lock


def cmd_run(args: argparse.Namespace) -> int:
    from mailgate.service.daemon import Daemon, run_forever

    setup = load_setup(config_path(args.config))
    log = get_logger("mailgate.cli.main")  # the command line's logger, named as it was
    for warning in setup.warnings:
        log.warning("config.warning", problem=warning)
    # Before the database is opened: a second daemon on it would double every mail.
    with daemon_lock(setup.config.state_dir):
        if setup.config.database_server is None:  # SQLite: the file must be readable
            check_database(setup.config.database)
        asyncio.run(run_forever(Daemon(setup.config, setup.directory, renderer=setup.renderer)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mailgate.service.demo import run_demo

    return asyncio.run(run_demo(Path(args.dir), args.port))
