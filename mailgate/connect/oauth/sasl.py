"""SASL XOAUTH2 and OAUTHBEARER (RFC 7628) for IMAP (imapclient) and SMTP (smtplib).

XOAUTH2 is what Microsoft 365 and Gmail document; OAUTHBEARER is the standard and is used
where the server offers it (mechanism "auto"). On a refusal both mechanisms send an error
challenge (a JSON status); the client must answer it with an empty line, after which the
server says NO/535 -- sending the token again, as a naive callback would, is a protocol
error on some servers.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterable

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from mailgate.connect.oauth.sources import TokenSource


def xoauth2(user: str, token: str) -> str:
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def oauthbearer(user: str, token: str, host: str = "", port: int = 0) -> str:
    # The gs2 header's authzid escapes ',' and '=' (RFC 5801 section 4).
    authzid = user.replace("=", "=3D").replace(",", "=2C")
    parts = [f"n,a={authzid},"]
    if host:
        parts.append(f"host={host}")
    if port:
        parts.append(f"port={port}")
    parts.append(f"auth=Bearer {token}")
    return "\x01".join(parts) + "\x01\x01"


def choose(setting: str, offered: Iterable[str]) -> str:
    """The mechanism to use: the setting, or for "auto" OAUTHBEARER when offered, else
    XOAUTH2 (Microsoft 365 offers only that)."""
    if setting != "auto":
        return setting.upper()
    return "OAUTHBEARER" if "OAUTHBEARER" in {m.upper() for m in offered} else "XOAUTH2"


def _responder(message: str) -> Callable[[bytes | None], str]:
    sent = False

    def respond(challenge: bytes | None = None) -> str:
        nonlocal sent
        if sent:  # the server's error challenge: answer empty, it then says NO
            return ""
        sent = True
        return message

    return respond


def _message(mech: str, user: str, token: str, host: str, port: int) -> str:
    return oauthbearer(user, token, host, port) if mech == "OAUTHBEARER" \
        else xoauth2(user, token)


# --- IMAP ----------------------------------------------------------------------------

def imap_offered(client: IMAPClient) -> list[str]:
    return [c.decode()[5:] for c in client.capabilities() if c.upper().startswith(b"AUTH=")]


def imap_login(client: IMAPClient, setting: str, user: str, source: TokenSource,
               host: str, port: int) -> str:
    """AUTHENTICATE with a token; once more with a fresh one if the server refuses the
    first (revoked early, or cached past a server-side change). Returns the mechanism."""
    mech = choose(setting, imap_offered(client))
    try:
        _imap_auth(client, mech, user, source.token(), host, port)
    except LoginError:
        _imap_auth(client, mech, user, source.token(force=True), host, port)
    return mech


def _imap_auth(client: IMAPClient, mech: str, user: str, token: str, host: str,
               port: int) -> None:
    try:
        typ, data = client._imap.authenticate(mech, _responder(
            _message(mech, user, token, host, port)))
    except IMAPClientError as exc:
        raise LoginError(str(exc)) from None
    if typ != "OK":
        raise LoginError(str(data))


# --- SMTP ----------------------------------------------------------------------------

def smtp_offered(client: smtplib.SMTP) -> list[str]:
    return client.esmtp_features.get("auth", "").upper().split()


def smtp_login(client: smtplib.SMTP, setting: str, user: str, source: TokenSource,
               host: str, port: int) -> str:
    if not client.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError("the SMTP server offers no AUTH after EHLO")
    mech = choose(setting, smtp_offered(client))
    try:
        _smtp_auth(client, mech, user, source.token(), host, port)
    except smtplib.SMTPAuthenticationError:
        _smtp_auth(client, mech, user, source.token(force=True), host, port)
    return mech


def _smtp_auth(client: smtplib.SMTP, mech: str, user: str, token: str, host: str,
               port: int) -> None:
    respond = _responder(_message(mech, user, token, host, port))
    # smtplib calls the object with no argument for the initial response, then with
    # each challenge; it base64-encodes what we return.
    client.auth(mech, respond, initial_response_ok=True)
