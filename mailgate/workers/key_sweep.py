"""The daily sweep of exposed reply keys (storage/exposed.py): a key that has expired
proves nothing anyway, so the row that burnt it can go. One DELETE by the keys' own end,
not by the configured ttl: a key signed before reply_key_days was shortened keeps its
longer life, and its row with it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from mailgate.service.log import get_logger
from mailgate.storage.exposed import sweep_expired
from mailgate.storage.store import Store
from mailgate.workers.periodic import every, repeat

log = get_logger("mailgate.workers.key_sweep")
INTERVAL = 86400.0  # once a day (and at start)


class ExposedKeySweeper:
    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock
        self.wake = asyncio.Event()

    async def run(self) -> None:
        await repeat("exposed_keys.sweep", self.run_once, self.wake, every(INTERVAL))

    async def run_once(self) -> int:
        swept = await sweep_expired(self.store, self.clock())
        if swept:
            log.info("exposed_keys.swept", rows=swept)
        return swept
