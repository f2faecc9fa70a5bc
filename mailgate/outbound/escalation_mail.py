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

from datetime import timedelta

from mailgate.config.directory import Department
from mailgate.core.render import Renderer
from mailgate.core.sla import business_time_left
from mailgate.errors import PermanentError
from mailgate.outbound import kinds
from mailgate.storage import escalations, outbox
from mailgate.storage.escalations import Fired
from mailgate.storage.slaclock import SlaBook
from mailgate.storage.store import OutboxRow, Store

DRAFT = "escalation"  # the outbox rows' draft marker for mail written by this module


async def load(store: Store, row: OutboxRow) -> Fired:
    """What was recorded for this outbox row (as committed); PermanentError if nothing
    was or the row is not an escalation draft (retrying cannot help)."""
    found = await escalations.fired(store, row.ticket, await _first_copy(store, row))
    if found is None:
        raise PermanentError(f"no escalation is recorded for outbox row {row.id}")
    return found


async def _first_copy(store: Store, row: OutboxRow) -> int:
    """The outbox row the escalations table names for this mail's level: its own, or
    for a further recipient's copy the first copy's."""
    if row.draft != DRAFT:
        raise PermanentError(f"outbox row {row.id} is not an escalation draft: {row.draft!r}")
    if row.copy_of is None:
        return row.id
    first = await outbox.committed_row(store, row.copy_of)
    if first is None:
        raise PermanentError(f"outbox row {row.id} is a copy of a mail that is not queued")
    return first


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
    mail = kinds.Mail(
        kind=kinds.escalation_kind(fired.kind), from_name=department["name"],
        from_addr=row.mail_from, to=row.recipients, context=context,
        department=ticket.department, tickets=(ticket.ref,), ticket_id=ticket.id,
        fields={"subject": ticket.subject, "target": fired.target,
                "what": fired.target.replace("_", " ")})
    return kinds.write(mail, renderer, instance, row.message_id, now)


def _department(dept: Department | None, key: str, address: str) -> dict[str, str]:
    if dept is None:
        return {"key": key, "name": key, "address": address}
    return {"key": dept.key, "name": dept.name, "address": dept.address}
