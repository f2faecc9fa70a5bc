"""The SMTP push listener under abuse: connection caps, idle timeout, big messages spooled
to disk, and calm logging when the process runs out of file descriptors.

Each test runs the real daemon (in-process as tests/test_service.py's reload test does, or
as a subprocess where a resource limit must apply to it alone) and talks to its listener
over real sockets.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import smtplib
import socket
import sqlite3
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailgate.config.loader import load_setup
from mailgate.config.settings import ListenerConfig, load_config
from mailgate.errors import ConfigError
from mailgate.intake import smtp as listener
from mailgate.service.daemon import Daemon
from tests.factories import EXAMPLE_DIRECTORY, ROOT, mail
from tests.harness import database, database_table, query, scalar
from tests.mailservers import SmtpSink, free_port, write_daemon_config

REFUSED = b"421 4.3.2 too many connections, try again later"
DESCRIPTORS = 64  # RLIMIT_NOFILE of the daemon that runs out of them
IT = "it-help@example.com"


# --- helpers ----------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def running(tmp_path: Path, sink: SmtpSink, **keys: object) -> AsyncIterator[Daemon]:
    """The daemon with a push listener whose [intake.smtp] has KEYS besides listen."""
    lines = [f'listen = "127.0.0.1:{free_port()}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    config = write_daemon_config(tmp_path / "mailgate.toml", sink=sink,
                                 acks_per_sender_per_hour=1000,
                                 tables="[intake.smtp]\n" + "\n".join(lines))
    setup = load_setup(config)
    daemon = Daemon(setup.config, setup.directory)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


class Client:
    """A raw connection to the listener from a chosen loopback address."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, source: str = "127.0.0.1") -> tuple[Client, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                      local_addr=(source, 0))
        client = cls(reader, writer)
        return client, await client.line()

    async def line(self, timeout: float = 10) -> bytes:
        return (await asyncio.wait_for(self.reader.readline(), timeout)).rstrip(b"\r\n")

    async def closed_by_server(self, timeout: float = 10) -> bool:
        rest = await asyncio.wait_for(self.reader.read(), timeout)
        return rest == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def greeted(port: int, source: str = "127.0.0.1", timeout: float = 10) -> Client:
    """A connection that got the 220 greeting, retried while a slot is being freed."""
    deadline = time.monotonic() + timeout
    while True:
        client, greeting = await Client.connect(port, source)
        if greeting.startswith(b"220"):
            return client
        await client.close()
        assert time.monotonic() < deadline, f"never admitted: {greeting!r}"
        await asyncio.sleep(0.05)


def spool_files(daemon: Daemon) -> list[Path]:
    return sorted((daemon.config.state_dir / "spool").glob("*"))


def big_mail(subject: str, message_id: str, attachment: bytes) -> bytes:
    """A text part (with lines that need dot-stuffing) and a base64 attachment."""
    encoded = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    head = (f"From: Ann Example <ann@example.com>\r\nTo: {IT}\r\nSubject: {subject}\r\n"
            f"Date: Tue, 24 Nov 2026 09:00:00 +0100\r\nMessage-ID: {message_id}\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n")
    text = ("--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            "The dump is attached.\r\n.hidden line\r\n..two dots\r\n.\r\nthe end.\r\n")
    part = ("--b\r\nContent-Type: application/octet-stream\r\n"
            "Content-Transfer-Encoding: base64\r\n"
            "Content-Disposition: attachment; filename=\"dump.bin\"\r\n\r\n")
    return (head + text + part).encode() + encoded + b"--b--\r\n"


def send(port: int, raw: bytes, size_option: bool = True) -> tuple[int, bytes]:
    """MAIL, RCPT, DATA over smtplib; the answer to the final dot."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo()
        options = [f"SIZE={len(raw)}"] if size_option else []
        client.mail("ann@example.com", options)
        client.rcpt(IT)
        return client.data(raw)


def stored(target: Path | str, message_id: str) -> dict:
    """What the daemon kept of a message: raw bytes, text and attachment files."""
    [(mid, raw, body)] = query(target, "SELECT id, raw, body FROM messages "
                               "WHERE message_id = ?", message_id)
    files = query(target, "SELECT filename, size, sha256 FROM attachments WHERE message = ?",
                  mid)
    tickets = scalar(target, "SELECT COUNT(*) FROM events WHERE message = ? AND kind = "
                     "'created'", mid)
    return {"raw": zlib.decompress(raw), "body": body, "files": files, "tickets": tickets}


# --- configuration ------------------------------------------------------------------------

def test_listener_limits_are_checked_like_every_key(tmp_path: Path) -> None:
    config = tmp_path / "mailgate.toml"
    config.write_text('[outbox]\ndir = "out"\n[intake.smtp]\nlisten = "127.0.0.1:2525"\n')
    defaults = load_config(config).listener
    assert defaults is not None
    assert (defaults.max_connections, defaults.max_connections_per_client,
            defaults.idle_timeout) == (100, 20, 60.0)
    config.write_text('[outbox]\ndir = "out"\n[intake.smtp]\nlisten = "127.0.0.1:2525"\n'
                      'max_connections = 0\nmax_connections_per_client = "many"\n'
                      'idle_timeout = "soon"\n')
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    text = str(raised.value)
    for expected in ("intake.smtp.max_connections: must be at least 1",
                     "intake.smtp.max_connections_per_client: expected an integer",
                     "intake.smtp.idle_timeout: not a duration"):
        assert expected in text, text
    config.write_text('[outbox]\ndir = "out"\n[intake.smtp]\nlisten = "127.0.0.1:2525"\n'
                      'max_connections = 10\nmax_connections_per_client = 11\n'
                      'idle_timeout = "2m"\n')
    with pytest.raises(ConfigError, match="max_connections_per_client: 11 is more than"):
        load_config(config)


# --- connection limits ----------------------------------------------------------------------

async def test_per_client_cap_answers_421_and_a_freed_slot_lets_the_next_in(
        tmp_path: Path, smtp_sink: SmtpSink) -> None:
    async with running(tmp_path, smtp_sink, max_connections_per_client=2) as daemon:
        port = daemon.listen_port
        assert port
        # One client idles on as many connections as it may ...
        idlers = [await greeted(port, "127.0.0.2"), await greeted(port, "127.0.0.2")]
        refused, answer = await Client.connect(port, "127.0.0.2")
        assert answer == REFUSED  # temporary: the MTA retries; never a 5xx
        assert await refused.closed_by_server()
        await refused.close()
        # ... and a real sender still gets its message through.
        code, reply = await asyncio.to_thread(send, port, mail(message_id="<cap@x>"))
        assert code == 250, reply
        await idlers.pop().close()
        idlers.append(await greeted(port, "127.0.0.2"))  # the freed slot
        for client in idlers:
            await client.close()


async def test_global_cap_counts_every_client(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    async with running(tmp_path, smtp_sink, max_connections=3,
                       max_connections_per_client=2) as daemon:
        port = daemon.listen_port
        assert port
        held = [await greeted(port), await greeted(port), await greeted(port, "127.0.0.2")]
        refused, answer = await Client.connect(port, "127.0.0.3")
        assert answer == REFUSED
        assert await refused.closed_by_server()
        await refused.close()
        await held.pop().close()
        held.append(await greeted(port, "127.0.0.3"))
        for client in held:
            await client.close()


async def test_idle_connection_is_closed_and_a_slow_sender_is_not(
        tmp_path: Path, smtp_sink: SmtpSink) -> None:
    async with running(tmp_path, smtp_sink, idle_timeout="1s") as daemon:
        port = daemon.listen_port
        assert port
        idle = await greeted(port)
        assert (await idle.line()).startswith(b"421 4.4.2")
        assert await idle.closed_by_server()
        await idle.close()
        # Sending DATA slowly, in pieces each well inside the timeout, is not idling.
        slow = await greeted(port)
        for command in (b"EHLO client", b"MAIL FROM:<ann@example.com>", f"RCPT TO:<{IT}>"
                        .encode(), b"DATA"):
            slow.writer.write(command + b"\r\n")
            while (line := await slow.line())[3:4] != b" ":  # the last line of a reply
                pass
            assert line[:1] in (b"2", b"3"), line
        raw = mail(message_id="<slow@x>")
        for index in range(0, len(raw), len(raw) // 4 + 1):
            slow.writer.write(raw[index:index + len(raw) // 4 + 1])
            await asyncio.sleep(0.6)
        slow.writer.write(b".\r\n")
        assert (await slow.line()).startswith(b"250 2.0.0 OK IT-")
        await slow.close()


# --- big messages ---------------------------------------------------------------------------

async def test_spooled_message_is_ticketed_like_one_kept_in_memory(
        tmp_path: Path, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch) -> None:
    attachment = os.urandom(1_500_000)  # about 2 MB encoded: above the 1 MB spool limit
    async with running(tmp_path, smtp_sink) as daemon:
        port = daemon.listen_port
        assert port
        spooled = big_mail("Crash dump", "<spooled@x>", attachment)
        assert len(spooled) > listener.SPOOL_AT
        code, _ = await asyncio.to_thread(send, port, spooled)
        assert code == 250
        monkeypatch.setattr(listener, "SPOOL_AT", 64 * 1024 * 1024)  # now all in memory
        in_memory = big_mail("Crash dump", "<in-memory@x>", attachment)
        code, _ = await asyncio.to_thread(send, port, in_memory)
        assert code == 250
        assert spool_files(daemon) == []
    first = stored(database(daemon.config.state_dir), "spooled@x")
    second = stored(database(daemon.config.state_dir), "in-memory@x")
    assert first["raw"] == spooled and second["raw"] == in_memory  # dots unstuffed, exact
    assert first["body"] == second["body"]
    assert ".hidden line\n..two dots\n.\nthe end." in first["body"]
    assert first["files"] == second["files"] == [
        ("dump.bin", len(attachment), hashlib.sha256(attachment).hexdigest())]
    assert first["tickets"] == second["tickets"] == 1


async def test_lmtp_spooled_message_gets_one_answer_per_recipient(
        tmp_path: Path, smtp_sink: SmtpSink) -> None:
    async with running(tmp_path, smtp_sink, protocol="lmtp") as daemon:
        port = daemon.listen_port
        assert port
        raw = big_mail("Two desks", "<lmtp@x>", os.urandom(1_500_000))

        def deliver() -> list[int]:
            with smtplib.LMTP("127.0.0.1", port, timeout=60) as client:
                client.ehlo()  # LHLO
                client.mail("ann@example.com")
                client.rcpt(IT)
                client.rcpt("facilities@example.com")
                return [client.data(raw)[0], client.getreply()[0]]

        assert await asyncio.to_thread(deliver) == [250, 250]  # one per recipient
        assert spool_files(daemon) == []
    assert stored(database(daemon.config.state_dir), "lmtp@x")["raw"] == raw


async def test_oversize_message_is_refused_and_leaves_no_spool_file(
        tmp_path: Path, smtp_sink: SmtpSink) -> None:
    async with running(tmp_path, smtp_sink, max_message_size=2 * 1024 * 1024) as daemon:
        port = daemon.listen_port
        assert port
        raw = big_mail("Too big", "<big@x>", os.urandom(3_000_000))

        def over_the_limit() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
                client.ehlo()
                client.mail("ann@example.com")  # no SIZE=: the limit bites during DATA
                client.rcpt(IT)
                refused = client.data(raw)
                client.mail("ann@example.com")  # the session goes on
                client.rcpt(IT)
                return refused, client.data(mail(message_id="<after@x>"))

        refused, after = await asyncio.to_thread(over_the_limit)
        assert refused[0] == 552 and b"5.3.4" in refused[1]
        assert after[0] == 250
        assert spool_files(daemon) == []
        assert query(database(daemon.config.state_dir),
                     "SELECT message_id FROM messages") == [("after@x",)]


@pytest.mark.sqlite_only("another writer locks the SQLite file")
async def test_store_failure_after_spooling_answers_451_and_removes_the_spool_file(
        tmp_path: Path, smtp_sink: SmtpSink) -> None:
    async with running(tmp_path, smtp_sink) as daemon:
        port = daemon.listen_port
        assert port
        raw = big_mail("Locked out", "<locked@x>", os.urandom(2_000_000))
        # Another writer holds the database: the daemon's transaction fails after its
        # busy timeout, as on a full or broken disk.
        # (From a thread: blocking this loop would hold up the daemon's own writes.)
        blocker = sqlite3.connect(database(daemon.config.state_dir), isolation_level=None,
                                  check_same_thread=False)
        await asyncio.to_thread(blocker.execute, "BEGIN IMMEDIATE")
        try:
            sending = asyncio.create_task(asyncio.to_thread(send, port, raw))
            deadline = time.monotonic() + 20
            while not spool_files(daemon):  # received to disk, waiting for the store
                assert time.monotonic() < deadline and not sending.done(), "never spooled"
                await asyncio.sleep(0.05)
            code, reply = await asyncio.wait_for(sending, 60)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert code == 451 and b"4.3.0" in reply  # the MTA keeps it and retries
        assert spool_files(daemon) == []
        code, _ = await asyncio.to_thread(send, port, raw)  # the retry is stored
        assert code == 250
        assert stored(database(daemon.config.state_dir), "locked@x")["raw"] == raw


# --- out of file descriptors --------------------------------------------------------------

async def test_accept_errors_are_logged_at_most_once_a_second(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "mailgate.toml"
    config.write_text(f'[state]\ndir = "state"\n[directory]\npath = "{EXAMPLE_DIRECTORY}"\n'
                      f'[outbox]\ndir = "out"\n[intake.smtp]\nlisten = "127.0.0.1:{port}"\n'
                      "max_connections = 1000\nmax_connections_per_client = 1000\n"
                      + database_table(tmp_path / "state"))
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        # ulimit in a shell that execs the daemon: the limit applies to it alone.
        daemon = subprocess.Popen(
            ["/bin/sh", "-c", f"ulimit -n {DESCRIPTORS} && exec \"$@\"", "sh",
             sys.executable, "-m", "mailgate", "--config", str(config), "run"],
            stdout=out, stderr=out, cwd=ROOT)
    sockets: list[socket.socket] = []
    try:
        await _wait_for_port(port, daemon)
        started = time.monotonic()
        for _ in range(3 * DESCRIPTORS):  # accept() fails with EMFILE
            sock = socket.socket()
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect(("127.0.0.1", port))
            sockets.append(sock)
        # Held until the daemon has logged the failing accept() twice: a storm that
        # lasted past one of its once-a-second log periods.
        deadline = time.monotonic() + 30
        while log.read_text(errors="replace").count('"smtp.accept_failed"') < 2:
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-2000:]
            await asyncio.sleep(0.1)
        for sock in sockets:
            sock.close()
        sockets.clear()
        # Recovered: a real sender gets through once the descriptors are free again.
        code, _ = await asyncio.to_thread(_send_with_retries, port)
        assert code == 250
    finally:
        for sock in sockets:
            sock.close()
        daemon.terminate()
        await asyncio.to_thread(daemon.wait, 30)
    elapsed = time.monotonic() - started
    lines = log.read_text(errors="replace").splitlines()
    failures = [json.loads(line) for line in lines if '"smtp.accept_failed"' in line]
    assert failures, "\n".join(lines[-20:])
    assert "Too many open files" in failures[0]["error"]
    assert len(failures) <= elapsed + 2  # once a second, plus the held-back summary
    attempts = len(failures) + sum(f["suppressed"] for f in failures)
    assert attempts <= 2 * elapsed + 5  # retried once a second, not multiplying
    assert not any("Traceback" in line for line in lines)
    assert len(lines) < 40


async def _wait_for_port(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert process.poll() is None and time.monotonic() < deadline, "daemon did not start"
        await asyncio.sleep(0.1)


def _send_with_retries(port: int) -> tuple[int, bytes]:
    deadline = time.monotonic() + 20
    while True:
        try:
            return send(port, mail(message_id="<after-storm@x>"))
        except (smtplib.SMTPException, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_the_unit_allows_far_more_descriptors_than_connections() -> None:
    unit = (ROOT / "systemd" / "mailgate.service").read_text().splitlines()
    [limit] = [int(line.split("=", 1)[1]) for line in unit if line.startswith("LimitNOFILE=")]
    assert limit >= 10 * ListenerConfig("127.0.0.1", 2525).max_connections
