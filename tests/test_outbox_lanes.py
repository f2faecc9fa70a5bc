"""The outbox sends on several lanes (SMTP connections) at once: in order per ticket,
each mail once, and a server found down on one lane stops every lane for the round."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailgate.config.settings import SmtpConfig
from mailgate.errors import PermanentError
from mailgate.outbound.outbox import Outbox, by_lane
from mailgate.outbound.sentlog import SentLog
from mailgate.outbound.transport import (
    Accepted,
    RunResult,
    ServerUnavailable,
    SmtpTransport,
    Stop,
    send_each,
)
from mailgate.service.daemon import SwappableTransport
from mailgate.storage.store import OutboxRow
from tests.factories import Harness, harness, mail
from tests.mailservers import SmtpSink


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    h = await harness(tmp_path, acks_per_hour=1000)
    yield h
    await h.store.close()


class Recorder:
    """A transport that takes a moment per mail and remembers what went out when."""

    def __init__(self, lanes: int, down_on: int | None = None,
                 refuse: int | None = None) -> None:
        self.lanes = lanes
        self.down_on = down_on  # the outbox id whose send finds the server down
        self.refuse = refuse  # the outbox id the server refuses for good
        self.sent: list[OutboxRow] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def send(self, row: OutboxRow, lane: int = 0) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.001 * (row.id % 3))
            if row.id == self.down_on:
                raise ServerUnavailable("connection refused")
            if row.id == self.refuse:
                raise PermanentError("550 5.1.1 no such mailbox")
            self.sent.append(row)
        finally:
            self.in_flight -= 1

    async def send_run(self, rows: Sequence[OutboxRow], lane: int, accepted: Accepted,
                       stop: Stop) -> RunResult:
        return await send_each(lambda row: self.send(row, lane), rows, accepted, stop)

    async def close(self) -> None:
        return None


async def requests(h: Harness, count: int) -> None:
    for i in range(count):
        await h.deliver(mail(f"request {i}", sender=f"u{i}@example.com",
                             message_id=f"<lane-{i}@example.com>"))


def row(id: int, ticket: int | None, to: str = "a@example.com") -> OutboxRow:
    return OutboxRow(id, f"m{id}", "ack", ticket, "it@example.com", (to,), b"", 0)


def test_one_tickets_mail_shares_a_lane_in_order() -> None:
    rows = [row(1, 7), row(2, 8), row(3, 7), row(4, None, "x@example.com"), row(5, 7),
            row(6, None, "x@example.com"), row(7, 9)]
    lanes = by_lane(rows, 3)
    assert len(lanes) == 3
    assert sorted(r.id for lane in lanes for r in lane) == [1, 2, 3, 4, 5, 6, 7]
    for lane in lanes:
        assert [r.id for r in lane] == sorted(r.id for r in lane)
    holding = {r.id: n for n, lane in enumerate(lanes) for r in lane}
    assert holding[1] == holding[3] == holding[5]  # ticket 7
    assert holding[4] == holding[6]  # no ticket, same recipients
    assert by_lane(rows, 1) == [rows]


async def test_lanes_send_side_by_side_each_mail_once_in_order_per_ticket(
        h: Harness, tmp_path: Path) -> None:
    await requests(h, 6)
    queued = await h.store.due_outgoing(h.clock(), 1000)
    assert len({r.ticket for r in queued}) == 6 and len(queued) > 6  # acks + notifications
    transport = Recorder(lanes=3)
    outbox = Outbox(h.store, transport, h.clock, SentLog(tmp_path / "sent.log"))
    assert await outbox.drain_once() == len(queued)
    assert transport.most_in_flight == 3
    assert sorted(r.id for r in transport.sent) == sorted(r.id for r in queued)
    for ticket in {r.ticket for r in queued}:
        order = [r.id for r in transport.sent if r.ticket == ticket]
        assert order == sorted(order)
    assert await h.rows("SELECT DISTINCT status FROM outbox") == [("sent",)]
    assert await outbox.drain_once() == 0


async def test_a_server_down_on_one_lane_stops_the_round_and_loses_nothing(
        h: Harness, tmp_path: Path) -> None:
    await requests(h, 6)
    queued = await h.store.due_outgoing(h.clock(), 1000)
    broken = Recorder(lanes=3, down_on=queued[len(queued) // 2].id)
    outbox = Outbox(h.store, broken, h.clock, SentLog(tmp_path / "sent.log"))
    sent = await outbox.drain_once()
    assert sent == len(broken.sent) < len(queued)
    assert outbox.server_backoff == 1  # one round, however many lanes saw it
    left = await h.store.due_outgoing(h.clock(), 1000)
    assert sorted(r.id for r in left) == sorted(
        {r.id for r in queued} - {r.id for r in broken.sent})
    healthy = Recorder(lanes=3)
    outbox.transport = healthy
    assert await outbox.drain_once() == len(left)
    everything = [r.id for r in broken.sent + healthy.sent]
    assert sorted(everything) == sorted(r.id for r in queued)  # each exactly once


async def test_a_transport_is_replaced_only_between_sends() -> None:
    first, second = Recorder(lanes=2), Recorder(lanes=2)
    swappable = SwappableTransport(first)
    sends = [asyncio.create_task(swappable.send(row(i, i), i % 2)) for i in range(1, 5)]
    await asyncio.sleep(0)  # the sends are in flight on the first transport
    await swappable.replace(second)
    assert first.in_flight == 0 and len(first.sent) == 4  # it waited for all four
    await asyncio.gather(*sends)
    await swappable.send(row(9, 9))
    assert [r.id for r in second.sent] == [9]


async def test_a_refused_mail_in_a_run_is_failed_and_the_run_goes_on(
        h: Harness, tmp_path: Path) -> None:
    await requests(h, 4)
    queued = await h.store.due_outgoing(h.clock(), 1000)
    refused = queued[1]
    transport = Recorder(lanes=1, refuse=refused.id)
    outbox = Outbox(h.store, transport, h.clock, SentLog(tmp_path / "sent.log"))
    assert await outbox.drain_once() == len(queued) - 1
    assert [r.id for r in transport.sent] == [r.id for r in queued if r is not refused]
    statuses = dict(await h.rows("SELECT id, status FROM outbox"))
    assert statuses.pop(refused.id) == "failed"
    assert set(statuses.values()) == {"sent"}


class RefusingSink(SmtpSink):
    """Refuses one recipient at RCPT, as a server does for a mailbox that does not exist."""

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if address == "nobody@example.com":
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"


async def test_an_smtp_run_is_sent_in_order_and_ends_at_a_refusal() -> None:
    sink = RefusingSink()
    await sink.start()
    transport = SmtpTransport(SmtpConfig(sink.host, sink.port, connections=2))
    mails = [replace(row(i, 1, "nobody@example.com" if i == 4 else f"p{i}@example.com"),
                     raw=mail(f"mail {i}", message_id=f"<run-{i}@example.com>"))
             for i in range(1, 7)]
    accepted: list[tuple[int, str]] = []
    try:
        result = await transport.send_run(
            mails, 1, lambda r: accepted.append((r.id, threading.current_thread().name)),
            lambda: False)
        assert result.sent == 3 and isinstance(result.failure, PermanentError)
        assert [i for i, _ in accepted] == [1, 2, 3]  # told at once, in order
        assert {name for _, name in accepted} == {"smtp-1_0"}  # by the lane's own thread
        assert [m.message["Message-ID"] for m in sink.messages] == [
            f"<run-{i}@example.com>" for i in (1, 2, 3)]
        rest = await transport.send_run(mails[4:], 1, lambda r: None, lambda: True)
        assert rest == RunResult(0)  # told to stop before the first
        everything = await transport.send_run(mails[4:], 0, lambda r: None, lambda: False)
        assert everything == RunResult(2) and len(sink.messages) == 5
    finally:
        await transport.close()
        transport.shutdown()
        await sink.stop()


def test_the_sent_log_loses_no_id_recorded_while_it_is_applied(tmp_path: Path) -> None:
    # The lanes' threads record while the event loop applies: an id recorded between
    # "nothing pending" and the truncation of the file must stay in the file.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns as often as they can: races show
    try:
        log = SentLog(tmp_path / "sent.log")
        recorder = threading.Thread(target=lambda: [log.record(i) for i in range(1, 20001)])
        recorder.start()
        while recorder.is_alive():
            log.applied(log.snapshot())
        recorder.join()
    finally:
        sys.setswitchinterval(interval)
    on_disk = SentLog(tmp_path / "sent.log").pending
    assert log.pending <= on_disk  # a crash now resends nothing twice
    log.applied(log.snapshot())
    log.close()
    assert SentLog(tmp_path / "sent.log").pending == set()


class LosesItsDatabase:
    """A shared-engine store (several nodes: each mail is marked before the lane's next)
    whose database goes away: marking fails, and -- with `claims_fail` -- so do that many
    claims before the database is back."""

    def __init__(self, rows: list[OutboxRow], claims_fail: int = 0) -> None:
        self.engine = SimpleNamespace(shared=True)
        self.rows = rows
        self.claims_fail = claims_fail
        self.marks_fail = True
        self.gone = asyncio.Event()  # set when a mark first failed
        self.marked: set[int] = set()

    async def claim_outgoing(self, now: object, limit: int = 100,
                             keep: object = ()) -> list[OutboxRow]:
        if self.claims_fail:
            self.claims_fail -= 1
            raise sqlite3.OperationalError("the database is restarting")
        return [r for r in self.rows if r.id not in self.marked]

    def write_busy(self) -> bool:
        return False

    async def mark_sent(self, ids: set[int], now: object) -> None:
        if self.marks_fail:
            self.gone.set()
            raise sqlite3.OperationalError("the database went away")
        self.marked |= set(ids)

    async def next_outgoing_at(self) -> None:
        return None


class SecondLaneWaits(Recorder):
    """Lane 1 sends only once the database is gone: still on its way when lane 0 fails."""

    def __init__(self, store: LosesItsDatabase) -> None:
        super().__init__(lanes=2)
        self.store = store
        self.finished: set[int] = set()

    async def send_run(self, rows: Sequence[OutboxRow], lane: int, accepted: Accepted,
                       stop: Stop) -> RunResult:
        if lane == 1:
            await self.store.gone.wait()
        result = await super().send_run(rows, lane, accepted, stop)
        self.finished.add(lane)
        return result


async def test_a_round_the_database_fails_ends_only_after_every_lane(tmp_path: Path) -> None:
    """A lane still sending after its round ended would be sending when the next round
    claims rows anew, and could send one twice."""
    store = LosesItsDatabase([row(1, 2), row(2, 1)])  # ticket 2: lane 0, ticket 1: lane 1
    transport = SecondLaneWaits(store)
    outbox = Outbox(store, transport, _now, SentLog(tmp_path / "sent.log"))  # type: ignore[arg-type]
    with pytest.raises(sqlite3.OperationalError):
        async with asyncio.timeout(10):
            await outbox.drain_once()
    assert transport.finished == {0, 1}
    assert outbox.sent_log.snapshot() == {1, 2}  # accepted, kept until the database has it


async def test_the_sender_outlives_a_database_restart(tmp_path: Path) -> None:
    """Rounds that fail on the database are retried (the task does not die of them), and
    what the server accepted meanwhile is marked once the database is back, not resent."""
    store = LosesItsDatabase([row(1, 2)], claims_fail=1)
    transport = Recorder(lanes=1)
    outbox = Outbox(store, transport, _now, SentLog(tmp_path / "sent.log"))  # type: ignore[arg-type]
    sender = asyncio.create_task(outbox.run())
    try:
        async with asyncio.timeout(30):
            while not store.gone.is_set():  # the claim failed, then the mark
                assert not sender.done(), sender
                await asyncio.sleep(0.01)
            store.marks_fail = False  # the database is back
            outbox.notify()
            while store.marked != {1}:
                assert not sender.done(), sender
                await asyncio.sleep(0.01)
    finally:
        outbox.close()
        async with asyncio.timeout(10):
            await sender
    assert [r.id for r in transport.sent] == [1]  # once


def _now() -> datetime:
    return datetime.now(UTC)
