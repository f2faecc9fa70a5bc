"""The command line: run, demo, check, tickets, show, send, quarantine, version."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import smtplib
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid
from pathlib import Path

from mailgate import __version__
from mailgate.config import config_path, load_config
from mailgate.errors import ConfigError
from mailgate.loader import Setup, check, load_setup
from mailgate.log import setup_logging
from mailgate.model import Origin, Ticket
from mailgate.store import Store


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        return args.func(args)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailgate", description=__doc__)
    parser.add_argument("--config", help="mailgate.toml (default: $MAILGATE_CONFIG, "
                        "else /etc/mailgate/mailgate.toml)")
    parser.add_argument("--log-level", default="info", help="debug, info, warning, error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int],
                help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    command("check", cmd_check, "validate config, directory and templates; exit 1 on problems")
    command("run", cmd_run, "run the daemon (systemd runs this)")
    demo = command("demo", cmd_demo, "run everything on localhost, no mail server needed")
    demo.add_argument("--dir", default="mailgate-demo", help="demo folder (default: %(default)s)")
    demo.add_argument("--port", type=int, default=2525, help="SMTP port (default: %(default)s)")
    status = command("status", cmd_status, "mailboxes, outbox, quarantine, open tickets")
    status.add_argument("--json", action="store_true")
    tickets = command("tickets", cmd_tickets, "list tickets, newest first")
    tickets.add_argument("--department")
    tickets.add_argument("--status")
    tickets.add_argument("--limit", type=int, default=50)
    tickets.add_argument("--json", action="store_true")
    show = command("show", cmd_show, "one ticket and its conversation")
    show.add_argument("ref", help="ticket number, e.g. IT-1042")
    show.add_argument("--json", action="store_true")
    send = command("send", cmd_send, "send a test message to an SMTP listener (e.g. the demo)")
    send.add_argument("--server", default="127.0.0.1:2525")
    send.add_argument("--from", dest="sender", default="ann@example.com")
    send.add_argument("--to", default="it-help@example.com")
    send.add_argument("--subject", default="Laptop won't boot")
    send.add_argument("--body", default="It only beeps three times. Could someone look at it?")
    quarantine = command("quarantine", cmd_quarantine, "messages that could not be processed")
    quarantine.add_argument("action", choices=("list", "show", "retry", "drop"))
    quarantine.add_argument("id", nargs="?", type=int)
    quarantine.add_argument("--json", action="store_true")
    command("version", cmd_version, "print the version")
    return parser


# --- commands --------------------------------------------------------------------------

def cmd_version(args: argparse.Namespace) -> int:
    print(f"mailgate {__version__}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    problems = check(path)
    for line in problems:
        print(line)
    if problems:
        return 1
    setup = load_setup(path)
    print(f"{path}: OK ({len(setup.directory.departments)} departments, "
          f"{len(setup.config.mailboxes)} mailboxes)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from mailgate.service import Daemon, run_forever

    setup = load_setup(config_path(args.config))
    asyncio.run(run_forever(Daemon(setup.config, setup.directory)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mailgate.demo import run_demo

    return asyncio.run(run_demo(Path(args.dir), args.port))


def cmd_send(args: argparse.Namespace) -> int:
    host, _, port = args.server.rpartition(":")
    domain = args.sender.partition("@")[2] or "localhost"
    raw = (f"From: {args.sender}\r\nTo: {args.to}\r\nSubject: {args.subject}\r\n"
           f"Date: {format_datetime(datetime.now(UTC))}\r\n"
           f"Message-ID: {make_msgid(domain=domain)}\r\n"
           f"Content-Type: text/plain; charset=utf-8\r\n\r\n{args.body}\r\n").encode()
    with smtplib.SMTP(host or "127.0.0.1", int(port), timeout=30) as client:
        client.sendmail(args.sender, [args.to], raw)
    print(f"sent to {args.to} via {args.server}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    async def work(store: Store) -> int:
        oldest = await store.oldest_queued_at()
        report = {
            "mailboxes": await store.mailbox_states(),
            "outbox": await store.outbox_summary(),
            "outbox_oldest_queued": oldest.isoformat() if oldest else None,
            "quarantine_held": await store.quarantine_count(),
            "open_tickets": await store.open_tickets_by_department(),
        }
        if args.json:
            print(json.dumps(report, indent=2))
            return 0
        print_table(("MAILBOX", "STATE", "SINCE", "LAST MESSAGE", "LAST UID", "ERROR"), [
            (m["name"], m["state"], _when_ts(m["state_at"]), _when_ts(m["last_message_at"]),
             m["last_uid"], (m["last_error"] or "-")[:60]) for m in report["mailboxes"]])
        outbox = report["outbox"]
        print(f"\noutbox      queued {outbox.get('queued', 0)} (oldest "
              f"{_when(oldest) if oldest else '-'}), sent {outbox.get('sent', 0)}, "
              f"failed {outbox.get('failed', 0)}")
        print(f"quarantine  {report['quarantine_held']} held (mailgate quarantine list)")
        open_tickets = ", ".join(f"{k} {v}" for k, v in report["open_tickets"].items())
        print(f"open        {open_tickets or 'none'}")
        return 0

    return _with_store(args, work)


def cmd_tickets(args: argparse.Namespace) -> int:
    async def work(store: Store) -> int:
        tickets = await store.tickets(args.department, args.status, args.limit)
        if args.json:
            print(json.dumps([_ticket_json(t) for t in tickets], indent=2))
            return 0
        rows = [(t.ref, t.status.value, t.priority.value, _when(t.created_at), t.requester,
                 t.subject[:50]) for t in tickets]
        print_table(("TICKET", "STATUS", "PRIORITY", "CREATED", "REQUESTER", "SUBJECT"), rows)
        return 0

    return _with_store(args, work)


def cmd_show(args: argparse.Namespace) -> int:
    async def work(store: Store) -> int:
        ticket = await store.ticket(args.ref)
        if ticket is None:
            print(f"no ticket {args.ref}", file=sys.stderr)
            return 1
        events = await store.conversation(ticket.id)
        linked = await store.linked_refs(ticket.id)
        if args.json:
            print(json.dumps({**_ticket_json(ticket), "linked": linked, "events": events},
                             indent=2, default=str))
            return 0
        print(f"{ticket.ref}  {ticket.subject}")
        print(f"  department {ticket.department}   status {ticket.status.value}   "
              f"priority {ticket.priority.value}")
        name = f"{ticket.requester_name} " if ticket.requester_name else ""
        print(f"  requester  {name}<{ticket.requester}>")
        print(f"  created    {_when(ticket.created_at)}   updated {_when(ticket.updated_at)}")
        if linked:
            print(f"  linked     {', '.join(linked)}")
        for event in events:
            print_event(event)
        return 0

    return _with_store(args, work)


def cmd_quarantine(args: argparse.Namespace) -> int:
    async def work(store: Store) -> int:
        if args.action == "list":
            entries = await store.quarantined()
            if args.json:
                rows = [dataclasses.asdict(e) | {"at": e.at.isoformat()} for e in entries]
                print(json.dumps(rows, indent=2))
                return 0
            print_table(("ID", "AT", "SOURCE", "FROM", "SIZE", "REASON"),
                        [(e.id, _when(e.at), e.source, e.sender, e.size, e.reason[:60])
                         for e in entries])
            return 0
        if args.id is None:
            print(f"mailgate quarantine {args.action} needs an ID (see quarantine list)",
                  file=sys.stderr)
            return 2
        return await _quarantine_action(store, args)

    return _with_store(args, work)


async def _quarantine_action(store: Store, args: argparse.Namespace) -> int:
    async with store.conn.execute(
            "SELECT source, reason, raw, status FROM quarantine WHERE id = ?", (args.id,)) as cur:
        row = await cur.fetchone()
    if row is None:
        print(f"no quarantine entry {args.id}", file=sys.stderr)
        return 1
    source, reason, raw, status = row
    if args.action == "show":
        print(f"quarantine {args.id} ({status}) from {source}\nreason: {reason}\n")
        sys.stdout.write(bytes(raw[:20000]).decode("utf-8", "replace"))
        return 0
    if args.action == "drop":
        async with store.transaction() as tx:
            await tx.execute("UPDATE quarantine SET status = 'dropped' WHERE id = ?", (args.id,))
        print(f"quarantine {args.id} dropped")
        return 0
    return await _retry(store, args, bytes(raw), source)


async def _retry(store: Store, args: argparse.Namespace, raw: bytes, source: str) -> int:
    """Run the message through the pipeline again, e.g. after fixing the directory."""
    from mailgate.pipeline import Pipeline, PipelineSettings
    from mailgate.render import Renderer
    from mailgate.service import system_clock

    setup = load_setup(config_path(args.config))
    settings = PipelineSettings.from_config(setup.config)
    pipeline = Pipeline(setup.directory, Renderer(setup.config.templates_dir), settings,
                        system_clock)
    departments = _departments_of_source(setup, source)
    async with store.transaction() as tx:
        await tx.execute("UPDATE quarantine SET status = 'retried' WHERE id = ?", (args.id,))
        outcome = await pipeline.handle(tx, raw, Origin(source=source, departments=departments))
        if outcome.quarantine not in (None, args.id):  # held again: keep one entry, not two
            await tx.execute("DELETE FROM quarantine WHERE id = ?", (outcome.quarantine,))
            await tx.execute("UPDATE quarantine SET status = 'held', reason = ? WHERE id = ?",
                             (outcome.reason, args.id))
    print(f"quarantine {args.id}: {outcome.action} {' '.join(outcome.tickets)} {outcome.reason}")
    return 0 if outcome.action != "quarantined" else 1


def _departments_of_source(setup: Setup, source: str) -> tuple[str, ...]:
    name = source.removeprefix("imap:")
    return tuple(b.department for b in setup.config.mailboxes if b.name == name)


# --- helpers ---------------------------------------------------------------------------

def _with_store(args: argparse.Namespace,
                work: Callable[[Store], Awaitable[int]]) -> int:
    config = load_config(config_path(args.config))
    if not config.database.exists():
        print(f"{config.database}: no database yet (has `mailgate run` been started?)",
              file=sys.stderr)
        return 1

    async def go() -> int:
        store = await Store.open(config.database, migrate=False)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(go())


def _ticket_json(ticket: Ticket) -> dict:
    return {"ref": ticket.ref, "department": ticket.department, "status": ticket.status.value,
            "priority": ticket.priority.value, "subject": ticket.subject,
            "requester": ticket.requester, "requester_name": ticket.requester_name,
            "created_at": ticket.created_at.isoformat(),
            "updated_at": ticket.updated_at.isoformat()}


def _when(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def _when_ts(value: float | None) -> str:
    return _when(datetime.fromtimestamp(value, UTC)) if value else "-"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    if not rows:
        print("(none)")
        return
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def print_event(event: dict) -> None:
    when = datetime.fromisoformat(event["at"]).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    who = event["actor"] or ""
    line = f"\n[{when}] {event['kind']} {who}".rstrip()
    if event["sender_trust"]:
        line += f" [{event['sender_trust']}]"
    if event["outgoing_to"]:
        to = ", ".join(json.loads(event["outgoing_to"]))
        line += f" -> {to} ({event['outgoing_status']})"
        if event["outgoing_error"]:
            line += f": {event['outgoing_error']}"
    print(line)
    if event["detail"]:
        print("  " + ", ".join(f"{k}: {v}" for k, v in event["detail"].items()))
    if event["body"] and event["kind"] in ("created", "reply"):
        for text in event["body"].strip().splitlines()[:40]:
            print(f"  | {text}")


