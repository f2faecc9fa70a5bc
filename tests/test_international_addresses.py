"""Internationalised addresses (RFC 6530-6532): a request from jörg@example.com, which the
listener accepts with SMTPUTF8, is a ticket like any other, and its acknowledgement goes
back to that address in UTF-8 with SMTPUTF8 -- or, where the server cannot take it, fails
for good instead of holding up the lane as if the server were down."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
from collections.abc import AsyncIterator
from email.header import decode_header, make_header
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailgate.config.settings import Secret, SmtpConfig
from mailgate.errors import PermanentError
from mailgate.outbound.compose import address, needs_smtputf8
from mailgate.outbound.transport import ServerUnavailable, SmtpTransport
from mailgate.storage.store import OutboxRow
from tests.factories import Harness, harness, mail
from tests.mailservers import SmtpSink

JOERG = "jörg@example.com"


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    built = await harness(tmp_path)
    yield built
    await built.store.close()


def test_an_address_without_an_ascii_spelling_is_written_in_utf8_its_name_encoded() -> None:
    assert address("", JOERG) == JOERG
    named = address("Jörg Müller", JOERG)
    assert named.isascii() is False and named.endswith(f" <{JOERG}>")
    name = named.removesuffix(f" <{JOERG}>")
    assert name.isascii() and str(make_header(decode_header(name))) == "Jörg Müller"
    assert address('Ann "<x@y.z>"', JOERG).endswith(f"<{JOERG}>")
    assert address("Ann", "ann@example.com") == "Ann <ann@example.com>"


def test_only_a_mail_that_names_such_an_address_needs_smtputf8() -> None:
    ascii_mail = b"To: ann@example.com\r\n\r\nJ\xc3\xb6rg wrote this body in UTF-8\r\n"
    assert not needs_smtputf8("it@example.com", ["ann@example.com"], ascii_mail)
    assert needs_smtputf8("it@example.com", [JOERG], ascii_mail)
    assert needs_smtputf8("it@example.com", ["ann@example.com"],
                          f"Cc: {JOERG}\r\n\r\nbody\r\n".encode())


async def test_a_request_from_such_an_address_is_a_ticket_acknowledged_to_it(
        h: Harness) -> None:
    outcome = await h.deliver(mail("Drucker", sender=f"Jörg Müller <{JOERG}>"))
    assert outcome.action == "ticket" and outcome.acknowledged, outcome
    [(recipients, raw)] = await h.rows("SELECT recipients, raw FROM outbox WHERE kind = 'ack'")
    assert json.loads(recipients) == [JOERG]
    ack = email.message_from_bytes(raw, policy=email.policy.SMTPUTF8)
    assert ack["To"] == JOERG and ack["Message-ID"].startswith("<mgk2.")


class NoUtf8Sink(SmtpSink):
    """A server that does not offer SMTPUTF8 (before RFC 6531, or configured so)."""

    async def start(self) -> None:
        await super().start()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self, hostname="sink", enable_SMTPUTF8=False), self.host, self.port,
            reuse_address=True)


class Utf8Sink(SmtpSink):
    """Keeps whether each mail came with SMTPUTF8."""

    def __init__(self) -> None:
        super().__init__()
        self.utf8: list[bool] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.utf8.append(envelope.smtp_utf8)
        return await super().handle_DATA(server, session, envelope)


def _row(n: int, to: str) -> OutboxRow:
    raw = (f"From: it@example.com\r\nTo: {to}\r\nSubject: mail {n}\r\n"
           f"Message-ID: <utf8-{n}@example.com>\r\n\r\nbody\r\n").encode()
    return OutboxRow(n, f"utf8-{n}@example.com", "ack", None, "it@example.com", (to,), raw, 0)


async def test_such_mail_goes_with_smtputf8_and_other_mail_without() -> None:
    sink = Utf8Sink()
    await sink.start()
    transport = SmtpTransport(SmtpConfig(sink.host, sink.port))
    try:
        await transport.send(_row(1, JOERG))
        await transport.send(_row(2, "ann@example.com"))
        first, second = await sink.wait_for(2)
        assert first.rcpt_tos == [JOERG]
        assert email.message_from_bytes(first.raw, policy=email.policy.SMTPUTF8)["To"] == JOERG
        assert second.rcpt_tos == ["ann@example.com"]
        assert sink.utf8 == [True, False]
    finally:
        await transport.close()
        transport.shutdown()
        await sink.stop()


async def test_a_server_without_smtputf8_fails_that_mail_and_takes_the_next() -> None:
    sink = NoUtf8Sink()
    await sink.start()
    transport = SmtpTransport(SmtpConfig(sink.host, sink.port))
    try:
        with pytest.raises(PermanentError, match="SMTPUTF8"):
            await transport.send(_row(1, JOERG))
        await transport.send(_row(2, "ann@example.com"))  # the connection still works
        [received] = await sink.wait_for(1)
        assert received.rcpt_tos == ["ann@example.com"]
    finally:
        await transport.close()
        transport.shutdown()
        await sink.stop()


async def test_a_server_without_auth_is_retried_not_blamed_on_the_address() -> None:
    """login() raises SMTPNotSupportedError too when the server offers no AUTH: that is
    the server's setup, retried like an unreachable server, never this mail's failure."""
    sink = SmtpSink()  # offers SMTPUTF8, but no AUTH on a plain connection
    await sink.start()
    transport = SmtpTransport(SmtpConfig(sink.host, sink.port, username="it@example.com",
                                         password=Secret("pw", "test")))
    try:
        with pytest.raises(ServerUnavailable) as caught:
            await transport.send(_row(1, JOERG))
        assert "SMTPUTF8" not in str(caught.value)
    finally:
        await transport.close()
        transport.shutdown()
        await sink.stop()


async def test_mailgate_send_sends_from_such_an_address() -> None:
    from mailgate.cli.main import main

    sink = Utf8Sink()
    await sink.start()
    try:
        status = await asyncio.to_thread(main, [
            "send", "--server", f"{sink.host}:{sink.port}", "--from", JOERG,
            "--to", "it-help@example.com", "--subject", "Ausweis verloren"])
        assert status == 0
        [received] = await sink.wait_for(1)
        assert received.mail_from == JOERG and sink.utf8 == [True]
    finally:
        await sink.stop()
