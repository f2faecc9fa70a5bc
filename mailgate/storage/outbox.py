"""Outbox rows by Message-ID: is a mail queued already (the weekly digest, queued exactly
once), and which row is it (an escalation's further copy finds its first copy, which the
escalations table names).

outbox.message_id is unique, so a Message-ID names at most one row.
"""

from __future__ import annotations

from mailgate.storage.store import Store, Tx

_ROW_OF = "SELECT id FROM outbox WHERE message_id = ?"


async def committed_row(store: Store, message_id: str) -> int | None:
    """The outbox row with this Message-ID as committed (the reader connection), or None."""
    found = await store.read_committed(_ROW_OF, (message_id,))
    return int(found[0][0]) if found else None


async def holds(tx: Tx, message_id: str) -> bool:
    """Whether the outbox holds this Message-ID, as this transaction sees it."""
    return await tx.fetch_one(_ROW_OF, (message_id,)) is not None
