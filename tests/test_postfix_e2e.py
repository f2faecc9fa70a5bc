"""A real Postfix in front of mailgate, end to end (README "Fitting it into a real mail
setup"): a private Postfix (tests/postfix.py) routes it-help@example.com to mailgate's push
listener by transport_maps, over LMTP or SMTP; mailgate's acknowledgement goes out through
the same Postfix, which relays it to an aiosmtpd sink. With mailgate stopped, Postfix
defers the request and delivers it once mailgate is back.
"""

from __future__ import annotations

import asyncio
import smtplib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from mailgate.config.loader import load_setup
from mailgate.service.daemon import Daemon
from tests.environment import missing
from tests.factories import mail
from tests.harness import database, scalar
from tests.mailservers import SmtpSink, free_port, write_daemon_config
from tests.postfix import PostfixServer, find_postfix, why_no_private_postfix

IT = "it-help@example.com"


@pytest.fixture
def mailgate_port() -> int:
    return free_port()


@pytest.fixture(params=["lmtp", "smtp"])
def postfix(request: pytest.FixtureRequest, smtp_sink: SmtpSink,
            mailgate_port: int) -> Iterator[PostfixServer]:
    reason = why_no_private_postfix()
    if reason is not None:
        missing(reason)
    binary = find_postfix()
    assert binary is not None
    transport = (f"lmtp:inet:127.0.0.1:{mailgate_port}" if request.param == "lmtp"
                 else f"smtp:[127.0.0.1]:{mailgate_port}")
    server = PostfixServer(binary, routes={IT: transport},
                           default=f"smtp:[127.0.0.1]:{smtp_sink.port}")
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def config(tmp_path: Path, postfix: PostfixServer, mailgate_port: int) -> Path:
    # Outgoing mail goes to Postfix's smtpd, not to the sink directly.
    via_postfix = SmtpSink(host="127.0.0.1", port=postfix.port)
    return write_daemon_config(tmp_path / "mailgate.toml", sink=via_postfix,
                               notify_team=False, acks_per_sender_per_hour=1000,
                               listen=f"127.0.0.1:{mailgate_port}")


@pytest.fixture
async def daemon(config: Path) -> AsyncIterator[Daemon]:
    setup = load_setup(config)
    running = Daemon(setup.config, setup.directory)
    await running.start()
    yield running
    await running.stop()


def submit(postfix: PostfixServer, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", postfix.port, timeout=30) as client:
        client.sendmail("ann@example.com", [IT], raw)


def tickets(target: Path | str) -> int:
    return int(scalar(target, "SELECT COUNT(*) FROM tickets"))


async def until(condition: Callable[[], bool], what: str, postfix: PostfixServer,
                timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{postfix.log_tail()}")
        await asyncio.sleep(0.2)


async def test_mail_through_postfix_becomes_a_ticket_and_the_ack_goes_out_through_it(
        postfix: PostfixServer, daemon: Daemon, smtp_sink: SmtpSink) -> None:
    raw = mail("VPN drops every hour", message_id="<via-postfix@example.com>")
    await asyncio.to_thread(submit, postfix, raw)
    try:
        [ack] = await smtp_sink.wait_for(count=1, timeout=30)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{postfix.log_tail()}") from None
    assert ack.message["Subject"] == "[IT-1001] Re: VPN drops every hour"
    assert ack.rcpt_tos == ["ann@example.com"]
    # It went through Postfix: its queue added a Received line naming it.
    assert "mx.mailgate-test.invalid" in str(ack.message["Received"])
    assert tickets(database(daemon.config.state_dir)) == 1
    await until(lambda: "Mail queue is empty" in postfix.queue(), "an empty queue", postfix)


async def test_postfix_defers_while_mailgate_is_stopped_and_delivers_once_it_is_back(
        postfix: PostfixServer, config: Path, smtp_sink: SmtpSink) -> None:
    raw = mail("Printer on fire", message_id="<deferred@example.com>")
    await asyncio.to_thread(submit, postfix, raw)
    # Nobody listens: Postfix keeps the mail (a deferral, never a bounce).
    await until(lambda: "Connection refused" in postfix.queue(), "a deferred message",
                postfix)
    assert smtp_sink.messages == []  # no bounce to ann
    setup = load_setup(config)
    running = Daemon(setup.config, setup.directory)
    await running.start()
    try:
        await asyncio.to_thread(postfix.flush)
        try:
            [ack] = await smtp_sink.wait_for(count=1, timeout=30)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{postfix.log_tail()}") from None
        assert ack.message["Subject"] == "[IT-1001] Re: Printer on fire"
        assert tickets(database(running.config.state_dir)) == 1
        await until(lambda: "Mail queue is empty" in postfix.queue(), "an empty queue",
                    postfix)
    finally:
        await running.stop()
