"""Build outgoing mail as bytes: safe headers, threading headers, RFC 3834 markers."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def header_safe(value: str, limit: int = 900) -> str:
    """One line: CR, LF and other control characters become spaces (no header injection)."""
    return _CONTROL.sub(" ", value).strip()[:limit]


def new_message_id(domain: str, hint: str = "") -> str:
    """A globally unique Message-ID (without brackets), fixed when the mail is enqueued."""
    prefix = re.sub(r"[^A-Za-z0-9-]", "", hint)
    return f"{prefix + '.' if prefix else ''}{uuid.uuid4().hex}@{domain}"


@dataclass(frozen=True, slots=True)
class Envelope:
    from_name: str
    from_addr: str
    to: tuple[str, ...]
    subject: str
    message_id: str
    date: datetime
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    reply_to: str | None = None
    auto_submitted: str = "auto-replied"
    extra: tuple[tuple[str, str], ...] = ()


def compose(env: Envelope, text: str, html: str | None = None) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = _address(env.from_name, env.from_addr)
    msg["To"] = ", ".join(_address("", a) for a in env.to)
    msg["Subject"] = header_safe(env.subject)
    msg["Date"] = format_datetime(env.date)
    msg["Message-ID"] = f"<{header_safe(env.message_id)}>"
    if env.in_reply_to:
        msg["In-Reply-To"] = f"<{header_safe(env.in_reply_to)}>"
    refs = [f"<{header_safe(r)}>" for r in env.references[-20:] if r]
    if refs:
        msg["References"] = " ".join(refs)
    if env.reply_to:
        msg["Reply-To"] = _address("", env.reply_to)
    msg["Auto-Submitted"] = env.auto_submitted
    # Exchange and many autoresponders honour these and stay quiet.
    msg["X-Auto-Response-Suppress"] = "All"
    if env.auto_submitted != "no":
        msg["Precedence"] = "bulk"
    for name, value in env.extra:
        msg[header_safe(name, 70)] = header_safe(value)
    msg.set_content(text, cte="quoted-printable")
    if html is not None:
        msg.add_alternative(html, subtype="html", cte="quoted-printable")
    return msg.as_bytes()


def _address(name: str, addr: str) -> str:
    local, _, domain = header_safe(addr).partition("@")
    return str(HeaderAddress(display_name=header_safe(name, 200), username=local,
                             domain=domain))
