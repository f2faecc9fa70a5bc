"""Reading fetched mail in another process, so that a second core does it.

Reading a mail -- parsing it, decoding its attachments, compressing the bytes the database
keeps -- is pure: its result depends on the bytes and the body limit alone. A mailbox's
watcher hands each fetched group to a reading process in one call, while the event loop
decides and stores the group before it; the pipeline then finds the mail read already.

Nothing depends on where the reading happens. A group that cannot be read there (the
process was killed, ran out of memory, or reading is off) comes back empty and the
pipeline reads the mail inline, as it does for mail pushed through the listener; the
next group starts a new process. Large mail (largemail.LARGE) is never sent across: it
has its own light path.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from mailgate.core.mime.largemail import LARGE
from mailgate.intake.read import Asked, Read, outlive_no_parent, read_group
from mailgate.service.log import get_logger

log = get_logger("mailgate.intake.reading")
# At most this much mail of a group is read ahead: a reading comes back as up to about
# three times its size (packed, attachments decoded, parts to relay), and two groups are in
# memory at a time. The rest of an attachment-heavy group is read inline, as before.
READ_AHEAD_BYTES = 2 * 1024 * 1024


def ahead_of(raws: dict[int, bytes]) -> dict[int, bytes]:
    """The mails of a group to read ahead: in order, up to READ_AHEAD_BYTES together; a
    large one (largemail.LARGE) never, it has its own light path."""
    chosen: dict[int, bytes] = {}
    total = 0
    for uid, raw in raws.items():
        if len(raw) <= LARGE and total + len(raw) <= READ_AHEAD_BYTES:
            chosen[uid] = raw
            total += len(raw)
    return chosen


def default_workers() -> int:
    """One reading process when there is a core to spare, else none (inline)."""
    return 1 if (os.cpu_count() or 1) > 1 else 0


class Reader:
    """The reading processes of one daemon; `workers = 0` reads nothing (all inline)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._starting = False  # warm() is starting the process: do not wait for it

    async def read(self, raws: dict[int, bytes], asked: Asked,
                   files: str | None = None) -> dict[int, Read]:
        """The small mails of a fetched group, read in the reading process as ASKED, by
        UID, their kept attachments stored in the directory FILES if given (read.py);
        empty when they cannot be, or while the process is still starting (the pipeline
        then reads them inline)."""
        small = ahead_of(raws)
        if not small or self.workers == 0 or self._starting:
            return {}
        return await self._read(small, asked, files)

    async def _read(self, small: dict[int, bytes], asked: Asked,
                    files: str | None = None) -> dict[int, Read]:
        try:
            pool = self._executor()
        except Exception as exc:  # no processes here (a sandbox without /dev/shm ...)
            log.warning("reading.unavailable", error=repr(exc), note="all mail read inline")
            self.workers = 0
            return {}
        try:
            reads = await asyncio.get_running_loop().run_in_executor(
                pool, read_group, list(small.values()), asked, files)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being stopped
            return {}  # the pool was replaced (a reload) before it took the group
        except BrokenProcessPool:
            log.warning("reading.process_lost", note="read inline; a new process follows")
            self._forget_pool()
            return {}
        except Exception as exc:  # out of memory, a result that cannot be pickled back
            log.warning("reading.failed", error=repr(exc), note="read inline")
            return {}
        return dict(zip(small, reads, strict=True))

    async def warm(self) -> None:
        """Start the reading process now; until it answers (a spawned interpreter takes
        a few hundred milliseconds to import), groups are read inline, not held up."""
        if not self.workers:
            return
        self._starting = True
        try:
            await self._read({0: b"Subject: warm-up\r\n\r\n"}, Asked(100, 100))
        finally:
            self._starting = False

    def resize(self, workers: int) -> None:
        """A reload's new count; the running group finishes on the old processes."""
        if workers != self.workers:
            self.workers = workers
            self._forget_pool()

    def close(self) -> None:
        self._forget_pool()

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the daemon has threads (database, IMAP, SMTP), and a forked
            # child would inherit whatever locks they hold at that moment.
            self._pool = ProcessPoolExecutor(self.workers,
                                             mp_context=multiprocessing.get_context("spawn"),
                                             initializer=outlive_no_parent,
                                             initargs=(os.getpid(),))
        return self._pool

    def _forget_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
