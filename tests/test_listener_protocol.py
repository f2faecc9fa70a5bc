"""The push listener's protocol, spoken over real sockets: what a sending MTA may put on
the wire must never turn a real request into a bounce.

- Line format: long lines and bare LF line ends (in commands, in DATA, in the end
  marker) are accepted; nothing about a line's format is answered with a 5xx.
- SMTP and LMTP on one listener: `protocol = "auto"` answers whichever greeting comes;
  the strict choices answer the other one with a temporary 421, so the MTA defers.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mailgate.config.settings import load_config
from mailgate.errors import ConfigError
from mailgate.service.daemon import reload
from tests.factories import ROOT
from tests.harness import database, query
from tests.mailservers import SmtpSink
from tests.test_listener_limits import IT, Client, greeted, running, stored

FAC = "facilities@example.com"


def request(message_id: str, body: str, eol: str = "\r\n") -> bytes:
    head = ["From: Ann Example <ann@example.com>", f"To: {IT}", "Subject: Line format",
            "Date: Tue, 24 Nov 2026 09:00:00 +0100", f"Message-ID: <{message_id}>",
            "Content-Type: text/plain; charset=utf-8", ""]
    return (eol.join(head) + eol + body).encode()


async def command(client: Client, line: bytes) -> list[bytes]:
    """Send one command line as it is (its own line end included); the reply lines."""
    client.writer.write(line)
    return await reply(client)


async def reply(client: Client) -> list[bytes]:
    lines = [await client.line()]
    while lines[-1][3:4] == b"-":  # a multi-line reply goes on
        lines.append(await client.line())
    return lines


async def transaction(port: int, raw: bytes, *, eol: bytes = b"\r\n",
                      greeting: bytes = b"EHLO", rcpts: tuple[str, ...] = (IT,)) -> list[bytes]:
    """One delivery with every command ending in EOL; RAW is sent exactly as given and
    must bring its own end marker. The reply lines to the end of data."""
    client = await greeted(port)
    try:
        assert (await command(client, greeting + b" mta.example.com" + eol))[-1][:1] == b"2"
        assert (await command(client, b"MAIL FROM:<ann@example.com>" + eol))[0][:1] == b"2"
        for rcpt in rcpts:
            assert (await command(client, f"RCPT TO:<{rcpt}>".encode() + eol))[0][:1] == b"2"
        assert (await command(client, b"DATA" + eol))[0][:3] == b"354"
        client.writer.write(raw)
        answers = [await client.line(timeout=30)]
        if greeting == b"LHLO":
            answers += [await client.line(timeout=30) for _ in rcpts[1:]]
        return answers
    finally:
        await client.close()


def message_ids(target: Path | str) -> list[str]:
    return [r[0] for r in query(target, "SELECT message_id FROM messages ORDER BY id")]


# --- line format --------------------------------------------------------------------------

async def test_long_lines_in_data_are_accepted_whole(tmp_path: Path,
                                                     smtp_sink: SmtpSink) -> None:
    long_line = "x" * 5000
    huge_line = "y" * 300_000  # far past 998, beyond the reader's 64 KB pieces
    body = f"{long_line}\r\n.{huge_line}\r\nthe end\r\n"
    raw = request("long@x", body)
    async with running(tmp_path, smtp_sink) as daemon:
        port = daemon.listen_port
        assert port
        [answer] = await transaction(port, raw.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        assert answer.startswith(b"250 2.0.0 OK IT-"), answer
    kept = stored(database(daemon.config.state_dir), "long@x")
    assert kept["raw"] == raw  # every byte, the stuffed dot removed
    assert kept["tickets"] == 1


async def test_bare_lf_everywhere_is_accepted(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    body = "It only beeps.\n..a line that starts with a dot\n.\nthe end\n"
    raw = request("bare-lf@x", body, eol="\n")
    async with running(tmp_path, smtp_sink) as daemon:
        port = daemon.listen_port
        assert port
        # Commands, message and end marker all end in a bare LF.
        [answer] = await transaction(port, raw.replace(b"\n.", b"\n..") + b".\n", eol=b"\n")
        assert answer.startswith(b"250 2.0.0 OK IT-"), answer
    kept = stored(database(daemon.config.state_dir), "bare-lf@x")
    assert kept["raw"] == raw
    assert "..a line that starts with a dot\n.\nthe end" in kept["body"]
    assert kept["tickets"] == 1


@pytest.mark.parametrize("ending", [b"\r\n.\n", b"\n.\r\n", b"\r\n\r\n.\n"],
                         ids=["crlf-then-dot-lf", "lf-then-dot-crlf", "empty-line"])
async def test_mixed_line_ends_at_the_end_marker(tmp_path: Path, smtp_sink: SmtpSink,
                                                 ending: bytes) -> None:
    raw = request("mixed@x", "first line\r\nsecond line")
    async with running(tmp_path, smtp_sink) as daemon:
        port = daemon.listen_port
        assert port
        [answer] = await transaction(port, raw + ending)
        assert answer.startswith(b"250 2.0.0 OK IT-"), answer
    kept = stored(database(daemon.config.state_dir), "mixed@x")
    assert kept["raw"] == raw + ending[:-2 if ending.endswith(b".\n") else -3]


async def test_a_dot_then_cr_without_lf_is_data(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    raw = request("dot-cr@x", "one\r\n.\rstill data\r\n")
    async with running(tmp_path, smtp_sink) as daemon:
        port = daemon.listen_port
        assert port
        [answer] = await transaction(port, raw + b".\r\n")
        assert answer.startswith(b"250"), answer
    kept = stored(database(daemon.config.state_dir), "dot-cr@x")
    assert kept["raw"] == raw.replace(b"\n.\r", b"\n\r")


async def test_commands_pipelined_after_a_bare_lf_end_marker_are_answered(
        tmp_path: Path, smtp_sink: SmtpSink) -> None:
    first, second = request("pipe-1@x", "one\n", "\n"), request("pipe-2@x", "two\n", "\n")
    async with running(tmp_path, smtp_sink) as daemon:
        port = daemon.listen_port
        assert port
        client = await greeted(port)
        await command(client, b"EHLO mta\n")
        # Everything in one write, as a PIPELINING client may (RFC 2920).
        client.writer.write(b"MAIL FROM:<ann@example.com>\nRCPT TO:<" + IT.encode() +
                            b">\nDATA\n")
        assert [(await client.line())[:3] for _ in range(3)] == [b"250", b"250", b"354"]
        client.writer.write(first + b".\nMAIL FROM:<ann@example.com>\nRCPT TO:<" +
                            IT.encode() + b">\nDATA\n")
        answers = [await client.line(timeout=30) for _ in range(4)]
        assert [a[:3] for a in answers] == [b"250", b"250", b"250", b"354"], answers
        client.writer.write(second + b".\nQUIT\n")
        assert (await client.line(timeout=30))[:3] == b"250"
        assert (await client.line())[:3] == b"221"
        await client.close()
    assert message_ids(database(daemon.config.state_dir)) == ["pipe-1@x", "pipe-2@x"]


async def test_long_command_lines_are_accepted(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    sender = "a" * 1500 + "@example.com"  # far over RFC 5321's 512-octet command line
    async with running(tmp_path, smtp_sink) as daemon:
        port = daemon.listen_port
        assert port
        client = await greeted(port)
        await command(client, b"EHLO " + b"h" * 2000 + b".example.com\r\n")
        answer = await command(client, f"MAIL FROM:<{sender}> SIZE=100 BODY=8BITMIME\r\n"
                               .encode())
        assert answer[0].startswith(b"250"), answer
        answer = await command(client, f"RCPT TO:<{IT}>\r\n".encode())
        assert answer[0].startswith(b"250"), answer
        await client.close()


async def test_oversize_message_with_long_lines_is_still_refused_by_size(
        tmp_path: Path, smtp_sink: SmtpSink) -> None:
    raw = request("too-big@x", "z" * 200_000 + "\r\n")
    async with running(tmp_path, smtp_sink, max_message_size=100_000) as daemon:
        port = daemon.listen_port
        assert port
        [answer] = await transaction(port, raw + b".\r\n")
        assert answer.startswith(b"552 5.3.4"), answer  # the size, not the line
    assert message_ids(database(daemon.config.state_dir)) == []


# --- SMTP and LMTP on one listener ----------------------------------------------------------

def test_protocol_is_auto_unless_chosen(tmp_path: Path) -> None:
    config = tmp_path / "mailgate.toml"
    base = '[outbox]\ndir = "out"\n[intake.smtp]\nlisten = "127.0.0.1:2525"\n'
    config.write_text(base)
    listener = load_config(config).listener
    assert listener is not None and listener.protocol == "auto"
    for choice in ("smtp", "lmtp", "auto"):
        config.write_text(base + f'protocol = "{choice}"\n')
        listener = load_config(config).listener
        assert listener is not None and listener.protocol == choice
    config.write_text(base + 'protocol = "esmtp"\n')
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert "intake.smtp.protocol: must be one of auto, smtp, lmtp; got 'esmtp'" in str(
        raised.value)


@pytest.mark.parametrize("protocol", ["auto", "lmtp"])
async def test_lhlo_makes_an_lmtp_session_with_one_answer_per_recipient(
        tmp_path: Path, smtp_sink: SmtpSink, protocol: str) -> None:
    raw = request(f"lmtp-{protocol}@x", "two desks\r\n")
    async with running(tmp_path, smtp_sink, protocol=protocol) as daemon:
        port = daemon.listen_port
        assert port
        answers = await transaction(port, raw + b".\r\n", greeting=b"LHLO", rcpts=(IT, FAC))
        assert len(answers) == 2 and all(a.startswith(b"250 2.0.0 OK") for a in answers)

        def stdlib_lmtp() -> list[int]:  # Python's own LMTP client, as Postfix's lmtp:
            with smtplib.LMTP("127.0.0.1", port, timeout=30) as client:
                client.ehlo()  # sends LHLO
                client.mail("ann@example.com")
                client.rcpt(IT)
                return [client.data(request(f"lmtp-lib-{protocol}@x", "x\r\n"))[0]]

        assert await asyncio.to_thread(stdlib_lmtp) == [250]
    assert message_ids(database(daemon.config.state_dir)) == [f"lmtp-{protocol}@x",
                                                   f"lmtp-lib-{protocol}@x"]


@pytest.mark.parametrize("protocol", ["auto", "smtp"])
@pytest.mark.parametrize("greeting", [b"EHLO", b"HELO"])
async def test_ehlo_or_helo_makes_an_smtp_session_with_one_answer(
        tmp_path: Path, smtp_sink: SmtpSink, protocol: str, greeting: bytes) -> None:
    raw = request("smtp@x", "two desks\r\n")
    async with running(tmp_path, smtp_sink, protocol=protocol) as daemon:
        port = daemon.listen_port
        assert port
        client = await greeted(port)
        assert (await command(client, greeting + b" mta\r\n"))[-1][:3] == b"250"
        for line in (b"MAIL FROM:<ann@example.com>", f"RCPT TO:<{IT}>".encode(),
                     f"RCPT TO:<{FAC}>".encode(), b"DATA"):
            assert (await command(client, line + b"\r\n"))[0][:1] in (b"2", b"3")
        client.writer.write(raw + b".\r\nQUIT\r\n")
        assert (await client.line(timeout=30)).startswith(b"250 2.0.0 OK")
        assert (await client.line())[:3] == b"221"  # one answer to DATA, not two
        await client.close()
    assert message_ids(database(daemon.config.state_dir)) == ["smtp@x"]


@pytest.mark.parametrize(("protocol", "greeting"), [
    ("smtp", b"LHLO"), ("lmtp", b"EHLO"), ("lmtp", b"HELO")])
async def test_the_other_greeting_on_a_strict_listener_is_deferred_not_bounced(
        tmp_path: Path, smtp_sink: SmtpSink, protocol: str, greeting: bytes) -> None:
    async with running(tmp_path, smtp_sink, protocol=protocol) as daemon:
        port = daemon.listen_port
        assert port
        client = await greeted(port)
        [answer] = await command(client, greeting + b" mta\r\n")
        assert answer.startswith(b"421 4.3.5 "), answer  # 4xx: the MTA retries
        assert protocol.upper().encode() in answer
        assert await client.closed_by_server()
        await client.close()
        # The listener still serves its own protocol.
        own = b"LHLO" if protocol == "lmtp" else b"EHLO"
        [ok] = await transaction(port, request("own@x", "fine\r\n") + b".\r\n", greeting=own)
        assert ok.startswith(b"250"), ok


async def test_oversize_lmtp_message_is_refused_once_per_recipient(
        tmp_path: Path, smtp_sink: SmtpSink) -> None:
    raw = request("big-lmtp@x", "z" * 200_000 + "\r\n")
    async with running(tmp_path, smtp_sink, max_message_size=100_000) as daemon:
        port = daemon.listen_port
        assert port
        answers = await transaction(port, raw + b".\r\n", greeting=b"LHLO", rcpts=(IT, FAC))
        assert [a[:9] for a in answers] == [b"552 5.3.4"] * 2


# --- mailgate status ------------------------------------------------------------------------

def status(config: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mailgate", "--config", str(config),
                           "status", *extra], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, check=True)


async def test_status_shows_the_listener_and_the_last_reload(
        tmp_path: Path, smtp_sink: SmtpSink) -> None:
    async with running(tmp_path, smtp_sink, protocol="lmtp") as daemon:
        config = daemon.config.path
        port = daemon.listen_port
        report = json.loads((await asyncio.to_thread(status, config, "--json")).stdout)
        assert report["daemon_running"] is True
        assert report["listener"] == {"listen": f"127.0.0.1:{port}", "protocol": "lmtp",
                                      "listening": True}
        assert report["last_reload"] is None
        # Every key, zero counts too, on a database that has sent nothing yet.
        assert report["outbox"] == {"queued": 0, "sent": 0, "failed": 0}
        for key in ("mailboxes", "outbox_oldest_queued", "quarantine_held", "open_tickets",
                    "sla"):
            assert key in report
        text = config.read_text()
        with socket.socket() as taken:  # a port in use: the reload fails, the old one stays
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            config.write_text(text.replace(f":{port}", f":{taken.getsockname()[1]}"))
            assert not await reload(daemon)
            report = json.loads((await asyncio.to_thread(status, config, "--json")).stdout)
        assert report["last_reload"]["ok"] is False
        assert "cannot listen on" in report["last_reload"]["problem"]
        assert report["listener"]["listen"] == f"127.0.0.1:{port}"  # still the old one
        assert report["listener"]["protocol"] == "lmtp"
        config.write_text(text.replace('protocol = "lmtp"', 'protocol = "auto"'))
        assert await reload(daemon)
        shown = (await asyncio.to_thread(status, config)).stdout
        assert f"listener    127.0.0.1:{daemon.listen_port}, protocol auto, listening" in shown
        assert ", ok" in shown.split("reload      last ", 1)[1].splitlines()[0]
    report = json.loads((await asyncio.to_thread(status, config, "--json")).stdout)
    assert report["daemon_running"] is False and report["last_reload"] is None
    assert report["listener"]["listening"] is False  # as configured, not running
    assert report["listener"]["protocol"] == "auto"
