"""One spelling per mailbox (pure): what limits and keys count on.

`Victim+1@Example.com` and `victim+2@example.com` reach the same person, so automatic mail
to either draws on one budget and a reply key issued to one is valid for the other.
"""

from __future__ import annotations


def canonical(addr: str) -> str:
    """The address with its plus tag removed and case folded."""
    local, at, domain = addr.strip().partition("@")
    return f"{local.split('+', 1)[0]}{at}{domain}".casefold()


def domain_of(addr: str) -> str:
    return addr.rpartition("@")[2].strip().casefold()
