"""Is this mail written by a person, or automatic mail we must never answer? (RFC 3834)

The rules are an ordered list of (kind, test) pairs; the first test that returns a reason
decides. Each test is a small pure function over the parsed message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from mailgate.model import Inbound, MailKind

BOUNCE_LOCALPARTS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon"})
AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(automatic reply|auto(matic)?[- ]?(reply|response|antwort)|out of (the )?office"
    r"|abwesenheitsnotiz|r[ée]ponse automatique|respuesta autom[aá]tica|risposta automatica"
    r"|autosvar|vacation|away from the office)\b|^\s*auto:",
    re.IGNORECASE,
)
BOUNCE_SUBJECT = re.compile(
    r"^\s*(undeliver(ed|able)|delivery (status notification|failure|has failed)"
    r"|returned mail|mail delivery failed|failure notice|non[- ]?delivery)",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: MailKind
    reason: str = ""


@dataclass(frozen=True, slots=True)
class LoopContext:
    own_addresses: frozenset[str]  # every department address and our From addresses
    instance: str  # our X-Mailgate-Instance value


Rule = Callable[[Inbound, LoopContext], str | None]


def _own(msg: Inbound, ctx: LoopContext) -> str | None:
    if msg.headers.get("x-mailgate-instance", "").strip() == ctx.instance:
        return "carries our own X-Mailgate-Instance header"
    if msg.sender and msg.sender.addr in ctx.own_addresses:
        return f"sent from our own address {msg.sender.addr}"
    return None


def _bounce(msg: Inbound, ctx: LoopContext) -> str | None:
    h = msg.headers
    if h.get("content-type") == "multipart/report":
        # delivery-status, disposition-notification, feedback-report (ARF): all automatic.
        return f"multipart/report ({h.get('report-type', 'no report-type')})"
    if "x-failed-recipients" in h:
        return "X-Failed-Recipients header"
    local = _sender_localpart(msg)
    if local in BOUNCE_LOCALPARTS:
        return f"sent by {local}"
    if h.get("return-path", "").strip() == "<>" and BOUNCE_SUBJECT.search(msg.subject):
        return "null return path and a bounce subject"
    return None


def _sender_localpart(msg: Inbound) -> str:
    if msg.sender:
        return msg.sender.addr.partition("@")[0]
    raw = msg.headers.get("from", "")
    inner = raw[raw.find("<") + 1: raw.rfind(">")] if "<" in raw else raw
    return inner.strip().partition("@")[0].lower()


def _auto_reply(msg: Inbound, ctx: LoopContext) -> str | None:
    h = msg.headers
    auto = h.get("auto-submitted", "").split(";")[0].strip().lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto}"
    for name in ("x-autoreply", "x-autorespond"):
        if name in h:
            return f"{name} header"
    if h.get("precedence", "").strip().lower() == "auto_reply":
        return "Precedence: auto_reply"
    if h.get("x-auto-response-suppress", "").strip().lower() in ("all", "oof", "autoreply"):
        return "X-Auto-Response-Suppress header (Exchange automatic mail)"
    if AUTO_REPLY_SUBJECT.search(msg.subject):
        return "automatic-reply subject"
    if h.get("return-path", "").strip() == "<>":
        return "null return path"
    return None


def _bulk(msg: Inbound, ctx: LoopContext) -> str | None:
    h = msg.headers
    precedence = h.get("precedence", "").strip().lower()
    if precedence in ("bulk", "list", "junk"):
        return f"Precedence: {precedence}"
    for name in ("list-id", "list-unsubscribe", "list-post"):
        if name in h:
            return f"{name} header"
    if "x-loop" in h:
        return "X-Loop header"
    return None


RULES: tuple[tuple[MailKind, Rule], ...] = (
    (MailKind.OWN, _own),
    (MailKind.BOUNCE, _bounce),
    (MailKind.AUTO_REPLY, _auto_reply),
    (MailKind.BULK, _bulk),
)


def classify(msg: Inbound, ctx: LoopContext) -> Verdict:
    for kind, rule in RULES:
        reason = rule(msg, ctx)
        if reason:
            return Verdict(kind, reason)
    return Verdict(MailKind.REQUEST)
