"""bytes -> Inbound. Never raises: whatever cannot be understood becomes a defect.

The steps, each a module: the bytes are read into a compat32 Message (message.py), the
header fields decisions need are decoded (headerfields.py), the MIME tree gives the body
text and the attachments (bodyparts.py; each part's bytes and text: partcontent.py), and
the header block is read again as the MTA read it, for Authentication-Results and DKIM
(mtafields.py).
"""

from __future__ import annotations

import hashlib
import re
from email.message import Message

from mailgate.core.headernames import AUTOMATIC_HEADERS, LOOP_HEADERS, ROUTING_HEADERS
from mailgate.core.mime import bodyparts, headerfields, message, mtafields
from mailgate.core.model import Inbound

MAX_DEFECTS = 50


def parse(raw: bytes, max_body_chars: int = 200_000) -> Inbound:
    try:
        return parse_without_safety_net(raw, max_body_chars)
    except Exception as exc:  # a last resort: every known trap is handled inside
        return _unparseable(raw, f"unparseable: {type(exc).__name__}: {exc}"[:200])


def parse_without_safety_net(raw: bytes, max_body_chars: int = 200_000) -> Inbound:
    defects: list[str] = []
    try:
        msg = message.read_message(raw, defects)
    except Exception as exc:  # the parser is tolerant; this is a last resort
        return _unparseable(raw, f"unparseable: {type(exc).__name__}")
    r = headerfields.Reading.of(msg, defects, raw)
    content_type = next(iter(r.values("content-type")), "")
    if message.PARAMETER_WITHOUT_SEMICOLON.match(content_type):  # mended: message.py
        defects.append("Content-Type without ';' before its parameters; mended")
    message_id = headerfields.first_id(r.header("message-id"))
    senders = headerfields.address_pairs(r, "from")
    body, attachments, part_types = bodyparts.body_and_attachments(r, max_body_chars)
    auth_results, depths, sides, signatures, counts = mtafields.authentication(r, raw)
    defects.extend(type(d).__name__ for d in msg.defects[:20])
    return Inbound(
        message_id=message_id,
        dedupe_key=message_id or _content_key(raw),
        sender=headerfields.sender(r),
        to=headerfields.addresses(r, "to"),
        cc=headerfields.addresses(r, "cc"),
        delivered_to=tuple(a.addr for a in headerfields.addresses(r, "delivered-to")),
        reply_to=headerfields.addresses(r, "reply-to"),
        subject=r.header("subject"),
        date=headerfields.date(r.header("date")),
        in_reply_to=tuple(headerfields.MSGID.findall(r.header("in-reply-to")))[:10],
        references=tuple(headerfields.MSGID.findall(r.header("references")))[-50:],
        reply_ids=headerfields.reply_ids(r),
        body=body,
        attachments=attachments,
        embedded_ids=_embedded_ids(msg),
        auth_results=auth_results,
        auth_results_depths=depths,
        auth_results_sides=sides,
        dkim_signatures=signatures,
        field_counts=counts,
        headers={name: r.header(name) for name in (*LOOP_HEADERS, *ROUTING_HEADERS)
                 if name in r.index}
        | _content_type_headers(msg),
        defects=tuple(dict.fromkeys(defects))[:MAX_DEFECTS],
        size=len(raw),
        from_count=headerfields.from_count(r, senders),
        raw_headers={name: tuple(headerfields.unfolded(v) for v in r.values(name)[:20])
                     for name in AUTOMATIC_HEADERS if name in r.index},
        part_types=part_types,
    )


def fingerprint(msg: Inbound) -> str:
    """What stays the same when one message is delivered twice (transport headers change).

    Two messages with the same Message-ID but different fingerprints are different mail:
    a broken client re-using IDs must not make the second request vanish as a duplicate.
    """
    sender = msg.sender.addr if msg.sender else msg.headers.get("from", "")
    date = msg.date.isoformat() if msg.date else ""
    parts = (sender, msg.subject, date, msg.body.strip()[:20000],
             ",".join(f"{a.filename}:{a.size}" for a in msg.attachments))
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "replace")).hexdigest()[:32]


def _unparseable(raw: bytes, reason: str) -> Inbound:
    return Inbound(message_id="", dedupe_key=_content_key(raw), sender=None,
                   defects=(reason,), size=len(raw))


def _content_key(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _content_type_headers(msg: Message) -> dict[str, str]:
    try:
        ctype = msg.get_content_type()
        report = msg.get_param("report-type") if ctype == "multipart/report" else None
    except Exception:
        return {}
    found = {"content-type": ctype}
    if isinstance(report, str):
        found["report-type"] = report.lower()
    return found


_HEADER_MSGID = re.compile(rb"^message-id:\s*<([^<>\s]{1,900})>", re.IGNORECASE | re.MULTILINE)


def _embedded_ids(msg: Message) -> tuple[str, ...]:
    """Message-IDs of messages carried inside this one: what a bounce or report is about."""
    found: list[str] = []
    stack, seen = [msg], 0
    while stack and seen < bodyparts.MAX_PARTS:
        part, seen = stack.pop(), seen + 1
        try:
            ctype = part.get_content_type()
            payload = part.get_payload()
            if ctype == "message/rfc822" and isinstance(payload, list) and payload:
                inner_id = str(payload[0].get("message-id") or "")
                found.append(headerfields.first_id(headerfields.decode_text(inner_id)))
            elif ctype == "text/rfc822-headers":
                data = part.get_payload(decode=True) or b""
                found += [m.decode("ascii", "replace") for m in _HEADER_MSGID.findall(data)]
            elif part.is_multipart() and isinstance(payload, list):
                stack.extend(p for p in payload if isinstance(p, Message))
        except Exception:
            continue
    return tuple(dict.fromkeys(i for i in found if i))[:10]
