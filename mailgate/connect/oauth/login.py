"""`mailgate oauth login NAME` and `mailgate oauth status`: the first refresh token of the
generic flow, and what is stored.

Where the provider has a device authorization endpoint (RFC 8628; Microsoft's
/devicecode), the admin opens a URL on any machine and types a short code: nothing has to
reach this server. Otherwise (Google, which allows no mail scope for devices) the admin
opens the authorization URL, signs in, and pastes the code -- or the whole address the
browser ended on -- back here (PKCE S256 binds the code to this run).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import secrets
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from mailgate.config.settings import Config, config_path, load_config
from mailgate.connect.diagnose import OAuthFailure, server_text
from mailgate.connect.oauth.http import Http
from mailgate.connect.oauth.profile import OAuthProfile
from mailgate.connect.oauth.sources import token_failure
from mailgate.connect.oauth.tokens import TokenFile, TokenSet, first_tokens, token_path

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
Say = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    name: str  # the mailbox name, or "smtp"
    username: str
    profile: OAuthProfile


def cmd_oauth(args: argparse.Namespace) -> int:
    from mailgate.cli.output import say

    config = load_config(config_path(args.config), secrets="available")
    targets = oauth_targets(config)
    if args.action == "status":
        return status(targets, say)
    chosen = [t for t in targets if t.name == args.name]
    if not chosen:
        names = ", ".join(t.name for t in targets) or "none use oauth"
        say(f"mailgate oauth login: {args.name or '(no name)'} is not a mailbox or smtp with "
            f"oauth = ... (those are: {names})", file=sys.stderr)
        return 2
    try:
        return login(chosen[0], say, input, prefer_paste=args.paste)
    except OAuthFailure as exc:
        say(f"mailgate oauth login: {exc.text}", file=sys.stderr)
        return 1


def oauth_targets(config: Config) -> list[Target]:
    found = [Target(b.name, b.username, b.oauth) for b in config.mailboxes if b.oauth]
    if config.smtp and config.smtp.oauth and config.smtp.username:
        found.append(Target("smtp", config.smtp.username, config.smtp.oauth))
    return found


def status(targets: list[Target], say: Say) -> int:
    if not targets:
        say("no mailbox and no [smtp] uses oauth")
    for t in targets:
        p = t.profile
        if not p.uses_refresh_token:
            say(f"{t.name}: {t.username} via [oauth.{p.name}] ({p.provider}): no stored "
                f"token needed; mailgate check --connect tries it")
            continue
        path = token_path(p.token_dir, p.name, t.username)
        tokens = TokenFile(path).read()
        if tokens is None:
            say(f"{t.name}: {t.username} via [oauth.{p.name}]: no refresh token yet; run "
                f"mailgate oauth login {t.name}")
            continue
        say(f"{t.name}: {t.username} via [oauth.{p.name}]: refresh token from "
            f"{_when(tokens.obtained_at)}, last rotated {_when(tokens.rotated_at)}, access "
            f"token valid until {_when(tokens.expires_at)} ({path})")
    return 0


def login(target: Target, say: Say, read: Callable[[str], str],
          prefer_paste: bool = False, sleep: Callable[[float], None] = time.sleep) -> int:
    p = target.profile
    if not p.uses_refresh_token:
        say(f"[oauth.{p.name}] uses provider {p.provider}: no login to store; mailgate asks "
            f"for tokens itself (try: mailgate check --connect)")
        return 0
    http = Http(p.ca_file, p.timeout)
    if p.device_url and not prefer_paste:
        answer = device_flow(p, target.username, http, say, sleep)
    elif p.authorize_url:
        answer = pasted_code_flow(p, target.username, http, say, read)
    else:
        say(f"[oauth.{p.name}] has neither device_url nor authorize_url: set one of them "
            f"(see the README)", )
        return 1
    tokens = first_tokens(answer, time.time())
    store(target, tokens)
    say(f"stored the refresh token for {target.username} in "
        f"{token_path(p.token_dir, p.name, target.username)} (mode 0600); mailgate refreshes "
        f"it from now on. Check it: mailgate check --connect")
    return 0


def store(target: Target, tokens: TokenSet) -> None:
    p = target.profile
    file = TokenFile(token_path(p.token_dir, p.name, target.username))
    with file.locked():
        file.write(tokens)


# --- RFC 8628: device authorization grant -------------------------------------------------

def device_flow(p: OAuthProfile, username: str, http: Http, say: Say,
                sleep: Callable[[float], None]) -> dict:
    reply = http.post_form(p.device_url or "", _client({"scope": p.scope}, p))
    start = reply.json()
    if reply.status != 200 or "device_code" not in start:
        raise token_failure(reply, p, username)
    uri = start.get("verification_uri_complete") or start.get("verification_uri") \
        or start.get("verification_url")
    say(f"To let mailgate read {username}: open {uri} in any browser, sign in as {username} "
        f"and enter the code {start.get('user_code')}")
    interval = float(start.get("interval") or 5)
    deadline = time.monotonic() + float(start.get("expires_in") or 900)
    while time.monotonic() < deadline:
        sleep(interval)
        reply = http.post_form(p.token_url or "", _client(
            {"grant_type": DEVICE_GRANT, "device_code": start["device_code"]}, p))
        answer = reply.json()
        if reply.status == 200 and answer.get("access_token"):
            return answer
        error = answer.get("error")
        if error == "authorization_pending":
            continue
        if error == "slow_down":  # RFC 8628 section 3.5: five seconds more from now on
            interval += 5
            continue
        if error in ("access_denied", "authorization_declined"):
            raise OAuthFailure(f"the sign-in was declined ({server_text(error)})")
        if error in ("expired_token", "code_expired"):
            break
        raise token_failure(reply, p, username)
    raise OAuthFailure("the code expired before the sign-in finished; run the command again")


# --- RFC 6749 section 4.1 with PKCE (RFC 7636), the code pasted back -----------------------

def pasted_code_flow(p: OAuthProfile, username: str, http: Http, say: Say,
                     read: Callable[[str], str]) -> dict:
    verifier = secrets.token_urlsafe(48)
    state = secrets.token_urlsafe(16)
    url = authorization_url(p, username, verifier, state)
    say(f"To let mailgate read {username}: open this address in a browser and sign in as "
        f"{username}:\n\n  {url}\n\nThe browser then goes to {p.redirect_uri}, which shows "
        f"an error page: that is expected. Copy the whole address from the address bar (or "
        f"just the code=... value) and paste it here.")
    code = code_from(read("address or code: "), state)
    reply = http.post_form(p.token_url or "", _client(
        {"grant_type": "authorization_code", "code": code, "redirect_uri": p.redirect_uri,
         "code_verifier": verifier}, p))
    answer = reply.json()
    if reply.status != 200 or not answer.get("access_token"):
        raise token_failure(reply, p, username)
    return answer


def authorization_url(p: OAuthProfile, username: str, verifier: str, state: str) -> str:
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    query = {"response_type": "code", "client_id": p.client_id or "",
             "redirect_uri": p.redirect_uri, "scope": p.scope, "state": state,
             "code_challenge": challenge.decode().rstrip("="),
             "code_challenge_method": "S256", "login_hint": username}
    if "google" in urllib.parse.urlsplit(p.authorize_url or "").netloc:
        # Google sends a refresh token only when asked for offline access, and only on
        # the first consent unless consent is asked for again.
        query.update(access_type="offline", prompt="consent")
    base = p.authorize_url or ""
    return base + ("&" if "?" in base else "?") + urllib.parse.urlencode(query)


def code_from(pasted: str, state: str) -> str:
    """The code from a pasted redirect address (its state must match) or a bare code."""
    text = pasted.strip()
    if "code=" not in text and "error=" not in text:
        if not text:
            raise OAuthFailure("nothing was pasted")
        return text
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(text).query or text)
    if "error" in query:
        detail = query.get("error_description", query["error"])[0]
        raise OAuthFailure(f"the sign-in failed: {server_text(detail)}")
    if query.get("state", [state])[0] != state:
        raise OAuthFailure("the pasted address belongs to another sign-in (state differs); "
                           "run the command again and use the new address")
    return query["code"][0]


def _client(fields: dict[str, str], p: OAuthProfile) -> dict[str, str]:
    found = {**fields, "client_id": p.client_id or ""}
    if p.client_secret is not None:
        found["client_secret"] = p.client_secret.reveal()
    return found


def _when(ts: float | None) -> str:
    if not ts:
        return "never"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")
