"""Reply keys: proof that a mail answers one mailgate sent to that person about that ticket.

A From: line proves nothing. Every mail mailgate sends to a person about a ticket carries,
in its Message-ID, a key: an HMAC over the ticket number(s), the recipient's mailbox
(canonical: case folded, plus tag removed) and an expiry day, under a secret only this
installation knows (keyfile.py keeps it in the state directory). A reply's In-Reply-To and
References echo that Message-ID, so a mail that brings back a valid key for ticket T and
for its own From: mailbox was written by someone who received our mail about T in that
mailbox. A forger who does not read that mailbox cannot produce one.

    <mgk2.{key id}.{expiry day}.{refs}.{mac}.{nonce}@domain>

The MAC covers the nonce too, so each mail's key is its own: a key someone else has seen
(an agent's answer to our mail with the requester in Cc carries hers) can be burnt without
burning the next mail's (see `Key.identity`). `mgk1` keys, whose MAC left the nonce out,
keep verifying until they expire; burning one burns every mgk1 key of that day for that
person and ticket.

Keys expire (`ttl`); the secret can be rotated: older secrets stay in the ring, and keep
verifying, until the keys they signed have expired. Pure: the ring is data, time is passed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice

from mailgate.core.addresses import canonical

VERSION = "mgk2"
VERSIONS = ("mgk1", "mgk2")  # verified; the first signs no more
DAY = 86_400
MAC_CHARS = 20  # base32: 100 bits
MAX_KEYS = 80  # keys checked per mail, the first ones given: References is the sender's
_TOKEN = re.compile(
    r"(mgk[12])\.([a-z0-9]{1,16})\.([a-z0-9]{1,8})\.([A-Za-z0-9_-]{1,200})\.([a-z2-7]{20})"
    r"\.([0-9a-f]{32}(?![0-9a-f]))?")


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
    mac = _mac(secret, VERSION, key_id, expiry, joined, recipient, nonce)
    return f"{VERSION}.{key_id}.{expiry}.{joined}.{mac}.{nonce}@{domain}"


@dataclass(frozen=True, slots=True)
class Key:
    """A valid, unexpired key found in a mail."""

    identity: str  # what exposure burns: this one mail's key (mgk2), the day's (mgk1)
    refs: frozenset[str]  # the tickets it is for
    expires: float = 0.0  # Unix seconds: the end of its expiry day


@dataclass(frozen=True, slots=True)
class _Token:
    """A Message-ID shaped like one of our keys, its MAC not checked yet."""

    version: str
    key_id: str
    expiry: str
    joined: str  # the ticket numbers, "_"-joined
    mac: str
    nonce: str | None
    secret: bytes

    def key(self) -> Key:
        identity = f"{self.version}.{self.mac}"
        return Key(identity, frozenset(self.joined.split("_")),
                   float((int(self.expiry, 36) + 1) * DAY))

    def signed_for(self, holder: str) -> bool:
        signed = self.nonce if self.version == "mgk2" else None
        return hmac.compare_digest(self.mac, _mac(self.secret, self.version, self.key_id,
                                                  self.expiry, self.joined, holder, signed))


def _tokens(ring: KeyRing, message_ids: Iterable[str], now: datetime) -> Iterator[_Token]:
    """The Message-IDs that could be keys of this ring, each once, in order: a known key
    id, an expiry day neither past nor later than the ring's ttl could have signed (a
    day's slack for clocks), an mgk2 with its nonce. Only their MAC is left to check."""
    secrets = dict(ring.secrets)
    today = int(now.timestamp()) // DAY
    latest = today + ring.ttl.days + 2
    for value in dict.fromkeys(message_ids):
        token = _TOKEN.search(value)
        if token is None:
            continue
        version, key_id, expiry, joined, mac, nonce = token.groups()
        secret = secrets.get(key_id)
        if secret is None or not today <= int(expiry, 36) <= latest \
                or (version == "mgk2" and not nonce):
            continue
        yield _Token(version, key_id, expiry, joined, mac, nonce, secret)


def valid_keys(ring: KeyRing, message_ids: Iterable[str], holders: Iterable[str],
               now: datetime) -> tuple[Key, ...]:
    """The keys among these Message-IDs (a reply's In-Reply-To and References, or a key
    quoted in a rating link) that are valid and unexpired for one of `holders` (its
    mailbox: the key says whose it is only to who knows the secret), each once. Only the
    first MAX_KEYS that could be ours are checked: fewer keys prove, never more."""
    holders = list(dict.fromkeys(holders))
    found: dict[str, Key] = {}
    for token in islice(_tokens(ring, message_ids, now), MAX_KEYS):
        if any(token.signed_for(holder) for holder in holders):
            key = token.key()
            found.setdefault(key.identity, key)
    return tuple(found.values())


def carried_keys(ring: KeyRing, message_ids: Iterable[str], now: datetime) -> tuple[Key, ...]:
    """Every key these Message-IDs could be, for anyone, unchecked and uncapped: what a
    mail shows to others when it exposes keys (core/exposure.py). valid_keys checks only
    the first MAX_KEYS, for its sender; a key further on, or another person's (a forward
    with its headers kept), would still prove a later mail that carries it within the cap.
    Burning an id that is no key costs a row until its expiry day, which is bounded as
    valid_keys bounds it; no id can burn a key it is not, the MAC being the key's."""
    found: dict[str, Key] = {}
    for token in _tokens(ring, message_ids, now):
        key = token.key()
        found.setdefault(key.identity, key)
    return tuple(found.values())


def proven_refs(ring: KeyRing, message_ids: Iterable[str], sender: str, now: datetime,
                exposed: frozenset[str] = frozenset()) -> frozenset[str]:
    """The ticket numbers for which one of these Message-IDs is a valid, unexpired key for
    `sender` that has not been exposed (its identity not in `exposed`)."""
    return frozenset(ref for key in valid_keys(ring, message_ids, (sender,), now)
                     if key.identity not in exposed for ref in key.refs)


def redacted(message_id: str) -> str:
    """A Message-ID fit for a log: each key's MAC replaced by "-". The MAC is what makes
    the key a bearer token for its recipient (From: her, In-Reply-To: this id); the rest
    (version, ticket, expiry, nonce) still finds the mail in mailgate's and the MTA's
    records."""
    return _TOKEN.sub(lambda m: m.expand(r"\1.\2.\3.\4.-.") + (m.group(6) or ""), message_id)


_REFS_OK = re.compile(r"[A-Za-z][A-Za-z0-9]{0,9}-\d{1,9}(_[A-Za-z][A-Za-z0-9]{0,9}-\d{1,9})*")


def _mac(secret: bytes, version: str, key_id: str, expiry: str, refs: str, recipient: str,
         nonce: str | None = None) -> str:
    """mgk1 (nonce None) signs what it always did; mgk2 also the nonce."""
    fields = (version, key_id, expiry, refs.upper(), canonical(recipient))
    message = "\n".join(fields if nonce is None else (*fields, nonce))
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
