"""Build outgoing mail as bytes: safe headers, threading headers, RFC 3834 markers.

The loop guard is added here and nowhere else: every mail carries mailgate's own
LOOP_HEADER (classify.py drops mail that comes back with our instance's value) and
Auto-Submitted; automatic mail (anything but a person's relayed words) also carries the
suppression headers autoresponders honour. What goes into an envelope for each kind of
mail is outbound/kinds.py's table.

Written by hand instead of with EmailMessage: the policy.default header machinery costs
several milliseconds per mail, which was most of the acknowledgement's CPU time.
"""

from __future__ import annotations

import binascii
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.header import Header
from email.message import Message
from email.utils import format_datetime, formataddr

from mailgate.core.mime.bodyparts import MAX_PARTS, shown_children
from mailgate.core.mime.message import read_message
from mailgate.core.model import Inbound

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
CRLF = "\r\n"
LOOP_HEADER = "X-Mailgate-Instance"  # our instance's name: mail that comes back is ours


def header_safe(value: str, limit: int = 900) -> str:
    """One line: CR, LF and other control characters become spaces (no header injection)."""
    return _CONTROL.sub(" ", value).strip()[:limit]


def new_message_id(domain: str, hint: str = "") -> str:
    """A globally unique Message-ID (without brackets), fixed when the mail is enqueued."""
    prefix = re.sub(r"[^A-Za-z0-9-]", "", hint)
    return f"{prefix + '.' if prefix else ''}{uuid4_hex()}@{domain}"


def uuid4_hex() -> str:
    """uuid.uuid4().hex without building a UUID object (its __init__ was a visible share
    of composing an acknowledgement): 16 random bytes with the version 4 and RFC 4122
    variant bits set, as uuid4 sets them."""
    data = bytearray(os.urandom(16))
    data[6] = (data[6] & 0x0F) | 0x40
    data[8] = (data[8] & 0x3F) | 0x80
    return data.hex()


@dataclass(frozen=True, slots=True)
class Envelope:
    from_name: str
    from_addr: str
    to: tuple[str, ...]
    subject: str
    message_id: str
    date: datetime
    instance: str  # the LOOP_HEADER's value: every mail we send carries it
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    reply_to: str | None = None
    auto_submitted: str = "auto-replied"
    extra: tuple[tuple[str, str], ...] = ()
    cc: tuple[str, ...] = ()


def compose(env: Envelope, text: str, html: str | None = None,
            attachments: Sequence[bytes] = ()) -> bytes:
    """The whole mail; `attachments` are complete MIME parts (headers and body) as bytes,
    relayed as they arrived (see relay_parts)."""
    headers = _headers(env)
    content_headers, body = _content(text, html)
    if not attachments:
        return _head(headers + content_headers) + body.encode("ascii")
    boundary = f"=_mailgate_mixed_{uuid4_hex()}"
    headers.append(("Content-Type", f'multipart/mixed; boundary="{boundary}"'))
    first = CRLF.join(_lines(content_headers)) + CRLF + CRLF + body
    delimiter = f"{CRLF}--{boundary}{CRLF}".encode("ascii")
    return b"".join([_head(headers), f"--{boundary}{CRLF}".encode("ascii"),
                     first.encode("ascii"),
                     *(delimiter + part.rstrip(b"\r\n") for part in attachments),
                     f"{CRLF}--{boundary}--{CRLF}".encode("ascii")])


def _content(text: str, html: str | None) -> tuple[list[tuple[str, str]], str]:
    if html is None:
        return _text_part_headers("plain"), _qp(text)
    boundary = f"=_mailgate_{uuid4_hex()}"
    body = CRLF.join([
        f"--{boundary}", *_lines(_text_part_headers("plain")), "", _qp(text),
        f"--{boundary}", *_lines(_text_part_headers("html")), "", _qp(html),
        f"--{boundary}--", "",
    ])
    return [("Content-Type", f'multipart/alternative; boundary="{boundary}"')], body


@dataclass(frozen=True, slots=True)
class RelayParts:
    parts: tuple[bytes, ...]  # complete MIME parts, as received
    left_out: tuple[tuple[str, int], ...]  # (filename, size) of parts over the size cap


def carries_parts(msg: Inbound) -> bool:
    """Whether a received mail can have parts to relay: a single text body has none."""
    return msg.headers.get("content-type", "text/plain") not in ("text/plain", "text/html")


def relay_parts(raw: bytes, limit: int) -> RelayParts:
    """The attachments of a received mail as MIME parts to relay, until `limit` bytes.

    Parts keep their own headers and transfer encoding, so nothing is decoded and
    re-encoded on the way. Body text parts (the first text/plain and text/html that are
    not attachments) are left out: the relayed mail carries the trimmed text instead.
    """
    try:
        msg = read_message(raw, [])  # parse's own reading of these bytes, when it is kept
    except Exception:
        return RelayParts((), ())
    kept: list[bytes] = []
    left_out: list[tuple[str, int]] = []
    total = 0
    for part in _attachment_leaves(msg):
        name = _part_name(part)
        payload = part.get_payload()
        if isinstance(payload, str) and total + len(payload) > limit:
            left_out.append((name, len(payload)))  # too big: do not even serialise it
            continue
        try:
            data = part.as_bytes(policy=policy.compat32.clone(linesep=CRLF))
        except Exception:
            continue
        if total + len(data) > limit:
            left_out.append((name, len(data)))
            continue
        total += len(data)
        kept.append(data)
    return RelayParts(tuple(kept), tuple(left_out))


def _attachment_leaves(msg: Message) -> list[Message]:
    found: list[Message] = []
    body_types: set[str] = set()
    stack = [msg]  # the next part on top: depth first, in the mail's order
    while stack and len(found) < MAX_PARTS:  # as many as parse() lists
        part = stack.pop()
        ctype = part.get_content_type()
        payload = part.get_payload()
        if part.is_multipart() and ctype != "message/rfc822" and isinstance(payload, list):
            # Pushed in reverse onto the end: taking from the front (pop(0), children +
            # stack) moved the whole stack per part, quadratic in a mail of 500,000
            # empty multiparts.
            stack.extend(reversed(shown_children(ctype, payload)))
            continue
        disposition = str(part.get("content-disposition") or "").split(";")[0].strip().lower()
        attachment = bool(_part_name(part, "")) or disposition == "attachment"
        if ctype in ("text/plain", "text/html") and not attachment and ctype not in body_types:
            body_types.add(ctype)
            continue
        if part is not msg:
            found.append(part)
    return found


def _part_name(part: Message, default: str = "unnamed") -> str:
    try:
        name = part.get_filename()
    except Exception:
        name = None
    return str(name) if name else default


def _headers(env: Envelope) -> list[tuple[str, str]]:
    headers = [
        ("From", address(env.from_name, env.from_addr)),
        ("To", ", ".join(address("", a) for a in env.to)),
        *([("Cc", ", ".join(address("", a) for a in env.cc))] if env.cc else []),
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
    headers += _loop_guard(env)
    for name, value in env.extra:
        headers.append((re.sub(r"[^A-Za-z0-9-]", "", name), encode_header(header_safe(value))))
    headers.append(("MIME-Version", "1.0"))
    return headers


def _loop_guard(env: Envelope) -> list[tuple[str, str]]:
    """RFC 3834's marker, and our own header that classify.py recognises on the way back.
    A person's relayed answer says Auto-Submitted: no (so the reader's client treats it as
    a person's) but still carries our header: it must not come back as a new request."""
    headers = [("Auto-Submitted", env.auto_submitted)]
    if env.auto_submitted != "no":
        # Exchange and many autoresponders honour these and stay quiet.
        headers += [("X-Auto-Response-Suppress", "All"), ("Precedence", "bulk")]
    return [*headers, (LOOP_HEADER, encode_header(header_safe(env.instance)))]


def _text_part_headers(subtype: str) -> list[tuple[str, str]]:
    return [("Content-Type", f'text/{subtype}; charset="utf-8"'),
            ("Content-Transfer-Encoding", "quoted-printable")]


def _lines(headers: list[tuple[str, str]]) -> list[str]:
    return [f"{name}: {value}" for name, value in headers]


def _head(headers: list[tuple[str, str]]) -> bytes:
    """The header block and the blank line. Every value is ASCII (encoded words) but an
    internationalised address (RFC 6532: jörg@example.com has no ASCII spelling), which
    goes as UTF-8; the transport then sends with SMTPUTF8 (needs_smtputf8)."""
    return (CRLF.join(_lines(headers)) + CRLF + CRLF).encode("utf-8")


def needs_smtputf8(mail_from: str, recipients: Sequence[str], raw: bytes) -> bool:
    """Whether a mail can only go with SMTPUTF8 (RFC 6531): an address in its envelope
    or its header block is not ASCII."""
    end = raw.find(b"\r\n\r\n")
    head = raw if end < 0 else raw[:end]
    return not (mail_from.isascii() and all(r.isascii() for r in recipients)
                and head.isascii())


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
    if not name:
        return addr
    if addr.isascii():
        return formataddr((name, addr), charset="utf-8")
    # formataddr refuses an address that is not ASCII: it writes the name for a stand-in.
    named = formataddr((name, _STAND_IN), charset="utf-8")
    return named[:named.rindex(f"<{_STAND_IN}>")] + f"<{addr}>"


_STAND_IN = "stand-in@invalid"


PLACEHOLDER_ID = "mailgate-copy-placeholder@invalid"


def with_message_id(raw: bytes, message_id: str) -> bytes:
    """A copy of a mail composed with PLACEHOLDER_ID, under its own Message-ID: one
    compose for every recipient of a mail that carries a reply key per recipient."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    new = head.replace(f"<{PLACEHOLDER_ID}>".encode(), f"<{header_safe(message_id)}>".encode(), 1)
    return new + sep + body
