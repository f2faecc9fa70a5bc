"""`mailgate route` and `directory import`: where the directory sends a message, and who
is in it (people from an HR export)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mailgate.cli.output import print_json, print_table, say
from mailgate.cli.progress import Progress
from mailgate.config.settings import config_path
from mailgate.core.model import Origin


def cmd_route(args: argparse.Namespace) -> int:
    from mailgate.config.directory import RULE_HEADERS
    from mailgate.config.loader import load_directory_of
    from mailgate.core.mime.parse import parse
    from mailgate.core.routing import routes_for

    directory = load_directory_of(config_path(args.config))
    try:
        raw = _sample_mail(args)
    except ValueError as exc:
        say(f"mailgate route: {exc}", file=sys.stderr)
        return 2
    for name in (h.partition(":")[0].strip() for h in args.header):
        if name.lower() not in RULE_HEADERS:
            say(f"note: mailgate does not keep the header {name}; no rule can match it",
                file=sys.stderr)
    routes = routes_for(parse(raw), Origin(source="route"), directory)
    rows = [{"department": r.department, "name": directory.departments[r.department].name,
             "priority": r.priority.value, "rule": r.rule} for r in routes]
    if args.json:
        print_json(rows)
    else:
        print_table(("DEPARTMENT", "NAME", "PRIORITY", "RULE"), [list(r.values()) for r in rows])
    if not routes:
        say("no rule, department address or default_department matches: mailgate would "
            "quarantine this message", file=sys.stderr)
        return 1
    return 0


def _sample_mail(args: argparse.Namespace) -> bytes:
    """The message `mailgate route` describes, run through the real parser so headers are
    decoded exactly as for real mail. ValueError names a bad --header."""
    from email.message import EmailMessage
    from email.policy import SMTP

    msg = EmailMessage(policy=SMTP)
    msg["From"] = args.sender
    msg["To"] = args.to
    if args.cc:
        msg["Cc"] = args.cc
    msg["Subject"] = args.subject
    for header in args.header:
        name, colon, value = header.partition(":")
        if not colon or not name.strip():
            raise ValueError(f"--header {header!r}: expected 'Name: value'")
        msg[name.strip()] = value.strip()
    msg.set_content(args.body)
    return bytes(msg)


def cmd_directory(args: argparse.Namespace) -> int:
    from mailgate.cli.people import import_people
    from mailgate.config.loader import directory_path

    output = Path(args.output) if args.output else None
    path = config_path(args.config)
    # With --output the import also works without a config; with one, it checks the CSV
    # against the directory's departments and people.
    directory = directory_path(path) if output is None or path.exists() else None
    if output is not None and directory is not None and not directory.exists():
        directory = None
    progress = Progress(f"directory import {Path(args.file).name}")
    try:
        done = import_people(Path(args.file), output, directory, progress=progress.step)
    finally:
        progress.done()
    say(f"{done.path}: wrote {done.people} people")
    return 0
