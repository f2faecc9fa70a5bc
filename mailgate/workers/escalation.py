"""The escalation scheduler: sleeps until the earliest due level, fires it exactly once.

A level is fired in one transaction that records it (escalations table), advances the
clock and enqueues the mail, so a crash either fires it completely or not at all. The mail
is enqueued as a draft that the outbox writes when it sends it (escalation_mail.py): the
tick itself only decides and records. Wake-ups
come from the clock (the earliest next_escalation_at, at most a minute ahead so wall-clock
jumps are noticed) and from `notify()` after tickets change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from mailgate.config.directory import Department
from mailgate.core.model import Outgoing
from mailgate.outbound import escalation_mail, kinds
from mailgate.service import metrics
from mailgate.service.log import get_logger
from mailgate.storage import escalations
from mailgate.storage.slaclock import DueLevel
from mailgate.storage.store import OutboxRow, Store
from mailgate.workers.periodic import repeat

if TYPE_CHECKING:
    from mailgate.service.current import Current, Snapshot

log = get_logger("mailgate.workers.escalation")
BATCH = 200  # tickets per transaction
MAX_SLEEP = 60.0  # seconds; bounds how late a wall-clock jump is noticed

Clock = Callable[[], datetime]


class Escalator:
    def __init__(self, store: Store, current: Current, clock: Clock,
                 sent: Callable[[], None]) -> None:
        self.store = store
        self.current = current  # read once per batch: a reload applies from the next one
        self.clock = clock
        self.sent = sent
        self.wake = asyncio.Event()

    def notify(self) -> None:
        self.wake.set()

    async def run(self) -> None:
        await repeat("escalation", self.run_once, self.wake, self._sleep)

    async def run_once(self) -> int:
        """Fire everything due now, oldest first, in batches; return how many levels went
        out as mail (each as one copy per recipient)."""
        now, total = self.clock(), 0
        while True:
            snapshot = self.current.snapshot
            sla = snapshot.sla
            async with self.store.transaction() as tx:
                tick = await sla.due(tx, now, BATCH)
                mails, unsent, sent = [], [], {}
                audience: dict[tuple, tuple] = {}  # (dept, kind, assignee) -> roles, to
                for index, due in enumerate(tick.due):
                    copies, event = self._draft(snapshot, due, audience, now)
                    if copies:
                        mails += copies
                        sent[index] = copies[0].message_id
                    if event is not None:
                        unsent.append(event)
                await tx.enqueue_many(mails, now)
                await sla.commit(tx, tick, sent)
                if unsent:
                    await tx.add_events(unsent, now)
            total += len(sent)
            self._committed(tick.due)
            if mails:
                self.sent()
            if tick.tickets < BATCH:
                return total

    @staticmethod
    def _committed(fired: list[DueLevel]) -> None:
        """Count and log what a committed tick fired: one log line per tick, not per
        level (a burst of 100 lines would cost the tick more than its SQL does); the
        outbox logs each mail with its recipients when it is sent."""
        levels = []
        for due in fired:
            assert due.firing.level is not None
            kind = due.firing.level.kind
            metrics.METRICS.escalation(due.department, kind)
            skipped = f" ({len(due.firing.skipped)} skipped)" if due.firing.skipped else ""
            levels.append(f"{due.ref} {due.clock.target.value} {kind.value}{skipped}")
        if levels:
            log.info("escalation.fired", count=len(levels), levels=levels)

    async def _sleep(self) -> float:
        due = await escalations.next_due_at(self.store)
        if due is None:
            return MAX_SLEEP
        return max(0.0, min(MAX_SLEEP, (due - self.clock()).total_seconds()))

    async def write(self, row: OutboxRow) -> bytes:
        """The outbox's hook: the mail for an escalation this scheduler queued as a draft."""
        fired = await escalation_mail.load(self.store, row)
        snapshot = self.current.snapshot  # the templates in effect when it is sent
        return escalation_mail.write(fired, row, snapshot.sla, snapshot.renderer,
                                     snapshot.config.instance)

    def _draft(self, snapshot: Snapshot, due: DueLevel, audience: dict[tuple, tuple],
               now: datetime,
               ) -> tuple[list[Outgoing], tuple[int, str, dict, str | None] | None]:
        """The escalation mail for one level as drafts (written when sent), one copy per
        recipient with that person's reply key, or else the event that says why none goes
        out. A mail needs no event: the escalations row names its first copy, the others
        name that one (copy_of), and `mailgate show` reads both."""
        level = due.firing.level
        assert level is not None  # only clocks with a level to fire are in tick.due
        kind, sla = level.kind, snapshot.sla
        dept = sla.department(due.department)
        key = (due.department, kind, due.assignee)
        if key not in audience:  # the same few answers for a whole tick
            roles = sla.roles(dept, kind.value) if dept else ()
            audience[key] = (roles, sla.directory.recipients(dept, roles, due.assignee)
                             if dept else ())
        roles, recipients = audience[key]
        if dept is None or not recipients:
            reason = _unsent_reason(due.department, dept, kind.value, roles)
            log.warning("escalation.no_recipients", ticket=due.ref, kind=kind.value,
                        reason=reason)
            return [], (due.ticket_id, f"sla_{kind.value}_unsent",
                          {"target": due.clock.target.value, "level": level.number,
                           "reason": reason}, None)
        mail = kinds.Mail(kind=kinds.escalation_kind(kind), from_name=dept.name,
                          from_addr=dept.address, to=recipients, tickets=(due.ref,),
                          ticket_id=due.ticket_id)
        sending = kinds.Sending(snapshot.config.instance, snapshot.keys)
        return kinds.keyed_copies(mail, sending, now,
                                  draft=escalation_mail.DRAFT), None


def _unsent_reason(key: str, dept: Department | None, kind: str,
                   roles: tuple[str, ...]) -> str:
    """Why an escalation found nobody to tell, as something an admin can fix."""
    if dept is None:
        return f"department {key!r} is not in the directory (any more)"
    if not roles:
        return f"the SLA policy names no roles to notify for {kind} ([sla.NAME.notify])"
    return (f"nobody in the directory fills {' / '.join(roles)} for {dept.key}; add them "
            "to the department or change [sla.NAME.notify]")
