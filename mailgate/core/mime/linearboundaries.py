"""The email package's check for a boundary line, in time independent of the nesting.

compat32's parser reads a multipart's lines through `BufferedSubFile.readline`, which
tries every enclosing multipart's boundary on every line (RFC 2046 lets an outer boundary
end inner parts). In CPython 3.11 that is a Python loop over the stack of boundaries for
each line: a mail nested 900 deep (which the parser still reads) with 50,000 lines in its
innermost part (210 kB) took 32 s, and a few MB would take hours, on every re-read.

Only a line starting with "--" can be a boundary line, and only a blank line can end the
header blocks of a delivery-status part (the two kinds of matcher the parser pushes): this
replacement keeps the boundaries on the stack in a multiset, recognises the boundary a
line would close by taking the line apart once, and runs the original loop only for a line
that does end a part (or when a matcher of another kind is on the stack). It takes over
only while a file's stack is deeper than SHALLOW: ordinary mail, two or three deep, runs
the original loop untouched. The same lines end the same parts
(tests/test_mime_boundaries.py holds it against the original).

mailgate replaces the original when mailgate.core.mime is imported (its __init__), before
any mail is read.
"""

from __future__ import annotations

import re
import types
from collections import Counter
from dataclasses import dataclass, field
from email import feedparser
from typing import Any

BufferedSubFile = feedparser.BufferedSubFile
ORIGINAL_READLINE = BufferedSubFile.readline
ORIGINAL_PUSH = BufferedSubFile.push_eof_matcher
ORIGINAL_POP = BufferedSubFile.pop_eof_matcher

# The boundary regex feedparser._parsegen compiles for each multipart, around
# re.escape("--" + boundary).
_BOUNDARY_PATTERN = re.compile(
    r"\(\?P<sep>(.*)\)\(\?P<end>--\)\?\(\?P<ws>\[ \\t\]\*\)"
    r"\(\?P<linesep>\\r\\n\|\\r\|\\n\)\?\$", re.DOTALL)
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


@dataclass
class Matchers:
    """What is on one BufferedSubFile's stack of end-of-part matchers."""

    boundaries: Counter[str] = field(default_factory=Counter)  # the boundaries, "--" less
    newline: int = 0  # feedparser.NLCRE.match: a blank line ends the part
    other: int = 0  # anything else: every line must be tried the original way

    def count(self, matcher: Any, step: int) -> None:
        boundary = boundary_of(matcher)
        if boundary is not None:
            self.boundaries[boundary] += step
            if self.boundaries[boundary] <= 0:
                del self.boundaries[boundary]
        elif matcher == feedparser.NLCRE.match:
            self.newline += step
        else:
            self.other += step

    def may_end(self, line: str) -> bool:
        """False only when no matcher on the stack can match `line`."""
        if self.other:
            return True
        if line[:1] in ("\r", "\n"):
            return self.newline > 0
        if not line.startswith("--") or not self.boundaries:
            return False
        # "--" boundary ["--"] blanks [line end]: the boundary is what is left.
        core = line.rstrip("\r\n").rstrip(" \t")
        return core[2:] in self.boundaries or (
            len(core) >= 4 and core.endswith("--") and core[2:-2] in self.boundaries)


def boundary_of(matcher: Any) -> str | None:
    """The boundary a feedparser boundary matcher recognises; None for any other matcher,
    and for a boundary the line-taking-apart in may_end would not find (one ending in a
    blank, or holding a line end)."""
    pattern = getattr(matcher, "__self__", None)
    if not isinstance(pattern, re.Pattern) or getattr(matcher, "__name__", "") != "match":
        return None
    if not isinstance(pattern.pattern, str) or pattern.flags & ~re.UNICODE:
        return None
    found = _BOUNDARY_PATTERN.fullmatch(pattern.pattern)
    if found is None:
        return None
    separator = _ESCAPED.sub(r"\1", found.group(1))
    if (re.escape(separator) != found.group(1) or not separator.startswith("--")
            or separator.endswith((" ", "\t")) or "\r" in separator or "\n" in separator):
        return None
    return separator[2:]


def _matchers(self: Any) -> Matchers | None:
    return self.__dict__.get("_mailgate_matchers")


# Up to this many matchers the original loop (a few regex calls in C per line) is cheaper
# than taking the line apart, and nothing here runs per line: ordinary mail nests two or
# three deep. Past it the stack is counted, from then on one push or pop at a time, and the
# file reads its lines through deep_readline.
SHALLOW = 4


def _counted(stack: list[Any]) -> Matchers:
    matchers = Matchers()
    for matcher in stack:
        matchers.count(matcher, +1)
    return matchers


def push_eof_matcher(self: Any, pred: Any) -> None:
    ORIGINAL_PUSH(self, pred)
    matchers = _matchers(self)
    if matchers is not None:
        matchers.count(pred, +1)
    elif len(self._eofstack) > SHALLOW:
        self._mailgate_matchers = _counted(self._eofstack)
        self.readline = types.MethodType(deep_readline, self)


def pop_eof_matcher(self: Any) -> Any:
    pred = ORIGINAL_POP(self)
    matchers = _matchers(self)
    if matchers is not None:
        if len(self._eofstack) > SHALLOW:
            matchers.count(pred, -1)
        else:  # shallow again: the class's readline, the original
            del self._mailgate_matchers
            del self.readline
    return pred


def deep_readline(self: Any) -> Any:
    """BufferedSubFile.readline, trying the stack only for a line that may end a part."""
    matchers = _matchers(self)
    if self._lines and matchers is not None and not matchers.may_end(self._lines[0]):
        return self._lines.popleft()
    return ORIGINAL_READLINE(self)


def install() -> None:
    BufferedSubFile.push_eof_matcher = push_eof_matcher  # type: ignore[method-assign]
    BufferedSubFile.pop_eof_matcher = pop_eof_matcher  # type: ignore[method-assign]
