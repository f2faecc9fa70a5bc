"""How far a message's From: can be believed (pure; no I/O).

From: is whatever the sender typed. mailgate believes it only as far as configured:
- `trusted_domains` say which sender domains are the organisation's own; mail from any
  other domain is from an outsider, whatever else it claims;
- `authserv_id` names our own MTA's Authentication-Results (RFC 8601). Only the topmost
  header carrying that id is read: headers further down, or with another id, may have been
  written by the sender. The sender counts as verified when DMARC passed, or DKIM passed
  for the From: domain, or SPF passed for it.

Email commands (#resolve, #assign ...) are accepted only from senders `may_command`
approves; everything else is still a ticket or a reply, just never an instruction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from mailgate.model import Inbound


class Trust(StrEnum):
    OUTSIDER = "outsider"  # the From: domain is not one of ours
    UNVERIFIED = "unverified"  # one of ours, but our MTA did not vouch for it
    DOMAIN = "domain"  # one of ours; no authserv_id configured, so the domain is all we have
    VERIFIED = "verified"  # one of ours and SPF/DKIM/DMARC passed per our own MTA


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    trusted_domains: frozenset[str] = frozenset()  # empty: every domain is ours
    authserv_id: str | None = None


_COMMENT = re.compile(r"\([^()]*\)")
_RESULT = re.compile(r"^\s*([a-z0-9_-]+)\s*=\s*([a-z]+)", re.IGNORECASE)
_PROPERTY = re.compile(r"\b([a-z]+\.[a-z-]+)\s*=\s*\"?([^\s;\"]+)", re.IGNORECASE)


def sender_trust(msg: Inbound, policy: TrustPolicy) -> Trust:
    if msg.sender is None:
        return Trust.OUTSIDER
    domain = msg.sender.addr.rpartition("@")[2].lower()
    if policy.trusted_domains and not _within(domain, policy.trusted_domains):
        return Trust.OUTSIDER
    if policy.authserv_id is None:
        return Trust.DOMAIN
    ours = next((h for h in msg.auth_results if _authserv_id(h) == policy.authserv_id.lower()),
                None)
    if ours is not None and _passes(ours, domain):
        return Trust.VERIFIED
    return Trust.UNVERIFIED


def may_command(trust: Trust) -> bool:
    return trust in (Trust.VERIFIED, Trust.DOMAIN)


def _within(domain: str, domains: frozenset[str]) -> bool:
    return any(domain == d or domain.endswith("." + d) for d in domains)


def _authserv_id(header: str) -> str:
    words = _COMMENT.sub("", header).split(";", 1)[0].split()  # "id [version]"
    return words[0].lower() if words else ""


def _passes(header: str, domain: str) -> bool:
    """DMARC pass, or DKIM/SPF pass for exactly the From: domain (or a parent of it)."""
    for resinfo in _COMMENT.sub("", header).split(";")[1:]:
        found = _RESULT.match(resinfo)
        if not found or found.group(2).lower() != "pass":
            continue
        method = found.group(1).lower()
        props = {k.lower(): v.lower() for k, v in _PROPERTY.findall(resinfo)}
        if method == "dmarc" and props.get("header.from", domain) == domain:
            return True
        if method == "dkim" and _aligned(props.get("header.d")
                                         or props.get("header.i", "").rpartition("@")[2],
                                         domain):
            return True
        if method == "spf" and _aligned(props.get("smtp.mailfrom", "").rpartition("@")[2],
                                        domain):
            return True
    return False


def _aligned(signer: str, domain: str) -> bool:
    return bool(signer) and (domain == signer or domain.endswith("." + signer))
