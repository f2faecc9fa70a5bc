"""The shared worker loop survives a failing round."""

from __future__ import annotations

import asyncio
import contextlib

from mailgate.workers.periodic import every, repeat


async def test_a_round_that_raises_is_logged_and_the_worker_goes_on() -> None:
    rounds: list[int] = []
    wake = asyncio.Event()
    done = asyncio.Event()

    async def run_once() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise RuntimeError("a bug in one round")
        done.set()

    worker = asyncio.create_task(repeat("test", run_once, wake, every(3600)))
    while not rounds:
        await asyncio.sleep(0)
    wake.set()  # skip the backoff
    async with asyncio.timeout(5):
        await done.wait()
    assert not worker.done()  # still running: the error did not end it
    worker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await worker
    assert len(rounds) == 2
