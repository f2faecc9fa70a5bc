"""The loop every background worker runs: a round, then sleep until due or woken.

Shared by the escalation scheduler, auto-close and the digest so each one is just its
`run_once`: a locked or full database is logged and retried with backoff, and so is any
other error (a bug in one round is logged with its traceback): the worker never dies of
it, so one bad ticket cannot stop escalations for all the others. The sleep uses
asyncio.timeout, not wait_for, which on Python 3.11 can swallow a cancellation arriving
together with the wake-up (stop() would then hang).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from mailgate.service.log import get_logger
from mailgate.storage import errors as store_errors

log = get_logger("mailgate.workers.periodic")
MAX_BACKOFF = 60.0  # seconds between retries while the database keeps failing


async def repeat(name: str, run_once: Callable[[], Awaitable[object]], wake: asyncio.Event,
                 next_wait: Callable[[], Awaitable[float]]) -> None:
    errors = 0
    while True:
        wake.clear()
        try:
            await run_once()
            errors = 0
            timeout = await next_wait()
        except store_errors.TEMPORARY as exc:  # locked, disk full: retry, never die
            errors += 1
            log.warning(f"{name}.retry", error=str(exc), round=errors)
        except Exception:  # a bug in one round must not stop every later one
            errors += 1
            log.exception(f"{name}.failed", round=errors)
        if errors:
            timeout = min(2.0 ** errors, MAX_BACKOFF)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await wake.wait()


def every(seconds: float) -> Callable[[], Awaitable[float]]:
    """A next_wait for workers that simply look again after a fixed interval."""
    async def wait() -> float:
        return seconds
    return wait
