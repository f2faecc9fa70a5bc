"""The conversation's SQL inside an open transaction: ticket state and its changes.
Called by apply.py (a decision's changes), gather.py (the state) and autoclose.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from enum import Enum

from mailgate.core.model import Status
from mailgate.storage.slaclock import NEXT_ESCALATION
from mailgate.storage.store import TICKET_COLUMNS, Tx, maybe_ts, ticket_from_row, ts
from mailgate.tickets.effects import TICKET_COLUMNS as UPDATABLE
from mailgate.tickets.state import MAX_CC, TicketState

__all__ = ["MAX_CC", "TicketState"]  # where the conversation's SQL finds them too

STATE_COLUMNS = f"{TICKET_COLUMNS}, assignee, resolved_at, closed_at, survey_at, rating, cc"


def state_from_row(r: tuple) -> TicketState:
    """A TicketState from a row that starts with STATE_COLUMNS."""
    return TicketState.of(ticket_from_row(r), assignee=r[10], resolved_at=maybe_ts(r[11]),
                          closed_at=maybe_ts(r[12]), survey_at=maybe_ts(r[13]), rating=r[14],
                          cc=tuple(json.loads(r[15])) if r[15] else ())


async def set_text(tx: Tx, message: int, text: str) -> None:
    await tx.send("UPDATE messages SET text = ? WHERE id = ?", (text, message))


async def set_status(tx: Tx, ticket_id: int, status: Status, now: datetime) -> None:
    """Status with its timestamps: resolving stamps resolved_at, reopening clears both."""
    extra, args = {Status.RESOLVED: (", resolved_at = ?, closed_at = NULL", (ts(now),)),
                   Status.CLOSED: (", closed_at = ?", (ts(now),)),
                   Status.OPEN: (", resolved_at = NULL, closed_at = NULL", ())}.get(
                       status, ("", ()))
    await tx.send(f"UPDATE tickets SET status = ?, updated_at = ?{extra} WHERE id = ?",
                     (status.value, ts(now), *args, ticket_id))


async def update_ticket(tx: Tx, ticket_id: int, columns: Mapping[str, object],
                        reschedule: bool = False) -> None:
    """Changed columns with their final values (effects.UpdateTicket): datetimes are
    stored as Unix seconds, enums by value; a rating_comment of None keeps the old one.
    `reschedule`: its clocks changed, so its next escalation instant is computed anew
    (none while it waits on the requester) -- written after the clocks."""
    unknown = set(columns) - UPDATABLE
    assert not unknown, f"not a column a decision may change: {unknown}"
    sets, args = [], []
    for column, value in columns.items():
        sets.append("rating_comment = coalesce(?, rating_comment)"
                    if column == "rating_comment" else f"{column} = ?")
        args.append(ts(value) if isinstance(value, datetime)
                    else value.value if isinstance(value, Enum) else value)
    if reschedule or "paused_at" in columns:
        sets.append("next_escalation_at = " + (
            f"CASE WHEN paused_at IS NULL THEN {NEXT_ESCALATION} END"
            if "paused_at" not in columns
            else "NULL" if columns["paused_at"] is not None else NEXT_ESCALATION))
    if sets:
        await tx.send(f"UPDATE tickets SET {', '.join(sets)} WHERE id = ?",
                      (*args, ticket_id))


async def resolved_before(tx: Tx, cutoff: datetime, limit: int) -> list[tuple[int, str]]:
    """Resolved tickets to close. On a shared engine they are locked until the closing
    transaction ends, and one that another node's mail is working on is skipped: closed
    over, a reply reopening it there would be lost (it comes back next round if still due)."""
    lock = " FOR UPDATE SKIP LOCKED" if tx.engine is not None and tx.engine.shared else ""
    rows = await tx.fetch_all(
        "SELECT id, ref FROM tickets WHERE status = 'resolved' AND resolved_at <= ? "
        f"ORDER BY resolved_at LIMIT ?{lock}", (ts(cutoff), limit))
    return [(r[0], r[1]) for r in rows]


