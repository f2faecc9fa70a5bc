"""Crash safety: the real daemon process, SIGKILLed at random and at chosen instants.

Invariant under test (DESIGN.md #1, #2): every message is on exactly one ticket, every
ticket is acknowledged, and a kill costs at most one duplicate acknowledgement.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.factories import ROOT, mail
from tests.harness import DAEMON_STATE, counts, database
from tests.mailservers import (
    DovecotServer,
    ImapAccount,
    SmtpSink,
    imap_mailbox,
    write_daemon_config,
)

pytestmark = pytest.mark.e2e

MESSAGES = 500
KILLS = 20


def write_config(tmp_path: Path, account: ImapAccount, sink: SmtpSink) -> Path:
    return write_daemon_config(
        tmp_path / "mailgate.toml", sink=sink, acks_per_sender_per_hour=100000,
        notify_team=False,  # these tests count acknowledgements
        mailboxes=[imap_mailbox("it", account, tmp_path / "imap.secret", batch_size=20,
                                poll_interval="1s")])


async def start_daemon(config: Path, log: Path, crashpoint: str = "") -> asyncio.subprocess.Process:
    """mailgate run; with CRASHPOINT (tests/crashing_daemon.py), one that dies there."""
    program = ["tests.crashing_daemon", crashpoint] if crashpoint else ["mailgate"]
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", *program, "--config", str(config), "run",
            stdout=out, stderr=out, cwd=ROOT)


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


def database_state(tmp_path: Path) -> dict[str, int]:
    return counts(database(tmp_path / "state"), DAEMON_STATE)


async def settle(tmp_path: Path, sink: SmtpSink, expected: int, last_uid: int,
                 timeout: float = 120) -> dict[str, int]:
    """Wait until every message is ticketed and every acknowledgement has left."""
    deadline = time.monotonic() + timeout
    while True:
        state = await asyncio.to_thread(database_state, tmp_path)
        acked = {m.message["X-Mailgate-Ticket"] for m in sink.messages}
        if (state["last_uid"] >= last_uid and state["queued"] == 0 and len(acked) >= expected):
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"not settled: {state}, {len(acked)} tickets acknowledged")
        await asyncio.sleep(0.2)


async def test_sigkill_storm_loses_nothing_and_doubles_no_ticket(
        tmp_path: Path, dovecot: DovecotServer, imap_account: ImapAccount,
        smtp_sink: SmtpSink) -> None:
    config = write_config(tmp_path, imap_account, smtp_sink)
    log = tmp_path / "daemon.log"
    rng = random.Random(int(os.environ.get("MAILGATE_CRASH_SEED", "1")))
    uids: list[int] = []

    async def feed() -> None:
        for i in range(MESSAGES):
            raw = mail(f"request {i}", sender=f"user{i}@example.com",
                       message_id=f"<storm-{i}@example.com>")
            uids.append(await asyncio.to_thread(dovecot.append, imap_account, raw))
            if i % 10 == 9:
                await asyncio.sleep(0.05)

    feeder = asyncio.create_task(feed())
    process = await start_daemon(config, log)
    for _ in range(KILLS):
        await asyncio.sleep(rng.uniform(0.1, 1.0))
        process.kill()
        await process.wait()
        process = await start_daemon(config, log)
    await feeder
    try:
        state = await settle(tmp_path, smtp_sink, MESSAGES, max(uids))
    finally:
        await stop(process)
    per_ticket = Counter(m.message["X-Mailgate-Ticket"] for m in smtp_sink.messages)
    per_message_id = Counter(m.message["Message-ID"] for m in smtp_sink.messages)
    duplicates = sum(per_message_id.values()) - len(per_message_id)
    print(f"\n{KILLS} kills, {MESSAGES} messages: {state['tickets']} tickets, "
          f"{len(smtp_sink.messages)} acks received, {duplicates} duplicate acks")
    assert state["tickets"] == MESSAGES  # 0 lost, 0 doubled tickets
    assert state["messages"] == MESSAGES
    assert state["quarantine"] == 0
    assert len(per_ticket) == MESSAGES  # every ticket acknowledged
    assert state["acks"] == MESSAGES  # one acknowledgement queued per ticket
    assert duplicates <= KILLS
    assert all(n - 1 <= KILLS for n in per_ticket.values())


async def test_kill_between_smtp_250_and_bookkeeping_resends_same_mail(
        tmp_path: Path, dovecot: DovecotServer, imap_account: ImapAccount,
        smtp_sink: SmtpSink) -> None:
    config = write_config(tmp_path, imap_account, smtp_sink)
    log = tmp_path / "daemon.log"
    uid = await asyncio.to_thread(dovecot.append, imap_account, mail())
    crashing = await start_daemon(config, log, crashpoint="after_send")
    assert await asyncio.wait_for(crashing.wait(), 30) == 137
    assert len(smtp_sink.messages) == 1  # the server accepted it, then we died
    restarted = await start_daemon(config, log)
    try:
        state = await settle(tmp_path, smtp_sink, 1, uid)
        await smtp_sink.wait_for(count=2)
    finally:
        await stop(restarted)
    first, second = smtp_sink.messages[:2]
    assert first.message["Message-ID"] == second.message["Message-ID"]  # receivers can dedupe
    assert state["tickets"] == 1 and state["acks"] == 1


async def test_kill_before_commit_rereads_the_batch(
        tmp_path: Path, dovecot: DovecotServer, imap_account: ImapAccount,
        smtp_sink: SmtpSink) -> None:
    config = write_config(tmp_path, imap_account, smtp_sink)
    log = tmp_path / "daemon.log"
    uids = [await asyncio.to_thread(dovecot.append, imap_account,
                                    mail(f"r{i}", message_id=f"<c{i}@example.com>"))
            for i in range(5)]
    crashing = await start_daemon(config, log, crashpoint="before_commit")
    assert await asyncio.wait_for(crashing.wait(), 30) == 137
    assert smtp_sink.messages == []
    restarted = await start_daemon(config, log)
    try:
        state = await settle(tmp_path, smtp_sink, 5, max(uids))
    finally:
        await stop(restarted)
    assert state["tickets"] == 5 and len(smtp_sink.messages) == 5
