"""Files uuencoded inline in a text body (`begin 644 name` ... `end`), as old Outlook
Express, Pegasus and Unix `uuencode | mail` still send them. Pure; never raises.

A block counts only when it is complete: a begin line, data lines that decode, and an
`end` line. Anything less stays text, so a mail that merely talks about `begin 644` is
untouched. `begin-base64` blocks (uuencode -m) ending in `====` are read too.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

BEGIN = re.compile(rb"^begin(-base64)?[ \t]+([0-7]{3,4})[ \t]+([^\r\n]+?)[ \t]*\r?$",
                   re.MULTILINE)
_LINE_END = re.compile(rb"\r\n|\r|\n")
_UU_LINE = re.compile(rb"[ -`]+")  # uuencode writes only space through backtick: no prose
MAX_FILES = 100


@dataclass(frozen=True, slots=True)
class UUFile:
    filename: str
    data: bytes


def split(text: bytes) -> tuple[bytes, list[UUFile]]:
    """The text without its complete uuencoded blocks, and the files they carry."""
    if b"begin" not in text:  # the common case, at the cost of one scan
        return text, []
    files: list[UUFile] = []
    pieces: list[bytes] = []
    pos = 0
    for match in BEGIN.finditer(text):
        if match.start() < pos or len(files) >= MAX_FILES:
            continue
        block = _block(text, match)
        if block is None:
            continue
        end, data = block
        pieces.append(text[pos:match.start()])
        files.append(UUFile(_filename(match.group(3)), data))
        pos = end
    if not files:
        return text, []
    pieces.append(text[pos:])
    return b"".join(pieces), files


def _block(text: bytes, begin: re.Match[bytes]) -> tuple[int, bytes] | None:
    """(offset after the block, decoded bytes), or None when the block is not complete."""
    base64 = begin.group(1) is not None
    chunks: list[bytes] = []
    pos = _next_line(text, begin.end())
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
