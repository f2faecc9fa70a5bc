"""One spelling per mailbox (pure): what limits and keys count on.

`Victim+1@Example.com` and `victim+2@example.com` reach the same person, so automatic mail
to either draws on one budget and a reply key issued to one is valid for the other.
"""

from __future__ import annotations


def strip_plus(addr: str) -> str:
    """The address without its plus tag: it-help+laptop@ is it-help@."""
    local, at, domain = addr.partition("@")
    return f"{local.split('+', 1)[0]}{at}{domain}"


def canonical(addr: str) -> str:
    """The address with its plus tag removed and case folded."""
    return strip_plus(addr.strip()).casefold()


def domain_of(addr: str) -> str:
    return addr.rpartition("@")[2].strip().casefold()


def within(domain: str, domains: frozenset[str]) -> bool:
    """The domain is one of these or a subdomain of one."""
    return any(domain == d or domain.endswith("." + d) for d in domains)


def clean_address(addr: str) -> str:
    """Lower-cased local@domain, or "" if addr is not a plausible address."""
    addr = addr.strip().strip("<>").lower()
    local, at, domain = addr.rpartition("@")
    if not at or not local or ("." not in domain and domain != "localhost"):
        return ""
    if any(c in addr for c in " \t\r\n\x00<>,;\"()") or len(addr) > 320:
        return ""
    return addr
