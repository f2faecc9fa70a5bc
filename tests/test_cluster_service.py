"""service/cluster.py: what a node runs follows the leases it holds.

First on a scripted lease book and a hand-moved clock (deterministic: when a failing node
stops what it holds), then two nodes on two connections to one SQLite file: one dies, the
other takes everything over within the lease time (one SQLite file by default, one
PostgreSQL database with MAILGATE_TEST_ENGINE=postgresql).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailgate.config.loader import load_setup
from mailgate.config.settings import ClusterConfig
from mailgate.service.cluster import Cluster
from mailgate.service.daemon import Daemon
from mailgate.storage.leases import LEADER, Lease, LeaseBook, mailbox_lease
from mailgate.storage.store import Store
from tests.harness import database
from tests.mailservers import Mailbox, SmtpSink, free_port, write_daemon_config

BOXES = [mailbox_lease(name) for name in ("it", "hr", "facilities")]
WANTED = [LEADER, *BOXES]
EXPIRED_SECONDS = -1.0  # a lease written with negative seconds has run out already


class ScriptedBook:
    """Grants what `grant` says (everything by default), or fails with `error`."""

    def __init__(self) -> None:
        self.grant: set[str] | None = None
        self.error: Exception | None = None
        self.released: list[str] = []

    async def claim(self, names: Iterable[str], holder: str,
                    seconds: float) -> dict[str, Lease]:
        if self.error:
            raise self.error
        now = datetime.now(UTC)
        return {n: Lease(n, holder, now + timedelta(seconds=seconds), now, True)
                for n in names if self.grant is None or n in self.grant}

    async def release(self, names: Sequence[str], holder: str) -> None:
        self.released += names


class Node:
    """A cluster member whose 'work' is the set of leases it is running."""

    def __init__(self, book: object, name: str, settings: ClusterConfig,
                 clock: list[float] | None = None) -> None:
        self.running: set[str] = set()
        self.events: list[str] = []
        monotonic = (lambda: clock[0]) if clock is not None else time.monotonic
        self.cluster = Cluster(book, name, settings, self._gain,  # type: ignore[arg-type]
                               self._loss, monotonic)
        self.cluster.want(WANTED)

    async def _gain(self, lease: str) -> None:
        assert lease not in self.running
        self.running.add(lease)
        self.events.append(f"+{lease}")

    async def _loss(self, lease: str) -> None:
        self.running.remove(lease)
        self.events.append(f"-{lease}")


SETTINGS = ClusterConfig(node="a", lease_seconds=30.0)  # renewed every 10 s


async def test_everything_granted_is_started_once_and_kept_while_renewed() -> None:
    clock = [0.0]
    node = Node(ScriptedBook(), "a", SETTINGS, clock)
    await node.cluster.round()
    for clock[0] in (10.0, 20.0, 30.0):
        await node.cluster.round()
    assert node.running == set(WANTED)
    assert node.events == [f"+{name}" for name in WANTED]


async def test_a_lease_taken_by_another_node_is_stopped_at_the_next_round() -> None:
    clock, book = [0.0], ScriptedBook()
    node = Node(book, "a", SETTINGS, clock)
    await node.cluster.round()
    book.grant = {LEADER, *BOXES[1:]}  # someone else won mailbox:it
    clock[0] = 10.0
    await node.cluster.round()
    assert node.running == {LEADER, *BOXES[1:]}
    assert node.events[-1] == "-mailbox:it"
    assert book.released == []  # not ours to give back


async def test_while_the_database_fails_work_stops_before_the_lease_could_expire() -> None:
    clock, book = [0.0], ScriptedBook()
    node = Node(book, "a", SETTINGS, clock)
    await node.cluster.round()  # held until 30 by our own clock
    book.error = ConnectionError("database unreachable")
    clock[0] = 10.0
    await node.cluster.round()  # the round at 20 can still renew: keep going
    assert node.running == set(WANTED)
    assert node.cluster.failing == "ConnectionError: database unreachable"
    clock[0] = 20.0
    await node.cluster.round()  # the next round (30) would be too late: stop now
    assert node.running == set()
    book.error = None
    clock[0] = 30.0
    await node.cluster.round()  # the database is back and nobody took them: start again
    assert node.running == set(WANTED) and node.cluster.failing is None


async def test_a_round_that_hangs_counts_as_failed_after_the_renewal_interval() -> None:
    class HangingBook(ScriptedBook):
        async def claim(self, names: Iterable[str], holder: str,
                        seconds: float) -> dict[str, Lease]:
            await asyncio.Event().wait()  # a database that never answers
            raise AssertionError

    node = Node(HangingBook(), "a", ClusterConfig(node="a", lease_seconds=1.0))
    node.cluster.held = {name: time.monotonic() + 0.1 for name in WANTED}
    node.running = set(WANTED)
    await node.cluster.round()  # returns after renew_every (1/3 s), not never
    assert node.cluster.failing == "TimeoutError"
    assert node.running == set()


async def test_a_lease_no_longer_wanted_is_stopped_and_given_back_at_once() -> None:
    clock, book = [0.0], ScriptedBook()
    node = Node(book, "a", SETTINGS, clock)
    await node.cluster.round()
    node.cluster.want([LEADER, *BOXES[:2]])  # a reload removed the third mailbox
    await node.cluster.round()
    assert node.running == {LEADER, *BOXES[:2]}
    assert book.released == [BOXES[2]]


# --- two nodes, one database ------------------------------------------------------------

@pytest.fixture
async def two_books(tmp_path: Path) -> AsyncIterator[tuple[LeaseBook, LeaseBook]]:
    target = database(tmp_path / "state")  # two connections to one database: two nodes
    stores = [await Store.open(target), await Store.open(target)]
    yield LeaseBook(stores[0]), LeaseBook(stores[1])
    for store in stores:
        await store.close()


async def wait_until(check: object, timeout: float) -> float:
    """Seconds until check() is true; fails after timeout."""
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - started < timeout, "condition not reached in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_a_dead_nodes_leases_are_taken_over_within_the_lease_time(
        two_books: tuple[LeaseBook, LeaseBook]) -> None:
    settings = ClusterConfig(lease_seconds=1.5)
    a, b = Node(two_books[0], "node-a", settings), Node(two_books[1], "node-b", settings)
    task_a = asyncio.create_task(a.cluster.run())
    await wait_until(lambda: a.running == set(WANTED), 5)
    started = time.monotonic()
    task_b = asyncio.create_task(b.cluster.run())
    try:
        # b tries at least twice and wins nothing while a lives.
        await wait_until(lambda: b.cluster.last_round > started + settings.renew_every, 5)
        assert b.running == set() and b.events == []
        task_a.cancel()  # killed: no release, its leases run out on their own
        await asyncio.gather(task_a, return_exceptions=True)
        killed = time.monotonic()
        await wait_until(lambda: b.running == set(WANTED), 3 * settings.lease_seconds)
        takeover = time.monotonic() - killed
        print(f"\ntakeover after the holder died: {takeover:.2f} s "
              f"(lease {settings.lease_seconds} s, renewed every {settings.renew_every} s)")
        # The lease a renewed last ran out at most lease_seconds after the kill; b's next
        # round came at most renew_every later.
        assert takeover <= settings.lease_seconds + settings.renew_every * 1.5
    finally:
        task_b.cancel()
        await asyncio.gather(task_b, return_exceptions=True)


async def test_a_clean_stop_hands_every_lease_over_at_the_next_round(
        two_books: tuple[LeaseBook, LeaseBook]) -> None:
    settings = ClusterConfig(lease_seconds=60.0)  # expiry would take a minute
    a, b = Node(two_books[0], "node-a", settings), Node(two_books[1], "node-b", settings)
    await a.cluster.round()
    await b.cluster.round()
    assert b.running == set()
    await a.cluster.release()
    await b.cluster.round()
    assert b.running == set(WANTED)
    assert {lease.holder for lease in await two_books[0].all()} == {"node-b"}


# --- the daemon: watchers and workers follow the leases ---------------------------------

async def test_a_second_daemon_runs_nothing_until_the_first_stops_then_everything(
        tmp_path: Path, smtp_sink: SmtpSink) -> None:
    """Two daemons on one database: one leads and watches, the other sends only; a clean
    stop hands both roles over without waiting for the leases to expire."""
    nobody = free_port()  # the mailbox's server refuses: its watcher just keeps retrying
    box = Mailbox("it", "127.0.0.1", "it", port=nobody, password_env="MAILGATE_TEST_SECRET",
                  poll_interval="1s")
    configs = [write_daemon_config(tmp_path / f"{name}.toml", sink=smtp_sink, mailboxes=[box],
                                   tables=f'[cluster]\nnode = "{name}"\nlease_seconds = 60\n')
               for name in ("node-a", "node-b")]
    os.environ.setdefault("MAILGATE_TEST_SECRET", "x")
    daemons = []
    for path in configs:
        setup = load_setup(path)
        daemons.append(Daemon(setup.config, setup.directory, renderer=setup.renderer))
    first, second = daemons
    await first.start()
    await second.start()
    try:
        assert [w.config.name for w in first.watchers] == ["it"]
        assert first.cluster and first.cluster.holds(LEADER)
        assert {t.get_name() for t in first._leader_tasks} == {
            "escalation", "digest", "autoclose", "flood", "exposed_keys.sweep"}
        assert second.watchers == [] and second._leader_tasks == []
        assert "node" not in await first.status_line()  # it holds everything
        assert (await second.status_line()).endswith(
            "; node node-b: 1 mailbox(es) on other nodes, periodic workers on another node")
        assert not any(t.get_name() == "escalation" for t in second._tasks)
        # Each node's own lease says it is alive: a mailbox could be handed over.
        assert await first._someone_else() and await second._someone_else()
        await first.stop()
        assert not await second._someone_else()  # alone now: it keeps what it cannot reach
        assert second.cluster is not None
        await second.cluster.round()  # its next renewal, a minute before expiry
        assert [w.config.name for w in second.watchers] == ["it"]
        assert second.cluster.holds(LEADER) and len(second._leader_tasks) == 5
    finally:
        for daemon in daemons:
            if daemon.cluster and daemon.cluster.held:
                await daemon.stop()
    store = await Store.open(database(tmp_path / "state"))
    try:
        assert await LeaseBook(store).all() == []  # both stopped cleanly: all given back
    finally:
        await store.close()


async def test_a_failure_in_starting_work_does_not_end_the_renewals() -> None:
    calls: list[str] = []

    async def broken_gain(lease: str) -> None:
        calls.append(lease)
        raise RuntimeError("a bug in starting a watcher")

    async def loss(lease: str) -> None:
        pass

    cluster = Cluster(ScriptedBook(), "a", ClusterConfig(lease_seconds=1.0), broken_gain, loss)
    cluster.want([LEADER])
    task = asyncio.create_task(cluster.run())
    try:
        # The lease stays ours in the database; each round tries to start its work again.
        await wait_until(lambda: len(calls) >= 2, 5)
        assert not task.done() and not cluster.holds(LEADER)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_status_shows_which_node_holds_which_lease_until_when(
        tmp_path: Path, smtp_sink: SmtpSink, capsys: pytest.CaptureFixture[str]) -> None:
    from mailgate.cli.main import main

    config = write_daemon_config(tmp_path / "mailgate.toml", sink=smtp_sink)
    target = database(tmp_path / "state")
    stores = [await Store.open(target), await Store.open(target)]
    try:
        await LeaseBook(stores[0]).claim([LEADER, mailbox_lease("it")], "node-a", 60.0)
        await LeaseBook(stores[1]).claim([mailbox_lease("hr")], "node-b", EXPIRED_SECONDS)
    finally:
        for store in stores:
            await store.close()
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["--config", str(config), "status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(x["name"], x["holder"], x["live"]) for x in report["leases"]] == [
        ("leader", "node-a", True), ("mailbox:hr", "node-b", False),
        ("mailbox:it", "node-a", True)]
    until = datetime.fromisoformat(report["leases"][0]["expires_at"])
    assert timedelta(seconds=50) < until - datetime.now(UTC) <= timedelta(seconds=60)
    assert await asyncio.to_thread(main, ["--config", str(config), "status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("LEASE"))):][:4]
    assert [line.split()[:2] for line in table] == [
        ["LEASE", "NODE"], ["leader", "node-a"], ["mailbox:hr", "node-b"],
        ["mailbox:it", "node-a"]]
    assert table[2].endswith("(expired)") and not table[1].endswith("(expired)")


async def test_a_resting_lease_is_given_back_and_wanted_again_after_the_rest() -> None:
    clock, book = [0.0], ScriptedBook()
    node = Node(book, "a", SETTINGS, clock)
    await node.cluster.round()
    node.cluster.rest(BOXES[0], 40.0)  # this node cannot reach that mailbox
    await node.cluster.round()
    assert node.running == {LEADER, *BOXES[1:]} and book.released == [BOXES[0]]
    clock[0] = 30.0
    await node.cluster.round()
    assert BOXES[0] not in node.running  # still resting: another node may take it
    clock[0] = 41.0
    await node.cluster.round()
    assert node.running == set(WANTED)


async def test_leases_lost_together_are_stopped_together() -> None:
    """Each stop may wait for a transaction to end; one after the other, the last one
    could outlive its lease. Here each stop only returns once all have begun."""
    clock, book = [0.0], ScriptedBook()
    stopping: list[str] = []
    all_begun = asyncio.Event()

    async def gain(lease: str) -> None:
        pass

    async def slow_loss(lease: str) -> None:
        stopping.append(lease)
        if len(stopping) == len(WANTED):
            all_begun.set()
        await asyncio.wait_for(all_begun.wait(), 5)  # one at a time: never set, fails

    cluster = Cluster(book, "a", SETTINGS, gain, slow_loss, lambda: clock[0])
    cluster.want(WANTED)
    await cluster.round()
    book.error = ConnectionError("database unreachable")
    clock[0] = 20.0  # the last renewal was at 0: everything must stop now
    await cluster.round()
    assert sorted(stopping) == sorted(WANTED) and cluster.held == {}
