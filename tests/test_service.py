"""Running as a service: sd_notify, SIGHUP reload, SIGTERM, backup, migrate, the unit file.

Where signals matter the real daemon runs as a subprocess (`python -m mailgate run`) with a
NOTIFY_SOCKET the test listens on, against a private Dovecot and an in-loop SMTP sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest

from mailgate.config.loader import load_setup
from mailgate.config.settings import Secret, load_config
from mailgate.core.render import Renderer
from mailgate.service.daemon import Daemon, fingerprint, needs_restart
from mailgate.service.sdnotify import reloading, sd_notify, watchdog_interval
from mailgate.storage.schema import MIGRATIONS
from tests.environment import missing
from tests.factories import ROOT, mail
from tests.harness import database, database_table, snapshot
from tests.mailservers import (
    DovecotServer,
    ImapAccount,
    Received,
    SmtpSink,
    free_port,
    imap_mailbox,
    write_daemon_config,
)

MAILGATE = [sys.executable, "-m", "mailgate"]
OLD_TEXT = "we have received your request"
MARKER = "Reload marker: templates v2"


# --- sd_notify and helpers, no servers -----------------------------------------------

class NotifySocket:
    """The datagram socket systemd would listen on; keeps every datagram the daemon sends."""

    def __init__(self) -> None:
        self.address = f"@mailgate-test-{uuid.uuid4().hex}"  # abstract: no path length limit
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:])
        self.sock.setblocking(False)
        self.datagrams: list[str] = []
        self._arrived: asyncio.Event | None = None

    def listen(self) -> None:
        self._arrived = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._read)

    def _read(self) -> None:
        while True:
            try:
                self.datagrams.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                break
        assert self._arrived is not None
        self._arrived.set()

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # loop already closed
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()

    def lines(self, start: int = 0) -> list[str]:
        return [line for d in self.datagrams[start:] for line in d.split("\n")]

    async def wait_for(self, found: Callable[[str], bool], start: int = 0,
                       timeout: float = 30.0) -> int:
        """Index of the first datagram from START that has a line FOUND accepts."""
        assert self._arrived is not None
        deadline = time.monotonic() + timeout
        while True:
            for index in range(start, len(self.datagrams)):
                if any(found(line) for line in self.datagrams[index].split("\n")):
                    return index
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"not seen on NOTIFY_SOCKET; got {self.datagrams[start:]}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(remaining, 0.5))


def test_watchdog_interval_is_half_of_watchdog_usec_and_only_for_our_pid() -> None:
    me = str(os.getpid())
    assert watchdog_interval({"WATCHDOG_USEC": "60000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": me}) == 0.1
    assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def test_sd_notify_sends_one_datagram_and_never_raises(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    receiver.bind(str(path))
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sd_notify("READY=1", "STATUS=fine")
        assert receiver.recv(4096) == b"READY=1\nSTATUS=fine"
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
        assert not sd_notify("WATCHDOG=1")
        monkeypatch.delenv("NOTIFY_SOCKET")
        assert not sd_notify("READY=1")
    finally:
        receiver.close()


def test_reloading_carries_the_monotonic_clock() -> None:
    first, second = reloading()
    assert first == "RELOADING=1"
    key, _, value = second.partition("=")
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert key == "MONOTONIC_USEC" and 0 <= now - int(value) < 5_000_000


def test_a_start_without_postgresql_or_a_listener_imports_neither_driver() -> None:
    """psycopg comes with a postgresql:// URL, aiosmtpd with [intake.smtp] listen: either
    costs every other start tens of milliseconds of imports before READY=1."""
    code = ("import sys, mailgate.cli.main, mailgate.service.daemon; "
            "print(*sorted({'psycopg', 'aiosmtpd'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, check=True)
    assert done.stdout.split() == []


def test_fingerprint_compares_secrets_by_value() -> None:
    a, b, c = Secret("x", "file a"), Secret("x", "file b"), Secret("y", "file a")
    assert a != b  # Secret itself has no __eq__: that is why fingerprint exists
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)
    assert "x" not in repr(fingerprint(a))


def test_moving_the_state_dir_needs_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "mailgate.toml"
    body = f'[directory]\npath = "{ROOT / "config" / "directory.example.toml"}"\n' \
           '[outbox]\ndir = "out"\n'
    path.write_text('[state]\ndir = "a"\n' + body)
    old = load_config(path)
    assert needs_restart(old, load_config(path)) == []
    path.write_text('[state]\ndir = "b"\n' + body)
    [problem] = needs_restart(old, load_config(path))
    assert "state.dir" in problem and "restart" in problem
    path.write_text('[state]\ndir = "a"\n[cluster]\nnode = "mail-2"\n' + body)
    [problem] = needs_restart(old, load_config(path))  # whose leases it holds
    assert problem.endswith("cluster: node or lease_seconds changed; the leases this daemon "
                            "holds were taken under the old ones: restart it to use the new "
                            "ones (systemctl restart mailgate)")


def test_template_edits_wait_for_a_new_renderer(tmp_path: Path) -> None:
    (tmp_path / "ack.txt.j2").write_text("old {{ subject }}")
    renderer = Renderer(tmp_path)
    (tmp_path / "ack.txt.j2").write_text("new {{ subject }}")
    (tmp_path / "it").mkdir()
    (tmp_path / "it" / "ack.txt.j2").write_text("override {{ subject }}")
    assert renderer.render("ack", "it", {"subject": "s"}).text == "old s"
    assert Renderer(tmp_path).render("ack", "it", {"subject": "s"}).text == "override s"


# --- the unit file ------------------------------------------------------------------

def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing("systemd-analyze is not installed (Debian package systemd)")
    unit_text = (ROOT / "systemd" / "mailgate.service").read_text()
    for needed in ("Type=notify\n", "WatchdogSec=60s", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert needed in unit_text
    # verify rightly complains that /usr/local/bin/mailgate is missing here: point the
    # copy at this checkout's console script, so every other complaint still counts.
    binary = Path(sys.executable).parent / "mailgate"
    if not binary.exists():
        missing(f"{binary} missing (pip install -e .)")
    unit = tmp_path / "mailgate.service"
    unit.write_text(unit_text.replace("/usr/local/bin/mailgate", str(binary)))
    result = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True,
                            text=True, timeout=60)
    output = (result.stdout + result.stderr).strip()
    print(f"\n$ systemd-analyze verify {unit.name}  (exit {result.returncode})\n{output}")
    ours = [line for line in output.splitlines() if "mailgate" in line]
    assert result.returncode == 0 and not ours, output


# --- migrate (no daemon needed) -----------------------------------------------------

def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*MAILGATE, "--config", str(config), *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)


@pytest.mark.sqlite_only("an older schema is made with SQLite's PRAGMA user_version")
def test_migrate_reports_applies_and_checks(tmp_path: Path) -> None:
    config = tmp_path / "mailgate.toml"
    config.write_text(f'[state]\ndir = "state"\n[directory]\npath = '
                      f'"{ROOT / "config" / "directory.example.toml"}"\n[outbox]\ndir = "out"\n')
    database = tmp_path / "state" / "mailgate.sqlite3"
    latest = len(MIGRATIONS)
    missing = run_cli(config, "migrate", "--check")
    assert missing.returncode == 1 and "no database yet" in missing.stdout
    assert not database.exists()  # --check changes nothing, not even creating the file
    # A database one schema behind, as an older mailgate left it.
    database.parent.mkdir()
    with sqlite3.connect(database) as db:
        for script in MIGRATIONS[:-1]:
            db.executescript(script)
        db.execute(f"PRAGMA user_version = {latest - 1}")
    db.close()
    check = run_cli(config, "migrate", "--check", "--json")
    assert check.returncode == 1, check.stderr
    assert json.loads(check.stdout) | {"database": ""} == {
        "database": "", "from": latest - 1, "to": latest - 1, "latest": latest, "pending": 1}
    applied = run_cli(config, "migrate")
    assert applied.returncode == 0, applied.stderr
    assert f"migrated from schema {latest - 1} to {latest}" in applied.stdout
    again = run_cli(config, "migrate", "--check")
    assert again.returncode == 0 and "up to date" in again.stdout
    with sqlite3.connect(database) as db:
        db.execute(f"PRAGMA user_version = {latest + 1}")
    db.close()
    newer = run_cli(config, "migrate")
    assert newer.returncode == 1 and "newer than this mailgate" in newer.stderr



def test_migrate_refuses_while_a_daemon_runs(tmp_path: Path) -> None:
    from mailgate.service.startup import daemon_lock

    config = tmp_path / "mailgate.toml"
    config.write_text(f'[state]\ndir = "state"\n[directory]\npath = '
                      f'"{ROOT / "config" / "directory.example.toml"}"\n[outbox]\ndir = "out"\n'
                      + database_table(tmp_path / "state"))
    (tmp_path / "state").mkdir()
    with daemon_lock(tmp_path / "state"):  # as `mailgate run` holds it
        busy = run_cli(config, "migrate")
        assert busy.returncode == 1
        assert "is already running" in busy.stderr and "stop it first" in busy.stderr
        assert "migration(s) pending" in run_cli(config, "migrate", "--check").stdout  # reads
    assert run_cli(config, "migrate").returncode == 0
    # The database the daemon uses ([database] on PostgreSQL) is the one migrated.
    assert "up to date" in run_cli(config, "migrate", "--check").stdout
    status = run_cli(config, "status")
    assert status.returncode == 0, status.stderr


# --- the real daemon as a subprocess --------------------------------------------------

@dataclass
class Service:
    """A config on disk, the daemon process started from it, and what it said."""

    tmp_path: Path
    dovecot: DovecotServer
    account: ImapAccount
    sink: SmtpSink
    notify: NotifySocket
    push_port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None

    @property
    def config(self) -> Path:
        return self.tmp_path / "mailgate.toml"

    @property
    def database(self) -> Path | str:
        return database(self.tmp_path / "state")

    @property
    def log(self) -> Path:
        return self.tmp_path / "daemon.log"

    def write(self, poll: str = "1s", state: str = "state") -> None:
        write_daemon_config(
            self.config, sink=self.sink, smtp_timeout=10, instance="mailgate-service-test",
            state=state, directory="directory.toml", templates="templates",
            acks_per_sender_per_hour=100000,
            notify_team=False,  # these tests count acknowledgements
            listen=f"127.0.0.1:{self.push_port}",
            mailboxes=[imap_mailbox("it", self.account, self.tmp_path / "imap.secret",
                                    poll_interval=poll, batch_size=10)])

    def prepare(self) -> None:
        shutil.copy(ROOT / "config" / "directory.example.toml",
                    self.tmp_path / "directory.toml")
        shutil.copytree(ROOT / "templates", self.tmp_path / "templates")
        self.write()

    async def start(self, env: dict[str, str] | None = None, via_shell: str = "") -> None:
        command = [*MAILGATE, "--config", str(self.config), "run"]
        if via_shell:  # e.g. to set WATCHDOG_PID=$$ right before exec, as systemd would
            command = ["/bin/sh", "-c", f'{via_shell} exec "$@"', "sh", *command]
        environment = {**os.environ, "NOTIFY_SOCKET": self.notify.address, **(env or {})}
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                *command, stdout=out, stderr=out, env=environment, cwd=ROOT)
        start = len(self.notify.datagrams)
        ready = asyncio.create_task(self.notify.wait_for(lambda line: line == "READY=1", start))
        died = asyncio.create_task(self.process.wait())
        await asyncio.wait([ready, died], return_when=asyncio.FIRST_COMPLETED)
        died.cancel()
        if not ready.done():
            ready.cancel()
            raise AssertionError(f"mailgate exited before READY=1:\n{self.log_tail()}")
        await ready

    def send_signal(self, sig: signal.Signals) -> int:
        """Send SIG; return the index the daemon's answers on NOTIFY_SOCKET will start at."""
        assert self.process is not None
        mark = len(self.notify.datagrams)
        self.process.send_signal(sig)
        return mark

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.terminate()
        return await asyncio.wait_for(self.process.wait(), 60)

    def events(self, name: str) -> list[dict]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{") and f'"{name}"' in line:
                record = json.loads(line)
                if record.get("event") == name:
                    found.append(record)
        return found

    async def wait_for_event(self, name: str, count: int = 1, timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(found := self.events(name)) < count:
            assert time.monotonic() < deadline, f"{name} not logged; log:\n{self.log_tail()}"
            await asyncio.sleep(0.1)
        return found

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])

    async def push(self, recipient: str, raw: bytes) -> None:
        await asyncio.to_thread(_smtp_send, self.push_port, recipient, raw)

    async def feed(self, prefix: str, count: int, pause: float = 0.03) -> list[int]:
        """COUNT requests into the IMAP mailbox, one by one, as a steady stream."""
        uids = []
        for i in range(count):
            raw = mail(f"{prefix} {i}", sender=f"{prefix}{i}@example.com",
                       message_id=f"<{prefix}-{i}@example.com>")
            uids.append(await asyncio.to_thread(self.dovecot.append, self.account, raw))
            await asyncio.sleep(pause)
        return uids

    async def settle(self, expected: int, last_uid: int, timeout: float = 90) -> dict:
        """Wait until every message is ticketed and every acknowledgement has left; the
        database's state then, with "received": every mail the sink got for them, up to
        a marker request's acknowledgement (a doubled ack would have come before it)."""
        deadline = time.monotonic() + timeout
        while True:
            state = await asyncio.to_thread(database_state, self.database)
            if (state["last_uid"] >= last_uid and state["tickets"] >= expected
                    and state["queued"] == 0 and len(self.sink.messages) >= expected):
                received = await self.sink.before_marker(
                    lambda raw: asyncio.to_thread(self.dovecot.append, self.account, raw))
                return {**state, "received": received}
            assert time.monotonic() < deadline, f"not settled: {state}\n{self.log_tail()}"
            await asyncio.sleep(0.2)


def _smtp_send(port: int, recipient: str, raw: bytes) -> None:
    import smtplib

    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("ann@example.com", [recipient], raw)


def database_state(target: Path | str) -> dict:
    rows = snapshot(target, {
        "tickets": "SELECT COUNT(*) FROM tickets",
        "queued": "SELECT COUNT(*) FROM outbox WHERE status = 'queued'",
        "quarantine": "SELECT COUNT(*) FROM quarantine",
        "last_uid": "SELECT COALESCE(MAX(last_uid), 0) FROM mailboxes",
        "per_message": "SELECT m.message_id FROM messages m JOIN events e ON e.message = m.id "
                       "WHERE e.kind = 'created'",
    })
    per_message = Counter(r[0] for r in rows.pop("per_message"))
    return {**{name: int(value) for name, [(value,)] in rows.items()}, "per_message": per_message}


def assert_exactly_once(state: dict, expected: int) -> None:
    """Every request on exactly one ticket and acknowledged exactly once."""
    assert state["tickets"] == expected
    assert state["quarantine"] == 0
    assert len(state["per_message"]) == expected
    assert set(state["per_message"].values()) == {1}
    acks = Counter(m.message["In-Reply-To"] for m in state["received"])
    assert len(acks) == expected and set(acks.values()) == {1}, acks.most_common(3)


def ack_for(sink: SmtpSink, message_id: str) -> Received | None:
    return next((m for m in sink.messages if m.message["In-Reply-To"] == message_id), None)


async def wait_ack(sink: SmtpSink, message_id: str, timeout: float = 30) -> Received:
    deadline = time.monotonic() + timeout
    while (found := ack_for(sink, message_id)) is None:
        assert time.monotonic() < deadline, f"no acknowledgement for {message_id}"
        await asyncio.sleep(0.05)
    return found


def text_of(received: Received) -> str:
    for part in received.message.walk():
        if part.get_content_type() == "text/plain":
            return part.get_payload(decode=True).decode()
    raise AssertionError("no text/plain part")


@pytest.fixture
async def service(tmp_path: Path, dovecot: DovecotServer, imap_account: ImapAccount,
                  smtp_sink: SmtpSink) -> AsyncIterator[Service]:
    notify = NotifySocket()
    notify.listen()
    running = Service(tmp_path, dovecot, imap_account, smtp_sink, notify)
    running.prepare()
    try:
        yield running
    finally:
        if running.process and running.process.returncode is None:
            running.process.kill()
            await running.process.wait()
        notify.close()


@pytest.mark.e2e
async def test_notify_ready_status_watchdog_and_stopping(service: Service) -> None:
    # WATCHDOG_PID=$$ right before exec: the pid systemd would name is the daemon's own.
    await service.start(env={"WATCHDOG_USEC": "200000"}, via_shell="WATCHDOG_PID=$$;"
                        " export WATCHDOG_PID;")
    ready = await service.notify.wait_for(lambda line: line == "READY=1")
    assert any(line.startswith("STATUS=1 mailbox(es)")
               for line in service.notify.datagrams[ready].split("\n"))
    # Refreshed once the mailbox is connected and idling.
    await service.notify.wait_for(lambda line: line.startswith("STATUS=") and "idle" in line
                                  and "outbox 0 queued" in line, ready)
    [enabled] = service.events("watchdog.enabled")
    assert enabled["interval"] == 0.1  # half of WATCHDOG_USEC
    mark = len(service.notify.datagrams)
    for _ in range(5):  # and they keep coming
        mark = 1 + await service.notify.wait_for(lambda line: line == "WATCHDOG=1", mark)
    mark = service.send_signal(signal.SIGTERM)
    await service.notify.wait_for(lambda line: line == "STOPPING=1", mark)
    assert await service.stop() == 0
    assert service.events("daemon.stopped")


@pytest.mark.e2e
async def test_watchdog_of_another_process_is_left_alone(service: Service) -> None:
    await service.start(env={"WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"})
    # Running in full (the mailbox idles): a watchdog would have pinged at its start.
    await service.notify.wait_for(lambda line: line.startswith("STATUS=") and "idle" in line)
    assert not service.events("watchdog.enabled")
    assert "WATCHDOG=1" not in service.notify.lines()
    assert await service.stop() == 0


@pytest.mark.e2e
async def test_sighup_with_a_valid_change_applies_to_the_next_message(
        service: Service) -> None:
    await service.start()
    feeder = asyncio.create_task(service.feed("load", 60))
    # Edit everything a reload re-reads: template text, the directory (a new department
    # with a new address) and the mailbox settings (its watcher must restart).
    template = service.tmp_path / "templates" / "ack.txt.j2"
    template.write_text(f"{MARKER}\n" + template.read_text())
    directory = service.tmp_path / "directory.toml"
    directory.write_text(directory.read_text() + """
[[department]]
key = "hr"
name = "Human Resources"
addresses = ["hr@example.com"]
prefix = "HR"
""")
    service.write(poll="2s")
    # Not yet reloaded: the new address is unknown (default department) and the old text
    # is used, because templates are only read at start and on reload.
    await service.push("hr@example.com", mail("before reload", message_id="<before@x>",
                                                 to="hr@example.com"))
    before = await wait_ack(service.sink, "<before@x>")
    assert before.message["Subject"].startswith("[IT-")
    assert MARKER not in text_of(before) and OLD_TEXT in text_of(before)

    mark = service.send_signal(signal.SIGHUP)
    reloading_at = await service.notify.wait_for(lambda line: line == "RELOADING=1", mark)
    assert any(line.startswith("MONOTONIC_USEC=")
               for line in service.notify.datagrams[reloading_at].split("\n"))
    await service.notify.wait_for(lambda line: line == "READY=1", reloading_at + 1)
    [applied] = service.events("reload.applied")
    assert applied["restarted"] == ["it"] and applied["added"] == applied["removed"] == []
    assert applied["departments"] == 4

    await service.push("hr@example.com", mail("after reload", message_id="<after@x>",
                                                 to="hr@example.com"))
    after = await wait_ack(service.sink, "<after@x>")
    assert after.message["Subject"] == "[HR-1001] Re: after reload"
    assert MARKER in text_of(after)

    uids = await feeder
    state = await service.settle(62, max(uids))
    assert_exactly_once(state, 62)
    assert service.process is not None and service.process.returncode is None
    assert await service.stop() == 0


@pytest.mark.e2e
async def test_sighup_with_an_invalid_change_is_rejected_and_the_old_setup_runs_on(
        service: Service) -> None:
    await service.start()
    feeder = asyncio.create_task(service.feed("load", 40))
    template = service.tmp_path / "templates" / "ack.txt.j2"
    good = template.read_text()
    template.write_text("{% if %}broken" + good)
    mark = service.send_signal(signal.SIGHUP)
    await service.notify.wait_for(lambda line: "last reload failed: rejected" in line, mark)
    [rejected] = await service.wait_for_event("reload.rejected")
    assert any("ack.txt.j2" in p and "TemplateSyntaxError" in p for p in rejected["problems"])
    # The broken file is on disk, yet mail is still answered with the old, good template.
    await service.push("it-help@example.com", mail("during", message_id="<during@x>"))
    assert OLD_TEXT in text_of(await wait_ack(service.sink, "<during@x>"))

    template.write_text(good)
    service.write(state="elsewhere")  # valid on its own, but not while running
    service.send_signal(signal.SIGHUP)
    second = (await service.wait_for_event("reload.rejected", count=2))[1]
    assert any("state.dir" in p and "restart" in p for p in second["problems"])
    assert "RELOADING=1" not in service.notify.lines()
    assert not service.events("reload.applied")

    uids = await feeder
    state = await service.settle(41, max(uids))
    assert_exactly_once(state, 41)
    assert service.process is not None and service.process.returncode is None
    assert not (service.tmp_path / "elsewhere").exists()
    assert await service.stop() == 0


@pytest.mark.e2e
async def test_sigterm_during_a_burst_then_restart_tickets_every_message_once(
        service: Service) -> None:
    await service.start()
    feeder = asyncio.create_task(service.feed("burst", 100, pause=0))
    deadline = time.monotonic() + 60
    while (await asyncio.to_thread(database_state, service.database))["tickets"] < 15:
        assert time.monotonic() < deadline, service.log_tail()
        await asyncio.sleep(0.05)
    mark = service.send_signal(signal.SIGTERM)
    await service.notify.wait_for(lambda line: line == "STOPPING=1", mark)
    assert await service.stop() == 0
    assert not service.events("daemon.transaction_interrupted")  # open ones committed
    stopped_at = await asyncio.to_thread(database_state, service.database)
    print(f"\nSIGTERM after {stopped_at['tickets']} of 100 tickets, "
          f"{stopped_at['queued']} acks still queued")
    uids = await feeder
    await service.start()
    state = await service.settle(100, max(uids))
    assert_exactly_once(state, 100)
    assert await service.stop() == 0


@pytest.mark.e2e
@pytest.mark.sqlite_only("the backup is a SQLite file, checked with SQLite's pragmas")
async def test_backup_while_running_is_a_consistent_database(service: Service) -> None:
    await service.start()
    feeder = asyncio.create_task(service.feed("bk", 40))
    deadline = time.monotonic() + 60
    while (await asyncio.to_thread(database_state, service.database))["tickets"] < 10:
        assert time.monotonic() < deadline, service.log_tail()
        await asyncio.sleep(0.05)
    target = service.tmp_path / "backups" / "mailgate.sqlite3"
    target.parent.mkdir()

    async def backup(*extra: str) -> subprocess.CompletedProcess:
        return await asyncio.to_thread(run_cli, service.config, "backup", str(target), *extra)

    result = await backup()  # intake keeps writing meanwhile
    assert result.returncode == 0, result.stderr
    print(f"\n{result.stdout.strip()}")
    assert "backed up" in result.stdout and " s (schema " in result.stdout
    assert target.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(target) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert copy.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        tickets = copy.execute("SELECT COUNT(*) FROM tickets").fetchone()[0]
    copy.close()
    assert tickets >= 10
    before = target.stat().st_mtime_ns
    refused = await backup()
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert target.stat().st_mtime_ns == before
    forced = await backup("--force", "--json")
    assert forced.returncode == 0, forced.stderr
    report = json.loads(forced.stdout)
    assert report["bytes"] == target.stat().st_size and report["seconds"] >= 0
    uids = await feeder
    assert_exactly_once(await service.settle(40, max(uids)), 40)
    assert await service.stop() == 0


# --- reload in-process: listener and outgoing server -------------------------------

async def test_reload_rebinds_the_listener_and_switches_the_smtp_server(
        tmp_path: Path, smtp_sink: SmtpSink) -> None:
    second_sink = SmtpSink()
    await second_sink.start()
    first_port, second_port = free_port(), free_port()
    config = tmp_path / "mailgate.toml"

    def write(listen: int, sink: SmtpSink) -> None:
        write_daemon_config(config, sink=sink, listen=f"127.0.0.1:{listen}")

    write(first_port, smtp_sink)
    setup = load_setup(config)
    daemon = Daemon(setup.config, setup.directory)
    await daemon.start()
    try:
        unchanged = await daemon.prepare_reload()
        assert not (unchanged.added or unchanged.removed or unchanged.changed
                    or unchanged.transport or unchanged.listener)
        write(second_port, second_sink)
        plan = await daemon.prepare_reload()
        assert plan.transport and plan.listener
        await daemon.apply_reload(plan)
        assert daemon.listen_port == second_port
        with pytest.raises(ConnectionRefusedError):
            await asyncio.to_thread(_smtp_send, first_port, "it-help@example.com", mail())
        await asyncio.to_thread(_smtp_send, second_port, "it-help@example.com", mail())
        [ack] = await second_sink.wait_for(count=1)
        assert ack.message["Subject"].startswith("[IT-1001]")
        assert smtp_sink.messages == []
        deadline = time.monotonic() + 10
        while "outbox 0 queued" not in (status := await daemon.status_line()):
            assert time.monotonic() < deadline, status  # the 250 is on its way back to us
            await asyncio.sleep(0.05)
        assert status.startswith(f"0 mailbox(es), SMTP push on port {second_port}")
    finally:
        await daemon.stop()
        await second_sink.stop()


def test_poll_interval_change_is_a_changed_mailbox(tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_text("pw")
    box = f"""
[state]
dir = "state"
[directory]
path = "{ROOT / 'config' / 'directory.example.toml'}"
[outbox]
dir = "out"
[[mailbox]]
name = "it"
department = "it"
host = "imap.example.com"
username = "u"
password_file = "{secret}"
"""
    path = tmp_path / "mailgate.toml"
    path.write_text(box)
    first, second = load_config(path), load_config(path)
    assert fingerprint(first.mailboxes[0]) == fingerprint(second.mailboxes[0])
    path.write_text(box + 'poll_interval = "5m"\n')
    third = load_config(path)
    assert third.mailboxes[0].poll_interval == timedelta(minutes=5)
    assert fingerprint(first.mailboxes[0]) != fingerprint(third.mailboxes[0])
    secret.write_text("rotated")
    assert fingerprint(first.mailboxes[0]) != fingerprint(load_config(path).mailboxes[0])
