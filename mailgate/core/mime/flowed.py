"""format=flowed text (RFC 3676) joined back into paragraphs. Pure; never raises.

Thunderbird, Apple Mail and others wrap long lines at ~72 columns and mark each soft
break with a trailing space; unjoined, a ticket shows the sender's paragraphs chopped
into ragged lines. A line ending in a space continues on the next line of the same quote
depth; with DelSp=yes that space was added by the wrapping and goes. "-- " (the signature
separator) is never flowed. Quote marks are written back as "> " per level.
"""

from __future__ import annotations

SIGNATURE = "-- "


def unflow(text: str, delsp: bool = False) -> str:
    """Join the soft line breaks of `text` (line ends already "\\n")."""
    out: list[str] = []
    paragraph: list[str] = []
    depth = -1  # quote depth of the paragraph being joined; -1 when none is open
    for raw in text.split("\n"):
        level, line = _unquote(raw)
        if paragraph and level != depth:  # a flowed line before another depth is fixed
            out.append(_quoted(depth, "".join(paragraph)))
            paragraph = []
        flowed = line.endswith(" ") and line != SIGNATURE
        if flowed and delsp:
            line = line[:-1]
        paragraph.append(line)
        depth = level
        if not flowed:
            out.append(_quoted(depth, "".join(paragraph)))
            paragraph = []
    if paragraph:
        out.append(_quoted(depth, "".join(paragraph)))
    return "\n".join(out)


def _unquote(line: str) -> tuple[int, str]:
    depth = len(line) - len(line.lstrip(">"))
    line = line[depth:]
    if line.startswith(" "):  # space-stuffing (RFC 3676 section 4.4)
        line = line[1:]
    return depth, line


def _quoted(depth: int, line: str) -> str:
    return f"{'>' * depth} {line}" if depth > 0 else line
