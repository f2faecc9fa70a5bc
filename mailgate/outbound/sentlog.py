"""The record of mail the SMTP server accepted, kept outside the database's write lock.

Marking a row sent in SQLite needs the single writer lock, which a burst of intake holds
most of the time; waiting for it after every mail would starve the acknowledgements. So
the sender appends the row id here the moment the server says 250 (one small O_APPEND
write, safe against a killed process) and moves the ids into the database in batches. On
start, ids left here are applied first, so nothing is sent twice because of the lag.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


class SentLog:
    """Recorded from the SMTP connections' threads, applied from the event loop: a lock
    keeps an id recorded between "nothing pending" and the truncation from being lost."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pending: set[int] = _read(path)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._lock = threading.Lock()

    def record(self, outbox_id: int) -> None:
        with self._lock:
            os.write(self._fd, f"{outbox_id}\n".encode())
            self.pending.add(outbox_id)

    def snapshot(self) -> frozenset[int]:
        """The ids pending now, as a copy another thread's record() cannot change."""
        with self._lock:
            return frozenset(self.pending)

    def applied(self, ids: set[int] | frozenset[int]) -> None:
        """The database now says these are sent: forget them (and the file, once empty)."""
        with self._lock:
            self.pending -= ids
            if not self.pending:
                os.ftruncate(self._fd, 0)

    def close(self) -> None:
        os.close(self._fd)


def _read(path: Path) -> set[int]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return set()
    # A line cut short by a crash is not a complete id: ignore it (that mail is resent).
    return {int(line) for line in text.split("\n")[:-1] if line.isdigit()}
