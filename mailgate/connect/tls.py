"""TLS for the connections mailgate opens: IMAP, outgoing SMTP and OAuth2 token endpoints.

One builder makes every client SSLContext, so all of them trust the same certificates:
the system's store, plus the organisation's own CA when `ca_file` names one. Turning
verification off is possible (`tls_verify = false`) but never silent: check warns and the
connection logs it every time it is opened.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mailgate.config.safefile import read_regular

if TYPE_CHECKING:
    from mailgate.config.settings import Config

MAX_CA_BYTES = 4 * 1024 * 1024  # a CA bundle (Debian's whole store is about 200 kB)


@dataclass(frozen=True)
class TlsSettings:
    ca_file: Path | None = None  # trusted in addition to the system store
    verify: bool = True  # False: any certificate, any name (an explicit, logged choice)


def client_context(settings: TlsSettings) -> ssl.SSLContext:
    """A client context: TLS 1.2 or later, the system store (+ ca_file), names checked."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.ca_file is not None:
        context.load_verify_locations(cadata=_pem_text(settings.ca_file))
    if not settings.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def ca_file_problem(path: Path) -> str | None:
    """Why `path` cannot serve as ca_file, in words; None when it holds a certificate."""
    try:
        text = _pem_text(path)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    except UnicodeDecodeError:
        return f"{path} is not a PEM file (binary data); convert it: openssl x509 -inform der " \
               f"-in {path.name} -out {path.stem}.pem"
    if "-----BEGIN CERTIFICATE-----" not in text:
        return f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    try:
        ssl.create_default_context().load_verify_locations(cadata=text)
    except ssl.SSLError as exc:
        return f"{path}: not a usable certificate file ({exc.reason or exc})"
    return None


def _pem_text(path: Path) -> str:
    # A regular file of bounded size only, like every file a setting names.
    return read_regular(path, MAX_CA_BYTES).decode("ascii")


def protocol_of(sock: object) -> str | None:
    """'TLSv1.3' for a TLS socket, None for a plain one (for check --connect's report)."""
    version = getattr(sock, "version", None)
    return version() if callable(version) else None


def warnings(config: Config) -> list[str]:
    """For `mailgate check`: connections whose secrets or mail could be read on the way."""
    from mailgate.config.loader import is_loopback

    found = []
    targets = [("smtp", config.smtp)] + [(f"mailbox[{i}]", box)
                                         for i, box in enumerate(config.mailboxes)]
    for key, target in targets:
        if target is None:
            continue
        if target.tls != "none" and not target.tls_verify:
            found.append(f"{config.path}: {key}.tls_verify: false: any certificate is "
                         f"accepted from {target.host}, so whoever sits on the network path "
                         f"can read the login and the mail; set ca_file to your CA instead")
        elif target.tls == "none" and getattr(target, "oauth", None) \
                and not is_loopback(target.host):
            # Passwords over plain text were allowed before and stay so (no new warning
            # for existing setups); a bearer token is new, and works for anyone who sees it.
            found.append(f"{config.path}: {key}.tls: none sends the OAuth2 access token to "
                         f'{target.host} unencrypted; use tls = "starttls" or "implicit"')
    return found
