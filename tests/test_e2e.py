"""End-to-end: the real daemon against a private Dovecot and an aiosmtpd sink on loopback."""

from __future__ import annotations

import asyncio
import functools
import smtplib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailgate.config.loader import load_setup
from mailgate.core.model import Origin
from mailgate.intake.pipeline import Pipeline
from mailgate.intake.read import Read
from mailgate.service.daemon import Daemon
from mailgate.storage.store import Tx
from tests import harness
from tests.factories import EXAMPLE_DIRECTORY, TEMPLATES, mail
from tests.mailservers import imap_mailbox, write_daemon_config

pytestmark = pytest.mark.e2e


@dataclass
class Env:
    """Everything a test needs to drive the daemon from outside."""

    tmp_path: Path
    dovecot: object
    account: object
    sink: object

    def config(self, *, listener: bool = False, extra: str = "", tables: str = "",
               notify_team: bool = False, directory: Path = EXAMPLE_DIRECTORY) -> Path:
        """`extra` goes into the [[mailbox]] table, `tables` before it. Team notifications
        are off unless asked for: most tests here count acknowledgements."""
        return write_daemon_config(
            self.tmp_path / "mailgate.toml", sink=self.sink, smtp_timeout=10,
            instance="mailgate-e2e", directory=directory, templates=TEMPLATES,
            notify_team=notify_team, tables=tables,
            listen="127.0.0.1:0" if listener else None,
            mailboxes=[imap_mailbox("it", self.account, self.tmp_path / "imap.secret",
                                    newline=True, poll_interval="1s", timeout=10,
                                    extra=extra)])

    def daemon(self, **kwargs: object) -> Daemon:
        setup = load_setup(self.config(**kwargs))  # type: ignore[arg-type]
        return Daemon(setup.config, setup.directory)

    def append(self, raw: bytes) -> int:
        return self.dovecot.append(self.account, raw)

    async def deliver(self, raw: bytes, folder: str = "INBOX") -> None:
        """Append RAW without blocking the loop the daemon runs in."""
        await asyncio.to_thread(self.dovecot.append, self.account, raw, folder)


@pytest.fixture
def env(tmp_path: Path, dovecot: object, imap_account: object, smtp_sink: object) -> Env:
    return Env(tmp_path, dovecot, imap_account, smtp_sink)


@pytest.fixture
async def daemon(env: Env) -> AsyncIterator[Daemon]:
    running = env.daemon()
    await running.start()
    yield running
    await running.stop()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached in time")
        await asyncio.sleep(0.05)


async def count(daemon: Daemon, sql: str) -> int:
    assert daemon.store is not None
    rows = await daemon.store.conn.execute_fetchall(sql)
    return int(next(iter(rows))[0])


async def position(daemon: Daemon) -> int:
    assert daemon.store is not None
    stored = await daemon.store.mailbox_position("it")
    return stored[1] if stored else 0


async def test_request_is_acknowledged_with_ticket_number(env: Env, daemon: Daemon) -> None:
    started = time.monotonic()
    await asyncio.to_thread(env.append, mail())
    [ack] = await env.sink.wait_for(count=1, timeout=15)
    latency = time.monotonic() - started
    print(f"\nAPPEND -> acknowledgement at the sink: {latency * 1000:.0f} ms")
    msg = ack.message
    assert msg["Subject"] == "[IT-1001] Re: Laptop won't boot"
    assert msg["To"] == "ann@example.com"
    assert msg["From"] == "IT Service Desk <it-help@example.com>"
    assert msg["In-Reply-To"] == "<req-1@example.com>"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert ack.rcpt_tos == ["ann@example.com"]
    text = msg.get_payload()[0].get_payload(decode=True).decode()
    assert "IT-1001" in text and "4 business hours" in text
    assert daemon.store is not None
    ticket = await daemon.store.ticket("IT-1001")
    assert ticket is not None and ticket.requester == "ann@example.com"
    assert latency < 10  # generous: behaviour, not a benchmark


async def test_reply_threads_into_the_ticket_without_new_ack(env: Env, daemon: Daemon) -> None:
    await asyncio.to_thread(env.append, mail())
    [ack] = await env.sink.wait_for(count=1)
    reply = mail("Re: Laptop won't boot", message_id="<reply-1@example.com>",
                 body="Now it shows a blue screen.",
                 headers={"In-Reply-To": ack.message["Message-ID"]})
    uid = await asyncio.to_thread(env.append, reply)
    await eventually(lambda: _at_least(position(daemon), uid))
    assert await count(daemon, "SELECT COUNT(*) FROM tickets") == 1
    assert await count(daemon, "SELECT COUNT(*) FROM events WHERE kind = 'reply'") == 1
    # The reply is relayed to the team (workflow.py), one copy each, never acknowledged
    # again.
    relayed = (await env.sink.wait_for(count=3))[1:]
    assert sorted(r.rcpt_tos[0] for r in relayed) == ["alice@example.com", "bob@example.com"]
    caused = await env.sink.before_marker(env.deliver)
    assert [m.rcpt_tos for m in caused].count(["ann@example.com"]) == 1


async def test_same_message_delivered_twice_is_one_ticket(env: Env, daemon: Daemon) -> None:
    await asyncio.to_thread(env.append, mail())
    uid = await asyncio.to_thread(env.append, mail())
    await eventually(lambda: _at_least(position(daemon), uid))
    await env.sink.wait_for(count=1)
    assert await count(daemon, "SELECT COUNT(*) FROM tickets") == 1
    assert len(await env.sink.before_marker(env.deliver)) == 1


async def test_a_group_is_read_ahead_where_statements_are_round_trips(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # PostgreSQL: a group's dedupe and budget facts in one statement (Pipeline.read_ahead);
    # SQLite: not at all (a statement there is a function call; it only added CPU).
    groups: list[int] = []
    read_ahead = Pipeline.read_ahead

    async def counted(self: Pipeline, tx: Tx, reads: Sequence[Read | None],
                      origin: Origin) -> None:
        groups.append(len(reads))
        await read_ahead(self, tx, reads, origin)

    monkeypatch.setattr(Pipeline, "read_ahead", counted)
    running = env.daemon()
    await running.start()
    try:
        for i in range(3):
            await asyncio.to_thread(env.append, mail(f"r{i}", message_id=f"<ra{i}@example.com>"))
        await env.sink.wait_for(count=3)
    finally:
        await running.stop()
    assert (sum(groups) >= 3) if harness.on_postgresql() else groups == []


async def test_out_of_office_gets_no_acknowledgement(env: Env, daemon: Daemon) -> None:
    ooo = mail("Automatic reply: Laptop", headers={"Auto-Submitted": "auto-replied"})
    uid = await asyncio.to_thread(env.append, ooo)
    await eventually(lambda: _at_least(position(daemon), uid))
    assert await count(daemon, "SELECT COUNT(*) FROM tickets") == 0
    assert await env.sink.before_marker(env.deliver) == []


async def test_a_key_shown_to_others_proves_no_later_mail_of_the_same_mailbox(
        env: Env) -> None:
    """Alice answers her notification with ann in Cc; ann, holding alice's key now, sends
    "#close" as alice. Both wait in the mailbox while mailgate is down, so one read takes
    both, in the order the server received them: the answer runs and burns the key before
    the forgery is decided (README: "Reply keys ... in what order")."""
    first = env.daemon(notify_team=True)
    await first.start()
    try:
        await asyncio.to_thread(env.append, mail())
        sent = await env.sink.wait_for(count=3)  # ann's acknowledgement, alice's and bob's notices
        [key] = [m.message["Message-ID"] for m in sent if m.rcpt_tos == ["alice@example.com"]]
    finally:
        await first.stop()
    subject = "Re: [IT-1001] Laptop won't boot"
    await asyncio.to_thread(env.append, mail(
        subject, sender="Alice Adams <alice@example.com>", cc="ann@example.com",
        message_id="<alice-1@example.com>", body="#take", headers={"In-Reply-To": key}))
    uid = await asyncio.to_thread(env.append, mail(
        subject, sender="Alice Adams <alice@example.com>", message_id="<forged@ann.example>",
        body="#close", headers={"In-Reply-To": key}))
    second = env.daemon(notify_team=True)
    await second.start()
    try:
        await eventually(lambda: _at_least(position(second), uid))
        assert await count(second, "SELECT COUNT(*) FROM tickets WHERE status = 'open' "
                                   "AND assignee = 'alice@example.com'") == 1
        assert await count(second, "SELECT COUNT(*) FROM exposed_keys") == 1
    finally:
        await second.stop()


async def test_restart_neither_loses_nor_doubles(env: Env) -> None:
    first = env.daemon()
    await first.start()
    for i in range(5):
        await asyncio.to_thread(env.append, mail(f"before {i}", message_id=f"<b{i}@x.example>",
                                                 sender=f"user{i}@example.com"))
    await env.sink.wait_for(count=5)
    await first.stop()
    for i in range(5):  # arrives while mailgate is down
        await asyncio.to_thread(env.append, mail(f"during {i}", message_id=f"<d{i}@x.example>",
                                                 sender=f"user{i}@example.com"))
    second = env.daemon()
    await second.start()
    try:
        await env.sink.wait_for(count=10)
        assert await count(second, "SELECT COUNT(*) FROM tickets") == 10
        subjects = sorted(m.message["Subject"] for m in env.sink.messages)
        assert len(set(subjects)) == 10
    finally:
        await second.stop()


async def test_recreated_mailbox_does_not_duplicate_tickets(env: Env) -> None:
    await asyncio.to_thread(env.dovecot.create_folder, env.account, "Requests")
    created = int(time.time())  # Dovecot's UIDVALIDITY for it: the creation second
    running = env.daemon(extra='folder = "Requests"')
    await running.start()
    try:
        raws = [mail(f"r {i}", message_id=f"<r{i}@x.example>") for i in range(3)]
        for raw in raws:
            await asyncio.to_thread(env.dovecot.append, env.account, raw, "Requests")
        await env.sink.wait_for(count=3)
        # An admin deletes and recreates the folder: new UIDVALIDITY, UIDs start again.
        # Dovecot derives UIDVALIDITY from the creation second: wait so it really changes.
        while int(time.time()) <= created:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(env.dovecot.recreate_folder, env.account, "Requests")
        for raw in raws:
            await asyncio.to_thread(env.dovecot.append, env.account, raw, "Requests")
        await asyncio.to_thread(env.dovecot.append, env.account,
                                mail("fresh", message_id="<fresh@x.example>"), "Requests")
        await env.sink.wait_for(count=4, timeout=30)
        assert await count(running, "SELECT COUNT(*) FROM tickets") == 4
        deliver = functools.partial(env.deliver, folder="Requests")
        assert len(await env.sink.before_marker(deliver)) == 4
    finally:
        await running.stop()


async def test_push_listener_acknowledges(env: Env) -> None:
    running = env.daemon(listener=True)
    await running.start()
    try:
        port = running.listen_port
        assert port
        raw = mail("Printer jammed", message_id="<push-1@example.com>",
                   to="facilities@example.com")
        await asyncio.to_thread(send, port, "facilities@example.com", raw)
        [ack] = await env.sink.wait_for(count=1)
        assert ack.message["Subject"] == "[FAC-1001] Re: Printer jammed"
    finally:
        await running.stop()


async def test_push_listener_refuses_unknown_recipient_without_default(env: Env,
                                                                       tmp_path: Path) -> None:
    directory = tmp_path / "directory.toml"
    directory.write_text(EXAMPLE_DIRECTORY.read_text()
                         .replace('default_department = "it"', ""))
    setup = load_setup(env.config(listener=True, directory=directory))
    running = Daemon(setup.config, setup.directory)
    await running.start()
    try:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            await asyncio.to_thread(send, running.listen_port or 0, "nobody@example.com", mail())
    finally:
        await running.stop()


async def test_permanent_smtp_rejection_is_recorded_on_the_ticket(env: Env,
                                                                  daemon: Daemon) -> None:
    env.sink.reject_with = (550, "5.1.1 mailbox unavailable")
    await asyncio.to_thread(env.append, mail())
    await eventually(lambda: _positive(count(
        daemon, "SELECT COUNT(*) FROM events WHERE kind = 'delivery_failed'")))
    assert await count(daemon, "SELECT COUNT(*) FROM outbox WHERE status = 'failed'") == 1


async def test_temporary_smtp_failure_is_retried(env: Env, daemon: Daemon) -> None:
    env.sink.reject_with = (451, "4.3.0 try later")
    await asyncio.to_thread(env.append, mail())
    await eventually(lambda: _positive(count(
        daemon, "SELECT COUNT(*) FROM outbox WHERE attempts > 0 AND status = 'queued'")))
    env.sink.reject_with = None
    assert daemon.store is not None
    async with daemon.store.transaction() as tx:  # skip the backoff instead of waiting
        await tx.execute("UPDATE outbox SET next_attempt = 0")
    assert daemon.outbox is not None
    daemon.outbox.notify()
    [ack] = await env.sink.wait_for(count=1)
    assert ack.message["Subject"].startswith("[IT-1001]")


def send(port: int, recipient: str, raw: bytes) -> None:
    """smtplib blocks: the tests call this in a thread so the daemon's loop keeps running."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("ann@example.com", [recipient], raw)


async def _at_least(value: Awaitable[int], target: int) -> bool:
    return await value >= target


async def _positive(value: Awaitable[int]) -> bool:
    return await value > 0




async def test_sla_warning_and_breach_reach_the_sink_and_an_answer_stops_them(
        env: Env) -> None:
    """IT answers within 4 business hours (09:00-12:30, 13:30-17:30 Berlin). Two requests
    arrive on Tuesday at 10:00 Berlin; alice answers the second. Simulated time then jumps
    to the first warning (14:00) and to the breach (15:00)."""
    from datetime import UTC, datetime

    from tests.factories import FakeClock

    clock = FakeClock(datetime(2026, 11, 24, 9, 0, tzinfo=UTC))
    setup = load_setup(env.config(tables='[security]\nauthserv_id = "mx.example.com"\n'))
    daemon = Daemon(setup.config, setup.directory, clock=clock)
    await daemon.start()
    try:
        await asyncio.to_thread(env.append, mail("VPN down", message_id="<vpn@example.com>"))
        await asyncio.to_thread(env.append, mail("New mouse", message_id="<mouse@example.com>"))
        await env.sink.wait_for(count=2)  # the two acknowledgements
        await asyncio.to_thread(env.append, mail(
            "Re: [IT-1002] New mouse", sender="Alice <alice@example.com>",
            message_id="<answer@example.com>", body="On its way.", headers={
                "Authentication-Results": "mx.example.com; spf=pass smtp.mailfrom=example.com; "
                                          "dmarc=pass header.from=example.com"}))
        await eventually(lambda: _answered(daemon))
        [relayed] = (await env.sink.wait_for(count=3))[2:]  # alice's answer, to ann
        assert relayed.rcpt_tos == ["ann@example.com"]

        assert daemon.escalator is not None
        clock.now = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)  # 14:00 Berlin: 75 %
        daemon.escalator.notify()
        warnings = (await env.sink.wait_for(count=5))[3:]  # one copy each: alice, bob
        for warning in warnings:
            assert warning.message["Subject"].startswith("[IT-1001] SLA warning, first response")
            assert warning.message["Auto-Submitted"] == "auto-generated"
        assert sorted(w.rcpt_tos[0] for w in warnings) == ["alice@example.com", "bob@example.com"]

        clock.now = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)  # 15:00 Berlin: breach
        daemon.escalator.notify()  # the 90 % warning is overtaken by the breach: skipped
        received = await env.sink.wait_for(count=7)  # the breach: carol's and dave's copy
        subjects = [r.message["Subject"] for r in received[5:]]
        assert all(s.startswith("[IT-1001] SLA breached") for s in subjects), subjects
        assert not any("IT-1002" in s for r in received[3:]
                       for s in [r.message["Subject"]]), "an answered ticket escalated"
        assert await daemon.escalator.run_once() == 0  # nothing is due twice
        assert len(await env.sink.before_marker(env.deliver)) == 7  # nothing sent twice
    finally:
        await daemon.stop()


async def _answered(daemon: Daemon) -> bool:
    return await count(daemon, "SELECT COUNT(*) FROM tickets "
                               "WHERE first_response_at IS NOT NULL") == 1
