"""One quarantined message for `mailgate quarantine show|retry|drop`: read it, drop it,
and record what a retry through the pipeline made of it.

Store.quarantine() keeps a message and Store.quarantined() lists them; this module acts
on one entry by its id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from mailgate.storage.store import Store, Tx


@dataclass(frozen=True, slots=True)
class HeldMail:
    source: str
    reason: str
    raw: bytes
    status: str  # held | retried | dropped
    # The SMTP envelope of pushed mail ("" is the null reverse-path); None: read from a
    # mailbox, or held before mailgate kept it (schema 11).
    envelope_sender: str | None = None
    envelope_recipients: tuple[str, ...] = ()


async def entry(store: Store, entry_id: int) -> HeldMail | None:
    row = await store.fetch_one(
        "SELECT source, reason, raw, status, envelope_sender, envelope_recipients "
        "FROM quarantine WHERE id = ?", (entry_id,))
    if row is None:
        return None
    recipients = tuple(json.loads(row[5])) if row[5] else ()
    return HeldMail(row[0], row[1], bytes(row[2]), row[3], row[4], recipients)


async def drop(store: Store, entry_id: int) -> None:
    async with store.transaction() as tx:
        await _set_status(tx, entry_id, "dropped")


async def mark_retried(tx: Tx, entry_id: int) -> None:
    """Before the retry runs the message through the pipeline, in the same transaction."""
    await _set_status(tx, entry_id, "retried")


async def held_again(tx: Tx, entry_id: int, duplicate: int, reason: str) -> None:
    """The retry quarantined the message once more (as `duplicate`): keep one entry, the
    first, held again with the new reason."""
    await tx.execute("DELETE FROM quarantine WHERE id = ?", (duplicate,))
    await tx.execute("UPDATE quarantine SET status = 'held', reason = ? WHERE id = ?",
                     (reason, entry_id))


async def _set_status(tx: Tx, entry_id: int, status: str) -> None:
    await tx.execute("UPDATE quarantine SET status = ? WHERE id = ?", (status, entry_id))
