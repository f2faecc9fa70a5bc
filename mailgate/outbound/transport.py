"""How outgoing mail leaves: SMTP over a few persistent connections, or files (demo, tests).

smtplib is blocking, so each SMTP connection (a *lane*, `[smtp] connections` of them) owns
one worker thread; the connection lives in that thread and is reused for every mail until
the server drops it or we go idle. The outbox sends on several lanes at once: a server
answers one mail's DATA while the next is on its way on another connection.
"""

from __future__ import annotations

import asyncio
import os
import smtplib
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mailgate.config.settings import SmtpConfig
from mailgate.connect import diagnose
from mailgate.connect.diagnose import Endpoint, OAuthFailure, StartTlsMissing
from mailgate.connect.tls import TlsSettings, client_context
from mailgate.errors import PermanentError, TransientError
from mailgate.outbound.compose import needs_smtputf8
from mailgate.service.log import get_logger
from mailgate.storage.store import OutboxRow

log = get_logger("mailgate.outbound.transport")


class ServerUnavailable(TransientError):
    """The server cannot be reached or dropped us: retry the whole queue later, in order."""


Accepted = Callable[[OutboxRow], None]  # told of each mail the server accepted, at once
Stop = Callable[[], bool]  # asked before each mail of a run: True ends the run there


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run of one lane's mail went: the first `sent` were accepted, in order;
    `failure` is what sending the next one raised (None: all sent, or told to stop)."""

    sent: int
    failure: PermanentError | TransientError | None = None


class Transport(Protocol):
    lanes: int  # how many mails may be on their way at once (each on its own lane)

    async def send(self, row: OutboxRow, lane: int = 0) -> None: ...

    async def send_run(self, rows: Sequence[OutboxRow], lane: int, accepted: Accepted,
                       stop: Stop) -> RunResult:
        """Send ROWS in order on LANE until one fails; ACCEPTED hears of each acceptance
        the moment the server gives it (from whatever thread sends)."""
        ...

    async def close(self) -> None: ...


async def send_each(send: Callable[[OutboxRow], Awaitable[None]], rows: Sequence[OutboxRow],
                    accepted: Accepted, stop: Stop) -> RunResult:
    """A run as one send() per mail: for transports whose send() costs no hand-off."""
    for sent, row in enumerate(rows):
        if stop():
            return RunResult(sent)
        try:
            await send(row)
        except (PermanentError, TransientError) as exc:
            return RunResult(sent, exc)
        accepted(row)
    return RunResult(len(rows))


def _never() -> bool:
    return False


def _ignore(row: OutboxRow) -> None:
    return None


class SmtpTransport:
    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._connections = [SmtpConnection(config, n) for n in range(config.connections)]
        self.lanes = len(self._connections)

    async def send(self, row: OutboxRow, lane: int = 0) -> None:
        await self._connections[lane % self.lanes].send(row)

    async def send_run(self, rows: Sequence[OutboxRow], lane: int, accepted: Accepted,
                       stop: Stop) -> RunResult:
        return await self._connections[lane % self.lanes].send_run(rows, accepted, stop)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._connections))

    def shutdown(self) -> None:
        for connection in self._connections:
            connection.shutdown()


class SmtpConnection:
    """One SMTP session, kept open between mails, in a thread of its own."""

    def __init__(self, config: SmtpConfig, number: int = 0) -> None:
        self.config = config
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"smtp-{number}")
        self._client: smtplib.SMTP | None = None

    async def send(self, row: OutboxRow) -> None:
        result = await self.send_run([row], _ignore, _never)
        if result.failure is not None:
            raise result.failure

    async def send_run(self, rows: Sequence[OutboxRow], accepted: Accepted,
                       stop: Stop) -> RunResult:
        """The whole run in one hand-off to this connection's thread: handing each mail
        over on its own woke the thread and took the GIL back once per mail, a tenth of
        the event loop's time in an acknowledgement burst (bench/profile.py --gil)."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._send_run, rows, accepted, stop)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._drop, True)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _send_run(self, rows: Sequence[OutboxRow], accepted: Accepted,
                  stop: Stop) -> RunResult:
        for sent, row in enumerate(rows):
            if stop():
                return RunResult(sent)
            try:
                self._send(row)
            except (PermanentError, TransientError) as exc:
                return RunResult(sent, exc)
            accepted(row)
        return RunResult(len(rows))

    def _send(self, row: OutboxRow) -> None:
        for attempt in (1, 2):  # a reused connection may have been closed by the server
            fresh = self._client is None
            try:
                client = self._connect()
                utf8 = needs_smtputf8(row.mail_from, row.recipients, row.raw)
                # Asked, not caught: login() raises SMTPNotSupportedError too (no AUTH),
                # which is the server's setup, retried, not this mail's fault.
                if utf8 and not client.has_extn("smtputf8"):  # not this mail, ever
                    raise PermanentError(f"{self.config.host} does not take internationalised "
                                         "addresses (SMTPUTF8); this mail names one")
                refused = client.sendmail(row.mail_from, list(row.recipients), row.raw,
                                          mail_options=["SMTPUTF8"] if utf8 else [])
            except smtplib.SMTPRecipientsRefused as exc:
                raise _classify_refusal(exc.recipients) from None
            except smtplib.SMTPResponseException as exc:
                if exc.smtp_code == 421:
                    self._drop()
                    raise ServerUnavailable(f"{exc.smtp_code} {_text(exc.smtp_error)}") from None
                self._reset()
                raise _by_code(exc.smtp_code, _text(exc.smtp_error)) from None
            except (smtplib.SMTPException, OSError) as exc:
                self._drop()
                if attempt == 1 and not fresh:
                    continue
                raise ServerUnavailable(self.explain(exc)) from None
            if refused:
                raise _classify_refusal(refused)
            return

    def explain(self, exc: BaseException) -> str:
        return diagnose.explain(exc, endpoint_of(self.config)).text

    def _connect(self) -> smtplib.SMTP:
        if self._client is not None:
            return self._client
        cfg = self.config
        if cfg.tls != "none" and not cfg.tls_verify:
            log.warning("smtp.tls_unverified", host=cfg.host,
                        note="tls_verify = false: any certificate is accepted")
        client = open_smtp(cfg)
        try:
            login(client, cfg)
        except smtplib.SMTPAuthenticationError as exc:
            client.close()
            # Retried: credentials are often fixed without restarting the daemon's queue.
            raise ServerUnavailable(self.explain(exc)) from None
        except OAuthFailure as exc:  # no token: retried like an unreachable server
            client.close()
            raise ServerUnavailable(exc.text) from None
        except BaseException:
            client.close()
            raise
        self._client = client
        return client

    def _reset(self) -> None:
        try:
            if self._client:
                self._client.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self, polite: bool = False) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if polite:
                client.quit()
        except (smtplib.SMTPException, OSError):
            pass
        finally:
            client.close()


def endpoint_of(cfg: SmtpConfig) -> Endpoint:
    return Endpoint(what="the SMTP server", table="[smtp]", host=cfg.host, port=cfg.port,
                    tls=cfg.tls, timeout=cfg.timeout, username=cfg.username,
                    ca_file=cfg.ca_file, oauth=cfg.oauth.provider if cfg.oauth else None)


def open_smtp(cfg: SmtpConfig) -> smtplib.SMTP:
    """Connected, greeted, with TLS as configured, not logged in. A server that does not
    offer STARTTLS when tls = "starttls" is an error: smtplib would raise too, but we say
    so in words, and never go on in plain text."""
    context = client_context(TlsSettings(cfg.ca_file, cfg.tls_verify)) \
        if cfg.tls != "none" else None
    if cfg.tls == "implicit":
        client: smtplib.SMTP = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout,
                                                context=context)
    else:
        client = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
    try:
        client.ehlo_or_helo_if_needed()
        if cfg.tls == "starttls":
            if not client.has_extn("starttls"):
                raise StartTlsMissing(f"{cfg.host}:{cfg.port} does not offer STARTTLS")
            client.starttls(context=context)
            client.ehlo()
    except BaseException:
        client.close()
        raise
    return client


def login(client: smtplib.SMTP, cfg: SmtpConfig) -> None:
    """Log in with the configured password, or an OAuth2 token (XOAUTH2/OAUTHBEARER);
    nothing when no username is configured."""
    if cfg.oauth is not None and cfg.username:
        from mailgate.connect.oauth import sasl
        from mailgate.connect.oauth.sources import source_for

        source = source_for(cfg.oauth, cfg.username)
        sasl.smtp_login(client, cfg.oauth_mechanism, cfg.username, source, cfg.host,
                        cfg.port)
    elif cfg.username and cfg.password:
        client.login(cfg.username, cfg.password.reveal())


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _by_code(code: int, text: str) -> Exception:
    error = f"{code} {text}"
    return PermanentError(error) if code >= 500 else TransientError(error)


def _classify_refusal(refused: dict) -> Exception:
    """All recipients 5xx -> permanent; any 4xx -> try again later."""
    details = "; ".join(f"{rcpt}: {code} {_text(msg)}" for rcpt, (code, msg) in refused.items())
    if all(code >= 500 for code, _ in refused.values()):
        return PermanentError(details)
    return TransientError(details)


class DirectoryTransport:
    """Writes each mail to DIR/<id>-<kind>.eml atomically; used by the demo."""

    def __init__(self, directory: Path, lanes: int = 1) -> None:
        self.directory = directory
        self.lanes = lanes
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def send(self, row: OutboxRow, lane: int = 0) -> None:
        await asyncio.to_thread(self._write, row)

    async def send_run(self, rows: Sequence[OutboxRow], lane: int, accepted: Accepted,
                       stop: Stop) -> RunResult:
        return await send_each(lambda row: self.send(row, lane), rows, accepted, stop)

    def _write(self, row: OutboxRow) -> None:
        final = self.directory / f"{row.id:06d}-{row.kind}.eml"
        temp = final.with_suffix(".tmp")
        try:
            with temp.open("wb") as fh:
                fh.write(row.raw)
                fh.flush()
                os.fsync(fh.fileno())
            temp.replace(final)
        except OSError as exc:
            raise ServerUnavailable(f"cannot write {final}: {exc.strerror}") from None

    async def close(self) -> None:
        return None
