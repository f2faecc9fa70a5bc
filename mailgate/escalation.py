"""The escalation scheduler: sleeps until the earliest due level, fires it exactly once.

A level is fired in one transaction that records it (escalations table), advances the
clock and enqueues the mail, so a crash either fires it completely or not at all. Wake-ups
come from the clock (the earliest next_escalation_at, at most a minute ahead so wall-clock
jumps are noticed) and from `notify()` after tickets change.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from datetime import datetime, timedelta

from mailgate.compose import Envelope, compose, new_message_id
from mailgate.log import get_logger
from mailgate.model import Outgoing, Priority, Status, Ticket
from mailgate.render import Renderer
from mailgate.sla import LevelKind, time_left
from mailgate.slaclock import DueLevel, SlaBook
from mailgate.store import Store, Tx, from_ts

log = get_logger("mailgate.escalation")
BATCH = 200  # tickets per transaction
MAX_SLEEP = 60.0  # seconds; bounds how late a wall-clock jump is noticed
DEFAULT_ROLES = {
    LevelKind.WARNING: ("assignee", "team"),
    LevelKind.BREACH: ("assignee", "lead", "head"),
    LevelKind.RE_ESCALATION: ("head", "head_manager"),
}

Clock = Callable[[], datetime]


class Escalator:
    def __init__(self, store: Store, sla: Callable[[], SlaBook], renderer: Callable[[], Renderer],
                 clock: Clock, sent: Callable[[], None], instance: str = "mailgate") -> None:
        # sla and renderer are getters: a reload swaps them between rounds.
        self.store = store
        self.sla = sla
        self.renderer = renderer
        self.clock = clock
        self.sent = sent
        self.instance = instance
        self.wake = asyncio.Event()
        self.errors = 0

    def notify(self) -> None:
        self.wake.set()

    async def run(self) -> None:
        while True:
            self.wake.clear()
            try:
                await self.run_once()
                self.errors = 0
            except sqlite3.OperationalError as exc:  # locked, disk full: retry, never die
                self.errors += 1
                log.warning("escalation.retry", error=str(exc), round=self.errors)
            timeout = min(2.0 ** self.errors, MAX_SLEEP) if self.errors else await self._sleep()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)

    async def run_once(self) -> int:
        """Fire everything due now, oldest first, in batches; return the mails enqueued."""
        now, total = self.clock(), 0
        while True:
            sla = self.sla()
            async with self.store.transaction() as tx:
                tickets = await sla.due_tickets(tx, now, BATCH)
                for ticket_id in tickets:
                    for due in await sla.fire(tx, ticket_id, now):
                        total += await self._mail(tx, sla, due, now)
            if total:
                self.sent()
            if len(tickets) < BATCH:
                return total

    async def _sleep(self) -> float:
        async with self.store.conn.execute(
                "SELECT MIN(next_escalation_at) FROM tickets "
                "WHERE next_escalation_at IS NOT NULL") as cur:
            row = await cur.fetchone()
        if row is None or row[0] is None:
            return MAX_SLEEP
        return max(0.0, min(MAX_SLEEP, row[0] - self.clock().timestamp()))

    async def _mail(self, tx: Tx, sla: SlaBook, due: DueLevel, now: datetime) -> int:
        ticket, assignee = await _ticket(tx, due.ticket_id)
        dept = sla.department(ticket.department)
        if dept is None:
            return 0
        kind = due.firing.level.kind
        roles = sla.roles(dept, kind.value) or DEFAULT_ROLES[kind]
        recipients = sla.directory.recipients(dept, roles, assignee)
        detail = {"target": due.clock.target.value, "level": due.firing.level.number,
                  "kind": kind.value, "to": list(recipients)}
        if not recipients:
            await tx.add_event(ticket.id, "escalation_unsent", now,
                               detail=detail | {"reason": "no recipients in the directory"})
            log.warning("escalation.no_recipients", ticket=ticket.ref, kind=kind.value)
            return 0
        calendar = sla.calendar(dept)
        left = time_left(due.clock, calendar, now)
        context = {
            "ticket": {"ref": ticket.ref, "subject": ticket.subject, "status": ticket.status,
                       "priority": ticket.priority.value, "created_at": ticket.created_at,
                       "assignee": assignee},
            "requester": {"name": ticket.requester_name, "address": ticket.requester},
            "department": {"key": dept.key, "name": dept.name, "address": dept.address},
            "target": due.clock.target.value, "kind": kind.value,
            "due_at": due.due_at, "now": now,
            "age": timedelta(seconds=calendar.elapsed(ticket.created_at, now)),
            "left": timedelta(seconds=max(0.0, left)),
            "overdue": timedelta(seconds=max(0.0, -left)),
            "roles": list(roles),
        }
        body = self.renderer().render("escalation", dept.key, context)
        message_id = new_message_id(dept.address.partition("@")[2], ticket.ref)
        envelope = Envelope(
            from_name=dept.name, from_addr=dept.address, to=recipients,
            subject=f"[{ticket.ref}] {_headline(kind, due.clock.target.value)}: "
                    f"{ticket.subject}",
            message_id=message_id, date=now, auto_submitted="auto-generated",
            extra=(("X-Mailgate-Instance", self.instance),
                   ("X-Mailgate-Ticket", ticket.ref),
                   ("X-Mailgate-Escalation", f"{due.clock.target.value} {kind.value}")))
        outgoing = await tx.enqueue(Outgoing(
            message_id=message_id, kind=f"escalation-{kind.value}", mail_from=dept.address,
            recipients=recipients, raw=compose(envelope, body.text, body.html),
            ticket_id=ticket.id), now)
        await tx.execute("UPDATE escalations SET outgoing = ? WHERE ticket = ? AND target = ? "
                         "AND round = ? AND level = ?",
                         (outgoing, ticket.id, due.clock.target.value, due.round,
                          due.firing.level.number))
        await tx.add_event(ticket.id, f"sla_{kind.value}", now, outgoing=outgoing,
                           detail=detail)
        log.info("escalation.fired", ticket=ticket.ref, target=due.clock.target.value,
                 kind=kind.value, level=due.firing.level.number,
                 skipped=len(due.firing.skipped), to=list(recipients))
        return 1


def _headline(kind: LevelKind, target: str) -> str:
    what = target.replace("_", " ")
    return {LevelKind.WARNING: f"SLA warning, {what} due soon",
            LevelKind.BREACH: f"SLA breached, {what} overdue",
            LevelKind.RE_ESCALATION: f"SLA still breached, {what} overdue"}[kind]


async def _ticket(tx: Tx, ticket_id: int) -> tuple[Ticket, str | None]:
    row = await tx.fetch_one(
        "SELECT id, ref, department, subject, requester, requester_name, status, priority, "
        "created_at, updated_at, assignee FROM tickets WHERE id = ?", (ticket_id,))
    assert row is not None  # fire() found it in this transaction
    ticket = Ticket(row[0], row[1], row[2], row[3], row[4], row[5], Status(row[6]),
                    Priority(row[7]), from_ts(row[8]), from_ts(row[9]))
    return ticket, row[10]
