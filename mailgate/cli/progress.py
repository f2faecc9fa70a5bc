"""A one-line progress indication for long CLI operations, on a terminal only.

`Progress` rewrites one line of stderr ("backup: 42 %") as work advances and ends it with a
newline. When stderr is not a terminal (cron, systemd, a pipe, tests) it writes nothing at
all, so scripted output and logs stay exactly as they were.
"""

from __future__ import annotations

import sys
from typing import TextIO


class Progress:
    def __init__(self, label: str, stream: TextIO | None = None,
                 enabled: bool | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self._shown: str | None = None
        self._width = 0

    def fraction(self, done: float, total: float) -> None:
        """Show done/total as a whole percentage (only when it changes)."""
        share = 1.0 if total <= 0 else min(1.0, max(0.0, done / total))
        self.step(f"{int(share * 100)} %")

    def step(self, text: str) -> None:
        """Show free text, e.g. 'checking 3124 people (2/4)'."""
        if not self.enabled or text == self._shown:
            return
        line = f"{self.label}: {text}"
        pad = max(0, self._width - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._shown, self._width = text, len(line)

    def done(self) -> None:
        """End the line (nothing if nothing was shown)."""
        if self.enabled and self._shown is not None:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = None
