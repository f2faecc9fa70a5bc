"""The escalation scheduler: sleeps until the earliest due level, fires it exactly once.

A level is fired in one transaction that records it (escalations table), advances the
clock and enqueues the mail, so a crash either fires it completely or not at all. Wake-ups
come from the clock (the earliest next_escalation_at, at most a minute ahead so wall-clock
jumps are noticed) and from `notify()` after tickets change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from mailgate import metrics
from mailgate.compose import Envelope, compose, new_message_id
from mailgate.log import get_logger
from mailgate.model import Outgoing
from mailgate.periodic import repeat
from mailgate.render import Renderer
from mailgate.sla import LevelKind, time_left
from mailgate.slaclock import DueLevel, SlaBook
from mailgate.store import Store

log = get_logger("mailgate.escalation")
BATCH = 200  # tickets per transaction
MAX_SLEEP = 60.0  # seconds; bounds how late a wall-clock jump is noticed

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

    def notify(self) -> None:
        self.wake.set()

    async def run(self) -> None:
        await repeat("escalation", self.run_once, self.wake, self._sleep)

    async def run_once(self) -> int:
        """Fire everything due now, oldest first, in batches; return the mails enqueued."""
        now, total = self.clock(), 0
        while True:
            sla, renderer = self.sla(), self.renderer()
            async with self.store.transaction() as tx:
                tick = await sla.due(tx, now, BATCH)
                mails, events, sent = [], [], {}
                for index, due in enumerate(tick.due):
                    mail, event = self._mail(sla, renderer, due, now)
                    events.append(event)
                    if mail is not None:
                        mails.append(mail)
                        sent[index] = mail.message_id
                await tx.enqueue_many(mails, now)
                await sla.commit(tx, tick, sent)
                await tx.add_events(events, now)
            total += len(mails)
            for due in tick.due:  # committed: count each fired level once
                if due.firing.level is not None:
                    metrics.METRICS.escalation(due.ticket.department, due.firing.level.kind)
            if mails:
                self.sent()
            if tick.tickets < BATCH:
                return total

    async def _sleep(self) -> float:
        async with self.store.conn.execute(
                "SELECT MIN(next_escalation_at) FROM tickets "
                "WHERE next_escalation_at IS NOT NULL") as cur:
            row = await cur.fetchone()
        if row is None or row[0] is None:
            return MAX_SLEEP
        return max(0.0, min(MAX_SLEEP, row[0] - self.clock().timestamp()))

    def _mail(self, sla: SlaBook, renderer: Renderer, due: DueLevel,
              now: datetime) -> tuple[Outgoing | None, tuple[int, str, dict, str | None]]:
        """The escalation mail for one level, and the event that records it on the ticket."""
        level = due.firing.level
        assert level is not None  # only clocks with a level to fire are in tick.due
        ticket, kind = due.ticket, level.kind
        dept = sla.department(ticket.department)
        roles = sla.roles(dept, kind.value) if dept else ()
        recipients = sla.directory.recipients(dept, roles, due.assignee) if dept else ()
        detail = {"target": due.clock.target.value, "level": level.number,
                  "skipped": len(due.firing.skipped), "to": list(recipients)}
        if dept is None or not recipients:
            log.warning("escalation.no_recipients", ticket=ticket.ref, kind=kind.value)
            return None, (ticket.id, f"sla_{kind.value}_unsent",
                          detail | {"reason": "nobody in the directory fills " +
                                    " / ".join(roles)}, None)
        calendar = sla.calendar(dept)
        left = time_left(due.clock, calendar, now)
        context = {
            "ticket": {"ref": ticket.ref, "subject": ticket.subject, "status": ticket.status,
                       "priority": ticket.priority.value, "created_at": ticket.created_at,
                       "assignee": due.assignee},
            "requester": {"name": ticket.requester_name, "address": ticket.requester},
            "department": {"key": dept.key, "name": dept.name, "address": dept.address},
            "target": due.clock.target.value, "kind": kind.value,
            "due_at": due.due_at.astimezone(calendar.zone), "now": now,
            "due": due.due_at.astimezone(calendar.zone).strftime("%Y-%m-%d %H:%M %Z"),
            "age": timedelta(seconds=calendar.elapsed(ticket.created_at, now)),
            "left": timedelta(seconds=max(0.0, left)),
            "overdue": timedelta(seconds=max(0.0, -left)),
            "roles": list(roles),
        }
        body = renderer.render("escalation", dept.key, context)
        message_id = new_message_id(dept.address.partition("@")[2], ticket.ref)
        envelope = Envelope(
            from_name=dept.name, from_addr=dept.address, to=recipients,
            subject=f"[{ticket.ref}] {_headline(kind, due.clock.target.value)}: "
                    f"{ticket.subject}",
            message_id=message_id, date=now, auto_submitted="auto-generated",
            extra=(("X-Mailgate-Instance", self.instance),
                   ("X-Mailgate-Ticket", ticket.ref),
                   ("X-Mailgate-Escalation", f"{due.clock.target.value} {kind.value}")))
        mail = Outgoing(message_id=message_id, kind=f"escalation-{kind.value}",
                        mail_from=dept.address, recipients=recipients,
                        raw=compose(envelope, body.text, body.html), ticket_id=ticket.id)
        log.info("escalation.fired", ticket=ticket.ref, target=due.clock.target.value,
                 kind=kind.value, level=level.number,
                 skipped=len(due.firing.skipped), to=list(recipients))
        return mail, (ticket.id, f"sla_{kind.value}", detail, message_id)


def _headline(kind: LevelKind, target: str) -> str:
    what = target.replace("_", " ")
    return {LevelKind.WARNING: f"SLA warning, {what} due soon",
            LevelKind.BREACH: f"SLA breached, {what} overdue",
            LevelKind.RE_ESCALATION: f"SLA still breached, {what} overdue"}[kind]
