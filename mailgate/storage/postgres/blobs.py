"""Attachments in PostgreSQL, where every node reads them: `attachment_blobs`, one row per
content, keyed by its SHA-256.

The same crash safety as the files on SQLite (attachments.py): a blob is committed on its
own connection *before* the message's transaction inserts the attachments rows that name
it, so a committed row always names a stored blob, and a crash leaves at most a blob no row
names (harmless; `sweep` removes them). Identical content is stored once (ON CONFLICT DO
NOTHING on the key). The methods block, like the file store's: call them in a thread.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when first connecting: SQLite-only installs have no psycopg
    import psycopg

_PUT = ("INSERT INTO attachment_blobs (sha256, size, data, created_at) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (sha256) DO NOTHING")


class BlobStore:
    def __init__(self, url: str, password: str | None) -> None:
        self.url = url
        self.password = password
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()  # one statement at a time on the connection

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            import psycopg

            from mailgate.storage.postgres.link import link_options

            extra = {"password": self.password} if self.password else {}
            extra.update(link_options(self.url))
            self._conn = psycopg.connect(self.url, autocommit=True,
                                         application_name="mailgate-blobs", **extra)
        return self._conn

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._connection().execute(_PUT, (digest, len(data), data, time.time()))
        return digest

    def put_chunks(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        data = b"".join(chunks)  # a BYTEA value is sent whole; bounded by max_attachment_bytes
        return self.put(data), len(data)

    def read(self, sha256: str) -> bytes | None:
        with self._lock:
            row = self._connection().execute(
                "SELECT data FROM attachment_blobs WHERE sha256 = %s", (sha256,)).fetchone()
        return bytes(row[0]) if row else None

    def where(self, sha256: str) -> str:
        return f"attachment_blobs:{sha256}"

    def sweep(self, older_than: float) -> tuple[int, int]:
        """Delete blobs no attachments row names, stored before `older_than` (Unix
        seconds: a blob just written may be about to be named); (blobs, bytes)."""
        with self._lock:
            rows = self._connection().execute(
                "DELETE FROM attachment_blobs b WHERE b.created_at < %s AND NOT EXISTS "
                "(SELECT 1 FROM attachments a WHERE a.sha256 = b.sha256) RETURNING b.size",
                (older_than,)).fetchall()
        return len(rows), sum(r[0] for r in rows)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
