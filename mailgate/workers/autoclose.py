"""Resolved tickets nobody answered close by themselves after [conversation] auto_close_after.

A requester's reply inside the reopen window reopens a resolved ticket (tickets/reply.py); a
ticket still resolved when `auto_close_after` has passed since its resolution is closed
here, with an event, in batches. The loop checks every minute (and when woken); tests call
`run_once` with an injected clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from mailgate.core.model import Status
from mailgate.service.log import get_logger
from mailgate.storage import ticketops as ops
from mailgate.storage.store import Store
from mailgate.workers.periodic import every, repeat

if TYPE_CHECKING:
    from mailgate.service.current import Current

log = get_logger("mailgate.workers.autoclose")
BATCH = 500
INTERVAL = 60.0  # seconds between checks; closing a minute late is fine

Clock = Callable[[], datetime]


class AutoCloser:
    def __init__(self, store: Store, current: Current, clock: Clock) -> None:
        self.store = store
        self.current = current  # read once per round: a reload applies from the next one
        self.clock = clock
        self.wake = asyncio.Event()

    def notify(self) -> None:
        self.wake.set()

    async def run(self) -> None:
        await repeat("autoclose", self.run_once, self.wake, every(INTERVAL))

    async def run_once(self) -> int:
        """Close every ticket resolved longer than `after` ago; return how many."""
        now, total = self.clock(), 0
        after = self.current.snapshot.config.conversation.auto_close_after
        while True:
            async with self.store.transaction() as tx:
                due = await ops.resolved_before(tx, now - after, BATCH)
                for ticket_id, ref in due:
                    await ops.set_status(tx, ticket_id, Status.CLOSED, now)
                    await tx.add_event(ticket_id, "closed", now,
                                       detail={"reason": "resolved and not answered",
                                            "after_days": after / timedelta(days=1)})
                    log.info("ticket.auto_closed", ticket=ref)
            total += len(due)
            if len(due) < BATCH:
                return total
