"""RFC 2047 encoded words, decoded exactly as the RFC says (and as real clients need).

- Whitespace between two adjacent encoded words is dropped (RFC 2047 section 6.2); it is
  kept everywhere else, also between text and an encoded word across a fold. Python's own
  email library writes `Abrechnung im\\n =?utf-8?q?M=C3=A4rz?=`; email.header.decode_header
  reads it as "Abrechnung imMärz".
- Adjacent encoded words in the same charset are joined as bytes before decoding, so a
  multibyte character split over two words (encoders cut at a byte count) survives.
- Charset labels are read through charsets.py (the WHATWG table); raw 8-bit bytes outside
  encoded words (compat32 hands them over as surrogate escapes) are undeclared text.

Lenient where real mail is sloppy: words glued to text ("Re:=?utf-8?...") and words with
spaces inside are decoded too; a word whose payload cannot be decoded stays as written.
"""

from __future__ import annotations

import binascii
import re

from mailgate.core.mime import charsets

# charset (with an optional RFC 2231 *language), B or Q, encoded text without "?".
WORD = re.compile(r"=\?([^?\s]{1,80})\?([bBqQ])\?([^?]*)\?=")
_SURROGATE = re.compile("[\udc80-\udcff]")
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*")


def decode(value: str, defects: list[str] | None = None, *, what: str = "header",
           hint: str | None = None) -> str:
    """The text of a header value (folds and whitespace kept as they are)."""
    defects = defects if defects is not None else []
    if "=?" not in value:
        return plain(value, defects, what, hint)
    out: list[str] = []
    run: list[bytes] = []  # payloads of adjacent words in run_charset
    run_charset = ""
    pos = 0
    for match in WORD.finditer(value):
        between = value[pos:match.start()]
        payload = _payload(match.group(2), match.group(3))
        if payload is None:  # undecodable: the word is text as written
            defects.append(f"undecodable encoded word in {what}")
            continue
        charset = charsets.clean_label(match.group(1))
        after_word = bool(run)
        if between and not (after_word and between.isspace()):
            out.append(_flush(run, run_charset, defects, what))
            out.append(plain(between, defects, what, hint))
            run = []
        elif run and charset != run_charset:
            out.append(_flush(run, run_charset, defects, what))
            run = []
        run_charset = charset
        run.append(payload)
        pos = match.end()
    out.append(_flush(run, run_charset, defects, what))
    out.append(plain(value[pos:], defects, what, hint))
    return "".join(out)


def plain(text: str, defects: list[str], what: str = "header", hint: str | None = None) -> str:
    """Text outside encoded words: raw 8-bit bytes (surrogate escapes) become characters."""
    if text.isascii() or not _SURROGATE.search(text):
        return text
    data = text.encode("utf-8", "surrogateescape")
    return charsets.undeclared(data, defects, what=what, hint=hint).text


def _flush(run: list[bytes], charset: str, defects: list[str], what: str) -> str:
    if not run:
        return ""
    return charsets.decode(b"".join(run), charset, defects, what=what)


def _payload(encoding: str, text: str) -> bytes | None:
    raw = text.encode("utf-8", "surrogateescape")  # 8-bit bytes inside a word stay bytes
    if encoding in "qQ":
        return binascii.a2b_qp(raw, header=True)
    data = b"".join(raw.split()).rstrip(b"=")
    if not _BASE64.fullmatch(data):
        return None
    try:  # padding is often missing or wrong: add what the length needs
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return None
