"""What a reading process does with a fetched group of mail (see intake/reading.py).

Pure and light on imports: a reading process imports this module alone, so it starts fast.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mailgate.core.mime.files import Part, extract, select
from mailgate.core.mime.parse import parse
from mailgate.core.model import Inbound
from mailgate.core.rulesearch import Search, search_ahead
from mailgate.outbound.compose import RelayParts, carries_parts, relay_parts
from mailgate.storage.attachments import AttachmentStore
from mailgate.storage.packing import pack


@dataclass(frozen=True, slots=True)
class Asked:
    """What the pipeline wants read, from its settings and directory. A reading done for
    another (a reload came between) is not used: the pipeline reads that mail itself."""

    body_limit: int  # [limits] max_body_chars
    relay_limit: int  # [conversation] max_relay_bytes
    searches: tuple[Search, ...] = ()  # the routing rules' searches (rulesearch.py)
    attachment_limit: int = 0  # [limits] max_attachment_bytes: what is stored ahead
    # CPU seconds one mail may take to read in a reading process. Reading is linear in the
    # mail's size (a read-ahead group is at most 2 MB: well under a second), so only a mail
    # shaped to make some step slow gets here; it is quarantined, not read again.
    cpu_limit: float = 20.0


@dataclass(frozen=True, slots=True)
class Read:
    """One mail as read: what the pipeline would otherwise work out on the event loop."""

    msg: Inbound | None  # None: the parser failed; the pipeline reads it again and says why
    packed: bytes  # the raw bytes as the database keeps them
    parts: tuple[Part, ...] | None  # its attachments decoded; None when it names none
    relay: RelayParts | None  # its attachments as MIME parts to relay; None: it has none
    searched: dict[Search, bool | None]  # the searches asked, done (True, False, timed out)
    asked: Asked
    # The SHA-256 each part is stored under in the attachment directory `stored_in`, in
    # the order of `parts`; None: not stored ahead (dropped by the limit, or the write
    # failed), the pipeline stores it as it always does.
    stored: tuple[str | None, ...] = ()
    stored_in: str | None = None
    gave_up: str = ""  # why reading stopped (Asked.cpu_limit); the pipeline quarantines it


def read_mail(raw: bytes, asked: Asked, files: str | None = None) -> Read:
    """FILES: the attachment directory (a SQLite store's) to store kept attachments in."""
    try:
        msg: Inbound | None = parse(raw, asked.body_limit)
    except Exception:  # parse promises not to raise; if it does, the pipeline quarantines
        msg = None
    if msg is None:
        return Read(None, pack(raw), None, None, {}, asked)
    parts = tuple(extract(raw)) if msg.attachments else None
    relay = relay_parts(raw, asked.relay_limit) if carries_parts(msg) else None
    stored = store_ahead(parts, asked.attachment_limit, files) if parts and files else ()
    return Read(msg, pack(raw), parts, relay, search_ahead(msg, asked.searches), asked,
                stored, files)


def store_ahead(parts: tuple[Part, ...], limit: int, files: str) -> tuple[str | None, ...]:
    """Store the parts the pipeline will keep (files.select), as it would: files are
    named by their content and written durably (attachments.py), so a file written here
    is the file the pipeline's own write would leave, and one the pipeline then drops (a
    reload lowered the limit; the group was rolled back) is an orphan the sweep removes.
    The fsyncs of those writes are the point: here they cost the event loop nothing."""
    kept, _ = select(list(parts), limit)
    keep = {id(part) for part in kept}
    store = AttachmentStore(Path(files))
    return tuple(_stored(store, part) if id(part) in keep else None for part in parts)


def _stored(store: AttachmentStore, part: Part) -> str | None:
    try:
        return store.put(part.data)
    except OSError:  # disk full, permissions: the pipeline writes it and says what failed
        return None


def outlive_no_parent(parent: int) -> None:
    """A reading process's initializer: end when the daemon that started it is gone.

    A pool's worker waits for work forever; a daemon killed with SIGKILL (outside systemd,
    whose control group takes the children with it) would leave it behind. A thread looks
    once a second whether the parent is still the one that started it."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def read_group(raws: list[bytes], asked: Asked, files: str | None = None) -> list[Read]:
    """A reading process's one job: a whole group per call, one hand-off each way; each
    mail read within asked.cpu_limit (_read_within_limit)."""
    if threading.current_thread() is not threading.main_thread():
        return [read_mail(raw, asked, files) for raw in raws]  # signals reach only the main
    previous = signal.signal(signal.SIGPROF, _too_slow)
    try:
        return [_read_within_limit(raw, asked, files) for raw in raws]
    finally:
        signal.signal(signal.SIGPROF, previous)


class _TooSlow(BaseException):
    """Not an Exception: reading catches those on purpose (parse never raises)."""


def _too_slow(signum: int, frame: object) -> None:
    raise _TooSlow


def _read_within_limit(raw: bytes, asked: Asked, files: str | None = None) -> Read:
    """read_mail, stopped after asked.cpu_limit seconds of this process's CPU. Only for
    read_group, which sets the handler that raises _TooSlow: without it, SIGPROF's
    default action would end the process.

    A reading process's tasks run on its main thread, where a signal can interrupt Python
    code: a profiling timer (it counts CPU, not waiting) raises inside whatever step is
    taking too long."""
    try:
        signal.setitimer(signal.ITIMER_PROF, asked.cpu_limit)
        try:
            return read_mail(raw, asked, files)
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
    except _TooSlow:
        return Read(None, b"", None, None, {}, asked, gave_up=(
            f"reading it took more than {asked.cpu_limit:g} s of CPU (a mail shaped to be "
            "slow to read; `mailgate quarantine retry` reads it without a limit)"))
