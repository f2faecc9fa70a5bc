"""TLS for IMAP and SMTP: the system store plus ca_file, STARTTLS never falls back to plain
text, and every failure reads as what to do. Real servers on loopback: a Dovecot whose
certificate comes from a throw-away CA, aiosmtpd with STARTTLS and implicit TLS."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailgate.config.loader import load_setup
from mailgate.config.settings import MailboxConfig, Secret, SmtpConfig, load_config
from mailgate.connect.diagnose import StartTlsMissing, explain
from mailgate.connect.tls import TlsSettings, ca_file_problem, client_context
from mailgate.errors import ConfigError
from mailgate.intake.imap import endpoint_of, open_client
from mailgate.outbound.transport import ServerUnavailable, SmtpTransport, open_smtp
from mailgate.outbound.transport import endpoint_of as smtp_endpoint
from mailgate.service.daemon import Daemon
from tests import tlsservers
from tests.certs import TestCA
from tests.factories import EXAMPLE_DIRECTORY, mail
from tests.mailservers import DovecotServer, ImapAccount, Mailbox
from tests.tlsservers import TlsSmtpSink, bare_tls_server, server_context

ca, tls_dovecot = tlsservers.ca, tlsservers.tls_dovecot  # module-scoped fixtures


def box(account: ImapAccount, tls: str, port: int, **options: object) -> MailboxConfig:
    values: dict = dict(name="it", department="it", host="127.0.0.1", port=port, tls=tls,
                        username=account.username, password=Secret(account.password, "test"),
                        timeout=10.0)
    values.update(options)
    return MailboxConfig(**values)


def login(cfg: MailboxConfig) -> str | None:
    client = open_client(cfg)
    try:
        assert cfg.password is not None
        client.login(cfg.username, cfg.password.reveal())
        return client.socket().version() if cfg.tls != "none" else None
    finally:
        client.shutdown()


# --- the context builder and ca_file -----------------------------------------------------

def test_ca_file_is_added_to_the_system_store(ca: TestCA) -> None:
    system = client_context(TlsSettings()).cert_store_stats()["x509_ca"]
    with_ca = client_context(TlsSettings(ca.ca_file))
    assert with_ca.cert_store_stats()["x509_ca"] == system + 1
    assert with_ca.check_hostname and with_ca.verify_mode == ssl.CERT_REQUIRED
    off = client_context(TlsSettings(verify=False))
    assert not off.check_hostname and off.verify_mode == ssl.CERT_NONE


def test_ca_file_problems_are_one_line(tmp_path: Path, ca: TestCA) -> None:
    assert ca_file_problem(ca.ca_file) is None
    assert "cannot read" in (ca_file_problem(tmp_path / "missing.pem") or "")
    (tmp_path / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\nabc\n")
    assert "holds no PEM certificate" in (ca_file_problem(tmp_path / "key.pem") or "")
    (tmp_path / "ca.der").write_bytes(b"\x30\x82\x01\xff" + bytes(range(256)))
    assert "convert it: openssl x509 -inform der" in (ca_file_problem(tmp_path / "ca.der")
                                                      or "")
    (tmp_path / "bad.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n"
                                      "-----END CERTIFICATE-----\n")
    assert "not a usable certificate file" in (ca_file_problem(tmp_path / "bad.pem") or "")
    assert "not a regular file" in (ca_file_problem(tmp_path) or "")


def write_config(tmp_path: Path, text: str) -> Path:
    (tmp_path / "secret").write_text("pw")
    path = tmp_path / "mailgate.toml"
    path.write_text(f"""
[directory]
path = "{EXAMPLE_DIRECTORY}"
[smtp]
host = "127.0.0.1"
port = 25
{text}
""")
    return path


MAILBOX = """
[[mailbox]]
name = "it"
department = "it"
host = "imap.example.com"
username = "it"
password_file = "secret"
"""


def test_tls_settings_in_config(tmp_path: Path, ca: TestCA) -> None:
    path = write_config(tmp_path, f"""
[tls]
ca_file = "{ca.ca_file}"
{MAILBOX}
[[mailbox]]
name = "hr"
department = "payroll"
host = "imap.example.com"
username = "hr"
password_file = "secret"
tls_verify = false
ca_file = "{ca.ca_file}"
""")
    config = load_config(path)
    assert config.smtp is not None and config.smtp.ca_file == ca.ca_file
    assert config.smtp.tls_verify
    it, hr = config.mailboxes
    assert it.ca_file == ca.ca_file and it.tls_verify
    assert not hr.tls_verify


def test_bad_ca_file_is_one_problem_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, MAILBOX + 'ca_file = "nowhere.pem"\ntls_verify = "no"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = "\n".join(caught.value.problems)
    assert f"mailbox[0].ca_file: cannot read {tmp_path / 'nowhere.pem'}" in text
    assert "mailbox[0].tls_verify: expected true or false" in text


# --- IMAP against Dovecot with the CA's certificate --------------------------------------

def test_imap_implicit_and_starttls_verify_with_ca_file(tls_dovecot: DovecotServer,
                                                        ca: TestCA) -> None:
    account = tls_dovecot.add_user()
    assert login(box(account, "implicit", tls_dovecot.tls_port, ca_file=ca.ca_file)) \
        in ("TLSv1.2", "TLSv1.3")
    assert login(box(account, "starttls", tls_dovecot.port, ca_file=ca.ca_file)) \
        in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_imap_without_ca_file_fails_and_says_what_to_set(tls_dovecot: DovecotServer,
                                                         tls: str) -> None:
    account = tls_dovecot.add_user()
    port = tls_dovecot.tls_port if tls == "implicit" else tls_dovecot.port
    cfg = box(account, tls, port)
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        login(cfg)
    found = explain(caught.value, endpoint_of(cfg))
    assert found.kind == "tls" and found.needs_admin
    assert found.text.startswith(f"the server's certificate at 127.0.0.1:{port} is signed by "
                                 f"a CA this host does not trust (")
    assert found.text.endswith("""set ca_file = "/path/to/your-ca.pem" in [[mailbox]] 'it' """
                               """(or [tls] ca_file for every connection)""")


def test_imap_with_the_wrong_ca_file_says_so(tls_dovecot: DovecotServer,
                                             tmp_path: Path) -> None:
    other = TestCA(tmp_path / "other", "Some Other CA")
    cfg = box(tls_dovecot.add_user(), "implicit", tls_dovecot.tls_port, ca_file=other.ca_file)
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        login(cfg)
    assert f'not even with ca_file = "{other.ca_file}"' in explain(caught.value,
                                                                  endpoint_of(cfg)).text


def test_imap_tls_verify_false_accepts_any_certificate(tls_dovecot: DovecotServer) -> None:
    cfg = box(tls_dovecot.add_user(), "implicit", tls_dovecot.tls_port, tls_verify=False)
    assert login(cfg) is not None


def test_starttls_missing_is_an_error_never_plain_text(dovecot: DovecotServer) -> None:
    """The plain Dovecot (ssl = no) offers no STARTTLS: no login happens at all."""
    account = dovecot.add_user()
    cfg = box(account, "starttls", dovecot.port)
    with pytest.raises(StartTlsMissing) as caught:
        login(cfg)
    text = explain(caught.value, endpoint_of(cfg)).text
    assert text.startswith(f"127.0.0.1:{dovecot.port} does not offer STARTTLS: mailgate never "
                           f"logs in without TLS")
    assert "Login: user=<" + account.username + ">" not in dovecot.log_tail(200)


def test_implicit_tls_on_a_plain_port_is_explained(tls_dovecot: DovecotServer) -> None:
    cfg = box(tls_dovecot.add_user(), "implicit", tls_dovecot.port)
    with pytest.raises(ssl.SSLError) as caught:
        login(cfg)
    assert "did not answer with TLS" in explain(caught.value, endpoint_of(cfg)).text


def test_expired_certificate_and_wrong_name_are_explained(ca: TestCA) -> None:
    account = ImapAccount("127.0.0.1", 0, "u", "p")
    with bare_tls_server(ca.issue("expired", expired=True)) as port:
        cfg = box(account, "implicit", port, ca_file=ca.ca_file)
        with pytest.raises(ssl.SSLCertVerificationError) as caught:
            login(cfg)
        assert explain(caught.value, endpoint_of(cfg)).text.startswith(
            f"the server's certificate at 127.0.0.1:{port} has expired (")
    with bare_tls_server(ca.issue("other-name", ("mail.example.org",))) as port:
        cfg = box(account, "implicit", port, ca_file=ca.ca_file)
        with pytest.raises(ssl.SSLCertVerificationError) as caught:
            login(cfg)
        text = explain(caught.value, endpoint_of(cfg)).text
        assert text.startswith("the server's certificate is not valid for the name 127.0.0.1")
        assert "set host in [[mailbox]] 'it' to a name the certificate carries" in text


# --- outgoing SMTP ----------------------------------------------------------------------

@pytest.fixture
async def starttls_sink(ca: TestCA) -> AsyncIterator[TlsSmtpSink]:
    sink = TlsSmtpSink(context=server_context(ca.issue("smtp")))
    await sink.start()
    yield sink
    await sink.stop()


@pytest.fixture
async def implicit_sink(ca: TestCA) -> AsyncIterator[TlsSmtpSink]:
    sink = TlsSmtpSink(context=server_context(ca.issue("smtps")), implicit=True)
    await sink.start()
    yield sink
    await sink.stop()


def smtp(port: int, tls: str, **options: object) -> SmtpConfig:
    return SmtpConfig(host="127.0.0.1", port=port, tls=tls, timeout=10.0, **options)


async def test_smtp_starttls_and_implicit_verify_with_ca_file(
        starttls_sink: TlsSmtpSink, implicit_sink: TlsSmtpSink, ca: TestCA) -> None:
    for sink, tls in ((starttls_sink, "starttls"), (implicit_sink, "implicit")):
        client = await asyncio.to_thread(open_smtp, smtp(sink.port, tls, ca_file=ca.ca_file))
        try:
            assert client.sock is not None and client.sock.version() in ("TLSv1.2", "TLSv1.3")
            await asyncio.to_thread(client.sendmail, "a@example.com", ["b@example.com"],
                                    mail())
        finally:
            client.close()
        await sink.wait_for(1)


async def test_smtp_without_ca_file_is_unavailable_in_words(starttls_sink: TlsSmtpSink) -> None:
    transport = SmtpTransport(smtp(starttls_sink.port, "starttls"))
    try:
        with pytest.raises(ServerUnavailable, match=r"signed by a CA this host does not "
                           r"trust .*in \[smtp\]"):
            await transport.send(_row())
    finally:
        transport.shutdown()


async def test_smtp_starttls_missing_is_an_error(smtp_sink: object) -> None:
    cfg = smtp(smtp_sink.port, "starttls")  # type: ignore[attr-defined]
    with pytest.raises(StartTlsMissing) as caught:
        await asyncio.to_thread(open_smtp, cfg)
    assert "does not offer STARTTLS" in explain(caught.value, smtp_endpoint(cfg)).text
    assert not smtp_sink.messages  # type: ignore[attr-defined]


def _row() -> object:
    from mailgate.storage.store import OutboxRow

    fields = {f: None for f in OutboxRow.__dataclass_fields__}
    fields.update(id=1, kind="ack", mail_from="a@example.com", recipients=("b@example.com",),
                  raw=mail(), message_id="x@example.com")
    return OutboxRow(**fields)


# --- the daemon: a mailbox without the CA goes to "error" in words; others go on --------

async def test_daemon_reads_over_tls_and_reports_the_untrusted_one(
        tls_dovecot: DovecotServer, ca: TestCA, starttls_sink: TlsSmtpSink,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tls_dovecot.add_user(), tls_dovecot.add_user()
    (tmp_path / "good").write_text(good.password)
    (tmp_path / "bad").write_text(bad.password)
    boxes = [Mailbox("it", "127.0.0.1", good.username, port=tls_dovecot.tls_port,
                     tls="implicit", password_file=tmp_path / "good", poll_interval="1s",
                     timeout=10, extra=f'ca_file = "{ca.ca_file}"'),
             Mailbox("facilities", "127.0.0.1", bad.username, port=tls_dovecot.port,
                     tls="starttls", password_file=tmp_path / "bad", poll_interval="1s",
                     timeout=10)]
    path = tlsservers.write_config(tmp_path / "mailgate.toml", f"""[conversation]
notify_team = false
[smtp]
host = "127.0.0.1"
port = {starttls_sink.port}
tls = "starttls"
ca_file = "{ca.ca_file}"
timeout = 10
""", boxes)
    setup = load_setup(path)
    async with Daemon(setup.config, setup.directory) as daemon:
        await asyncio.to_thread(tls_dovecot.append, good, mail())
        [ack] = await starttls_sink.wait_for(1, timeout=20)
        assert ack.message["Subject"].startswith("[IT-1001]")
        assert daemon.store is not None
        for _ in range(100):
            states = {m["name"]: m for m in await daemon.store.mailbox_states()}
            if states.get("facilities", {}).get("state") == "error":
                break
            await asyncio.sleep(0.1)
        broken = states["facilities"]
        assert broken["state"] == "error"
        assert "is signed by a CA this host does not trust" in broken["last_error"]
        assert 'set ca_file = "/path/to/your-ca.pem" in [[mailbox]] \'facilities\'' \
            in broken["last_error"]
        assert states["it"]["state"] in ("idle", "polling")
    from mailgate.cli.main import main

    capsys.readouterr()
    assert await asyncio.to_thread(main, ["--config", str(path), "status"]) == 0
    out = capsys.readouterr().out
    # The table's column is cut short; the whole explanation follows it.
    assert f"  facilities: {broken['last_error']}" in out.splitlines()


def test_smtp_refused_login_is_in_words() -> None:
    exc = smtplib.SMTPAuthenticationError(535, b"5.7.8 Authentication credentials invalid")
    cfg = smtp(587, "starttls", username="mailgate@example.com")
    text = explain(exc, smtp_endpoint(cfg)).text
    assert text == ("127.0.0.1:587 refused the login for mailgate@example.com (535 5.7.8 "
                    "Authentication credentials invalid): the user name or password is not "
                    "right, or the account may not use IMAP/SMTP; check username and the "
                    "password setting in [smtp]")


def test_check_warns_about_tls_verify_false(tmp_path: Path, ca: TestCA,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from mailgate.cli.main import main

    path = write_config(tmp_path, MAILBOX + "tls_verify = false\n")
    (tmp_path / "secret").chmod(0o600)
    assert main(["--config", str(path), "check"]) == 0
    out = capsys.readouterr().out
    assert (f"  warning: {path}: mailbox[0].tls_verify: false: any certificate is accepted "
            f"from imap.example.com, so whoever sits on the network path can read the login "
            f"and the mail; set ca_file to your CA instead") in out
