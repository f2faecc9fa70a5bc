"""Team notifications held back in a flood, summarised once an hour.

A team hears of each new request (tickets/new_request.py) -- but at most
[limits] team_notifications_per_sender_per_hour times an hour from one sender. The rest are
ticketed as usual and their notification is held (held_notifications). This worker sends
the team one mail per flooding sender naming the held tickets ("14 more requests from x@ in
the last hour"): the first soon after the flood starts, then at most one an hour while it
goes on. Every minute it looks; tests call `run_once` with an injected clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from mailgate.core.model import OutgoingKind
from mailgate.outbound import kinds
from mailgate.service.log import get_logger
from mailgate.storage.store import Store, Tx
from mailgate.workers.periodic import every, repeat

if TYPE_CHECKING:
    from mailgate.service.current import Current, Snapshot

log = get_logger("mailgate.workers.flood")
INTERVAL = 60.0
SUMMARY_EVERY = timedelta(hours=1)
MAX_LISTED = 200  # tickets named in one summary; the count says how many in all

Clock = Callable[[], datetime]


class FloodSummaries:
    def __init__(self, store: Store, current: Current, clock: Clock,
                 sent: Callable[[], None]) -> None:
        self.store = store
        self.current = current  # read once per round: a reload applies from the next one
        self.clock = clock
        self.sent = sent
        self.wake = asyncio.Event()

    async def run(self) -> None:
        await repeat("flood", self.run_once, self.wake, every(INTERVAL))

    async def run_once(self) -> int:
        """Send the summaries that are due; return how many."""
        now, queued, snapshot = self.clock(), 0, self.current.snapshot
        async with self.store.transaction() as tx:
            for department, sender, last in await tx.pending_holds():
                if now.timestamp() - last >= SUMMARY_EVERY.total_seconds():
                    queued += await self._summarise(tx, snapshot, department, sender, now)
        if queued:
            self.sent()
        return queued

    async def _summarise(self, tx: Tx, snapshot: Snapshot, department: str, sender: str,
                         now: datetime) -> int:
        tickets = await tx.held_tickets(department, sender)
        directory = snapshot.directory
        dept = directory.departments.get(department)
        to = directory.recipients(dept, ("team",), None) if dept else ()
        if not tickets:
            return 0
        if dept is None or not to:  # nobody to tell: mark them, or they wait for ever
            await tx.mark_summarised([t[0] for t in tickets], None)
            log.warning("flood.unsent", department=department, sender=sender)
            return 0
        context = {
            "department": {"key": dept.key, "name": dept.name, "address": dept.address},
            "sender": sender, "count": len(tickets),
            "tickets": [{"ref": ref, "subject": subject}
                        for _, ref, subject in tickets[:MAX_LISTED]],
        }
        mail = kinds.Mail(kind=OutgoingKind.FLOOD_SUMMARY, from_name=dept.name,
                          from_addr=dept.address, to=to, context=context, department=dept.key,
                          fields={"count": len(tickets), "sender": sender})
        sending = kinds.Sending(snapshot.config.instance)
        [out] = kinds.build(mail, snapshot.renderer, sending, now)
        outgoing = await tx.enqueue(out, now)
        await tx.mark_summarised([t[0] for t in tickets], outgoing)
        log.warning("flood.summarised", department=department, sender=sender,
                    tickets=len(tickets))
        return 1
