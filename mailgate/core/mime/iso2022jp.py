"""ISO-2022-JP as the WHATWG Encoding Standard decodes it (browsers, and the mail programs
built on their tables): its two-byte characters through index-jis0208, which is the table
of Windows-31J (cp932), so the NEC row 13 (①, №, ㈱, ㍉) and the NEC-selected IBM
extensions (rows 89-92) read as people typed them. Python's iso2022_jp codecs know only
JIS X 0208 itself there and turn those characters into U+FFFD; charsets.py calls this
when they fail. Pure."""

from __future__ import annotations

import re

# The designations of the WHATWG decoder; any other escape sequence is an error.
_DESIGNATION = re.compile(rb"(\x1b\(B|\x1b\(J|\x1b\(I|\x1b\$@|\x1b\$B)")
_ASCII, _ROMAN, _KATAKANA, _JIS0208 = "ascii", "roman", "katakana", "jis0208"
_STATE = {b"\x1b(B": _ASCII, b"\x1b(J": _ROMAN, b"\x1b(I": _KATAKANA,
          b"\x1b$@": _JIS0208, b"\x1b$B": _JIS0208}
_LINE_ENDS = b"\r\n"


def decode(data: bytes) -> str:
    """The text, each byte that forms no character in its place a U+FFFD."""
    pieces: list[str] = []
    state = _ASCII
    for i, chunk in enumerate(_DESIGNATION.split(data)):
        if i % 2:  # a designation: the state for the chunk after it
            state = _STATE[chunk]
        elif state == _JIS0208:
            pieces.append(_jis0208(chunk))
        elif state == _KATAKANA:
            pieces.append("".join(chr(0xFF61 - 0x21 + b) if 0x21 <= b <= 0x5F
                                  else chr(b) if b in _LINE_ENDS else "\ufffd"
                                  for b in chunk))
        else:
            text = _ascii(chunk)
            pieces.append(text.replace("\\", "\u00a5").replace("~", "\u203e")
                          if state == _ROMAN else text)
    return "".join(pieces)


def _ascii(chunk: bytes) -> str:
    # An escape sequence that designates nothing here (JIS X 0212, say) is an error too.
    return chunk.decode("ascii", "replace").replace("\x1b", "\ufffd")


def _jis0208(chunk: bytes) -> str:
    """Two-byte characters (bytes 0x21-0x7E) by way of their Shift_JIS bytes, decoded as
    cp932; a line end passes (mail that breaks the line before returning to ASCII)."""
    out: list[str] = []
    i = 0
    while i < len(chunk):
        lead = chunk[i]
        if lead in _LINE_ENDS:
            out.append(chr(lead))
            i += 1
        elif 0x21 <= lead <= 0x7E and i + 1 < len(chunk) and 0x21 <= chunk[i + 1] <= 0x7E:
            out.append(_shift_jis(lead, chunk[i + 1]).decode("cp932", "replace"))
            i += 2
        else:
            out.append("\ufffd")
            i += 1
    return "".join(out)


def _shift_jis(first: int, second: int) -> bytes:
    """The Shift_JIS bytes of a JIS X 0208 row/cell pair (the arithmetic of JIS X 0208
    appendix 1)."""
    lead = (first + 1) // 2 + (0x70 if first <= 0x5E else 0xB0)
    odd_row = second + (0x1F if second <= 0x5F else 0x20)
    return bytes((lead, odd_row if first % 2 else second + 0x7E))
