"""Small readers for the structured headers that mark automatic and list mail.

Each reads a raw header value (Inbound.raw_headers: unfolded, never RFC 2047-decoded) by
its grammar: comments (RFC 5322 CFWS) are removed before a keyword is compared, an
address is an address only where the grammar puts one. Decoded text is never searched:
"Precedence: =?utf-8?q?bulk?=" is not bulk, and "(bulk) normal" is normal.
"""

from __future__ import annotations

import re
from email.utils import getaddresses

_ANGLE = re.compile(r"<([^<>]*)>")
_LIST_ID = re.compile(r"[!#-'*+\-/-9=?A-Z^-~]+(\.[!#-'*+\-/-9=?A-Z^-~]+)+")  # dot-atom


def strip_comments(value: str) -> str:
    """The value without its (nested, quoted-pair aware) comments; quoted strings kept."""
    if "(" not in value:
        return value
    out: list[str] = []
    depth, quoted, escaped = 0, False, False
    for char in value:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(char)
            continue
        if char == "\\":
            escaped = True
            if depth == 0:
                out.append(char)
        elif quoted:
            out.append(char)
            quoted = char != '"'
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif depth == 0:
            out.append(char)
            quoted = char == '"'
    return "".join(out)


def keyword(value: str) -> str:
    """The leading keyword of `keyword *(";" parameter)` (Auto-Submitted, Precedence),
    lower-cased; "" when there is none."""
    return strip_comments(value).split(";", 1)[0].strip().lower()


def keywords(value: str) -> tuple[str, ...]:
    """A comma-separated keyword list (X-Auto-Response-Suppress: "OOF, AutoReply")."""
    words = (w.strip().lower() for w in strip_comments(value).split(","))
    return tuple(w for w in words if w)


def has_value(value: str) -> bool:
    return bool(strip_comments(value).strip())


def is_yes(value: str) -> bool:
    """X-Autoreply-style flags: anything but an explicit no."""
    word = keyword(value)
    return bool(word) and word not in ("no", "false", "0", "off")


def addresses(value: str) -> tuple[str, ...]:
    """The addr-specs of an address list, mailbox or angle-addr, lower-cased."""
    try:
        pairs = getaddresses([value[:4000]])
    except Exception:
        return ()
    return tuple(addr.strip().lower() for _, addr in pairs if "@" in addr)


def mailbox_word(value: str) -> str:
    """The first mailbox's address, or its display name when the address is empty
    ("MAILER-DAEMON <>"), lower-cased; "" when there is neither."""
    try:
        pairs = getaddresses([value[:4000]])
    except Exception:
        return ""
    display, addr = pairs[0] if pairs else ("", "")
    return (addr or display).strip().lower()


def is_null_path(value: str) -> bool:
    """Return-Path: <> (RFC 5321's null reverse-path: bounces and auto-replies)."""
    return "".join(strip_comments(value).split()) == "<>"


def list_id(value: str) -> str | None:
    """RFC 2919: `[phrase] "<" list-label "." list-id-namespace ">"` -> the id."""
    found = _ANGLE.search(strip_comments(value))
    if found and _LIST_ID.fullmatch(found.group(1).strip()):
        return found.group(1).strip().lower()
    return None


def list_urls(value: str) -> tuple[str, ...]:
    """RFC 2369: a list of "<" URL ">" (List-Post may also say NO)."""
    stripped = strip_comments(value)
    if stripped.strip().upper() == "NO":
        return ("NO",)
    return tuple(u.strip() for u in _ANGLE.findall(stripped) if u.strip())


def local_part(address: str) -> str:
    """The local part, without a +tag (VERP: list-bounces+ann=example.com@host)."""
    return address.rpartition("@")[0].split("+", 1)[0].lower()
