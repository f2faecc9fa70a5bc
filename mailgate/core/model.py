"""The plain data that flows through mailgate. No behaviour, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Status(StrEnum):
    NEW = "new"
    OPEN = "open"
    WAITING = "waiting"
    RESOLVED = "resolved"
    CLOSED = "closed"


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class MailKind(StrEnum):
    """What kind of mail an inbound message is, as far as loops are concerned (for the
    kinds of mail mailgate sends, see OutgoingKind)."""

    REQUEST = "request"  # written by a person: may be ticketed and acknowledged
    BULK = "bulk"  # list or bulk mail: ticketed, never acknowledged
    AUTO_REPLY = "auto_reply"  # out-of-office and other RFC 3834 responses
    BOUNCE = "bounce"  # delivery status notifications
    OWN = "own"  # sent by mailgate itself


class OutgoingKind(StrEnum):
    """Every kind of mail mailgate sends, as the outbox records it (outbox.kind, the
    mail_sent metric's label): keep the values. outbound/kinds.py says, for each, what
    the mail is made of."""

    ACK = "ack"
    NOTIFY_TEAM = "notify-team"
    RELAY_TEAM = "relay-team"
    NOTE_TEAM = "note-team"
    REPLY = "reply"
    SUMMARY = "summary"
    THANKS = "thanks"
    COMMAND_REPLY = "command-reply"
    UNPROVEN_NOTICE = "unproven-notice"
    NOT_KEPT = "not-kept"
    ESCALATION_WARNING = "escalation-warning"
    ESCALATION_BREACH = "escalation-breach"
    ESCALATION_RE_ESCALATION = "escalation-re_escalation"
    FLOOD_SUMMARY = "flood-summary"
    DIGEST = "digest"
    ALERT = "alert"


@dataclass(frozen=True, slots=True)
class Address:
    addr: str  # lower-cased local@domain
    name: str = ""

    def __str__(self) -> str:
        return self.addr


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class Inbound:
    """A parsed inbound message: only what mailgate's decisions need."""

    message_id: str  # without angle brackets; "" when the message has none
    dedupe_key: str  # message_id, or "sha256:<hex>" of the raw bytes when it is missing
    sender: Address | None  # None when no usable From address exists
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    delivered_to: tuple[str, ...] = ()
    reply_to: tuple[Address, ...] = ()
    subject: str = ""
    date: datetime | None = None
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    # Every Message-ID of every In-Reply-To and References field, uncut, never decoded:
    # where reply keys are read. Proof and exposure read these same ids; in_reply_to and
    # references above are cut for threading, and a key beyond a cut that is never burnt
    # could prove a later mail that carries it within the cut.
    reply_ids: tuple[str, ...] = ()
    body: str = ""
    attachments: tuple[Attachment, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)  # loop-relevant, lower-case names
    embedded_ids: tuple[str, ...] = ()  # Message-IDs of mail quoted inside (bounces, reports)
    auth_results: tuple[str, ...] = ()  # Authentication-Results headers, topmost first
    # How many Received fields lie above each of them, as the MTA reads the header block:
    # one MTA hop writes its results above its Received field, or right below it, never
    # below another hop's. Empty: not counted.
    auth_results_depths: tuple[int, ...] = ()
    # How many of the fields the sender writes (From, Date, Subject ...) lie above and
    # below each of them: an MTA writes its own above all of those (at the top, most do)
    # or below all of them (at the bottom: Exim's add_header). One for every field, where
    # auth_results keeps the first 10. Empty: not counted.
    auth_results_sides: tuple[tuple[int, int], ...] = ()
    # What the DKIM verifier behind our MTA read, for trust.py; only where auth_results
    # are kept. Each DKIM-Signature field as the MTA splits the header block (unfolded,
    # never decoded, topmost first), and how many instances of "dkim-signature" and of
    # each headernames.PINNING_FIELDS the header has: -1 where mailgate's parser and the
    # MTA read them differently. Empty: not counted, and then nothing is pinned.
    dkim_signatures: tuple[str, ...] = ()
    field_counts: Mapping[str, int] = field(default_factory=dict)
    defects: tuple[str, ...] = ()
    size: int = 0
    from_count: int = 1  # addresses in From: in all; only exactly one can be verified
    # The headers that tell automatic and list mail (headernames.AUTOMATIC_HEADERS), as sent:
    # unfolded, never RFC 2047-decoded, every occurrence, topmost first. classify.py reads
    # them by their grammar; decoded text could be made to say anything.
    raw_headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    part_types: tuple[str, ...] = ()  # content types of all MIME parts, containers too

    def recipients(self) -> tuple[str, ...]:
        """Every address the message was sent to, To first, without duplicates."""
        seen = dict.fromkeys(a.addr for a in (*self.to, *self.cc))
        seen.update(dict.fromkeys(self.delivered_to))
        return tuple(seen)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a raw message came from and on behalf of which departments it was received."""

    source: str  # "imap:<mailbox>" or "smtp"
    departments: tuple[str, ...] = ()
    envelope_sender: str | None = None  # SMTP MAIL FROM; "" is the null sender
    envelope_recipients: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Ticket:
    id: int
    ref: str  # e.g. "IT-1042"
    department: str
    subject: str
    requester: str
    requester_name: str
    status: Status
    priority: Priority
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One mail in the outbox: complete (raw), or a draft the outbox writes when sending."""

    message_id: str  # without angle brackets, fixed at enqueue time
    kind: str  # an OutgoingKind
    mail_from: str
    recipients: tuple[str, ...]
    raw: bytes
    ticket_id: int | None = None
    draft: str | None = None  # which writer fills raw when it is sent ("escalation")
    budget: str | None = None  # whose budget it draws on (see schema migration 7)
    budget_domain: str | None = None  # the recipient's domain, when that is limited too
    copy_of: str | None = None  # another recipient's copy of this mail: the first's Message-ID
