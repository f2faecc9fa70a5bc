"""How raw mail is kept in the database: zlib at its fast level.

Its own small module: the reading process (intake/read.py) packs mail too, and must not
import the whole store to do it.
"""

from __future__ import annotations

import zlib


def pack(raw: bytes, piece: int = 1 << 20) -> bytes:
    """How raw mail is kept in the database (zlib, fast level). Blocking for large mail:
    call it in a worker thread; it compresses a piece at a time so the event loop's thread
    gets the GIL between pieces (the same zlib stream as zlib.compress)."""
    if len(raw) <= piece:
        return zlib.compress(raw, 1)
    packer, view = zlib.compressobj(1), memoryview(raw)
    out = [packer.compress(view[at:at + piece]) for at in range(0, len(raw), piece)]
    return b"".join([*out, packer.flush()])
