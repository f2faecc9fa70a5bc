"""Escalation mail: the facts are fixed when a level fires, the mail is written when sent.

The scheduler records a level and enqueues these facts (a draft, as JSON on the outbox
row) in one transaction; the outbox writes the mail just before handing it to SMTP.
Writing it (business-time arithmetic for age and time left, the sandboxed template, MIME)
is most of what an escalation costs and has no bearing on *whether* a level fires, so it
stays out of the scheduler's tick and its write transaction. The Message-ID and the
instant the level fired are fixed in the draft: a resend after a crash is the same mail,
and it states the ticket as it was when the level fired.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

from mailgate.compose import Envelope, compose
from mailgate.directory import Department
from mailgate.render import Renderer
from mailgate.sla import LevelKind, business_time_left
from mailgate.slaclock import DueLevel, SlaBook
from mailgate.store import OutboxRow, from_ts, ts

DRAFT_KIND = "escalation"  # the outbox's name for drafts written by this module


@dataclass(frozen=True, slots=True)
class EscalationDraft:
    ref: str
    subject: str
    status: str
    priority: str
    created_at: float  # Unix seconds, like every stored time
    assignee: str | None
    requester: str
    requester_name: str
    department: str  # key; name, address and calendar are looked up when written
    target: str
    kind: str
    level: int
    due_at: float
    fired_at: float
    roles: tuple[str, ...]

    @classmethod
    def of(cls, due: DueLevel, roles: tuple[str, ...], fired_at: float) -> EscalationDraft:
        assert due.firing.level is not None  # only clocks with a level to fire are due
        ticket = due.ticket
        return cls(ticket.ref, ticket.subject, ticket.status, ticket.priority.value,
                   ts(ticket.created_at), due.assignee, ticket.requester,
                   ticket.requester_name, ticket.department, due.clock.target.value,
                   due.firing.level.kind.value, due.firing.level.number, ts(due.due_at),
                   fired_at, roles)

    def to_json(self) -> str:
        # Not dataclasses.asdict: it deep-copies every field, and this runs in the tick.
        fields = {name: getattr(self, name) for name in self.__slots__}
        return json.dumps({"draft": DRAFT_KIND} | fields, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> EscalationDraft:
        fields = json.loads(text)
        if fields.pop("draft", None) != DRAFT_KIND:
            raise ValueError("not an escalation draft")
        return cls(**fields | {"roles": tuple(fields["roles"])})

    @property
    def headline(self) -> str:
        what = self.target.replace("_", " ")
        return {LevelKind.WARNING: f"SLA warning, {what} due soon",
                LevelKind.BREACH: f"SLA breached, {what} overdue",
                LevelKind.RE_ESCALATION: f"SLA still breached, {what} overdue",
                }[LevelKind(self.kind)]


def write(row: OutboxRow, sla: SlaBook, renderer: Renderer, instance: str) -> bytes:
    """The complete mail for an outbox row that holds an escalation draft."""
    assert row.draft is not None
    draft = EscalationDraft.from_json(row.draft)
    dept = sla.department(draft.department)  # None if a reload removed it: still sent
    calendar = sla.calendar(dept)
    now, due_at, created = from_ts(draft.fired_at), from_ts(draft.due_at), \
        from_ts(draft.created_at)
    left = business_time_left(due_at, calendar, now)
    local_due = due_at.astimezone(calendar.zone)
    context = {
        "ticket": {"ref": draft.ref, "subject": draft.subject, "status": draft.status,
                   "priority": draft.priority, "created_at": created,
                   "assignee": draft.assignee},
        "requester": {"name": draft.requester_name, "address": draft.requester},
        "department": _department(dept, draft.department, row.mail_from),
        "target": draft.target, "kind": draft.kind,
        "due_at": local_due, "now": now, "due": local_due.strftime("%Y-%m-%d %H:%M %Z"),
        "age": timedelta(seconds=calendar.elapsed(created, now)),
        "left": timedelta(seconds=max(0.0, left)),
        "overdue": timedelta(seconds=max(0.0, -left)),
        "roles": list(draft.roles),
    }
    body = renderer.render("escalation", draft.department, context)
    envelope = Envelope(
        from_name=context["department"]["name"], from_addr=row.mail_from, to=row.recipients,
        subject=f"[{draft.ref}] {draft.headline}: {draft.subject}",
        message_id=row.message_id, date=now, auto_submitted="auto-generated",
        extra=(("X-Mailgate-Instance", instance),
               ("X-Mailgate-Ticket", draft.ref),
               ("X-Mailgate-Escalation", f"{draft.target} {draft.kind}")))
    return compose(envelope, body.text, body.html)


def _department(dept: Department | None, key: str, address: str) -> dict[str, str]:
    if dept is None:
        return {"key": key, "name": key, "address": address}
    return {"key": dept.key, "name": dept.name, "address": dept.address}
