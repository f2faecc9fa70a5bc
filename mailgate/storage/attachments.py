"""Attachments kept on disk, content-addressed: <state>/attachments/ab/cdef... (SHA-256).

Crash safety. The pipeline writes every file (temp file, fsync, os.replace, fsync of the
directory) *before* it inserts the attachments rows that name it, and those rows commit
with the message's transaction. So:

- a crash before the commit leaves at most a file nobody references (an orphan, harmless:
  the next copy of the same mail writes the same name again); the daily sweep
  (attachment_sweep.py) deletes files no row names once they are a day old;
- a committed row always names a complete, durable file (it was renamed into place and
  fsynced before the row existed), never a missing or half-written one;
- os.replace is atomic, so a reader never sees a partial file under the final name, and
  two writers of the same content simply replace identical bytes.

Identical files are stored once: the name is the content's hash, and a file already
present is not written again. Files are mode 0600, directories 0700 (mail is private).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # store.py imports this module
    from mailgate.storage.store import Tx


class Attachments(Protocol):
    """Where attachment contents are kept, by SHA-256: files under the state directory
    (AttachmentStore, SQLite) or a table every node reads (postgres/blobs.py). Every
    method blocks: call it in a thread."""

    def put(self, data: bytes) -> str: ...
    def put_chunks(self, chunks: Iterable[bytes]) -> tuple[str, int]: ...
    def read(self, sha256: str) -> bytes | None: ...
    def where(self, sha256: str) -> str:
        """Where it is, for a person reading `mailgate show`."""


class AttachmentStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def of(cls, state_dir: Path) -> AttachmentStore:
        """The store beside the database: <state>/attachments."""
        return cls(state_dir / "attachments")

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:]

    def where(self, sha256: str) -> str:
        return str(self.path(sha256))

    def read(self, sha256: str) -> bytes | None:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, data: bytes) -> str:
        """Store the bytes once, durably; returns their SHA-256 (hex). Blocking: call it
        in a thread."""
        digest = hashlib.sha256(data).hexdigest()
        final = self.path(digest)
        if final.exists() and final.stat().st_size == len(data):
            os.utime(final)  # fresh again: the orphan sweep spares recent files
            return digest  # identical content is already there
        _mkdir(self.root)
        _mkdir(final.parent)
        tmp = final.parent / f".{final.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)
        return digest

    def put_chunks(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Store content that arrives in pieces (a large attachment decoded as it is
        read), as durably as put(); returns its SHA-256 and size. Blocking."""
        _mkdir(self.root)
        tmp = self.root / f".incoming.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        digest, size = hashlib.sha256(), 0
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            final = self.path(digest.hexdigest())
            _mkdir(final.parent)
            os.replace(tmp, final)  # identical content: the same bytes under the same name
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)
        _fsync_dir(self.root)
        return digest.hexdigest(), size


    def candidates(self, older_than: float) -> Iterator[tuple[Path, str | None]]:
        """Files not modified since `older_than` (Unix seconds): (path, its SHA-256), or
        (path, None) for a temp file a crash left behind. Blocking: call it in a thread."""
        if not self.root.is_dir():
            return
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for path in sorted(folder.iterdir()):
                try:
                    if path.stat().st_mtime >= older_than:
                        continue
                except FileNotFoundError:
                    continue
                stored = len(path.name) == 62 and not path.name.startswith(".")
                yield path, folder.name + path.name if stored else None


async def still_named(tx: Tx, digests: Sequence[str]) -> set[str]:
    """Which of these SHA-256s an attachments row names: the sweep keeps those files."""
    if not digests:
        return set()
    marks = ",".join("?" * len(digests))
    rows = await tx.fetch_all(
        f"SELECT DISTINCT sha256 FROM attachments WHERE sha256 IN ({marks})", digests)
    return {r[0] for r in rows}


def _mkdir(path: Path) -> None:
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
        _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
