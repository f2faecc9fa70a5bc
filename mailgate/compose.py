"""Build outgoing mail as bytes: safe headers, threading headers, RFC 3834 markers.

Written by hand instead of with EmailMessage: the policy.default header machinery costs
several milliseconds per mail, which was most of the acknowledgement's CPU time.
"""

from __future__ import annotations

import binascii
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
CRLF = "\r\n"


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
    headers = _headers(env)
    if html is None:
        headers += _text_part_headers("plain")
        body = _qp(text)
    else:
        boundary = f"=_mailgate_{uuid.uuid4().hex}"
        headers.append(("Content-Type", f'multipart/alternative; boundary="{boundary}"'))
        body = CRLF.join([
            f"--{boundary}", *_lines(_text_part_headers("plain")), "", _qp(text),
            f"--{boundary}", *_lines(_text_part_headers("html")), "", _qp(html),
            f"--{boundary}--", "",
        ])
    return (CRLF.join(_lines(headers)) + CRLF + CRLF + body).encode("ascii")


def _headers(env: Envelope) -> list[tuple[str, str]]:
    headers = [
        ("From", address(env.from_name, env.from_addr)),
        ("To", ", ".join(address("", a) for a in env.to)),
        ("Subject", encode_header(header_safe(env.subject), len("Subject: "))),
        ("Date", format_datetime(env.date)),
        ("Message-ID", f"<{header_safe(env.message_id)}>"),
    ]
    if env.in_reply_to:
        headers.append(("In-Reply-To", f"<{header_safe(env.in_reply_to)}>"))
    refs = [f"<{header_safe(r)}>" for r in env.references[-20:] if r]
    if refs:
        headers.append(("References", (CRLF + " ").join(refs)))
    if env.reply_to:
        headers.append(("Reply-To", address("", env.reply_to)))
    headers.append(("Auto-Submitted", env.auto_submitted))
    if env.auto_submitted != "no":
        # Exchange and many autoresponders honour these and stay quiet.
        headers += [("X-Auto-Response-Suppress", "All"), ("Precedence", "bulk")]
    for name, value in env.extra:
        headers.append((re.sub(r"[^A-Za-z0-9-]", "", name), encode_header(header_safe(value))))
    headers.append(("MIME-Version", "1.0"))
    return headers


def _text_part_headers(subtype: str) -> list[tuple[str, str]]:
    return [("Content-Type", f'text/{subtype}; charset="utf-8"'),
            ("Content-Transfer-Encoding", "quoted-printable")]


def _lines(headers: list[tuple[str, str]]) -> list[str]:
    return [f"{name}: {value}" for name, value in headers]


def _qp(text: str) -> str:
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    encoded = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
    return encoded.decode("ascii").replace("\n", CRLF)


def encode_header(value: str, offset: int = 0) -> str:
    """ASCII stays as it is (folded if long); anything else becomes RFC 2047 UTF-8 words."""
    if value.isascii() and len(value) + offset <= 78:
        return value
    charset = "us-ascii" if value.isascii() else "utf-8"
    return Header(value, charset, header_name=None,
                  continuation_ws=" ").encode(linesep=CRLF, maxlinelen=78)


def address(name: str, addr: str) -> str:
    addr = header_safe(addr, 320)
    name = header_safe(name, 200)
    return formataddr((name, addr), charset="utf-8") if name else addr
