"""DKIM-Signature fields read by RFC 6376's grammar (pure; no I/O).

mailgate verifies no signature: our MTA does, and says so in Authentication-Results. What
a pass vouches for is written in the signature itself: the header fields its h= tag lists
and the body, or only the body's first l= octets (RFC 6376 3.5). trust.py reads that here
to decide whether a pass pins a mail to its tickets.

The tag-list is read as section 3.2 writes it: tag=value pairs separated by ";", folding
whitespace around names, "=" and values and between the parts of a value; tag names are
case-sensitive; a tag given twice makes the field invalid (3.2: "MUST be treated as an
invalid signature"). Anything else that breaks the grammar makes the field unreadable
(`parse` returns None) rather than read in part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_CHARS = 8192  # a 4096-bit key's b= is 700 characters; h= lists a few dozen names

_SPACE = re.compile(r"(?:[ \t]|\r\n(?=[ \t]))*")  # *(WSP / FWS), possibly empty
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # tag-name = ALPHA *ALNUMPUNC
_TVAL = re.compile(r"[!-:<-~]+")  # tval = 1*VALCHAR: printable ASCII but ";"
_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 field-name: printable ASCII but ":"
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_LENGTH = re.compile(r"[0-9]{1,76}")
_WHITESPACE = re.compile(r"[ \t\r\n]+")
_REQUIRED = ("v", "a", "b", "bh", "d", "h", "s")


@dataclass(frozen=True, slots=True)
class Signature:
    domain: str  # d=, lower-case
    selector: str  # s=, lower-case
    identity: str  # i=, as written; "@" + domain when absent (3.5)
    signed: tuple[str, ...]  # h=: field names, lower-case, in order, repeats kept
    b: str  # the signature data, folding whitespace removed
    body_length: int | None = None  # l=: octets of the body signed; None: all of it

    def instances(self, name: str) -> int:
        """How many instances of field `name` (lower-case) the signature covers: the
        bottom-most ones, one per listing; a listing beyond those present signs the
        field as absent (5.4.2)."""
        return self.signed.count(name)


def tags(value: str) -> dict[str, str] | None:
    """tag-list = tag-spec *( ";" tag-spec ) [ ";" ]: each tag's value as written, its
    inner folding whitespace kept; None when the grammar is broken or a tag repeats."""
    if len(value) > MAX_CHARS:
        return None
    found: dict[str, str] = {}
    pos = _skip(value, 0)
    while True:
        name = _NAME.match(value, pos)
        if name is None:
            return None
        pos = _skip(value, name.end())
        if value[pos:pos + 1] != "=":
            return None
        start = _skip(value, pos + 1)
        pos = _tag_value_end(value, start)
        if name.group() in found:
            return None
        found[name.group()] = value[start:pos]
        pos = _skip(value, pos)
        if pos == len(value):
            return found
        if value[pos] != ";":
            return None
        pos = _skip(value, pos + 1)
        if pos == len(value):  # a ";" after the last tag-spec
            return found


def parse(value: str) -> Signature | None:
    """A DKIM-Signature field's value (folded or not), or None when it is not one a
    verifier could have accepted: the grammar broken, a tag repeated, a required tag
    missing, v= not 1, h=, b= or l= malformed."""
    found = tags(value)
    if found is None or found.get("v") != "1" or any(t not in found for t in _REQUIRED):
        return None
    signed = _field_names(found["h"])
    b = _WHITESPACE.sub("", found["b"])
    if signed is None or not _BASE64.fullmatch(b) or not found["d"] or not found["s"]:
        return None
    body_length = None
    if "l" in found:
        if not _LENGTH.fullmatch(found["l"]):
            return None
        body_length = int(found["l"])
    domain = found["d"].lower()
    return Signature(domain, found["s"].lower(), found.get("i") or f"@{domain}", signed, b,
                     body_length)


def _skip(value: str, pos: int) -> int:
    found = _SPACE.match(value, pos)
    return found.end() if found else pos


def _tag_value_end(value: str, pos: int) -> int:
    """Where tag-value = [ tval *( 1*(WSP / FWS) tval ) ] starting at `pos` ends; the
    whitespace after its last tval is not part of it."""
    end = pos
    while True:
        tval = _TVAL.match(value, end)
        if tval is None:
            return end
        end = tval.end()
        after = _skip(value, end)
        if after == end or _TVAL.match(value, after) is None:
            return end
        end = after


def _field_names(value: str) -> tuple[str, ...] | None:
    """sig-h-tag's value: hdr-name *( [FWS] ":" [FWS] hdr-name ), lower-cased (field
    names compare case-insensitively, 3.5)."""
    names = []
    for part in value.split(":"):
        name = _WHITESPACE.sub("", part)
        if not _FIELD_NAME.fullmatch(name) or name != part.strip(" \t\r\n"):
            return None  # empty, or whitespace inside a name
        names.append(name.lower())
    return tuple(names)
