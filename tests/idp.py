"""A loopback stand-in of an OAuth2 identity provider, over TLS from the test CA.

One threaded http.server plays the parts mailgate and Dovecot talk to:

- the token endpoint (`/token`, and Entra's `/<tenant>/oauth2/v2.0/token`) for the
  refresh_token, device_code, authorization_code (PKCE), client_credentials (secret or a
  certificate-signed client_assertion: Entra app-only) and jwt-bearer (a Google service
  account's signed assertion) grants; refresh tokens rotate when `rotate` is set;
- the device authorization endpoint (`/device`, RFC 8628), approving on the second poll;
- Entra's OpenID discovery document, which msal reads before asking for a token;
- the introspection endpoint (`/introspect`) Dovecot's oauth2 passdb asks about tokens.

It checks what a real provider checks -- the grant, the client's secret or signature, the
scope, PKCE -- and records every request so tests can see what reached it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt

MICROSOFT_SCOPE = "https://outlook.office365.com/.default"
GOOGLE_AUDIENCE = "https://oauth2.googleapis.com/token"


@dataclass
class Seen:
    path: str
    form: dict[str, str]


@dataclass
class IdP:
    client_id: str = "mailgate-client"
    client_secret: str | None = None  # required of the generic client when set
    rotate: bool = False  # hand out a new refresh token on every refresh
    lifetime: int = 3600  # access token lifetime, seconds
    app_id: str = "00000000-app"  # the Entra app (client_credentials)
    app_secret: str | None = "app-secret"
    app_certificate_pem: bytes | None = None  # its registered certificate
    app_mailbox: str | None = None  # the mailbox the app's service principal may open
    service_account_email: str = "mailgate@project.iam.gserviceaccount.com"
    service_account_public_pem: bytes | None = None
    delegated: set[str] = field(default_factory=set)  # users the service account may act for
    requests: list[Seen] = field(default_factory=list)
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # token -> user
    access_tokens: dict[str, tuple[str, float]] = field(default_factory=dict)
    devices: dict[str, list] = field(default_factory=dict)  # device_code -> [user, polls]
    codes: dict[str, tuple[str, str]] = field(default_factory=dict)  # code -> user, challenge
    login_as: str = "nobody@example.com"  # who "signs in" in the browser
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    # --- running --------------------------------------------------------------------

    def start(self, context: ssl.SSLContext) -> None:
        idp = self

        class Handler(_Handler):
            provider = idp

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True,
                                                  do_handshake_on_connect=False)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # --- what tests set up and look at -------------------------------------------------

    def grant(self, user: str) -> str:
        """A refresh token for user, as if they had logged in before."""
        token = "rt-" + secrets.token_urlsafe(12)
        self.refresh_tokens[token] = user
        return token

    def revoke(self, user: str) -> None:
        """An admin revokes the user's sessions: refresh and access tokens stop working."""
        for table in (self.refresh_tokens,):
            for token in [t for t, u in table.items() if u == user]:
                del table[token]
        for token in [t for t, (u, _) in self.access_tokens.items() if u == user]:
            del self.access_tokens[token]

    def grants(self, grant_type: str) -> list[Seen]:
        return [s for s in self.requests if s.form.get("grant_type") == grant_type]

    # --- the endpoints ----------------------------------------------------------------

    def token(self, form: dict[str, str]) -> tuple[int, dict]:
        grant = form.get("grant_type", "")
        handlers = {
            "refresh_token": self._refresh,
            "urn:ietf:params:oauth:grant-type:device_code": self._device_token,
            "authorization_code": self._code,
            "client_credentials": self._client_credentials,
            "urn:ietf:params:oauth:grant-type:jwt-bearer": self._jwt_bearer,
        }
        if grant not in handlers:
            return 400, {"error": "unsupported_grant_type"}
        return handlers[grant](form)

    def _client_ok(self, form: dict[str, str]) -> bool:
        return form.get("client_id") == self.client_id and (
            self.client_secret is None or form.get("client_secret") == self.client_secret)

    def _issue(self, user: str, refresh: str | None = None) -> dict:
        access = "at-" + secrets.token_urlsafe(12)
        self.access_tokens[access] = (user, time.time() + self.lifetime)
        answer = {"access_token": access, "token_type": "Bearer",
                  "expires_in": self.lifetime}
        if refresh is not None:
            answer["refresh_token"] = refresh
        return answer

    def _refresh(self, form: dict[str, str]) -> tuple[int, dict]:
        if not self._client_ok(form):
            return 401, {"error": "invalid_client", "error_description": "bad client"}
        user = self.refresh_tokens.get(form.get("refresh_token", ""))
        if user is None:
            return 400, {"error": "invalid_grant",
                         "error_description": "The refresh token has been revoked."}
        if not self.rotate:
            return 200, self._issue(user)
        del self.refresh_tokens[form["refresh_token"]]  # the old one dies at once
        return 200, self._issue(user, self.grant(user))

    def device(self, form: dict[str, str]) -> tuple[int, dict]:
        if form.get("client_id") != self.client_id:
            return 400, {"error": "invalid_client"}
        code = "dc-" + secrets.token_urlsafe(8)
        self.devices[code] = [self.login_as, 0]
        return 200, {"device_code": code, "user_code": "WDJB-MJHT",
                     "verification_uri": f"{self.url}/activate", "interval": 1,
                     "expires_in": 60}

    def _device_token(self, form: dict[str, str]) -> tuple[int, dict]:
        entry = self.devices.get(form.get("device_code", ""))
        if entry is None:
            return 400, {"error": "expired_token"}
        entry[1] += 1
        if entry[1] < 2:  # the admin is still typing the code
            return 400, {"error": "authorization_pending"}
        return 200, self._issue(entry[0], self.grant(entry[0]))

    def authorize(self, query: dict[str, str]) -> str:
        """The browser's part: sign in as login_as, redirect with a code."""
        code = "ac-" + secrets.token_urlsafe(8)
        self.codes[code] = (self.login_as, query["code_challenge"])
        return f"{query['redirect_uri']}?code={code}&state={query['state']}"

    def _code(self, form: dict[str, str]) -> tuple[int, dict]:
        entry = self.codes.pop(form.get("code", ""), None)
        if entry is None:
            return 400, {"error": "invalid_grant", "error_description": "unknown code"}
        digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
        if base64.urlsafe_b64encode(digest).decode().rstrip("=") != entry[1]:
            return 400, {"error": "invalid_grant", "error_description": "PKCE mismatch"}
        return 200, self._issue(entry[0], self.grant(entry[0]))

    def _client_credentials(self, form: dict[str, str]) -> tuple[int, dict]:
        if form.get("scope") != MICROSOFT_SCOPE:
            return 400, {"error": "invalid_scope", "error_description": "AADSTS1002012: "
                         "The provided value for scope is not valid."}
        if form.get("client_id") != self.app_id:
            return 400, {"error": "unauthorized_client", "error_description": "AADSTS700016: "
                         "Application not found in the directory."}
        if "client_assertion" in form:
            if not self._assertion_ok(form["client_assertion"]):
                return 401, {"error": "invalid_client", "error_description": "AADSTS700027: "
                             "Client assertion contains an invalid signature."}
        elif form.get("client_secret") != self.app_secret:
            return 401, {"error": "invalid_client", "error_description": "AADSTS7000215: "
                         "Invalid client secret provided."}
        return 200, self._issue(self.app_mailbox or "")

    def _assertion_ok(self, assertion: str) -> bool:
        from cryptography import x509

        if self.app_certificate_pem is None:
            return False
        cert = x509.load_pem_x509_certificate(self.app_certificate_pem)
        try:
            claims = jwt.decode(assertion, cert.public_key(), algorithms=["RS256", "PS256"],
                                audience=f"{self.url}/tenant-id/oauth2/v2.0/token")
        except jwt.PyJWTError:
            return False
        return claims.get("iss") == claims.get("sub") == self.app_id

    def _jwt_bearer(self, form: dict[str, str]) -> tuple[int, dict]:
        try:
            claims = jwt.decode(form.get("assertion", ""), self.service_account_public_pem,
                                algorithms=["RS256"], audience=GOOGLE_AUDIENCE)
        except jwt.PyJWTError as exc:
            return 400, {"error": "invalid_grant", "error_description": f"bad JWT: {exc}"}
        if claims.get("iss") != self.service_account_email:
            return 400, {"error": "invalid_grant", "error_description": "wrong issuer"}
        if claims.get("sub") not in self.delegated or claims.get("scope") != \
                "https://mail.google.com/":
            return 401, {"error": "unauthorized_client", "error_description": "Client is "
                         "unauthorized to retrieve access tokens using this method, or client "
                         "not authorized for any of the scopes requested."}
        return 200, {**self._issue(claims["sub"]), "expires_in": self.lifetime}

    def introspect(self, form: dict[str, str]) -> tuple[int, dict]:
        entry = self.access_tokens.get(form.get("token", ""))
        if entry is None or entry[1] < time.time():
            return 200, {"active": False}
        return 200, {"active": True, "username": entry[0]}

    def discovery(self, tenant: str) -> dict:
        base = f"{self.url}/{tenant}"
        return {"issuer": f"{base}/v2.0", "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode"}


class _Handler(BaseHTTPRequestHandler):
    provider: IdP
    protocol_version = "HTTP/1.1"  # Dovecot's HTTP client keeps connections open

    def log_message(self, format: str, *args: object) -> None:
        return None

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        form = {k: v[0] for k, v in urllib.parse.parse_qs(raw).items()}
        path = urllib.parse.urlsplit(self.path).path
        idp = self.provider
        idp.requests.append(Seen(path, form))
        if path == "/token" or path.endswith("/oauth2/v2.0/token"):
            self._answer(*idp.token(form))
        elif path == "/device":
            self._answer(*idp.device(form))
        elif path == "/introspect":
            self._answer(*idp.introspect(form))
        else:
            self._answer(404, {"error": "not_found"})

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path.endswith("/v2.0/.well-known/openid-configuration"):
            self._answer(200, self.provider.discovery(path.split("/")[1]))
        else:
            self._answer(404, {"error": "not_found"})

