"""The email package's address-list reader, without its quadratic group.

`email.utils.getaddresses` (every To, Cc, From, Reply-To parse.py reads) parses a group
(`team: a@x, b@x, ...;`) by copying the addresses found so far for each address it adds
(`returnlist = returnlist + self.getaddress()`, CPython 3.11). A group of 160,000
addresses took 168 s; To headers are joined before reading, so one unclosed group spans all
of them, and 50 MB of them would stall intake for days, on every re-read. This is the same
method with the list extended in place: the same result for every input
(tests/test_mime_addresses.py holds it against the original), in time linear in the list.

mailgate replaces the original when mailgate.core.mime is imported (its __init__), before
any mail is read.
"""

from __future__ import annotations

import email._parseaddr as parseaddr

ORIGINAL = parseaddr.AddrlistClass.getaddress
SPACE = " "


def getaddress(self: parseaddr.AddrlistClass) -> list[tuple[str, str]]:
    """AddrlistClass.getaddress of CPython 3.11.7, a group's addresses extended in place."""
    self.commentlist = []
    self.gotonext()

    oldpos = self.pos
    oldcl = self.commentlist
    plist = self.getphraselist()

    self.gotonext()
    returnlist: list[tuple[str, str]] = []

    if self.pos >= len(self.field):
        # Bad email address technically, no domain.
        if plist:
            returnlist = [(SPACE.join(self.commentlist), plist[0])]

    elif self.field[self.pos] in ".@":
        # email address is just an addrspec; started over
        self.pos = oldpos
        self.commentlist = oldcl
        addrspec = self.getaddrspec()
        returnlist = [(SPACE.join(self.commentlist), addrspec)]

    elif self.field[self.pos] == ":":
        # address is a group
        fieldlen = len(self.field)
        self.pos += 1
        while self.pos < len(self.field):
            self.gotonext()
            if self.pos < fieldlen and self.field[self.pos] == ";":
                self.pos += 1
                break
            returnlist += self.getaddress()  # the original: returnlist = returnlist + ...

    elif self.field[self.pos] == "<":
        # Address is a phrase then a route addr
        routeaddr = self.getrouteaddr()

        if self.commentlist:
            returnlist = [(SPACE.join(plist) + " (" + " ".join(self.commentlist) + ")",
                           routeaddr)]
        else:
            returnlist = [(SPACE.join(plist), routeaddr)]

    else:
        if plist:
            returnlist = [(SPACE.join(self.commentlist), plist[0])]
        elif self.field[self.pos] in self.specials:
            self.pos += 1

    self.gotonext()
    if self.pos < len(self.field) and self.field[self.pos] == ",":
        self.pos += 1
    return returnlist


def install() -> None:
    parseaddr.AddrlistClass.getaddress = getaddress  # type: ignore[method-assign]
