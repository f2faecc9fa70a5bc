"""Real mail servers for end-to-end tests: a private Dovecot and an in-loop aiosmtpd sink,
and the mailgate.toml that points the daemon at them.

Dovecot runs from its own config in a temp dir (loopback, random port, passwd-file users,
Maildir), as DESIGN.md describes; the sink runs inside the test's own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.message
import grp
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session
from imapclient import IMAPClient

from tests.factories import EXAMPLE_DIRECTORY, mail
from tests.harness import database_table

DOVECOT_CANDIDATES = ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot")


def find_dovecot() -> str | None:
    found = shutil.which("dovecot")
    if found:
        return found
    return next((p for p in DOVECOT_CANDIDATES if os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ImapAccount:
    host: str
    port: int
    username: str
    password: str


@dataclass(frozen=True)
class DovecotOAuth2:
    """Dovecot's oauth2 passdb: XOAUTH2/OAUTHBEARER tokens are checked by POSTing them to
    `introspection_url` (RFC 7662 style: {"active": true, "username": ...})."""

    introspection_url: str
    ca_file: Path | None = None  # for an https introspection endpoint


class DovecotServer:
    """A throw-away Dovecot on 127.0.0.1; users are added while it runs.

    With `tls` (a certificate and key, e.g. from tests/certs.py) it offers STARTTLS on
    `port` and implicit TLS on `tls_port`; with `oauth2` it also takes OAuth2 tokens.
    """

    def __init__(self, binary: str, *, tls: object | None = None,
                 oauth2: DovecotOAuth2 | None = None) -> None:
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="mailgate-dovecot-"))
        self.root.chmod(0o755)  # Dovecot's auth process runs as its own user
        self.port = free_port()
        self.tls = tls  # has .cert and .key paths
        self.tls_port = free_port() if tls else 0
        self.oauth2 = oauth2
        self.process: subprocess.Popen | None = None
        self._names = itertools.count(1)
        self.uid, self.gid, self.login_user = self._identity()

    def _identity(self) -> tuple[int, int, str]:
        # Dovecot refuses to own mail as root: use nobody/nogroup then, else ourselves.
        if os.geteuid() == 0:
            return pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid, "dovenull"
        me = pwd.getpwuid(os.geteuid())
        return me.pw_uid, me.pw_gid, me.pw_name

    @property
    def config_file(self) -> Path:
        return self.root / "dovecot.conf"

    def _write_config(self) -> None:
        mail = self.root / "mail"
        mail.mkdir(exist_ok=True)
        os.chown(mail, self.uid, self.gid)
        (self.root / "users").mkdir(exist_ok=True)
        user_settings = "" if os.geteuid() == 0 else f"""
default_login_user = {self.login_user}
default_internal_user = {self.login_user}
first_valid_uid = {self.uid}
"""
        self.config_file.write_text(f"""
base_dir = {self.root}/run
state_dir = {self.root}/state
log_path = {self.root}/dovecot.log
info_log_path = {self.root}/dovecot.log
protocols = imap
listen = 127.0.0.1
{self._ssl_settings()}
disable_plaintext_auth = no
auth_mechanisms = plain login{" xoauth2 oauthbearer" if self.oauth2 else ""}
mail_location = maildir:{mail}/%u
mailbox_idle_check_interval = 1 secs
{user_settings}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.root}/users/%u
}}
{self._oauth2_passdb()}
userdb {{
  driver = static
  args = uid={self.uid} gid={self.gid} home={mail}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.tls_port}
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
""")

    def _ssl_settings(self) -> str:
        if not self.tls:
            return "ssl = no"
        return (f"ssl = yes\nssl_cert = <{self.tls.cert}\n"  # type: ignore[attr-defined]
                f"ssl_key = <{self.tls.key}")  # type: ignore[attr-defined]

    def _oauth2_passdb(self) -> str:
        if not self.oauth2:
            return ""
        settings = self.root / "dovecot-oauth2.conf.ext"
        ca = ""
        if self.oauth2.ca_file:
            # Dovecot's auth process runs as its own user: it must be able to read it.
            copy = self.root / "oauth2-ca.pem"
            shutil.copyfile(self.oauth2.ca_file, copy)
            copy.chmod(0o644)
            ca = f"tls_ca_cert_file = {copy}\n"
        settings.write_text(f"""introspection_mode = post
introspection_url = {self.oauth2.introspection_url}
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
{ca}""")
        # A refused token answers at once: tests look at refusals on purpose.
        return f"""auth_failure_delay = 0
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {settings}
}}"""

    def start(self, timeout: float = 20.0) -> None:
        self._write_config()
        for sub in ("run", "state"):
            (self.root / sub).mkdir(exist_ok=True)
        # Its own process group: stop() ends the IMAP processes too (see there).
        self.process = subprocess.Popen(
            [self.binary, "-F", "-c", str(self.config_file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        probe = self.add_user()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.client(probe) as client:
                    client.noop()
                return
            except Exception as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"Dovecot did not start: {exc}\n{self.log_tail()}") from exc
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server and drop its clients' connections, as a host going down would:
        the master's own shutdown leaves every logged-in IMAP process serving on."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        if self.process and self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        log = self.root / "dovecot.log"
        if not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def add_user(self, name: str | None = None, password: str | None = None) -> ImapAccount:
        name = name or f"user{next(self._names)}"
        password = password or f"pw-{name}"
        # One passwd-file per user: Dovecot caches a file by its mtime (in seconds), so a
        # user appended within the same second to a shared file would not be seen.
        (self.root / "users" / name).write_text(f"{name}:{{PLAIN}}{password}::::::\n")
        return ImapAccount("127.0.0.1", self.port, name, password)

    def client(self, account: ImapAccount) -> IMAPClient:
        client = IMAPClient(account.host, port=account.port, ssl=False, timeout=10)
        try:
            client.login(account.username, account.password)
        except BaseException:
            client.shutdown()
            raise
        return client

    def append(self, account: ImapAccount, raw: bytes, folder: str = "INBOX") -> int:
        with self.client(account) as client:
            response = client.append(folder, raw)
        # "[APPENDUID <uidvalidity> <uid>] Append completed."
        text = response.decode() if isinstance(response, bytes) else str(response)
        return int(text.split("APPENDUID", 1)[1].split()[1].rstrip("]"))

    def create_folder(self, account: ImapAccount, folder: str) -> None:
        with self.client(account) as client:
            client.create_folder(folder)

    def uids(self, account: ImapAccount, folder: str = "INBOX") -> list[int]:
        with self.client(account) as client:
            client.select_folder(folder, readonly=True)
            return sorted(client.search(["ALL"]))

    def recreate_folder(self, account: ImapAccount, folder: str = "INBOX") -> None:
        """Delete every message and give the folder a new UIDVALIDITY."""
        if folder != "INBOX":
            with self.client(account) as client:
                client.delete_folder(folder)
                client.create_folder(folder)
            return
        # INBOX cannot be deleted over IMAP: remove its Maildir so Dovecot recreates it.
        home = self.root / "mail" / account.username
        for name in ("cur", "new", "tmp"):
            shutil.rmtree(home / name, ignore_errors=True)
        for index in home.glob("dovecot*"):  # files come and go while Dovecot works
            if index.is_dir():
                shutil.rmtree(index, ignore_errors=True)
            else:
                index.unlink(missing_ok=True)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: email.message.Message
    at: float


@dataclass
class SmtpSink:
    """An aiosmtpd server in the running loop that keeps what it accepts."""

    host: str = "127.0.0.1"
    port: int = 0
    messages: list[Received] = field(default_factory=list)
    reject_with: tuple[int, str] | None = None
    _server: asyncio.Server | None = None
    _arrived: asyncio.Condition | None = None

    async def start(self) -> None:
        """Listen on a free port, or on the same port again after stop()."""
        self._arrived = self._arrived or asyncio.Condition()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self, hostname="sink", enable_SMTPUTF8=True), self.host, self.port,
            reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.reject_with:
            code, text = self.reject_with
            return f"{code} {text}"
        raw = envelope.original_content or b""
        self.messages.append(Received(envelope.mail_from or "", list(envelope.rcpt_tos), raw,
                                      email.message_from_bytes(raw), time.monotonic()))
        assert self._arrived is not None
        async with self._arrived:
            self._arrived.notify_all()
        return "250 2.0.0 accepted"

    async def wait_for(self, count: int = 1, timeout: float = 15.0) -> list[Received]:
        await self._until(lambda: len(self.messages) >= count, f"{count} mail(s)", timeout)
        return list(self.messages[:count])

    async def wait_until(self, match: Callable[[Received], bool], what: str,
                         timeout: float = 15.0) -> int:
        """The index in `messages` of the first mail that MATCHes, once it arrived."""
        def found() -> int | None:
            return next((i for i, m in enumerate(self.messages) if match(m)), None)

        await self._until(lambda: found() is not None, what, timeout)
        index = found()
        assert index is not None
        return index

    async def _until(self, condition: Callable[[], bool], what: str, timeout: float) -> None:
        assert self._arrived is not None
        arrived = self._arrived

        async def reached() -> None:
            async with arrived:
                await arrived.wait_for(condition)

        try:
            await asyncio.wait_for(reached(), timeout)
        except TimeoutError:
            got = [m.message["Subject"] for m in self.messages]
            raise TimeoutError(f"expected {what} at the sink, got {got}") from None

    async def before_marker(self, deliver: Callable[[bytes], Awaitable[object]],
                            timeout: float = 30.0) -> list[Received]:
        """Everything the earlier mail caused, known to be complete: a marker request is
        delivered now, and the sink's mail up to the marker's own first mail is returned.

        Mail is read in arrival order and the outbox sends in queue order, so whatever
        the earlier mail queued (a doubled acknowledgement, say) arrives before anything
        the marker queued. This replaces "sleep a while, then check nothing more came"
        with a positive event that must come after it. The marker opens a ticket of its
        own from its own sender: check ticket counts before calling this."""
        marker_id = f"<marker-{next(_markers)}@marker.example.com>"
        await deliver(mail("Marker request", sender=MARKER_SENDER, message_id=marker_id,
                           body="A marker."))
        answer = await self.wait_until(
            lambda m: m.message["In-Reply-To"] == marker_id, f"the reply to {marker_id}",
            timeout)
        ticket = self.messages[answer].message["X-Mailgate-Ticket"]
        first = next(i for i, m in enumerate(self.messages)
                     if m.message["In-Reply-To"] == marker_id
                     or (ticket and m.message["X-Mailgate-Ticket"] == ticket))
        return list(self.messages[:first])


_markers = itertools.count(1)
MARKER_SENDER = "Marker <marker@example.com>"  # a sender no test uses: it is acknowledged


# --- mailgate.toml for the daemon under test --------------------------------------------

def _table(header: str, values: dict[str, object]) -> str:
    """A TOML table with the keys whose value is not None; "" when there are none."""
    lines = [f"{key} = {_toml_value(value)}" for key, value in values.items()
             if value is not None]
    return "\n".join([header, *lines, ""]) if lines else ""


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return f'"{value}"'


def _verbatim(text: str) -> str:
    return text.rstrip("\n") + "\n" if text.strip() else ""


@dataclass(frozen=True)
class Mailbox:
    """One [[mailbox]] table. None leaves a key out, so the daemon's default applies;
    `extra` is TOML text added to the table as it is (e.g. 'folder = "Requests"')."""

    name: str
    host: str
    username: str
    port: int | None = None
    department: str | None = None  # the mailbox's name when None
    tls: str | None = "none"
    password_file: Path | None = None
    password_env: str | None = None
    poll_interval: str | None = None
    timeout: float | None = None
    batch_size: int | None = None
    extra: str = ""

    def toml(self) -> str:
        return _table("[[mailbox]]", {
            "name": self.name, "department": self.department or self.name, "host": self.host,
            "port": self.port, "tls": self.tls, "username": self.username,
            "password_file": self.password_file, "password_env": self.password_env,
            "poll_interval": self.poll_interval, "timeout": self.timeout,
            "batch_size": self.batch_size}) + _verbatim(self.extra)


def imap_mailbox(name: str, account: ImapAccount, secret: Path, *, newline: bool = False,
                 **options: object) -> Mailbox:
    """A mailbox on ACCOUNT; its password goes into the file SECRET (ending in a newline,
    as an editor would leave it, if NEWLINE). OPTIONS are further Mailbox fields."""
    secret.write_text(account.password + ("\n" if newline else ""))
    return Mailbox(name, account.host, account.username, port=account.port,
                   password_file=secret, **options)  # type: ignore[arg-type]


def write_daemon_config(
        path: Path, *, sink: SmtpSink, smtp_timeout: float | None = None,
        instance: str | None = None, state: str | Path = "state",
        directory: str | Path = EXAMPLE_DIRECTORY, templates: str | Path | None = None,
        acks_per_sender_per_hour: int | None = None, notify_team: bool | None = None,
        tables: str = "", listen: str | None = None, metrics: str | None = None,
        mailboxes: Iterable[Mailbox] = (), database_url: str | None = None) -> Path:
    """Write the mailgate.toml at PATH for a daemon that sends through SINK; return PATH.

    Relative paths (state, directory, templates) are relative to PATH's directory, as in
    any config. A section whose options are all None is left out: `notify_team=None` means
    no [conversation] table, `listen` / `metrics` are the SMTP push listener's and the
    metrics endpoint's HOST:PORT (off when None). `tables` is TOML text (whole tables)
    written as it is, before the listener and the mailboxes. The [database] table is the
    test engine's (tests/harness.py): none on SQLite, a fresh database on PostgreSQL;
    `database_url` names another (a test's own PostgreSQL server)."""
    text = "".join([
        _table("[mailgate]", {"instance": instance}),
        _table("[state]", {"dir": state}),
        (_table("[database]", {"url": database_url}) if database_url
         else database_table(path.parent / state)),
        _table("[directory]", {"path": directory}),
        _table("[templates]", {"dir": templates}),
        _table("[smtp]", {"host": sink.host, "port": sink.port, "timeout": smtp_timeout}),
        _table("[limits]", {"auto_mail_per_recipient_per_hour": acks_per_sender_per_hour}),
        _table("[conversation]", {"notify_team": notify_team}),
        _verbatim(tables),
        _table("[intake.smtp]", {"listen": listen}),
        _table("[metrics]", {"listen": metrics}),
        *(box.toml() for box in mailboxes),
    ])
    path.write_text(text)
    return path
