"""The text of an HTML body, in time linear in its length. Pure; never raises.

Python's html.parser (CPython 3.11) is quadratic on markup that never ends: at the end of
the input it retries every unterminated tag, comment or declaration, scanning the whole
rest of the document each time (CVE-2025-6069). 60 kB of `<a ` took 108 s; an HTML body
of a few MB would stop intake for hours, on every re-read. This reader walks the markup
once: every construct is found with one forward search from its `<`, and a construct
that does not end makes the rest of the document plain text -- nothing is searched twice.

It reads what html.parser with convert_charrefs reads from ordinary HTML (tests hold the
two equal): text between tags with its character references decoded, tag names and
attribute names lower case, attribute values unquoted and decoded, `<script>` and
`<style>` content raw up to their end tag, comments, declarations and processing
instructions skipped. Malformed markup may come out differently; it is text either way.
Attributes are read by HTML's attribute grammar (a name; "=" and a quoted or unquoted
value, or none), never searched for in the raw tag: `<p title='hidden'>` has no hidden
attribute, and `<div style=display:none>` has one style.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from html import unescape

RAW_TEXT = frozenset({"script", "style"})  # content up to the end tag is not markup

# A start tag: its name, then attributes, quoted values whole (a ">" inside quotes does not
# end the tag). Possessive and atomic: every character but ">" is taken by one branch, so
# when no ">" follows, the match fails once, at the end of the input, without backtracking.
_START_TAG = re.compile(r"""<([a-zA-Z][^\t\n\r\f />\x00]*+)"""
                        r"""((?>(?:[^>"'=]+|=\s*"[^"]*"|=\s*'[^']*'|[="'])*))>""")
_END_TAG_NAME = re.compile(r"</\s*([a-zA-Z][^\t\n\r\f />\x00]*)")
_COMMENT_END = re.compile(r"--\s*>")
_SECTION_NAME = re.compile(r"[a-zA-Z][-_.a-zA-Z0-9]*")
# How a marked section ends, by its keyword: <![CDATA[ ... ]]>, Outlook's <![if !vml]>.
_SECTION_ENDS = {**dict.fromkeys(("temp", "cdata", "ignore", "include", "rcdata"),
                                 re.compile(r"\]\s*\]\s*>")),
                 **dict.fromkeys(("if", "else", "endif"), re.compile(r"\]\s*>"))}
_GT = re.compile(">")


# One attribute of a start tag's attribute text (HTML's "before attribute name" state on):
# separators, a name (it may start with "="), then "=" and a double-quoted, single-quoted or
# unquoted value, or no value. Possessive: each character is taken once.
_ATTRIBUTE = re.compile(r"""[\t\n\f\r /]*+([^\t\n\f\r />][^\t\n\f\r />=]*+)"""
                        r"""(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+"""
                        r"""(?:"([^"]*+)"|'([^']*+)'|([^\t\n\f\r >]*+)))?""")


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "data", "start", "end"
    value: str  # the text (decoded), or the lower-case tag name
    attrs: tuple[tuple[str, str], ...] = ()  # a start tag's, in order; no value reads ""
    self_closing: bool = False  # a start tag written `<br/>`

    def attr(self, name: str) -> str | None:
        """The value of the first attribute of that (lower-case) name, as HTML keeps the
        first of duplicates; None when the tag has none."""
        for key, value in self.attrs:
            if key == name:
                return value
        return None


def tokens(html: str) -> Iterator[Token]:
    """Text, start tags and end tags in document order. A self-closing tag (`<br/>`) is a
    start tag marked self_closing and nothing more: html.parser reports an end after it,
    but HTML ignores the mark on elements that are not void (`<div/>` opens a div)."""
    pos, n = 0, len(html)
    while pos < n:
        lt = html.find("<", pos)
        if lt < 0:
            yield Token("data", unescape(html[pos:]))
            return
        if lt > pos:
            yield Token("data", unescape(html[pos:lt]))
        end = yield from _construct(html, lt)
        if end < 0:  # never closed: the rest is text
            yield Token("data", unescape(html[lt:]))
            return
        pos = end


def _construct(html: str, lt: int) -> Generator[Token, None, int]:
    """Yield the tokens of the markup at `lt`; return where it ends, -1 if it never does."""
    if html.startswith("<!--", lt):
        found = _COMMENT_END.search(html, lt + 4)
        return found.end() if found else -1
    if html.startswith("<![", lt):
        name = _SECTION_NAME.match(html, lt + 3)
        close = _SECTION_ENDS.get(name.group().lower() if name else "", _GT)
        found = close.search(html, lt + 3)
        return found.end() if found else -1
    if html.startswith(("<!", "<?"), lt):
        gt = html.find(">", lt + 2)
        return gt + 1 if gt >= 0 else -1
    if html.startswith("</", lt):
        gt = html.find(">", lt + 2)
        if gt < 0:
            return -1
        name = _END_TAG_NAME.match(html, lt, gt)
        if name:
            yield Token("end", name.group(1).lower())
        return gt + 1
    tag = _START_TAG.match(html, lt)
    if tag is None:
        if lt + 1 < len(html) and html[lt + 1].isascii() and html[lt + 1].isalpha():
            return -1  # a tag that never ends
        yield Token("data", "<")
        return lt + 1
    name = tag.group(1).lower()
    closed = _self_closing(tag.group(2))
    yield Token("start", name, _attributes(tag.group(2)), closed)
    if closed:
        return tag.end()
    if name in RAW_TEXT:
        return (yield from _raw_text(html, tag.end(), name))
    return tag.end()


def _attributes(text: str) -> tuple[tuple[str, str], ...]:
    if not text.strip("\t\n\f\r /"):
        return ()
    return tuple((found.group(1).lower(), unescape(next(
                      (v for v in found.group(2, 3, 4) if v is not None), "")))
                 for found in _ATTRIBUTE.finditer(text))


def _self_closing(attributes: str) -> bool:
    """`<br/>`, `<img src="x" />`, `<p nowrap/>`; not `<a href=x/>` or `<a href= />`,
    whose "/" is an unquoted value (as html.parser reads them)."""
    stripped = attributes.rstrip()
    if not stripped.endswith("/"):
        return False
    before = stripped[:-1]
    run = len(before)  # the unquoted word the "/" ends, if any
    while run and before[run - 1] not in " \t\n\r\f\"'":
        run -= 1
    return "=" not in before[run:] and not before[:run].rstrip().endswith("=")


def _raw_text(html: str, start: int, name: str) -> Generator[Token, None, int]:
    """The content of <script> or <style>: text up to its end tag, which is the end."""
    close = re.compile(rf"</\s*{name}\s*>", re.IGNORECASE)
    found = close.search(html, start)
    if found is None:  # html.parser drops an unclosed script's content
        return len(html)
    if found.start() > start:
        yield Token("data", html[start:found.start()])
    yield Token("end", name)
    return found.end()
