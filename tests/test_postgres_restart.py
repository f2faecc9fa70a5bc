"""The PostgreSQL server restarts or dies under a running daemon: an apt upgrade, a
failover, `pg_ctl restart -m fast`, the postmaster SIGKILLed and started again.

The real `mailgate run` process, a private Dovecot, an SMTP sink and a PostgreSQL server of
the test's own (the session's is shared and must stay up). A burst of requests waits in the
mailbox; midway through it the server goes away and comes back. Invariants (DESIGN.md #1,
#2): every message is on exactly one ticket, every ticket is acknowledged, and the daemon
carries on by itself -- the same process, never restarted, its mailbox watched again and its
outbox sending -- and takes new mail after the outage.

Duplicate acknowledgements: none. The daemon itself does not die, and a mail the SMTP
server accepted while the database could not be told stays in the node's sent log
(outbox-sent.log) until the database has it, so it is not sent again; the claim on its row
died with the database session, but with one node there is nobody else to claim it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from mailgate.config.settings import SmtpConfig
from tests import test_cluster as cluster
from tests.factories import ROOT, mail
from tests.harness import DAEMON_STATE, counts, snapshot
from tests.mailservers import (
    DovecotServer,
    ImapAccount,
    SmtpSink,
    imap_mailbox,
    write_daemon_config,
)
from tests.postgres import PostgresServer
from tests.test_start_failures import start_failure

pytestmark = [pytest.mark.e2e,
              pytest.mark.postgresql_only("restarts and kills a PostgreSQL server of its own")]

MESSAGES = 200  # waiting in the mailbox when the daemon starts
LATER = 20  # arriving after the server is back: the daemon must still be watching
CUT_AT = MESSAGES // 3  # tickets made when the server goes away
OUTAGE = 15.0  # seconds the server stays away in the long outage
SHORT_LEASE = 6.0  # for the long outage: renewed every 2 s, lost after ~6 s without


@dataclass
class Rig:
    """One daemon on a database of the test's own PostgreSQL server."""

    tmp_path: Path
    server: PostgresServer
    dovecot: DovecotServer
    account: ImapAccount
    sink: SmtpSink
    url: str = ""
    config: Path | None = None
    process: asyncio.subprocess.Process | None = None

    @property
    def log(self) -> Path:
        return self.tmp_path / "daemon.log"

    def write_config(self, tables: str = "") -> None:
        self.url = self.server.create_database()
        self.config = write_daemon_config(
            self.tmp_path / "mailgate.toml", sink=self.sink, database_url=self.url,
            acks_per_sender_per_hour=100000, notify_team=False,  # these tests count acks
            tables=tables,
            mailboxes=[imap_mailbox("it", self.account, self.tmp_path / "imap.secret",
                                    batch_size=20, poll_interval="1s")])
        (self.tmp_path / "imap.secret").chmod(0o600)  # else a config warning at each start

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mailgate", "--config", str(self.config), "run",
                stdout=out, stderr=out, cwd=ROOT)

    async def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.returncode is None:
            self.process.terminate()
        return await asyncio.wait_for(self.process.wait(), 60)

    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def events(self) -> list[dict]:
        """The daemon's log, one dict per JSON line (other lines left out)."""
        return _json_lines(self.log)

    async def state(self) -> dict[str, int]:
        return await asyncio.to_thread(counts, self.url, DAEMON_STATE)

    async def status(self) -> dict:
        """`mailgate status --json`, as an admin would ask."""
        done = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mailgate", "--config", str(self.config), "status", "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT)
        out, err = await asyncio.wait_for(done.communicate(), 60)
        assert done.returncode == 0, err.decode(errors="replace")
        return json.loads(out)

    def acknowledged(self) -> set[str]:
        return {m.message["X-Mailgate-Ticket"] for m in self.sink.messages}


@pytest.fixture
async def rig(tmp_path: Path, dovecot: DovecotServer, imap_account: ImapAccount,
              smtp_sink: SmtpSink, private_postgres: PostgresServer) -> AsyncIterator[Rig]:
    found = Rig(tmp_path, private_postgres, dovecot, imap_account, smtp_sink)
    found.write_config()
    yield found
    if found.running():
        assert found.process is not None
        found.process.kill()
        await found.process.wait()


def append_all(dovecot: DovecotServer, account: ImapAccount, numbers: range) -> list[int]:
    """APPEND these requests over one IMAP connection; their UIDs."""
    uids = []
    with dovecot.client(account) as client:
        for i in numbers:
            raw = mail(f"request {i}", sender=f"user{i}@example.com",
                       message_id=f"<restart-{i}@example.com>")
            response = client.append("INBOX", raw)
            text = response.decode() if isinstance(response, bytes) else str(response)
            uids.append(int(text.split("APPENDUID", 1)[1].split()[1].rstrip("]")))
    return uids


async def wait_for(what: str, check: object, timeout: float) -> None:
    """Poll the async check until it is true; fail at the deadline (a guard, not a
    measure)."""
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached within {timeout} s: {what}")
        await asyncio.sleep(0.1)


async def burst_until_cut(rig: Rig) -> list[int]:
    """The burst in the mailbox, the daemon started on it, until CUT_AT tickets exist (the
    rest still to be read, the acknowledgements still going out)."""
    uids = await asyncio.to_thread(append_all, rig.dovecot, rig.account, range(MESSAGES))
    await rig.start()

    async def started() -> bool:
        assert rig.running(), rig.log.read_text(errors="replace")[-3000:]
        return any(e.get("event") == "daemon.started" for e in rig.events())

    await wait_for("the daemon started", started, 60)

    async def cut_point() -> bool:
        assert rig.running(), rig.log.read_text(errors="replace")[-3000:]
        return (await rig.state())["tickets"] >= CUT_AT

    await wait_for(f"{CUT_AT} tickets", cut_point, 120)
    return uids


async def after_the_outage(rig: Rig, uids: list[int]) -> dict[str, int]:
    """More mail after the server is back; wait until all of it is ticketed and every
    acknowledgement is out. The state then."""
    uids += await asyncio.to_thread(append_all, rig.dovecot, rig.account,
                                    range(MESSAGES, MESSAGES + LATER))
    expected = MESSAGES + LATER

    async def settled() -> bool:
        assert rig.running(), rig.log.read_text(errors="replace")[-3000:]
        state = await rig.state()
        return (state["last_uid"] >= max(uids) and state["queued"] == 0
                and len(rig.acknowledged()) >= expected)

    try:
        await wait_for("every message ticketed and acknowledged", settled, 180)
    except TimeoutError:
        raise AssertionError(f"{await rig.state()}, {len(rig.acknowledged())} acknowledged; "
                             f"log:\n{rig.log.read_text(errors='replace')[-4000:]}") from None
    return await rig.state()


async def assert_healthy_and_exact(rig: Rig, pid: int) -> None:
    """The invariants after the outage, then a clean stop."""
    state = await rig.state()
    status = await rig.status()
    per_message_id = Counter(m.message["Message-ID"] for m in rig.sink.messages)
    duplicates = sum(per_message_id.values()) - len(per_message_id)
    expected = MESSAGES + LATER
    assert rig.running() and rig.process is not None and rig.process.pid == pid
    assert state["tickets"] == expected and state["messages"] == expected  # none lost/doubled
    assert state["quarantine"] == 0
    assert state["acks"] == expected  # one acknowledgement queued per ticket
    assert len(rig.acknowledged()) == expected  # every ticket acknowledged
    assert duplicates == 0  # see the module docstring
    # Healthy as an admin sees it: the mailbox watched again, nothing stuck in the outbox,
    # this node holding its leases again.
    [mailbox] = status["mailboxes"]
    assert mailbox["state"] in ("idle", "polling") and mailbox["last_error"] is None
    assert status["outbox"]["queued"] == 0
    live = {lease["name"] for lease in status["leases"] if lease["live"]}
    assert {"leader", "mailbox:it"} <= live
    # No worker task died of the outage (the daemon logs task.died and goes on without it).
    died = [e for e in rig.events() if e.get("event") == "task.died"]
    assert died == []
    assert await rig.stop() == 0


async def test_restart_fast_midway_through_a_burst(rig: Rig) -> None:
    uids = await burst_until_cut(rig)
    assert rig.process is not None
    pid = rig.process.pid
    await asyncio.to_thread(rig.server.restart, "fast")
    await after_the_outage(rig, uids)
    await assert_healthy_and_exact(rig, pid)


async def test_postmaster_sigkilled_midway_recovers(rig: Rig) -> None:
    uids = await burst_until_cut(rig)
    assert rig.process is not None
    pid = rig.process.pid
    await asyncio.to_thread(rig.server.kill)
    await asyncio.sleep(1.0)  # the daemon meets a dead server, not just a cut connection
    await asyncio.to_thread(rig.server.start_again)  # crash recovery from the WAL
    assert "database system was interrupted" in rig.server.log.read_text(errors="replace")
    await after_the_outage(rig, uids)
    await assert_healthy_and_exact(rig, pid)


async def test_long_outage_waits_with_backoff_and_catches_up(rig: Rig) -> None:
    # Leases shorter than the outage: the node must stop reading when it can no longer
    # renew them, and take them again when the database is back.
    rig.write_config(tables=f"[cluster]\nlease_seconds = {SHORT_LEASE}\n")
    uids = await burst_until_cut(rig)
    assert rig.process is not None
    pid = rig.process.pid
    before = len(rig.events())
    await asyncio.to_thread(rig.server.stop, "fast")
    await asyncio.sleep(OUTAGE)
    during = rig.events()[before:]
    assert rig.running()  # waiting, not exited
    await asyncio.to_thread(rig.server.start_again)
    # It said what is wrong: the cluster could not renew its leases, and stopped reading.
    assert any(e.get("event") == "cluster.renew_failed" and "connection" in e["error"]
               for e in during)
    lost = {e["lease"] for e in during if e.get("event") == "cluster.lost"}
    assert {"leader", "mailbox:it"} <= lost
    # The mailbox's trouble is the database's, not the IMAP server's.
    assert all(e.get("kind") == "database" for e in during if e.get("event") == "imap.error")
    # Retried with back-off, not in a loop: no complaint more often than once a second
    # over the outage (the lease rounds come every lease/3, the outbox's after 2, 4, 8 s
    # ...), where a busy loop writes thousands.
    complaints = Counter(e.get("event") for e in during
                         if e.get("level") in ("warning", "error"))
    assert max(complaints.values()) <= OUTAGE, complaints
    await after_the_outage(rig, uids)
    after = rig.events()[before:]
    assert any(e.get("event") == "cluster.renewing_again" for e in after)
    regained = {e["lease"] for e in after[len(during):] if e.get("event") == "cluster.gained"}
    assert {"leader", "mailbox:it"} <= regained
    await assert_healthy_and_exact(rig, pid)


async def test_a_start_while_the_server_is_down_fails_for_systemd_to_retry(rig: Rig) -> None:
    """The design: a running daemon waits for its database (above); one that cannot open it
    at start exits at once, status 1, with the reason in one line, and the unit's
    Restart=on-failure starts it again RestartSec later -- until the server is up."""
    await asyncio.to_thread(rig.server.stop, "fast")
    line = await asyncio.to_thread(start_failure, "--config", str(rig.config), "run")
    assert line.startswith("mailgate: cannot open the database: ")
    assert str(rig.server.port) in line and "refused" in line
    unit = (ROOT / "systemd" / "mailgate.service").read_text()
    assert "\nRestart=on-failure\n" in unit
    await asyncio.to_thread(rig.server.start_again)
    await rig.start()  # the retry, once the server is back

    async def started() -> bool:
        assert rig.running(), rig.log.read_text(errors="replace")[-3000:]
        return any(e.get("event") == "daemon.started" for e in rig.events())

    await wait_for("the daemon started", started, 60)
    assert await rig.stop() == 0


# --- two nodes on one database through a restart ----------------------------------------

CLUSTER_MESSAGES = 300  # dealt round the three mailboxes before the nodes start
CLUSTER_CUT_AT = 100


async def test_two_nodes_through_a_restart_take_their_leases_again_and_never_share_a_mailbox(
        tmp_path: Path, dovecot: DovecotServer, private_postgres: PostgresServer,
        smtp_sink: SmtpSink) -> None:
    """The server is away for two lease times: both nodes stop reading (their leases run
    out), take the leases again when it is back -- the same node or the other -- and at no
    instant do two nodes read one mailbox. Duplicate acknowledgements: at most one per SMTP
    lane per node -- a lane sends one mail, then must mark it before the next; a mail whose
    mark failed (the database gone) is in its node's sent log only, and the other node may
    claim and send it again once the database is back, before its sender marks it."""
    url = private_postgres.create_database()
    accounts = {box: dovecot.add_user() for box in cluster.MAILBOXES}
    a, b = (cluster.Node(name, cluster.write_node_config(tmp_path, name, url, smtp_sink,
                                                         accounts),
                         tmp_path / f"{name}.log") for name in ("node-a", "node-b"))
    total = CLUSTER_MESSAGES + LATER
    await cluster.feed(dovecot, accounts, range(CLUSTER_MESSAGES))
    try:
        await a.start()
        await cluster.wait_for("node-a started", lambda: cluster._true(a.started()), 60)
        await cluster.wait_for("node-a holds every lease",
                               lambda: cluster._holds_all(url, "node-a"), 60)
        await b.start()
        await cluster.wait_for("node-b started", lambda: cluster._true(b.started()), 60)
        await cluster.wait_for(f"{CLUSTER_CUT_AT} tickets",
                               lambda: cluster._at_least(url, CLUSTER_CUT_AT), 120)
        await asyncio.to_thread(private_postgres.restart, "fast",
                                2 * cluster.LEASE_SECONDS)
        uids = await cluster.feed(dovecot, accounts, range(CLUSTER_MESSAGES, total))
        last_uids = {box: max(found) for box, found in uids.items()}

        async def settled() -> bool:
            return await _cluster_settled(url, smtp_sink, last_uids, total)

        await cluster.wait_for("every message ticketed and acknowledged", settled, 240)
        await cluster.wait_for("every lease held again",
                               lambda: _every_lease_held(url), 6 * cluster.LEASE_SECONDS)
        assert a.process and a.process.returncode is None  # neither node exited
        assert b.process and b.process.returncode is None
        after = await cluster.holders(url)
        stopped = [await a.stop(), await b.stop()]
    finally:
        for node in (a, b):
            if node.process is not None and node.process.returncode is None:
                node.process.kill()
                await node.process.wait()
    state = await asyncio.to_thread(counts, url, {
        "tickets": "SELECT COUNT(*) FROM tickets",
        "messages": "SELECT COUNT(*) FROM messages",
        "quarantine": "SELECT COUNT(*) FROM quarantine"})
    per_message_id = Counter(m.message["Message-ID"] for m in smtp_sink.messages)
    duplicates = sum(per_message_id.values()) - len(per_message_id)
    acked = {m.message["X-Mailgate-Ticket"] for m in smtp_sink.messages}
    print(f"\ntwo nodes, {total} messages, the server away {2 * cluster.LEASE_SECONDS:g} s: "
          f"{state['tickets']} tickets, {len(smtp_sink.messages)} acks received "
          f"({duplicates} duplicates); leases afterwards: {sorted(after.items())}")
    assert stopped == [0, 0]
    assert state == {"tickets": total, "messages": total, "quarantine": 0}
    assert len(acked) == total
    lanes = SmtpConfig("sink", 25).connections  # the nodes' default [smtp] connections
    assert duplicates <= 2 * lanes
    logs = {node.name: _json_lines(node.log) for node in (a, b)}
    # Both were cut off long enough to lose what they held, and said so.
    for events in logs.values():
        assert any(e.get("event") == "cluster.renew_failed" for e in events)
    assert any(e.get("event") == "cluster.lost" for e in logs["node-a"])
    for box in cluster.MAILBOXES:
        held = {node: _held_intervals(events, f"mailbox:{box}")
                for node, events in logs.items()}
        assert not _overlap(held["node-a"], held["node-b"]), (box, held)
        for node, events in logs.items():
            other = held["node-b" if node == "node-a" else "node-a"]
            read_at = [_at(e) for e in events if e.get("event") == "ticket.created"
                       and e.get("source") == f"imap:{box}"]
            assert not [t for t in read_at if any(s <= t <= e for s, e in other)], (box, node)


def _json_lines(path: Path) -> list[dict]:
    lines = path.read_text(errors="replace").split("\n")[:-1]  # the last may be half
    return [json.loads(line) for line in lines if line.startswith("{")]


def _at(event: dict) -> datetime:
    return datetime.fromisoformat(event["timestamp"])


def _held_intervals(events: list[dict], lease: str) -> list[tuple[datetime, datetime]]:
    """When this node held LEASE by its own log: from cluster.gained to cluster.lost or
    cluster.released (a clean stop), or the end of the log."""
    found, since = [], None
    for event in events:
        name = event.get("event")
        if name == "cluster.gained" and event.get("lease") == lease and since is None:
            since = _at(event)
        elif since is not None and (
                (name == "cluster.lost" and event.get("lease") == lease)
                or (name == "cluster.released" and lease in event.get("leases", []))):
            found.append((since, _at(event)))
            since = None
    if since is not None:
        found.append((since, datetime.max.replace(tzinfo=since.tzinfo)))
    return found


def _overlap(one: list[tuple[datetime, datetime]],
             other: list[tuple[datetime, datetime]]) -> bool:
    return any(s1 < e2 and s2 < e1 for s1, e1 in one for s2, e2 in other)


async def _every_lease_held(url: str) -> bool:
    return set(await cluster.holders(url)) == cluster.LEASES


async def _cluster_settled(url: str, sink: SmtpSink, last_uids: dict[str, int],
                           total: int) -> bool:
    state = await asyncio.to_thread(snapshot, url, {
        "positions": "SELECT name, last_uid FROM mailboxes",
        "queued": "SELECT COUNT(*) FROM outbox WHERE status = 'queued'",
        "tickets": "SELECT COUNT(*) FROM tickets"})
    positions = dict(state["positions"])
    if any(positions.get(box, 0) < uid for box, uid in last_uids.items()):
        return False
    acked = {m.message["X-Mailgate-Ticket"] for m in sink.messages}
    return (state["queued"] == [(0,)] and state["tickets"] == [(total,)]
            and len(acked) >= total)
