"""A new request, decided: what opening its tickets does, as effects (effects.py).

One ticket per department it reached, linked to each other (and to the old ticket it
follows up, when it came too late to reopen that one); one acknowledgement to the sender
within their budget of automatic mail; one notification per department team, unless the
sender already flooded that team this hour; SLA clocks from each department's policy.
Pure: the facts come in, the effects go out, storage/apply.py writes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailgate.config.directory import Directory, is_agent
from mailgate.core.addresses import budget_mailbox, canonical
from mailgate.core.classify import Verdict
from mailgate.core.commands import HELP, parse_rating
from mailgate.core.model import Inbound, MailKind, OutgoingKind, Status, Ticket
from mailgate.core.routing import Route
from mailgate.core.trim import trim_reply
from mailgate.outbound.kinds import Thread
from mailgate.tickets.budget import MailBudget
from mailgate.tickets.clocks import ClockPolicy
from mailgate.tickets.conversation import clean_subject
from mailgate.tickets.effects import (
    AddAttachments,
    AddEvent,
    AddReceipts,
    Effect,
    Facts,
    HoldNotification,
    LinkTickets,
    NewTicket,
    OpenTicket,
    QueueMail,
    StartClocks,
    StoredFile,
    StoreMessage,
)
from mailgate.tickets.state import MAX_CC, TicketState

MAX_QUOTED_CHARS = 20_000  # request text shown in a notification or summary


@dataclass(frozen=True, slots=True)
class NewRequestPolicy:
    """What the directory and [conversation]/[limits] say about new requests."""

    directory: Directory
    clocks: ClockPolicy
    budget: MailBudget  # automatic mail per recipient: the acknowledgement draws on it
    notify_team: bool = True
    team_notices_per_sender_per_hour: int = 5
    max_attachment_bytes: int = 25 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Request:
    """A mail that opens tickets, as the decision needs it."""

    msg: Inbound  # has a sender: the pipeline quarantines mail without one
    verdict: Verdict
    departments: tuple[str, ...]  # a ticket in each
    routes: Mapping[str, Route]  # each department's priority and the rule that chose it
    received: tuple[str, ...]  # the departments its receipts cover
    trust: str = ""
    files: tuple[StoredFile, ...] = ()  # its attachments, written or not kept
    follows: tuple[Ticket, ...] = ()  # resolved tickets it follows up, too late to reopen


def open_request(request: Request, facts: Facts, policy: NewRequestPolicy,
                 now: datetime) -> list[Effect]:
    msg, verdict = request.msg, request.verdict
    assert msg.sender is not None
    effects: list[Effect] = [
        StoreMessage(verdict.kind, request.trust, text=msg.body.strip()),
        AddReceipts(request.received, "ticket"),
    ]
    # The clocks are planned once: the ticket row carries its next instant, and the
    # team's notification its first-response deadline.
    openings = {key: policy.clocks.plan(key, request.routes[key].priority, now)
                for key in request.departments}
    new = tuple(NewTicket(slot) for slot in range(len(request.departments)))
    cc = _kept_cc(msg, policy.directory)
    for ticket, key in zip(new, request.departments, strict=True):
        dept = policy.directory.departments[key]
        effects += [
            OpenTicket(ticket.slot, key, dept.prefix, clean_subject(msg.subject),
                       msg.sender.addr, msg.sender.name, request.routes[key].priority, cc,
                       openings[key].next_escalation_at),
            AddEvent(ticket, "created", actor=msg.sender.addr, of_mail=True,
                     detail={"kind": verdict.kind.value} if verdict.reason else None),
            StartClocks(ticket, openings[key]),
        ]
    if len(new) > 1:
        effects.append(LinkTickets(new))
    effects += _follow_ups(request, new)
    effects += _attachments(request, new, policy.max_attachment_bytes)
    effects += _acknowledgement(request, facts, new, policy, now)
    if policy.notify_team:
        for ticket, key in zip(new, request.departments, strict=True):
            due = openings[key].first_response_due
            effects += _team_notice(request, facts, ticket, key, due, policy)
    return effects


def acknowledged(effects: list[Effect]) -> bool:
    return any(isinstance(e, QueueMail) and e.kind is OutgoingKind.ACK for e in effects)


def _kept_cc(msg: Inbound, directory: Directory) -> tuple[str, ...]:
    """The request's Cc as the ticket keeps it: not us, not the requester, at most MAX_CC."""
    assert msg.sender is not None
    own = directory.own_addresses()
    cc = dict.fromkeys(a.addr for a in msg.cc if a.addr not in own and a.addr != msg.sender.addr)
    return tuple(cc)[:MAX_CC]


def _follow_ups(request: Request, new: tuple[NewTicket, ...]) -> list[Effect]:
    """Each new ticket names the old ticket of its department it follows, and back."""
    assert request.msg.sender is not None
    effects: list[Effect] = []
    for ticket, key in zip(new, request.departments, strict=True):
        old = next((t for t in request.follows if t.department == key), None)
        if old is None:
            continue
        effects += [
            LinkTickets((old.id, ticket)),
            AddEvent(old.id, "followed_up", actor=request.msg.sender.addr, of_mail=True,
                     detail={"by": ticket}),
            AddEvent(ticket, "follows", detail={"ticket": old.ref}),
        ]
    return effects


def _attachments(request: Request, new: tuple[NewTicket, ...],
                 limit: int) -> list[Effect]:
    if not request.files:
        return []
    effects: list[Effect] = [AddAttachments(new, request.files)]
    dropped = [[f.filename, f.size] for f in request.files if f.sha256 is None]
    if dropped:
        effects += [AddEvent(t, "attachments_dropped", of_mail=True,
                             detail={"files": dropped, "limit": limit}) for t in new]
    return effects


def ack_refusal(request: Request, facts: Facts, budget: MailBudget) -> str | None:
    """Why no acknowledgement may go out, or None. Loops are the thing to avoid."""
    verdict, sender = request.verdict, request.msg.sender
    assert sender is not None
    if verdict.kind is not MailKind.REQUEST:
        return f"{verdict.kind.value}: {verdict.reason}"
    return budget.judge(sender.addr, facts.usage.to_mailbox, facts.usage.to_domain)


def _acknowledgement(request: Request, facts: Facts, new: tuple[NewTicket, ...],
                     policy: NewRequestPolicy, now: datetime) -> list[Effect]:
    msg = request.msg
    assert msg.sender is not None
    refusal = ack_refusal(request, facts, policy.budget)
    if refusal:
        return [AddEvent(t, "ack_suppressed", detail={"reason": refusal}) for t in new]
    context = {
        "requester": {"name": msg.sender.name, "address": msg.sender.addr},
        "subject": clean_subject(msg.subject),
        "received_at": now,
        # attachments not kept: over [limits] max_attachment_bytes
        "dropped": [f.filename for f in request.files if f.sha256 is None],
        "max_attachment_size": size_in_words(policy.max_attachment_bytes),
    }
    return [QueueMail(OutgoingKind.ACK, request.departments[0], (msg.sender.addr,), new,
                      context, subject=msg.subject,
                      thread=Thread(answered=msg.message_id or None,
                                    answered_refs=msg.references),
                      recorded=tuple(AddEvent(t, "ack_queued") for t in new))]


def _team_notice(request: Request, facts: Facts, ticket: NewTicket, key: str,
                 due: datetime | None, policy: NewRequestPolicy) -> list[Effect]:
    """Tell the department's team, unless this sender already flooded it this hour."""
    msg = request.msg
    assert msg.sender is not None
    requester = canonical(msg.sender.addr)
    sent = facts.usage.notified.get(key, 0)
    if sent >= policy.team_notices_per_sender_per_hour:
        # One sender's flood (a script, a forged From:) must not land in every team
        # member's inbox: the ticket is kept, and an hourly summary names it (flood.py).
        return [HoldNotification(ticket, key, requester),
                AddEvent(ticket, "team_notify_held", visibility="internal",
                         detail={"reason": f"{sent} new requests from {msg.sender.addr} "
                                           "in the last hour were notified already"})]
    dept = policy.directory.departments[key]
    to = policy.directory.recipients(dept, ("team",), None)
    if not to:
        return [AddEvent(ticket, "team_notify_unsent",
                         detail={"reason": f"{dept.key} has no team and no notify address"})]
    calendar = policy.directory.calendar_for(dept)
    context = {"text": msg.body.strip()[:MAX_QUOTED_CHARS], "help": HELP, "actor": None,
               "transferred_from": None,
               "due_at": due.astimezone(calendar.zone) if due else None}
    return [QueueMail(OutgoingKind.NOTIFY_TEAM, key, to, (ticket,), context, variant="new",
                      thread=Thread(request=msg.message_id or None),
                      budget=team_budget(key, requester), relay_attachments=True,
                      recorded=(AddEvent(ticket, "team_notified", detail={"to": list(to)},
                                         visibility="internal"),))]


def team_budget(department: str, sender: str) -> str:
    """The budget a department's notifications about one sender's requests draw on."""
    return f"team:{department}:{budget_mailbox(sender)}"


def is_stale(ticket: TicketState, msg: Inbound, directory: Directory,
             reopen_window: timedelta, now: datetime) -> bool:
    """A requester's reply to a ticket resolved or closed longer ago than the reopen
    window (a rating answer is never stale): it starts a new, linked ticket."""
    if ticket.status not in (Status.RESOLVED, Status.CLOSED) or msg.sender is None:
        return False
    dept = directory.departments.get(ticket.department)
    if dept is not None and is_agent(dept, msg.sender.addr):
        return False
    if ticket.survey_at and parse_rating(trim_reply(msg.body)):
        return False
    ended = ticket.resolved_at or ticket.closed_at
    return ended is not None and now - ended > reopen_window


def size_in_words(n: int) -> str:
    return f"{n / 1048576:.3g} MB" if n >= 1048576 else f"{n / 1024:.3g} KB"
