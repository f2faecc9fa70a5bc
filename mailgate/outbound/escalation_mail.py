"""Escalation mail: recorded when a level fires, written when it is sent.

The scheduler's tick records the level (a row in `escalations` that names its outbox row)
and queues an outbox row marked as a draft, with an empty body, in one transaction. The
outbox writes the mail just before handing it to SMTP: `load` reads what was recorded,
`write` renders it (business-time arithmetic for age and time left, the sandboxed
template, MIME). That work is most of what an escalation costs and has no bearing on
*whether* a level fires, so it stays out of the tick and its write transaction. The
Message-ID, the instant the level fired and its due time are fixed when it fires: a resend
after a crash is the same mail, and it states the time left as it was then.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from mailgate.config.directory import Department
from mailgate.core.model import Ticket
from mailgate.core.render import Renderer
from mailgate.core.sla import LevelKind, business_time_left
from mailgate.errors import PermanentError
from mailgate.outbound.compose import Envelope, compose
from mailgate.storage.slaclock import SlaBook
from mailgate.storage.store import (
    TICKET_FIELDS,
    OutboxRow,
    Store,
    from_ts,
    ticket_columns,
    ticket_from_row,
)

DRAFT = "escalation"  # the outbox rows' draft marker for mail written by this module

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

    @property
    def headline(self) -> str:
        what = self.target.replace("_", " ")
        return {LevelKind.WARNING: f"SLA warning, {what} due soon",
                LevelKind.BREACH: f"SLA breached, {what} overdue",
                LevelKind.RE_ESCALATION: f"SLA still breached, {what} overdue",
                }[self.kind]


async def load(store: Store, row: OutboxRow) -> Fired:
    """What was recorded for this outbox row (as committed); PermanentError if nothing
    was or the row is not an escalation draft (retrying cannot help)."""
    primary = await _first_copy(store, row)
    found = next(iter(await store.read_committed(_FIRED, (row.ticket, primary))), None)
    if found is None:
        raise PermanentError(f"no escalation is recorded for outbox row {row.id}")
    department, assignee, target, kind, level, fired_at, due_at = found[TICKET_FIELDS:]
    ticket = replace(ticket_from_row(found[:TICKET_FIELDS]), department=department)
    return Fired(ticket, assignee, target, LevelKind(kind), level, from_ts(fired_at),
                 from_ts(due_at))


async def _first_copy(store: Store, row: OutboxRow) -> int:
    """The outbox row the escalations table names for this mail's level: its own, or
    for a further recipient's copy the first copy's."""
    if row.draft != DRAFT:
        raise PermanentError(f"outbox row {row.id} is not an escalation draft: {row.draft!r}")
    if row.copy_of is None:
        return row.id
    found = await store.read_committed("SELECT id FROM outbox WHERE message_id = ?",
                                       (row.copy_of,))
    if not found:
        raise PermanentError(f"outbox row {row.id} is a copy of a mail that is not queued")
    return int(found[0][0])


def write(fired: Fired, row: OutboxRow, sla: SlaBook, renderer: Renderer,
          instance: str) -> bytes:
    """The complete mail (pure): the template gets the ticket, the requester, its age,
    the time left or overdue, and which of the department's roles the reader fills."""
    ticket = fired.ticket
    dept = sla.department(ticket.department)  # None if a reload removed it: still sent
    calendar = sla.calendar(dept)
    now = fired.fired_at
    left = business_time_left(fired.due_at, calendar, now)
    local_due = fired.due_at.astimezone(calendar.zone)
    department = _department(dept, ticket.department, row.mail_from)
    context = {
        "ticket": {"ref": ticket.ref, "subject": ticket.subject, "status": ticket.status,
                   "priority": ticket.priority.value, "created_at": ticket.created_at,
                   "assignee": fired.assignee},
        "requester": {"name": ticket.requester_name, "address": ticket.requester},
        "department": department,
        "target": fired.target, "kind": fired.kind.value,
        "due_at": local_due, "now": now, "due": local_due.strftime("%Y-%m-%d %H:%M %Z"),
        "age": timedelta(seconds=calendar.elapsed(ticket.created_at, now)),
        "left": timedelta(seconds=max(0.0, left)),
        "overdue": timedelta(seconds=max(0.0, -left)),
        "roles": list(sla.roles(dept, fired.kind.value)) if dept else [],
    }
    body = renderer.render("escalation", ticket.department, context)
    envelope = Envelope(
        from_name=department["name"], from_addr=row.mail_from, to=row.recipients,
        subject=f"[{ticket.ref}] {fired.headline}: {ticket.subject}",
        message_id=row.message_id, date=now, auto_submitted="auto-generated",
        extra=(("X-Mailgate-Instance", instance),
               ("X-Mailgate-Ticket", ticket.ref),
               ("X-Mailgate-Escalation", f"{fired.target} {fired.kind.value}")))
    return compose(envelope, body.text, body.html)


def _department(dept: Department | None, key: str, address: str) -> dict[str, str]:
    if dept is None:
        return {"key": key, "name": key, "address": address}
    return {"key": dept.key, "name": dept.name, "address": dept.address}
