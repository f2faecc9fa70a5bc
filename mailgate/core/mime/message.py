"""bytes -> a compat32 Message, the one reading that parse(), files.extract() and
outbound/compose.py's relay_parts share (read_message keeps the last one).

The compat32 parser is used on purpose: policy.default is several times slower on whole
messages, and only the few headers decisions need are decoded (headerfields.py). Here the
reading is made to hold: header values unfolded when fetched (_Unfolding), a damaged header
block mended and read again (headerblock.py), a byte-order mark or an obsolete "From  :"
first field read as the sender meant, an opaque-signed S/MIME part opened (smime.py).
"""

from __future__ import annotations

import re
from email import errors, message_from_bytes
from email.message import Message
from email.policy import Compat32

from mailgate.core.mime import headerblock, smime

# RFC 2045 5.1: type "/" subtype, then blanks and a parameter "name=" where the ";" should be.
# (Folded or not: parse() checks the message's own value as sent, for its defect.)
PARAMETER_WITHOUT_SEMICOLON = re.compile(
    r"^([ \t]*[!#-'*+.0-9A-Z^-~-]+/[!#-'*+.0-9A-Z^-~-]+)[ \t\r\n]+"
    r"(?=[!#-'*+.0-9A-Z^-~-]+[ \t]*=)")


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
                value = PARAMETER_WITHOUT_SEMICOLON.sub(r"\1; ", value, count=1)
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
    media_type = without_comments(value[:end])
    return " " + _SLASH.sub("/", media_type.strip()) + value[end:]


def without_comments(text: str) -> str:
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
