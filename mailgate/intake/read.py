"""What a reading process does with a fetched group of mail (see intake/reading.py).

Pure and light on imports: a reading process imports this module alone, so it starts fast.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from mailgate.core.mime.parse import parse
from mailgate.core.model import Inbound
from mailgate.core.routing import Search, search_ahead
from mailgate.outbound.compose import RelayParts, carries_parts, relay_parts
from mailgate.storage.attachments import Part, extract
from mailgate.storage.packing import pack


@dataclass(frozen=True, slots=True)
class Asked:
    """What the pipeline wants read, from its settings and directory. A reading done for
    another (a reload came between) is not used: the pipeline reads that mail itself."""

    body_limit: int  # [limits] max_body_chars
    relay_limit: int  # [conversation] max_relay_bytes
    searches: tuple[Search, ...] = ()  # the routing rules' searches (routing.py)


@dataclass(frozen=True, slots=True)
class Read:
    """One mail as read: what the pipeline would otherwise work out on the event loop."""

    msg: Inbound | None  # None: the parser failed; the pipeline reads it again and says why
    packed: bytes  # the raw bytes as the database keeps them
    parts: tuple[Part, ...] | None  # its attachments decoded; None when it names none
    relay: RelayParts | None  # its attachments as MIME parts to relay; None: it has none
    searched: dict[Search, bool | None]  # the searches asked, done (True, False, timed out)
    asked: Asked


def read_mail(raw: bytes, asked: Asked) -> Read:
    try:
        msg: Inbound | None = parse(raw, asked.body_limit)
    except Exception:  # parse promises not to raise; if it does, the pipeline quarantines
        msg = None
    if msg is None:
        return Read(None, pack(raw), None, None, {}, asked)
    parts = tuple(extract(raw)) if msg.attachments else None
    relay = relay_parts(raw, asked.relay_limit) if carries_parts(msg) else None
    return Read(msg, pack(raw), parts, relay, search_ahead(msg, asked.searches), asked)


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


def read_group(raws: list[bytes], asked: Asked) -> list[Read]:
    """A reading process's one job: a whole group per call, one hand-off each way."""
    return [read_mail(raw, asked) for raw in raws]

