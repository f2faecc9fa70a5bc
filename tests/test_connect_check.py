"""`mailgate check --connect` as a sysadmin runs it: the real command, real servers on
loopback (a Dovecot with a certificate from the organisation's own CA, an aiosmtpd with
STARTTLS and AUTH), one line per connection, exit 1 when any fails."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from mailgate.cli.main import main
from tests import tlsservers
from tests.certs import TestCA
from tests.mailservers import DovecotServer, Mailbox, free_port
from tests.tlsservers import TlsSmtpSink, server_context, write_config

pytestmark = pytest.mark.e2e
ca, tls_dovecot = tlsservers.ca, tlsservers.tls_dovecot  # module-scoped fixtures


def smtp_auth(server: object, session: object, envelope: object, mechanism: str,
              auth_data: object) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and \
        (auth_data.login, auth_data.password) == (b"mailgate", b"smtp-secret")
    return AuthResult(success=ok, handled=False)


@pytest.fixture
async def submission(ca: TestCA) -> AsyncIterator[TlsSmtpSink]:
    sink = TlsSmtpSink(context=server_context(ca.issue("submission")), auth=smtp_auth)
    await sink.start()
    yield sink
    await sink.stop()


def secret(tmp_path: Path, name: str, value: str) -> Path:
    path = tmp_path / name
    path.write_text(value)
    path.chmod(0o600)
    return path


async def mailgate(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailgate", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode()


async def test_check_connect_reports_each_connection_in_words(
        tls_dovecot: DovecotServer, ca: TestCA, submission: TlsSmtpSink,
        tmp_path: Path) -> None:
    good = tls_dovecot.add_user()
    tls_dovecot.create_folder(good, "Requests")
    dovecot = dict(host="127.0.0.1", timeout=10)
    trusted = f'ca_file = "{ca.ca_file}"'
    closed = free_port()
    boxes = [
        Mailbox("it", username=good.username, port=tls_dovecot.tls_port, tls="implicit",
                password_file=secret(tmp_path, "it", good.password),
                extra=trusted + '\nfolder = "Requests"', **dovecot),
        Mailbox("facilities", username=good.username, port=tls_dovecot.port,
                tls="starttls", password_file=secret(tmp_path, "fac", good.password),
                **dovecot),
        Mailbox("payroll", department="payroll", username=good.username,
                port=tls_dovecot.tls_port, tls="implicit",
                password_file=secret(tmp_path, "pay", "wrong"), extra=trusted, **dovecot),
        Mailbox("payroll-archive", department="payroll", username=good.username,
                port=tls_dovecot.tls_port, tls="implicit",
                password_file=secret(tmp_path, "arch", good.password),
                extra=trusted + '\nfolder = "Archive/2026"', **dovecot),
        Mailbox("closed", department="it", username="nobody", port=closed, tls="implicit",
                password_file=secret(tmp_path, "closed", "x"), **dovecot),
    ]
    smtp = f"""[smtp]
host = "127.0.0.1"
port = {submission.port}
tls = "starttls"
ca_file = "{ca.ca_file}"
username = "mailgate"
password_file = "{secret(tmp_path, 'smtp', 'smtp-secret')}"
"""
    path = write_config(tmp_path / "mailgate.toml", smtp, boxes)
    code, out = await mailgate("--config", str(path), "check", "--connect")
    print(out)
    assert code == 1
    lines = out.splitlines()
    assert lines[0].endswith(": OK (3 departments, 5 mailboxes)")
    assert "connections:" in lines
    found = {line.split(":", 1)[0].strip(): line for line in lines if line.startswith("  ")}
    assert found["mailbox 'it'"].startswith(
        f"  mailbox 'it': OK: {good.username} at 127.0.0.1:{tls_dovecot.tls_port}, TLSv1.")
    assert found["mailbox 'it'"].endswith(", folder Requests (0 messages), IDLE")
    assert found["mailbox 'facilities'"] == (
        f"  mailbox 'facilities': FAILED: the server's certificate at "
        f"127.0.0.1:{tls_dovecot.port} is signed by a CA this host does not trust "
        f"(unable to get local issuer certificate): set ca_file = \"/path/to/your-ca.pem\" "
        f"in [[mailbox]] 'facilities' (or [tls] ca_file for every connection)")
    assert found["mailbox 'payroll'"].startswith(
        f"  mailbox 'payroll': FAILED: 127.0.0.1:{tls_dovecot.tls_port} refused the login "
        f"for {good.username} (")
    assert "the user name or password is not right" in found["mailbox 'payroll'"]
    assert found["mailbox 'payroll-archive'"].startswith(
        f"  mailbox 'payroll-archive': FAILED: folder 'Archive/2026' cannot be opened for "
        f"{good.username}: ")
    assert found["mailbox 'payroll-archive'"].endswith(
        "set folder in [[mailbox]] 'payroll-archive' to an existing folder (existing: "
        "INBOX, Requests)")
    assert found["mailbox 'closed'"] == (
        f"  mailbox 'closed': FAILED: connection to 127.0.0.1:{closed} refused: nothing "
        f"listens there (wrong port in [[mailbox]] 'closed', or the server is down)")
    assert found["smtp"].startswith(
        f"  smtp: OK: mailgate at 127.0.0.1:{submission.port}, STARTTLS TLSv1.")
    assert found["smtp"].endswith(", login accepted")
    assert submission.messages == []  # nothing was sent


async def test_check_connect_all_good_exits_0_and_smtp_password_refused(
        tls_dovecot: DovecotServer, ca: TestCA, submission: TlsSmtpSink,
        tmp_path: Path) -> None:
    account = tls_dovecot.add_user()
    boxes = [Mailbox("it", "127.0.0.1", account.username, port=tls_dovecot.port,
                     tls="starttls", password_file=secret(tmp_path, "it", account.password),
                     timeout=10)]
    smtp = f"""[tls]
ca_file = "{ca.ca_file}"
[smtp]
host = "127.0.0.1"
port = {submission.port}
tls = "starttls"
username = "mailgate"
password_file = "{secret(tmp_path, 'smtp', 'smtp-secret')}"
"""
    path = write_config(tmp_path / "mailgate.toml", smtp, boxes)
    code, out = await mailgate("--config", str(path), "check", "--connect")
    assert code == 0, out
    assert "  mailbox 'it': OK: " in out and "  smtp: OK: " in out
    secret(tmp_path, "smtp", "typo")
    code, out = await mailgate("--config", str(path), "check", "--connect")
    assert code == 1
    assert (f"  smtp: FAILED: 127.0.0.1:{submission.port} refused the login for mailgate "
            f"(535 5.7.8 Authentication credentials invalid): the user name or password "
            f"is not right"
            in out), out


def test_check_without_connect_does_not_connect(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    boxes = [Mailbox("it", "127.0.0.1", "u", port=free_port(), tls="implicit",
                     password_file=secret(tmp_path, "it", "pw"))]
    path = write_config(tmp_path / "mailgate.toml", '[smtp]\nhost = "127.0.0.1"\n', boxes)
    assert main(["--config", str(path), "check"]) == 0
    assert "connections:" not in capsys.readouterr().out
