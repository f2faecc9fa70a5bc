"""What a failed connection means, in words a sysadmin can act on.

One pure function turns the exception an IMAP or SMTP connection raised into a sentence
that says what went wrong and which setting to change. The watcher records it (so
`mailgate status` shows it), `mailgate check --connect` prints it, and the alert mail
quotes it: one wording everywhere. The kind decides what happens next: a network problem
may pass by itself (retry quietly for a while), the others need someone (error state,
alert at once).
"""

from __future__ import annotations

import imaplib
import re
import smtplib
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from mailgate.errors import MailgateError

# Kinds. NETWORK and DATABASE may heal by themselves; the others need a change of settings
# or on a server.
NETWORK = "network"
DATABASE = "database"  # mailgate's own store failed as retrying can cure (storage/errors.py)
TLS = "tls"
LOGIN = "login"
FOLDER = "folder"
OAUTH = "oauth"
OTHER = "other"

MAX_SERVER_TEXT = 160  # a server's or token endpoint's own words, cut to this


@dataclass(frozen=True)
class Endpoint:
    """What was being reached, for the wording: 'mailbox "it"', host, port, settings."""

    what: str  # 'mailbox "it"' or "[smtp]"
    table: str  # where its keys are: '[[mailbox]] "it"' or "[smtp]"
    host: str
    port: int
    tls: str  # none | starttls | implicit
    timeout: float
    username: str | None = None
    ca_file: Path | None = None
    oauth: str | None = None  # provider of the OAuth2 profile in use, if any
    folder: str | None = None


@dataclass(frozen=True)
class Diagnosis:
    kind: str
    text: str

    @property
    def needs_admin(self) -> bool:
        """True when retrying alone will not fix it."""
        return self.kind not in (NETWORK, DATABASE)


class FolderMissing(imaplib.IMAP4.error):
    """SELECT failed: the configured folder does not exist (or may not be read)."""

    def __init__(self, folder: str, server_text: str, existing: tuple[str, ...] = ()) -> None:
        super().__init__(f"cannot select {folder!r}: {server_text}")
        self.folder = folder
        self.server_text = server_text
        self.existing = existing


class StartTlsMissing(ssl.SSLError):
    """The server does not offer STARTTLS although tls = "starttls": never fall back."""


class OAuthFailure(MailgateError):
    """Getting an OAuth2 access token failed; the text is already in words.

    `transient` failures (token endpoint unreachable, 5xx) are retried like network
    problems; the others (refresh token revoked, client secret wrong) need an admin.
    """

    def __init__(self, text: str, transient: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.transient = transient


def explain(exc: BaseException, ep: Endpoint) -> Diagnosis:
    """The diagnosis of one failure; never raises."""
    for kinds, explainer in _EXPLAINERS:
        if isinstance(exc, kinds):
            found = explainer(exc, ep)
            if found is not None:
                return found
    return Diagnosis(OTHER, f"{ep.host}:{ep.port}: {type(exc).__name__}: {server_text(exc)}")


def _oauth(exc: BaseException, ep: Endpoint) -> Diagnosis:
    assert isinstance(exc, OAuthFailure)
    return Diagnosis(NETWORK if exc.transient else OAUTH, exc.text)


def _starttls(exc: BaseException, ep: Endpoint) -> Diagnosis:
    return Diagnosis(TLS, f"{ep.host}:{ep.port} does not offer STARTTLS: mailgate never "
                          f"logs in without TLS; enable STARTTLS on the server, or use "
                          f'tls = "implicit" with its TLS port (993 for IMAP, 465 for SMTP) in '
                          f"{ep.table} (a server that stopped offering it can also mean "
                          f"someone is tampering with the connection)")


def _certificate(exc: BaseException, ep: Endpoint) -> Diagnosis:
    assert isinstance(exc, ssl.SSLCertVerificationError)
    code, detail = exc.verify_code, exc.verify_message or exc.reason or str(exc)
    where = f"{ep.host}:{ep.port}"
    if code in (2, 18, 19, 20, 21):  # issuer unknown, self-signed (in chain), no issuer
        if ep.ca_file is not None:
            text = (f"the server's certificate at {where} is signed by a CA this host does "
                    f"not trust, not even with ca_file = \"{ep.ca_file}\" ({detail}): is that "
                    f"the CA that signed the server's certificate (and its intermediates)?")
        else:
            text = (f"the server's certificate at {where} is signed by a CA this host does "
                    f"not trust ({detail}): set ca_file = \"/path/to/your-ca.pem\" in "
                    f"{ep.table} (or [tls] ca_file for every connection)")
    elif code == 10:
        text = (f"the server's certificate at {where} has expired ({detail}): renew it on the "
                f"server")
    elif code == 9:
        text = (f"the server's certificate at {where} is not valid yet ({detail}): check this "
                f"host's clock (timedatectl) and the server's")
    elif code in (62, 64):  # host name, IP address mismatch
        text = (f"the server's certificate is not valid for the name {ep.host} ({detail}): set "
                f"host in {ep.table} to a name the certificate carries")
    elif code == 23:
        text = f"the server's certificate at {where} has been revoked ({detail})"
    else:
        text = f"the server's certificate at {where} was refused: {detail}"
    return Diagnosis(TLS, text)


def _ssl(exc: BaseException, ep: Endpoint) -> Diagnosis:
    assert isinstance(exc, ssl.SSLError)
    reason = (exc.reason or "").upper()
    where = f"{ep.host}:{ep.port}"
    if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST",
                  "PACKET_LENGTH_TOO_LONG") and ep.tls == "implicit":
        return Diagnosis(TLS, f"{where} did not answer with TLS: this port probably expects "
                              f'plain text or STARTTLS; in {ep.table} use tls = "starttls" '
                              f"(ports 143/587) or the implicit-TLS port (993/465)")
    if "UNSUPPORTED_PROTOCOL" in reason or "VERSION" in reason:
        return Diagnosis(TLS, f"{where} offers only TLS versions this host refuses ({exc}); "
                              f"mailgate needs TLS 1.2 or later: update the server")
    if isinstance(exc, ssl.SSLEOFError) or "EOF" in reason:
        return Diagnosis(NETWORK, f"{where} closed the connection during the TLS handshake")
    return Diagnosis(TLS, f"TLS with {where} failed: {exc.reason or exc}")


def _login(exc: BaseException, ep: Endpoint) -> Diagnosis:
    said = server_text(exc)
    user = ep.username or "(no username)"
    if ep.oauth:
        hint = OAUTH_LOGIN_HINTS.get(ep.oauth, "check that the token's scope covers this "
                                               "mailbox")
        return Diagnosis(LOGIN, f"{ep.host}:{ep.port} refused the OAuth2 access token for "
                                f"{user} ({said}): {hint}")
    return Diagnosis(LOGIN, f"{ep.host}:{ep.port} refused the login for {user} ({said}): "
                            f"the user name or password is not right, or the account may "
                            f"not use IMAP/SMTP; check username and the password setting in "
                            f"{ep.table}")


def _folder(exc: BaseException, ep: Endpoint) -> Diagnosis:
    assert isinstance(exc, FolderMissing)
    existing = f" (existing: {', '.join(exc.existing[:12])})" if exc.existing else ""
    return Diagnosis(FOLDER, f"folder {exc.folder!r} cannot be opened for "
                             f"{ep.username or 'this user'}: {exc.server_text}; set folder in "
                             f"{ep.table} to an existing folder{existing}")


def _imap_protocol(exc: BaseException, ep: Endpoint) -> Diagnosis | None:
    text = str(exc)
    if "STARTTLS" in text.upper() and "NOT SUPPORTED" in text.upper():
        return _starttls(exc, ep)
    if isinstance(exc, imaplib.IMAP4.abort):
        return Diagnosis(NETWORK, f"{ep.host}:{ep.port} dropped the connection "
                                  f"({server_text(exc)})")
    return None


def _smtp_auth(exc: BaseException, ep: Endpoint) -> Diagnosis:
    return _login(exc, ep)


def _smtp_other(exc: BaseException, ep: Endpoint) -> Diagnosis | None:
    if isinstance(exc, smtplib.SMTPNotSupportedError) and "STARTTLS" in str(exc).upper():
        return _starttls(exc, ep)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return Diagnosis(LOGIN, f"{ep.host}:{ep.port}: {server_text(exc)}; remove username "
                                f"from {ep.table} if the server needs no login")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return Diagnosis(NETWORK, f"{ep.host}:{ep.port} closed the connection "
                                  f"({server_text(exc)})")
    if isinstance(exc, smtplib.SMTPResponseException):
        return Diagnosis(NETWORK if exc.smtp_code < 500 else OTHER,
                         f"{ep.host}:{ep.port} answered {exc.smtp_code} "
                         f"{server_text(exc.smtp_error)}")
    return None


def _refused(exc: BaseException, ep: Endpoint) -> Diagnosis:
    return Diagnosis(NETWORK, f"connection to {ep.host}:{ep.port} refused: nothing listens "
                              f"there (wrong port in {ep.table}, or the server is down)")


def _timeout(exc: BaseException, ep: Endpoint) -> Diagnosis:
    return Diagnosis(NETWORK, f"no answer from {ep.host}:{ep.port} within {ep.timeout:g} s "
                              f"(timed out): a firewall, a wrong host or port, or a hung "
                              f"server")


def _dns(exc: BaseException, ep: Endpoint) -> Diagnosis:
    return Diagnosis(NETWORK, f"host name {ep.host!r} not found ({server_text(exc)}): check "
                              f"host in {ep.table} and this host's DNS")


def _os(exc: BaseException, ep: Endpoint) -> Diagnosis:
    assert isinstance(exc, OSError)
    reason = exc.strerror or server_text(exc) or type(exc).__name__
    return Diagnosis(NETWORK, f"cannot reach {ep.host}:{ep.port}: {reason}")


def _eof(exc: BaseException, ep: Endpoint) -> Diagnosis:
    return Diagnosis(NETWORK, f"{ep.host}:{ep.port} closed the connection unexpectedly")


# Checked in order: the first matching explainer that returns a diagnosis wins.
_EXPLAINERS: tuple = (
    (OAuthFailure, _oauth),
    (StartTlsMissing, _starttls),
    (FolderMissing, _folder),
    (ssl.SSLCertVerificationError, _certificate),
    (ssl.SSLError, _ssl),
    (smtplib.SMTPAuthenticationError, _smtp_auth),
    (smtplib.SMTPException, _smtp_other),
    (imaplib.IMAP4.error, lambda e, ep: _login(e, ep) if _is_login_error(e) else None),
    (imaplib.IMAP4.error, _imap_protocol),
    (ConnectionRefusedError, _refused),
    (socket.gaierror, _dns),
    ((TimeoutError, socket.timeout), _timeout),
    (OSError, _os),
    (EOFError, _eof),
)

OAUTH_LOGIN_HINTS = {
    "microsoft": "the Entra app needs the Office 365 Exchange Online permission "
                 "IMAP.AccessAsApp (SMTP.SendAsApp for sending) with admin consent, an Exchange "
                 "service principal (New-ServicePrincipal) and FullAccess on this mailbox "
                 "(Add-MailboxPermission); changes take up to an hour",
    "google": "domain-wide delegation must allow the service account's client ID the scope "
              "https://mail.google.com/ (Admin console > Security > API controls), and IMAP "
              "must be enabled for this user",
    "generic": "the token may lack the IMAP/SMTP scope, or belong to another user; run "
               "mailgate oauth login again",
    "command": "the token_command printed a token the server does not accept for this user",
}


def _is_login_error(exc: BaseException) -> bool:
    from imapclient.exceptions import LoginError

    return isinstance(exc, LoginError)


def server_text(value: object) -> str:
    """A server's own words, one line, bounded: they go into logs, status and mail."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, BaseException):
        value = _exception_text(value)
    text = " ".join(str(value).split())
    text = _BYTES_REPR.sub(lambda m: m.group(2), text)  # imaplib's "b'...'" in messages
    text = _NOISE.sub("", text).rstrip(" .")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= MAX_SERVER_TEXT else text[:MAX_SERVER_TEXT - 3] + "..."


_BYTES_REPR = re.compile(r"""\bb(['"])(.*?)\1""")
# imaplib's "select failed: " prefix, Dovecot's command timing "(0.001 + 0.000 secs)"
_NOISE = re.compile(r"^\w+ failed: |\s*\(\d+\.\d+( \+ \d+\.\d+)* secs\)")


def _exception_text(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        error = exc.smtp_error
        said = error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)
        return f"{exc.smtp_code} {said}"
    args = exc.args
    if len(args) == 1 and isinstance(args[0], bytes):
        return args[0].decode("utf-8", "replace")
    return str(exc)
