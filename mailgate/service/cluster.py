"""The leases this node holds, kept fresh; what the node runs follows what it holds.

Several daemons may share one database. Each wants the `leader` lease (the periodic
workers) and a `mailbox:<name>` lease per configured mailbox (its watcher); the database
gives each lease to one node at a time (storage/leases.py). Every `renew_every` (a third
of the lease) this task takes or renews all of them in one round, then starts what it
gained and stops what it lost.

Stopping comes before the lease can expire, by this node's own clock: a lease is counted
as held until the moment the round that won it was *sent*, plus the lease time, which is
never later than the database's expiry. A round that fails (the database unreachable)
keeps what it holds while a next round could still renew it in time; otherwise it stops
it at once, leaving a third of the lease for a watcher to finish its transaction. So a
node cut off from the database has stopped watching before another node can take over.

With one daemon on SQLite (the flock allows no other), every lease is simply ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from mailgate.config.settings import ClusterConfig
from mailgate.service.log import get_logger
from mailgate.storage.leases import Lease

log = get_logger("mailgate.service.cluster")
Change = Callable[[str], Awaitable[None]]  # told a lease name
SLACK = 0.1  # of a renewal interval: rounds start a little late on a busy loop


class Book(Protocol):
    """What the cluster needs of storage.leases.LeaseBook."""

    async def claim(self, names: Iterable[str], holder: str,
                    seconds: float) -> dict[str, Lease]: ...

    async def release(self, names: Sequence[str], holder: str) -> None: ...


class Cluster:
    def __init__(self, book: Book, node: str, settings: ClusterConfig, on_gain: Change,
                 on_loss: Change, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.book = book
        self.node = node
        self.settings = settings
        self.on_gain = on_gain  # start what the lease stands for
        self.on_loss = on_loss  # stop it; must return before the lease could expire
        self.monotonic = monotonic
        self.wanted: tuple[str, ...] = ()
        self.held: dict[str, float] = {}  # lease -> until when it is surely ours (monotonic)
        self.resting: dict[str, float] = {}  # lease -> until when this node does not want it
        self.last_round = monotonic()
        self.failing: str | None = None  # why the last round failed, for the status line
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one round at a time (the loop, a reload)

    def want(self, names: Iterable[str]) -> None:
        """The leases this node should hold from the next round on."""
        self.wanted = tuple(names)

    def holds(self, name: str) -> bool:
        return name in self.held

    def rest(self, name: str, seconds: float) -> None:
        """Give this lease up at the next round and leave it to the other nodes for a
        while (a mailbox this node cannot reach, that another one may)."""
        self.resting[name] = self.monotonic() + seconds
        self.wake()

    def _wanted_now(self) -> tuple[str, ...]:
        now = self.monotonic()
        self.resting = {n: until for n, until in self.resting.items() if until > now}
        return tuple(n for n in self.wanted if n not in self.resting)

    async def round(self) -> None:
        """Take or renew every wanted lease; start what was gained, stop what was lost."""
        async with self._lock:
            sent = self.last_round = self.monotonic()
            wanted = self._wanted_now()
            try:
                async with asyncio.timeout(self.settings.renew_every):
                    claimed = await self.book.claim(wanted, self.node,
                                                    self.settings.lease_seconds)
            except Exception as exc:  # timeout, database down: renew nothing this round
                await self._failed(sent, exc)
                return
            if self.failing:
                log.info("cluster.renewing_again", node=self.node)
            self.failing = None
            unwanted = [n for n in self.held if n not in wanted]
            # Another node holds it now (we were too late), or it is no longer wanted.
            await self._lose({n: "unwanted" if n in unwanted else "taken"
                              for n in self.held if n not in claimed})
            for name in wanted:
                if name not in claimed:
                    continue
                if name not in self.held:
                    log.info("cluster.gained", node=self.node, lease=name,
                             until=claimed[name].expires_at.isoformat())
                    # Counted as held once started: if starting fails, the next round
                    # (which renews the lease meanwhile) tries again.
                    await self.on_gain(name)
                self.held[name] = sent + self.settings.lease_seconds
            if unwanted:  # stopped above: give it back now, not when it expires
                await self._give_back(unwanted)

    async def _failed(self, sent: float, exc: BaseException) -> None:
        self.failing = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        log.warning("cluster.renew_failed", node=self.node, error=self.failing,
                    held=sorted(self.held))
        # Whatever the next round cannot renew in time is stopped now, while it is ours.
        horizon = self.monotonic() + self.settings.renew_every * (1 + SLACK)
        await self._lose({n: "not renewed" for n, until in self.held.items()
                          if until <= horizon})

    async def _lose(self, why: dict[str, str]) -> None:
        """Stop what these leases stand for, all at once: one after the other, each
        waiting for a transaction to end, the last could outlive its lease."""
        for name, reason in why.items():
            del self.held[name]
            log.warning("cluster.lost", node=self.node, lease=name, reason=reason)
        stopped = await asyncio.gather(*(self.on_loss(name) for name in why),
                                       return_exceptions=True)
        for name, outcome in zip(why, stopped, strict=True):
            if isinstance(outcome, Exception):
                log.error("cluster.stop_failed", node=self.node, lease=name,
                          error=repr(outcome))

    async def run(self) -> None:
        """Renew every third of the lease (or sooner when woken) until cancelled."""
        while True:
            wait = self.last_round + self.settings.renew_every - self.monotonic()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wait)):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.round()
            except Exception:
                # A bug in starting or stopping something must not end the renewals: the
                # watchers would run on while their leases ran out under them.
                log.exception("cluster.round_failed", node=self.node)

    def wake(self) -> None:
        """Run a round now (new mailboxes after a reload)."""
        self._wake.set()

    async def release(self) -> None:
        """Give every held lease back (a clean stop, after what they stand for stopped):
        other nodes take them over at their next round, not after the lease time."""
        names, self.held = list(self.held), {}
        await self._give_back(names)

    async def _give_back(self, names: list[str]) -> None:
        try:
            async with asyncio.timeout(self.settings.renew_every):
                await self.book.release(names, self.node)
        except Exception as exc:  # they expire on their own
            log.warning("cluster.release_failed", node=self.node, error=repr(exc))
        else:
            log.info("cluster.released", node=self.node, leases=names)
