"""What one leaf part holds, decoded: its bytes, its text, its file name.

The bytes as the transfer encoding gives them, also where the sender's encoding label is
sloppy or the base64 was cut short (payload_bytes); the text by the part's charset, or
for HTML the one its <meta> names, read through the WHATWG table (charsets.py), with
format=flowed paragraphs joined (flowed.py), uuencoded files taken out (uuencode.py) and
enriched text without its commands (enriched.py); line ends "\\n" whatever the sender
used. bodyparts.py decides which parts are read as body text; files.py uses the same
readings for the files it stores.
"""

from __future__ import annotations

import binascii
import mimetypes
import re
from email import errors, message_from_bytes
from email.message import Message

from mailgate.core.mime import charsets, enriched, flowed, rfc2047, uuencode
from mailgate.core.mime.headerfields import decode_text, raw_items
from mailgate.core.model import Attachment

# The CRs of a run that ends in LF (CRLF, and QP's "=0D" before a line end), from the run's
# first CR: see line_ends().
_CRS_BEFORE_LF = re.compile(r"(?<!\r)\r+(?=\n)")
# Possessive: "charset=" and 2,000 blanks backtracked through the two \s* around an
# absent quote in quadratic time, 80 ms an HTML part (50 s a MB of such parts).
_HTML_META_CHARSET = re.compile(rb"<meta[^>]{0,200}?charset\s*+=\s*+[\"']?\s*+([\w.:-]{1,40})",
                                re.IGNORECASE)


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
    for name, value in raw_items(part):
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

def guess_type(filename: str) -> str:
    return mimetypes.guess_type(filename, strict=False)[0] or "application/octet-stream"


def plain_text(part: Message, defects: list[str]) -> tuple[str, list[Attachment]]:
    """The text of a text/plain body part, and the files uuencoded inside it."""
    data, files = uuencode.split(_payload(part))
    text = charsets.decode(data, _charset(part), defects, what="body")
    if str(part.get_param("format") or "").lower() == "flowed":
        delsp = str(part.get_param("delsp") or "").lower() == "yes"
        text = flowed.unflow(line_ends(text), delsp)
    return text, [Attachment(f.filename, guess_type(f.filename), len(f.data)) for f in files]


def other_text(part: Message, ctype: str, defects: list[str]) -> str:
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


def html_text(part: Message, defects: list[str]) -> str:
    """The HTML source of a text/html part, by its charset or the one its <meta> names."""
    data = _payload(part)
    return charsets.decode(data, _html_charset(part, data), defects, what="body")
