"""bytes -> Inbound. Never raises: whatever cannot be understood becomes a defect.

The compat32 parser is used on purpose: policy.default is several times slower on whole
messages, and we decode only the few headers decisions need, ourselves, tolerantly.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from email import message_from_bytes
from email.header import decode_header
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from html.parser import HTMLParser

from mailgate.model import Address, Attachment, Inbound

# Headers that loop detection and bounce handling look at.
LOOP_HEADERS = (
    "auto-submitted", "precedence", "list-id", "list-unsubscribe", "list-post",
    "x-autoreply", "x-autorespond", "x-auto-response-suppress", "x-failed-recipients",
    "return-path", "x-mailgate-instance", "x-loop", "feedback-type", "from",
)
# Headers routing rules may match on ([[rule]] header = {...}); kept beside the loop ones.
ROUTING_HEADERS = ("x-priority", "importance", "priority", "x-msmail-priority", "sensitivity",
                   "keywords")
MAX_HEADER_CHARS = 4096  # a decoded header longer than this is cut: nobody reads further
MAX_ADDRESSES = 1000  # per header; mail to 10,000 recipients is still one request
MAX_PARTS = 500
MAX_DEPTH = 50
_MSGID = re.compile(r"<([^<>\s]{1,900})>")
_WHITESPACE = re.compile(r"[\s\x00]+")
_FOLD = re.compile(r"\r?\n(?=[ \t])")  # CRLF + WSP is the WSP (RFC 5322 unfolding)
_UNDECLARED_8BIT = re.compile("[\udc80-\udcff]")  # compat32's surrogate-escaped raw bytes


def parse(raw: bytes, max_body_chars: int = 200_000) -> Inbound:
    try:
        return parse_without_safety_net(raw, max_body_chars)
    except Exception as exc:  # a last resort: every known trap is handled inside
        return _unparseable(raw, f"unparseable: {type(exc).__name__}: {exc}"[:200])


def parse_without_safety_net(raw: bytes, max_body_chars: int = 200_000) -> Inbound:
    defects: list[str] = []
    try:
        msg = message_from_bytes(raw)
    except Exception as exc:  # the parser is tolerant; this is a last resort
        return _unparseable(raw, f"unparseable: {type(exc).__name__}")
    message_id = _first_id(_header(msg, "message-id"))
    sender = _sender(msg, defects)
    body, attachments = _body_and_attachments(msg, max_body_chars, defects)
    defects.extend(type(d).__name__ for d in msg.defects[:20])
    return Inbound(
        message_id=message_id,
        dedupe_key=message_id or _content_key(raw),
        sender=sender,
        to=_addresses(msg, "to", defects),
        cc=_addresses(msg, "cc", defects),
        delivered_to=tuple(a.addr for a in _addresses(msg, "delivered-to", defects)),
        reply_to=_addresses(msg, "reply-to", defects),
        subject=_header(msg, "subject"),
        date=_date(_header(msg, "date")),
        in_reply_to=tuple(_MSGID.findall(_header(msg, "in-reply-to")))[:10],
        references=tuple(_MSGID.findall(_header(msg, "references")))[-50:],
        body=body,
        attachments=attachments,
        embedded_ids=_embedded_ids(msg),
        auth_results=_auth_results(msg),
        headers={name: _header(msg, name) for name in (*LOOP_HEADERS, *ROUTING_HEADERS)
                 if name in msg}
        | _content_type_headers(msg),
        defects=tuple(defects),
        size=len(raw),
        from_count=_from_count(msg),
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


def _first_id(value: str) -> str:
    found = _MSGID.search(value)
    if found:
        return found.group(1)
    token = value.strip().split(" ")[0] if value.strip() else ""
    return token[:900]


def _raw_values(msg: Message, name: str) -> list[str]:
    """Header values as stored. compat32's get() turns undeclared 8-bit bytes into
    replacement characters (via an unknown-8bit Header); raw_items() keeps the bytes."""
    try:
        return [str(v) for k, v in msg.raw_items() if k.lower() == name]
    except Exception:
        return []


def _raw_header(msg: Message, name: str) -> str:
    values = _raw_values(msg, name)
    return values[0] if values else ""


def _auth_results(msg: Message) -> tuple[str, ...]:
    """The headers as the MTA wrote them, only unfolded, for authres.py's grammar. Never
    RFC 2047-decoded (an encoded word in a copied envelope sender would become structure)
    and never cut (a cut header could end in a pass); undeclared 8-bit bytes become U+FFFD."""
    values = _raw_values(msg, "authentication-results")[:10]
    return tuple(_UNDECLARED_8BIT.sub("\ufffd", _FOLD.sub("", v)) for v in values)


def _from_count(msg: Message) -> int:
    """How many addresses From: carries in all, usable or not (0 when none or unreadable)."""
    values = [_undo_surrogates(v)[: MAX_ADDRESSES * 200] for v in _raw_values(msg, "from")]
    try:
        pairs = getaddresses(values)
    except Exception:
        return 0
    return sum(1 for _, addr in pairs if addr.strip())


def _header(msg: Message, name: str) -> str:
    return decode_text(_raw_header(msg, name))


def decode_text(value: str) -> str:
    """Decode RFC 2047 words and raw 8-bit bytes into one clean line of text."""
    value = _undo_surrogates(value[: MAX_HEADER_CHARS * 4])
    try:
        pieces = decode_header(value)
    except Exception:
        pieces = [(value, None)]
    text = "".join(_decode_piece(data, charset) for data, charset in pieces)
    return _WHITESPACE.sub(" ", text).strip()[:MAX_HEADER_CHARS]


def _undo_surrogates(value: str) -> str:
    """compat32 smuggles undeclared 8-bit header bytes as surrogates; try UTF-8, then Latin-1."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        data = value.encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _decode_piece(data: bytes | str, charset: str | None) -> str:
    if isinstance(data, str):
        return data
    return decode_bytes(data, charset)


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode with the declared charset, then UTF-8, then Latin-1 (which always works)."""
    for candidate in (charset, "utf-8"):
        if not candidate or candidate.lower() in ("unknown-8bit", "x-unknown"):
            continue
        try:
            return data.decode(candidate)
        except (LookupError, ValueError):  # unknown name, bad bytes, NUL in the name
            continue
    return data.decode("latin-1")


def _addresses(msg: Message, name: str, defects: list[str]) -> tuple[Address, ...]:
    values = _raw_values(msg, name)
    raw_values = [_undo_surrogates(str(v))[: MAX_ADDRESSES * 200] for v in values]
    try:
        pairs = getaddresses(raw_values)
    except Exception:
        defects.append(f"unparseable {name} header")
        return ()
    found: dict[str, Address] = {}
    for display, addr in pairs[: MAX_ADDRESSES]:
        clean = clean_address(addr)
        if clean and clean not in found:
            found[clean] = Address(clean, decode_text(display))
    return tuple(found.values())


def clean_address(addr: str) -> str:
    """Lower-cased local@domain, or "" if addr is not a plausible address."""
    addr = addr.strip().strip("<>").lower()
    local, at, domain = addr.rpartition("@")
    if not at or not local or ("." not in domain and domain != "localhost"):
        return ""
    if any(c in addr for c in " \t\r\n\x00<>,;\"()") or len(addr) > 320:
        return ""
    return addr


def _sender(msg: Message, defects: list[str]) -> Address | None:
    """From, else the next best header that names who wrote or answers for the mail."""
    for name in ("from", "sender", "reply-to", "return-path"):
        found = _first_address(msg, name, defects)
        if found:
            if name != "from":
                defects.append(f"no usable From address; using {name}")
            return found
    return None


def _first_address(msg: Message, name: str, defects: list[str]) -> Address | None:
    found = _addresses(msg, name, defects)
    return found[0] if found else None


def _date(value: str) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


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


def _walk(msg: Message, defects: list[str]) -> list[Message]:
    """Leaf parts in order, iteratively (deep nesting must not hit the recursion limit)."""
    leaves: list[Message] = []
    stack: list[tuple[Message, int]] = [(msg, 0)]
    while stack and len(leaves) < MAX_PARTS:
        part, depth = stack.pop()
        try:
            payload = part.get_payload()
        except Exception:  # e.g. a charset parameter the codec machinery chokes on
            defects.append("unreadable part structure")
            continue
        if part.is_multipart() and isinstance(payload, list):
            if depth >= MAX_DEPTH:
                defects.append(f"multipart nesting deeper than {MAX_DEPTH}; inner parts ignored")
                continue
            stack.extend((p, depth + 1) for p in reversed(payload) if isinstance(p, Message))
        else:
            leaves.append(part)
    if stack:
        defects.append(f"more than {MAX_PARTS} parts; the rest ignored")
    return leaves


_HEADER_MSGID = re.compile(rb"^message-id:\s*<([^<>\s]{1,900})>", re.IGNORECASE | re.MULTILINE)


def _embedded_ids(msg: Message) -> tuple[str, ...]:
    """Message-IDs of messages carried inside this one: what a bounce or report is about."""
    found: list[str] = []
    stack, seen = [msg], 0
    while stack and seen < MAX_PARTS:
        part, seen = stack.pop(), seen + 1
        try:
            ctype = part.get_content_type()
            payload = part.get_payload()
            if ctype == "message/rfc822" and isinstance(payload, list) and payload:
                found.append(_first_id(_header(payload[0], "message-id")))
            elif ctype == "text/rfc822-headers":
                data = part.get_payload(decode=True) or b""
                found += [m.decode("ascii", "replace") for m in _HEADER_MSGID.findall(data)]
            elif part.is_multipart() and isinstance(payload, list):
                stack.extend(p for p in payload if isinstance(p, Message))
        except Exception:
            continue
    return tuple(dict.fromkeys(i for i in found if i))[:10]


def _body_and_attachments(msg: Message, max_chars: int,
                          defects: list[str]) -> tuple[str, tuple[Attachment, ...]]:
    plain: str | None = None
    html: str | None = None
    attachments: list[Attachment] = []
    for part in _walk(msg, defects):
        try:
            ctype = part.get_content_type()
            filename = _filename(part)
            disposition = (part.get("content-disposition") or "").split(";")[0].strip().lower()
            is_attachment = bool(filename) or disposition == "attachment"
            if ctype == "text/plain" and plain is None and not is_attachment:
                plain = _part_text(part)
            elif ctype == "text/html" and html is None and not is_attachment:
                html = _part_text(part)
            elif not ctype.startswith("multipart/"):
                data = part.get_payload(decode=True)
                size = len(data) if isinstance(data, bytes) else 0
                attachments.append(Attachment(filename or "unnamed", ctype, size))
        except Exception as exc:
            defects.append(f"unreadable part: {type(exc).__name__}")
    body = plain if plain is not None else html_to_text(html) if html else ""
    if len(body) > max_chars:
        defects.append(f"body longer than {max_chars} characters; cut")
        body = body[:max_chars]
    return body.replace("\r\n", "\n").replace("\x00", ""), tuple(attachments[:MAX_PARTS])


def _filename(part: Message) -> str:
    try:
        name = part.get_filename()
    except Exception:
        return ""
    return decode_text(name) if name else ""


def _part_text(part: Message) -> str:
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    return decode_bytes(data, charset)


class _TextExtractor(HTMLParser):
    BLOCK = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "table", "hr"})
    SKIP = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCK:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.skipping:
            self.skipping -= 1
        elif tag in self.BLOCK:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.chunks.append(data)


def html_to_text(html: str) -> str:
    extractor = _TextExtractor()
    try:
        extractor.feed(html)
        extractor.close()
    except Exception:
        return re.sub(r"<[^>]*>", " ", html)
    lines = (" ".join(line.split()) for line in "".join(extractor.chunks).splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
