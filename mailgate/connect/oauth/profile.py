"""[oauth.NAME]: how mailboxes and [smtp] get OAuth2 access tokens. Parsing only, no I/O
beyond reading the secrets the way passwords are read (the caller's reader does that).

A profile is shared: one Entra app (app-only) or one Google service account serves every
mailbox of the organisation; the mailbox's username says whose mail it is.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from mailgate.config.readers import Table

if TYPE_CHECKING:
    from mailgate.config.settings import Secret

PROVIDERS = ("generic", "microsoft", "google", "command")
MECHANISMS = ("auto", "xoauth2", "oauthbearer")
MICROSOFT_AUTHORITY = "https://login.microsoftonline.com"
MICROSOFT_SCOPE = "https://outlook.office365.com/.default"  # IMAP.AccessAsApp, SMTP.SendAsApp
GOOGLE_SCOPE = "https://mail.google.com/"  # the only scope Gmail's IMAP and SMTP accept
DEFAULT_REDIRECT = "http://localhost"  # a pasted authorization code comes back here

SecretReader = Callable[[Table, str, str], "Secret | None"]  # (table, required?, prefix)


@dataclass(frozen=True)
class OAuthProfile:
    name: str
    provider: str  # generic | microsoft | google | command
    token_dir: Path  # <state>/oauth: refresh tokens of the generic flow
    client_id: str | None = None
    client_secret: Secret | None = None
    scope: str = ""
    token_url: str | None = None  # generic; google: instead of the key file's token_uri
    device_url: str | None = None  # generic: RFC 8628 device authorization endpoint
    authorize_url: str | None = None  # generic: for a pasted authorization code
    redirect_uri: str = DEFAULT_REDIRECT
    tenant: str | None = None  # microsoft
    authority: str | None = None  # microsoft: default https://login.microsoftonline.com/TENANT
    certificate_file: Path | None = None  # microsoft: the app's certificate (public, PEM)
    certificate_key: Secret | None = None  # microsoft: its private key (PEM)
    service_account: Secret | None = None  # google: the service account's JSON key
    command: tuple[str, ...] = ()  # command: prints an access token on stdout
    ca_file: Path | None = None  # CA for the token endpoint, besides the system store
    timeout: float = 30.0
    refresh_margin: timedelta = timedelta(minutes=5)  # refresh this long before expiry

    @property
    def uses_refresh_token(self) -> bool:
        """Whether `mailgate oauth login` must fetch a refresh token first."""
        return self.provider == "generic"


def parse_profiles(table: Table, token_dir: Path, ca_default: Path | None,
                   read_secret: SecretReader, path_of: Callable[[str], Path]
                   ) -> dict[str, OAuthProfile]:
    """Every [oauth.NAME] table; problems go to the table's list."""
    found = {}
    for name in list(table.data):
        sub = table.table(name)
        if sub is not None:
            found[name] = _profile(sub, name, token_dir, ca_default, read_secret, path_of)
    return found


def _profile(t: Table, name: str, token_dir: Path, ca_default: Path | None,
             read_secret: SecretReader, path_of: Callable[[str], Path]) -> OAuthProfile:
    provider = t.choice("provider", PROVIDERS)
    ca = t.str("ca_file", None)
    ca_file = path_of(ca) if ca else ca_default
    if ca:
        from mailgate.connect.tls import ca_file_problem

        if (problem := ca_file_problem(ca_file)) is not None:  # type: ignore[arg-type]
            t.problem("ca_file", problem)
    common = dict(name=name, provider=provider or "generic", token_dir=token_dir,
                  ca_file=ca_file, timeout=t.float("timeout", 30.0),
                  refresh_margin=t.duration("refresh_margin", timedelta(minutes=5)))
    readers = {"generic": _generic, "microsoft": _microsoft, "google": _google,
               "command": _command}
    specific = readers[provider](t, read_secret, path_of) if provider else {}
    t.reject_unknown()
    return OAuthProfile(**common, **specific)  # type: ignore[arg-type]


def _generic(t: Table, read_secret: SecretReader, path_of: Callable[[str], Path]) -> dict:
    values = dict(client_id=t.str("client_id"), token_url=_url(t, "token_url"),
                  client_secret=read_secret(t, "optional", "client_secret"),
                  scope=t.str("scope", ""), device_url=_url(t, "device_url", None),
                  authorize_url=_url(t, "authorize_url", None),
                  redirect_uri=t.str("redirect_uri", DEFAULT_REDIRECT))
    return values


def _microsoft(t: Table, read_secret: SecretReader, path_of: Callable[[str], Path]) -> dict:
    tenant = t.str("tenant")
    certificate = t.str("certificate_file", None)
    secret = read_secret(t, "optional", "client_secret")
    key = read_secret(t, "optional", "certificate_key")
    has_secret = any(f"client_secret{s}" in t.data for s in ("_file", "_env", "_credential"))
    has_key = any(f"certificate_key{s}" in t.data for s in ("_file", "_env", "_credential"))
    if has_secret == (bool(certificate) or has_key):
        t.problem("client_secret_file", "set either a client secret (client_secret_file, "
                  "_env or _credential) or a certificate (certificate_file and "
                  "certificate_key_file, _env or _credential), not both, not neither")
    elif certificate and not has_key:
        t.problem("certificate_key_file", "missing; certificate_file needs its private key")
    elif has_key and not certificate:
        t.problem("certificate_file", "missing; the app's certificate (PEM) that Entra ID "
                  "holds, to name it by its thumbprint")
    cert_path = path_of(certificate) if certificate else None
    if cert_path is not None and key is not None:
        from mailgate.connect.oauth.sources import certificate_problem

        if (problem := certificate_problem(cert_path, key)) is not None:
            t.problem("certificate_file", problem)
    authority = _url(t, "authority", None) or (f"{MICROSOFT_AUTHORITY}/{tenant}"
                                               if tenant else None)
    return dict(client_id=t.str("client_id"), tenant=tenant, authority=authority,
                client_secret=secret, certificate_file=cert_path, certificate_key=key,
                scope=t.str("scope", MICROSOFT_SCOPE))


def _google(t: Table, read_secret: SecretReader, path_of: Callable[[str], Path]) -> dict:
    key = read_secret(t, "required", "service_account")
    if key is not None and (problem := service_account_problem(key.reveal())) is not None:
        t.problem("service_account_file", problem)
    return dict(service_account=key, scope=t.str("scope", GOOGLE_SCOPE),
                token_url=_url(t, "token_url", None))


def _command(t: Table, read_secret: SecretReader, path_of: Callable[[str], Path]) -> dict:
    value = t.data.get("command")
    t._read.add("command")
    if isinstance(value, str):
        args = tuple(shlex.split(value))
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        args = tuple(value)
    else:
        t.problem("command", 'missing; a program that prints an access token, e.g. '
                  '["/usr/local/bin/get-token", "it-help@example.com"]')
        args = ()
    if not args and isinstance(value, str | list):
        t.problem("command", "empty; name the program to run")
    return dict(command=args)


def _url(t: Table, key: str, default: object = ...) -> str | None:
    value = t.str(key) if default is ... else t.str(key, default)
    if value and not value.startswith(("https://", "http://")):
        t.problem(key, f"expected an https:// URL, got {value!r}")
    return value


def service_account_problem(text: str) -> str | None:
    """Why a Google service account key cannot be used; its content is never quoted."""
    try:
        info = json.loads(text)
    except ValueError:
        return "not JSON; download the service account's key as JSON in the Google Cloud " \
               "console (IAM > Service accounts > Keys)"
    if not isinstance(info, dict) or info.get("type") != "service_account":
        return 'not a service account key (its "type" is not "service_account")'
    missing = [k for k in ("client_email", "private_key", "token_uri") if not info.get(k)]
    if missing:
        return f"the key lacks {', '.join(missing)}"
    return None
