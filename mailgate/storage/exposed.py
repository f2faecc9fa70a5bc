"""Rows of reply keys others have seen (exposed_keys): the pipeline reads them with a
mail's stored state (gather.stored) and writes them with its effects (apply.py); here they
go once the keys themselves have expired, when no row can matter any more."""

from __future__ import annotations

from datetime import datetime

from mailgate.storage.store import Store, ts


async def sweep_expired(store: Store, now: datetime) -> int:
    """Delete the rows of keys that expired before `now`; returns how many."""
    async with store.transaction() as tx:
        cur = await tx.execute("DELETE FROM exposed_keys WHERE expires < ?", (ts(now),))
        return max(cur.rowcount, 0)
