"""Authentication-Results (RFC 8601) read by its grammar (pure; no I/O).

Every byte of the header can be the sender's: an MTA copies the envelope sender, the HELO
name and reasons into the header it writes. So the header is read exactly as RFC 8601
section 2.2 writes it -- comments that nest and hold quoted-pairs, quoted strings with
backslash escapes, addresses with quoted local parts, folding whitespace -- and it is never
RFC 2047-decoded: an encoded word is text inside a value, not structure. A header that
breaks the grammar is not read at all (`parse` returns None), so nothing in it can count.

Deliberate departures from the ABNF, none of which can move a boundary (";", a comment, a
quoted string, whitespace): an unquoted property value may also hold the tspecials
"/ : = ? [ ]" (verifiers write base64 in header.b, IPv6 and address literals unquoted);
non-ASCII (RFC 6532) is allowed in comments, quoted strings and local parts; CFWS inside an
address is refused (RFC 5322 allows it, no MTA writes it, refusing only makes the header
unreadable).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_CHARS = 16_384  # longer is not an MTA's header; refusing it costs nothing

_WSP = " \t"
_KEYWORD = re.compile(r"[A-Za-z0-9-]*[A-Za-z0-9]")  # RFC 5321 Keyword (Ldh-str)
_DIGITS = re.compile(r"[0-9]{1,9}")  # a version; more digits than int() should parse are refused
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`{|}~-]+")  # RFC 2045 token: no tspecials
_BARE_VALUE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`{|}~/:=?\[\]-]+")  # token, and tspecials seen bare
# Whatever could be an unquoted property value: stops at every delimiter of the grammar.
_RUN = re.compile(r"[^\x00-\x20\x7f()<>,;\\\"]+")
# RFC 5322 atext and RFC 6532 non-ASCII, written as what it is not: printable ASCII but
# the specials. The same set as [A-Za-z0-9!#...~\x80-\U0010ffff-], which takes re ~20 ms
# to compile (it walks the range code point by code point) on every daemon start.
_ATEXT = r'[^\x00-\x20"(),.:;<>@\[\\\]\x7f]'
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")  # RFC 6376 domain-name: at least one dot


@dataclass(frozen=True, slots=True)
class Property:
    ptype: str  # lower-case: "smtp", "header", "policy" ...
    property: str  # lower-case: "mailfrom", "d", "from" ...
    value: str  # a quoted string's content; an address or a token as written
    domain: str = ""  # lower-case, when written as a domain name or [local-part]@domain


@dataclass(frozen=True, slots=True)
class Result:
    method: str  # lower-case: "dkim", "spf", "dmarc" ...
    result: str  # lower-case: "pass", "fail" ...
    reason: str = ""
    properties: tuple[Property, ...] = ()
    method_version: int = 1


@dataclass(frozen=True, slots=True)
class AuthResults:
    authserv_id: str  # as written, quotes removed; compare it ASCII-case-insensitively
    results: tuple[Result, ...] = ()  # empty for "none"
    version: int = 1


class _Invalid(Exception):
    """The header breaks the grammar."""


def parse(header: str) -> AuthResults | None:
    """One unfolded Authentication-Results value, or None when it breaks the grammar."""
    if len(header) > MAX_CHARS:
        return None
    try:
        return _payload(_Reader(header))
    except _Invalid:
        return None


def leading_id(header: str) -> str | None:
    """The authserv-id a header opens with, spelled as MTAs write their own and as the
    rules that strip forged ones match it: after whitespace only, a token or a quoted
    string without backslash escapes. None for any other spelling, even where RFC 8601
    reads our id in it ("(c) mx.example.com;", "mx.ex\\ample.com" quoted): a Postfix
    header_checks rule or a filter matching the id as written leaves such a header in,
    so it must not pass for ours. Known even when the rest does not parse: a header of
    our own MTA that cannot be read must not be mistaken for somebody else's."""
    reader = _Reader(header[:MAX_CHARS])
    while reader.peek() and reader.peek() in _WSP:
        reader.pos += 1
    start = reader.pos
    try:
        written = _value(reader)
    except _Invalid:
        return None
    return None if "\\" in reader.text[start:reader.pos] else written


class _Reader:
    """A position in the header and the lexical pieces RFC 5322 and RFC 2045 define."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise _Invalid(f"{char!r} expected at {self.pos}")
        self.pos += 1

    def match(self, pattern: re.Pattern[str]) -> str:
        found = pattern.match(self.text, self.pos)
        if not found:
            raise _Invalid(f"{pattern.pattern} expected at {self.pos}")
        self.pos = found.end()
        return found.group()

    def cfws(self) -> bool:
        """Skip whitespace and comments; True when there was any."""
        start = self.pos
        while True:
            char = self.peek()
            if char and char in _WSP:
                self.pos += 1
            elif char == "(":
                self._comment()
            else:
                return self.pos > start

    def _comment(self) -> None:
        # Iterative on purpose: nesting depth is the sender's to choose.
        depth = 0
        while True:
            char = self._next()
            if char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
                if depth == 0:
                    return
            elif char == "\\":
                self._quoted_pair()
            elif not _printable(char) and char not in _WSP:
                raise _Invalid(f"control character in a comment at {self.pos}")

    def quoted_string(self) -> str:
        self.expect('"')
        content: list[str] = []
        while True:
            char = self._next()
            if char == '"':
                return "".join(content)
            if char == "\\":
                content.append(self._quoted_pair())
            elif _printable(char) or char in _WSP:
                content.append(char)
            else:
                raise _Invalid(f"control character in a quoted string at {self.pos}")

    def _quoted_pair(self) -> str:
        char = self._next()
        if not _printable(char) and char not in _WSP:
            raise _Invalid(f"bad quoted-pair at {self.pos}")
        return char

    def _next(self) -> str:
        if self.at_end():
            raise _Invalid("unterminated comment or quoted string")
        self.pos += 1
        return self.text[self.pos - 1]


def _printable(char: str) -> bool:
    """VCHAR, with RFC 6532's non-ASCII (undeclared 8-bit bytes arrive as U+FFFD)."""
    return "!" <= char <= "~" or char >= "\x80"


def _payload(reader: _Reader) -> AuthResults:
    reader.cfws()
    authserv_id = _value(reader)
    version = 1
    if reader.cfws() and _DIGITS.match(reader.text, reader.pos):
        version = int(reader.match(_DIGITS))
        reader.cfws()
    reader.expect(";")  # both "none" and the first resinfo start here
    reader.cfws()
    if _at_none(reader):
        return AuthResults(authserv_id, (), version)
    results = [_resinfo(reader)]
    while not reader.at_end():
        reader.expect(";")
        reader.cfws()
        results.append(_resinfo(reader))
    return AuthResults(authserv_id, tuple(results), version)


def _at_none(reader: _Reader) -> bool:
    """ "none" and nothing after it; a method named "none..." is a resinfo."""
    start = reader.pos
    if _KEYWORD.match(reader.text, start) is None:
        return False
    if reader.match(_KEYWORD).lower() == "none":
        reader.cfws()
        if reader.at_end():
            return True
    reader.pos = start
    return False


def _resinfo(reader: _Reader) -> Result:
    """methodspec [CFWS reasonspec] [CFWS 1*propspec], after the ";" and its CFWS."""
    method, method_version, result = _methodspec(reader)
    spaced = reader.cfws()
    reason = _reason(reader) if spaced else None
    if reason is not None:
        spaced = reader.cfws()
    properties: list[Property] = []
    while _KEYWORD.match(reader.text, reader.pos):
        if not spaced:  # reason="x"header.d=y: the grammar wants CFWS in between
            raise _Invalid(f"CFWS expected before a property at {reader.pos}")
        properties.append(_propspec(reader))
    return Result(method, result, reason or "", tuple(properties), method_version)


def _methodspec(reader: _Reader) -> tuple[str, int, str]:
    """method [/ version] = result, as (method, version, result)."""
    method = reader.match(_KEYWORD).lower()
    version = 1
    reader.cfws()
    if reader.peek() == "/":
        reader.pos += 1
        reader.cfws()
        version = int(reader.match(_DIGITS))
        reader.cfws()
    reader.expect("=")
    reader.cfws()
    return method, version, reader.match(_KEYWORD).lower()


def _reason(reader: _Reader) -> str | None:
    """reason = value, if that comes next; else nothing is consumed."""
    start = reader.pos
    found = _KEYWORD.match(reader.text, start)
    if found is None or found.group().lower() != "reason":
        return None
    reader.pos = found.end()
    reader.cfws()
    if reader.peek() != "=":  # a ptype called "reason": "reason.x=y"
        reader.pos = start
        return None
    reader.pos += 1
    reader.cfws()
    return _value(reader)


def _propspec(reader: _Reader) -> Property:
    ptype = reader.match(_KEYWORD).lower()
    reader.cfws()
    reader.expect(".")
    reader.cfws()
    name = reader.match(_KEYWORD).lower()
    reader.cfws()
    reader.expect("=")
    reader.cfws()
    value, domain = _pvalue(reader)
    reader.cfws()
    return Property(ptype, name, value, domain)


def _pvalue(reader: _Reader) -> tuple[str, str]:
    """value / [[local-part] "@"] domain-name, as (value, domain)."""
    start = reader.pos
    if reader.peek() == '"':
        content = reader.quoted_string()
        if reader.peek() != "@":
            return content, ""
        reader.pos += 1
        domain = reader.match(_RUN)
        if not _DOMAIN.fullmatch(domain):
            raise _Invalid(f"not a domain name: {domain!r}")
        return reader.text[start:reader.pos], domain.lower()
    return _plain_pvalue(reader.match(_RUN))


def _plain_pvalue(run: str) -> tuple[str, str]:
    local, at, domain = run.rpartition("@")
    if at:
        if not _DOMAIN.fullmatch(domain) or (local and not _DOT_ATOM.fullmatch(local)):
            raise _Invalid(f"not an address: {run!r}")
        return run, domain.lower()
    if not _BARE_VALUE.fullmatch(run):
        raise _Invalid(f"not a value: {run!r}")
    return run, run.lower() if _DOMAIN.fullmatch(run) else ""


def _value(reader: _Reader) -> str:
    """RFC 2045 value: token / quoted-string."""
    if reader.peek() == '"':
        return reader.quoted_string()
    return reader.match(_TOKEN)
