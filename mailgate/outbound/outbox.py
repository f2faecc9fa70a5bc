"""The sender loop: deliver due outbox rows (in order per ticket, on several connections
at once), retry with backoff, never drop.

A row leaves the queue only when the server accepted it (status 'sent') or refused it for
good (status 'failed', recorded on the ticket). Acceptance is written to the sent log at
once and to the database in batches (see sentlog.py). A crash between the server's 250 and
that one write resends that one mail on restart, with the same Message-ID.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta

from mailgate.errors import PermanentError
from mailgate.intake.pipeline import Clock
from mailgate.outbound.sentlog import SentLog
from mailgate.outbound.transport import ServerUnavailable, Transport
from mailgate.service import metrics
from mailgate.service.log import get_logger
from mailgate.storage import errors as store_errors
from mailgate.storage.store import OutboxRow, Store

log = get_logger("mailgate.outbound.outbox")
DraftWriter = Callable[[OutboxRow], Awaitable[bytes]]
WRITE_RETRY = timedelta(minutes=5)  # a draft that failed to be written is tried again
MAX_ATTEMPTS = 25  # about three days with the backoff below
IDLE_CLOSE = 30.0  # seconds without mail before the SMTP connection is closed
MAX_DATABASE_BACKOFF = 60.0  # seconds between rounds while the database keeps failing


def retry_delay(attempts: int, base: float = 30.0, cap: float = 3600.0) -> timedelta:
    """Exponential backoff with jitter: 30 s, 1 min, 2 min ... at most an hour."""
    delay = min(cap, base * 2 ** max(0, attempts))
    return timedelta(seconds=delay * random.uniform(0.8, 1.2))


def by_lane(rows: list[OutboxRow], lanes: int) -> list[list[OutboxRow]]:
    """The rows split over `lanes`, in order within each: one ticket's mail (else one
    recipient list's) always shares a lane, so an acknowledgement goes out before the
    answer that follows it."""
    queues: list[list[OutboxRow]] = [[] for _ in range(max(1, lanes))]
    for row in rows:
        key = row.ticket if row.ticket is not None else hash(row.recipients)
        queues[key % len(queues)].append(row)
    return queues


class Outbox:
    def __init__(self, store: Store, transport: Transport, clock: Clock,
                 sent_log: SentLog, write_draft: DraftWriter | None = None) -> None:
        self.store = store
        self.write_draft = write_draft  # turns a row's draft into the mail to send
        self.transport = transport
        self.clock = clock
        self.sent_log = sent_log
        self.wake = asyncio.Event()
        self.closing = asyncio.Event()
        self.server_backoff = 0  # consecutive rounds the server was unreachable
        self.last_error: str | None = None
        self._halted = False  # this round found the server unreachable
        self._marking = asyncio.Lock()

    def notify(self) -> None:
        """Called after a transaction that enqueued mail has committed."""
        self.wake.set()

    async def drain_once(self) -> int:
        """Send every due mail once; return how many were accepted by the server."""
        sent = 0
        self._halted = False
        while True:
            pending = self.sent_log.snapshot()
            rows = await self.store.claim_outgoing(self.clock(), limit=100, keep=pending)
            if not rows:
                break
            fresh = [row for row in rows if row.id not in pending]
            if not fresh:  # everything due is sent already: let the database catch up
                await self.apply_sent()
                continue
            lanes = by_lane(fresh, self.transport.lanes)
            # Every lane ends before the round does, even when one fails (the database
            # gone): a lane left running would still be sending when the next round
            # claims rows anew, and could send one of them twice.
            counts = await asyncio.gather(*(self._send_lane(queue, lane)
                                            for lane, queue in enumerate(lanes)),
                                          return_exceptions=True)
            failed = [c for c in counts if isinstance(c, BaseException)]
            if failed:
                raise failed[0]
            sent += sum(c for c in counts if isinstance(c, int))
            if self._halted:  # the server is unreachable: the rest waits for the next round
                break
            if not self.store.write_busy():  # opportunistic: never wait for intake here
                await self.apply_sent()
        await self.apply_sent()
        return sent

    async def _send_lane(self, rows: list[OutboxRow], lane: int) -> int:
        """Send one lane's rows in order; stop when any lane found the server down.

        The rows go to the transport as one run (one hand-off to the connection's thread)
        until one fails; what failed is dealt with here, and the rest is a new run. With a
        shared engine each mail is its own run: see _after_sent."""
        ready = [row for row in [await self._ready(row) for row in rows] if row is not None]
        step = 1 if self.store.engine.shared else max(1, len(ready))
        sent = at = 0
        while at < len(ready) and not self._halted:
            run = ready[at:at + step]
            result = await self.transport.send_run(run, lane, self._accepted, self._stopped)
            for row in run[:result.sent]:
                await self._after_sent(row)
            sent += result.sent
            at += result.sent
            if result.failure is None:
                if result.sent < len(run):
                    break  # stopped: another lane found the server down
                continue
            at += 1  # the row that failed, dealt with now
            if not await self._after_failure(run[result.sent], result.failure):
                break
        return sent

    async def _ready(self, row: OutboxRow) -> OutboxRow | None:
        """The row with its mail, written from its draft if it has one (else None)."""
        return row if row.draft is None else await self._write(row)

    def _accepted(self, row: OutboxRow) -> None:
        # Called in the connection's thread the moment the server said 250.
        self.sent_log.record(row.id)

    def _stopped(self) -> bool:
        return self._halted

    async def _after_sent(self, row: OutboxRow) -> None:
        if self.store.engine.shared:
            # Several nodes drain one outbox and this node's sent log dies with it:
            # the mark reaches the database before the lane's next send, so a node
            # killed now costs at most one mail per lane twice (its claims die with it).
            await self.apply_sent()
        metrics.METRICS.mail_sent(row.kind, self.clock().timestamp() - row.created_at)
        log.info("mail.sent", outbox=row.id, kind=row.kind, message_id=row.message_id,
                 to=list(row.recipients))
        if not self._halted:  # another lane's news of an outage stands for the round
            self.server_backoff, self.last_error = 0, None

    async def _after_failure(self, row: OutboxRow, failure: Exception) -> bool:
        """Record why ROW was not sent; False when the server is down (the lane stops)."""
        if isinstance(failure, ServerUnavailable):
            if not self._halted:
                self._halted = True
                self._server_down(str(failure))
            return False
        if isinstance(failure, PermanentError):
            await self._failed(row, str(failure))
        else:
            await self._retry(row, str(failure))
        return True

    async def apply_sent(self) -> None:
        """Move accepted ids from the sent log into the database in one transaction."""
        async with self._marking:  # lanes call this side by side: each id marked once
            ids = self.sent_log.snapshot()
            if ids:
                await self.store.mark_sent(ids, self.clock())
                self.sent_log.applied(ids)

    async def _write(self, row: OutboxRow) -> OutboxRow | None:
        """The row with its mail written from the draft, or None when it could not be.

        A draft that can never be written (PermanentError: nothing recorded for it) fails
        and is recorded on the ticket. Any other failure -- a bug, a template problem --
        keeps the row queued and retries it every WRITE_RETRY without counting attempts,
        like an unreachable server: the mail goes out once the cause is fixed, however
        long that takes, and `mailgate status` shows the queue growing old meanwhile."""
        try:
            if self.write_draft is None:
                raise RuntimeError("no writer for drafts in this process")
            return replace(row, raw=await self.write_draft(row))
        except PermanentError as exc:
            await self._failed(row, f"could not write the mail: {exc}")
        except Exception as exc:  # anything else: keep the row, try again later
            log.exception("mail.write_failed", outbox=row.id, kind=row.kind)
            await self.store.mark_retry(row.id, self.clock() + WRITE_RETRY,
                                        f"could not write the mail: {exc}", count=False)
        return None

    def _server_down(self, error: str) -> None:
        self.server_backoff += 1
        self.last_error = error
        log.warning("smtp.unavailable", error=error, round=self.server_backoff)

    async def _retry(self, row: OutboxRow, error: str) -> None:
        if row.attempts + 1 >= MAX_ATTEMPTS:
            await self._failed(row, f"gave up after {row.attempts + 1} attempts: {error}")
            return
        await self.store.mark_retry(row.id, self.clock() + retry_delay(row.attempts), error)
        log.warning("mail.deferred", outbox=row.id, error=error, attempts=row.attempts + 1)

    async def _failed(self, row: OutboxRow, error: str) -> None:
        await self.store.mark_failed(row, error, self.clock())
        log.error("mail.failed", outbox=row.id, kind=row.kind, error=error,
                  to=list(row.recipients))

    def close(self) -> None:
        """Finish the current round, send what is due, then let run() return."""
        self.closing.set()
        self.wake.set()

    async def run(self) -> None:
        # The only caller of drain_once while the daemon runs: two drainers could send the
        # same row twice.
        failures = 0  # rounds in a row that failed on the database (or a bug)
        while True:
            self.wake.clear()
            try:
                await self.drain_once()
                failures = 0
                timeout = 0.0 if self.closing.is_set() else await self._sleep_time()
            except store_errors.TEMPORARY as exc:  # the database restarting, gone, locked
                failures += 1
                log.warning("outbox.database_unavailable", error=str(exc), round=failures)
            except Exception:  # a bug in one round must not end the sending for good
                failures += 1
                log.exception("outbox.round_failed", round=failures)
            if self.closing.is_set():
                return  # what the server accepted meanwhile is in the sent log
            if failures:
                # Mail sent in the failed round waits in the sent log; a commit (the
                # database back) wakes us early.
                timeout = min(2.0 ** failures, MAX_DATABASE_BACKOFF)
            # While the server is down, new mail must not hammer it: only closing wakes us.
            event = self.closing if self.server_backoff else self.wake
            try:  # asyncio.timeout: wait_for (3.11) can swallow a cancellation
                async with asyncio.timeout(timeout):
                    await event.wait()
            except TimeoutError:
                if timeout >= IDLE_CLOSE:
                    await self.transport.close()

    async def _sleep_time(self) -> float:
        if self.server_backoff:
            return retry_delay(self.server_backoff - 1, base=2.0, cap=300.0).total_seconds()
        due = await self.store.next_outgoing_at()
        if due is None:
            return 60.0
        return max(0.0, min(60.0, (due - self.clock()).total_seconds()))


