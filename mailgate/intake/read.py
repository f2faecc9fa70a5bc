"""What a reading process does with a fetched group of mail (see intake/reading.py).

Pure and light on imports: a reading process imports this module alone, so it starts fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailgate.core.mime.parse import parse
from mailgate.core.model import Inbound
from mailgate.core.routing import Search, search_ahead
from mailgate.storage.attachments import Part, extract
from mailgate.storage.packing import pack


@dataclass(frozen=True, slots=True)
class Read:
    """One mail as read: what the pipeline would otherwise work out on the event loop."""

    msg: Inbound | None  # None: the parser failed; the pipeline reads it again and says why
    packed: bytes  # the raw bytes as the database keeps them
    parts: tuple[Part, ...] | None  # its attachments decoded; None when it names none
    limit: int  # the body limit ([limits] max_body_chars) it was read with
    searched: dict[Search, bool | None]  # the routing rules' searches, done (routing.py)


def read_mail(raw: bytes, limit: int, searches: tuple[Search, ...] = ()) -> Read:
    try:
        msg: Inbound | None = parse(raw, limit)
    except Exception:  # parse promises not to raise; if it does, the pipeline quarantines
        msg = None
    parts = tuple(extract(raw)) if msg is not None and msg.attachments else None
    searched = search_ahead(msg, searches) if msg is not None else {}
    return Read(msg, pack(raw), parts, limit, searched)


def read_group(raws: list[bytes], limit: int, searches: tuple[Search, ...] = (),
               ) -> list[Read]:
    """A reading process's one job: a whole group per call, one hand-off each way."""
    return [read_mail(raw, limit, searches) for raw in raws]
