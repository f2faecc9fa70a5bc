"""The daemon: wires store, pipeline, intake and outbox into tasks; starts, reloads, stops.

`Daemon` is an async context manager so tests run the real daemon inside their own event
loop; `run_forever` adds signals (SIGTERM/SIGINT stop, SIGHUP reloads) and sd_notify
(READY, STATUS, WATCHDOG, RELOADING, STOPPING) for systemd.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from mailgate.config.directory import Directory
from mailgate.config.loader import Setup, load_setup
from mailgate.config.settings import Config, ListenerConfig, MailboxConfig, MetricsConfig, Secret
from mailgate.core.render import Renderer
from mailgate.errors import ConfigError
from mailgate.intake.imap import MailboxWatcher
from mailgate.intake.pipeline import Clock
from mailgate.intake.reading import Reader, default_workers
from mailgate.outbound.alerts import Alerter
from mailgate.outbound.outbox import Outbox
from mailgate.outbound.sentlog import SentLog
from mailgate.outbound.transport import (
    Accepted,
    DirectoryTransport,
    RunResult,
    SmtpTransport,
    Stop,
    Transport,
)
from mailgate.service import metrics
from mailgate.service.cluster import Cluster
from mailgate.service.current import Current, Snapshot
from mailgate.service.log import get_logger
from mailgate.service.sdnotify import reloading, sd_notify, watchdog_interval
from mailgate.service.startup import ListenError, StartError
from mailgate.storage import errors as store_errors
from mailgate.storage.attachments import AttachmentStore
from mailgate.storage.leases import (
    LEADER,
    LeaseBook,
    leased_mailbox,
    mailbox_lease,
    node_lease,
    other_live_nodes,
)
from mailgate.storage.postgres.blobs import BlobStore
from mailgate.storage.store import OutboxRow, Store
from mailgate.workers.attachment_sweep import AttachmentSweeper
from mailgate.workers.autoclose import AutoCloser
from mailgate.workers.digest import Digester
from mailgate.workers.escalation import Escalator
from mailgate.workers.flood import FloodSummaries
from mailgate.workers.key_sweep import ExposedKeySweeper

if TYPE_CHECKING:  # imported with the first listener: aiosmtpd is for pushed mail only
    from mailgate.intake.smtp import PushHandler

log = get_logger("mailgate.service.daemon")
# Stopping takes at most LISTENER_CLOSE + QUIESCE_TIMEOUT + SHUTDOWN_FLUSH seconds, which
# must stay below the unit's TimeoutStopSec=30s.
SHUTDOWN_FLUSH = 10.0  # seconds SIGTERM allows the outbox to send what is queued
QUIESCE_TIMEOUT = 10.0  # seconds SIGTERM waits for an open transaction to commit
LISTENER_CLOSE = 5.0  # seconds SIGTERM waits for connected SMTP clients to finish
STATUS_INTERVAL = 2.0  # seconds between STATUS= refreshes (only sent when changed)
# A mailbox this node cannot reach for HANDOVER_AFTER lease times is left to the other
# nodes for HANDOVER_REST lease times (shared engines only).
HANDOVER_AFTER = 2
HANDOVER_REST = 4
# What `mailgate status` learns from the running daemon: its push listener and last reload.
STATUS_FILE = "daemon-status.json"


def system_clock() -> datetime:
    return datetime.now(UTC)


def make_transport(config: Config) -> Transport:
    if config.outbox_dir is not None:
        return DirectoryTransport(config.outbox_dir)
    assert config.smtp is not None  # load_config guarantees one of the two
    return SmtpTransport(config.smtp)


class SwappableTransport:
    """The outbox's transport; a reload replaces the one inside, never during a send.

    Sends run side by side (one per lane); a replacement or close waits until none is in
    flight and holds new ones back meanwhile."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self._sending = 0
        self._swapping = False
        self._changed = asyncio.Condition()

    @property
    def lanes(self) -> int:
        return self.inner.lanes

    async def send(self, row: OutboxRow, lane: int = 0) -> None:
        async with self._sending_on() as inner:
            await inner.send(row, lane)

    async def send_run(self, rows: Sequence[OutboxRow], lane: int, accepted: Accepted,
                       stop: Stop) -> RunResult:
        async with self._sending_on() as inner:
            return await inner.send_run(rows, lane, accepted, stop)

    @contextlib.asynccontextmanager
    async def _sending_on(self) -> AsyncIterator[Transport]:
        """The transport to send on; no replacement until the send is done."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self._swapping)
            self._sending += 1
            inner = self.inner
        try:
            yield inner
        finally:
            async with self._changed:
                self._sending -= 1
                self._changed.notify_all()

    async def close(self) -> None:
        async with self._alone():
            await self.inner.close()

    async def replace(self, new: Transport) -> None:
        async with self._alone():
            old, self.inner = self.inner, new
            with contextlib.suppress(Exception):  # the old server's problems are not ours
                await old.close()

    @contextlib.asynccontextmanager
    async def _alone(self) -> AsyncIterator[None]:
        """No send in flight, and none starting, until the block ends."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self._swapping)
            self._swapping = True
            await self._changed.wait_for(lambda: self._sending == 0)
        try:
            yield
        finally:
            async with self._changed:
                self._swapping = False
                self._changed.notify_all()


@dataclass(frozen=True)
class Reload:
    """A checked new setup and what applying it changes."""

    setup: Setup
    added: tuple[str, ...]  # mailbox names
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    transport: bool
    listener: bool
    metrics: bool = False  # [metrics] listen changed

    def summary(self) -> dict[str, Any]:
        return {"added": list(self.added), "removed": list(self.removed),
                "restarted": list(self.changed), "transport": self.transport,
                "listener": self.listener, "metrics": self.metrics,
                "departments": len(self.setup.directory.departments)}


class Daemon:
    def __init__(self, config: Config, directory: Directory, *, clock: Clock = system_clock,
                 transport: Transport | None = None, renderer: Renderer | None = None) -> None:
        # What start() builds the first snapshot from; `renderer`: the templates
        # load_setup checked, when the caller has them (no second read).
        self._given = Setup(config, directory, renderer or Renderer(config.templates_dir))
        # The configuration every component reads; replaced whole by a reload.
        self.current: Current | None = None
        self.clock = clock
        # An injected transport (demo, tests) is the caller's: a reload leaves it alone.
        self._own_transport = transport is None
        self.transport = SwappableTransport(transport or make_transport(config))
        self.store: Store | None = None
        self.outbox: Outbox | None = None
        self.escalator: Escalator | None = None
        self.autocloser: AutoCloser | None = None
        self.digester: Digester | None = None
        self.floods: FloodSummaries | None = None
        self.key_sweeper: ExposedKeySweeper | None = None
        self.sweeper: AttachmentSweeper | None = None
        self.handler: PushHandler | None = None
        self.watchers: list[MailboxWatcher] = []
        self.reader = Reader(read_processes(config))  # the watchers' reading processes
        self.alerter: Alerter | None = None
        self.listener: asyncio.Server | None = None
        # What the open listener was started with; after a failed reload, not the config.
        self.listener_config: ListenerConfig | None = None
        self.metrics: metrics.Registry | None = None
        self.metrics_server: asyncio.Server | None = None
        self.reload_problem: str | None = None  # why the last reload failed, for STATUS=
        self.last_reload: dict[str, Any] | None = None  # at, ok, problem; for `status`
        self._tasks: list[asyncio.Task] = []
        self._watcher_tasks: dict[str, asyncio.Task] = {}
        self.cluster: Cluster | None = None
        self.lease_store: Store | None = None  # leases' own connection (shared engines)
        self.lease_book: LeaseBook | None = None
        self._leader_tasks: list[asyncio.Task] = []

    @property
    def config(self) -> Config:
        """The configuration in effect: the running snapshot's (before start(), the given)."""
        return self.current.snapshot.config if self.current else self._given.config

    @property
    def listen_port(self) -> int | None:
        if self.listener and self.listener.sockets:
            return int(self.listener.sockets[0].getsockname()[1])
        return None

    @property
    def metrics_port(self) -> int | None:
        if self.metrics_server and self.metrics_server.sockets:
            return int(self.metrics_server.sockets[0].getsockname()[1])
        return None

    async def start(self) -> None:
        """Start everything, or stop what did start before raising (StartError: a port in
        use...): a leftover task, socket or database thread would keep the process alive
        after a failed start, a hang instead of an exit."""
        try:
            await self._start()
        except BaseException:
            with contextlib.suppress(Exception):
                await self._abandon()
            raise

    async def _start(self) -> None:
        try:
            self.store = await Store.open(self.config.store_target,
                                          password=self.config.store_password,
                                          state_dir=self.config.state_dir)
        except store_errors.STORE_ERRORS as exc:  # libpq names the server, never the password
            if self.config.database_server is None:
                raise
            raise StartError(f"cannot open the database: {exc}") from None
        if self.config.metrics:
            # Before any task runs, so no event goes uncounted.
            self.metrics = metrics.Registry()
            metrics.install(self.metrics)
            await self._start_metrics(self.config.metrics, at_start=True)
        given = self._given
        self.current = Current(Snapshot.build(given.config, given.directory, given.renderer,
                                              self.clock))
        self.sent_log = SentLog(self.config.state_dir / "outbox-sent.log")
        self.escalator = Escalator(self.store, self.current, self.clock, self._mail_queued)
        self.outbox = Outbox(self.store, self.transport, self.clock, self.sent_log,
                             self.escalator.write)
        # Bound before any task runs: a port in use ends the start before mail is sent or
        # an IMAP login starts in a worker thread (which would hold up the exit).
        if self.config.listener:
            self.listener = await _listen(self.config.listener, self._push_handler())
            self.listener_config = self.config.listener
        self._spawn(self.outbox.run(), "outbox")  # every node sends
        if self.config.mailboxes:  # only watchers read ahead (not the demo, not push)
            self._spawn(self.reader.warm(), "reading.warm")  # while the mailboxes log in
        self.digester = Digester(self.store, self.current, self.clock, self.outbox.notify)
        self.autocloser = AutoCloser(self.store, self.current, self.clock)
        self.floods = FloodSummaries(self.store, self.current, self.clock, self._mail_queued)
        self.key_sweeper = ExposedKeySweeper(self.store, self.clock)
        files = self.store.attachments()
        if isinstance(files, AttachmentStore | BlobStore):
            # Files are this node's own (its state directory); blobs are shared, and a
            # second node's sweep deletes nothing the first one's did not: every node sweeps.
            self.sweeper = AttachmentSweeper(self.store, files)
            self._spawn(self.sweeper.run(), "attachments.sweep")
        # The leader runs the periodic workers, a mailbox's lease holder its watcher; the
        # first round is awaited, so with one daemon everything runs when start returns.
        self.lease_store = await self._open_lease_store()
        self.lease_book = LeaseBook(self.lease_store)
        self.cluster = Cluster(self.lease_book, self.config.node,
                               self.config.cluster, self._gained, self._lost)
        self.cluster.want(self._wanted_leases(self.config))
        await self.cluster.round()
        self._spawn(self.cluster.run(), "cluster")
        if self.store.engine.shared:  # alone on SQLite, there is nobody to hand over to
            self._spawn(self._hand_over_unreachable(), "cluster.handover")
        await self.record_status()
        log.info("daemon.started", mailboxes=len(self.watchers),
                 listener=self.listen_port, database=self.store.describe())

    async def _start_metrics(self, config: MetricsConfig, at_start: bool = False) -> None:
        assert self.metrics is not None
        try:
            self.metrics_server = await metrics.serve(config.host, config.port, self.metrics,
                                                      self._gauges)
        except OSError as exc:
            if at_start:  # the admin sees it at once and fixes it, as for the SMTP port
                raise ListenError(config.host, config.port, exc, "[metrics] listen",
                                  "serve metrics") from None
            # On reload, a metrics port in use must not stop mail from flowing.
            log.error("metrics.listen_failed", listen=f"{config.host}:{config.port}",
                      error=str(exc))
            self.reload_problem = f"cannot serve metrics on {config.host}:{config.port}"

    async def _gauges(self) -> list[tuple[str, metrics.Labels, float]]:
        """Read at each scrape: outbox depth, quarantine, open tickets and SLA state."""
        from mailgate.storage.queries import risk_horizons, sla_overview

        assert self.store is not None and self.current is not None
        depth = await self.store.queued_count()
        if self.outbox:  # accepted by the server, not yet marked in the database
            depth = max(0, depth - len(self.outbox.sent_log.pending))
        now = self.clock()
        horizons = risk_horizons(self.current.snapshot.directory, now)
        load = await sla_overview(self.store, now, horizons, committed=True)
        found: list[tuple[str, metrics.Labels, float]] = [
            ("mailgate_outbox_depth", (), depth),
            ("mailgate_quarantine_held", (), await self.store.quarantine_count())]
        for dept in load:
            for state, count in (("open", dept.open), ("at_risk", dept.at_risk),
                                 ("breached", dept.breached)):
                found.append(("mailgate_tickets",
                              (("department", dept.department), ("state", state)), count))
        return found

    def _push_handler(self) -> PushHandler:
        """What every listener of this daemon hands its mail to: one for the daemon's life
        (its bound on large messages outlasts a reload), made with the first listener."""
        if self.handler is None:
            from mailgate.intake.smtp import PushHandler

            assert self.store and self.current
            self.handler = PushHandler(self.store, self.current, self.committed)
        return self.handler

    def _mail_queued(self) -> None:
        if self.outbox:
            self.outbox.notify()

    def committed(self) -> None:
        """Intake committed: mail may be queued and SLA clocks may have changed."""
        if self.outbox:
            self.outbox.notify()
        if self.escalator:
            self.escalator.notify()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("task.died", task=task.get_name(), error=repr(task.exception()))

    def _start_watcher(self, box: MailboxConfig) -> None:
        assert self.store and self.current and self.outbox
        if self.alerter is None:  # one for the daemon's life: it remembers who failed
            self.alerter = Alerter(self.store, self.config.state_dir, self.current,
                                   self._mail_queued, clock=self.clock)
        # Each watcher has its own task, thread and error handling: one failing mailbox
        # (refused login, revoked token) never stops another.
        watcher = MailboxWatcher(box, self.store, self.current, self.committed, self.clock,
                                 reporter=self.alerter, reader=self.reader)
        self.watchers.append(watcher)
        self._watcher_tasks[box.name] = self._spawn(watcher.run(), f"mailbox:{box.name}")

    # --- what this node runs follows the leases it holds --------------------------------

    async def _open_lease_store(self) -> Store:
        """On a shared engine, leases get a connection of their own: on the writer, a
        renewal would wait behind an intake batch, time out, and the node would stop its
        mailboxes for nothing. SQLite has one writer whichever the connection (and one
        daemon): the store's own will do."""
        assert self.store is not None
        if not self.store.engine.shared:
            return self.store
        return await Store.open(self.config.store_target, migrate=False,
                                password=self.config.store_password,
                                state_dir=self.config.state_dir)

    @staticmethod
    def _wanted_leases(config: Config) -> list[str]:
        # The node's own lease stands for nothing but "this node is alive" (status, and
        # whether a mailbox can be handed over to anyone).
        return [node_lease(config.node), LEADER,
                *(mailbox_lease(box.name) for box in config.mailboxes)]

    async def _gained(self, lease: str) -> None:
        if lease == LEADER:
            self._start_leader_work()
            return
        box = next((b for b in self.config.mailboxes if b.name == leased_mailbox(lease)), None)
        if box is not None and box.name not in self._watcher_tasks:
            self._start_watcher(box)

    async def _lost(self, lease: str) -> None:
        """Stop what the lease stood for; a transaction under way commits first, if it
        can within the time the lease has left, else it is cut off and rolls back."""
        if lease == LEADER:
            doomed, self._leader_tasks = self._leader_tasks, []
            self._tasks = [t for t in self._tasks if t not in doomed]
        else:
            name = leased_mailbox(lease)
            if name not in self._watcher_tasks:  # the node's own lease, or not started
                return
            doomed = self._detach_watchers((name,))
        assert self.cluster is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.cluster.settings.renew_every / 2):
                await self._between_transactions(lambda: _cancel_now(doomed))
        await _cancel(doomed)

    async def _hand_over_unreachable(self) -> None:
        """A mailbox this node has not reached for HANDOVER_AFTER leases goes to the other
        nodes for HANDOVER_REST leases: a network split between this node and one IMAP
        server must not keep the mailbox unread while another node could read it. Only
        for network trouble: a refused login fails on every node alike."""
        assert self.cluster is not None
        lease = self.cluster.settings.lease_seconds
        failing_since: dict[str, float] = {}
        while True:
            await asyncio.sleep(self.cluster.settings.renew_every)
            now = asyncio.get_running_loop().time()
            for watcher in list(self.watchers):
                name = watcher.config.name
                if watcher.state.mode != "reconnecting":
                    failing_since.pop(name, None)
                    continue
                since = failing_since.setdefault(name, now)
                if now - since >= HANDOVER_AFTER * lease and await self._someone_else():
                    log.warning("cluster.handing_over", node=self.config.node, mailbox=name,
                                unreachable_for=round(now - since, 1),
                                error=watcher.state.last_error)
                    failing_since.pop(name)
                    self.cluster.rest(mailbox_lease(name), HANDOVER_REST * lease)

    async def _someone_else(self) -> bool:
        """Another node is alive to take a mailbox over (alone, this one keeps trying)."""
        assert self.lease_book is not None
        try:
            return bool(await other_live_nodes(self.lease_book, self.config.node))
        except Exception:  # the database is away: keep what we have, the leases decide
            return False

    def _start_leader_work(self) -> None:
        """The periodic workers: one node runs them, or a digest would go out once per node."""
        assert self.escalator and self.digester and self.autocloser and self.floods
        assert self.key_sweeper
        if self._leader_tasks:  # already running
            return
        self._leader_tasks = [
            self._spawn(self.escalator.run(), "escalation"),
            self._spawn(self.digester.run(), "digest"),
            self._spawn(self.autocloser.run(), "autoclose"),
            self._spawn(self.floods.run(), "flood"),
            self._spawn(self.key_sweeper.run(), "exposed_keys.sweep")]

    def _detach_watchers(self, names: tuple[str, ...]) -> list[asyncio.Task]:
        """Forget these mailboxes' watchers and return their tasks, still to be cancelled."""
        for watcher in [w for w in self.watchers if w.config.name in names]:
            watcher.stop()
            self.watchers.remove(watcher)
            metrics.METRICS.forget_mailbox(watcher.config.name)
        tasks = [self._watcher_tasks.pop(name) for name in names]
        self._tasks = [t for t in self._tasks if t not in tasks]
        return tasks

    async def _between_transactions(self, action: Callable[[], None]) -> None:
        """Run a synchronous action while no transaction is open (see Store)."""
        if self.store is None:
            action()
            return
        async with self.store.between_transactions():
            action()

    # --- reload ---------------------------------------------------------------------

    async def prepare_reload(self) -> Reload:
        """Read and check the new setup; ConfigError (one line per problem) if unusable."""
        setup = await asyncio.to_thread(load_setup, self.config.path)
        problems = needs_restart(self.config, setup.config)
        if problems:
            raise ConfigError(problems)
        old = {b.name: fingerprint(b) for b in self.config.mailboxes}
        new = {b.name: fingerprint(b) for b in setup.config.mailboxes}
        return Reload(
            setup,
            added=tuple(n for n in new if n not in old),
            removed=tuple(n for n in old if n not in new),
            changed=tuple(n for n in new if n in old and new[n] != old[n]),
            transport=self._own_transport and transport_key(self.config) != transport_key(
                setup.config),
            listener=self.config.listener != setup.config.listener,
            metrics=self.config.metrics != setup.config.metrics)

    async def apply_reload(self, plan: Reload) -> None:
        """Swap in the new snapshot between transactions, then restart only what changed;
        a listener or metrics port that cannot be bound is this reload's problem."""
        current = self.current
        assert current is not None  # started
        self.reload_problem = None
        old = self.config
        new = plan.setup
        snapshot = Snapshot.build(new.config, new.directory, new.renderer, self.clock)
        doomed: list[asyncio.Task] = []
        # Only the mailboxes whose lease this node holds have a watcher here.
        running = tuple(n for n in plan.removed + plan.changed if n in self._watcher_tasks)

        def swap() -> None:
            # Cancelled here, a watcher can never start another transaction with the
            # mailbox settings (e.g. department) that the new directory may not know.
            doomed.extend(self._detach_watchers(running))
            _cancel_now(doomed)
            # One assignment: every component reads it at the start of its next round.
            current.snapshot = snapshot

        await self._between_transactions(swap)
        await _cancel(doomed)
        boxes = {b.name: b for b in self.config.mailboxes}
        for name in running:
            if name in plan.changed:
                self._start_watcher(boxes[name])
        if self.cluster is not None:  # new mailboxes' leases now, removed ones given back
            self.cluster.want(self._wanted_leases(self.config))
            await self.cluster.round()
        self.reader.resize(read_processes(self.config))
        if plan.transport:
            await self.transport.replace(make_transport(self.config))
        if plan.listener:
            await self._replace_listener(old.listener, self.config.listener)
        if plan.metrics:
            await self._replace_metrics(self.config.metrics)
        log.info("reload.applied", **plan.summary())

    async def _replace_listener(self, old: ListenerConfig | None,
                                new: ListenerConfig | None) -> None:
        """Listen where the new config says; if that bind fails, the old socket stays."""
        previous = self.listener
        old = self.listener_config or old  # a failed reload left the older one open
        same_address = old and new and (old.host, old.port) == (new.host, new.port)
        if previous and (same_address or new is None):
            previous.close()  # connected clients finish their session; no new ones
            previous = self.listener = self.listener_config = None
        if new:
            from mailgate.intake.smtp import start_listener

            try:
                self.listener = await start_listener(new, self._push_handler())
                self.listener_config = new
            except OSError as exc:
                log.error("reload.listener_failed", listen=f"{new.host}:{new.port}",
                          error=str(exc))
                self.reload_problem = f"cannot listen on {new.host}:{new.port}"
                return
        if previous:
            previous.close()

    async def _replace_metrics(self, new: MetricsConfig | None) -> None:
        """Serve metrics where the new config says; counters carry on across reloads."""
        await self._close_metrics()
        if new is None:
            return
        if self.metrics is None:
            self.metrics = metrics.Registry()
            metrics.install(self.metrics)
        await self._start_metrics(new)

    async def _close_metrics(self) -> None:
        server, self.metrics_server = self.metrics_server, None
        if server is not None:
            server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), LISTENER_CLOSE)

    # --- status and stop ------------------------------------------------------------

    async def status_line(self) -> str:
        """One line for `systemctl status`: mailbox modes, outbox depth, reload trouble."""
        modes = Counter(w.state.mode for w in self.watchers)
        detail = ", ".join(f"{n} {mode}" for mode, n in sorted(modes.items()))
        line = f"{len(self.watchers)} mailbox(es)" + (f" ({detail})" if detail else "")
        if self.listener:
            line += f", SMTP push on port {self.listen_port}"
        if self.metrics_server:
            line += f", metrics on port {self.metrics_port}"
        depth = await self.store.queued_count() if self.store else 0
        if self.outbox:  # accepted by the server, not yet marked in the database
            depth = max(0, depth - len(self.outbox.sent_log.pending))
        line += f"; outbox {depth} queued"
        if self.outbox and self.outbox.server_backoff:
            line += " (SMTP server unavailable)"
        if self.reload_problem:
            line += f"; last reload failed: {self.reload_problem}"
        return line + self._cluster_status()

    def _cluster_status(self) -> str:
        """What other nodes do for this one; nothing when it holds every lease (the
        single daemon's normal case)."""
        if self.cluster is None:
            return ""
        parts = []
        elsewhere = len(self.config.mailboxes) - len(self.watchers)
        if elsewhere > 0:
            parts.append(f"{elsewhere} mailbox(es) on other nodes")
        if not self.cluster.holds(LEADER):
            parts.append("periodic workers on another node")
        if self.cluster.failing:
            parts.append(f"leases not renewed: {self.cluster.failing}")
        return f"; node {self.config.node}: {', '.join(parts)}" if parts else ""

    def status_report(self, running: bool = True) -> dict[str, Any]:
        listener = self.listener_config
        return {
            "running": running, "pid": os.getpid(), "at": self.clock().isoformat(),
            "listener": None if not (running and listener and self.listener) else {
                "listen": f"{listener.host}:{self.listen_port}",
                "protocol": listener.protocol},
            "last_reload": self.last_reload}

    async def record_status(self, running: bool = True) -> None:
        """Write <state>/daemon-status.json (temp file, then rename) for `mailgate status`;
        best effort: a full disk must not stop mail."""
        path = self.config.state_dir / STATUS_FILE
        text = json.dumps(self.status_report(running), indent=1)

        def write() -> None:
            temp = path.with_suffix(".tmp")
            temp.write_text(text)
            os.replace(temp, path)

        try:
            await asyncio.to_thread(write)
        except OSError as exc:
            log.warning("daemon.status_not_written", path=str(path), error=str(exc))

    async def stop(self) -> None:
        """Stop intake, let open transactions commit, flush the outbox (bounded), close."""
        await self._close_listener()
        await self.record_status(running=False)
        for watcher in self.watchers:
            watcher.stop()
        intake = [t for t in self._tasks if t.get_name() != "outbox"]
        try:
            async with asyncio.timeout(QUIESCE_TIMEOUT):
                await self._between_transactions(lambda: _cancel_now(intake))
        except TimeoutError:  # cut off, it rolls back; its batch is read again next start
            log.warning("daemon.transaction_interrupted", waited=QUIESCE_TIMEOUT)
        await _cancel(intake)
        if self.cluster is not None:  # nothing of theirs runs any more: hand them over
            await self.cluster.release()
        sender = [t for t in self._tasks if t.get_name() == "outbox"]
        if self.outbox and sender:
            self.outbox.close()
            # Bounded: a hung SMTP server must not keep systemd waiting.
            await asyncio.wait(sender, timeout=SHUTDOWN_FLUSH)
        await _cancel(self._tasks)
        await self._close_resources()
        log.info("daemon.stopped")

    async def _abandon(self) -> None:
        """Undo a start that failed halfway. Nothing is flushed: queued mail goes out at
        the next start."""
        if self.listener is not None:
            self.listener.close()
        for watcher in self.watchers:
            watcher.stop()
        await _cancel(self._tasks)
        await self._close_resources()

    async def _close_listener(self) -> None:
        if self.listener is None:
            return
        self.listener.close()
        # Since Python 3.12 this waits for connected clients; an MTA idling on a cached
        # connection must not hold up the stop.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.listener.wait_closed(), LISTENER_CLOSE)

    async def _close_resources(self) -> None:
        await self._close_metrics()
        if self.metrics is not None and metrics.METRICS is self.metrics:
            metrics.install(metrics.Metrics())
        with contextlib.suppress(Exception):
            await self.transport.close()
        self.reader.close()
        if self.outbox:
            with contextlib.suppress(Exception):
                await self.outbox.apply_sent()
            self.outbox.sent_log.close()
        if self.lease_store and self.lease_store is not self.store:
            with contextlib.suppress(Exception):
                await self.lease_store.close()
        if self.store:
            await self.store.close()

    async def __aenter__(self) -> Daemon:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()


# --- comparing setups ---------------------------------------------------------------

def needs_restart(old: Config, new: Config) -> list[str]:
    """Changes a reload cannot apply: the open database and sent log live in [state] dir;
    the node's name is whose leases it holds."""
    found = []
    if old.state_dir != new.state_dir:
        found.append(f"{new.path}: state.dir: changed from {old.state_dir} to "
                     f"{new.state_dir}; the database cannot move while mailgate runs: "
                     f"restart it to use the new one (systemctl restart mailgate)")
    if old.cluster != new.cluster:
        found.append(f"{new.path}: cluster: node or lease_seconds changed; the leases this "
                     f"daemon holds were taken under the old ones: restart it to use the "
                     f"new ones (systemctl restart mailgate)")
    return found


def fingerprint(value: object) -> object:
    """A comparable form of a config dataclass; secrets by digest (Secret has no __eq__)."""
    if isinstance(value, Secret):
        return hashlib.sha256(value.reveal().encode()).hexdigest()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return tuple((f.name, fingerprint(getattr(value, f.name)))
                     for f in dataclasses.fields(value))
    return value


def read_processes(config: Config) -> int:
    return config.read_processes if config.read_processes is not None else default_workers()


def transport_key(config: Config) -> object:
    return fingerprint(config.smtp), config.outbox_dir


# --- running under systemd ----------------------------------------------------------

async def _listen(config: ListenerConfig, handler: PushHandler) -> asyncio.Server:
    from mailgate.intake.smtp import start_listener

    try:
        return await start_listener(config, handler)
    except OSError as exc:
        raise ListenError(config.host, config.port, exc, "[intake.smtp] listen") from None


def _cancel_now(tasks: list[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()


async def _cancel(tasks: list[asyncio.Task]) -> None:
    _cancel_now(tasks)
    await asyncio.gather(*tasks, return_exceptions=True)


async def run_forever(daemon: Daemon, on_ready: Callable[[], None] | None = None) -> None:
    """Run until SIGTERM or SIGINT, reload on SIGHUP, telling systemd where we are."""
    stop, hup = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Before start: an early SIGHUP is applied once we run instead of killing the process.
    loop.add_signal_handler(signal.SIGHUP, hup.set)
    watchdog = _start_watchdog()
    try:
        await daemon.start()
        if on_ready:
            on_ready()
        sd_notify("READY=1", f"STATUS={await daemon.status_line()}")
        helpers = [asyncio.create_task(_reload_on(hup, daemon), name="reload"),
                   asyncio.create_task(_report_status(daemon), name="status")]
        await stop.wait()
        sd_notify("STOPPING=1", "STATUS=stopping: finishing transactions, flushing the outbox")
        log.info("daemon.stopping")
        await _cancel(helpers)
        await daemon.stop()
    finally:
        if watchdog:
            await _cancel([watchdog])


async def reload(daemon: Daemon) -> bool:
    """One SIGHUP: check the new setup, then apply it between RELOADING=1 and READY=1."""
    log.info("reload.requested", config=str(daemon.config.path))
    try:
        plan = await daemon.prepare_reload()
    except ConfigError as exc:
        return await _rejected(daemon, exc.problems)
    except Exception as exc:  # a bug in checking must not take the running daemon down
        log.exception("reload.check_failed")
        return await _rejected(daemon, [f"{type(exc).__name__}: {exc}"])
    sd_notify(*reloading())
    try:
        await daemon.apply_reload(plan)
    except Exception as exc:
        log.exception("reload.failed")
        daemon.reload_problem = f"{type(exc).__name__}: {exc}"
    await _reloaded(daemon)
    sd_notify("READY=1", f"STATUS={await daemon.status_line()}")
    return daemon.reload_problem is None


async def _reloaded(daemon: Daemon) -> None:
    daemon.last_reload = {"at": daemon.clock().isoformat(), "ok": daemon.reload_problem is None,
                          "problem": daemon.reload_problem}
    await daemon.record_status()


async def _rejected(daemon: Daemon, problems: list[str]) -> bool:
    log.error("reload.rejected", problems=problems,
              note="the previous configuration stays in effect")
    daemon.reload_problem = f"rejected, {len(problems)} problem(s) (see the log)"
    await _reloaded(daemon)
    sd_notify(f"STATUS={await daemon.status_line()}")
    return False


async def _reload_on(hup: asyncio.Event, daemon: Daemon) -> None:
    # One reload at a time; signals arriving meanwhile are folded into one more reload.
    while True:
        await hup.wait()
        hup.clear()
        await reload(daemon)


async def _report_status(daemon: Daemon) -> None:
    last = ""
    while True:
        await asyncio.sleep(STATUS_INTERVAL)
        try:
            line = await daemon.status_line()
        except store_errors.STORE_ERRORS:  # status is best effort; the database may be busy or full
            continue
        if line != last:
            sd_notify(f"STATUS={line}")
            last = line


def _start_watchdog() -> asyncio.Task | None:
    interval = watchdog_interval()
    if interval is None:
        return None
    log.info("watchdog.enabled", interval=interval)
    return asyncio.create_task(_feed_watchdog(interval), name="watchdog")


async def _feed_watchdog(interval: float) -> None:
    # A task on the event loop, not a thread: when the loop is stuck the pings stop, which
    # is exactly what systemd's watchdog is there to notice (it then restarts us).
    while True:
        sd_notify("WATCHDOG=1")
        await asyncio.sleep(interval)
