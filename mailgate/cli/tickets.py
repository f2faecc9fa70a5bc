"""`mailgate tickets`, `show` and `send`: list tickets, tell one ticket's story, and send a
test request to a listener."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta

from mailgate.cli.loading import directory_or_none, known_departments, with_store
from mailgate.cli.output import print_json, print_table, say, say_lines
from mailgate.core.model import Status
from mailgate.storage.history import local_time
from mailgate.storage.store import Store


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
    directory = directory_or_none(args)
    if not known_departments("tickets", directory, [args.department] if args.department
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

    return with_store(args, work)


_SLA_LABELS = {"breached": "BREACHED", "at_risk": "at risk", "ok": "ok"}


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

    return with_store(args, work)


def cmd_send(args: argparse.Namespace) -> int:
    import smtplib  # here, not for `tickets` and `show`
    from email.utils import format_datetime, make_msgid

    from mailgate.outbound.compose import needs_smtputf8

    host, _, port = args.server.rpartition(":")
    domain = args.sender.partition("@")[2] or "localhost"
    raw = (f"From: {args.sender}\r\nTo: {args.to}\r\nSubject: {args.subject}\r\n"
           f"Date: {format_datetime(datetime.now(UTC))}\r\n"
           f"Message-ID: {make_msgid(domain=domain)}\r\n"
           f"Content-Type: text/plain; charset=utf-8\r\n\r\n{args.body}\r\n").encode()
    utf8 = needs_smtputf8(args.sender, [args.to], raw)  # jörg@example.com
    try:
        with smtplib.SMTP(host or "127.0.0.1", int(port), timeout=30) as client:
            client.sendmail(args.sender, [args.to], raw,
                            mail_options=["SMTPUTF8"] if utf8 else [])
    except (OSError, smtplib.SMTPException) as exc:
        say(f"mailgate send: {args.server}: {exc} (is `mailgate demo` running there?)",
            file=sys.stderr)
        return 1
    say(f"sent to {args.to} via {args.server}")
    return 0
