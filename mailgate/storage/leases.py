"""Leases between nodes: who holds a named lease (a mailbox, the leader) and until when.

A lease is one row, `leases(name, holder, expires_at, acquired_at)`. Taking it and renewing
it are the same statement: an upsert that only writes when the row is expired or already
ours, and RETURNING says whether it did. No read-then-write, so two nodes racing for one
lease cannot both win: the database serialises the two upserts on the row.

Time is the database's clock, never a node's: every node compares against the same `now`,
so a node whose clock is wrong cannot steal a lease early or keep one late. The holder
itself never trusts `expires_at` either: it counts down from the moment it *sent* the
statement on its own monotonic clock (see service/cluster.py), which ends no later than
the database's expiry whatever the two clocks say.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from mailgate.storage.store import Store, from_ts

LEADER = "leader"  # the node that runs the periodic workers
MAILBOX_PREFIX = "mailbox:"
NODE_PREFIX = "node:"  # each node's own: which nodes are alive

# Unix seconds (with a fraction) by the database's clock, per engine.
NOW_SQL = {
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
    "postgresql": "extract(epoch FROM clock_timestamp())::double precision",
}


def mailbox_lease(mailbox: str) -> str:
    return f"{MAILBOX_PREFIX}{mailbox}"


def node_lease(node: str) -> str:
    return f"{NODE_PREFIX}{node}"


def leased_mailbox(lease: str) -> str | None:
    """The mailbox a lease name stands for, or None for another lease (the leader)."""
    return lease.removeprefix(MAILBOX_PREFIX) if lease.startswith(MAILBOX_PREFIX) else None


@dataclass(frozen=True, slots=True)
class Lease:
    name: str
    holder: str
    expires_at: datetime
    acquired_at: datetime  # when this holder took it (renewals keep it)
    live: bool  # not expired by the database's clock when it was read


class LeaseBook:
    """The lease statements on one store. Each call is one short transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.now = NOW_SQL[store.engine.name]

    async def claim(self, names: Iterable[str], holder: str, seconds: float) -> dict[str, Lease]:
        """Take or renew each named lease for `seconds` from the database's now; return the
        ones `holder` holds afterwards. A lease another node holds and has not let expire
        is simply absent from the answer."""
        # acquired_at restarts only when the holder changes; renewing keeps it.
        sql = f"""INSERT INTO leases (name, holder, expires_at, acquired_at)
                  VALUES (?, ?, {self.now} + ?, {self.now})
                  ON CONFLICT (name) DO UPDATE SET
                      holder = excluded.holder,
                      expires_at = excluded.expires_at,
                      acquired_at = CASE WHEN leases.holder = excluded.holder
                                         THEN leases.acquired_at ELSE excluded.acquired_at END
                  WHERE leases.expires_at < excluded.acquired_at
                     OR leases.holder = excluded.holder
                  RETURNING name, holder, expires_at, acquired_at"""
        held: dict[str, Lease] = {}
        async with self.store.transaction() as tx:
            # Always in one order: two nodes locking rows in opposite orders would deadlock.
            for name in sorted(names):
                row = await tx.fetch_one(sql, (name, holder, seconds))
                if row is not None:
                    held[name] = _lease(row, live=True)
        return held

    async def release(self, names: Sequence[str], holder: str) -> None:
        """Give these leases up at once (a clean stop): another node need not wait for
        them to expire. Leases held by someone else are left alone."""
        if not names:
            return
        marks = ",".join("?" * len(names))
        async with self.store.transaction() as tx:
            await tx.execute(f"DELETE FROM leases WHERE holder = ? AND name IN ({marks})",
                             (holder, *names))

    async def all(self) -> list[Lease]:
        """Every lease row, live or expired, by name (for `mailgate status`)."""
        rows = await self.store.read_committed(
            f"""SELECT name, holder, expires_at, acquired_at, expires_at > {self.now}
                FROM leases ORDER BY name""")
        return [_lease(row[:4], live=bool(row[4])) for row in rows]


async def other_live_nodes(book: LeaseBook, me: str) -> list[str]:
    """The other nodes whose own lease is live: who could take a lease over now."""
    return [lease.holder for lease in await book.all()
            if lease.name.startswith(NODE_PREFIX) and lease.live and lease.holder != me]


def _lease(row: Sequence, live: bool) -> Lease:
    return Lease(row[0], row[1], from_ts(row[2]), from_ts(row[3]), live)
