#!/usr/bin/env python3
"""Round trips to the store for one mail, by path: how many calls cross into SQLite.

    python bench/roundtrips.py

Each call on the connection (execute, executemany, execute_fetchall) is one trip to
aiosqlite's thread, and on a networked engine one trip to the server. Counts the calls the
pipeline makes for one message, between BEGIN and COMMIT (both included), for: a new
request (ticket, acknowledgement, team notification), a new request copied to two
departments, and a duplicate. Prints a table and writes bench/results/roundtrips.json.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailgate.service.log import setup_logging
from tests.factories import harness, mail

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


async def count(raws: list[bytes]) -> dict[str, int]:
    """Trips for the last of `raws` (the ones before it set the scene)."""
    with tempfile.TemporaryDirectory() as tmp:
        h = await harness(Path(tmp))
        try:
            for raw in raws[:-1]:
                await h.deliver(raw)
            engine = h.store.engine
            counting = CountingConnection(engine.conn)
            engine.conn = counting  # type: ignore[assignment]
            await h.deliver(raws[-1])
            engine.conn = counting._conn
            return dict(counting.calls) | {"total": sum(counting.calls.values())}
        finally:
            await h.store.close()


async def main() -> None:
    setup_logging("error")
    request = mail()
    cases = {
        "new request": [request],
        "new request, two departments": [mail(cc="facilities@example.com")],
        "duplicate": [request, request],
        "reply by the requester": [request, mail("Re: [IT-1001] Laptop won't boot",
                                                 message_id="<reply-1@example.com>",
                                                 body="Still beeping.")],
    }
    results = {name: await count(raws) for name, raws in cases.items()}
    print(f"{'case':32} {'total':>5}  calls")
    for name, calls in results.items():
        detail = ", ".join(f"{k} {v}" for k, v in calls.items() if k != "total")
        print(f"{name:32} {calls['total']:>5}  {detail}")
    out = Path(__file__).resolve().parent / "results" / "roundtrips.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
