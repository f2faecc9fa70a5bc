"""The daily sweep of <state>/attachments: files no attachments row names are deleted
(on PostgreSQL: rows of attachment_blobs no attachments row names, BlobStore.sweep).

Such orphans come from a crash between writing a file and committing the rows that name
it (see attachments.py), or from a temp file a crash interrupted. A file is only looked at
once it is a day old (`put` touches a file it reuses), and each chunk is checked and
deleted inside a write transaction: an intake transaction, which writes files before its
rows, cannot be halfway through meanwhile, so a file about to be named is never deleted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mailgate.service.log import get_logger
from mailgate.storage.attachments import AttachmentStore, still_named
from mailgate.storage.postgres.blobs import BlobStore
from mailgate.storage.store import Store
from mailgate.workers.periodic import every, repeat

log = get_logger("mailgate.storage.attachments")
MIN_AGE = 86400.0  # seconds a file must be untouched before it may be swept
INTERVAL = 86400.0  # once a day (and at start)
CHUNK = 500  # files checked per transaction: the write lock is held only briefly


@dataclass
class Swept:
    files: int = 0
    bytes: int = 0


class AttachmentSweeper:
    def __init__(self, store: Store, files: AttachmentStore | BlobStore,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.files = files
        self.clock = clock
        self.wake = asyncio.Event()

    async def run(self) -> None:
        await repeat("attachments.sweep", self.run_once, self.wake, every(INTERVAL))

    async def run_once(self) -> Swept:
        swept = Swept()
        if isinstance(self.files, BlobStore):  # one DELETE; the same age rule as files
            swept.files, swept.bytes = await asyncio.to_thread(
                self.files.sweep, self.clock() - MIN_AGE)
            if swept.files:
                log.info("attachments.swept", files=swept.files, bytes=swept.bytes)
            return swept
        found = await asyncio.to_thread(
            lambda: list(self.files.candidates(self.clock() - MIN_AGE)))
        for start in range(0, len(found), CHUNK):
            await self._sweep(found[start:start + CHUNK], swept)
        if swept.files:
            log.info("attachments.swept", files=swept.files, bytes=swept.bytes)
        return swept

    async def _sweep(self, chunk: list[tuple[Path, str | None]], swept: Swept) -> None:
        digests = [d for _, d in chunk if d]
        async with self.store.transaction() as tx:
            named = await still_named(tx, digests)
            orphans = [path for path, digest in chunk if digest not in named]
            swept.bytes += await asyncio.to_thread(_delete, orphans)
            swept.files += len(orphans)


def _delete(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        try:
            total += path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            pass
    return total
