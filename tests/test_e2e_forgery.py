"""End-to-end: forged mail through the real SMTP listener, on the real daemon, with an
aiosmtpd sink for what mailgate sends. Configured as behind a stock Postfix: trusted
domains set, no Authentication-Results -- the From: line is all an attacker needs to
fake, and it must not be enough.
"""

from __future__ import annotations

import asyncio
import smtplib
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailgate.config.loader import load_setup
from mailgate.service.daemon import Daemon
from tests.factories import EXAMPLE_DIRECTORY, TEMPLATES, mail
from tests.mailservers import SmtpSink, write_daemon_config
from tests.test_e2e import count, eventually

pytestmark = pytest.mark.e2e
STOCK = '[security]\ntrusted_domains = ["example.com"]\n'


@pytest.fixture
async def daemon(tmp_path: Path, smtp_sink: SmtpSink) -> AsyncIterator[Daemon]:
    path = write_daemon_config(tmp_path / "mailgate.toml", sink=smtp_sink, smtp_timeout=10,
                               instance="mailgate-e2e", directory=EXAMPLE_DIRECTORY,
                               templates=TEMPLATES, notify_team=True, tables=STOCK,
                               listen="127.0.0.1:0")
    setup = load_setup(path)
    running = Daemon(setup.config, setup.directory)
    await running.start()
    yield running
    await running.stop()


def push(daemon: Daemon, raw: bytes, envelope_from: str = "ann@example.com") -> None:
    """What `swaks --from ENVELOPE --h-From ...` does: the envelope is anyone's to choose."""
    assert daemon.listen_port
    with smtplib.SMTP("127.0.0.1", daemon.listen_port, timeout=10) as client:
        client.sendmail(envelope_from, ["it-help@example.com"], raw)


async def status(daemon: Daemon) -> str:
    assert daemon.store is not None
    ticket = await daemon.store.ticket("IT-1001")
    assert ticket is not None
    return ticket.status.value


async def test_a_forged_agent_closes_nothing_and_the_real_one_can(
        daemon: Daemon, smtp_sink: SmtpSink) -> None:
    await asyncio.to_thread(push, daemon, mail())
    first = {m.rcpt_tos[0]: m.message for m in await smtp_sink.wait_for(count=3)}
    # ann, a local user, forges alice: swaks --from ann@ --h-From "Alice Adams <alice@>"
    await asyncio.to_thread(push, daemon, mail(
        "Re: [IT-1001] Laptop", sender="Alice Adams <alice@example.com>",
        message_id="<forged@example.com>", body="#close"))
    [notice] = (await smtp_sink.wait_for(count=4))[3:]
    assert notice.rcpt_tos == ["alice@example.com"]
    assert "nothing proves that you wrote it" in notice.message.get_payload(decode=True).decode()
    assert await status(daemon) == "new"
    # The real alice answers her notification: the key in its Message-ID is her proof.
    await asyncio.to_thread(push, daemon, mail(
        "Re: [IT-1001] New request", sender="Alice Adams <alice@example.com>",
        message_id="<real@example.com>", body="#close",
        headers={"In-Reply-To": first["alice@example.com"]["Message-ID"]}),
        "alice@example.com")
    assert await status(daemon) == "closed"


async def test_a_key_shown_to_others_proves_no_mail_pushed_after_it(
        daemon: Daemon, smtp_sink: SmtpSink) -> None:
    """Pushed mail is stored before its 250: once alice's answer with ann in Cc has been
    accepted, ann's "#close" as alice with the key it showed her proves nothing."""
    await asyncio.to_thread(push, daemon, mail())
    sent = {m.rcpt_tos[0]: m.message for m in await smtp_sink.wait_for(count=3)}
    key = sent["alice@example.com"]["Message-ID"]
    subject = "Re: [IT-1001] Laptop won't boot"
    await asyncio.to_thread(push, daemon, mail(
        subject, sender="Alice Adams <alice@example.com>", cc="ann@example.com",
        message_id="<alice-1@example.com>", body="#take", headers={"In-Reply-To": key}),
        "alice@example.com")
    await asyncio.to_thread(push, daemon, mail(
        subject, sender="Alice Adams <alice@example.com>", message_id="<forged@ann.example>",
        body="#close", headers={"In-Reply-To": key}))
    assert await status(daemon) == "open"  # alice's #take ran; ann's #close did not
    assert await count(daemon, "SELECT COUNT(*) FROM exposed_keys") == 1


async def test_a_flood_reaches_each_agent_five_times_and_one_victim_ten_times(
        daemon: Daemon, smtp_sink: SmtpSink) -> None:
    for n in range(20):
        await asyncio.to_thread(push, daemon, mail(
            f"Request {n}", sender=f"victim+{n}@example.com", message_id=f"<v{n}@example.com>"))
    await eventually(lambda: _tickets(daemon, 20))
    await eventually(lambda: _outbox_empty(daemon))
    assert await count(daemon, "SELECT COUNT(*) FROM held_notifications") == 15
    caused = await smtp_sink.before_marker(
        lambda raw: asyncio.to_thread(push, daemon, raw, "marker@example.com"))
    to = [m.rcpt_tos[0] for m in caused]
    assert to.count("alice@example.com") == to.count("bob@example.com") == 5
    assert sum(a.startswith("victim+") for a in to) == 10  # one budget, plus tags or not


async def test_mail_pushed_from_the_null_sender_is_never_answered(
        daemon: Daemon, smtp_sink: SmtpSink) -> None:
    """An autoresponder that writes neither Auto-Submitted nor an out-of-office subject,
    sending from MAIL FROM:<> as RFC 3834 asks: only the envelope says what it is, and
    pushed mail has no Return-Path header to carry it."""
    await asyncio.to_thread(push, daemon, mail(
        "Re: Printer", sender="Robot <robot@vendor.example.net>",
        message_id="<oof-1@vendor.example.net>", body="I am away until Monday."), "")
    assert await smtp_sink.before_marker(lambda raw: asyncio.to_thread(push, daemon, raw)) == []
    assert await count(daemon, "SELECT COUNT(*) FROM quarantine "
                               "WHERE reason LIKE '%null return path%'") == 1
    assert await count(daemon, "SELECT COUNT(*) FROM tickets") == 1  # the marker's


async def test_a_stranger_cannot_stall_the_daemon_with_a_rating_line(
        daemon: Daemon, smtp_sink: SmtpSink) -> None:
    """Any mail tagged with a resolved ticket's number has its first line read as a
    rating, whoever sent it: '1', 3,000 blanks and 'x' took the old pattern minutes on the
    event loop, and no other mail was read meanwhile (the marker's answer never came)."""
    await asyncio.to_thread(push, daemon, mail())
    first = {m.rcpt_tos[0]: m.message for m in await smtp_sink.wait_for(count=3)}
    await asyncio.to_thread(push, daemon, mail(
        "Re: [IT-1001] New request", sender="Alice Adams <alice@example.com>",
        message_id="<resolve@example.com>", body="#resolve Replaced the cable.",
        headers={"In-Reply-To": first["alice@example.com"]["Message-ID"]}),
        "alice@example.com")
    assert await status(daemon) == "resolved"
    await asyncio.to_thread(push, daemon, mail(
        "Re: [IT-1001] x", sender="mallory@evil.example", message_id="<stall@evil.example>",
        body="1" + " " * 3000 + "x"), "mallory@evil.example")
    await smtp_sink.before_marker(lambda raw: asyncio.to_thread(push, daemon, raw))
    assert await status(daemon) == "resolved"


async def test_a_retried_auto_reply_from_the_null_sender_is_held_again_not_answered(
        daemon: Daemon, tmp_path: Path) -> None:
    """The autoresponder above, held for matching no ticket: an admin's `mailgate
    quarantine retry` runs it with the envelope it came with (kept with it), so it is
    held again, for the same reason, and nothing is queued for the robot. Without the
    envelope the retry read it as a request and acknowledged it: a loop."""
    await asyncio.to_thread(push, daemon, mail(
        "Re: Printer", sender="Robot <robot@vendor.example.net>",
        message_id="<oof-2@vendor.example.net>", body="I am away until Monday."), "")
    assert daemon.store is not None
    [held] = await daemon.store.quarantined()
    assert "null return path" in held.reason
    shown = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "mailgate", "--config", str(tmp_path / "mailgate.toml"),
        "quarantine", "show", str(held.id)], capture_output=True, text=True, timeout=60)
    assert "envelope: MAIL FROM:<> RCPT TO:<it-help@example.com>" in shown.stdout
    retried = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "mailgate", "--config", str(tmp_path / "mailgate.toml"),
        "quarantine", "retry", str(held.id)], capture_output=True, text=True, timeout=60)
    assert retried.returncode == 1, retried.stdout + retried.stderr
    assert "quarantined" in retried.stdout and "null return path" in retried.stdout
    assert await count(daemon, "SELECT COUNT(*) FROM outbox") == 0
    assert await count(daemon, "SELECT COUNT(*) FROM tickets") == 0
    assert [e.id for e in await daemon.store.quarantined()] == [held.id]


async def _tickets(daemon: Daemon, wanted: int) -> bool:
    return await count(daemon, "SELECT COUNT(*) FROM tickets") >= wanted


async def _outbox_empty(daemon: Daemon) -> bool:
    return await count(daemon, "SELECT COUNT(*) FROM outbox WHERE status = 'queued'") == 0
