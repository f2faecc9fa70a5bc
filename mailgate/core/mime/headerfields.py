"""The header fields mailgate reads from a Message: subject, addresses, message IDs, dates.

Decoded here, ourselves and tolerantly: encoded words exactly by RFC 2047 (rfc2047.py),
raw 8-bit bytes through the charset the body declares (charset_hint), addresses read by
their grammar before anything is decoded. Reading indexes one message's header block once
for the other readers (mtafields.py, bodyparts.py, parse.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime, unquote

from mailgate.core.addresses import clean_address
from mailgate.core.mime import rfc2047
from mailgate.core.mime.message import without_comments
from mailgate.core.model import Address

MAX_HEADER_CHARS = 4096  # a decoded header longer than this is cut: nobody reads further
MAX_ADDRESSES = 1000  # per header; mail to 10,000 recipients is still one request
MSGID = re.compile(r"<([^<>\s]{1,900})>")
_WHITESPACE = re.compile(r"[\s\x00]+")
FOLD = re.compile(r"\r?\n(?=[ \t])")  # CRLF + WSP is the WSP (RFC 5322 unfolding)
_UNDECLARED_8BIT = re.compile("[\udc80-\udcff]")  # compat32's surrogate-escaped raw bytes
_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")


@dataclass
class Reading:
    """One message being read: its headers indexed once, the defects found so far."""

    msg: Message
    defects: list[str]
    index: dict[str, list[str]] = field(default_factory=dict)  # lower-case name -> values
    hint: str | None = None  # the body's charset, for raw 8-bit bytes in headers
    pairs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # read addresses

    @classmethod
    def of(cls, msg: Message, defects: list[str], raw: bytes) -> Reading:
        index: dict[str, list[str]] = {}
        for name, value in raw_items(msg):
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


def first_id(value: str) -> str:
    """The Message-ID in a header value: the first <...>, else its first word."""
    found = MSGID.search(value)
    if found:
        return found.group(1)
    token = value.strip().split(" ")[0] if value.strip() else ""
    return token[:900]


def raw_items(msg: Message) -> list[tuple[str, str]]:
    """Header values as stored. compat32's get() turns undeclared 8-bit bytes into
    replacement characters (via an unknown-8bit Header); raw_items() keeps the bytes."""
    try:
        return list(msg.raw_items())
    except Exception:
        return []


def reply_ids(r: Reading) -> tuple[str, ...]:
    """Inbound.reply_ids: each Message-ID once, In-Reply-To's first."""
    return tuple(dict.fromkeys(
        found for name in ("in-reply-to", "references") for value in r.values(name)
        for found in MSGID.findall(FOLD.sub("", value))))


def unfolded(value: str) -> str:
    """A header as the sender wrote it, only unfolded; raw 8-bit bytes become U+FFFD."""
    return _UNDECLARED_8BIT.sub("\ufffd", FOLD.sub("", value))


def decode_text(value: str, defects: list[str] | None = None, *, hint: str | None = None,
                what: str = "header") -> str:
    """Decode RFC 2047 words and raw 8-bit bytes into one clean line of text."""
    text = rfc2047.decode(value[: MAX_HEADER_CHARS * 4], defects, what=what, hint=hint)
    return _WHITESPACE.sub(" ", text).strip()[:MAX_HEADER_CHARS]


def address_pairs(r: Reading, name: str) -> list[tuple[str, str]]:
    """(display name, address) pairs of a header, display names decoded.

    Encoded words are set aside before the address grammar runs and decoded after it:
    decoded, "=?utf-8?q?Doe=2C_John?=" would be two addresses. Quoted or not, they are
    decoded (RFC 2047 forbids them in quoted strings; mailers put them there anyway)."""
    if name not in r.pairs:
        r.pairs[name] = _read_addresses(r, name)
    return r.pairs[name]


def _read_addresses(r: Reading, name: str) -> list[tuple[str, str]]:
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
    return _LINE_BREAK.sub(" ", FOLD.sub("", value))


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


def addresses(r: Reading, name: str) -> tuple[Address, ...]:
    """The usable addresses of a header, each once, with its display name."""
    found: dict[str, Address] = {}
    for display, addr in address_pairs(r, name):
        clean = clean_address(addr)
        if clean and clean not in found:
            found[clean] = Address(clean, display)
    return tuple(found.values())


def from_count(r: Reading, senders: list[tuple[str, str]]) -> int:
    """Addresses in From:, usable or not, and at least one per From: field; 0 when none
    is usable. The sender is then another header's (sender), and "From: ann" or
    "From: ann@example.com@evil.test" above a "Sender: ann@example.com" must not make that
    header's address the single From: that a DMARC, DKIM or SPF pass is about. A second,
    empty From: field is still a second author to a DKIM verifier (it signs the last one)."""
    if not addresses(r, "from"):
        return 0
    return max(sum(1 for _, addr in senders if addr.strip()), len(r.values("from")))


def sender(r: Reading) -> Address | None:
    """From, else the next best header that names who wrote or answers for the mail."""
    for name in ("from", "sender", "reply-to", "return-path"):
        found = addresses(r, name)
        if found:
            if name != "from":
                r.defects.append(f"no usable From address; using {name}")
            return found[0]
    return None


def date(value: str) -> datetime | None:
    """A Date header's time; None when it is absent or cannot be read."""
    if not value:
        return None
    if "(" in value:  # RFC 5322 3.3: comments may stand between the date's tokens
        value = without_comments(value)
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


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
