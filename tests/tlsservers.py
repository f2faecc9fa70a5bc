"""TLS test servers on loopback: a Dovecot with a certificate from a throw-away CA, SMTP
sinks with STARTTLS or implicit TLS, and a bare TLS listener for certificate failures."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP

from tests.certs import Issued, TestCA
from tests.environment import missing
from tests.factories import EXAMPLE_DIRECTORY, TEMPLATES
from tests.harness import database_table
from tests.mailservers import DovecotOAuth2, DovecotServer, Mailbox, SmtpSink, find_dovecot


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """A throw-away CA, one per test module (import the fixture into the module)."""
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def tls_dovecot(ca: TestCA) -> Iterator[DovecotServer]:
    """A Dovecot whose certificate the CA signed: STARTTLS on .port, TLS on .tls_port."""
    if find_dovecot() is None:
        missing("Dovecot is not installed")
    server = start_dovecot(ca)
    yield server
    server.cleanup()


def write_config(path: Path, tables: str, mailboxes: Iterable[Mailbox] = (), *,
                 state: str | Path = "state") -> Path:
    """Write the mailgate.toml at PATH: [state], the example directory and templates, then
    TABLES (TOML text: [smtp], [tls], [oauth.NAME] ... as written), then MAILBOXES; return
    PATH. For configs that tests.mailservers.write_daemon_config cannot spell (an [smtp]
    with tls, ca_file or a login)."""
    path.write_text(f"""
[state]
dir = "{state}"
[directory]
path = "{EXAMPLE_DIRECTORY}"
[templates]
dir = "{TEMPLATES}"
""" + database_table(path.parent / state) + tables + "".join(box.toml() for box in mailboxes))
    return path


def server_context(issued: Issued) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(issued.cert, issued.key)
    return context


def start_dovecot(ca: TestCA, oauth2: DovecotOAuth2 | None = None) -> DovecotServer:
    binary = find_dovecot()
    if binary is None:
        raise RuntimeError("Dovecot is not installed")
    server = DovecotServer(binary, tls=ca.issue("dovecot"), oauth2=oauth2)
    server.start()
    return server


@dataclass
class TlsSmtpSink(SmtpSink):
    """The aiosmtpd sink with STARTTLS (required before AUTH/MAIL) or implicit TLS."""

    context: ssl.SSLContext | None = None
    implicit: bool = False
    auth: object | None = None  # an aiosmtpd authenticator, when AUTH is wanted

    async def start(self) -> None:
        self._arrived = self._arrived or asyncio.Condition()
        loop = asyncio.get_running_loop()

        def factory() -> SMTP:
            options: dict = {"hostname": "sink", "enable_SMTPUTF8": True}
            if self.context is not None and not self.implicit:
                options.update(tls_context=self.context, require_starttls=True)
            if self.auth is not None:
                options.update(authenticator=self.auth, auth_required=False,
                               auth_require_tls=self.context is not None)
            elif self.context is None:  # mechanisms of a subclass (auth_XOAUTH2) on loopback
                options.update(auth_require_tls=False)
            return SMTP(self, **options)

        self._server = await loop.create_server(
            factory, self.host, self.port, reuse_address=True,
            ssl=self.context if self.implicit else None)
        self.port = int(self._server.sockets[0].getsockname()[1])


@contextlib.contextmanager
def bare_tls_server(issued: Issued) -> Iterator[int]:
    """A listener that only does TLS handshakes (then closes): enough to see a client
    refuse an expired certificate or one for another name."""
    context = server_context(issued)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            with contextlib.suppress(OSError, ssl.SSLError):
                conn.settimeout(5)
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"* OK ready\r\n")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        listener.close()

