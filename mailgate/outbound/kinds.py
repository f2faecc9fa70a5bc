"""Every kind of mail mailgate sends, in one table, and the one function that builds it.

Where does the acknowledgement get its subject, who gets an escalation, which mail counts
against a person's budget of automatic mail? KINDS answers for each OutgoingKind: the
template, the subject, who receives it, how it threads, its Auto-Submitted value, its own
headers, how its Message-ID is made, and the budget it draws on. Callers decide *whether*
a mail goes out and to whom (they know the directory and the ticket); `build` makes it
from the kind's entry and what the caller knows (a Mail), and compose.py adds the loop
guard to every one.

Subjects, headers and Message-IDs are str.format strings of our own over a Mail's
`fields` (plus the ones `fields_of` adds): text from mail is only ever a value put into
them, never a format or a template, and compose.py strips CR/LF from every header.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from mailgate.core.model import Outgoing
from mailgate.core.model import OutgoingKind as K
from mailgate.core.render import Rendered, Renderer
from mailgate.core.replykey import KeyRing, keyed_message_id
from mailgate.core.sla import LevelKind
from mailgate.outbound.compose import PLACEHOLDER_ID, Envelope, compose, with_message_id
from mailgate.tickets.budget import MailBudget
from mailgate.tickets.conversation import clean_subject


class Threading(Enum):
    """Which of our mail's In-Reply-To and References a kind's mail gets (from a Thread)."""

    NONE = "none"  # starts a thread of its own
    ANSWER = "answer"  # In-Reply-To: the mail answered; References: its References, then it
    # In-Reply-To and References: the mail answered only. Its own References may carry
    # other people's reply keys (a member answers a forwarded mail), so they stay out.
    NOTICE = "notice"
    # In-Reply-To: the requester's last mail; References: the request, then that mail.
    # Only the requester's own Message-IDs: ours carry reply keys, and one person's copy
    # must not carry another person's key.
    REQUESTER = "requester"
    TEAM = "team"  # In-Reply-To and References: the request


class Budget(Enum):
    """What a kind's mail counts against (budget.py; schema migration 7)."""

    NONE = "none"
    # Each recipient's budget of automatic mail: mail a stranger can cause by writing to
    # us with any From: line. Counted on the mailbox, and on the domain outside the
    # organisation; the caller asks budget.refusal first where a refusal must hold it back.
    RECIPIENT = "recipient"
    NAMED = "named"  # a budget the caller names (Mail.budget), e.g. team notices per sender


KEYED = "keyed"  # message_id: one copy per recipient, each with its reply key (replykey.py)


@dataclass(frozen=True, slots=True)
class KindSpec:
    template: str | None  # NAME of templates/NAME.txt.j2; None: the Mail brings its body
    subject: str | Mapping[str, str]  # a format, or one per variant (Mail.variant)
    audience: str  # who receives it (the caller finds the addresses)
    threading: Threading
    auto_submitted: str  # RFC 3834: "auto-replied" answers a mail, "no" is a person's words
    message_id: str  # KEYED, or a format: fixed by its fields ({nonce}: a fresh one)
    budget: Budget = Budget.NONE
    reply_to_department: bool = False  # Reply-To: the sender's address
    headers: tuple[tuple[str, str], ...] = ()  # our own, besides the loop guard (formats)
    written_when_sent: bool = False  # queued as a draft, written by its writer when sent
    html: bool = False  # an HTML part too, where there is a NAME.html.j2 (or body.html)

    def subject_format(self, variant: str) -> str:
        if isinstance(self.subject, str):
            return self.subject
        return self.subject[variant]


TICKET = (("X-Mailgate-Ticket", "{refs}"),)
TAGGED = "{tags} Re: {clean_subject}"  # tags first so every client keeps them visible


def _escalation(headline: str, level: LevelKind) -> KindSpec:
    return KindSpec(
        template="escalation", subject=f"[{{ref}}] {headline}: {{subject}}",
        audience="the roles the SLA policy names for this level ([sla.NAME.notify]): "
                 "assignee, team, lead, head",
        threading=Threading.NONE, auto_submitted="auto-generated", message_id=KEYED,
        headers=(*TICKET, ("X-Mailgate-Escalation", f"{{target}} {level.value}")),
        written_when_sent=True, html=True)


KINDS: dict[K, KindSpec] = {
    K.ACK: KindSpec(
        template="ack", subject=TAGGED,
        audience="the requester: the sender of a new request (one mail for all its tickets)",
        threading=Threading.ANSWER, auto_submitted="auto-replied", message_id=KEYED,
        budget=Budget.RECIPIENT, headers=TICKET, html=True),
    K.NOTIFY_TEAM: KindSpec(
        template="notify_team",
        subject={"new": "[{ref}] New request: {subject}",
                 "transferred": "[{ref}] Transferred: {subject}"},
        audience="the department's team (or its notify address)",
        threading=Threading.TEAM, auto_submitted="auto-generated", message_id=KEYED,
        # a new request's notice counts against its sender's team notices (flood.py);
        # a transfer's draws on none
        budget=Budget.NAMED, reply_to_department=True, headers=TICKET),
    K.RELAY_TEAM: KindSpec(
        template="relay_team",
        subject={"proven": "[{ref}] Re: {subject}",
                 "unverified": "[{ref}] Re: (unverified) {subject}"},
        audience="the assignee, else the team; never the author",
        threading=Threading.TEAM, auto_submitted="no", message_id=KEYED,
        reply_to_department=True, headers=TICKET),
    K.NOTE_TEAM: KindSpec(
        template="relay_team", subject="[{ref}] Note: {subject}",
        audience="the team; never the author",
        threading=Threading.TEAM, auto_submitted="no", message_id=KEYED,
        reply_to_department=True, headers=TICKET),
    K.REPLY: KindSpec(
        template="reply_requester", subject=TAGGED,
        audience="the requester, and the request's Cc ([conversation] keep_cc_informed)",
        threading=Threading.REQUESTER, auto_submitted="no", message_id=KEYED,
        reply_to_department=True, headers=TICKET),
    K.SUMMARY: KindSpec(
        template="resolved", subject=TAGGED,
        audience="the requester (rating links with her key), and the request's Cc",
        threading=Threading.REQUESTER, auto_submitted="auto-generated", message_id=KEYED,
        reply_to_department=True, headers=TICKET),
    K.THANKS: KindSpec(
        template="thanks", subject=TAGGED, audience="the requester, for her first rating",
        threading=Threading.REQUESTER, auto_submitted="auto-replied", message_id=KEYED,
        budget=Budget.RECIPIENT, reply_to_department=True, headers=TICKET),
    K.COMMAND_REPLY: KindSpec(
        template="command_reply", subject=TAGGED,
        audience="the sender of commands that were rejected or refused",
        threading=Threading.NOTICE, auto_submitted="auto-replied", message_id=KEYED,
        budget=Budget.RECIPIENT, reply_to_department=True, headers=TICKET),
    K.UNPROVEN_NOTICE: KindSpec(
        template="unproven", subject=TAGGED,
        audience="a member's directory address (not the From:) when mail in their name "
                 "had no proof",
        threading=Threading.NOTICE, auto_submitted="auto-replied", message_id=KEYED,
        budget=Budget.RECIPIENT, reply_to_department=True, headers=TICKET),
    K.NOT_KEPT: KindSpec(
        template="not_kept", subject=TAGGED,
        audience="the sender of a reply whose attachments were over [limits]",
        threading=Threading.NOTICE, auto_submitted="auto-replied", message_id=KEYED,
        budget=Budget.RECIPIENT, reply_to_department=True, headers=TICKET),
    K.ESCALATION_WARNING: _escalation("SLA warning, {what} due soon", LevelKind.WARNING),
    K.ESCALATION_BREACH: _escalation("SLA breached, {what} overdue", LevelKind.BREACH),
    K.ESCALATION_RE_ESCALATION: _escalation("SLA still breached, {what} overdue",
                                            LevelKind.RE_ESCALATION),
    K.FLOOD_SUMMARY: KindSpec(
        template="flood_summary",
        subject="{count} more requests from {sender} (not notified one by one)",
        audience="the department's team, about one sender's held notifications",
        threading=Threading.NONE, auto_submitted="auto-generated",
        message_id="flood.{nonce}@{domain}", reply_to_department=True),
    K.DIGEST: KindSpec(
        template=None,  # core/report.py writes the figures as text and HTML
        subject={"department": "Weekly report {name}: {since:%d %b} - {until:%d %b %Y}",
                 "organisation": "Weekly report, all departments: "
                                 "{since:%d %b} - {until:%d %b %Y}"},
        audience="the department's head; the organisation's to [digest] organisation",
        threading=Threading.NONE, auto_submitted="auto-generated",
        # one per scope and week: the outbox's unique Message-ID keeps it from repeating
        message_id="digest.{scope}.{until:%Y%m%d}@{domain}",
        headers=(("X-Mailgate-Digest", "{scope}"),), html=True),
    K.ALERT: KindSpec(
        template=None,  # alerts.py says what is wrong in words
        subject={"failing": "mailgate: mailbox {mailbox} cannot be read",
                 "recovered": "mailgate: mailbox {mailbox} works again"},
        audience="the admin ([alerts] admin)",
        threading=Threading.NONE, auto_submitted="auto-generated",
        message_id="alert.{mailbox}.{millis}@{domain}",
        headers=(("X-Mailgate-Alert", "{mailbox}"),)),
}


def escalation_kind(level: LevelKind) -> K:
    return K(f"escalation-{level.value}")


@dataclass(frozen=True, slots=True)
class Thread:
    """The Message-IDs a mail may thread on; each kind's Threading picks its own."""

    answered: str | None = None  # the mail this one answers
    answered_refs: tuple[str, ...] = ()  # that mail's References
    request: str | None = None  # the ticket's request
    requester_last: str | None = None  # the requester's last mail on the ticket


def threading_headers(rule: Threading, thread: Thread) -> tuple[str | None,
                                                                 tuple[str, ...]]:
    """In-Reply-To and References for a kind's threading rule (without duplicates)."""
    if rule is Threading.ANSWER:
        pair = thread.answered, (*thread.answered_refs, thread.answered)
    elif rule is Threading.NOTICE:
        pair = thread.answered, (thread.answered,)
    elif rule is Threading.REQUESTER:
        pair = thread.requester_last, (thread.request, thread.requester_last)
    elif rule is Threading.TEAM:
        pair = thread.request, (thread.request,)
    else:
        pair = None, ()
    in_reply_to, references = pair
    return in_reply_to or None, tuple(dict.fromkeys(r for r in references if r))


@dataclass(frozen=True, slots=True)
class Mail:
    """What a caller knows of one mail; the kind's entry says the rest."""

    kind: K
    from_name: str
    from_addr: str
    to: tuple[str, ...]
    fields: Mapping[str, object] = field(default_factory=dict)  # for subject and headers
    context: Mapping[str, object] = field(default_factory=dict)  # the template's
    department: str | None = None  # whose template overrides apply
    body: Rendered | None = None  # a kind without a template: its text (and HTML)
    variant: str = ""  # which of the kind's subjects
    tickets: tuple[str, ...] = ()  # the ticket numbers it is about (its reply keys)
    ticket_id: int | None = None
    thread: Thread = Thread()
    cc: tuple[str, ...] = ()
    attachments: tuple[bytes, ...] = ()  # complete MIME parts (compose.relay_parts)
    budget: str | None = None  # Budget.NAMED: the budget's name (None: none)

    @property
    def spec(self) -> KindSpec:
        return KINDS[self.kind]


@dataclass(frozen=True, slots=True)
class Sending:
    """What every mail needs from the installation."""

    instance: str  # the loop guard's value
    keys: KeyRing = field(default_factory=KeyRing)  # signs keyed mail
    budget: MailBudget = field(default_factory=MailBudget)  # spells a recipient's budget


def fields_of(mail: Mail) -> dict[str, object]:
    """The mail's fields and those every kind may use: ref, refs and tags (its tickets),
    clean_subject (its subject without tags and Re:), domain (its sender's), nonce."""
    out: dict[str, object] = {
        "ref": mail.tickets[0] if mail.tickets else "",
        "refs": " ".join(mail.tickets),
        "tags": " ".join(f"[{ref}]" for ref in mail.tickets),
        "domain": mail.from_addr.partition("@")[2] or "localhost",
        "nonce": uuid.uuid4().hex,
    }
    out |= mail.fields
    if "subject" in out:
        out["clean_subject"] = clean_subject(str(out["subject"]))
    return out


def subject_of(mail: Mail, fields: Mapping[str, object] | None = None) -> str:
    return mail.spec.subject_format(mail.variant).format_map(fields or fields_of(mail))


def message_id_of(mail: Mail, fields: Mapping[str, object] | None = None) -> str:
    """The Message-ID of a kind whose Message-ID is fixed by its fields (not KEYED)."""
    spec = mail.spec
    if spec.message_id == KEYED:
        raise ValueError(f"{mail.kind} is keyed per recipient: see build")
    return spec.message_id.format_map(fields or fields_of(mail))


def write(mail: Mail, renderer: Renderer | None, instance: str, message_id: str,
          now: datetime) -> bytes:
    """The complete mail under this Message-ID: the one place an envelope is made."""
    spec = mail.spec
    fields = fields_of(mail)
    body = _body(mail, renderer)
    in_reply_to, references = threading_headers(spec.threading, mail.thread)
    envelope = Envelope(
        from_name=mail.from_name, from_addr=mail.from_addr, to=mail.to,
        subject=subject_of(mail, fields), message_id=message_id, date=now,
        instance=instance, in_reply_to=in_reply_to, references=references,
        reply_to=mail.from_addr if spec.reply_to_department else None,
        auto_submitted=spec.auto_submitted, cc=mail.cc,
        extra=tuple((name, value.format_map(fields)) for name, value in spec.headers))
    return compose(envelope, body.text, body.html if spec.html else None, mail.attachments)


def build(mail: Mail, renderer: Renderer | None, sending: Sending, now: datetime, *,
          only: tuple[str, ...] | None = None, first: str | None = None) -> list[Outgoing]:
    """The mail as outbox rows: composed once; a keyed kind as one copy per recipient,
    each Message-ID carrying that recipient's reply key for the mail's tickets. `only`:
    copies for just these recipients (a text of their own); `first`: the Message-ID of
    the mail's first copy when that was built in another call."""
    spec = mail.spec
    if spec.message_id != KEYED:
        message_id = message_id_of(mail)
        return [Outgoing(message_id=message_id, kind=mail.kind, mail_from=mail.from_addr,
                         recipients=(*mail.to, *mail.cc), ticket_id=mail.ticket_id,
                         raw=write(mail, renderer, sending.instance, message_id, now),
                         budget=mail.budget if spec.budget is Budget.NAMED else None)]
    raw = write(mail, renderer, sending.instance, PLACEHOLDER_ID, now)
    return keyed_copies(mail, sending, now, raw, only=only, first=first)


def keyed_copies(mail: Mail, sending: Sending, now: datetime, raw: bytes = b"", *,
                 only: tuple[str, ...] | None = None, first: str | None = None,
                 draft: str | None = None) -> list[Outgoing]:
    """One outbox row per recipient, each under its own keyed Message-ID: copies of
    `raw` (composed with PLACEHOLDER_ID), or drafts a writer fills in when sent."""
    spec = mail.spec
    domain = mail.from_addr.partition("@")[2]
    copies: list[Outgoing] = []
    for recipient in dict.fromkeys(only or (*mail.to, *mail.cc)):
        message_id = keyed_message_id(sending.keys, mail.tickets, recipient, domain, now)
        budget, on_domain = _budget(spec.budget, mail, sending.budget, recipient)
        copies.append(Outgoing(
            message_id=message_id, kind=mail.kind, mail_from=mail.from_addr,
            recipients=(recipient,), raw=with_message_id(raw, message_id) if raw else b"",
            ticket_id=mail.ticket_id, draft=draft, budget=budget, budget_domain=on_domain,
            copy_of=copies[0].message_id if copies else first))
    return copies


def _budget(rule: Budget, mail: Mail, budget: MailBudget,
            recipient: str) -> tuple[str | None, str | None]:
    if rule is Budget.RECIPIENT:
        return budget.keys(recipient)
    if rule is Budget.NAMED:
        return mail.budget, None
    return None, None


def _body(mail: Mail, renderer: Renderer | None) -> Rendered:
    template = mail.spec.template
    if template is None:
        if mail.body is None:
            raise ValueError(f"{mail.kind} has no template: the Mail brings its body")
        return mail.body
    if renderer is None:
        raise ValueError(f"{mail.kind} is rendered from {template}: a renderer is needed")
    return renderer.render(template, mail.department, dict(mail.context))
