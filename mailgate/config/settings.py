"""mailgate.toml -> frozen dataclasses. Every problem names the file and the key."""

from __future__ import annotations

import os
import re
import site
import socket
import sys
import tomllib
from dataclasses import dataclass, field, replace
from datetime import time, timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from mailgate.config.readers import Table
from mailgate.config.safefile import MAX_SECRET_BYTES, MAX_TOML_BYTES, decode_error, read_regular
from mailgate.connect.oauth.profile import MECHANISMS, OAuthProfile, parse_profiles
from mailgate.errors import ConfigError

DEFAULT_CONFIG = Path("/etc/mailgate/mailgate.toml")
# [limits] auto_mail_per_recipient_per_hour's name before it covered every automatic mail.
OLD_AUTO_MAIL_KEY = "acks_per_sender_per_hour"
TLS_MODES = ("none", "starttls", "implicit")


class Secret:
    """A password that never shows itself in logs, reprs or error messages."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source  # e.g. "file /run/credentials/x" -- safe to print

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret(from {self.source})"

    __str__ = __repr__


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    tls: str = "none"
    username: str | None = None
    password: Secret | None = None
    timeout: float = 30.0
    ca_file: Path | None = None  # trusted besides the system store ([tls] ca_file default)
    tls_verify: bool = True  # false: any certificate is accepted (warned by check, logged)
    oauth: OAuthProfile | None = None  # log in with an OAuth2 token instead of a password
    oauth_mechanism: str = "auto"  # auto | xoauth2 | oauthbearer
    # Mails on their way at once, each on its own connection. Three: Microsoft 365 allows
    # three concurrent SMTP AUTH connections per mailbox; a local relay takes more.
    connections: int = 3


MAX_SMTP_CONNECTIONS = 20


@dataclass(frozen=True)
class ListenerConfig:
    host: str
    port: int
    protocol: str = "auto"  # auto (LHLO: LMTP, EHLO/HELO: SMTP) | smtp | lmtp
    max_message_size: int = 50 * 1024 * 1024
    # Bounded under abuse: idle connections must not lock a real sender out (the MTA
    # hears 421 and retries), and the cap stays well under the unit's LimitNOFILE.
    max_connections: int = 100
    max_connections_per_client: int = 20  # Postfix delivers 20 at a time by default
    idle_timeout: float = 60.0  # seconds without a command (or DATA bytes) before 421


@dataclass(frozen=True)
class MailboxConfig:
    name: str
    department: str
    host: str
    port: int
    tls: str
    username: str
    password: Secret | None  # None with oauth
    folder: str = "INBOX"
    poll_interval: timedelta = timedelta(seconds=60)
    idle: bool = True
    batch_size: int = 50
    after: str = "keep"  # keep | flag | move
    move_to: str | None = None
    flag: str = "$MailgateProcessed"
    timeout: float = 60.0
    ca_file: Path | None = None  # trusted besides the system store ([tls] ca_file default)
    tls_verify: bool = True  # false: any certificate is accepted (warned by check, logged)
    oauth: OAuthProfile | None = None  # log in with an OAuth2 token instead of a password
    oauth_mechanism: str = "auto"  # auto | xoauth2 | oauthbearer


@dataclass(frozen=True)
class AlertsConfig:
    """Who hears about a mailbox that cannot be read, and how often."""

    admin: str  # e.g. ops@example.com
    sender: str | None = None  # From:; default: the failing mailbox's department address
    repeat: timedelta = timedelta(days=1)  # while it stays failing, at most this often
    after: timedelta = timedelta(minutes=15)  # network trouble this long before an alert


@dataclass(frozen=True)
class LimitsConfig:
    # Automatic mail (acks, command replies and refusals, notices, thanks) to one mailbox
    # an hour. Its old key, acks_per_sender_per_hour, is still read, and warned about
    # (loader.py): by that name it seems to bound acknowledgements only.
    auto_mail_per_recipient_per_hour: int = 10
    auto_mail_per_domain_per_hour: int = 100  # to one domain outside the organisation
    team_notifications_per_sender_per_hour: int = 5  # new requests from one sender
    max_body_chars: int = 200_000
    max_attachment_bytes: int = 25 * 1024 * 1024  # attachments kept per message, decoded


@dataclass(frozen=True)
class SecurityConfig:
    trusted_domains: frozenset[str] = frozenset()  # empty: every sender domain is ours
    authserv_id: str | None = None  # our MTA's Authentication-Results id, if it adds them
    authserv_position: str = "top"  # where it writes them: top | bottom (core/trust.py)
    from_header_is_proof: bool = False  # the old, forgeable behaviour; see README Security
    reply_key_days: int = 60  # how long a reply key in our mail stays valid


@dataclass(frozen=True)
class ConversationConfig:
    reopen_window: timedelta = timedelta(days=7)  # a requester's reply after resolve reopens
    auto_close_after: timedelta = timedelta(days=7)  # resolved tickets close after this
    max_relay_bytes: int = 10 * 1024 * 1024  # attachments relayed per mail, encoded size
    notify_team: bool = True  # mail the team about each new ticket
    keep_cc_informed: bool = True  # the request's Cc get the answers and the summary too
    comments_from: str = "ticket"  # who else may write: ticket (Cc) | organisation
    bulk_mail: str = "ticket"  # list/bulk mail matching no ticket: ticket | ignore


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class DigestConfig:
    """When the weekly digest goes to department heads, in each department's calendar."""

    weekday: int  # 0 = Monday
    at: time  # local wall-clock time
    organisation: str | None = None  # also the organisation-wide digest to this address

    @classmethod
    def parse(cls, text: str) -> DigestConfig:
        """'mon 08:00' -> DigestConfig; ValueError saying what is expected."""
        day, _, clock = text.strip().lower().partition(" ")
        try:
            at: time | None = time.fromisoformat(clock.strip())
        except ValueError:
            at = None
        if day[:3] not in WEEKDAYS or at is None:
            raise ValueError(f'expected a weekday and a time such as "mon 08:00", got {text!r}')
        return cls(WEEKDAYS.index(day[:3]), at)


@dataclass(frozen=True)
class MetricsConfig:
    host: str
    port: int  # 0: any free port (tests)


@dataclass(frozen=True)
class DatabaseConfig:
    """[database]: PostgreSQL, shared by several nodes. Absent: SQLite in [state] dir."""

    url: str  # postgresql://user@host:port/db?sslmode=...; never holds the password
    password: Secret | None = None

    def __repr__(self) -> str:
        return f"DatabaseConfig({self.url!r}, password={self.password!r})"


@dataclass(frozen=True)
class ClusterConfig:
    """Several daemons on one database: who this one is, and how long its leases last."""

    node: str = ""  # empty: "<hostname>:<state dir>" (see Config.node)
    lease_seconds: float = 30.0  # a dead node's mailboxes are taken over within this

    @property
    def renew_every(self) -> float:
        """A holder renews three times per lease: one late round never loses it."""
        return self.lease_seconds / 3


@dataclass(frozen=True)
class Config:
    path: Path
    state_dir: Path
    directory_path: Path
    templates_dir: Path
    smtp: SmtpConfig | None
    outbox_dir: Path | None  # write outgoing mail as files instead of SMTP (demo, tests)
    listener: ListenerConfig | None
    mailboxes: tuple[MailboxConfig, ...] = ()
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    instance: str = "mailgate"  # names this installation in loop-detection headers
    security: SecurityConfig = field(default_factory=SecurityConfig)
    metrics: MetricsConfig | None = None  # Prometheus endpoint, off unless [metrics] listen
    digest: DigestConfig | None = None  # weekly report mail to heads, off unless [digest]
    conversation: ConversationConfig = field(default_factory=ConversationConfig)
    alerts: AlertsConfig | None = None  # mail an admin about failing mailboxes
    database_server: DatabaseConfig | None = None  # [database]: PostgreSQL instead of SQLite
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    read_processes: int | None = None  # [intake] read_processes; None: intake/reading.py

    @property
    def database(self) -> Path:
        """The SQLite file (used unless [database] names a server)."""
        return self.state_dir / "mailgate.sqlite3"

    @property
    def store_target(self) -> Path | str:
        """What Store.open takes: the [database] URL, else the SQLite file."""
        return self.database_server.url if self.database_server else self.database

    @property
    def store_password(self) -> str | None:
        server = self.database_server
        return server.password.reveal() if server and server.password else None

    @property
    def node(self) -> str:
        """This daemon's name in the leases table. The default is stable across restarts,
        so a daemon restarted after a crash takes its own leases back at once, and unique
        while it runs: one daemon per state directory (the lock in service/startup.py)."""
        return self.cluster.node or f"{socket.gethostname()}:{self.state_dir}"


def config_path(cli_value: str | None) -> Path:
    """--config wins, then $MAILGATE_CONFIG, then /etc/mailgate/mailgate.toml."""
    if cli_value:
        return Path(cli_value)
    return Path(os.environ.get("MAILGATE_CONFIG") or DEFAULT_CONFIG)


def read_toml(path: Path) -> dict:
    try:
        # A regular file of bounded size only: a path to /dev/zero or a FIFO must not hang.
        return tomllib.loads(read_regular(path, MAX_TOML_BYTES).decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found (pass --config PATH)"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([decode_error(path, exc)]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None


# How load_config treats passwords: "read" every one (the daemon); "available" reads what
# this environment has (`mailgate check` from a shell: the files, but systemd credentials
# and the unit's environment only when present); "none" reads none (admin commands, which
# never log in).
SecretsMode = Literal["read", "available", "none"]


def load_config(path: Path, secrets: SecretsMode = "read") -> Config:
    """Read and validate mailgate.toml; raise ConfigError listing every problem."""
    problems: list[str] = []
    root = Table(read_toml(path), path, "", problems)
    base = path.parent
    state = root.table("state")
    state_dir = _path(base, state.str("dir", "state") if state else "state")
    directory = root.table("directory")
    directory_path = _path(base, directory.str("path", "directory.toml") if directory
                           else "directory.toml")
    templates = root.table("templates")
    templates_dir = _templates_dir(base, templates)
    general = root.table("mailgate")
    instance = general.str("instance", "mailgate") if general else "mailgate"
    smtp_table = root.table("smtp")
    outbox_table = root.table("outbox")
    outbox_dir = _outbox_dir(base, outbox_table)
    tls_table = root.table("tls")
    ca_default = _ca_file(base, tls_table, None) if tls_table else None
    oauth_table = root.table("oauth")
    profiles = parse_profiles(
        oauth_table, state_dir / "oauth", ca_default,
        lambda t, what, prefix: _secret(t, what, secrets, prefix),
        lambda value: _path(base, value)) if oauth_table else {}
    access = (secrets, ca_default, profiles)
    smtp = _smtp(smtp_table, *access) if smtp_table else None
    if smtp is None and outbox_dir is None:
        problems.append(f"{path}: smtp: missing; outgoing mail needs [smtp] (or [outbox] dir)")
    intake = root.table("intake")
    listener = _listener(intake.table("smtp")) if intake else None
    # Processes reading fetched mail (intake/reading.py); unset: one when a core is spare.
    read_processes = intake.int("read_processes", None, minimum=0, maximum=8) \
        if intake else None
    mailboxes = tuple(_mailbox(t, *access) for t in root.tables("mailbox"))
    _unique_names(root, mailboxes)
    limits_table = root.table("limits")
    limits = _limits(limits_table) if limits_table else LimitsConfig()
    security_table = root.table("security")
    security = _security(security_table) if security_table else SecurityConfig()
    metrics_table = root.table("metrics")
    metrics = _metrics(metrics_table) if metrics_table else None
    digest_table = root.table("digest")
    digest = _digest(digest_table) if digest_table else None
    conversation_table = root.table("conversation")
    conversation = (_conversation(conversation_table) if conversation_table
                    else ConversationConfig())
    alerts_table = root.table("alerts")
    alerts = _alerts(alerts_table) if alerts_table else None
    database_table = root.table("database")
    database_server = _database(database_table, secrets) if database_table else None
    cluster_table = root.table("cluster")
    cluster = _cluster(cluster_table) if cluster_table else ClusterConfig()
    for table in (root, state, directory, templates, general, smtp_table, outbox_table, intake,
                  limits_table, security_table, metrics_table, database_table,
                  digest_table, conversation_table, tls_table, oauth_table, alerts_table,
                  cluster_table):
        if table:
            table.reject_unknown()
    if problems:
        raise ConfigError(problems)
    return Config(
        path=path, state_dir=state_dir, directory_path=directory_path,
        templates_dir=templates_dir, smtp=smtp, outbox_dir=outbox_dir, listener=listener,
        mailboxes=mailboxes, limits=limits, instance=instance, security=security,
        metrics=metrics, digest=digest,
        conversation=conversation, alerts=alerts, database_server=database_server,
        cluster=cluster, read_processes=read_processes,
    )


def _path(base: Path, value: str | None) -> Path:
    path = Path(value or ".")
    return path if path.is_absolute() else (base / path).resolve()


def _templates_dir(base: Path, table: Table | None) -> Path:
    if table and "dir" in table.data:
        return _path(base, table.str("dir"))
    return default_templates_dir()


def default_templates_dir() -> Path:
    """The templates shipped with mailgate: the checkout's templates/ (a source or
    editable install), else where pip put its data files: <prefix>/share/mailgate/templates
    (a venv or system install), or the user base's (pip install --user)."""
    return shipped("templates", "ack.txt.j2")


def shipped(folder: str, marker: str) -> Path:
    """A folder installed with mailgate (templates, config); the first place that holds
    `marker` (a stray site-packages/templates of another package does not)."""
    candidates = [Path(__file__).resolve().parents[2] / folder,
                  Path(sys.prefix) / "share" / "mailgate" / folder,
                  Path(site.getuserbase()) / "share" / "mailgate" / folder]
    return next((c for c in candidates if (c / marker).is_file()), candidates[0])


def _outbox_dir(base: Path, table: Table | None) -> Path | None:
    if table is None:
        return None
    value = table.str("dir", None)
    return _path(base, value) if value else None


def _secret(table: Table, what: str, mode: SecretsMode,
            prefix: str = "password") -> Secret | None:
    """A password (or another secret: client_secret, certificate_key, service_account)
    from PREFIX_file, PREFIX_env or a systemd credential PREFIX_credential; never inline.
    A relative PREFIX_file is relative to the configuration file's folder."""
    if prefix in table.data:
        table._read.add(prefix)
        noun = "passwords" if prefix == "password" else f"{prefix.replace('_', ' ')}s"
        table.problem(prefix, f"inline {noun} are not accepted; use {prefix}_file, "
                      f"{prefix}_env or {prefix}_credential")
        return None
    # One source only: a second one would otherwise be left unread and reported as an
    # unknown key, which sends the admin looking for a typo.
    sources = [f"{prefix}_{s}" for s in ("file", "env", "credential")
               if f"{prefix}_{s}" in table.data]
    for extra in sources[1:]:
        table._read.add(extra)
        table.problem(extra, f"{sources[0]} is set too; keep one of {prefix}_file, "
                      f"{prefix}_env and {prefix}_credential")
    if (name := table.str(f"{prefix}_file", None)) is not None:
        if mode == "none":
            return None
        return _read_secret_file(table, f"{prefix}_file", _path(table.file.parent, name))
    if (name := table.str(f"{prefix}_env", None)) is not None:
        if mode == "none" or (mode == "available" and name not in os.environ):
            return None
        if name not in os.environ:
            table.problem(f"{prefix}_env", f"environment variable {name} is not set")
            return None
        return Secret(os.environ[name], f"env {name}")
    if (name := table.str(f"{prefix}_credential", None)) is not None:
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if mode == "none" or (mode == "available" and not creds):
            return None
        if not creds:
            table.problem(f"{prefix}_credential", "CREDENTIALS_DIRECTORY is not set "
                          "(use LoadCredential= in the systemd unit)")
            return None
        return _read_secret_file(table, f"{prefix}_credential", Path(creds) / name)
    if what == "required":
        table.problem(f"{prefix}_file", f"missing; set {prefix}_file, {prefix}_env or "
                      f"{prefix}_credential")
    return None


DATABASE_SCHEMES = ("postgresql://", "postgres://")


# libpq also takes the password as a query parameter: postgresql://u@db/x?password=...
_QUERY_PASSWORD = re.compile(r"(?i)(?:^|&)password=")


def _database(t: Table, secrets: SecretsMode) -> DatabaseConfig | None:
    """[database] url and the password the way [smtp] and mailboxes take theirs."""
    url = t.str("url", None)
    password = _secret(t, "optional", secrets)
    if url is None:
        t.problem("url", 'missing; e.g. url = "postgresql://mailgate@db.example.com/mailgate"')
        return None
    if not url.startswith(DATABASE_SCHEMES):
        t.problem("url", "expected a postgresql:// URL (leave [database] out for SQLite "
                  "in [state] dir)")
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a port that is not a number
    except ValueError as exc:
        t.problem("url", f"not a valid URL: {exc}")
        return None
    if parts.password is not None or _QUERY_PASSWORD.search(parts.query):
        t.problem("url", "holds a password; inline passwords are not accepted: use "
                  "password_file, password_env or password_credential")
        return None
    if not parts.hostname or not parts.path.strip("/"):
        t.problem("url", "needs a host and a database name: postgresql://USER@HOST:PORT/DB")
        return None
    return DatabaseConfig(url, password)


def _oauth(t: Table, profiles: dict[str, OAuthProfile]) -> OAuthProfile | None:
    """The [oauth.NAME] profile a mailbox or [smtp] logs in with, if any."""
    name = t.str("oauth", None)
    if name is None:
        return None
    if name not in profiles:
        known = ", ".join(sorted(profiles)) or "none; add an [oauth.NAME] table"
        t.problem("oauth", f"unknown OAuth2 profile {name!r} (known: {known})")
        return None
    for key in ("password", "password_file", "password_env", "password_credential"):
        if key in t.data:
            t._read.add(key)
            t.problem(key, f"not used with oauth = {name!r}; remove it")
    return profiles[name]


def unread_secrets(path: Path) -> list[str]:
    """The password settings `mailgate check` cannot read from a shell: systemd
    credentials without $CREDENTIALS_DIRECTORY, environment variables that are not set."""
    data = read_toml(path)
    tables = [("smtp", data.get("smtp")), ("database", data.get("database"))] + [
        (f"mailbox[{i}]", t) for i, t in enumerate(data.get("mailbox") or [])]
    found = []
    for name, table in tables:
        if not isinstance(table, dict):
            continue
        if "password_file" in table:  # read first (see _secret): the others are unused
            continue
        if "password_env" in table:
            if str(table["password_env"]) not in os.environ:
                found.append(f"{name}.password_env")
        elif "password_credential" in table and not os.environ.get("CREDENTIALS_DIRECTORY"):
            found.append(f"{name}.password_credential")
    return found


def _read_secret_file(table: Table, key: str, path: Path) -> Secret | None:
    try:
        value = read_regular(path, MAX_SECRET_BYTES).decode("utf-8").rstrip("\r\n")
    except OSError as exc:
        table.problem(key, f"cannot read {path}: {exc.strerror}")
        return None
    except UnicodeDecodeError:
        table.problem(key, f"{path}: not UTF-8 text; write the password as UTF-8")
        return None
    return Secret(value, f"file {path}")


def _smtp(t: Table, secrets: SecretsMode, ca_default: Path | None,
          profiles: dict[str, OAuthProfile]) -> SmtpConfig | None:
    tls = t.choice("tls", TLS_MODES, "none")
    username = t.str("username", None)
    oauth = _oauth(t, profiles)
    if oauth is not None and not username:
        t.problem("username", "missing; an OAuth2 login names the mailbox it sends as")
    password = None if "oauth" in t.data else _secret(
        t, "required" if username else "optional", secrets)
    config = SmtpConfig(
        host=t.str("host"), port=_port(t, 465 if tls == "implicit" else 25),
        tls=tls, username=username, password=password, timeout=t.float("timeout", 30.0),
        ca_file=_ca_file(t.file.parent, t, ca_default), tls_verify=t.bool("tls_verify", True),
        oauth=oauth, oauth_mechanism=t.choice("oauth_mechanism", MECHANISMS, "auto"),
        connections=t.int("connections", 3, minimum=1, maximum=MAX_SMTP_CONNECTIONS),
    )
    return config if config.host else None


def _ca_file(base: Path, t: Table, default: Path | None) -> Path | None:
    """`ca_file`: a PEM file of CA certificates trusted besides the system store."""
    value = t.str("ca_file", None)
    if not value:
        return default
    from mailgate.connect.tls import ca_file_problem  # ssl: only when there is a file to check

    path = _path(base, value)
    if (problem := ca_file_problem(path)) is not None:
        t.problem("ca_file", problem)
    return path


def _listener(t: Table | None) -> ListenerConfig | None:
    if t is None:
        return None
    listen = t.str("listen")
    host, port = _host_port(t, listen or "")
    protocol = t.choice("protocol", ("auto", "smtp", "lmtp"), "auto")
    size = t.int("max_message_size", 50 * 1024 * 1024, minimum=1024)
    default = ListenerConfig(host, port)
    total = t.int("max_connections", default.max_connections, minimum=1)
    per_client = t.int("max_connections_per_client", default.max_connections_per_client,
                       minimum=1)
    if isinstance(total, int) and isinstance(per_client, int) and per_client > total:
        t.problem("max_connections_per_client",
                  f"{per_client} is more than max_connections ({total}); lower it")
    idle = t.duration("idle_timeout", timedelta(seconds=default.idle_timeout))
    if idle is not None and idle.total_seconds() < 1:
        t.problem("idle_timeout", f"must be at least 1s, got {idle.total_seconds()}s")
    t.reject_unknown()
    return ListenerConfig(host=host, port=port, protocol=protocol, max_message_size=size,
                          max_connections=total, max_connections_per_client=per_client,
                          idle_timeout=idle.total_seconds() if idle else default.idle_timeout)


def _host_port(t: Table, listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not (port.isascii() and port.isdigit()):
        t.problem("listen", f"expected HOST:PORT such as 127.0.0.1:2525, got {listen!r}")
        return "127.0.0.1", 0
    if int(port) > 65535:
        t.problem("listen", f"port {int(port)} is out of range (0-65535) in {listen!r}")
        return "127.0.0.1", 0
    return host.strip("[]"), int(port)


def _port(t: Table, default: int) -> int:
    value = t.int("port", default, minimum=1)
    if isinstance(value, int) and value > 65535:
        t.problem("port", f"must be at most 65535, got {value}")
    return value


def _metrics(t: Table) -> MetricsConfig:
    host, port = _host_port(t, t.str("listen") or "")
    return MetricsConfig(host=host, port=port)


def _digest(t: Table) -> DigestConfig | None:
    text = t.str("weekly")
    organisation = t.str("organisation", None)
    if organisation is not None:
        organisation = organisation.strip().lower()
        if organisation.count("@") != 1 or organisation.startswith("@") \
                or organisation.endswith("@") or any(c.isspace() for c in organisation):
            t.problem("organisation", f"expected one mail address such as "
                      f'"ops@example.com", got {organisation!r}')
    try:
        return replace(DigestConfig.parse(text or ""), organisation=organisation)
    except ValueError as exc:
        t.problem("weekly", str(exc))
        return None


def _mailbox(t: Table, secrets: SecretsMode, ca_default: Path | None,
             profiles: dict[str, OAuthProfile]) -> MailboxConfig:
    tls = t.choice("tls", TLS_MODES, "implicit")
    after = t.choice("after", ("keep", "flag", "move"), "keep")
    move_to = t.str("move_to", None)
    if after == "move" and not move_to:
        t.problem("move_to", 'missing; after = "move" needs the folder to move mail to')
    poll = t.duration("poll_interval", timedelta(seconds=60))
    oauth = _oauth(t, profiles)
    password = None if "oauth" in t.data else _secret(t, "required", secrets)
    box = MailboxConfig(
        name=t.str("name"), department=t.str("department"), host=t.str("host"),
        port=_port(t, 993 if tls == "implicit" else 143), tls=tls,
        username=t.str("username"), password=password,
        folder=t.str("folder", "INBOX"), poll_interval=poll, idle=t.bool("idle", True),
        batch_size=t.int("batch_size", 50, minimum=1), after=after, move_to=move_to,
        flag=t.str("flag", "$MailgateProcessed"), timeout=t.float("timeout", 60.0),
        ca_file=_ca_file(t.file.parent, t, ca_default), tls_verify=t.bool("tls_verify", True),
        oauth=oauth, oauth_mechanism=t.choice("oauth_mechanism", MECHANISMS, "auto"),
    )
    t.reject_unknown()
    return box


def _unique_names(root: Table, mailboxes: tuple[MailboxConfig, ...]) -> None:
    seen: set[str] = set()
    for index, box in enumerate(mailboxes):
        if box.name in seen:
            root.problem(f"mailbox[{index}].name", f"duplicate mailbox name {box.name!r}")
        seen.add(box.name)


def _alerts(t: Table) -> AlertsConfig | None:
    admin = _address(t, "admin", t.str("admin"))
    sender = _address(t, "from", t.str("from", None))
    repeat = t.duration("repeat", timedelta(days=1))
    after = t.duration("after", timedelta(minutes=15))
    if repeat is not None and repeat < timedelta(hours=1):
        t.problem("repeat", f"must be at least 1h, got {repeat}; an alert a minute is noise")
    if not admin:
        return None
    return AlertsConfig(admin=admin, sender=sender, repeat=repeat or timedelta(days=1),
                        after=after if after is not None else timedelta(minutes=15))


def _address(t: Table, key: str, value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if value.count("@") != 1 or value.startswith("@") or value.endswith("@") \
            or any(c.isspace() for c in value):
        t.problem(key, f'expected one mail address such as "ops@example.com", got {value!r}')
        return None
    return value


def _limits(t: Table) -> LimitsConfig:
    return LimitsConfig(
        auto_mail_per_recipient_per_hour=t.int(
            "auto_mail_per_recipient_per_hour", t.int(OLD_AUTO_MAIL_KEY, 10, minimum=0),
            minimum=0),
        auto_mail_per_domain_per_hour=t.int("auto_mail_per_domain_per_hour", 100, minimum=0),
        team_notifications_per_sender_per_hour=t.int(
            "team_notifications_per_sender_per_hour", 5, minimum=0),
        max_body_chars=t.int("max_body_chars", 200_000, minimum=1000),
        max_attachment_bytes=t.int("max_attachment_bytes", 25 * 1024 * 1024, minimum=0),
    )


def _security(t: Table) -> SecurityConfig:
    domains = [d.strip().lower().lstrip("@") for d in t.str_list("trusted_domains", [])]
    for domain in domains:
        if not domain or "@" in domain or " " in domain:
            t.problem("trusted_domains", f"{domain!r} is not a domain name like example.com")
    authserv_id = t.str("authserv_id", None)
    return SecurityConfig(frozenset(domains), authserv_id.strip().lower() if authserv_id else None,
                          authserv_position=t.choice("authserv_position", ("top", "bottom"),
                                                     "top"),
                          from_header_is_proof=t.bool("from_header_is_proof", False),
                          reply_key_days=t.int("reply_key_days", 60, minimum=1))


MIN_LEASE_SECONDS = 1.0


def _cluster(t: Table) -> ClusterConfig:
    default = ClusterConfig()
    node = t.str("node", default.node)
    if node is not None and node != node.strip():
        t.problem("node", f"must not start or end with a space, got {node!r}")
    lease = t.float("lease_seconds", default.lease_seconds)
    if lease is not None and lease < MIN_LEASE_SECONDS:
        t.problem("lease_seconds", f"must be at least {MIN_LEASE_SECONDS:g}, got {lease:g}")
    return ClusterConfig(node=node or "", lease_seconds=lease or default.lease_seconds)


def _conversation(t: Table) -> ConversationConfig:
    default = ConversationConfig()
    return ConversationConfig(
        reopen_window=t.duration("reopen_window", default.reopen_window),
        auto_close_after=t.duration("auto_close_after", default.auto_close_after),
        max_relay_bytes=t.int("max_relay_bytes", default.max_relay_bytes, minimum=0),
        notify_team=t.bool("notify_team", default.notify_team),
        keep_cc_informed=t.bool("keep_cc_informed", default.keep_cc_informed),
        comments_from=t.choice("comments_from", ("ticket", "organisation"),
                               default.comments_from),
        bulk_mail=t.choice("bulk_mail", ("ticket", "ignore"), default.bulk_mail),
    )
