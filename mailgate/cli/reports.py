"""`mailgate report`: figures per department for a period, or with --dependencies which
departments send requests to which."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta

from mailgate.cli.loading import directory_or_none, known_departments, with_store
from mailgate.cli.output import print_json, say
from mailgate.config.directory import Directory
from mailgate.storage.store import Store


def cmd_report(args: argparse.Namespace) -> int:
    period: timedelta = args.since
    directory = directory_or_none(args)
    if not known_departments("report", directory, args.department or []):
        return 2

    async def work(store: Store) -> int:
        from mailgate.core.report import as_html, as_json, as_text
        from mailgate.storage.reports import department_report

        now = datetime.now(UTC)
        if args.dependencies:
            return await _dependencies(store, directory, now - period, now, args)
        report = await department_report(store, directory, now - period, now,
                                         args.department)
        if args.json:
            print_json(as_json(report))
        elif args.html:
            sys.stdout.write(as_html(report))
        else:
            say(as_text(report), end="")
        return 0

    return with_store(args, work)


async def _dependencies(store: Store, directory: Directory | None, since: datetime,
                        until: datetime, args: argparse.Namespace) -> int:
    from mailgate.core import dependencies
    from mailgate.storage.reports import dependency_view

    view = await dependency_view(store, directory, since, until, args.department)
    if args.json:
        print_json(dependencies.as_json(view))
    elif args.html:
        sys.stdout.write(dependencies.as_html(view))
    else:
        say(dependencies.as_text(view), end="")
    return 0
