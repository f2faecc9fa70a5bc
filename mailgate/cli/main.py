"""The command line: run, demo, check, status, tickets, show, report, send, quarantine,
route, directory, backup, migrate, version."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import smtplib
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import NoReturn, TextIO

from mailgate import __version__
from mailgate.cli import keys as keys_command
from mailgate.cli.progress import Progress
from mailgate.config.directory import Directory
from mailgate.config.loader import Setup, load_setup
from mailgate.config.settings import config_path, load_config, unread_secrets
from mailgate.connect import tls
from mailgate.connect.oauth import login as oauth_login
from mailgate.core.model import Origin, Status
from mailgate.core.terminal import visible, visible_lines
from mailgate.errors import ConfigError
from mailgate.service.log import get_logger, setup_logging
from mailgate.service.startup import StartError, check_database, daemon_lock
from mailgate.storage.history import local_time
from mailgate.storage.schema import MIGRATIONS
from mailgate.storage.store import Store


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        return args.func(args)
    except ConfigError as exc:
        say_lines(exc.problems, file=sys.stderr)
        return 1
    except StartError as exc:  # one line with what to do; systemd sees a failed start
        say_lines([f"mailgate: {exc}"], file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, with where to look: the full usage text is --help's."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mailgate", description=__doc__)
    parser.add_argument("--config", help="mailgate.toml (default: $MAILGATE_CONFIG, "
                        "else /etc/mailgate/mailgate.toml)")
    parser.add_argument("--log-level", default="info", type=str.lower,
                        choices=("debug", "info", "warning", "error"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int],
                help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    check = command("check", cmd_check, "validate config, directory and templates; exit 1 "
                    "on problems")
    check.add_argument("--connect", action="store_true", help="also log in to every mailbox "
                       "and the SMTP server and say how it went (no mail is sent)")
    command("run", cmd_run, "run the daemon (systemd runs this)")
    demo = command("demo", cmd_demo, "run everything on localhost, no mail server needed")
    demo.add_argument("--dir", default="mailgate-demo", help="demo folder (default: %(default)s)")
    demo.add_argument("--port", type=port_number, default=2525,
                      help="SMTP port; 0 takes any free one (default: %(default)s)")
    status = command("status", cmd_status, "mailboxes, outbox, quarantine, open tickets and "
                     "SLA risk per department")
    status.add_argument("--json", action="store_true")
    tickets = command("tickets", cmd_tickets, "list tickets, newest first; filters combine")
    tickets.add_argument("--department", help="department key, e.g. it")
    tickets.add_argument("--status", help="new, open, waiting, resolved, closed; several "
                         "comma-separated, or 'active' for all but resolved and closed")
    tickets.add_argument("--at-risk", action="store_true",
                         help="SLA at risk: a warning fired or at most one business hour left")
    tickets.add_argument("--breached", action="store_true", help="a running SLA clock is "
                         "overdue (with --at-risk: either)")
    tickets.add_argument("--requester", help="address, or @domain for everyone there")
    tickets.add_argument("--older-than", metavar="AGE", type=age, help="came in at least "
                         "AGE ago (wall-clock), e.g. 2d, 4h, 1h30m")
    tickets.add_argument("--limit", type=count(MAX_LIMIT), default=50,
                         help=f"at most this many, 1-{MAX_LIMIT} (default: %(default)s)")
    tickets.add_argument("--json", action="store_true")
    report = command("report", cmd_report, "figures per department for a period: requests, "
                     "response and resolution times, SLA compliance, backlog, satisfaction")
    report.add_argument("--since", default="30d", metavar="AGE", type=age,
                        help="period ending now, e.g. 7d, 30d (default: %(default)s)")
    report.add_argument("--department", action="append", metavar="KEY",
                        help="only this department (repeatable)")
    report.add_argument("--dependencies", action="store_true",
                        help="which departments send requests to which (the requester's "
                        "department in the directory's people), with the receiving "
                        "department's median first response")
    form = report.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true")
    form.add_argument("--html", action="store_true",
                      help="one self-contained HTML page with a chart per department")
    show = command("show", cmd_show, "one ticket and its conversation")
    show.add_argument("ref", help="ticket number, e.g. IT-1042")
    show.add_argument("--json", action="store_true")
    send = command("send", cmd_send, "send a test message to an SMTP listener (e.g. the demo)")
    send.add_argument("--server", default="127.0.0.1:2525", type=server,
                      help="HOST:PORT (default: %(default)s)")
    send.add_argument("--from", dest="sender", default="ann@example.com")
    send.add_argument("--to", default="it-help@example.com")
    send.add_argument("--subject", default="Laptop won't boot")
    send.add_argument("--body", default="It only beeps three times. Could someone look at it?")
    quarantine = command("quarantine", cmd_quarantine, "messages that could not be processed")
    quarantine.add_argument("action", choices=("list", "show", "retry", "drop"))
    quarantine.add_argument("id", nargs="?", type=count(SQLITE_MAX_INT))
    quarantine.add_argument("--json", action="store_true")
    backup = command("backup", cmd_backup, "copy the database to FILE, safe while mailgate "
                     "runs (SQLite online backup)")
    backup.add_argument("file", help="where to write the copy")
    backup.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    backup.add_argument("--json", action="store_true")
    migrate = command("migrate", cmd_migrate, "apply pending database schema migrations")
    migrate.add_argument("--check", action="store_true",
                         help="change nothing; exit 1 if migrations are pending")
    migrate.add_argument("--json", action="store_true")
    route = command("route", cmd_route, "which department, priority and rule a message "
                    "would get (nothing is stored or sent)")
    route.add_argument("--from", dest="sender", required=True, help="sender address")
    route.add_argument("--to", required=True, help="recipients, comma-separated")
    route.add_argument("--cc", help="Cc recipients, comma-separated")
    route.add_argument("--subject", required=True)
    route.add_argument("--body", default="")
    route.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                       help="an extra header such as 'X-Priority: 1' (repeatable)")
    route.add_argument("--json", action="store_true")
    directory = command("directory", cmd_directory, "import people from an HR export (CSV)")
    directory.add_argument("action", choices=("import",))
    directory.add_argument("file", help="CSV with a header row: email,name,department,"
                           "manager,role")
    directory.add_argument("--output", help="people TOML to write (default: the "
                           "directory's people_file)")
    keys_command.register(command)
    oauth_login.register(command)
    command("version", cmd_version, "print the version")
    return parser


# --- numbers on the command line ---------------------------------------------------------
# Checked by argparse, so a bad one is a usage error (exit 2) naming the option, never a
# traceback from SQLite or datetime arithmetic further in.

MAX_LIMIT = 100_000
SQLITE_MAX_INT = 2**63 - 1
MAX_AGE = timedelta(days=36_500)  # a century; beyond it datetime arithmetic overflows


def count(maximum: int) -> Callable[[str], int]:
    """A whole number from 1 to maximum."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not 1 <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be from 1 to {maximum}, got {text}")
        return value
    return parse


def port_number(text: str) -> int:
    """A TCP port; 0 lets the system choose a free one."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 0 to 65535, got {text}")
    return value


def server(text: str) -> str:
    """HOST:PORT of an SMTP server."""
    host, colon, port = text.rpartition(":")
    if not colon or not host or not (port.isascii() and port.isdigit()) \
            or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT such as 127.0.0.1:2525, "
                                         f"got {text!r}")
    return text


def age(text: str) -> timedelta:
    """A duration such as 30d or 1h30m, more than nothing and at most a century."""
    from mailgate.config.readers import parse_duration

    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    except OverflowError:  # "99999999999d": beyond what timedelta holds
        value = MAX_AGE * 2
    if not timedelta(0) < value <= MAX_AGE:
        raise argparse.ArgumentTypeError(f"must be longer than 0 and at most "
                                         f"{MAX_AGE.days}d, got {text!r}")
    return value


# --- commands --------------------------------------------------------------------------

def cmd_version(args: argparse.Namespace) -> int:
    say(f"mailgate {__version__}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    # Under systemd (ExecStartPre/ExecReload) the service's secrets are there: check them
    # as the daemon will read them; from an admin's shell, check what this shell has.
    mode = "read" if os.environ.get("INVOCATION_ID") else "available"
    try:
        setup = load_setup(path, secrets=mode)
    except ConfigError as exc:
        say_lines(exc.problems)
        return 1
    say(f"{path}: OK ({len(setup.directory.departments)} departments, "
        f"{len(setup.config.mailboxes)} mailboxes)")
    say_lines(f"  warning: {line}" for line in (*setup.warnings, *tls.warnings(setup.config)))
    unread = unread_secrets(path)
    if unread:
        say(f"  not read from this shell (the service reads them when it starts): "
            f"{', '.join(unread)}")
    if getattr(args, "connect", False):
        from mailgate.connect import check as connect_check

        return connect_check.run(setup.config, say)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from mailgate.service.daemon import Daemon, run_forever

    setup = load_setup(config_path(args.config))
    log = get_logger("mailgate.cli.main")
    for warning in setup.warnings:
        log.warning("config.warning", problem=warning)
    # Before the database is opened: a second daemon on it would double every mail.
    with daemon_lock(setup.config.state_dir):
        check_database(setup.config.database)
        asyncio.run(run_forever(Daemon(setup.config, setup.directory, renderer=setup.renderer)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mailgate.service.demo import run_demo

    return asyncio.run(run_demo(Path(args.dir), args.port))


def cmd_send(args: argparse.Namespace) -> int:
    host, _, port = args.server.rpartition(":")
    domain = args.sender.partition("@")[2] or "localhost"
    raw = (f"From: {args.sender}\r\nTo: {args.to}\r\nSubject: {args.subject}\r\n"
           f"Date: {format_datetime(datetime.now(UTC))}\r\n"
           f"Message-ID: {make_msgid(domain=domain)}\r\n"
           f"Content-Type: text/plain; charset=utf-8\r\n\r\n{args.body}\r\n").encode()
    try:
        with smtplib.SMTP(host or "127.0.0.1", int(port), timeout=30) as client:
            client.sendmail(args.sender, [args.to], raw)
    except (OSError, smtplib.SMTPException) as exc:
        say(f"mailgate send: {args.server}: {exc} (is `mailgate demo` running there?)",
            file=sys.stderr)
        return 1
    say(f"sent to {args.to} via {args.server}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from mailgate.storage.queries import risk_horizons, sla_overview

    directory = _directory_or_none(args)
    daemon = _daemon_status(args)

    async def work(store: Store) -> int:
        now = datetime.now(UTC)
        oldest = await store.oldest_queued_at()
        load = await sla_overview(store, now, risk_horizons(directory, now))
        report = {
            "mailboxes": await store.mailbox_states(),
            "outbox": {"queued": 0, "sent": 0, "failed": 0, **await store.outbox_summary()},
            "outbox_oldest_queued": oldest.isoformat() if oldest else None,
            "quarantine_held": await store.quarantine_count(),
            "open_tickets": {d.department: d.open for d in load},
            "sla": {d.department: {"open": d.open, "at_risk": d.at_risk,
                                   "breached": d.breached} for d in load},
            **daemon,
        }
        if args.json:
            print_json(report)
            return 0
        print_table(("MAILBOX", "STATE", "SINCE", "LAST MESSAGE", "LAST UID", "ERROR"), [
            (m["name"], m["state"], _when_ts(m["state_at"]), _when_ts(m["last_message_at"]),
             m["last_uid"], (m["last_error"] or "-")[:60]) for m in report["mailboxes"]])
        # The whole explanation (it names the setting to change); the column is cut short.
        say_lines(f"  {m['name']}: {m['last_error']}" for m in report["mailboxes"]
                  if m["last_error"] and m["state"] in ("error", "reconnecting"))
        outbox = report["outbox"]
        say(f"\noutbox      queued {outbox.get('queued', 0)} (oldest "
            f"{local_time(oldest) if oldest else '-'}), sent {outbox.get('sent', 0)}, "
            f"failed {outbox.get('failed', 0)}")
        say(f"quarantine  {report['quarantine_held']} held (mailgate quarantine list)")
        say_lines(_daemon_lines(daemon))
        say("")
        print_table(("DEPARTMENT", "OPEN", "AT RISK", "BREACHED"),
                    [(d.department, d.open, d.at_risk, d.breached) for d in load],
                    empty="open        none")
        if any(d.at_risk or d.breached for d in load):
            say("\nat risk: a warning fired or at most one business hour left "
                "(mailgate tickets --at-risk / --breached lists them)")
        return 0

    return _with_store(args, work)


def _daemon_status(args: argparse.Namespace) -> dict:
    """The push listener and the last reload: as the running daemon wrote them to
    <state>/daemon-status.json, else the listener as the config sets it."""
    from mailgate.service.daemon import STATUS_FILE

    config = load_config(config_path(args.config), secrets="none")
    try:
        written = json.loads((config.state_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        written = {}
    running = written.get("running") is True
    listener = written.get("listener") if running else None
    if listener is None and config.listener is not None:
        listener = {"listen": f"{config.listener.host}:{config.listener.port}",
                    "protocol": config.listener.protocol}
    if listener is not None:
        listener = {"listen": listener.get("listen"), "protocol": listener.get("protocol"),
                    "listening": running and written.get("listener") is not None}
    return {"daemon_running": running, "listener": listener,
            "last_reload": written.get("last_reload") if running else None}


def _daemon_lines(daemon: dict) -> list[str]:
    listener = daemon["listener"]
    if listener is None:
        lines = ["listener    off"]
    else:
        state = "listening" if listener["listening"] else "not listening (daemon not running)"
        lines = [f"listener    {listener['listen']}, protocol {listener['protocol']}, {state}"]
    reload = daemon["last_reload"]
    if reload:
        result = "ok" if reload.get("ok") else f"failed: {reload.get('problem')}"
        lines.append(f"reload      last {reload.get('at')}, {result}")
    elif daemon["daemon_running"]:
        lines.append("reload      none since the daemon started")
    return lines


def _directory_or_none(args: argparse.Namespace) -> Directory | None:
    """The directory, for business calendars; without one, time counts as 24x7."""
    from mailgate.config.loader import load_directory_of

    try:
        return load_directory_of(config_path(args.config))
    except ConfigError as exc:
        say(f"note: directory not loaded ({exc.problems[0]}); counting business time as "
            f"24x7", file=sys.stderr)
        return None


def cmd_tickets(args: argparse.Namespace) -> int:
    from mailgate.storage.queries import TicketFilter, find_tickets, risk_horizons

    try:
        statuses = _statuses(args.status)
    except ValueError as exc:
        say(f"mailgate tickets: {exc}", file=sys.stderr)
        return 2
    flt = TicketFilter(department=args.department, statuses=statuses, at_risk=args.at_risk,
                       breached=args.breached, requester=args.requester,
                       older_than=args.older_than,
                       limit=args.limit)
    directory = _directory_or_none(args)
    if not _known_departments("tickets", directory, [args.department] if args.department
                              else []):
        return 2

    async def work(store: Store) -> int:
        now = datetime.now(UTC)
        found = await find_tickets(store, flt, now, risk_horizons(directory, now))
        if args.json:
            print_json([row.as_json() for row in found])
            return 0
        rows = [(r.ticket.ref, r.ticket.department, r.ticket.status.value,
                 r.ticket.priority.value, local_time(r.ticket.created_at),
                 _age(now - r.ticket.created_at), _SLA_LABELS.get(r.sla or "", "-"),
                 local_time(r.next_due) if r.next_due else "-", r.ticket.requester,
                 r.ticket.subject[:50]) for r in found]
        print_table(("TICKET", "DEPT", "STATUS", "PRIORITY", "CREATED", "AGE", "SLA", "DUE",
                     "REQUESTER", "SUBJECT"), rows)
        return 0

    return _with_store(args, work)


_SLA_LABELS = {"breached": "BREACHED", "at_risk": "at risk", "ok": "ok"}


def _known_departments(command: str, directory: Directory | None,
                       keys: Sequence[str]) -> bool:
    """A typo in --department would silently match nothing: say so instead."""
    unknown = [k for k in keys if directory and k not in directory.departments]
    if unknown and directory:
        say(f"mailgate {command}: --department {unknown[0]!r}: unknown department "
            f"(known: {', '.join(directory.departments)})", file=sys.stderr)
        return False
    return True


def _statuses(value: str | None) -> tuple[str, ...]:
    """--status new,open -> ('new', 'open'); 'active' is every status but resolved/closed."""
    if not value:
        return ()
    names = [v.strip().lower() for v in value.split(",") if v.strip()]
    if "active" in names:
        names = [n for n in names if n != "active"] + ["new", "open", "waiting"]
    known = {s.value for s in Status}
    for name in names:
        if name not in known:
            raise ValueError(f"--status {name!r}: expected {', '.join(s.value for s in Status)}"
                             f" or active")
    return tuple(dict.fromkeys(names))


def _age(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{max(0, minutes)}m"
    hours = minutes // 60
    return f"{hours}h" if hours < 48 else f"{hours // 24}d"


def cmd_report(args: argparse.Namespace) -> int:
    period: timedelta = args.since
    directory = _directory_or_none(args)
    if not _known_departments("report", directory, args.department or []):
        return 2

    async def work(store: Store) -> int:
        from mailgate.core.report import as_html, as_json, as_text
        from mailgate.storage.queries import department_report

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

    return _with_store(args, work)


async def _dependencies(store: Store, directory: Directory | None, since: datetime,
                        until: datetime, args: argparse.Namespace) -> int:
    from mailgate.core import dependencies
    from mailgate.storage.queries import dependency_view

    view = await dependency_view(store, directory, since, until, args.department)
    if args.json:
        print_json(dependencies.as_json(view))
    elif args.html:
        sys.stdout.write(dependencies.as_html(view))
    else:
        say(dependencies.as_text(view), end="")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from mailgate.storage import history

    async def work(store: Store) -> int:
        story = await history.load(store, args.ref, datetime.now(UTC))
        if story is None:
            say(f"no ticket {args.ref}", file=sys.stderr)
            return 1
        if args.json:
            print_json(story)
            return 0
        say_lines(history.lines(story))
        return 0

    return _with_store(args, work)


def cmd_quarantine(args: argparse.Namespace) -> int:
    async def work(store: Store) -> int:
        if args.action == "list":
            entries = await store.quarantined()
            if args.json:
                rows = [dataclasses.asdict(e) | {"at": e.at.isoformat()} for e in entries]
                print_json(rows)
                return 0
            print_table(("ID", "AT", "SOURCE", "FROM", "SIZE", "REASON"),
                        [(e.id, local_time(e.at), e.source, e.sender, e.size, e.reason[:60])
                         for e in entries])
            return 0
        if args.id is None:
            say(f"mailgate quarantine {args.action} needs an ID (see quarantine list)",
                file=sys.stderr)
            return 2
        return await _quarantine_action(store, args)

    return _with_store(args, work)


async def _quarantine_action(store: Store, args: argparse.Namespace) -> int:
    async with store.conn.execute(
            "SELECT source, reason, raw, status FROM quarantine WHERE id = ?", (args.id,)) as cur:
        row = await cur.fetchone()
    if row is None:
        say(f"no quarantine entry {args.id}", file=sys.stderr)
        return 1
    source, reason, raw, status = row
    if args.action == "show":
        say_lines([f"quarantine {args.id} ({status}) from {source}", f"reason: {reason}", ""])
        say(bytes(raw[:20000]).decode("utf-8", "replace"), end="")
        return 0
    if args.action == "drop":
        async with store.transaction() as tx:
            await tx.execute("UPDATE quarantine SET status = 'dropped' WHERE id = ?", (args.id,))
        say(f"quarantine {args.id} dropped")
        return 0
    if status != "held":
        say(f"quarantine {args.id} is {status}; only held entries can be retried",
            file=sys.stderr)
        return 1
    return await _retry(store, args, bytes(raw), source)


async def _retry(store: Store, args: argparse.Namespace, raw: bytes, source: str) -> int:
    """Run the message through the pipeline again, e.g. after fixing the directory."""
    from mailgate.intake.pipeline import Pipeline, PipelineSettings
    from mailgate.service import keyfile
    from mailgate.service.daemon import system_clock

    setup = load_setup(config_path(args.config), secrets="none")
    settings = PipelineSettings.from_config(setup.config,
                                            keyfile.ring_for(setup.config, system_clock()))
    pipeline = Pipeline(setup.directory, setup.renderer, settings,
                        system_clock)
    departments = _departments_of_source(setup, source)
    async with store.transaction() as tx:
        await tx.execute("UPDATE quarantine SET status = 'retried' WHERE id = ?", (args.id,))
        outcome = await pipeline.handle(tx, raw, Origin(source=source, departments=departments))
        if outcome.quarantine not in (None, args.id):  # held again: keep one entry, not two
            await tx.execute("DELETE FROM quarantine WHERE id = ?", (outcome.quarantine,))
            await tx.execute("UPDATE quarantine SET status = 'held', reason = ? WHERE id = ?",
                             (outcome.reason, args.id))
    say(f"quarantine {args.id}: {outcome.action} {' '.join(outcome.tickets)} {outcome.reason}")
    return 0 if outcome.action != "quarantined" else 1


def _departments_of_source(setup: Setup, source: str) -> tuple[str, ...]:
    name = source.removeprefix("imap:")
    return tuple(b.department for b in setup.config.mailboxes if b.name == name)


def cmd_backup(args: argparse.Namespace) -> int:
    target = Path(args.file).absolute()
    database = load_config(config_path(args.config), secrets="none").database
    refusal = _backup_refusal(target, database, args.force)
    if refusal:
        say(refusal, file=sys.stderr)
        return 1

    async def work(store: Store) -> int:
        started = time.monotonic()
        progress = Progress(f"backup to {target.name}")
        try:
            await _backup(store, target, progress)
        except (OSError, sqlite3.Error) as exc:
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

    return _with_store(args, work, any_schema=True)


def _backup_refusal(target: Path, database: Path, force: bool) -> str | None:
    if target.resolve() == database.resolve():
        return f"{target}: that is the live database itself; choose another file"
    if target.is_dir():
        return f"{target}: is a directory; name the backup file, e.g. {target}/mailgate.sqlite3"
    if target.exists() and not force:
        return f"{target}: already exists; pass --force to overwrite it"
    return None


async def _backup(store: Store, target: Path, progress: Progress | None = None) -> None:
    """Copy the live database beside TARGET, check the copy, then move it into place.

    A half-written copy never carries the target's name, so an interrupted backup cannot
    pass for a good one. With an enabled progress (stderr is a terminal) the copy runs in
    about 50 steps and shows a percentage; otherwise in one step, silently.
    """
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))  # personal data
    try:
        # aiosqlite runs the copy in its own thread, hence check_same_thread=False.
        copy = sqlite3.connect(partial, check_same_thread=False)
        try:
            # One step (pages=0): a consistent snapshot; in WAL mode the daemon keeps writing.
            # In steps, SQLite restarts the copy if another connection writes in between,
            # so the result is a consistent snapshot either way.
            if progress is not None and progress.enabled:
                rows = await store.conn.execute_fetchall("PRAGMA page_count")
                pages = max(64, int(rows[0][0]) // 50)
                progress.fraction(0, 1)
                try:
                    await store.conn.backup(copy, pages=pages,
                                            progress=progress.sqlite_callback())
                finally:
                    progress.done()
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


def cmd_migrate(args: argparse.Namespace) -> int:
    database = load_config(config_path(args.config), secrets="none").database
    if args.check and not database.exists():
        return _migrate_report(args, database, 0, 0, "no database yet")
    if args.check:
        return _migrate_now(args, database)
    from mailgate.service.startup import StartError, daemon_lock

    try:  # changing the schema under a running daemon would break it halfway
        with daemon_lock(database.parent, "stop it first (systemctl stop mailgate), then "
                                          "run mailgate migrate again"):
            return _migrate_now(args, database)
    except StartError as exc:
        say(f"mailgate migrate: {exc}", file=sys.stderr)
        return 1


def _migrate_now(args: argparse.Namespace, database: Path) -> int:

    async def go() -> int:
        store = await Store.open(database, migrate=False)  # creates it when missing
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
        return _migrate_report(args, database, before, after, "")

    return asyncio.run(go())


def _migrate_report(args: argparse.Namespace, database: Path, before: int, after: int,
                    note: str) -> int:
    latest = len(MIGRATIONS)
    pending = max(0, latest - after)
    if args.json:
        print_json({"database": str(database), "from": before, "to": after,
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


# --- helpers ---------------------------------------------------------------------------

def _with_store(args: argparse.Namespace, work: Callable[[Store], Awaitable[int]],
                any_schema: bool = False) -> int:
    """Run work on the database; unless any_schema (backup), only on one at this
    version's schema: an older one would fail halfway with a bare SQLite error."""
    config = load_config(config_path(args.config), secrets="none")
    if not config.database.exists():
        say(f"{config.database}: no database yet (has `mailgate run` been started?)",
            file=sys.stderr)
        return 1

    async def go() -> int:
        store = await Store.open(config.database, migrate=False)
        try:
            version = await store.schema_version()
            if not any_schema and version != len(MIGRATIONS):
                say(f"{config.database}: schema {version}, this mailgate needs "
                    f"{len(MIGRATIONS)}; "
                    + ("run `mailgate migrate` (with the service stopped)"
                         if version < len(MIGRATIONS) else "upgrade mailgate"),
                    file=sys.stderr)
                return 1
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(go())


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


def _when_ts(value: float | None) -> str:
    return local_time(datetime.fromtimestamp(value, UTC)) if value else "-"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
                empty: str = "(none)") -> None:
    if not rows:
        say(empty)
        return
    # Each cell is one line: a newline or tab from mail is escaped too, not only ESC.
    cells = [[visible(str(c)) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


# --- the output edge -------------------------------------------------------------------
# Everything a person reads goes through say/say_lines/print_table, so text from mail
# (subjects, names, file names, bodies, reasons) never reaches a terminal as a control
# sequence (mailgate.core.terminal). --json goes through print_json, exact: json.dumps
# escapes control characters itself (ensure_ascii, the default, also every non-ASCII one).

def say(text: object = "", file: TextIO | None = None, end: str = "\n") -> None:
    """Print free text, possibly several lines: line breaks and tabs stay, every other
    control or format character is shown as an escape."""
    print(visible_lines(str(text)), file=file or sys.stdout, end=end)


def say_lines(lines: Iterable[str], file: TextIO | None = None) -> None:
    """Print lines that are one line each: a newline inside one is escaped too."""
    for line in lines:
        print(visible(line, tab=True), file=file or sys.stdout)


def print_json(value: object) -> None:
    print(json.dumps(value, indent=2, default=str))
