"""The output edge of the command line.

Everything a person reads goes through say/say_lines/print_table, so text from mail
(subjects, names, file names, bodies, reasons) never reaches a terminal as a control
sequence (mailgate.core.terminal). --json goes through print_json, exact: json.dumps
escapes control characters itself (ensure_ascii, the default, also every non-ASCII one).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import TextIO

from mailgate.core.terminal import visible, visible_lines


def say(text: object = "", file: TextIO | None = None, end: str = "\n") -> None:
    """Print free text, possibly several lines: line breaks and tabs stay, every other
    control or format character is shown as an escape."""
    print(visible_lines(str(text)), file=file or sys.stdout, end=end)


def say_lines(lines: Iterable[str], file: TextIO | None = None) -> None:
    """Print lines that are one line each: a newline inside one is escaped too."""
    for line in lines:
        print(visible(line, tab=True), file=file or sys.stdout)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
                empty: str = "(none)") -> None:
    if not rows:
        say(empty)
        return
    # Each cell is one line: a newline or tab from mail is escaped too, not only ESC.
    cells = [[visible(str(c)) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def print_json(value: object) -> None:
    print(json.dumps(value, indent=2, default=str))
