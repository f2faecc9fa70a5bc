"""Faults around the daemon: servers that go away, hang, refuse us or lock the database.

Each test runs the real daemon in-process against real servers on loopback and checks that
nothing is lost and that one broken mailbox never holds up the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from mailgate.config.loader import load_setup
from mailgate.service.daemon import Daemon
from tests.environment import missing
from tests.factories import mail
from tests.mailservers import (
    DovecotServer,
    ImapAccount,
    Mailbox,
    SmtpSink,
    find_dovecot,
    imap_mailbox,
    write_daemon_config,
)

pytestmark = pytest.mark.e2e


def mailbox(tmp_path: Path, name: str, account: ImapAccount, timeout: float = 10) -> Mailbox:
    """Mailbox NAME on ACCOUNT (department it for "it", else facilities), its password in
    NAME.secret."""
    return imap_mailbox(name, account, tmp_path / f"{name}.secret",
                        department="it" if name == "it" else "facilities",
                        poll_interval="1s", timeout=timeout)


def write_config(tmp_path: Path, sink: SmtpSink, *mailboxes: Mailbox,
                 state: str | Path = "state") -> Path:
    return write_daemon_config(tmp_path / "mailgate.toml", sink=sink, smtp_timeout=5,
                               state=state, notify_team=False,  # these tests count acknowledgements
                               mailboxes=mailboxes)


async def start(config: Path) -> Daemon:
    setup = load_setup(config)
    daemon = Daemon(setup.config, setup.directory)
    await daemon.start()
    return daemon


class SilentServer:
    """Accepts TCP connections and never says a word: a hung IMAP server."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.connections = 0

    async def start(self) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            await reader.read()  # until the client gives up
            writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server:
            self.server.close()


@pytest.fixture
async def silent() -> AsyncIterator[SilentServer]:
    server = SilentServer()
    yield server
    await server.stop()


async def test_hung_mailbox_does_not_delay_the_others(
        tmp_path: Path, dovecot: DovecotServer, imap_account: ImapAccount,
        smtp_sink: SmtpSink, silent: SilentServer) -> None:
    port = await silent.start()
    hung = ImapAccount("127.0.0.1", port, "nobody", "x")
    config = write_config(tmp_path, smtp_sink, mailbox(tmp_path, "it", imap_account),
                          mailbox(tmp_path, "hung", hung, timeout=1))
    daemon = await start(config)
    try:
        started = time.monotonic()
        await asyncio.to_thread(dovecot.append, imap_account, mail())
        await smtp_sink.wait_for(count=1, timeout=10)
        assert time.monotonic() - started < 5  # not held up by the hung server
        hung_watcher = next(w for w in daemon.watchers if w.config.name == "hung")
        deadline = time.monotonic() + 10
        while hung_watcher.state.reconnects < 2:  # detected, dropped, tried again
            assert time.monotonic() < deadline, hung_watcher.state
            await asyncio.sleep(0.1)
        assert "timed out" in (hung_watcher.state.last_error or "").lower()
    finally:
        await daemon.stop()


async def test_mailbox_refusing_login_does_not_stop_the_others(
        tmp_path: Path, dovecot: DovecotServer, imap_account: ImapAccount,
        smtp_sink: SmtpSink) -> None:
    wrong = ImapAccount(imap_account.host, imap_account.port, "ghost", "wrong")
    config = write_config(tmp_path, smtp_sink, mailbox(tmp_path, "it", imap_account),
                          mailbox(tmp_path, "ghost", wrong))
    daemon = await start(config)
    try:
        await asyncio.to_thread(dovecot.append, imap_account, mail())
        await smtp_sink.wait_for(count=1, timeout=10)
        assert daemon.store is not None
        deadline = time.monotonic() + 10
        while True:
            states = {s["name"]: s for s in await daemon.store.mailbox_states()}
            # A refused login needs someone: state "error" (retrying goes on), in words.
            if states.get("ghost", {}).get("state") == "error":
                break
            assert time.monotonic() < deadline, states
            await asyncio.sleep(0.1)
        assert "refused the login for ghost" in states["ghost"]["last_error"]
        assert "wrong" not in (states["ghost"]["last_error"] or "")  # no secret in status
    finally:
        await daemon.stop()


async def test_imap_server_down_and_back_processes_what_arrived(
        tmp_path: Path, smtp_sink: SmtpSink) -> None:
    binary = find_dovecot()
    assert binary is not None
    private = DovecotServer(binary)
    private.start()
    try:
        account = private.add_user()
        config = write_config(tmp_path, smtp_sink, mailbox(tmp_path, "it", account, timeout=3))
        daemon = await start(config)
        try:
            await asyncio.to_thread(private.append, account, mail("first", message_id="<1@x>"))
            await smtp_sink.wait_for(count=1)
            [watcher] = daemon.watchers
            private.stop()
            await until(lambda: watcher.state.reconnects >= 1, "mailgate to notice",
                        watcher.state)  # and back off
            private.start()
            for i in range(3):
                await asyncio.to_thread(private.append, account,
                                        mail(f"later {i}", message_id=f"<l{i}@x>"))
            await smtp_sink.wait_for(count=4, timeout=60)
            assert daemon.store is not None
            rows = await daemon.store.conn.execute_fetchall("SELECT COUNT(*) FROM tickets")
            assert next(iter(rows))[0] == 4
        finally:
            await daemon.stop()
    finally:
        private.cleanup()


async def test_smtp_down_queues_then_sends_each_once(
        tmp_path: Path, dovecot: DovecotServer, imap_account: ImapAccount,
        smtp_sink: SmtpSink) -> None:
    config = write_config(tmp_path, smtp_sink, mailbox(tmp_path, "it", imap_account))
    await smtp_sink.stop()
    daemon = await start(config)
    try:
        for i in range(5):
            await asyncio.to_thread(dovecot.append, imap_account, mail(
                f"request {i}", message_id=f"<q{i}@x>", sender=f"u{i}@example.com"))
        assert daemon.store is not None
        deadline = time.monotonic() + 15
        while (await daemon.store.outbox_summary()).get("queued", 0) < 5:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        outbox = daemon.outbox
        assert outbox is not None
        await until(lambda: outbox.server_backoff >= 1, "the outbox to find SMTP down",
                    outbox.last_error)
        await smtp_sink.start()  # same port again
        received = await smtp_sink.wait_for(count=5, timeout=60)
        tickets = [m.message["X-Mailgate-Ticket"] for m in received]
        # None lost, none twice; the order is kept per ticket (test_outbox_lanes.py), not
        # across tickets: they go out on several connections at once.
        assert sorted(tickets) == [f"IT-{1001 + i}" for i in range(5)]
    finally:
        await daemon.stop()


@pytest.mark.sqlite_only("an admin's sqlite3 shell locks the SQLite file")
async def test_locked_database_delays_but_loses_nothing(
        tmp_path: Path, dovecot: DovecotServer, imap_account: ImapAccount,
        smtp_sink: SmtpSink) -> None:
    config = write_config(tmp_path, smtp_sink, mailbox(tmp_path, "it", imap_account))
    daemon = await start(config)
    try:
        [watcher] = daemon.watchers
        await until(lambda: watcher.state.mode == "idle", "the mailbox idling", watcher.state)
        blocker = sqlite3.connect(tmp_path / "state" / "mailgate.sqlite3", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # e.g. a careless admin with the sqlite3 shell
        try:
            for i in range(3):
                await asyncio.to_thread(dovecot.append, imap_account,
                                        mail(f"r{i}", message_id=f"<lock{i}@x>"))
            # The proof that the lock was hit: the batch's transaction waited out SQLite's
            # busy timeout and failed with "database is locked", which only the busy
            # path reports; the watcher retries after it.
            await until(lambda: watcher.state.reconnects >= 1, "the batch to fail on the lock",
                        watcher.state, timeout=60)
            assert "database is locked" in (watcher.state.last_error or ""), watcher.state
            assert smtp_sink.messages == []  # nothing committed, so nothing acknowledged
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await smtp_sink.wait_for(count=3, timeout=60)  # the retried batch, nothing lost
        assert sorted(m.message["In-Reply-To"] for m in smtp_sink.messages) == [
            f"<lock{i}@x>" for i in range(3)]
    finally:
        await daemon.stop()


async def until(condition: Callable[[], bool], what: str, state: object,
                timeout: float = 20) -> None:
    """Wait for CONDITION, checked every 0.1 s, for at most TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {state}"
        await asyncio.sleep(0.1)


class GarbageServer(SilentServer):
    """Answers every connection with bytes that are not IMAP at all."""

    async def start(self) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            writer.write(b"\x00\xffHTTP/1.1 400 Bad Request\r\n\r\n" + bytes(range(256)))
            await writer.drain()
            writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])


async def test_garbage_speaking_server_is_isolated_and_retried(
        tmp_path: Path, dovecot: DovecotServer, imap_account: ImapAccount,
        smtp_sink: SmtpSink) -> None:
    garbage = GarbageServer()
    port = await garbage.start()
    bad = ImapAccount("127.0.0.1", port, "nobody", "x")
    config = write_config(tmp_path, smtp_sink, mailbox(tmp_path, "it", imap_account),
                          mailbox(tmp_path, "garbage", bad, timeout=2))
    daemon = await start(config)
    try:
        await asyncio.to_thread(dovecot.append, imap_account, mail())
        await smtp_sink.wait_for(count=1, timeout=10)
        deadline = time.monotonic() + 10
        while garbage.connections < 2:  # it gave up on the answer and tried again later
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    finally:
        await daemon.stop()
        await garbage.stop()


async def test_no_secret_reaches_the_logs(
        tmp_path: Path, dovecot: DovecotServer, imap_account: ImapAccount,
        smtp_sink: SmtpSink, capfd: pytest.CaptureFixture[str]) -> None:
    wrong = ImapAccount(imap_account.host, imap_account.port, imap_account.username,
                        "correct-horse-battery-staple")
    config = write_config(tmp_path, smtp_sink, mailbox(tmp_path, "it", wrong))
    daemon = await start(config)
    try:
        watcher = daemon.watchers[0]
        deadline = time.monotonic() + 15  # Dovecot delays a failed login by ~2 s
        while not watcher.state.last_error:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    finally:
        await daemon.stop()
    out, err = capfd.readouterr()
    assert "imap.error" in out + err
    assert "correct-horse-battery-staple" not in out + err


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs as the state directory (needs root; CI runs as root)."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                            capture_output=True)
    if result.returncode != 0:
        missing(f"cannot mount a small tmpfs here (needs root): {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.sqlite_only("the SQLite file is in the state directory on the full disk")
async def test_disk_full_is_retried_and_loses_nothing(
        tmp_path: Path, small_disk: Path, dovecot: DovecotServer, imap_account: ImapAccount,
        smtp_sink: SmtpSink) -> None:
    config = write_config(tmp_path, smtp_sink, mailbox(tmp_path, "it", imap_account),
                          state=small_disk)
    daemon = await start(config)
    try:
        watcher = daemon.watchers[0]
        await until(lambda: watcher.state.mode == "idle", "the mailbox idling", watcher.state)
        filler = small_disk / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as fh:  # fill it up
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
        for i in range(3):
            await asyncio.to_thread(dovecot.append, imap_account, mail(
                f"r{i}", message_id=f"<full{i}@x>", body="A long request. " * 2000))
        deadline = time.monotonic() + 15
        while "full" not in (watcher.state.last_error or ""):
            assert time.monotonic() < deadline, watcher.state
            await asyncio.sleep(0.1)
        assert smtp_sink.messages == []
        filler.unlink()  # the admin frees space; mailgate carries on by itself
        await smtp_sink.wait_for(count=3, timeout=60)
        assert daemon.store is not None
        rows = await daemon.store.conn.execute_fetchall("SELECT COUNT(*) FROM tickets")
        assert next(iter(rows))[0] == 3
    finally:
        await daemon.stop()
