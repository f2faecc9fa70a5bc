"""Escalation levels in the database: when the next one is due, and what was recorded
when one fired (the outbox reads that to write the level's mail; escalation_mail.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from mailgate.core.model import Ticket
from mailgate.core.sla import LevelKind
from mailgate.storage.store import (
    TICKET_FIELDS,
    Store,
    from_ts,
    ticket_columns,
    ticket_from_row,
)

# The ticket as it is now, but its department and assignee as they were when the level
# fired (a transfer in between must not re-address the mail).
_FIRED = f"""SELECT {ticket_columns('t')}, coalesce(e.department, t.department),
                    CASE WHEN e.department IS NULL THEN t.assignee ELSE e.assignee END,
                    e.target, e.kind, e.level, e.at, e.due_at
             FROM escalations e JOIN tickets t ON t.id = e.ticket
             WHERE e.ticket = ? AND e.outgoing = ?"""  # the primary key's prefix, then a scan


@dataclass(frozen=True, slots=True)
class Fired:
    """One escalation level as recorded when it fired, and its ticket as it is now (but
    with the department it had then)."""

    ticket: Ticket
    assignee: str | None
    target: str
    kind: LevelKind
    level: int
    fired_at: datetime
    due_at: datetime


async def fired(store: Store, ticket_id: int | None, outgoing: int) -> Fired | None:
    """The level whose escalations row names this outbox row (as committed), or None."""
    found = next(iter(await store.read_committed(_FIRED, (ticket_id, outgoing))), None)
    if found is None:
        return None
    department, assignee, target, kind, level, fired_at, due_at = found[TICKET_FIELDS:]
    ticket = replace(ticket_from_row(found[:TICKET_FIELDS]), department=department)
    return Fired(ticket, assignee, target, LevelKind(kind), level, from_ts(fired_at),
                 from_ts(due_at))


async def next_due_at(store: Store) -> datetime | None:
    """The earliest instant any ticket has a level due (tickets.next_escalation_at, kept
    by slaclock.py), or None when no clock runs."""
    row = await store.fetch_one(
        "SELECT MIN(next_escalation_at) FROM tickets WHERE next_escalation_at IS NOT NULL")
    return from_ts(row[0]) if row is not None and row[0] is not None else None
