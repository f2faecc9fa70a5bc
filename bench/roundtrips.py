#!/usr/bin/env python3
"""Round trips to the store for one mail, by path: how many calls cross into SQLite.

    python bench/roundtrips.py

Each call on the connection (execute, executemany, execute_fetchall) is one trip to
aiosqlite's thread, and on a networked engine one trip to the server. Counts the calls the
pipeline makes for one message, between BEGIN and COMMIT (both included), for: a new
request (ticket, acknowledgement, team notification), a new request copied to two
departments, a duplicate, the requester's reply with and without her reply key, an
agent's answer and an agent's #take #resolve. Prints a table and writes
bench/results/roundtrips.json.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailgate.service.log import setup_logging
from tests.factories import Harness, harness, mail

CALLS = ("execute", "executemany", "execute_fetchall", "executescript")


class CountingConnection:
    """The store's connection, counting the calls that reach the database thread."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._conn, name)
        if name not in CALLS:
            return found

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return found(*args, **kwargs)
        return counted


Scene = Callable[[Harness], Awaitable[bytes]]  # sets the scene, returns the mail to count


async def count(scene: Scene) -> dict[str, int]:
    """Trips for the mail `scene` returns, after the mail it delivered itself."""
    with tempfile.TemporaryDirectory() as tmp:
        h = await harness(Path(tmp))
        try:
            raw = await scene(h)
            engine = h.store.engine
            counting = CountingConnection(engine.conn)
            engine.conn = counting  # type: ignore[assignment]
            await h.deliver(raw)
            engine.conn = counting._conn
            return dict(counting.calls) | {"total": sum(counting.calls.values())}
        finally:
            await h.store.close()


def after(*first: bytes, then: bytes) -> Scene:
    async def scene(h: Harness) -> bytes:
        for raw in first:
            await h.deliver(raw)
        return then
    return scene


def keyed_reply(sender: str, kind: str, body: str, first: bytes) -> Scene:
    """`sender` answers our newest mail of `kind` to them (its reply key proves them)."""
    async def scene(h: Harness) -> bytes:
        await h.deliver(first)
        key = await h.key_from(sender.split("<")[-1].rstrip(">"), kind)
        return mail("Re: [IT-1001] Laptop won't boot", sender=sender, body=body,
                    message_id="<answer@example.com>", headers={"In-Reply-To": key})
    return scene


async def main() -> None:
    setup_logging("error")
    request = mail()
    cases: dict[str, Scene] = {
        "new request": after(then=request),
        "new request, two departments": after(then=mail(cc="facilities@example.com")),
        "duplicate": after(request, then=request),
        "requester reply, no key": after(request, then=mail(
            "Re: [IT-1001] Laptop won't boot", message_id="<reply-1@example.com>",
            body="Still beeping.")),
        "requester reply to the ack": keyed_reply("Ann Example <ann@example.com>", "ack",
                                                  "Still beeping.", request),
        "agent answer": keyed_reply("Alice Adams <alice@example.com>", "notify-team",
                                    "Try holding the power button.", request),
        "agent #take #resolve": keyed_reply("Alice Adams <alice@example.com>", "notify-team",
                                            "#take\n#resolve fixed the battery", request),
    }
    results = {name: await count(scene) for name, scene in cases.items()}
    print(f"{'case':32} {'total':>5}  calls")
    for name, calls in results.items():
        detail = ", ".join(f"{k} {v}" for k, v in calls.items() if k != "total")
        print(f"{name:32} {calls['total']:>5}  {detail}")
    out = Path(__file__).resolve().parent / "results" / "roundtrips.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
