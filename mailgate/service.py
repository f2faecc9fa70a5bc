"""The daemon: wires store, pipeline, intake and outbox into tasks; starts and stops them.

`Daemon` is an async context manager so tests run the real daemon inside their own event
loop; `run_forever` adds signals and sd_notify for systemd.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from mailgate.config import Config
from mailgate.directory import Directory
from mailgate.intake.imap import MailboxWatcher
from mailgate.intake.smtp import PushHandler, start_listener
from mailgate.log import get_logger
from mailgate.notify import sd_notify
from mailgate.outbox import Outbox
from mailgate.pipeline import Clock, Pipeline, PipelineSettings
from mailgate.render import Renderer
from mailgate.sentlog import SentLog
from mailgate.store import Store
from mailgate.transport import DirectoryTransport, SmtpTransport, Transport

log = get_logger("mailgate.service")
SHUTDOWN_FLUSH = 10.0  # seconds SIGTERM allows the outbox to send what is queued


def system_clock() -> datetime:
    return datetime.now(UTC)


def make_transport(config: Config) -> Transport:
    if config.outbox_dir is not None:
        return DirectoryTransport(config.outbox_dir)
    assert config.smtp is not None  # load_config guarantees one of the two
    return SmtpTransport(config.smtp)


class Daemon:
    def __init__(self, config: Config, directory: Directory, *, clock: Clock = system_clock,
                 transport: Transport | None = None) -> None:
        self.config = config
        self.directory = directory
        self.clock = clock
        self.transport = transport or make_transport(config)
        self.renderer = Renderer(config.templates_dir)
        self.store: Store | None = None
        self.outbox: Outbox | None = None
        self.watchers: list[MailboxWatcher] = []
        self.listener: asyncio.Server | None = None
        self._tasks: list[asyncio.Task] = []

    @property
    def listen_port(self) -> int | None:
        if self.listener and self.listener.sockets:
            return int(self.listener.sockets[0].getsockname()[1])
        return None

    async def start(self) -> None:
        self.store = await Store.open(self.config.database)
        settings = PipelineSettings.from_config(self.config)
        pipeline = Pipeline(self.directory, self.renderer, settings, self.clock)
        self.sent_log = SentLog(self.config.state_dir / "outbox-sent.log")
        self.outbox = Outbox(self.store, self.transport, self.clock, self.sent_log)
        self._spawn(self.outbox.run(), "outbox")
        for box in self.config.mailboxes:
            watcher = MailboxWatcher(box, self.store, pipeline, self.outbox.notify, self.clock)
            self.watchers.append(watcher)
            self._spawn(watcher.run(), f"mailbox:{box.name}")
        if self.config.listener:
            handler = PushHandler(self.store, pipeline, self.directory, self.outbox.notify)
            self.listener = await start_listener(self.config.listener, handler)
        log.info("daemon.started", mailboxes=len(self.watchers),
                 listener=self.listen_port, database=str(self.config.database))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("task.died", task=task.get_name(), error=repr(task.exception()))

    async def stop(self) -> None:
        """Stop intake first, then give the outbox a bounded time to flush, then close."""
        if self.listener:
            self.listener.close()
            await self.listener.wait_closed()
        for watcher in self.watchers:
            watcher.stop()
        intake = [t for t in self._tasks if t.get_name() != "outbox"]
        await _cancel(intake)
        sender = [t for t in self._tasks if t.get_name() == "outbox"]
        if self.outbox and sender:
            self.outbox.close()
            # Bounded: a hung SMTP server must not keep systemd waiting.
            await asyncio.wait(sender, timeout=SHUTDOWN_FLUSH)
        await _cancel(self._tasks)
        with contextlib.suppress(Exception):
            await self.transport.close()
        if self.outbox:
            with contextlib.suppress(Exception):
                await self.outbox.apply_sent()
            self.outbox.sent_log.close()
        if self.store:
            await self.store.close()
        log.info("daemon.stopped")

    async def __aenter__(self) -> Daemon:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()


async def _cancel(tasks: list[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def run_forever(daemon: Daemon, on_ready: Callable[[], None] | None = None) -> None:
    """Run until SIGTERM or SIGINT, telling systemd where we are."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await daemon.start()
    if on_ready:
        on_ready()
    sd_notify("READY=1", f"STATUS=running: {len(daemon.watchers)} mailbox(es)")
    await stop.wait()
    sd_notify("STOPPING=1")
    log.info("daemon.stopping")
    await daemon.stop()
