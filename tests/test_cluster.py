"""Two nodes on one PostgreSQL: real `mailgate run` processes, a real Dovecot with three
mailboxes, an SMTP sink. One node is SIGKILLed in the middle of a burst of 1,000 messages.

Invariants under test (DESIGN.md #1, #2, and the cluster's own): every message becomes
exactly one ticket; a kill costs at most one duplicate acknowledgement per SMTP lane (the
mail each connection had on its way, accepted but not yet marked); the survivor holds
every mailbox (and the leader lease) within the lease time; a clean stop gives every
lease back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailgate.config.loader import load_setup
from mailgate.config.settings import SmtpConfig
from mailgate.service.daemon import HANDOVER_AFTER, Daemon
from tests.factories import EXAMPLE_DIRECTORY, ROOT, mail
from tests.harness import query
from tests.mailservers import DovecotServer, ImapAccount, SmtpSink, free_port, imap_mailbox
from tests.postgres import PostgresServer

pytestmark = pytest.mark.e2e

LEASE_SECONDS = 3.0  # renewed every second: a dead node's mailboxes move within ~3-4 s
MESSAGES = 1000
WAITING = 400  # in the mailboxes before the nodes start; the rest arrive during the run
KILL_AT = 300  # tickets made when the node holding the mailboxes is killed
# Each mailbox with the department address its mail is written to.
MAILBOXES = {"it": "it-help@example.com", "facilities": "facilities@example.com",
             "payroll": "payroll@example.com"}
LEASES = {"leader", *(f"mailbox:{name}" for name in MAILBOXES)}
NOW = "extract(epoch FROM clock_timestamp())"


@dataclass
class Node:
    name: str
    config: Path
    log: Path
    process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mailgate", "--config", str(self.config), "run",
                stdout=out, stderr=out, cwd=ROOT, env=dict(os.environ))

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 60)

    def started(self) -> bool:
        return "daemon.started" in self.log.read_text(errors="replace")


def write_node_config(tmp_path: Path, name: str, url: str, sink: SmtpSink,
                      accounts: dict[str, ImapAccount], lease: float = LEASE_SECONDS) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    boxes = "".join(
        imap_mailbox(box, account, folder / f"{box}.secret", batch_size=20,
                     poll_interval="1s").toml() for box, account in accounts.items())
    path = folder / "mailgate.toml"
    path.write_text(f"""[state]
dir = "state"
[database]
url = "{url}"
[cluster]
node = "{name}"
lease_seconds = {lease}
[directory]
path = "{EXAMPLE_DIRECTORY}"
[smtp]
host = "{sink.host}"
port = {sink.port}
[limits]
auto_mail_per_recipient_per_hour = 100000
[conversation]
notify_team = false
{boxes}""")
    return path


async def rows(url: str, sql: str) -> list[tuple]:
    return await asyncio.to_thread(query, url, sql)


async def holders(url: str) -> dict[str, str]:
    """Live leases by name (but the nodes' own): who holds each, by the database's clock."""
    return dict(await rows(url, f"SELECT name, holder FROM leases WHERE expires_at > {NOW} "
                                f"AND substr(name, 1, 5) <> 'node:'"))


async def tickets(url: str) -> int:
    [(count,)] = await rows(url, "SELECT COUNT(*) FROM tickets")
    return int(count)


async def wait_for(what: str, check: object, timeout: float) -> float:
    """Poll the async check until it is true; the seconds it took. Fails at the deadline."""
    started = time.monotonic()
    while not await check():  # type: ignore[operator]
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not reached within {timeout} s: {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def append_all(dovecot: DovecotServer, account: ImapAccount, box: str,
               numbers: list[int]) -> list[int]:
    """APPEND these requests to one mailbox over one connection; their UIDs."""
    uids = []
    with dovecot.client(account) as client:
        for i in numbers:
            raw = mail(f"request {i}", sender=f"user{i}@example.com", to=MAILBOXES[box],
                       message_id=f"<cluster-{i}@example.com>")
            response = client.append("INBOX", raw)
            text = response.decode() if isinstance(response, bytes) else str(response)
            uids.append(int(text.split("APPENDUID", 1)[1].split()[1].rstrip("]")))
    return uids


async def feed(dovecot: DovecotServer, accounts: dict[str, ImapAccount],
               numbers: range) -> dict[str, list[int]]:
    """The requests NUMBERS, dealt round the three mailboxes, appended in parallel."""
    names = list(accounts)
    dealt = {box: [i for i in numbers if names[i % len(names)] == box] for box in names}
    found = await asyncio.gather(*(asyncio.to_thread(append_all, dovecot, accounts[box], box,
                                                     dealt[box]) for box in names))
    return dict(zip(names, found, strict=True))


async def test_two_nodes_one_killed_mid_burst_lose_and_double_nothing(
        tmp_path: Path, dovecot: DovecotServer, postgres_server: PostgresServer,
        smtp_sink: SmtpSink) -> None:
    url = postgres_server.create_database()
    accounts = {box: dovecot.add_user() for box in MAILBOXES}
    a, b = (Node(name, write_node_config(tmp_path, name, url, smtp_sink, accounts),
                 tmp_path / f"{name}.log") for name in ("node-a", "node-b"))
    await feed(dovecot, accounts, range(WAITING))
    await a.start()
    try:
        # a starts alone and takes every lease; b then starts, and holds nothing.
        await wait_for("node-a started", lambda: _true(a.started()), 60)
        await wait_for("node-a holds every lease",
                       lambda: _holds_all(url, "node-a"), 60)
        await b.start()
        await wait_for("node-b started", lambda: _true(b.started()), 60)
        assert set((await holders(url)).values()) == {"node-a"}
        arriving = asyncio.create_task(feed(dovecot, accounts, range(WAITING, MESSAGES)))
        await wait_for(f"{KILL_AT} tickets", lambda: _at_least(url, KILL_AT), 120)
        assert a.process is not None
        a.process.kill()  # SIGKILL: no release, no flush, an open transaction cut off
        killed = time.monotonic()
        await a.process.wait()
        made_at_kill = await tickets(url)
        takeover = await wait_for("node-b holds every lease",
                                  lambda: _holds_all(url, "node-b"), 6 * LEASE_SECONDS)
        takeover_from_kill = time.monotonic() - killed
        uids = await arriving
        last_uids = {box: max(found) for box, found in uids.items()}
        settle = await wait_for("every message ticketed and every ack out",
                                lambda: _settled(url, smtp_sink, last_uids), 240)
        stop_status = await b.stop()
        final = await rows(url, "SELECT COUNT(*), COUNT(DISTINCT requester) FROM tickets")
        messages = await rows(url, "SELECT COUNT(*) FROM messages")
        leases_left = await rows(url, "SELECT name, holder FROM leases")
        live_left = await holders(url)
    finally:
        for node in (a, b):
            if node.process is not None and node.process.returncode is None:
                node.process.kill()
                await node.process.wait()
    per_message_id = Counter(m.message["Message-ID"] for m in smtp_sink.messages)
    acked = {m.message["X-Mailgate-Ticket"] for m in smtp_sink.messages}
    duplicates = sum(per_message_id.values()) - len(per_message_id)
    [(ticket_count, requesters)] = final
    print(f"\ntwo nodes, {MESSAGES} messages over {len(MAILBOXES)} mailboxes, node-a "
          f"SIGKILLed at {made_at_kill} tickets: {ticket_count} tickets, "
          f"{len(smtp_sink.messages)} acks received ({len(acked)} tickets acknowledged, "
          f"{duplicates} duplicates); "
          f"takeover {takeover_from_kill:.2f} s after the kill (lease {LEASE_SECONDS:g} s), "
          f"settled {settle:.1f} s later")
    assert ticket_count == MESSAGES and requesters == MESSAGES  # none lost, none doubled
    assert messages == [(MESSAGES,)]
    lanes = SmtpConfig("sink", 25).connections  # the nodes' default [smtp] connections
    assert duplicates <= lanes  # one kill: at most the mail on its way on each lane
    assert len(smtp_sink.messages) <= ticket_count + lanes
    # Every ticket acknowledged: the dead node's outbox claims died with its connection.
    assert len(acked) == ticket_count
    # The dead node's last renewal was at most a lease ago; the survivor looks every
    # third of a lease.
    assert takeover <= takeover_from_kill <= LEASE_SECONDS * 2
    assert stop_status == 0
    # The survivor's clean stop gave every lease back; the dead node's own is left, expired.
    assert live_left == {} and leases_left == [("node:node-a", "node-a")]


async def _true(value: bool) -> bool:
    return value


async def _holds_all(url: str, node: str) -> bool:
    found = await holders(url)
    return set(found) == LEASES and set(found.values()) == {node}


async def _at_least(url: str, count: int) -> bool:
    return await tickets(url) >= count


async def _settled(url: str, sink: SmtpSink, last_uids: dict[str, int]) -> bool:
    positions = dict(await rows(url, "SELECT name, last_uid FROM mailboxes"))
    if any(positions.get(box, 0) < uid for box, uid in last_uids.items()):
        return False
    [(queued,)] = await rows(url, "SELECT COUNT(*) FROM outbox WHERE status = 'queued'")
    acked = {m.message["X-Mailgate-Ticket"] for m in sink.messages}
    return await tickets(url) == MESSAGES and queued == 0 and len(acked) >= MESSAGES


async def test_a_mailbox_one_node_cannot_reach_is_handed_to_a_node_that_can(
        tmp_path: Path, dovecot: DovecotServer, postgres_server: PostgresServer,
        smtp_sink: SmtpSink) -> None:
    """A network split between node-a and the IMAP server, not the database: node-a holds
    the lease but cannot read the mailbox; it hands the mailbox over to node-b."""
    url = postgres_server.create_database()
    account = dovecot.add_user()
    cut_off = dataclasses.replace(account, port=free_port())  # nothing listens there
    lease = 1.5
    configs = [write_node_config(tmp_path, "node-a", url, smtp_sink, {"it": cut_off}, lease),
               write_node_config(tmp_path, "node-b", url, smtp_sink, {"it": account}, lease)]
    uid = await asyncio.to_thread(append_all, dovecot, account, "it", [1])
    daemons = []
    for path in configs:
        setup = load_setup(path)
        daemons.append(Daemon(setup.config, setup.directory, renderer=setup.renderer))
    a, b = daemons
    await a.start()
    try:
        await b.start()
        assert a.cluster and a.cluster.holds("mailbox:it") and b.cluster
        assert not b.cluster.holds("mailbox:it")
        await wait_for("node-b reads the mailbox",
                       lambda: _true(b.cluster is not None and b.cluster.holds("mailbox:it")),
                       (HANDOVER_AFTER + 3) * lease)
        await wait_for("the request ticketed", lambda: _at_least(url, 1), 30)
        positions = dict(await rows(url, "SELECT name, last_uid FROM mailboxes"))
        assert positions["it"] == uid[0]
        assert a.watchers == [] and a.cluster.holds("leader")  # only the mailbox moved
    finally:
        for daemon in daemons:
            with contextlib.suppress(Exception):
                await daemon.stop()
