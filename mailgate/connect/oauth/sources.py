"""Where access tokens come from. Every source answers `token(force=False) -> str`,
blocking (called in a mailbox's or the SMTP transport's worker thread), refreshing before
expiry; `force` throws a cached token away after a server refused it. Failures are
OAuthFailure in words: transient ones (endpoint unreachable, 5xx) are retried like a
network problem, the others (revoked grant, wrong secret) put the mailbox in error.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import subprocess
import threading
import time
from dataclasses import fields
from pathlib import Path
from typing import Protocol

from mailgate.connect.diagnose import OAuthFailure, server_text
from mailgate.connect.oauth.http import GoogleRequest, Http, MsalHttpClient, Reply
from mailgate.connect.oauth.profile import OAuthProfile
from mailgate.connect.oauth.tokens import TokenFile, after_refresh, token_path
from mailgate.service.log import get_logger

log = get_logger("mailgate.connect.oauth")
COMMAND_OUTPUT_LIMIT = 64 * 1024


class TokenSource(Protocol):
    def token(self, force: bool = False) -> str: ...


# --- the generic flow: a stored refresh token ---------------------------------------------

class RefreshTokenSource:
    """RFC 6749 section 6: trade the stored refresh token for an access token."""

    def __init__(self, profile: OAuthProfile, username: str) -> None:
        self.profile = profile
        self.username = username
        self.file = TokenFile(token_path(profile.token_dir, profile.name, username))
        self.http = Http(profile.ca_file, profile.timeout)

    def token(self, force: bool = False) -> str:
        with self.file.locked():
            try:
                tokens = self.file.read()
            except OSError as exc:
                raise OAuthFailure(str(exc)) from None
            if tokens is None:
                raise OAuthFailure(
                    f"no refresh token stored for {self.username} ([oauth.{self.profile.name}]"
                    f"): run `mailgate oauth login MAILBOX` once (MAILBOX: the [[mailbox]] "
                    f"name, or smtp)")
            now = time.time()
            margin = self.profile.refresh_margin.total_seconds()
            if not force and tokens.valid_at(now + margin):
                return tokens.access_token or ""
            answer = self._refresh(tokens.refresh_token)
            new = after_refresh(tokens, answer, now)
            # Stored before the new access token is used: a rotated refresh token must
            # survive whatever happens next (a crash, a kill, a failed login).
            self.file.write(new)
        if new.rotated_at == now:
            log.info("oauth.refresh_token_rotated", profile=self.profile.name,
                     user=self.username)
        log.info("oauth.refreshed", profile=self.profile.name, user=self.username,
                 expires_in=round(new.expires_at - now))
        return new.access_token or ""

    def _refresh(self, refresh_token: str) -> dict:
        p = self.profile
        fields_ = {"grant_type": "refresh_token", "refresh_token": refresh_token,
                   "client_id": p.client_id or ""}
        if p.client_secret is not None:
            fields_["client_secret"] = p.client_secret.reveal()
        if p.scope:
            fields_["scope"] = p.scope
        reply = self.http.post_form(p.token_url or "", fields_)
        answer = reply.json()
        if reply.status != 200 or not answer.get("access_token"):
            raise token_failure(reply, p, self.username)
        return answer


def token_failure(reply: Reply, profile: OAuthProfile, username: str) -> OAuthFailure:
    """A token endpoint's refusal (RFC 6749 section 5.2) in words."""
    data = reply.json()
    error = str(data.get("error") or f"HTTP {reply.status}")
    said = server_text(data.get("error_description") or "")
    detail = f"{error}: {said}" if said else error
    where = f"[oauth.{profile.name}]"
    if reply.status >= 500 or reply.status == 429:
        return OAuthFailure(f"the token endpoint is unavailable ({detail}); mailgate retries",
                            transient=True)
    hint = _aadsts_hint(said)
    if hint:
        return OAuthFailure(f"Entra ID refused the token request ({detail}): {hint}")
    if error == "invalid_grant":
        return OAuthFailure(
            f"the token endpoint refused the refresh token of {username} ({detail}): it was "
            f"revoked, expired or replaced; run `mailgate oauth login` for this mailbox again")
    if error == "invalid_client":
        return OAuthFailure(f"the token endpoint refused client_id {profile.client_id!r} or "
                            f"its secret ({detail}): check client_id and client_secret_file "
                            f"in {where}")
    if error in ("invalid_scope", "unauthorized_client"):
        return OAuthFailure(f"the token endpoint refused the request ({detail}): check scope "
                            f"in {where} and what the app may ask for")
    return OAuthFailure(f"the token endpoint refused the request ({detail}); check {where}")


# Entra ID's codes (AADSTS...) that a sysadmin meets when setting up app-only access.
AADSTS = {
    "700016": "client_id is not an app of this tenant: check client_id and tenant",
    "90002": "the tenant does not exist: check tenant (the directory ID or "
             "contoso.onmicrosoft.com)",
    "7000215": "the client secret is wrong: use the secret's Value, not its ID",
    "7000222": "the client secret has expired: make a new one in Entra admin center > App "
               "registrations > Certificates & secrets, and store it",
    "700027": "the certificate is not registered with the app, or the key does not match: "
              "upload certificate_file under Certificates & secrets",
    "1002012": "the scope is wrong: app-only access needs "
               "https://outlook.office365.com/.default",
    "70011": "the scope is wrong: app-only access needs https://outlook.office365.com/.default",
    "50126": "the user name or password is wrong",
    "700082": "the refresh token has expired from inactivity: run `mailgate oauth login` "
              "again",
    "50173": "the refresh token was revoked (password change or admin action): run "
             "`mailgate oauth login` again",
}


def _aadsts_hint(text: str) -> str | None:
    found = re.search(r"AADSTS(\d+)", text)
    return AADSTS.get(found.group(1)) if found else None


# --- Microsoft Entra ID, app-only (client credentials) via msal ---------------------------

class MicrosoftAppSource:
    """One token for the app, good for every mailbox its service principal may open."""

    def __init__(self, profile: OAuthProfile) -> None:
        self.profile = profile
        self._lock = threading.Lock()
        self._app: object | None = None

    def token(self, force: bool = False) -> str:
        with self._lock:
            app = self._client()
            if force:
                app.remove_tokens_for_client()  # type: ignore[attr-defined]
            result = app.acquire_token_for_client(  # type: ignore[attr-defined]
                scopes=[self.profile.scope])
        if "access_token" in result:
            return str(result["access_token"])
        return self._failed(result)

    def _failed(self, result: dict) -> str:
        error = str(result.get("error") or "error")
        said = server_text(str(result.get("error_description") or "").split("\n")[0])
        hint = _aadsts_hint(said) or "check tenant, client_id and the secret or certificate " \
                                     f"in [oauth.{self.profile.name}]"
        raise OAuthFailure(f"Entra ID refused the app's token request ({error}: {said}): "
                           f"{hint}", transient=error in ("temporarily_unavailable",
                                                          "server_error"))

    def _client(self) -> object:
        if self._app is not None:
            return self._app
        import msal

        p = self.profile
        known = (p.authority or "").startswith("https://login.microsoftonline.com/")
        try:
            self._app = msal.ConfidentialClientApplication(
                p.client_id, client_credential=self._credential(), authority=p.authority,
                http_client=MsalHttpClient(Http(p.ca_file, p.timeout)),
                # Another authority (a national cloud, a test stand-in) is taken as given
                # instead of being looked up at login.microsoftonline.com.
                instance_discovery=None if known else False)
        except ValueError as exc:
            raise OAuthFailure(f"Entra ID authority {p.authority} did not answer as expected "
                               f"({server_text(exc)}): check tenant in [oauth.{p.name}]") \
                from None
        return self._app

    def _credential(self) -> str | dict:
        p = self.profile
        if p.client_secret is not None:
            return p.client_secret.reveal()
        assert p.certificate_file is not None and p.certificate_key is not None
        cert = p.certificate_file.read_bytes()
        return {"private_key": p.certificate_key.reveal(), "thumbprint": thumbprint(cert),
                "public_certificate": cert.decode("ascii")}


def thumbprint(pem: bytes) -> str:
    """SHA-1 of the certificate's DER: how Entra ID names an app's certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha1(der).hexdigest().upper()  # SHA-1: the x5t the protocol names


def certificate_problem(cert_path: Path, key: object) -> str | None:
    """Why certificate_file and certificate_key cannot sign for the app; None if they can."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except OSError as exc:
        return f"cannot read {cert_path}: {exc.strerror}"
    except ValueError:
        return f"{cert_path} is not a PEM certificate"
    try:
        private = serialization.load_pem_private_key(
            key.reveal().encode(), password=None)  # type: ignore[attr-defined]
    except (ValueError, TypeError):
        return "certificate_key is not an unencrypted PEM private key"
    public = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(*public) != cert.public_key().public_bytes(*public):
        return f"the private key does not belong to {cert_path}"
    return None


# --- Google Workspace: a service account with domain-wide delegation ----------------------

class GoogleServiceAccountSource:
    """A token for one user (the mailbox's username), signed by the service account."""

    def __init__(self, profile: OAuthProfile, username: str) -> None:
        self.profile = profile
        self.username = username
        self._lock = threading.Lock()
        self._credentials: object | None = None
        self.http = Http(profile.ca_file, profile.timeout)

    def token(self, force: bool = False) -> str:
        from google.auth import exceptions

        with self._lock:
            creds = self._creds()
            margin = self.profile.refresh_margin
            expiry = creds.expiry  # type: ignore[attr-defined]
            now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
            if force or not creds.token or expiry is None or expiry - margin <= now:  # type: ignore[attr-defined]
                try:
                    creds.refresh(GoogleRequest(self.http))  # type: ignore[attr-defined]
                except exceptions.TransportError as exc:
                    raise OAuthFailure(server_text(exc), transient=True) from None
                except exceptions.RefreshError as exc:
                    raise self._refused(exc) from None
                log.info("oauth.refreshed", profile=self.profile.name, user=self.username)
            return str(creds.token)  # type: ignore[attr-defined]

    def _creds(self) -> object:
        if self._credentials is None:
            import json

            from google.oauth2 import service_account

            assert self.profile.service_account is not None
            info = json.loads(self.profile.service_account.reveal())
            if self.profile.token_url:
                info["token_uri"] = self.profile.token_url
            self._credentials = service_account.Credentials.from_service_account_info(
                info, scopes=[self.profile.scope], subject=self.username)
        return self._credentials

    def _refused(self, exc: Exception) -> OAuthFailure:
        said = server_text(exc.args[0] if exc.args else exc)
        if "unauthorized_client" in said:
            hint = ("domain-wide delegation is not set up for this service account's client "
                    "ID with the scope https://mail.google.com/ (Admin console > Security > "
                    "Access and data control > API controls > Domain-wide delegation)")
        elif "invalid_grant" in said:
            hint = (f"Google does not accept {self.username} as a user to act for (no such "
                    f"user in the Workspace, or suspended), or the key was deleted, or this "
                    f"host's clock is wrong")
        else:
            hint = f"check the service account key in [oauth.{self.profile.name}]"
        return OAuthFailure(f"Google refused the service account's token request ({said}): "
                            f"{hint}", transient="temporarily" in said)


# --- token_command: like isync's PassCmd ----------------------------------------------

class CommandSource:
    """Runs the command (no shell) and takes the first line it prints as the token."""

    def __init__(self, profile: OAuthProfile, username: str) -> None:
        self.profile = profile
        self.username = username

    def token(self, force: bool = False) -> str:
        args = list(self.profile.command)
        env = {**os.environ, "MAILGATE_OAUTH_USER": self.username}
        try:
            done = subprocess.run(args, capture_output=True, timeout=self.profile.timeout,
                                  env=env, stdin=subprocess.DEVNULL, check=False)
        except FileNotFoundError:
            raise OAuthFailure(f"token_command {args[0]!r} not found: set command in "
                               f"[oauth.{self.profile.name}] to a program path") from None
        except PermissionError:
            raise OAuthFailure(f"token_command {args[0]!r} is not executable "
                               f"(chmod +x)") from None
        except subprocess.TimeoutExpired:
            raise OAuthFailure(f"token_command {args[0]!r} did not finish within "
                               f"{self.profile.timeout:g} s", transient=True) from None
        if done.returncode != 0:
            said = server_text(done.stderr[:COMMAND_OUTPUT_LIMIT]) or "no message"
            raise OAuthFailure(f"token_command {args[0]!r} exited with status "
                               f"{done.returncode} ({said})")
        lines = done.stdout[:COMMAND_OUTPUT_LIMIT].decode("utf-8", "replace").splitlines()
        token = lines[0].strip() if lines else ""
        if not token:
            raise OAuthFailure(f"token_command {args[0]!r} printed no token on stdout")
        return token


# --- one source per profile and user, shared by the daemon's threads ----------------------

_SOURCES: dict[tuple, TokenSource] = {}
_SOURCES_LOCK = threading.Lock()


def source_for(profile: OAuthProfile, username: str) -> TokenSource:
    """The source for this profile and user. Shared in the process so that an Entra app
    asks once for all mailboxes and two users of one refresh token never race; keyed by
    the profile's whole content, so a reload with new settings gets a new source."""
    key = (_fingerprint(profile), "" if profile.provider == "microsoft" else username)
    with _SOURCES_LOCK:
        found = _SOURCES.get(key)
        if found is None:
            found = _SOURCES[key] = _make(profile, username)
        return found


def _make(profile: OAuthProfile, username: str) -> TokenSource:
    if profile.provider == "microsoft":
        return MicrosoftAppSource(profile)
    if profile.provider == "google":
        return GoogleServiceAccountSource(profile, username)
    if profile.provider == "command":
        return CommandSource(profile, username)
    return RefreshTokenSource(profile, username)


def _fingerprint(profile: OAuthProfile) -> tuple:
    values = []
    for f in fields(profile):
        value = getattr(profile, f.name)
        reveal = getattr(value, "reveal", None)
        values.append(hashlib.sha256(reveal().encode()).hexdigest() if reveal else value)
    return tuple(values)
