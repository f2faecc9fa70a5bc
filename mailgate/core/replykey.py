"""Reply keys: proof that a mail answers one mailgate sent to that person about that ticket.

A From: line proves nothing. Every mail mailgate sends to a person about a ticket carries,
in its Message-ID, a key: an HMAC over the ticket number(s), the recipient's mailbox
(canonical: case folded, plus tag removed) and an expiry day, under a secret only this
installation knows (keyfile.py keeps it in the state directory). A reply's In-Reply-To and
References echo that Message-ID, so a mail that brings back a valid key for ticket T and
for its own From: mailbox was written by someone who received our mail about T in that
mailbox. A forger who does not read that mailbox cannot produce one.

    <mgk1.{key id}.{expiry day}.{refs}.{mac}.{nonce}@domain>

Keys expire (`ttl`); the secret can be rotated: older secrets stay in the ring, and keep
verifying, until the keys they signed have expired. Pure: the ring is data, time is passed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailgate.core.addresses import canonical

VERSION = "mgk1"
DAY = 86_400
MAC_CHARS = 20  # base32: 100 bits
_TOKEN = re.compile(
    r"mgk1\.([a-z0-9]{1,16})\.([a-z0-9]{1,8})\.([A-Za-z0-9_-]{1,200})\.([a-z2-7]{20})\.")


@dataclass(frozen=True, slots=True)
class KeyRing:
    """Secrets, newest first; the first one signs. An empty ring signs and proves nothing."""

    secrets: tuple[tuple[str, bytes], ...] = ()  # (key id, secret)
    ttl: timedelta = timedelta(days=60)

    @property
    def active(self) -> bool:
        return bool(self.secrets)


def keyed_message_id(ring: KeyRing, refs: Sequence[str], recipient: str, domain: str,
                     now: datetime) -> str:
    """A unique Message-ID (without brackets) carrying a key for `refs` and `recipient`;
    a plain one when the ring is empty."""
    nonce = uuid.uuid4().hex
    joined = "_".join(refs)
    if not ring.active or not _REFS_OK.fullmatch(joined):
        return f"{joined + '.' if _REFS_OK.fullmatch(joined) else ''}{nonce}@{domain}"
    key_id, secret = ring.secrets[0]
    expiry = _b36(int(now.timestamp() + ring.ttl.total_seconds()) // DAY)
    mac = _mac(secret, key_id, expiry, joined, recipient)
    return f"{VERSION}.{key_id}.{expiry}.{joined}.{mac}.{nonce}@{domain}"


def proven_refs(ring: KeyRing, message_ids: Iterable[str], sender: str,
                now: datetime) -> frozenset[str]:
    """The ticket numbers for which one of these Message-IDs (a reply's In-Reply-To and
    References, or a key quoted in a rating link) is a valid, unexpired key for `sender`."""
    secrets = dict(ring.secrets)
    today = int(now.timestamp()) // DAY
    proven: set[str] = set()
    for value in message_ids:
        found = _TOKEN.search(value)
        if found is None:
            continue
        key_id, expiry, joined, mac = found.groups()
        secret = secrets.get(key_id)
        if secret is None or int(expiry, 36) < today:
            continue
        if hmac.compare_digest(mac, _mac(secret, key_id, expiry, joined, sender)):
            proven.update(joined.split("_"))
    return frozenset(proven)


_REFS_OK = re.compile(r"[A-Za-z][A-Za-z0-9]{0,9}-\d{1,9}(_[A-Za-z][A-Za-z0-9]{0,9}-\d{1,9})*")


def _mac(secret: bytes, key_id: str, expiry: str, refs: str, recipient: str) -> str:
    message = "\n".join((VERSION, key_id, expiry, refs.upper(), canonical(recipient)))
    digest = hmac.new(secret, message.encode(), hashlib.sha256).digest()
    return base64.b32encode(digest).decode().lower()[:MAC_CHARS]


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, rest = divmod(n, 36)
        out = digits[rest] + out
        if n == 0:
            return out
