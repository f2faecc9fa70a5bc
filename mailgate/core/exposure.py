"""Reply keys that others have seen (pure): which keys a mail shows to people besides
their holder and mailgate.

A reply key is a bearer token: whoever holds a mail that carries one in In-Reply-To or
References can put its holder's address on From: and act as her on that ticket. mailgate
never sends a key to anyone else, but people do: an agent who answers mailgate's mail with
the requester in Cc hands the requester her key. Such a mail is addressed to mailgate
too, so mailgate sees it: every key it carries is exposed (replykey.Key.identity) and
proves nothing from then on -- every one, wherever it sits in the mail and whoever's it
is (a forward with its headers kept carries a third person's): any of them could prove a
later mail that puts it where proof reads. The mail itself still counts: it reached mailgate when it
reached the others, so it is the genuine one.

Who counts as another person: an address in To or Cc that is neither the sender's nor one
of mailgate's own (`own`: department and mailbox addresses, plus tag and ASCII case
aside). A Bcc and a forward with the headers kept are invisible here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from mailgate.core.addresses import canonical
from mailgate.core.model import Inbound
from mailgate.core.replykey import Key, KeyRing, carried_keys


def others(msg: Inbound, own: Callable[[str], bool]) -> tuple[str, ...]:
    """The To and Cc addresses that are neither the sender's nor mailgate's own."""
    sender = canonical(msg.sender.addr) if msg.sender else ""
    found = (canonical(a.addr) for a in (*msg.to, *msg.cc))
    return tuple(dict.fromkeys(a for a in found if a and a != sender and not own(a)))


def exposed_keys(ring: KeyRing, msg: Inbound, candidates: Iterable[str],
                 own: Callable[[str], bool], now: datetime) -> tuple[Key, ...]:
    """Every key among `candidates` (the mail's In-Reply-To, References and keys in its
    body: what proof reads too) when the mail also goes to others, whoever's key it is
    and however many: the others hold each one now (replykey.carried_keys)."""
    if not ring.active or not others(msg, own):
        return ()
    return carried_keys(ring, candidates, now)
