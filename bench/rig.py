"""What the benchmarks share: a private Dovecot filled with the issue's message mix, an SMTP
sink in a background thread, the real daemon as a separate process (ready when it says
READY=1 on its own $NOTIFY_SOCKET), and the facts read from /proc about that process.

Everything here is plain and synchronous, so a benchmark reads top to bottom; the sink keeps
its own event loop in its own thread and stamps each accepted mail with time.monotonic().
"""

from __future__ import annotations

import asyncio
import base64
import compileall
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.factories import EXAMPLE_DIRECTORY, ROOT
from tests.mailservers import DovecotServer, ImapAccount, Received, find_dovecot
from tests.postgres import PostgresServer, find_postgres, unusable_postgres

RESULTS = ROOT / "bench" / "results"
TICKS = os.sysconf("SC_CLK_TCK")
# The example directory's departments: (mailbox name = department key, its address).
BOXES = (("it", "it-help@example.com"), ("facilities", "facilities@example.com"),
         ("payroll", "payroll@example.com"))
ATTACHMENT = os.urandom(20 * 1024)


# --- the message mix -----------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    """One generated mail: a new request, or (reply_to set) the requester's follow-up on an
    earlier request of the same mailbox, threaded by In-Reply-To and References."""

    box: str
    message_id: str  # without brackets
    sender: str
    subject: str
    raw: bytes
    reply_to: str | None = None


def message_mix(total: int, boxes: int, tag: str = "") -> list[Request]:
    """The issue's mix, deterministic: 15 % replies, 40 % multipart, 10 % with a 20 KB
    attachment, spread round-robin over the first `boxes` mailboxes. A reply follows its
    request by a few messages, so both usually land in the same fetch batch. TAG makes
    Message-IDs and subjects differ from another mix's (a second burst into one store)."""
    mix: list[Request] = []
    originals: list[Request] = []
    for i in range(total):
        box, address = BOXES[i % boxes]
        slot = i % 20
        if slot in (7, 13, 19) and originals:  # 3 of 20 = 15 % replies
            mix.append(reply(f"{tag}{i}", originals[-1 - (i % min(5, len(originals)))]))
            continue
        sender = f"user{i % 997}@example.com"
        subject = f"{box} request {tag}{i}: printer on floor {i % 7} jams"
        message_id = f"burst-{tag}{i}@example.com"
        if slot in (2, 11):  # 10 % with an attachment (also multipart)
            raw = with_attachment(sender, address, subject, message_id, i)
        elif slot in (0, 4, 6, 9, 15, 17):  # 30 % more multipart: 40 % in all
            raw = alternative(sender, address, subject, message_id, i)
        else:
            raw = plain(sender, address, subject, message_id, i)
        request = Request(box, message_id, sender, subject, raw)
        mix.append(request)
        originals.append(request)
    return mix


def _head(sender: str, to: str, subject: str, message_id: str, extra: str = "") -> str:
    return (f"From: Requester <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: Tue, 24 Nov 2026 09:00:00 +0100\r\nMessage-ID: <{message_id}>\r\n"
            f"{extra}MIME-Version: 1.0\r\n")


def _body(i: int) -> str:
    return (f"Hello,\r\n\r\nrequest number {i}: the printer jams on every second page and "
            "shows error E-42.\r\n" + "It started this morning after the update. " * 8
            + "\r\n\r\nThanks,\r\nA colleague\r\n")


def plain(sender: str, to: str, subject: str, message_id: str, i: int) -> bytes:
    return (_head(sender, to, subject, message_id)
            + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + _body(i)).encode()


def alternative(sender: str, to: str, subject: str, message_id: str, i: int) -> bytes:
    text = _body(i)
    html = "<html><body><p>" + text.replace("\r\n", "<br>") + "</p></body></html>"
    return (_head(sender, to, subject, message_id)
            + 'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n'
            + "--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text
            + "\r\n--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html
            + "\r\n--alt--\r\n").encode()


def with_attachment(sender: str, to: str, subject: str, message_id: str, i: int) -> bytes:
    data = base64.encodebytes(i.to_bytes(4, "big") + ATTACHMENT[4:]).decode()
    return (_head(sender, to, subject, message_id)
            + 'Content-Type: multipart/mixed; boundary="mix"\r\n\r\n'
            + "--mix\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + _body(i)
            + "\r\n--mix\r\nContent-Type: application/octet-stream\r\n"
            + "Content-Transfer-Encoding: base64\r\n"
            + f'Content-Disposition: attachment; filename="log-{i}.bin"\r\n\r\n'
            + data.replace("\n", "\r\n") + "--mix--\r\n").encode()


def reply(i: str, original: Request) -> Request:
    message_id = f"burst-{i}@example.com"
    subject = f"Re: {original.subject}"
    threading_headers = (f"In-Reply-To: <{original.message_id}>\r\n"
                         f"References: <{original.message_id}>\r\n")
    raw = (_head(original.sender, dict(BOXES)[original.box], subject, message_id,
                 threading_headers)
           + "Content-Type: text/plain; charset=utf-8\r\n\r\n"
           + f"One more detail for request {original.message_id}: it is the second tray.\r\n")
    return Request(original.box, message_id, original.sender, subject, raw.encode(),
                   reply_to=original.message_id)


# --- Dovecot ---------------------------------------------------------------------------------

@contextmanager
def dovecot() -> Iterator[DovecotServer]:
    binary = find_dovecot()
    if binary is None:
        sys.exit("Dovecot is not installed (apt-get install dovecot-imapd)")
    server = DovecotServer(binary)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


def fill(server: DovecotServer, mix: Sequence[Request]) -> dict[str, ImapAccount]:
    """One account per mailbox in the mix, each INBOX holding its messages in mix order."""
    accounts: dict[str, ImapAccount] = {}
    for box in dict.fromkeys(r.box for r in mix):
        accounts[box] = server.add_user()
        with server.client(accounts[box]) as client:
            for request in mix:
                if request.box == box:
                    client.append("INBOX", request.raw)
    return accounts


# --- PostgreSQL ------------------------------------------------------------------------------

@contextmanager
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL (tests/postgres.py) that flushes to disk as a real one does."""
    reason = unusable_postgres()
    if reason:
        sys.exit(reason)
    bindir = find_postgres()
    assert bindir is not None
    server = PostgresServer(bindir, durable=True)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


# --- the sink --------------------------------------------------------------------------------

class Sink:
    """An aiosmtpd server in a thread of its own that keeps what it accepts, stamped with
    time.monotonic(). It reads headers only and files acknowledgements (Auto-Submitted:
    auto-replied, In-Reply-To a request) as they arrive, so neither accepting nor waiting
    takes CPU from the process measured on this shared machine."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.acks: list[Received] = []
        self._ack_for: dict[str, Received] = {}
        self._headers = BytesHeaderParser()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.host, self.port = self._server.sockets[0].getsockname()[:2]

    async def _start(self) -> asyncio.Server:
        return await self._loop.create_server(
            lambda: SMTP(self, hostname="sink", enable_SMTPUTF8=True), "127.0.0.1", 0)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        received = Received(envelope.mail_from or "", list(envelope.rcpt_tos), raw,
                            self._headers.parsebytes(raw), time.monotonic())
        self.messages.append(received)
        answered = ack_of(received)
        if answered is not None:
            self.acks.append(received)
            self._ack_for.setdefault(answered, received)
        return "250 2.0.0 accepted"

    def ack_for(self, message_id: str) -> Received | None:
        return self._ack_for.get(message_id)

    def clear(self) -> None:
        def empty() -> None:
            self.messages, self.acks, self._ack_for = [], [], {}
        self._loop.call_soon_threadsafe(empty)
        time.sleep(0.05)

    def wait_until(self, done: Callable[[], bool], timeout: float, quiet: float = 0.0) -> None:
        """Poll until done() holds, then until nothing arrived for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the sink holds {len(self.messages)} mails, "
                                   f"{len(self.acks)} acknowledgements")
            time.sleep(0.02)
        while quiet and time.monotonic() - self.messages[-1].at < quiet:
            time.sleep(0.1)

    def close(self) -> None:
        self._server.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def ack_of(received: Received) -> str | None:
    """The request's Message-ID (no brackets) when this mail acknowledges one, else None."""
    headers = received.message
    if headers["Auto-Submitted"] != "auto-replied" or not headers["In-Reply-To"]:
        return None
    return str(headers["In-Reply-To"]).strip().strip("<>")


# --- the daemon --------------------------------------------------------------------------------

@dataclass
class DaemonSetup:
    """What a benchmark varies in mailgate.toml; everything else is the daemon's default."""

    notify_team: bool = True
    batch_size: int | None = None
    listen: str | None = None
    poll_interval: str | None = None
    database_url: str | None = None  # [database] url, once the PostgreSQL engine exists
    departments: dict[str, str] = field(default_factory=dict)  # mailbox -> key, else its name
    state: Path | None = None  # the state directory (a prepared store); else a fresh one


def write_config(tmp: Path, sink: Sink, accounts: dict[str, ImapAccount],
                 setup: DaemonSetup) -> Path:
    """mailgate.toml for a daemon on these accounts (mailbox name = department key)."""
    lines = ['[state]', f'dir = "{setup.state or "state"}"',
             '[directory]', f'path = "{EXAMPLE_DIRECTORY}"',
             '[smtp]', f'host = "{sink.host}"', f'port = {sink.port}',
             # A burst of thousands from a few hundred senders: no budget may hold mail back.
             '[limits]', 'auto_mail_per_recipient_per_hour = 1000000',
             'team_notifications_per_sender_per_hour = 1000000',
             '[conversation]', f'notify_team = {str(setup.notify_team).lower()}']
    if setup.database_url:
        lines += ['[database]', f'url = "{setup.database_url}"']
    if setup.listen:
        lines += ['[intake.smtp]', f'listen = "{setup.listen}"']
    for name, account in accounts.items():
        secret = tmp / f"{name}.secret"
        secret.write_text(account.password)
        department = setup.departments.get(name, name)
        lines += ['[[mailbox]]', f'name = "{name}"', f'department = "{department}"',
                  f'host = "{account.host}"', f'port = {account.port}', 'tls = "none"',
                  f'username = "{account.username}"', f'password_file = "{secret}"']
        if setup.batch_size:
            lines.append(f"batch_size = {setup.batch_size}")
        if setup.poll_interval:
            lines.append(f'poll_interval = "{setup.poll_interval}"')
    config = tmp / "mailgate.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


@dataclass
class Daemon:
    """`python -m mailgate run` as a child process; `spawned` and `ready` are monotonic."""

    process: subprocess.Popen
    config: Path
    spawned: float
    ready: float = 0.0
    notices: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def compile_bytecode() -> None:
    """Compile mailgate's modules to bytecode once, as `pip install` does for a package.

    A checkout run with PYTHONDONTWRITEBYTECODE=1 (set on this machine) compiles every
    module from source at every start: about 0.3 s of each daemon's start-up and of its
    reading process's, which an installed mailgate never pays."""
    if not getattr(compile_bytecode, "done", False):
        compileall.compile_dir(ROOT / "mailgate", quiet=1)
        compile_bytecode.done = True  # type: ignore[attr-defined]


def start_daemon(config: Path, *, cpus: str | None = None, log_level: str = "warning",
                 wait_ready: bool = True, prefix: Sequence[str] = ()) -> Daemon:
    """Start the daemon on CONFIG (pinned to CPUS with taskset when given) and, with
    WAIT_READY, return once it sent READY=1 on its $NOTIFY_SOCKET."""
    compile_bytecode()
    tmp = config.parent
    notify_path = tmp / "notify.sock"
    notify_path.unlink(missing_ok=True)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "PYTHONPATH": str(ROOT)}
    pin = ["taskset", "-c", cpus] if cpus else []
    command = [*prefix, *pin, sys.executable, "-m", "mailgate", "--log-level", log_level,
               "--config", str(config), "run"]
    with (tmp / "daemon.log").open("ab") as log:
        spawned = time.monotonic()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    daemon = Daemon(process, config, spawned)
    notify.settimeout(0.2)
    try:
        deadline = time.monotonic() + 60
        while wait_ready and not daemon.ready:
            if process.poll() is not None or time.monotonic() > deadline:
                daemon.stop()
                sys.exit(f"the daemon did not start; see its log:\n{log_tail(tmp)}")
            try:
                text = notify.recv(4096).decode()
            except TimeoutError:
                continue
            daemon.notices.append(text)
            if "READY=1" in text.splitlines():
                daemon.ready = time.monotonic()
    finally:
        notify.close()
    return daemon


def log_tail(tmp: Path, lines: int = 20) -> str:
    log = tmp / "daemon.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def mailgate_json(config: Path, *args: str) -> object:
    """A read-only CLI command's --json answer, run as a user would."""
    done = subprocess.run([sys.executable, "-m", "mailgate", "--config", str(config), *args,
                           "--json"], cwd=ROOT, capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(done.stdout)


# --- facts about processes and the machine ------------------------------------------------------

def status_mb(pid: int, field_name: str = "VmHWM") -> float:
    """A memory figure of /proc/PID/status (VmHWM is the peak resident set) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """utime + stime of /proc/PID/stat: CPU time the process used so far, all threads,
    and that of its children still running (the daemon's reading process)."""
    return sum(own_cpu_seconds(member) for member in family(pid))


def own_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads); 0 once it has ended."""
    return process_cpu(pid)[1]


def process_cpu(pid: int) -> tuple[str, float]:
    """(command name, utime + stime) of /proc/PID/stat; ("", 0.0) once it has ended."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return "", 0.0
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return text[text.index("(") + 1:text.rindex(")")], (int(fields[11]) + int(fields[12])) / TICKS


def cpu_of_command(name: str) -> dict[int, float]:
    """CPU seconds so far of every process with this command name (Dovecot's `imap`)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            command, seconds = process_cpu(int(entry.name))
            if command == name:
                found[int(entry.name)] = seconds
    return found


def family_mb(pid: int, field_name: str = "VmHWM") -> float:
    """status_mb of the process and its descendants, summed: the daemon with its reading
    process (and multiprocessing's resource tracker). Their peaks need not coincide, so
    the sum of VmHWM is an upper bound of the family's peak."""
    total = 0.0
    for member in family(pid):
        try:
            total += status_mb(member, field_name)
        except FileNotFoundError:
            continue
    return total


def family(pid: int) -> list[int]:
    """PID and every process descended from it (read from /proc/*/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(child) for child in (task / "children").read_text().split()]
            except FileNotFoundError:
                continue
    return found


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip()
                  for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    load = os.getloadavg()
    return {"host": platform.node(), "cores": os.cpu_count(), "cpu_model": model,
            "python": platform.python_version(), "system": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in load],
            "note": "shared machine: about 6 other agents ran builds and tests meanwhile"}


def commit() -> str:
    found = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                           capture_output=True, text=True, check=False)
    return found.stdout.strip() or "unknown"


def header(engine: str) -> dict:
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "commit": commit(),
            "machine": machine(), "engine": engine}


def stamp_end(result: dict) -> dict:
    """The load average when the run ended, beside the one when it started."""
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def table(rows: Sequence[Sequence[object]], head: Sequence[str]) -> str:
    cells = [[str(c) for c in head], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def tempdir(prefix: str) -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix=f"mailgate-{prefix}-")
