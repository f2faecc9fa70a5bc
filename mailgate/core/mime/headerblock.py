"""Mend a damaged header block before it is parsed again (pure; bytes in, bytes out).

compat32 ends the header block at the first line that is neither a header field nor a
continuation: one line that lost its leading whitespace (a long Received or To header
re-wrapped by a broken gateway) turned everything after it, From and Subject included,
into body text. Here such a line is read as a continuation when more header fields follow
it (before any blank or boundary line: below those, the fields are a first part's, the
blank line after the header block being what is missing), a first field indented by
mistake loses its blanks, a line before the first field (mbox `From `/`>From ` envelope,
junk) is dropped, and `Subject : x` (obsolete syntax, RFC 5322 section 4.5) loses the
space before its colon. Each repair is recorded as a defect. The parser only calls this
when compat32 reported a missing header/body separator or an indented first line, so
well-formed mail never pays for it.
"""

from __future__ import annotations

import re

FIELD = re.compile(rb"[!-9;-~]+:")  # RFC 5322 field name and colon
_OBSOLETE_FIELD = re.compile(rb"([!-9;-~]+)[ \t]+:")  # "Subject :"
_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n|$)")
LOOKAHEAD = 5  # colon-less lines in a row that may still be followed by fields
MAX_HEADER_LINES = 5000


def mend(raw: bytes) -> tuple[bytes, list[str]]:
    """The message with its header block mended, and what was mended ([] when nothing)."""
    lines = _header_lines(raw)
    kept: list[bytes] = []
    defects: list[str] = []
    for index, line in enumerate(lines):
        if not line.strip(b"\r\n"):  # the blank line: the header block is complete
            break
        fixed = _mend_line(lines, index, line, bool(kept), defects)
        if fixed is None:
            break  # body text without a separator: the headers end here
        kept.append(fixed)
    else:
        index = len(lines)
    if not defects:
        return raw, []
    rest = raw[sum(len(line) for line in lines[:index]):]
    return b"".join(kept) + rest, defects


def _mend_line(lines: list[bytes], index: int, line: bytes, after_field: bool,
               defects: list[str]) -> bytes | None:
    if line[:1] in (b" ", b"\t") and not after_field and FIELD.match(line.lstrip(b" \t")):
        # " From: ..." first: a continuation of nothing, which compat32 drops.
        defects.append(f"blanks before the first header field skipped: {_show(line)}")
        return line.lstrip(b" \t")
    if line[:1] in (b" ", b"\t") or FIELD.match(line):
        return line
    if index == 0 and line.startswith(b"From "):
        return line  # compat32 reads an mbox envelope line itself
    if index == 0 and line.startswith(b">From "):  # an mbox envelope line, escaped
        defects.append(f"mbox envelope line skipped: {_show(line)}")
        return b""
    obsolete = _OBSOLETE_FIELD.match(line)
    if obsolete:
        defects.append(f"space before the colon of header {_show(obsolete.group(1))}")
        return obsolete.group(1) + b":" + line[obsolete.end():]
    if not _fields_follow(lines, index):
        return None
    if not after_field:
        defects.append(f"line before the first header skipped: {_show(line)}")
        return b""
    defects.append(f"header line without a colon read as a continuation: {_show(line)}")
    return b" " + line


def _fields_follow(lines: list[bytes], index: int) -> bool:
    for line in lines[index + 1:index + 1 + LOOKAHEAD]:
        if not line.strip(b"\r\n") or line.startswith(b"--"):
            return False  # a blank line or a boundary line: the fields below are a part's
        if FIELD.match(line) or _OBSOLETE_FIELD.match(line):
            return True
    return False


def _header_lines(raw: bytes) -> list[bytes]:
    lines: list[bytes] = []
    for match in _LINE.finditer(raw):
        line = match.group(0)
        if not line or len(lines) >= MAX_HEADER_LINES:
            break
        lines.append(line)
        if not line.strip(b"\r\n"):
            break
    return lines


def _show(line: bytes) -> str:
    return repr(line.strip()[:40].decode("ascii", "replace"))
