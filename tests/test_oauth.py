"""OAuth2 logins on real servers, nothing beyond loopback: a Dovecot whose oauth2 passdb
asks a stand-in identity provider (tests/idp.py, over TLS from a throw-away CA) about each
token, an aiosmtpd that takes XOAUTH2/OAUTHBEARER, and the pure pieces on their own."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import stat
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, AuthResult

from mailgate.config.loader import load_setup
from mailgate.config.settings import AlertsConfig, MailboxConfig, SmtpConfig, load_config
from mailgate.connect.diagnose import Diagnosis, OAuthFailure, explain
from mailgate.connect.oauth import sasl
from mailgate.connect.oauth.login import Target, code_from
from mailgate.connect.oauth.login import login as oauth_login
from mailgate.connect.oauth.profile import OAuthProfile
from mailgate.connect.oauth.sources import source_for, thumbprint
from mailgate.connect.oauth.tokens import (
    TokenFile,
    TokenSet,
    after_refresh,
    first_tokens,
    token_path,
)
from mailgate.errors import ConfigError
from mailgate.intake.imap import endpoint_of, login, open_client
from mailgate.outbound.alerts import Failing, on_failure, on_recovery
from mailgate.outbound.transport import SmtpTransport, open_smtp
from mailgate.outbound.transport import login as smtp_login
from mailgate.service import metrics
from mailgate.service.daemon import Daemon
from tests import tlsservers
from tests.certs import TestCA, self_signed_rsa
from tests.environment import missing
from tests.factories import EXAMPLE_DIRECTORY, TEMPLATES, mail
from tests.idp import IdP
from tests.mailservers import (
    DovecotOAuth2,
    DovecotServer,
    ImapAccount,
    Mailbox,
    Received,
    find_dovecot,
    write_daemon_config,
)
from tests.tlsservers import TlsSmtpSink, server_context, start_dovecot

# --- the pure pieces --------------------------------------------------------------------


def test_sasl_strings() -> None:
    assert sasl.xoauth2("it@example.com", "tok") == \
        "user=it@example.com\x01auth=Bearer tok\x01\x01"
    assert sasl.oauthbearer("a,b=c@example.com", "tok", "imap.example.com", 993) == \
        "n,a=a=2Cb=3Dc@example.com,\x01host=imap.example.com\x01port=993\x01" \
        "auth=Bearer tok\x01\x01"
    assert sasl.choose("auto", ["PLAIN", "XOAUTH2", "OAUTHBEARER"]) == "OAUTHBEARER"
    assert sasl.choose("auto", ["XOAUTH2"]) == "XOAUTH2"  # Microsoft 365
    assert sasl.choose("xoauth2", ["OAUTHBEARER", "XOAUTH2"]) == "XOAUTH2"


def test_refresh_keeps_or_rotates_the_refresh_token() -> None:
    old = TokenSet("rt-1", "at-1", 100.0, obtained_at=1.0)
    same = after_refresh(old, {"access_token": "at-2", "expires_in": 60}, 1000.0)
    assert (same.refresh_token, same.access_token, same.expires_at, same.rotated_at) == \
        ("rt-1", "at-2", 1060.0, None)
    new = after_refresh(old, {"access_token": "at-3", "refresh_token": "rt-2"}, 1000.0)
    assert (new.refresh_token, new.rotated_at, new.expires_at) == ("rt-2", 1000.0, 4600.0)
    with pytest.raises(ValueError, match="offline_access"):
        first_tokens({"access_token": "a"}, 0.0)


def test_token_file_is_written_atomically_0600(tmp_path: Path) -> None:
    file = TokenFile(token_path(tmp_path / "oauth", "corp", "it@example.com"))
    assert file.read() is None
    with file.locked():
        file.write(TokenSet("rt-1", "at-1", 5.0))
        file.write(TokenSet("rt-2", "at-2", 6.0))
    assert file.read() == TokenSet("rt-2", "at-2", 6.0)
    assert stat.S_IMODE(file.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(file.path.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in file.path.parent.iterdir()) == [
        "corp--it@example.com.json", "corp--it@example.com.lock"]
    file.path.write_text("{not json")
    with pytest.raises(OSError, match="unreadable token file"):
        file.read()


def test_pasted_code_or_address() -> None:
    assert code_from("  4/0AX-code  ", "st") == "4/0AX-code"
    assert code_from("http://localhost/?code=abc&state=st&scope=x", "st") == "abc"
    with pytest.raises(OAuthFailure, match="another sign-in"):
        code_from("http://localhost/?code=abc&state=other", "st")
    with pytest.raises(OAuthFailure, match="the sign-in failed: user said no"):
        code_from("http://localhost/?error=access_denied&error_description=user+said+no",
                  "st")


def test_alert_policy() -> None:
    policy = AlertsConfig("ops@example.com")
    login_refused, network = Diagnosis("oauth", "revoked"), Diagnosis("network", "refused")
    record, due = on_failure(None, login_refused, 1000.0, policy)
    assert due and record.alerted_at == 1000.0  # needs someone: at once
    record, due = on_failure(record, login_refused, 1000.0 + 3600, policy)
    assert not due  # not again within the day
    record, due = on_failure(record, login_refused, 1000.0 + 86400, policy)
    assert due and record.since == 1000.0
    record, due = on_failure(None, network, 0.0, policy)
    assert not due  # servers restart: wait 15 minutes
    record, due = on_failure(record, network, 15 * 60.0, policy)
    assert due
    assert on_recovery(record) and not on_recovery(Failing(0.0, "x"))


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mailgate.toml"
    path.write_text(f'[directory]\npath = "{EXAMPLE_DIRECTORY}"\n'
                    f'[smtp]\nhost = "127.0.0.1"\n{text}')
    return path


def test_oauth_settings_problems_are_one_line_each(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s")
    (tmp_path / "sa.json").write_text('{"type": "authorized_user"}')
    path = config_file(tmp_path, """
[oauth.m365]
provider = "microsoft"
tenant = "contoso.onmicrosoft.com"
client_id = "app"
client_secret_file = "secret"
certificate_key_file = "secret"
[oauth.g]
provider = "google"
service_account_file = "sa.json"
[oauth.x]
provider = "keycloak"
[oauth.cmd]
provider = "command"
[[mailbox]]
name = "it"
department = "it"
host = "imap.example.com"
username = "it@example.com"
oauth = "m365x"
[[mailbox]]
name = "fac"
department = "facilities"
host = "imap.example.com"
username = "fac@example.com"
oauth = "g"
password_file = "secret"
""")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = "\n".join(caught.value.problems)
    for expected in (
            "oauth.m365.client_secret_file: set either a client secret",
            "oauth.g.service_account_file: not a service account key",
            "oauth.x.provider: must be one of generic, microsoft, google, command",
            "oauth.cmd.command: missing; a program that prints an access token",
            "mailbox[0].oauth: unknown OAuth2 profile 'm365x' (known: cmd, g, m365, x)",
            "mailbox[1].password_file: not used with oauth = 'g'; remove it"):
        assert expected in text, text


def test_oauth_settings_load(tmp_path: Path) -> None:
    path = config_file(tmp_path, """
[oauth.m365]
provider = "microsoft"
tenant = "contoso.onmicrosoft.com"
client_id = "app"
client_secret_env = "M365_SECRET"
[[mailbox]]
name = "it"
department = "it"
host = "outlook.office365.com"
username = "it@example.com"
oauth = "m365"
oauth_mechanism = "xoauth2"
""")
    os.environ["M365_SECRET"] = "s3cret"
    try:
        [box] = load_config(path).mailboxes
    finally:
        del os.environ["M365_SECRET"]
    assert box.password is None and box.oauth_mechanism == "xoauth2"
    assert box.oauth is not None and box.oauth.client_secret is not None
    assert box.oauth.authority == "https://login.microsoftonline.com/contoso.onmicrosoft.com"
    assert box.oauth.scope == "https://outlook.office365.com/.default"
    assert "s3cret" not in repr(box)


# --- servers: the identity provider, Dovecot with the oauth2 passdb, an SMTP server ------

ca = tlsservers.ca  # a module-scoped fixture


@pytest.fixture(scope="module")
def idp(ca: TestCA) -> Iterator[IdP]:
    provider = IdP()
    provider.start(server_context(ca.issue("idp")))
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def oauth_dovecot(ca: TestCA, idp: IdP) -> Iterator[DovecotServer]:
    if find_dovecot() is None:
        missing("Dovecot is not installed")
    server = start_dovecot(ca, DovecotOAuth2(f"{idp.url}/introspect", ca.ca_file))
    yield server
    server.cleanup()


@pytest.fixture
def fresh_idp(idp: IdP) -> Iterator[IdP]:
    """The module's provider with today's settings reset after the test."""
    saved = dataclasses.replace(idp)
    idp.requests.clear()
    yield idp
    for f in ("client_secret", "rotate", "lifetime", "app_mailbox", "app_certificate_pem",
              "service_account_public_pem", "login_as"):
        setattr(idp, f, getattr(saved, f))
    idp.delegated.clear()


class OAuthSink(TlsSmtpSink):
    """A submission server taking XOAUTH2 and OAUTHBEARER, asking the IdP about tokens."""

    idp: IdP | None = None

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        return self._check(args, "user=", "\x01auth=Bearer ")

    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:
        return self._check(args, "n,a=", "\x01auth=Bearer ")

    def _check(self, args: list[str], user_mark: str, token_mark: str) -> AuthResult:
        text = base64.b64decode(args[1]).decode() if len(args) > 1 else ""
        user = text.split(user_mark, 1)[-1].split(",", 1)[0].split("\x01", 1)[0]
        token = text.split(token_mark, 1)[-1].split("\x01", 1)[0]
        assert self.idp is not None
        _, answer = self.idp.introspect({"token": token})
        ok = answer["active"] and answer["username"] == user
        self.logins.append((args[0], user, ok))
        return AuthResult(success=ok, handled=False)

    @property
    def logins(self) -> list:
        if not hasattr(self, "_logins"):
            self._logins: list = []
        return self._logins


@pytest.fixture
async def oauth_sink(idp: IdP) -> AsyncIterator[OAuthSink]:
    sink = OAuthSink()
    sink.idp = idp
    await sink.start()
    yield sink
    await sink.stop()


def generic(tmp_path: Path, idp: IdP, ca: TestCA, **options: object) -> OAuthProfile:
    values: dict = dict(name="corp", provider="generic", token_dir=tmp_path / "oauth",
                        client_id=idp.client_id, token_url=f"{idp.url}/token",
                        device_url=f"{idp.url}/device", scope="imap smtp offline_access",
                        ca_file=ca.ca_file, timeout=10.0)
    values.update(options)
    return OAuthProfile(**values)


def imap_box(account: ImapAccount, server: DovecotServer, ca: TestCA,
             profile: OAuthProfile, **options: object) -> MailboxConfig:
    values: dict = dict(name="it", department="it", host="127.0.0.1", port=server.tls_port,
                        tls="implicit", username=account.username, password=None,
                        ca_file=ca.ca_file, timeout=10.0, oauth=profile)
    values.update(options)
    return MailboxConfig(**values)


def imap_login(cfg: MailboxConfig) -> None:
    client = open_client(cfg)
    try:
        login(client, cfg)
        client.select_folder(cfg.folder, readonly=True)
    finally:
        client.shutdown()


def method_logged(server: DovecotServer, user: str) -> list[str]:
    return [line.split("method=", 1)[1].split(",", 1)[0]
            for line in server.log_tail(400).splitlines()
            if f"Login: user=<{user}>" in line]


# --- the generic refresh-token flow against Dovecot's oauth2 passdb ---------------------

def test_device_login_then_xoauth2_and_oauthbearer(oauth_dovecot: DovecotServer,
                                                   fresh_idp: IdP, ca: TestCA,
                                                   tmp_path: Path) -> None:
    account = oauth_dovecot.add_user()
    fresh_idp.login_as = account.username
    profile = generic(tmp_path, fresh_idp, ca)
    said: list[str] = []
    assert oauth_login(Target("it", account.username, profile), said.append, input,
                       sleep=lambda _: None) == 0
    assert "enter the code WDJB-MJHT" in said[0] and fresh_idp.url in said[0]
    file = TokenFile(token_path(profile.token_dir, "corp", account.username))
    stored = file.read()
    assert stored is not None and stored.refresh_token in fresh_idp.refresh_tokens
    assert stat.S_IMODE(file.path.stat().st_mode) == 0o600
    cfg = imap_box(account, oauth_dovecot, ca, profile)
    imap_login(cfg)  # "auto": Dovecot offers OAUTHBEARER
    imap_login(dataclasses.replace(cfg, oauth_mechanism="xoauth2"))
    assert method_logged(oauth_dovecot, account.username) == ["OAUTHBEARER", "XOAUTH2"]
    assert fresh_idp.grants("refresh_token") == []  # the device flow's token was fresh


def test_pasted_code_login(oauth_dovecot: DovecotServer, fresh_idp: IdP, ca: TestCA,
                           tmp_path: Path) -> None:
    account = oauth_dovecot.add_user()
    fresh_idp.login_as = account.username
    profile = generic(tmp_path, fresh_idp, ca, device_url=None,
                      authorize_url=f"{fresh_idp.url}/authorize")
    shown: list[str] = []

    def browser(prompt: str) -> str:  # the admin signs in and pastes the address
        from urllib.parse import parse_qs, urlsplit

        url = next(line.strip() for line in shown[0].splitlines() if "/authorize?" in line)
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        assert query["code_challenge_method"] == "S256"
        assert query["login_hint"] == account.username
        return fresh_idp.authorize(query)

    assert oauth_login(Target("it", account.username, profile), shown.append, browser) == 0
    imap_login(imap_box(account, oauth_dovecot, ca, profile))


def seed(profile: OAuthProfile, idp: IdP, user: str, *, expired: bool) -> TokenFile:
    file = TokenFile(token_path(profile.token_dir, profile.name, user))
    answer = idp._issue(user, idp.grant(user))
    tokens = first_tokens(answer, 0.0 if expired else 10**10 - answer["expires_in"])
    file.write(tokens)
    return file


def test_expired_access_token_is_refreshed_and_a_rotated_one_stored_first(
        oauth_dovecot: DovecotServer, fresh_idp: IdP, ca: TestCA, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    account = oauth_dovecot.add_user()
    fresh_idp.rotate = True
    profile = generic(tmp_path, fresh_idp, ca)
    file = seed(profile, fresh_idp, account.username, expired=True)
    first = file.read()
    assert first is not None
    # The login after the refresh fails (the IMAP connection breaks): the rotated refresh
    # token must be on disk all the same, since the provider already forgot the old one.
    broken = {"n": 0}

    def fail_once(*args: object) -> None:
        broken["n"] += 1
        raise ConnectionResetError("connection reset during AUTHENTICATE")

    monkeypatch.setattr(sasl, "_imap_auth", fail_once)
    cfg = imap_box(account, oauth_dovecot, ca, profile)
    with pytest.raises(ConnectionResetError):
        imap_login(cfg)
    second = file.read()
    assert second is not None and second.refresh_token != first.refresh_token
    assert second.refresh_token in fresh_idp.refresh_tokens
    assert first.refresh_token not in fresh_idp.refresh_tokens
    monkeypatch.undo()
    imap_login(cfg)  # the access token stored with it is used; no second refresh
    assert len(fresh_idp.grants("refresh_token")) == 1
    assert fresh_idp.grants("refresh_token")[0].form["refresh_token"] == first.refresh_token
    # Expired again: refreshed with the rotated token, which rotates once more.
    file.write(dataclasses.replace(file.read(), expires_at=0.0))  # type: ignore[type-var]
    imap_login(cfg)
    third = file.read()
    assert third is not None and third.refresh_token not in (first.refresh_token,
                                                             second.refresh_token)
    assert [g.form["refresh_token"] for g in fresh_idp.grants("refresh_token")] == \
        [first.refresh_token, second.refresh_token]


def test_token_refused_by_the_server_is_refreshed_once(
        oauth_dovecot: DovecotServer, fresh_idp: IdP, ca: TestCA, tmp_path: Path) -> None:
    account = oauth_dovecot.add_user()
    profile = generic(tmp_path, fresh_idp, ca)
    file = seed(profile, fresh_idp, account.username, expired=False)
    tokens = file.read()
    assert tokens is not None
    del fresh_idp.access_tokens[tokens.access_token or ""]  # revoked early, still "valid"
    imap_login(imap_box(account, oauth_dovecot, ca, profile))
    assert len(fresh_idp.grants("refresh_token")) == 1


def test_revoked_refresh_token_is_explained(oauth_dovecot: DovecotServer, fresh_idp: IdP,
                                            ca: TestCA, tmp_path: Path) -> None:
    account = oauth_dovecot.add_user()
    profile = generic(tmp_path, fresh_idp, ca)
    seed(profile, fresh_idp, account.username, expired=True)
    fresh_idp.revoke(account.username)
    cfg = imap_box(account, oauth_dovecot, ca, profile)
    with pytest.raises(OAuthFailure) as caught:
        imap_login(cfg)
    found = explain(caught.value, endpoint_of(cfg))
    assert found.needs_admin
    assert found.text == (
        f"the token endpoint refused the refresh token of {account.username} (invalid_grant: "
        f"The refresh token has been revoked): it was revoked, expired or replaced; run "
        f"`mailgate oauth login` for this mailbox again")


def test_missing_refresh_token_says_what_to_run(fresh_idp: IdP, ca: TestCA,
                                                tmp_path: Path) -> None:
    source = source_for(generic(tmp_path, fresh_idp, ca), "new@example.com")
    with pytest.raises(OAuthFailure, match="run `mailgate oauth login MAILBOX` once"):
        source.token()


# --- SMTP with XOAUTH2 / OAUTHBEARER ---------------------------------------------------

async def test_smtp_sends_with_an_oauth_token(oauth_sink: OAuthSink, fresh_idp: IdP,
                                              ca: TestCA, tmp_path: Path) -> None:
    profile = generic(tmp_path, fresh_idp, ca)
    seed(profile, fresh_idp, "mailgate@example.com", expired=True)
    cfg = SmtpConfig(host="127.0.0.1", port=oauth_sink.port, username="mailgate@example.com",
                     timeout=10.0, oauth=profile, oauth_mechanism="xoauth2")
    transport = SmtpTransport(cfg)
    try:
        await transport.send(_row())
    finally:
        await transport.close()
        transport.shutdown()
    await oauth_sink.wait_for(1)
    assert oauth_sink.logins == [("XOAUTH2", "mailgate@example.com", True)]
    auto = dataclasses.replace(cfg, oauth_mechanism="auto")
    client = await asyncio.to_thread(open_smtp, auto)
    try:
        await asyncio.to_thread(smtp_login, client, auto)
    finally:
        client.close()
    assert oauth_sink.logins[-1] == ("OAUTHBEARER", "mailgate@example.com", True)


def _row() -> object:
    from mailgate.storage.store import OutboxRow

    return OutboxRow(id=1, message_id="x@example.com", kind="ack", ticket=None,
                     mail_from="mailgate@example.com", recipients=("ann@example.com",),
                     raw=mail(), attempts=0)


# --- Microsoft 365 app-only (msal) and Google service accounts (google-auth) -------------

def microsoft(tmp_path: Path, idp: IdP, ca: TestCA, **options: object) -> OAuthProfile:
    values: dict = dict(name="m365", provider="microsoft", token_dir=tmp_path / "oauth",
                        client_id=idp.app_id, tenant="tenant-id",
                        authority=f"{idp.url}/tenant-id",
                        scope="https://outlook.office365.com/.default", ca_file=ca.ca_file,
                        timeout=10.0)
    values.update(options)
    return OAuthProfile(**values)


def test_microsoft_app_only_with_a_client_secret(oauth_dovecot: DovecotServer,
                                                 fresh_idp: IdP, ca: TestCA,
                                                 tmp_path: Path) -> None:
    from mailgate.config.settings import Secret

    shared = oauth_dovecot.add_user()
    fresh_idp.app_mailbox = shared.username  # the app's service principal: FullAccess
    profile = microsoft(tmp_path, fresh_idp, ca, client_secret=Secret("app-secret", "test"))
    imap_login(imap_box(shared, oauth_dovecot, ca, profile, oauth_mechanism="xoauth2"))
    [grant] = fresh_idp.grants("client_credentials")
    assert grant.path == "/tenant-id/oauth2/v2.0/token"
    assert (grant.form["client_id"], grant.form["client_secret"], grant.form["scope"]) == \
        (fresh_idp.app_id, "app-secret", "https://outlook.office365.com/.default")
    assert method_logged(oauth_dovecot, shared.username) == ["XOAUTH2"]
    # A wrong secret: Entra's code, explained.
    wrong = microsoft(tmp_path, fresh_idp, ca, client_secret=Secret("typo", "test"))
    with pytest.raises(OAuthFailure) as caught:
        source_for(wrong, shared.username).token()
    assert caught.value.text.startswith("Entra ID refused the app's token request "
                                        "(invalid_client: AADSTS7000215")
    assert caught.value.text.endswith("the client secret is wrong: use the secret's Value, "
                                      "not its ID")


def test_microsoft_app_only_with_a_certificate(oauth_dovecot: DovecotServer, fresh_idp: IdP,
                                               ca: TestCA, tmp_path: Path) -> None:
    import jwt

    from mailgate.config.settings import Secret

    cert, _, key = self_signed_rsa(tmp_path, "app", "mailgate app")
    fresh_idp.app_certificate_pem = cert.read_bytes()
    shared = oauth_dovecot.add_user()
    fresh_idp.app_mailbox = shared.username
    profile = microsoft(tmp_path, fresh_idp, ca, certificate_file=cert,
                        certificate_key=Secret(key.decode(), "test"))
    imap_login(imap_box(shared, oauth_dovecot, ca, profile))
    [grant] = fresh_idp.grants("client_credentials")
    assert "client_secret" not in grant.form
    assert grant.form["client_assertion_type"] == \
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    header = jwt.get_unverified_header(grant.form["client_assertion"])
    expected = base64.urlsafe_b64encode(bytes.fromhex(thumbprint(cert.read_bytes())))
    assert header["x5t"].rstrip("=") == expected.decode().rstrip("=")


def test_google_service_account_with_domain_wide_delegation(
        oauth_dovecot: DovecotServer, oauth_sink: OAuthSink, fresh_idp: IdP, ca: TestCA,
        tmp_path: Path) -> None:
    import jwt

    from mailgate.config.settings import Secret

    cert, _, key = self_signed_rsa(tmp_path, "sa", "service account")
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    public = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    fresh_idp.service_account_public_pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    user = oauth_dovecot.add_user()
    fresh_idp.delegated.add(user.username)
    key_json = json.dumps({"type": "service_account", "client_email":
                           fresh_idp.service_account_email, "private_key": key.decode(),
                           "private_key_id": "k1", "token_uri":
                           "https://oauth2.googleapis.com/token", "project_id": "p"})
    profile = OAuthProfile(name="gws", provider="google", token_dir=tmp_path / "oauth",
                           service_account=Secret(key_json, "test"),
                           scope="https://mail.google.com/", token_url=f"{fresh_idp.url}/token",
                           ca_file=ca.ca_file, timeout=10.0)
    imap_login(imap_box(user, oauth_dovecot, ca, profile, oauth_mechanism="xoauth2"))
    [grant] = fresh_idp.grants("urn:ietf:params:oauth:grant-type:jwt-bearer")
    claims = jwt.decode(grant.form["assertion"], options={"verify_signature": False})
    assert (claims["iss"], claims["sub"], claims["scope"]) == \
        (fresh_idp.service_account_email, user.username, "https://mail.google.com/")
    # Not delegated: Google's words, and where to fix it.
    other = oauth_dovecot.add_user()
    with pytest.raises(OAuthFailure, match="domain-wide delegation is not set up"):
        source_for(profile, other.username).token()


def test_token_command(oauth_dovecot: DovecotServer, fresh_idp: IdP, ca: TestCA,
                       tmp_path: Path) -> None:
    account = oauth_dovecot.add_user()
    token = fresh_idp._issue(account.username)["access_token"]
    script = tmp_path / "get-token"
    script.write_text(f"#!{sys.executable}\nimport os\n"
                      f"assert os.environ['MAILGATE_OAUTH_USER'] == {account.username!r}\n"
                      f"print({token!r})\n")
    script.chmod(0o755)
    profile = OAuthProfile(name="cmd", provider="command", token_dir=tmp_path,
                           command=(str(script),), timeout=10.0)
    imap_login(imap_box(account, oauth_dovecot, ca, profile))
    failing = dataclasses.replace(profile, command=("/bin/sh", "-c", "echo nope >&2; exit 3"))
    with pytest.raises(OAuthFailure, match=r"token_command '/bin/sh' exited with status 3 "
                                           r"\(nope\)"):
        source_for(failing, account.username).token()


def alerts(received: list[Received]) -> int:
    return sum(1 for r in received if r.rcpt_tos == ["ops@example.com"])


async def failures(daemon: Daemon, mailbox: str, at_least: int, timeout: float = 60) -> int:
    """Wait until MAILBOX's watcher has failed AT_LEAST times; how often it has."""
    watcher = next(w for w in daemon.watchers if w.config.name == mailbox)
    deadline = time.monotonic() + timeout
    while watcher.state.reconnects < at_least:
        assert time.monotonic() < deadline, watcher.state
        await asyncio.sleep(0.1)
    return watcher.state.reconnects


# --- the daemon: a revoked grant alerts the admin, the other mailbox goes on --------------

async def test_revoked_mailbox_alerts_once_and_the_other_keeps_working(
        oauth_dovecot: DovecotServer, fresh_idp: IdP, ca: TestCA, tmp_path: Path,
        smtp_sink: object) -> None:
    revoked, working, plain = (oauth_dovecot.add_user() for _ in range(3))
    state = tmp_path / "state"
    profile = generic(tmp_path, fresh_idp, ca, token_dir=state / "oauth")
    seed(profile, fresh_idp, revoked.username, expired=True)
    seed(profile, fresh_idp, working.username, expired=True)
    fresh_idp.revoke(revoked.username)
    (tmp_path / "plain.pw").write_text(plain.password)
    port = oauth_dovecot.tls_port
    boxes = [Mailbox(name, "127.0.0.1", user, port=port, tls="implicit",
                     poll_interval="1s", timeout=10, extra=auth)
             for name, user, auth in [("payroll", revoked.username, 'oauth = "corp"'),
                                      ("it", working.username, 'oauth = "corp"'),
                                      ("facilities", plain.username,
                                       'password_file = "plain.pw"')]]
    path = write_daemon_config(tmp_path / "mailgate.toml", sink=smtp_sink,  # type: ignore[arg-type]
                               state=state, templates=TEMPLATES, notify_team=False,
                               mailboxes=boxes, tables=f"""
[tls]
ca_file = "{ca.ca_file}"
[alerts]
admin = "ops@example.com"
[oauth.corp]
provider = "generic"
client_id = "{fresh_idp.client_id}"
token_url = "{fresh_idp.url}/token"
""")
    setup = load_setup(path)
    registry = metrics.Registry()
    metrics.install(registry)

    async def deliver(raw: bytes) -> None:  # to the mailbox that works
        await asyncio.to_thread(oauth_dovecot.append, working, raw)

    try:
        async with Daemon(setup.config, setup.directory) as daemon:
            [alert] = await smtp_sink.wait_for(1, timeout=20)  # type: ignore[attr-defined]
            assert alert.rcpt_tos == ["ops@example.com"]
            assert alert.message["Subject"] == "mailgate: mailbox payroll cannot be read"
            assert alert.message["From"] == "mailgate <payroll@example.com>"
            assert alert.message["Auto-Submitted"] == "auto-generated"
            body = alert.message.get_payload(decode=True).decode()
            assert "refused the refresh token of " + revoked.username in body
            assert "run `mailgate oauth login` for this mailbox again" in body
            # Both other mailboxes go on: a request to each is acknowledged.
            await asyncio.to_thread(oauth_dovecot.append, working, mail())
            await asyncio.to_thread(oauth_dovecot.append, plain, mail(
                "Light broken", message_id="<fac-1@example.com>",
                to="facilities@example.com"))
            received = await smtp_sink.wait_for(3, timeout=20)  # type: ignore[attr-defined]
            subjects = sorted(r.message["Subject"] for r in received[1:])
            assert subjects == ["[FAC-1001] Re: Light broken", "[IT-1001] Re: Laptop won't boot"]
            assert daemon.store is not None
            states = {m["name"]: m for m in await daemon.store.mailbox_states()}
            assert states["payroll"]["state"] == "error"
            assert "invalid_grant" in states["payroll"]["last_error"]
            text = registry.exposition()
            assert 'mailgate_mailbox_state{mailbox="payroll",state="error"} 1' in text
            assert 'mailgate_mailbox_state{mailbox="it",state="error"} 0' in text
            # It keeps failing (retries with backoff): no second alert within the day.
            failed = await failures(daemon, "payroll", 1)
            await failures(daemon, "payroll", failed + 2)  # reported, and tried once more
            assert alerts(await smtp_sink.before_marker(deliver)) == 1  # type: ignore[attr-defined]
        # A restart does not alert again either: the alert is remembered on disk.
        async with Daemon(setup.config, setup.directory) as restarted:
            await failures(restarted, "payroll", 2)
            assert alerts(await smtp_sink.before_marker(deliver)) == 1  # type: ignore[attr-defined]
        # The admin logs in again (a new refresh token): "works again", once.
        seed(profile, fresh_idp, revoked.username, expired=True)
        async with Daemon(setup.config, setup.directory):
            # After the alert, two acknowledgements and the two markers' acknowledgements.
            received = await smtp_sink.wait_for(6, timeout=20)  # type: ignore[attr-defined]
        assert received[5].message["Subject"] == "mailgate: mailbox payroll works again"
    finally:
        metrics.install(metrics.Metrics())


async def test_check_connect_explains_an_oauth_failure(
        oauth_dovecot: DovecotServer, fresh_idp: IdP, ca: TestCA, tmp_path: Path) -> None:
    account = oauth_dovecot.add_user()
    path = tmp_path / "mailgate.toml"
    path.write_text(f"""
[state]
dir = "state"
[directory]
path = "{EXAMPLE_DIRECTORY}"
[outbox]
dir = "out"
[tls]
ca_file = "{ca.ca_file}"
[oauth.corp]
provider = "generic"
client_id = "{fresh_idp.client_id}"
token_url = "{fresh_idp.url}/token"
[[mailbox]]
name = "it"
department = "it"
host = "127.0.0.1"
port = {oauth_dovecot.tls_port}
tls = "implicit"
username = "{account.username}"
oauth = "corp"
""")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailgate", "--config", str(path), "check", "--connect",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out = (await process.communicate())[0].decode()
    assert process.returncode == 1, out
    assert (f"  mailbox 'it': FAILED: no refresh token stored for {account.username} "
            f"([oauth.corp]): run `mailgate oauth login MAILBOX` once") in out, out
    seed(load_config(path).mailboxes[0].oauth, fresh_idp,  # type: ignore[arg-type]
         account.username, expired=True)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailgate", "--config", str(path), "check", "--connect",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out = (await process.communicate())[0].decode()
    assert process.returncode == 0, out
    assert f"  mailbox 'it': OK: {account.username} at 127.0.0.1:" in out
    assert "  smtp: SKIPPED: not used: outgoing mail is written to [outbox] dir" in out


def test_secrets_never_reach_the_log_or_repr(tmp_path: Path) -> None:
    from mailgate.config.settings import Secret

    profile = OAuthProfile(name="m", provider="microsoft", token_dir=tmp_path,
                           client_secret=Secret("very-secret", "env X"),
                           refresh_margin=timedelta(minutes=5))
    assert "very-secret" not in repr(profile)
