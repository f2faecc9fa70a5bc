"""Is this mail written by a person, or automatic mail we must never answer? (RFC 3834)

The rules are an ordered list of (kind, test) pairs; the first test that returns a reason
decides. Each test is a small pure function over the parsed message. Headers are read
from Inbound.raw_headers by their grammar (mailheaders.py), never searched as decoded text.

What each kind means to the pipeline: REQUEST is ticketed and acknowledged; BULK (list
mail, mail forwarded by someone's mailbox rule, bulk senders) is ticketed or threaded but
never acknowledged; AUTO_REPLY and BOUNCE only ever join a ticket they are about, else
they are quarantined with the reason; OWN is our own mail coming back.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from mailgate.core.addresses import strip_plus
from mailgate.core.mime import mailheaders as mh
from mailgate.core.model import Inbound, MailKind

BOUNCE_LOCALPARTS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon"})
AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(automatic reply|auto(matic)?[- ]?(reply|response|antwort)|out of (the )?office"
    r"|abwesenheitsnotiz|r[ée]ponse automatique|respuesta autom[aá]tica|risposta automatica"
    r"|autosvar|vacation|away from the office)\b|^\s*auto:",
    re.IGNORECASE,
)
BOUNCE_SUBJECT = re.compile(
    r"^\s*(undeliver(ed|able)|delivery (status notification|failure|has failed|problem)"
    r"|returned mail|mail delivery failed|failure notice|non[- ]?delivery"
    r"|mail system error|delivery notification|warning: could not send)",
    re.IGNORECASE,
)
# Parts only delivery, disposition and feedback reports carry (RFC 3464, 6533, 8098,
# 5965, 6522), also where a sender forgot the multipart/report around them.
REPORT_PARTS = ("message/delivery-status", "message/global-delivery-status",
                "text/rfc822-headers", "message/global-headers",
                "message/disposition-notification", "message/global-disposition-notification",
                "message/feedback-report")
LIST_HEADERS = ("list-id", "list-unsubscribe", "list-post", "list-help", "list-subscribe",
                "list-owner", "list-archive")  # RFC 2919 and RFC 2369
LIST_SOFTWARE_HEADERS = ("mailing-list", "x-mailman-version", "x-mailing-list", "x-ml-name")
# Local parts that only list software sends from (majordomo, Mailman, ezmlm, sympa).
LIST_SENDER = re.compile(r"^owner-.|.-(request|bounces|owner)$")


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: MailKind
    reason: str = ""


@dataclass(frozen=True, slots=True)
class LoopContext:
    own_addresses: frozenset[str]  # every department address and our From addresses
    instance: str  # our X-Mailgate-Instance value
    # The SMTP reverse-path of mail pushed to our listener ("" is the null one): there we
    # are the final delivery, and no Return-Path header says it. None: read from a
    # mailbox, whose delivery wrote it into Return-Path.
    envelope_sender: str | None = None


Rule = Callable[[Inbound, LoopContext], str | None]


def _raw(msg: Inbound, name: str) -> tuple[str, ...]:
    return tuple(msg.raw_headers.get(name, ()))


def _first(msg: Inbound, name: str) -> str:
    values = msg.raw_headers.get(name, ())
    return values[0] if values else ""


def _precedences(msg: Inbound) -> tuple[str, ...]:
    """The keyword of every Precedence field: a second one saying bulk is still bulk."""
    return tuple(mh.keyword(v) for v in _raw(msg, "precedence"))


def _own(msg: Inbound, ctx: LoopContext) -> str | None:
    if any(mh.keyword(v) == ctx.instance.lower() for v in _raw(msg, "x-mailgate-instance")):
        return "carries our own X-Mailgate-Instance header"
    # Plus tag aside, as directory.is_own: it-help+x@ is delivered to it-help@, so an
    # acknowledgement to it would only come back to us.
    if msg.sender and strip_plus(msg.sender.addr) in ctx.own_addresses:
        return f"sent from our own address {msg.sender.addr}"
    return None


def _delivery_report(msg: Inbound) -> str | None:
    if msg.headers.get("content-type") == "multipart/report":
        # delivery-status, disposition-notification, feedback-report (ARF): all automatic.
        return f"multipart/report ({msg.headers.get('report-type', 'no report-type')})"
    part = next((t for t in msg.part_types if t in REPORT_PARTS), None)
    if part:
        return f"{part} part"
    if any(mh.has_value(v) for v in _raw(msg, "x-failed-recipients")):
        return "X-Failed-Recipients header"
    return None


def _null_path(msg: Inbound, ctx: LoopContext) -> bool:
    """RFC 5321's null reverse-path (bounces and auto-replies), in the envelope we were
    handed or in the Return-Path the delivery wrote."""
    return ctx.envelope_sender == "" or mh.is_null_path(_first(msg, "return-path"))


def _bounce(msg: Inbound, ctx: LoopContext) -> str | None:
    report = _delivery_report(msg)
    if report:
        return report
    local = _sender_localpart(msg)
    bounce_subject = bool(BOUNCE_SUBJECT.search(msg.subject))
    if local in BOUNCE_LOCALPARTS:
        if bounce_subject:
            return f"sent by {local} with a bounce subject"
        if _null_path(msg, ctx):
            return f"sent by {local} with a null return path"
        if "message/rfc822" in msg.part_types:
            return f"sent by {local} with a returned message attached"
    if bounce_subject and _null_path(msg, ctx):
        return "null return path and a bounce subject"
    return None


def _sender_localpart(msg: Inbound) -> str:
    if msg.sender:
        return msg.sender.addr.partition("@")[0]
    # "From: MAILER-DAEMON" or "From: MAILER-DAEMON <>" is no usable address, but says
    # who sent it.
    return mh.mailbox_word(msg.headers.get("from", "")).partition("@")[0]


def _auto_reply(msg: Inbound, ctx: LoopContext) -> str | None:
    # Every field counts, not the first: "Auto-Submitted: no" above an autoresponder's
    # own (one that copies the headers of the mail it answers) must not hide it.
    auto = next((k for k in map(mh.keyword, _raw(msg, "auto-submitted")) if k and k != "no"),
                "")
    if auto:
        return f"Auto-Submitted: {auto}"
    for name in ("x-autoreply", "x-autorespond", "x-autoresponder"):
        if any(mh.is_yes(v) for v in _raw(msg, name)):
            return f"{name} header"
    if "auto_reply" in _precedences(msg):
        return "Precedence: auto_reply"
    suppress = {w for v in _raw(msg, "x-auto-response-suppress") for w in mh.keywords(v)}
    if suppress & {"all", "oof", "autoreply"}:
        return "X-Auto-Response-Suppress header (Exchange automatic mail)"
    if AUTO_REPLY_SUBJECT.search(msg.subject):
        return "automatic-reply subject"
    if _null_path(msg, ctx):
        return "null return path"
    return None


def _bulk(msg: Inbound, ctx: LoopContext) -> str | None:
    precedence = next((p for p in _precedences(msg) if p in ("bulk", "list", "junk")), "")
    if precedence:
        return f"Precedence: {precedence}"
    for name in LIST_HEADERS:
        values = _raw(msg, name)
        if any(mh.list_id(v) if name == "list-id" else mh.list_urls(v) for v in values):
            return f"{name} header (list mail)"
    for name in LIST_SOFTWARE_HEADERS:
        if any(mh.has_value(v) for v in _raw(msg, name)):
            return f"{name} header (list mail)"
    for name in ("sender", "return-path"):
        for address in mh.addresses(_first(msg, name)):
            if LIST_SENDER.search(mh.local_part(address)):
                return f"{name} {address} is a list address"
    envelope = (ctx.envelope_sender or "").lower()
    if "@" in envelope and LIST_SENDER.search(mh.local_part(envelope)):
        return f"envelope sender {envelope} is a list address"
    if any(mh.has_value(v) for v in _raw(msg, "x-loop")):
        return "X-Loop header"
    if any(mh.has_value(v) for v in _raw(msg, "feedback-id")):
        return "Feedback-ID header (bulk sender)"
    return _mailbox_rule(msg, ctx)


def _mailbox_rule(msg: Inbound, ctx: LoopContext) -> str | None:
    """Exchange marks mail its mailbox rules forwarded, redirected or answered. A rule of
    one of our own mailboxes (a department address redirecting to mailgate's mailbox) is
    our plumbing, not an automatic sender: its mark is ignored."""
    looped = {a for v in _raw(msg, "x-ms-exchange-inbox-rules-loop") for a in mh.addresses(v)}
    foreign = sorted(looped - ctx.own_addresses)
    if foreign:
        return f"X-MS-Exchange-Inbox-Rules-Loop: forwarded by {foreign[0]}'s mailbox rule"
    source = mh.strip_comments(_first(msg, "x-ms-exchange-generated-message-source")).strip()
    if source and not looped:
        return f"X-MS-Exchange-Generated-Message-Source: {source[:60]}"
    return None


def _bounce_name_only(msg: Inbound, ctx: LoopContext) -> str | None:
    """postmaster@ or MAILER-DAEMON@ without any delivery report: a person (or a tool)
    writing from a role address. Ticketed, never answered: answering MAILER-DAEMON
    is how loops start, quarantining a real question loses it."""
    local = _sender_localpart(msg)
    if local in BOUNCE_LOCALPARTS:
        return f"sent by {local}, without a delivery report"
    return None


RULES: tuple[tuple[MailKind, Rule], ...] = (
    (MailKind.OWN, _own),
    (MailKind.BOUNCE, _bounce),
    (MailKind.AUTO_REPLY, _auto_reply),
    (MailKind.BULK, _bulk),
    (MailKind.BULK, _bounce_name_only),
)


def classify(msg: Inbound, ctx: LoopContext) -> Verdict:
    for kind, rule in RULES:
        reason = rule(msg, ctx)
        if reason:
            return Verdict(kind, reason)
    return Verdict(MailKind.REQUEST)
