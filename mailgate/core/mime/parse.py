"""bytes -> Inbound. Never raises: whatever cannot be understood becomes a defect.

The compat32 parser is used on purpose: policy.default is several times slower on whole
messages, and we decode only the few headers decisions need, ourselves, tolerantly:
charset labels through the WHATWG table (charsets.py), encoded words exactly by RFC 2047
(rfc2047.py), a damaged header block mended and parsed again (headerblock.py), header
values unfolded when fetched (_Unfolding). The body is the text a reader is shown: the
plain choice of each alternative, each part of a multipart/mixed in its place (Leaf). It
loses its inline uuencoded files (uuencode.py) to the attachments, winmail.dat gives up
the files and text inside it (tnef.py), format=flowed paragraphs are joined (flowed.py),
enriched text loses its commands (enriched.py) and line ends are "\\n" whatever the
sender used.
"""

from __future__ import annotations

import binascii
import hashlib
import mimetypes
import re
from dataclasses import dataclass, field
from datetime import datetime
from email import errors, message_from_bytes
from email.message import Message
from email.policy import Compat32
from email.utils import getaddresses, parsedate_to_datetime, unquote
from itertools import islice
from typing import NamedTuple

from mailgate.core.addresses import clean_address
from mailgate.core.headernames import (
    AUTOMATIC_HEADERS,
    LOOP_HEADERS,
    PINNING_FIELDS,
    ROUTING_HEADERS,
)
from mailgate.core.mime import (
    charsets,
    enriched,
    flowed,
    headerblock,
    rfc2047,
    smime,
    tnef,
    uuencode,
)
from mailgate.core.mime.htmlplain import html_to_text
from mailgate.core.model import Address, Attachment, Inbound

MAX_HEADER_CHARS = 4096  # a decoded header longer than this is cut: nobody reads further
MAX_ADDRESSES = 1000  # per header; mail to 10,000 recipients is still one request
MAX_PARTS = 500
MAX_DEPTH = 50
MAX_DEFECTS = 50
_MSGID = re.compile(r"<([^<>\s]{1,900})>")
_WHITESPACE = re.compile(r"[\s\x00]+")
_FOLD = re.compile(r"\r?\n(?=[ \t])")  # CRLF + WSP is the WSP (RFC 5322 unfolding)
# RFC 2045 5.1: type "/" subtype, then blanks and a parameter "name=" where the ";" should be.
# (Folded or not: parse() checks the message's own value as sent, for its defect.)
_PARAMETER_WITHOUT_SEMICOLON = re.compile(
    r"^([ \t]*[!#-'*+.0-9A-Z^-~-]+/[!#-'*+.0-9A-Z^-~-]+)[ \t\r\n]+"
    r"(?=[!#-'*+.0-9A-Z^-~-]+[ \t]*=)")
_UNDECLARED_8BIT = re.compile("[\udc80-\udcff]")  # compat32's surrogate-escaped raw bytes
# The CRs of a run that ends in LF (CRLF, and QP's "=0D" before a line end), from the run's
# first CR: see line_ends().
_CRS_BEFORE_LF = re.compile(r"(?<!\r)\r+(?=\n)")
_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")
# Possessive: "charset=" and 2,000 blanks backtracked through the two \s* around an
# absent quote in quadratic time, 80 ms an HTML part (50 s a MB of such parts).
_HTML_META_CHARSET = re.compile(rb"<meta[^>]{0,200}?charset\s*+=\s*+[\"']?\s*+([\w.:-]{1,40})",
                                re.IGNORECASE)


@dataclass
class _Reading:
    """One message being read: its headers indexed once, the defects found so far."""

    msg: Message
    defects: list[str]
    index: dict[str, list[str]] = field(default_factory=dict)  # lower-case name -> values
    hint: str | None = None  # the body's charset, for raw 8-bit bytes in headers
    pairs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # read addresses

    @classmethod
    def of(cls, msg: Message, defects: list[str], raw: bytes) -> _Reading:
        index: dict[str, list[str]] = {}
        for name, value in _raw_items(msg):
            index.setdefault(name.lower(), []).append(str(value))
        # Only raw 8-bit bytes need the hint: all-ASCII mail (most of it) skips the lookup.
        return cls(msg, defects, index, None if raw.isascii() else charset_hint(msg))

    def values(self, name: str) -> list[str]:
        return self.index.get(name, [])

    def header(self, name: str) -> str:
        values = self.index.get(name)
        if not values:
            return ""
        return decode_text(values[0], self.defects, hint=self.hint, what=f"{name} header")


def parse(raw: bytes, max_body_chars: int = 200_000) -> Inbound:
    try:
        return parse_without_safety_net(raw, max_body_chars)
    except Exception as exc:  # a last resort: every known trap is handled inside
        return _unparseable(raw, f"unparseable: {type(exc).__name__}: {exc}"[:200])


def parse_without_safety_net(raw: bytes, max_body_chars: int = 200_000) -> Inbound:
    defects: list[str] = []
    try:
        msg = read_message(raw, defects)
    except Exception as exc:  # the parser is tolerant; this is a last resort
        return _unparseable(raw, f"unparseable: {type(exc).__name__}")
    r = _Reading.of(msg, defects, raw)
    if _PARAMETER_WITHOUT_SEMICOLON.match(next(iter(r.values("content-type")), "")):
        defects.append("Content-Type without ';' before its parameters; mended")  # _Unfolding
    message_id = _first_id(r.header("message-id"))
    senders = _address_pairs(r, "from")
    body, attachments, part_types = _body_and_attachments(r, max_body_chars)
    auth_results, depths, sides, signatures, counts = _authentication(r, raw)
    defects.extend(type(d).__name__ for d in msg.defects[:20])
    return Inbound(
        message_id=message_id,
        dedupe_key=message_id or _content_key(raw),
        sender=_sender(r),
        to=_addresses(r, "to"),
        cc=_addresses(r, "cc"),
        delivered_to=tuple(a.addr for a in _addresses(r, "delivered-to")),
        reply_to=_addresses(r, "reply-to"),
        subject=r.header("subject"),
        date=_date(r.header("date")),
        in_reply_to=tuple(_MSGID.findall(r.header("in-reply-to")))[:10],
        references=tuple(_MSGID.findall(r.header("references")))[-50:],
        reply_ids=_reply_ids(r),
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
        from_count=_from_count(r, senders),
        raw_headers={name: tuple(_unfolded(v) for v in r.values(name)[:20])
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


# The last message read, by the identity of its bytes: processing a mail reads it for
# parse() and again for its attachments (storage/attachments.py extract), on the same bytes
# object. Bytes are immutable and nothing mutates a Message after reading, so the second
# reading can be the first one's result. One entry: it holds at most one mail a little
# longer (a large mail is read through its light view, which is small).
_last_read: tuple[bytes, Message, tuple[str, ...]] | None = None


def read_message(raw: bytes, defects: list[str]) -> Message:
    """compat32's reading; a header block it gave up on is mended and read again."""
    global _last_read
    last = _last_read  # one read of the global: another thread may replace it
    if last is not None and last[0] is raw:
        defects.extend(last[2])
        return last[1]
    found: list[str] = []
    msg = _read_message(raw, found)
    defects.extend(found)
    _last_read = (raw, msg, tuple(found))
    return msg


class _Unfolding(Compat32):
    """compat32, with a header's value unfolded when it is fetched (RFC 5322 2.2.3: the
    CRLF before a blank is removed, the blank stays). compat32 hands it over folded, and
    its parameter reading then keeps the line break inside a quoted value: a boundary that
    Outlook folded inside its quotes never matched the delimiter lines, and the whole mail
    was read as one text with the raw MIME in it. Only a folded value pays for the check
    of its line breaks; what is stored (raw_items(), as_bytes()) stays as it was sent.

    A Content-Type whose media type lost the ";" before its first parameter
    (`application/pdf name="x.pdf"`) gets it back: compat32 took the whole line for the
    type, so `text/plain charset=utf-8` was no text and its part an attachment."""

    def header_fetch_parse(self, name: str, value: str) -> str:  # type: ignore[override]
        # Called for every get(), so string methods, and a regex only where they fire.
        # Every line break compat32 keeps in a value begins a continuation line (one that
        # starts with a blank), so removing the breaks is exactly the unfolding.
        if not isinstance(value, str):
            return value
        if "\n" in value or "\r" in value:
            value = value.replace("\r\n", "").replace("\n", "").replace("\r", "")
        if len(name) == 12 and name.lower() == "content-type":
            media_type = value.partition(";")[0]
            if "(" in media_type or "/ " in media_type or " /" in media_type:
                value = _without_cfws(value)
                media_type = value.partition(";")[0]
            if " " in media_type.strip() or "\t" in media_type.strip():
                value = _PARAMETER_WITHOUT_SEMICOLON.sub(r"\1; ", value, count=1)
        if value.isascii():  # compat32's answer for a value without raw 8-bit bytes
            return value
        return Compat32.header_fetch_parse(self, name, value)  # type: ignore[return-value]


_UNFOLDING = _Unfolding()
_COMMENT = re.compile(r"\([^()]*\)")
_SLASH = re.compile(r"[ \t]*/[ \t]*")


def _without_cfws(value: str) -> str:
    """A Content-Type value with `text /plain`, `(a) text / (b) plain` as `text/plain`:
    RFC 2045's type "/" subtype are a structured field's tokens, and comments and blanks
    may stand between them (RFC 5322 3.2.2). compat32 kept them in the type, and a
    `text /plain` body read as no text. Only up to the first ";" or "=": a parameter
    that lost its ";" (`name="Invoice (1).pdf"`) keeps its value."""
    end = min((i for i in (value.find(";"), value.find("=")) if i >= 0), default=len(value))
    media_type = _without_comments(value[:end])
    return " " + _SLASH.sub("/", media_type.strip()) + value[end:]


def _without_comments(text: str) -> str:
    """RFC 5322 comments, each a blank (comments nest; five levels are more than mail
    uses). Only for structured values without quoted strings."""
    for _ in range(5):
        text, found = _COMMENT.subn(" ", text)
        if not found:
            break
    return text
_BOM = b"\xef\xbb\xbf"
_OBSOLETE_FIRST_FROM = re.compile(rb"From[ \t]+:")
# Mail that may hold an opaque-signed S/MIME part (smime.py): only it pays for the walk.
_MAYBE_SMIME = re.compile(rb"(?i)pkcs7-mime|\.p7m")
_HEADER_BLOCK_DAMAGE = (errors.MissingHeaderBodySeparatorDefect,
                        errors.FirstHeaderLineIsContinuationDefect)


def _read_message(raw: bytes, defects: list[str]) -> Message:
    if raw.startswith(_BOM):  # a mail saved by a Windows editor: the BOM hid the first field
        raw = raw[len(_BOM):]
        defects.append("byte-order mark before the header block skipped")
    if raw.startswith(b"From") and (obsolete := _OBSOLETE_FIRST_FROM.match(raw)):
        # RFC 5322 4.5 "From  :" is a field; compat32 took it for an mbox "From " line.
        raw = b"From:" + raw[obsolete.end():]
        defects.append("space before the colon of header 'From'")
    msg = message_from_bytes(raw, policy=_UNFOLDING)
    if any(isinstance(d, _HEADER_BLOCK_DAMAGE) for d in msg.defects):
        mended, repairs = headerblock.mend(raw)
        if repairs:
            defects.extend(repairs)
            raw, msg = mended, message_from_bytes(mended, policy=_UNFOLDING)
    if _MAYBE_SMIME.search(raw):
        smime.open_signed(msg, defects)
    return msg


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


def _raw_items(msg: Message) -> list[tuple[str, str]]:
    """Header values as stored. compat32's get() turns undeclared 8-bit bytes into
    replacement characters (via an unknown-8bit Header); raw_items() keeps the bytes."""
    try:
        return list(msg.raw_items())
    except Exception:
        return []


def _reply_ids(r: _Reading) -> tuple[str, ...]:
    """Inbound.reply_ids: each Message-ID once, In-Reply-To's first."""
    return tuple(dict.fromkeys(
        found for name in ("in-reply-to", "references") for value in r.values(name)
        for found in _MSGID.findall(_FOLD.sub("", value))))


def _unfolded(value: str) -> str:
    """A header as the sender wrote it, only unfolded; raw 8-bit bytes become U+FFFD."""
    return _UNDECLARED_8BIT.sub("\ufffd", _FOLD.sub("", value))


# A header field line as Postfix's is_header() reads one: a name, optional blanks, a colon
# (RFC 5322 4.5 obsolete syntax allows the blanks).
_MTA_FIELD = re.compile(rb"([!-9;-~]+)([ \t]*):")
MAX_MTA_HEADER_LINES = 10_000
MAX_SIGNATURES = 10


@dataclass(frozen=True, slots=True)
class _MtaField:
    name: bytes  # as written, before the blanks and the colon
    blanks: bool  # blanks before the colon
    value: bytes  # after the colon, continuation lines and their line ends included


def _fields_as_mta_reads(raw: bytes) -> list[_MtaField] | None:
    """The header fields as an MTA finds them, and so what strips forged ones (a
    header_checks rule, a milter) and the DKIM verifier see: lines ended by LF, fields
    and their continuations up to the first line that is neither (an empty line, or a line
    without a colon, where an MTA's body starts and headerblock.mend reads on). None past
    MAX_MTA_HEADER_LINES lines: not counted."""
    spans: list[tuple[re.Match[bytes], int]] = []  # each field's name line, and its end
    start = raw.index(b"\n") + 1 if raw.startswith(b"From ") and b"\n" in raw else 0
    for _ in range(MAX_MTA_HEADER_LINES):
        end = raw.find(b"\n", start)
        end = len(raw) if end < 0 else end + 1
        if spans and raw[start:start + 1] in (b" ", b"\t"):  # a continuation
            spans[-1] = (spans[-1][0], end)
        else:
            found = _MTA_FIELD.match(raw, start, end) if start < len(raw) else None
            if found is None:
                return [_MtaField(m.group(1), bool(m.group(2)), raw[m.end():stop])
                        for m, stop in spans]
            spans.append((found, end))
        start = end
    return None


def _authentication(r: _Reading, raw: bytes) -> tuple[
        tuple[str, ...], tuple[int, ...], tuple[tuple[int, int], ...], tuple[str, ...],
        dict[str, int]]:
    """The Authentication-Results headers as the MTA wrote them, only unfolded, for
    authres.py's grammar; with them what trust.py needs to see what a DKIM pass vouches
    for (Inbound.dkim_signatures, Inbound.field_counts).

    Never RFC 2047-decoded (an encoded word in a copied envelope sender would become
    structure) and never cut (a cut header could end in a pass). None at all when compat32
    found other fields than an MTA does: "X-Note: x<CR>Authentication-Results: ..."
    (compat32 ends a line at a CR alone, an MTA only at LF), "Authentication-Results :
    ..." or one below a line without a colon (both read after headerblock.mend) is a
    header no rule stripped, and one of ours to us. None either when a field RFC 5322
    allows once is there twice: which one did the verifier check?"""
    values = r.values("authentication-results")
    if not values or _repeated_once_only_field(r):
        return (), (), (), (), {}
    fields = _fields_as_mta_reads(raw)
    if fields is None or len(values) != sum(
            f.name.lower() == b"authentication-results" and not f.blanks for f in fields):
        return (), (), (), (), {}
    signatures = tuple(islice((_field_text(f.value) for f in fields  # only those kept
                               if f.name.lower() == b"dkim-signature" and not f.blanks),
                              MAX_SIGNATURES))
    return (tuple(_unfolded(v) for v in values[:10]), _depths(fields)[:10],
            _sides(fields), signatures, _field_counts(r, fields))


def _depths(fields: list[_MtaField]) -> tuple[int, ...]:
    """For each Authentication-Results field, the Received fields above it."""
    depths, received = [], 0
    for f in fields:
        name = f.name.lower()
        if name == b"received":
            received += 1
        elif name == b"authentication-results" and not f.blanks:
            depths.append(received)
    return tuple(depths)


def _sides(fields: list[_MtaField]) -> tuple[tuple[int, int], ...]:
    """For each Authentication-Results field, how many of the fields its sender writes
    (From, Date, Subject ...: RFC 5322 3.6 but trace) lie above it, and below it."""
    senders = frozenset(name.encode() for name in _ONCE_ONLY_FIELDS)
    written = [f.name.lower() in senders for f in fields]
    total, above, sides = sum(written), 0, []
    for f, by_sender in zip(fields, written, strict=True):
        above += by_sender
        if f.name.lower() == b"authentication-results" and not f.blanks:
            sides.append((above, total - above))
    return tuple(sides)


def _field_counts(r: _Reading, fields: list[_MtaField]) -> dict[str, int]:
    """Instances of each pinning field and of DKIM-Signature, as the MTA reads the header;
    -1 where one is written with blanks before its colon (does the verifier take it for
    that field?) or, for a pinning field, where compat32 counts otherwise (mailgate reads
    another field than the verifier checked)."""
    counts = dict.fromkeys((*PINNING_FIELDS, "dkim-signature"), 0)
    for f in fields:
        name = f.name.lower().decode("ascii")
        if name in counts and counts[name] >= 0:
            counts[name] = -1 if f.blanks else counts[name] + 1
    for name in PINNING_FIELDS:
        if counts[name] != len(r.values(name)):
            counts[name] = -1
    return counts


def _field_text(value: bytes) -> str:
    """A field's value as text, unfolded; bytes that are not ASCII become U+FFFD."""
    text = value.decode("ascii", "replace")
    return _FOLD.sub("", text.removesuffix("\n").removesuffix("\r"))


# RFC 5322 section 3.6: at most one of each. DKIM signs the last instance of a field, we
# read the first: a copy of a signed mail with "Subject: [IT-1002]" put above its signed
# Subject still passes DKIM, and would run its commands on another ticket.
_ONCE_ONLY_FIELDS = ("date", "from", "sender", "reply-to", "to", "cc", "message-id",
                     "in-reply-to", "references", "subject")


def _repeated_once_only_field(r: _Reading) -> bool:
    return any(len(r.values(name)) > 1 for name in _ONCE_ONLY_FIELDS)


def decode_text(value: str, defects: list[str] | None = None, *, hint: str | None = None,
                what: str = "header") -> str:
    """Decode RFC 2047 words and raw 8-bit bytes into one clean line of text."""
    text = rfc2047.decode(value[: MAX_HEADER_CHARS * 4], defects, what=what, hint=hint)
    return _WHITESPACE.sub(" ", text).strip()[:MAX_HEADER_CHARS]


def _address_pairs(r: _Reading, name: str) -> list[tuple[str, str]]:
    """(display name, address) pairs of a header, display names decoded.

    Encoded words are set aside before the address grammar runs and decoded after it:
    decoded, "=?utf-8?q?Doe=2C_John?=" would be two addresses. Quoted or not, they are
    decoded (RFC 2047 forbids them in quoted strings; mailers put them there anyway)."""
    if name not in r.pairs:
        r.pairs[name] = _read_addresses(r, name)
    return r.pairs[name]


def _read_addresses(r: _Reading, name: str) -> list[tuple[str, str]]:
    words: list[str] = []

    def set_aside(match: re.Match[str]) -> str:
        words.append(match.group(0))
        return f"\ue000{len(words) - 1}\ue001"

    def restore(text: str) -> str:
        return _PLACEHOLDER.sub(lambda m: words[int(m.group(1))], text) if words else text

    what = f"{name} header"
    # Unfolded first (RFC 5322 2.2.3): folding may fall inside a quoted display name
    # ("Doe,\r\n John" <a@b.com>, FWS is allowed there), and getaddresses() reads a
    # line break inside quotes as the end of the address: the sender was lost.
    values = [rfc2047.plain(rfc2047.WORD.sub(set_aside, _unfold(v[: MAX_ADDRESSES * 200])),
                            r.defects, what, r.hint) for v in r.values(name)]
    try:
        pairs = getaddresses(values)
    except Exception:
        r.defects.append(f"unparseable {name} header")
        return []
    return [(decode_text(restore(display), r.defects, hint=r.hint, what=what), restore(addr))
            for display, addr in map(_bare_address, pairs[:MAX_ADDRESSES])]


def _unfold(value: str) -> str:
    """A raw header value on one line: CRLF before a blank removed, any other line break
    (a mended continuation) a blank."""
    return _LINE_BREAK.sub(" ", _FOLD.sub("", value))


_LINE_BREAK = re.compile(r"[\r\n]+")


def _bare_address(pair: tuple[str, str]) -> tuple[str, str]:
    """`Big Bug bb@bug.com` (no angle brackets; old scripts write it) reads as one address
    of four words: when the last word is the only one with an "@", it is the address and
    the words before it the name. Anything else stays as read (and unusable)."""
    display, addr = pair
    if display or " " not in addr.strip():
        return pair
    *name, last = addr.split()
    if "@" not in last or any("@" in word for word in name):
        return pair
    return unquote(" ".join(name)), last


def _addresses(r: _Reading, name: str) -> tuple[Address, ...]:
    found: dict[str, Address] = {}
    for display, addr in _address_pairs(r, name):
        clean = clean_address(addr)
        if clean and clean not in found:
            found[clean] = Address(clean, display)
    return tuple(found.values())


def _from_count(r: _Reading, senders: list[tuple[str, str]]) -> int:
    """Addresses in From:, usable or not, and at least one per From: field; 0 when none
    is usable. The sender is then another header's (_sender), and "From: ann" or
    "From: ann@example.com@evil.test" above a "Sender: ann@example.com" must not make that
    header's address the single From: that a DMARC, DKIM or SPF pass is about. A second,
    empty From: field is still a second author to a DKIM verifier (it signs the last one)."""
    if not _addresses(r, "from"):
        return 0
    return max(sum(1 for _, addr in senders if addr.strip()), len(r.values("from")))


def _sender(r: _Reading) -> Address | None:
    """From, else the next best header that names who wrote or answers for the mail."""
    for name in ("from", "sender", "reply-to", "return-path"):
        found = _addresses(r, name)
        if found:
            if name != "from":
                r.defects.append(f"no usable From address; using {name}")
            return found[0]
    return None


def _date(value: str) -> datetime | None:
    if not value:
        return None
    if "(" in value:  # RFC 5322 3.3: comments may stand between the date's tokens
        value = _without_comments(value)
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


def charset_hint(msg: Message) -> str | None:
    """The charset of the message's first text: what raw 8-bit header bytes most likely
    use too (the same program wrote both)."""
    part = msg
    for _ in range(10):
        try:
            payload = part.get_payload()
            if not (part.is_multipart() and isinstance(payload, list) and payload):
                return part.get_content_charset()
        except Exception:
            return None
        part = payload[0]
    return None


class Leaf(NamedTuple):
    """A leaf part and where it sits. RFC 2046 5.1.3: a multipart/mixed's parts are shown
    one after the other, so each gives its text to the body (a gateway's banner, then the
    request; a request, then a list's footer), unless the mixed is itself only one of the
    choices of a multipart/alternative (Apple Mail's HTML: text, picture, text).

    `parent`: the parent's content type ("" for the message itself). `free`: no
    multipart/alternative above the parent but through the choice whose text is read
    (_plain_choice), so the parent is shown whole. `group`: for a
    leaf of a multipart/alternative or multipart/related that sits in a free
    multipart/mixed, a number naming that container (0 otherwise): it gives one text."""

    part: Message
    parent: str
    group: int = 0
    free: bool = True


def _walk(msg: Message, defects: list[str], types: list[str]) -> list[Leaf]:
    """Leaf parts in order (see Leaf), iteratively (deep nesting must not hit the
    recursion limit); `types` gets the content type of every part met, containers too."""
    leaves: list[Leaf] = []
    stack: list[tuple[Message, int, str, int, bool]] = [(msg, 0, "", 0, True)]
    while stack and len(leaves) < MAX_PARTS:
        part, depth, parent, group, free = stack.pop()
        try:
            ctype = part.get_content_type()
            types.append(ctype)
            payload = part.get_payload()
        except Exception:  # e.g. a charset parameter the codec machinery chokes on
            defects.append("unreadable part structure")
            continue
        # An attached message (message/rfc822, a delivery-status block) is one attachment:
        # its text is not this message's text, and it is stored whole.
        if part.is_multipart() and isinstance(payload, list) and not ctype.startswith("message/"):
            if depth >= MAX_DEPTH:
                defects.append(f"multipart nesting deeper than {MAX_DEPTH}; inner parts ignored")
                continue
            inner = (len(types) if ctype in _GROUPS and parent == _MIXED and free
                     else 0)  # a number of its own
            children = shown_children(ctype, payload)
            chosen = _plain_choice(children) if ctype == _ALTERNATIVE else None
            stack.extend((p, depth + 1, ctype, inner,
                          free and (ctype != _ALTERNATIVE or p is chosen))
                         for p in reversed(children))
        else:
            leaves.append(Leaf(part, parent, group, free))
    if stack:
        defects.append(f"more than {MAX_PARTS} parts; the rest ignored")
    return leaves


def shown_children(ctype: str, payload: list) -> list[Message]:
    """The parts of a multipart a mail client shows. A multipart/appledouble (RFC 1740) is
    a Mac file's Finder data and resource fork (application/applefile) and its data fork:
    only the data fork is the file; the other, under the same name, is no attachment."""
    children = [p for p in payload if isinstance(p, Message)]
    if ctype != _APPLEDOUBLE:
        return children
    forks = [p for p in children if p.get_content_type() != "application/applefile"]
    return forks or children


def _plain_choice(choices: list[Message]) -> Message | None:
    """The choice of a multipart/alternative whose text is read, when it is a multipart:
    the first choice that holds plain body text (RFC 8621 4.1.4's example: text, a
    picture, more text in a multipart/mixed beside the HTML). It is shown whole, so it
    stays free (see Leaf); a single text/plain choice needs no such mark."""
    for choice in choices:
        try:
            if not choice.is_multipart():
                if _plain(choice, choice.get_content_type()):
                    return None
                continue
            if _holds_plain_text(choice):
                return choice
        except Exception:  # an unreadable choice is not the one read
            continue
    return None


def _holds_plain_text(container: Message) -> bool:
    """Whether a multipart holds an unnamed inline text/plain leaf, not counting those
    inside attached messages (their text is not this message's)."""
    stack, seen = [container], 0
    while stack and seen < MAX_PARTS:
        part, seen = stack.pop(), seen + 1
        ctype = part.get_content_type()
        payload = part.get_payload()
        if ctype.startswith("message/"):
            continue
        if isinstance(payload, list):
            stack.extend(p for p in payload if isinstance(p, Message))
        elif _plain(part, ctype) and _disposition(part) != "attachment" and not part_filename(
                part):
            return True
    return False


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
                found.append(_first_id(decode_text(str(payload[0].get("message-id") or ""))))
            elif ctype == "text/rfc822-headers":
                data = part.get_payload(decode=True) or b""
                found += [m.decode("ascii", "replace") for m in _HEADER_MSGID.findall(data)]
            elif part.is_multipart() and isinstance(payload, list):
                stack.extend(p for p in payload if isinstance(p, Message))
        except Exception:
            continue
    return tuple(dict.fromkeys(i for i in found if i))[:10]


def _body_and_attachments(r: _Reading, max_chars: int
                          ) -> tuple[str, tuple[Attachment, ...], tuple[str, ...]]:
    texts: list[str] = []  # the plain body, "\n\n".join(texts): see _join_into
    html: str | None = None
    fallback: str | None = None  # text a client shows although it is no proper body part
    attachments: list[Attachment] = []
    types: list[str] = []
    shown: set[int] = set()  # the groups (see Leaf) whose text is in the body
    for part, parent, group, free in _walk(r.msg, r.defects, types):
        try:
            ctype = part.get_content_type()
            filename = part_filename(part, r.defects, r.hint)
            inline = _disposition(part) != "attachment"
            if _plain(part, ctype) and inline and not filename and _body_text(
                    bool(texts), parent, group, free, shown):
                # Text, an inline picture, more text (Apple Mail, phones): one body.
                text, files = _plain_text(part, r.defects)
                _join_into(texts, text)
                attachments += files
            elif ctype == "text/html" and inline and not filename and _html_shown(
                    parent, group, free, shown):
                # Shown in sequence like a plain part (an HTML request, then a list's
                # plain footer): its text joins the body in its place.
                source = _html_text(part, r.defects)
                _join_into(texts, html_to_text(source))
                html = source if html is None else html
            elif ctype == "text/html" and inline and not filename and (
                    html is None or group in shown):  # else the plain text's HTML twin
                html = _html_text(part, r.defects) if html is None else html
            else:
                if _plain(part, ctype) and fallback is None and inline:
                    fallback, _ = _plain_text(part, r.defects)  # named, shown inline
                elif ctype == "text/html" and fallback is None and inline:
                    fallback = html_to_text(_html_text(part, r.defects))  # likewise
                elif _shown_as_text(ctype) and fallback is None and inline and not filename:
                    fallback = _other_text(part, ctype, r.defects)
                found, text = _attachments(part, ctype, filename, r.defects)
                attachments += found
                fallback = fallback or text  # e.g. the text inside a winmail.dat
        except Exception as exc:
            r.defects.append(f"unreadable part: {type(exc).__name__}")
    plain = "\n\n".join(texts) if texts else None
    # Plain text first; an empty plain part beside real HTML, or beside text shown
    # otherwise (a winmail.dat's, a named inline text), is no text.
    if plain is not None and (plain.strip() or not (html or fallback)):
        body = plain
    else:
        body = html_to_text(html) if html else fallback or ""  # converted only if read
    body = line_ends(body).replace("\x00", "")
    if len(body) > max_chars:
        r.defects.append(f"body longer than {max_chars} characters; cut")
        body = body[:max_chars]
    return body, tuple(attachments[:MAX_PARTS]), tuple(types)


def _plain(part: Message, ctype: str) -> bool:
    """Whether a leaf is read as text/plain: it is one, or it is a multipart whose
    boundary never comes (no delimiter line: its content is plain text, what mail
    programs show; flanker's false-multipart.eml, mime4j's missing-inner-boundary.msg)."""
    return ctype == "text/plain" or (ctype.startswith("multipart/")
                                     and isinstance(part.get_payload(), str))


def leaf_parts(msg: Message) -> list[Leaf]:
    """Leaf parts in order (see Leaf), within the bounds parse() reads (MAX_PARTS,
    MAX_DEPTH)."""
    return _walk(msg, [], [])


def _body_text(have_text: bool, parent: str, group: int, free: bool,
               shown: set[int]) -> bool:
    """Whether an unnamed inline text/plain leaf is body text: the first one; each one in
    a free multipart/mixed; the first one of each alternative or related part shown in
    one (`shown` collects those; see Leaf)."""
    if group and group not in shown:
        shown.add(group)
        return True
    return not have_text or (parent == _MIXED and free)


def _html_shown(parent: str, group: int, free: bool, shown: set[int]) -> bool:
    """Whether an unnamed inline text/html leaf is shown in sequence in a free
    multipart/mixed (see Leaf): a part of it, or the first text of a multipart/related in
    it (the related's root, its pictures beside it). An HTML alternative is not: the
    plain one is read."""
    if parent == _MIXED and free:
        return True
    if group and parent == _RELATED and group not in shown:
        shown.add(group)
        return True
    return False


def body_parts(leaves: list[Leaf]) -> list[Message]:
    """The text/plain parts (of leaf_parts()) the body text comes from, in order, by
    parse()'s rule (_body_text); attachments.py takes the uuencoded files from these and
    stores the other parts."""
    found: list[Message] = []
    shown: set[int] = set()
    for part, parent, group, free in leaves:
        try:
            if (_plain(part, part.get_content_type()) and _disposition(part) != "attachment"
                    and not part_filename(part)
                    and _body_text(bool(found), parent, group, free, shown)):
                found.append(part)
        except Exception:
            continue
    return found


def _join_into(texts: list[str], more: str) -> None:
    """Add `more` to the text "\\n\\n".join(texts): the text so far without its trailing
    blanks, a blank line, `more` without its leading ones; `more` alone while the text so
    far is blank. In pieces, joined once: a text joined part by part was copied again for
    each part (500 parts of 100 kB took 8 s). texts[0] is blank only when it is alone."""
    if not texts or _blank(texts[0]):
        texts[:] = [more]
        return
    while _blank(texts[-1]):  # blank pieces at the end go, as in rstrip()
        texts.pop()
    texts[-1] = texts[-1].rstrip()
    texts.append(more.lstrip())


def _blank(text: str) -> bool:
    """text.strip() == "", without copying the text."""
    return not text or text.isspace()


def _disposition(part: Message) -> str:
    return str(part.get("content-disposition") or "").split(";")[0].strip().lower()


def part_filename(part: Message, defects: list[str] | None = None,
                  hint: str | None = None) -> str:
    """The part's file name: RFC 2231 (compat32) and RFC 2047 (us) decoded; "" if none."""
    try:
        name = part.get_filename()
        if name and "\ufffd" in name:  # compat32 replaced raw 8-bit bytes: read them
            name = _filename_from_raw(part, defects, hint) or name
    except Exception:
        return ""
    if not name:
        return ""
    name = decode_text(str(name), defects, hint=hint, what="file name")
    # A name is a name, never a path: "../../x" and "C:\\TEMP\\x.png" keep their last part.
    return name.replace("\\", "/").rsplit("/", 1)[-1].strip()


def _filename_from_raw(part: Message, defects: list[str] | None,
                       hint: str | None) -> str | None:
    """get_filename() over the raw headers with their 8-bit bytes decoded first."""
    decoded = Message()
    for name, value in _raw_items(part):
        if name.lower() in ("content-disposition", "content-type"):
            decoded[name] = rfc2047.plain(str(value), defects or [], "file name", hint)
    return decoded.get_filename()


def payload_bytes(part: Message) -> bytes | None:
    """The decoded content of a leaf part; None for an attached message (message/*).

    compat32 compares Content-Transfer-Encoding exactly, so "quoted-printable " with a
    trailing space went undecoded: such a payload is decoded under the clean value, by a
    copy of the part (the part stays as read: read_message hands one Message to several
    readers)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return None
    cte = str(part.get("content-transfer-encoding") or "")
    clean = cte.strip().lower()
    if clean != cte and clean in ("quoted-printable", "base64", "7bit", "8bit", "binary"):
        # A private copy read from the part's own bytes: get_payload() of the part would
        # hand 8-bit text over already decoded, and compat32 then re-encodes it as
        # raw-unicode-escape ("\\u265a") instead of the bytes that were sent.
        stand_in = message_from_bytes(part.as_bytes())
        stand_in.replace_header("content-transfer-encoding", clean)
        part = stand_in
    data = part.get_payload(decode=True)
    if isinstance(data, bytes) and any(isinstance(d, errors.InvalidBase64LengthDefect)
                                       for d in part.defects):
        data = _whole_base64_groups(data)
    return data if isinstance(data, bytes) else b""


_LINE_ENDS = re.compile(rb"[\r\n]+")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=]")


def _whole_base64_groups(encoded: bytes) -> bytes:
    """Base64 one character over whole groups of four (a mail cut short): the stdlib then
    hands back the encoded text itself, so a cut text part read as base64 letters and a
    cut file was stored as them. The whole groups decode; the lone character carries 6
    bits, no whole byte (RFC 2045 6.8), and goes, as largemail._b64 drops it. Text that
    is no base64 at all (words labelled base64: blanks inside its lines) stays as the
    stdlib hands it back."""
    letters = _LINE_ENDS.sub(b"", encoded)
    if _NOT_BASE64.search(letters):
        return encoded
    try:
        return binascii.a2b_base64(letters[: len(letters) - len(letters) % 4])
    except binascii.Error:
        return encoded


def _payload(part: Message) -> bytes:
    return payload_bytes(part) or b""


def _size(part: Message) -> int:
    """Bytes of a leaf's content; of an attached message, its encoded content summed
    (serialising it again just to count would cost more than parsing it did)."""
    data = payload_bytes(part)
    if data is not None:
        return len(data)
    total = 0
    for inner in islice(part.walk(), MAX_PARTS):  # stops early, lists nothing
        payload = inner.get_payload()
        total += len(payload) if isinstance(payload, str) else 0
    return total


def _attachments(part: Message, ctype: str, filename: str,
                 defects: list[str]) -> tuple[list[Attachment], str | None]:
    """One attachment, or the files a winmail.dat carries; and the text a winmail.dat
    carries (None if none)."""
    if tnef.is_tnef(ctype, filename):
        inside = tnef.read(_payload(part))
        if inside is None:
            defects.append("winmail.dat (TNEF) could not be read; kept as it is")
        else:
            text = inside.text.strip() or html_to_text(inside.html) or None
            if inside.files:
                return [Attachment(f.filename, guess_type(f.filename), len(f.data))
                        for f in inside.files], text
            return [Attachment(filename or "unnamed", ctype, _size(part))], text
    return [Attachment(filename or "unnamed", ctype, _size(part))], None


def guess_type(filename: str) -> str:
    return mimetypes.guess_type(filename, strict=False)[0] or "application/octet-stream"


def _plain_text(part: Message, defects: list[str]) -> tuple[str, list[Attachment]]:
    """The text of a text/plain body part, and the files uuencoded inside it."""
    data, files = uuencode.split(_payload(part))
    text = charsets.decode(data, _charset(part), defects, what="body")
    if str(part.get_param("format") or "").lower() == "flowed":
        delsp = str(part.get_param("delsp") or "").lower() == "yes"
        text = flowed.unflow(line_ends(text), delsp)
    return text, [Attachment(f.filename, guess_type(f.filename), len(f.data)) for f in files]


_MIXED = "multipart/mixed"
_RELATED = "multipart/related"
_ALTERNATIVE = "multipart/alternative"
_APPLEDOUBLE = "multipart/appledouble"
_GROUPS = (_ALTERNATIVE, _RELATED)  # containers whose text Leaf.group tracks
# Text subtypes that are data for a program rather than text for a reader.
_NOT_SHOWN_AS_TEXT = frozenset({"text/calendar", "text/rfc822-headers", "text/vcard",
                                "text/x-vcard", "text/directory", "text/x-vcalendar"})


def _shown_as_text(ctype: str) -> bool:
    """RFC 2046 4.1.4: an unrecognised subtype of text is treated as text/plain (HTML has
    its own reading; calendars, cards and header blocks are no one's message text)."""
    return (ctype.startswith("text/") and ctype not in ("text/plain", "text/html")
            and ctype not in _NOT_SHOWN_AS_TEXT)


def _other_text(part: Message, ctype: str, defects: list[str]) -> str:
    """The text of a text/* part that is neither plain nor HTML (text/markdown ...);
    enriched and richtext without their formatting commands."""
    text = charsets.decode(_payload(part), _charset(part), defects, what="body")
    if ctype in ("text/enriched", "text/richtext"):
        return enriched.to_text(text, richtext=ctype == "text/richtext")
    return text


def line_ends(text: str) -> str:
    """Every line end as "\\n": a run of CRs that ends in LF is one line end (CRLF, and
    QP's "=0D" before a line end), every other CR is one. The obvious regex for that,
    `\\r+\\n|\\r`, is quadratic: on a run of CRs without LF it tries the whole rest of the
    run from each CR again (125 kB of CRs took 13 s). The lookbehind starts the search
    only at a run's first CR, so each run is looked at once."""
    return _CRS_BEFORE_LF.sub("", text).replace("\r", "\n")


def _charset(part: Message) -> str | None:
    try:
        return part.get_content_charset()
    except Exception:
        return None


def _html_charset(part: Message, data: bytes) -> str | None:
    """The part's charset, else the one its <meta> names (what a browser would use)."""
    label = _charset(part)
    if label:
        return label
    meta = _HTML_META_CHARSET.search(data[:2048])
    return meta.group(1).decode("ascii") if meta else None


def _html_text(part: Message, defects: list[str]) -> str:
    data = _payload(part)
    return charsets.decode(data, _html_charset(part, data), defects, what="body")
