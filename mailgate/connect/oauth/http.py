"""HTTP to token endpoints with mailgate's own TLS settings (urllib, blocking).

msal and google-auth each bring an HTTP stack that trusts only its own CA bundle; the
adapters here let both use the same SSLContext as IMAP and SMTP (system store plus
ca_file), so a private CA or a TLS-inspecting proxy is configured once, and a loopback
stand-in of a token endpoint can be tested with a throw-away CA.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from mailgate.connect.diagnose import OAuthFailure, server_text
from mailgate.connect.tls import TlsSettings, client_context

MAX_BODY = 1024 * 1024
USER_AGENT = "mailgate-oauth"


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> dict:
        try:
            value = json.loads(self.body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


class Http:
    """One endpoint family's client: TLS context and timeout fixed at creation."""

    def __init__(self, ca_file: Path | None, timeout: float) -> None:
        self.context = client_context(TlsSettings(ca_file))
        self.timeout = timeout

    def request(self, method: str, url: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        """Any HTTP status is a Reply; only a failure to talk at all raises (OAuthFailure,
        transient, in words)."""
        all_headers = {"User-Agent": USER_AGENT, "Accept": "application/json",
                       **(headers or {})}
        request = urllib.request.Request(url, data=body, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout,
                                        context=self.context) as answer:
                return Reply(answer.status, answer.read(MAX_BODY), dict(answer.headers))
        except urllib.error.HTTPError as answer:
            with answer:
                return Reply(answer.code, answer.read(MAX_BODY), dict(answer.headers))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise OAuthFailure(unreachable(url, exc), transient=_transient(exc)) from None

    def post_form(self, url: str, fields: dict[str, str]) -> Reply:
        body = urllib.parse.urlencode(fields).encode()
        return self.request("POST", url, body,
                            {"Content-Type": "application/x-www-form-urlencoded"})


def unreachable(url: str, exc: BaseException) -> str:
    reason = getattr(exc, "reason", exc)
    host = urllib.parse.urlsplit(url).netloc or url
    if isinstance(reason, ssl.SSLCertVerificationError):
        return (f"the certificate of the token endpoint {host} was refused "
                f"({reason.verify_message}): if a proxy or a private CA signs it, set ca_file "
                f"in the [oauth] profile (or [tls] ca_file)")
    return f"cannot reach the token endpoint {url}: {server_text(reason)}"


def _transient(exc: BaseException) -> bool:
    return not isinstance(getattr(exc, "reason", exc), ssl.SSLCertVerificationError)


# --- adapters for the libraries ---------------------------------------------------------

class _MsalResponse:
    def __init__(self, reply: Reply) -> None:
        self.status_code = reply.status
        self.text = reply.body.decode("utf-8", "replace")
        self.headers = reply.headers

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise OAuthFailure(f"Entra ID answered HTTP {self.status_code}: "
                               f"{server_text(self.text)}", transient=self.status_code >= 500)


class MsalHttpClient:
    """msal's http_client interface (get/post/close), over Http."""

    def __init__(self, http: Http) -> None:
        self.http = http

    def post(self, url: str, params: dict | None = None, data: object = None,
             headers: dict | None = None, **_: object) -> _MsalResponse:
        if isinstance(data, dict):
            body = urllib.parse.urlencode(data).encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        else:
            body = data.encode() if isinstance(data, str) else data  # type: ignore[assignment]
        return _MsalResponse(self.http.request("POST", _with_query(url, params), body,
                                               _plain(headers)))

    def get(self, url: str, params: dict | None = None, headers: dict | None = None,
            **_: object) -> _MsalResponse:
        return _MsalResponse(self.http.request("GET", _with_query(url, params), None,
                                               _plain(headers)))

    def close(self) -> None:
        return None


def _with_query(url: str, params: dict | None) -> str:
    if not params:
        return url
    return url + ("&" if "?" in url else "?") + urllib.parse.urlencode(params)


def _plain(headers: dict | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in (headers or {}).items() if v is not None}


class GoogleRequest:
    """google.auth.transport.Request over Http (google-auth's own needs `requests`)."""

    def __init__(self, http: Http) -> None:
        self.http = http

    def __call__(self, url: str, method: str = "GET", body: bytes | None = None,
                 headers: dict | None = None, timeout: float | None = None,
                 **_: object) -> object:
        from google.auth import exceptions, transport

        try:
            reply = self.http.request(method, url, body, _plain(headers))
        except OAuthFailure as exc:
            raise exceptions.TransportError(exc.text) from None

        class Response(transport.Response):
            status = reply.status
            headers = reply.headers
            data = reply.body

        return Response()
