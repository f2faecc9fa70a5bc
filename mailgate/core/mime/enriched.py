"""text/enriched (RFC 1896) and its forerunner text/richtext (RFC 1341) as plain text.

Pure and linear: <param> contents dropped, formatting commands dropped, "<<" (enriched)
and <lt> (richtext) are "<". Line breaks follow each format: in enriched text a single
line break is a space and n of them are n-1; in richtext every line break is a space and
<nl> is one.
"""

from __future__ import annotations

import re

_ENRICHED_BREAKS = re.compile(r"(?:\r\n|\r|\n)+")
_RICHTEXT_BREAKS = re.compile(r"\r\n|\r|\n")
# A formatting command: no "<" or ">" inside, so each attempt ends at the next "<".
_COMMAND = re.compile(r"<<|<[^<>]*>")
_RICHTEXT_COMMANDS = {"<nl>": "\n", "<lt>": "<", "<np>": "\n\n"}


def to_text(text: str, richtext: bool = False) -> str:
    text = _without_params(text)
    if richtext:
        text = _RICHTEXT_BREAKS.sub(" ", text)
        return _COMMAND.sub(lambda m: _RICHTEXT_COMMANDS.get(m.group(0).lower(), ""), text)
    text = _ENRICHED_BREAKS.sub(_enriched_breaks, text)
    return _COMMAND.sub(lambda m: "<" if m.group(0) == "<<" else "", text)


def _enriched_breaks(match: re.Match[str]) -> str:
    count = len(_RICHTEXT_BREAKS.findall(match.group(0)))
    return " " if count == 1 else "\n" * (count - 1)


def _without_params(text: str) -> str:
    """The text without <param>...</param> (a command's argument, never shown)."""
    lower = text.lower()
    kept: list[str] = []
    pos = 0
    while (start := lower.find("<param>", pos)) >= 0:
        kept.append(text[pos:start])
        end = lower.find("</param>", start)
        pos = len(text) if end < 0 else end + len("</param>")
    kept.append(text[pos:])
    return "".join(kept)
