"""Plain-text lines written as a browser lays text out (pure; for htmlplain.py).

The writer knows no HTML: it is told words, preformatted text, block breaks, hard
breaks, a bullet and a cell separator, each with the quote depth of where it stands. Blanks
collapse to one and none starts or ends a line; a block's breaks are owed until text comes,
so empty blocks leave no empty lines; a line's quote depth is fixed by its first text, and
an empty line between two lines takes the shallower depth. Every call is O(its text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_HTML_BLANKS = " \t\n\r\f"
_BLANK_RUN = re.compile(r"[ \t\n\r\f]+")


@dataclass(slots=True)
class PlainLines:
    """Lines being written, each with its quote depth; breaks owed until text comes."""
    done: list[tuple[int, str]] = field(default_factory=list)
    line: list[str] = field(default_factory=list)
    depth: int = 0  # the current line's quote depth, fixed by its first text
    owed: int = 0  # 1: the next text starts a line; 2: after a blank line
    blank: bool = False  # a collapsed blank is owed before the next word on this line
    separator: str = ""  # owed before the next text on this line (a cell's tab)
    marker: str = ""  # a list item's bullet, owed before its first text
    shown: bool = False  # the current line has more than blanks (a spacer cell's NBSP)
    empties: int = 0  # empty lines since the last line with text

    def block(self, breaks: int) -> None:
        self.owed = max(self.owed, breaks)

    def bullet(self, marker: str) -> None:
        """A list item's marker, written before its first text ("" takes it back)."""
        self.marker = marker

    def cell(self) -> None:
        """A table cell: a tab from the cell before it on the same line."""
        if self.line:
            self.separator = "\t"

    def hard_break(self, depth: int) -> None:
        """<br>: the line ends here, an empty one if nothing was written on it."""
        if self.done or self.line:
            self._settle(depth)
            self._end(depth)

    def words(self, data: str, depth: int) -> None:
        """Text in normal flow: blanks collapse to one, none at a line's start."""
        if not data.strip(_HTML_BLANKS):
            self.blank = True
            return
        parts = _BLANK_RUN.split(data)
        if parts[0] == "":
            self.blank = True
        for index, word in enumerate(parts):
            if word:
                if index:
                    self.blank = True
                self.write(word, depth)
        if parts[-1] == "" and len(parts) > 1:
            self.blank = True

    def preformatted(self, data: str, depth: int) -> None:
        for index, piece in enumerate(data.replace("\r\n", "\n").replace("\r", "\n")
                                      .split("\n")):
            if index:
                self._settle(depth)
                self._end(depth)
            if piece:
                self.write(piece, depth)

    def write(self, text: str, depth: int) -> None:
        self._settle(depth)
        if self.line and self.separator and not self.shown:
            self.line.clear()  # no line starts with an empty cell's blanks and a tab
        if self.line:
            if self.separator:
                self.line.append(self.separator)
            elif self.blank:
                self.line.append(" ")
        else:
            self.depth = depth
            if self.marker:
                self.line.append(self.marker)
        self.marker = self.separator = ""
        self.blank = False
        text = text.replace("\xa0", " ")
        self.shown = self.shown or not text.isspace()
        self.line.append(text)

    def _settle(self, depth: int) -> None:
        """Pay the breaks owed before text: end the line, leave a blank one."""
        if not (self.done or self.line):
            self.owed = 0
        if self.owed and self.line:
            self._end(depth)
        if self.owed == 2 and not self.empties:
            self._end(min(depth, self.depth))
        self.owed = 0

    def _end(self, depth: int) -> None:
        if self.line:
            self.done.append((self.depth, "".join(self.line).rstrip()))
            self.empties = 0
        else:
            self.done.append((depth, ""))
            self.empties += 1
        self.line.clear()
        self.blank = self.shown = False
        self.separator = ""

    def text(self) -> str:
        if self.line:
            self._end(self.depth)
        kept: list[tuple[int, str]] = []
        for depth, text in self.done:
            if text or (kept and kept[-1][1]):  # no empty line first, none twice
                kept.append((depth, text))
        while kept and not kept[-1][1]:
            kept.pop()
        return "\n".join(_marked(depth, text) for depth, text in kept)


def _marked(depth: int, text: str) -> str:
    """A line with its quote marks as Thunderbird writes them: ">> text", ">" if empty."""
    if not depth:
        return text
    return ">" * depth + (" " + text if text else "")
