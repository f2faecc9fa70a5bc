"""Files uuencoded inline in a text body (`begin 644 name` ... `end`), as old Outlook
Express, Pegasus and Unix `uuencode | mail` still send them. Pure; never raises.

A block counts only when it is complete: a begin line, data lines that decode, and an
`end` line. Anything less stays text, so a mail that merely talks about `begin 644` is
untouched. `begin-base64` blocks (uuencode -m) ending in `====` are read too.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass

# The start of a begin line, `begin 644 name`: the name is read by begin_line(). One regex
# for the whole line, r"...[ \t]+([^\r\n]+?)[ \t]*\r?$", tried each way of splitting the
# blanks after the name: a begin line of 20,000 blanks took 16 s, 4 x per doubling.
_BEGIN = re.compile(rb"^begin(-base64)?[ \t]+([0-7]{3,4})(?=[ \t])", re.MULTILINE)
_LINE_END = re.compile(rb"\r\n|\r|\n")
_UU_LINE = re.compile(rb"[ -`]+")  # uuencode writes only space through backtick: no prose
MAX_FILES = 100


@dataclass(frozen=True, slots=True)
class UUFile:
    filename: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Begin:
    start: int  # of the begin line
    end: int  # of the line, before its LF
    base64: bool  # begin-base64 (uuencode -m)
    name: bytes  # as written, without the blanks and CR around it


def begin_lines(text: bytes) -> Iterator[Begin]:
    """The begin lines of `text`: `begin[-base64] <mode> <name>`, each line looked at once.
    The name is the rest of the line without its surrounding blanks and a final CR; a CR
    inside it, or no name at all, is no begin line (a rest of blanks only names the last
    blank, as the one regex these lines were read by did)."""
    for found in _BEGIN.finditer(text):
        end = text.find(b"\n", found.end())
        end = len(text) if end < 0 else end
        rest = text[found.end():end]
        rest = rest[:-1] if rest.endswith(b"\r") else rest
        name = rest.strip(b" \t") or (rest[-1:] if len(rest) >= 2 else b"")
        if name and b"\r" not in rest:
            yield Begin(found.start(), end, found.group(1) is not None, name)


def split(text: bytes) -> tuple[bytes, list[UUFile]]:
    """The text without its complete uuencoded blocks, and the files they carry."""
    if b"begin" not in text:  # the common case, at the cost of one scan
        return text, []
    files: list[UUFile] = []
    pieces: list[bytes] = []
    pos = 0
    for begin in begin_lines(text):
        if begin.start < pos or len(files) >= MAX_FILES:
            continue
        block = _block(text, begin)
        if block is None:
            continue
        end, data = block
        pieces.append(text[pos:begin.start])
        files.append(UUFile(_filename(begin.name), data))
        pos = end
    if not files:
        return text, []
    pieces.append(text[pos:])
    return b"".join(pieces), files


def _block(text: bytes, begin: Begin) -> tuple[int, bytes] | None:
    """(offset after the block, decoded bytes), or None when the block is not complete."""
    base64 = begin.base64
    chunks: list[bytes] = []
    pos = _next_line(text, begin.end)
    while pos < len(text):
        end = _next_line(text, pos)
        line = text[pos:end].rstrip(b"\r\n")
        if line.rstrip() == (b"====" if base64 else b"end"):
            return end, b"".join(chunks)
        chunk = _decode_line(line.rstrip() if base64 else line, base64)
        if chunk is None:
            return None
        chunks.append(chunk)
        pos = end
    return None


def _next_line(text: bytes, pos: int) -> int:
    found = _LINE_END.search(text, pos)
    return found.end() if found else len(text)


def _decode_line(line: bytes, base64: bool) -> bytes | None:
    if base64:
        try:
            return binascii.a2b_base64(line, strict_mode=True) if line else b""
        except (binascii.Error, ValueError):
            return None
    if not line.strip() or line in (b"`", b"` "):
        return b""  # the zero-length line before "end"; blank lines from re-wrapping
    if not _UU_LINE.fullmatch(line):
        return None
    try:
        return binascii.a2b_uu(line)
    except binascii.Error:
        # Some encoders pad lines with junk past the length the first character gives
        # (the workaround Python's own uu module used).
        length = ((line[0] - 32) & 63) * 4 + 5
        try:
            return binascii.a2b_uu(line[: length // 3])
        except binascii.Error:
            return None


def _filename(raw: bytes) -> str:
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        name = raw.decode("latin-1")
    name = name.strip().strip("\"'")
    # A name is a name, never a path: "../../etc/x" or "C:\\x" keep only their last part.
    return name.replace("\\", "/").rsplit("/", 1)[-1][:255] or "unnamed"
