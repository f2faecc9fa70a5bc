"""The conversation's SQL inside an open transaction: ticket state, status changes and
threading lookups. Called by workflow.py and autoclose.py.
"""

from __future__ import annotations

import json
from datetime import datetime

from mailgate.core.model import OutgoingKind, Status
from mailgate.storage.store import TICKET_COLUMNS, Tx, from_ts, maybe_ts, ticket_from_row, ts
from mailgate.tickets.state import MAX_CC, TicketState

__all__ = ["MAX_CC", "TicketState"]  # where the conversation's SQL finds them too


STATE_COLUMNS = f"{TICKET_COLUMNS}, assignee, resolved_at, closed_at, survey_at, rating, cc"
_STATE = f"SELECT {STATE_COLUMNS} FROM tickets WHERE id = ?"


async def state(tx: Tx, ticket_id: int) -> TicketState:
    r = await tx.fetch_one(_STATE, (ticket_id,))
    assert r is not None, f"ticket {ticket_id} vanished inside its transaction"
    return state_from_row(r)


def state_from_row(r: tuple) -> TicketState:
    """A TicketState from a row that starts with STATE_COLUMNS."""
    return TicketState.of(ticket_from_row(r), assignee=r[10], resolved_at=maybe_ts(r[11]),
                          closed_at=maybe_ts(r[12]), survey_at=maybe_ts(r[13]), rating=r[14],
                          cc=tuple(json.loads(r[15])) if r[15] else ())


async def set_text(tx: Tx, message: int, text: str) -> None:
    await tx.execute("UPDATE messages SET text = ? WHERE id = ?", (text, message))


async def set_status(tx: Tx, ticket_id: int, status: Status, now: datetime) -> None:
    """Status with its timestamps: resolving stamps resolved_at, reopening clears both."""
    extra, args = {Status.RESOLVED: (", resolved_at = ?, closed_at = NULL", (ts(now),)),
                   Status.CLOSED: (", closed_at = ?", (ts(now),)),
                   Status.OPEN: (", resolved_at = NULL, closed_at = NULL", ())}.get(
                       status, ("", ()))
    await tx.execute(f"UPDATE tickets SET status = ?, updated_at = ?{extra} WHERE id = ?",
                     (status.value, ts(now), *args, ticket_id))


async def set_field(tx: Tx, ticket_id: int, column: str, value: object, now: datetime) -> None:
    assert column in ("assignee", "priority", "department", "survey_at")
    await tx.execute(f"UPDATE tickets SET {column} = ?, updated_at = ? WHERE id = ?",
                     (value, ts(now), ticket_id))


async def rate(tx: Tx, ticket_id: int, rating: int, comment: str, now: datetime) -> None:
    """A later rating without a comment keeps the earlier comment."""
    await tx.execute("UPDATE tickets SET rating = ?, rated_at = ?, "
                     "rating_comment = coalesce(?, rating_comment) WHERE id = ?",
                     (rating, ts(now), comment or None, ticket_id))


async def request_message_id(tx: Tx, ticket_id: int) -> str | None:
    row = await tx.fetch_one(
        "SELECT m.message_id FROM events e JOIN messages m ON m.id = e.message "
        "WHERE e.ticket = ? AND m.message_id != '' ORDER BY e.id LIMIT 1", (ticket_id,))
    return row[0] if row else None


async def request_text(tx: Tx, ticket_id: int) -> str:
    row = await tx.fetch_one(
        "SELECT coalesce(m.text, m.body) FROM events e JOIN messages m ON m.id = e.message "
        "WHERE e.ticket = ? ORDER BY e.id LIMIT 1", (ticket_id,))
    return row[0] if row else ""


async def last_from(tx: Tx, ticket_id: int, sender: str) -> str | None:
    """The newest Message-ID this sender wrote on the ticket."""
    row = await tx.fetch_one(
        "SELECT m.message_id FROM events e JOIN messages m ON m.id = e.message "
        "WHERE e.ticket = ? AND m.sender = ? AND m.message_id != '' "
        "ORDER BY e.id DESC LIMIT 1", (ticket_id, sender))
    return row[0] if row else None


async def sent_ids(tx: Tx, ticket_id: int, kinds: tuple[str, ...]) -> list[str]:
    """Message-IDs of the mail of these kinds we sent about the ticket, oldest first."""
    marks = ",".join("?" * len(kinds))
    rows = await tx.fetch_all(
        f"SELECT DISTINCT o.id, o.message_id FROM events e JOIN outbox o ON o.id = e.outgoing "
        f"WHERE e.ticket = ? AND o.kind IN ({marks}) ORDER BY o.id", (ticket_id, *kinds))
    return [r[1] for r in rows]


async def last_public_answer(tx: Tx, ticket_id: int) -> str:
    row = await tx.fetch_one(
        "SELECT coalesce(m.text, m.body) FROM events e JOIN messages m ON m.id = e.message "
        "WHERE e.ticket = ? AND e.kind = 'reply' AND e.visibility = 'public' "
        "AND json_extract(e.detail, '$.role') = 'agent' "
        "AND coalesce(m.text, m.body) != '' ORDER BY e.id DESC LIMIT 1", (ticket_id,))
    return row[0] if row else ""


async def first_response_due(tx: Tx, ticket_id: int) -> datetime | None:
    row = await tx.fetch_one("SELECT due_at FROM sla_clocks WHERE ticket = ? "
                             "AND target = 'first_response' AND met_at IS NULL", (ticket_id,))
    return from_ts(row[0]) if row else None


async def resolved_before(tx: Tx, cutoff: datetime, limit: int) -> list[tuple[int, str]]:
    rows = await tx.fetch_all(
        "SELECT id, ref FROM tickets WHERE status = 'resolved' AND resolved_at <= ? "
        "ORDER BY resolved_at LIMIT ?", (ts(cutoff), limit))
    return [(r[0], r[1]) for r in rows]


async def relays_from(tx: Tx, ticket_id: int, sender: str, since: datetime) -> int:
    """Mail from this sender relayed to the team on this ticket since then."""
    row = await tx.fetch_one(
        "SELECT COUNT(*) FROM events e JOIN outbox o ON o.id = e.outgoing "
        "WHERE e.ticket = ? AND e.kind = 'relayed' AND e.actor = ? AND e.at >= ? "
        "AND o.kind = ?", (ticket_id, sender, ts(since), OutgoingKind.RELAY_TEAM.value))
    return int(row[0]) if row else 0


