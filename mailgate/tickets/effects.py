"""What a mail does, as data: the facts a decision reads and the effects it returns.

A decision (new_request.py) is a pure function from (message, facts, policy, now) to a list
of effects; storage/apply.py writes that list in one step. Nothing here does I/O.

A ticket the same list opens has no id yet: effects name it `NewTicket(slot)`, the slot of
its OpenTicket, and the applier puts the id in when it has one. Likewise an event about
"this mail" says so (`of_mail`) and the applier puts in the messages row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mailgate.core.model import MailKind, OutgoingKind, Priority
from mailgate.core.replykey import Key
from mailgate.core.sla import Clock, Target
from mailgate.outbound.kinds import Thread
from mailgate.tickets.clocks import Opening
from mailgate.tickets.state import TicketState


@dataclass(frozen=True, slots=True)
class NewTicket:
    """A ticket opened by this list of effects: the `slot` of its OpenTicket."""

    slot: int


TicketRef = int | NewTicket  # an existing ticket's id, or one this list opens


# --- facts ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Usage:
    """Automatic mail drawn in the last hour, for the limits a new request meets."""

    to_mailbox: int = 0  # automatic mail to the sender's mailbox (budget.py)
    to_domain: int = 0  # ... and to the sender's domain, outside the organisation
    notified: Mapping[str, int] = field(default_factory=dict)  # department: tickets whose
    # team notification drew on this sender's flood budget there


@dataclass(frozen=True, slots=True)
class Facts:
    """What the store knows that a decision about one mail needs, read in one step."""

    message: int | None = None  # the mail's messages row, when a copy was stored already
    fingerprint: str | None = None  # that row's fingerprint
    received_by: frozenset[str] = frozenset()  # departments that have this mail already
    threaded: tuple[TicketState, ...] = ()  # the tickets it continues, oldest first
    usage: Usage = field(default_factory=Usage)
    keys: tuple[Key, ...] = ()  # its reply keys valid for its sender
    exposed: frozenset[str] = frozenset()  # those of them that others have seen (identities)


@dataclass(frozen=True, slots=True)
class TicketFacts:
    """One ticket as a reply to it needs it: its state, clocks and thread."""

    state: TicketState
    clocks: Mapping[Target, Clock] = field(default_factory=dict)  # the running ones
    paused_at: datetime | None = None
    first_response_at: datetime | None = None
    request_id: str | None = None  # the first Message-ID in its conversation
    requester_last: str | None = None  # the requester's newest Message-ID on it
    relays: int = 0  # the sender's mail relayed to the team on it in the last hour
    request_text: str = ""  # read only for #resolve and #transfer
    last_answer: str = ""  # the newest public agent answer's text (#resolve)


@dataclass(frozen=True, slots=True)
class Drawn:
    """Automatic mail queued in the last hour, by budget key: mailbox and domain."""

    mailboxes: Mapping[str, int] = field(default_factory=dict)
    domains: Mapping[str, int] = field(default_factory=dict)


# --- effects -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreMessage:
    """Keep the mail (once: a copy already stored is reused) as `kind`."""

    kind: MailKind
    trust: str = ""
    text: str | None = None  # what the conversation shows of it


@dataclass(frozen=True, slots=True)
class AddReceipts:
    """The mail counts as received for these departments (its copies are duplicates)."""

    departments: tuple[str, ...]
    outcome: str


@dataclass(frozen=True, slots=True)
class OpenTicket:
    slot: int
    department: str
    prefix: str  # its ticket numbers' prefix: the number is drawn when it is written
    subject: str
    requester: str
    requester_name: str
    priority: Priority
    cc: tuple[str, ...] = ()
    next_escalation_at: float | None = None


@dataclass(frozen=True, slots=True)
class StartClocks:
    """A new ticket's SLA clocks (clocks.py planned them)."""

    ticket: TicketRef
    opening: Opening


@dataclass(frozen=True, slots=True)
class AddEvent:
    ticket: TicketRef
    kind: str
    actor: str | None = None
    of_mail: bool = False  # names the mail being handled
    detail: Mapping[str, Any] | None = None
    visibility: str | None = None  # public | internal for the conversation's events


@dataclass(frozen=True, slots=True)
class LinkTickets:
    """Each of these tickets names the others as linked."""

    tickets: tuple[TicketRef, ...]


@dataclass(frozen=True, slots=True)
class StoredFile:
    """An attachment of the mail: its file is written already (sha256), or it was not
    kept (None: over [limits] max_attachment_bytes)."""

    filename: str
    content_type: str
    size: int
    sha256: str | None


@dataclass(frozen=True, slots=True)
class AddAttachments:
    tickets: tuple[TicketRef, ...]
    files: tuple[StoredFile, ...]


@dataclass(frozen=True, slots=True)
class HoldNotification:
    """The team is not mailed about this ticket now: an hourly summary names it."""

    ticket: TicketRef
    department: str
    sender: str


@dataclass(frozen=True, slots=True)
class QueueMail:
    """Mail to queue, not yet bytes. outbound/kinds.py's entry for `kind` says its
    template, subject, threading, headers and budget; this carries what the decision
    knows: the recipients, the template's context, the subject, the Message-IDs it
    threads on, and the tickets it is about (their refs are known only once they are
    written). `recorded`: the events that name it (their outgoing is its first copy)."""

    kind: OutgoingKind
    department: str  # whose address sends it, whose templates render it
    to: tuple[str, ...]
    about: tuple[TicketState | NewTicket, ...]  # a ticket as the mail shows it, or a new one
    context: Mapping[str, Any] = field(default_factory=dict)  # the template's, but tickets
    subject: str = ""  # what its kind's subject format quotes
    variant: str = ""  # which of its kind's subjects
    thread: Thread = field(default_factory=Thread)
    budget: str | None = None  # a kind with a named budget: its name
    relay_attachments: bool = False  # relay the attachments of the mail being handled
    cc: tuple[str, ...] = ()
    from_name: str | None = None  # else the department's name
    only: tuple[str, ...] | None = None  # copies for just these of the recipients
    twin: bool = False  # its copies are the previous mail's (a text of their own)
    optional: bool = False  # a missing template costs this mail, not the whole message
    recorded: tuple[AddEvent, ...] = ()


# --- changes to existing tickets: each written once, as it ends after this mail ---------


@dataclass(frozen=True, slots=True)
class SetMessageText:
    """What the conversation shows of the mail being handled (its trimmed text)."""

    text: str


# The columns a decision may change on an existing ticket.
TICKET_COLUMNS = frozenset({"status", "resolved_at", "closed_at", "assignee", "priority",
                            "department", "survey_at", "rating", "rating_comment", "rated_at",
                            "first_response_at", "paused_at", "updated_at"})


@dataclass(frozen=True, slots=True)
class UpdateTicket:
    """A ticket's changed columns with their final values (datetimes, enums and str as
    they are; rating_comment None keeps the earlier comment)."""

    ticket: int
    columns: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class WriteClock:
    """One SLA clock of a ticket, as it ends after this mail. `rounds`: how often this
    mail (re)started it, each a new round that escalates afresh (then the row is written
    whole); else `shifted`: pushed back by a pause (paused_seconds, due_at, next_at);
    `met`: met now."""

    ticket: int
    clock: Clock
    due_at: float  # Unix seconds, as the store keeps them
    next_at: float | None
    rounds: int = 0
    shifted: bool = False
    met: bool = False


@dataclass(frozen=True, slots=True)
class ExposeKeys:
    """Reply keys that the mail being handled showed to people other than the key's
    holder and mailgate: from now on they prove nothing. Each key's identity
    (replykey.Key) and the end of its validity (Unix seconds), when its row may go."""

    keys: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Log:
    """A line for the log, written by the caller once the effects are applied."""

    level: str  # info | warning
    event: str
    fields: Mapping[str, Any] = field(default_factory=dict)


Change = SetMessageText | UpdateTicket | WriteClock
Effect = (StoreMessage | AddReceipts | OpenTicket | StartClocks | AddEvent | LinkTickets
          | AddAttachments | HoldNotification | QueueMail | ExposeKeys | Change | Log)
