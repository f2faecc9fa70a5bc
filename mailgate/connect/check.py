"""`mailgate check --connect`: log in to every mailbox and the SMTP server, say how it went.

A valid config file is not a working setup: a CA the host does not trust, a wrong port, a
password typo or a revoked OAuth2 grant only show when mailgate connects. This logs in with
the real settings (the same code the daemon uses), opens each mailbox's folder read-only,
sends no mail, and reports each connection in one line, in the words of diagnose.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from mailgate.config.settings import Config, MailboxConfig, SmtpConfig
from mailgate.connect.diagnose import FolderMissing, explain

CHECK_TIMEOUT = 20.0  # seconds per network step here: an admin is waiting at the terminal


@dataclass(frozen=True)
class Result:
    target: str  # "mailbox 'it'" or "smtp"
    status: str  # OK | FAILED | SKIPPED
    detail: str

    def line(self) -> str:
        return f"  {self.target}: {self.status}: {self.detail}"


def check_mailbox(cfg: MailboxConfig) -> Result:
    """Connect, log in, open the folder read-only, log out (blocking)."""
    from mailgate.intake.imap import endpoint_of, login, open_client, select

    target = f"mailbox {cfg.name!r}"
    if _missing_secret(cfg):
        return Result(target, "SKIPPED", _skipped(cfg.username))
    cfg = dataclasses.replace(cfg, timeout=min(cfg.timeout, CHECK_TIMEOUT))
    try:
        client = open_client(cfg)
    except Exception as exc:
        return Result(target, "FAILED", explain(exc, endpoint_of(cfg)).text)
    try:
        login(client, cfg)
        try:
            info = select(client, cfg.folder, readonly=True)
        except FolderMissing as exc:
            names = tuple(sorted(str(name) for _, _, name in client.list_folders()))
            raise FolderMissing(exc.folder, exc.server_text, names) from None
        return Result(target, "OK", _mailbox_detail(cfg, client, info))
    except Exception as exc:
        return Result(target, "FAILED", explain(exc, endpoint_of(cfg)).text)
    finally:
        _logout(client)


def check_smtp(cfg: SmtpConfig) -> Result:
    """Connect, EHLO, STARTTLS, log in, QUIT: no mail is sent (blocking)."""
    from mailgate.outbound.transport import endpoint_of, login, open_smtp

    if _missing_secret(cfg):
        return Result("smtp", "SKIPPED", _skipped(cfg.username))
    cfg = dataclasses.replace(cfg, timeout=min(cfg.timeout, CHECK_TIMEOUT))
    try:
        client = open_smtp(cfg)
    except Exception as exc:
        return Result("smtp", "FAILED", explain(exc, endpoint_of(cfg)).text)
    try:
        login(client, cfg)
        who = f"{cfg.username} at " if cfg.username else ""
        logged = ", login accepted" if cfg.username else ", no login configured"
        return Result("smtp", "OK", f"{who}{cfg.host}:{cfg.port}, "
                                    f"{_tls_words(cfg.tls, client.sock)}{logged}")
    except Exception as exc:
        return Result("smtp", "FAILED", explain(exc, endpoint_of(cfg)).text)
    finally:
        try:
            client.quit()
        except Exception:
            client.close()


async def check_database(config: Config) -> Result:
    """[database]: connect with the real settings (TLS as sslmode says), read the schema
    version; nothing is changed. Only a server is checked: SQLite is a local file."""
    from mailgate.storage import errors as store_errors
    from mailgate.storage.schema import MIGRATIONS
    from mailgate.storage.server_info import connection_tls
    from mailgate.storage.store import Store

    server = config.database_server
    assert server is not None
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            store = await Store.open(server.url, migrate=False,
                                     password=config.store_password)
            try:
                version = await store.schema_version()
                tls = await connection_tls(store)
            finally:
                await store.close()
    except (TimeoutError, *store_errors.STORE_ERRORS) as exc:
        return Result("database", "FAILED", str(exc) or "no answer in time")
    shown = store.describe()
    words = f"TLS {tls[1]}" if tls and tls[0] else "no TLS"
    if version < len(MIGRATIONS):
        schema = (f"schema {version}, {len(MIGRATIONS) - version} migration(s) pending "
                  f"(mailgate migrate, or the first node's start)")
    else:
        schema = f"schema {version}"
    return Result("database", "OK", f"{shown}, {words}, {schema}")


async def check_all(config: Config) -> list[Result]:
    """Every mailbox, the SMTP server and a database server at once."""
    jobs: list[Callable[[], Result]] = [
        (lambda box=box: check_mailbox(box)) for box in config.mailboxes]
    if config.smtp is not None:
        smtp = config.smtp
        jobs.append(lambda: check_smtp(smtp))
    checks = [asyncio.to_thread(job) for job in jobs]
    if config.database_server is not None:
        checks.append(check_database(config))
    results = list(await asyncio.gather(*checks))
    if config.smtp is None:
        results.append(Result("smtp", "SKIPPED", "not used: outgoing mail is written to "
                                                  "[outbox] dir"))
    return results


def run(config: Config, say: Callable[[str], None]) -> int:
    """Print one line per connection; 1 if any failed."""
    results = asyncio.run(check_all(config))
    say("connections:")
    for result in results:
        say(result.line())
    return 1 if any(r.status == "FAILED" for r in results) else 0


def _mailbox_detail(cfg: MailboxConfig, client: object, info: dict) -> str:
    exists = info.get(b"EXISTS", "?")
    idle = client.has_capability("IDLE")  # type: ignore[attr-defined]
    wait = "IDLE" if idle and cfg.idle else f"polling every {_seconds(cfg)}"
    sock = client.socket()  # type: ignore[attr-defined]
    return (f"{cfg.username} at {cfg.host}:{cfg.port}, {_tls_words(cfg.tls, sock)}, folder "
            f"{cfg.folder} ({exists} messages), {wait}")


def _seconds(cfg: MailboxConfig) -> str:
    return f"{cfg.poll_interval.total_seconds():g}s"


def _tls_words(mode: str, sock: object) -> str:
    from mailgate.connect.tls import protocol_of

    if mode == "none":
        return "no TLS"
    version = protocol_of(sock) or "TLS"
    return f"STARTTLS {version}" if mode == "starttls" else version


def _missing_secret(cfg: MailboxConfig | SmtpConfig) -> bool:
    """A password this shell could not read (a systemd credential, an unset variable)."""
    profile = cfg.oauth
    if profile is not None:  # the profile's own secret, where it needs one
        return (profile.provider == "microsoft" and profile.client_secret is None
                and profile.certificate_key is None) or \
            (profile.provider == "google" and profile.service_account is None)
    return bool(cfg.username) and cfg.password is None


def _skipped(username: str | None) -> str:
    return (f"not checked: the secret for {username} cannot be read from this shell "
            f"(a _credential or _env setting); run it where the service's "
            f"credentials are, e.g. systemd-run --pipe --wait -p LoadCredential=... "
            f"mailgate check --connect")


def _logout(client: object) -> None:
    try:
        client.logout()  # type: ignore[attr-defined]
    except Exception:
        with contextlib.suppress(Exception):
            client.shutdown()  # type: ignore[attr-defined]
