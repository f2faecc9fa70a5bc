"""Text from mail made safe to show on an admin's terminal. Pure: str in, str out.

Subjects, names, addresses, file names and bodies are written by strangers. Printed raw,
an ESC starts a terminal control sequence (clear the screen, retitle the window, fake
a prompt), BEL rings, CR rewrites the line, and bidi overrides reorder what the admin
reads ("exe.txt" shown for "txt.exe"). Every such character is shown as a visible escape
instead (`\\x1b`, `\\u202e`), so the admin sees that it is there and what it is.

The CLI applies this at its output edge only (cli.say, cli.print_table); --json output
is exact and needs none of it: json.dumps escapes every control character itself.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import regex

# Control characters (C0, DEL, C1), format characters (bidi embeddings, overrides and
# isolates, LRM/RLM/ALM, zero-width space, word joiner, BOM, soft hyphen, tags...),
# lone surrogates (left by undecodable bytes; printing one would raise) and the line and
# paragraph separators, which some terminals treat as a line break.
# ZWNJ and ZWJ (U+200C, U+200D) stay: Persian and Indic names and emoji need them to be
# drawn right, and they cannot reorder or hide the text around them.
_UNSAFE = r"[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}--[\u200c\u200d]]"
_UNSAFE_KEEP_TAB = r"[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}--[\t\u200c\u200d]]"


def _escape(match: regex.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def visible(text: str, *, tab: bool = False) -> str:
    """One line for a terminal: every control or format character, newline included, as
    a visible escape. With tab=True a tab stays a tab (free text such as a mail body)."""
    # Printable text (str.isprintable: no C* or Z* other than " ") has nothing to escape;
    # only the rest needs the regex module, whose import a CLI command would pay for.
    if text.isprintable():
        return text
    return _unsafe(_UNSAFE_KEEP_TAB if tab else _UNSAFE).sub(_escape, text)


@cache
def _unsafe(pattern: str) -> regex.Pattern[str]:
    import regex

    return regex.compile(pattern, regex.V1)


def visible_lines(text: str) -> str:
    """A multi-line block (a mail body, a report): its line breaks (LF, or CRLF as one)
    and tabs stay; everything else `visible` escapes, a lone CR included."""
    return "\n".join(visible(line, tab=True) for line in text.replace("\r\n", "\n").split("\n"))
