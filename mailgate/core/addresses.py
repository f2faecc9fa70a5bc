"""One spelling per mailbox (pure): what limits and keys count on.

`Victim+1@Example.com` and `victim+2@example.com` reach the same person, so automatic mail
to either draws on one budget and a reply key issued to one is valid for the other.

Only ASCII letters are folded. Unicode case rules make distinct mailboxes one: str.lower()
turns the KELVIN SIGN into "k", str.casefold() also turns LONG S into "s", "\ufb01" into
"fi" and "\u00df" into "ss". `fran\u212a@example.com` is somebody else's (SMTPUTF8)
mailbox, not frank@example.com's, and must never be read as his.
"""

from __future__ import annotations

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold_case(text: str) -> str:
    """ASCII letters lower-cased, every other character as it is."""
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)


def strip_plus(addr: str) -> str:
    """The address without its plus tag: it-help+laptop@ is it-help@."""
    local, at, domain = addr.partition("@")
    return f"{local.split('+', 1)[0]}{at}{domain}"


def canonical(addr: str) -> str:
    """The address with its plus tag removed and ASCII case folded."""
    return fold_case(strip_plus(addr.strip()))


def budget_mailbox(addr: str) -> str:
    """The mailbox as a budget of automatic mail counts it: plus tag removed and case
    folded by every Unicode rule (casefold()). Broader than canonical() on purpose: to a
    budget, joining two mailboxes costs a little mail, while splitting one (J\u00d6RG@
    and j\u00f6rg@, which a server may well deliver to one person) would multiply it."""
    return strip_plus(addr.strip()).casefold()


def domain_of(addr: str) -> str:
    return addr.rpartition("@")[2].strip().casefold()


def within(domain: str, domains: frozenset[str]) -> bool:
    """The domain is one of these or a subdomain of one."""
    return any(domain == d or domain.endswith("." + d) for d in domains)


def clean_address(addr: str) -> str:
    """ASCII-lower-cased local@domain, or "" if addr is not a plausible address."""
    addr = fold_case(addr.strip().strip("<>"))
    local, at, domain = addr.rpartition("@")
    if not at or not local or ("." not in domain and domain != "localhost"):
        return ""
    if any(c in addr for c in " \t\r\n\x00<>,;\"()") or len(addr) > 320:
        return ""
    return addr
