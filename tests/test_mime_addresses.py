"""Address lists are read in linear time (core/mime/linearaddresses.py), with exactly the
result of the email package's own reader, whose groups are quadratic in CPython 3.11."""

from __future__ import annotations

import email._parseaddr as parseaddr
import time
from email.utils import getaddresses

from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.core.mime import linearaddresses
from mailgate.core.mime.parse import parse


class OriginalAddressList(parseaddr.AddressList):
    getaddress = linearaddresses.ORIGINAL


def original(value: str) -> list[tuple[str, str]]:
    return OriginalAddressList(value).addresslist


def linear(value: str) -> list[tuple[str, str]]:
    return parseaddr.AddressList(value).addresslist


# The characters the reader decides on, and words it passes along.
PIECES = st.sampled_from([":", ";", ",", "<", ">", "@", ".", '"', "\\", "(", ")", "[", "]",
                          " ", "\t", "a", "b.c", "Ann", "g:", "=?utf-8?q?x?=", "é"])


@settings(max_examples=3000, deadline=None)
@given(st.lists(PIECES, max_size=30).map("".join))
def test_the_same_addresses_as_the_email_package(value: str) -> None:
    assert linear(value) == original(value)


def test_known_lists_read_alike() -> None:
    for value in ["Ann <a@example.com>, b@example.com", "team: a@x.org, B <b@x.org>;, c@x.org",
                  "undisclosed-recipients:;", "g: a@x, (comment) h: b@y;;", '"Doe, J" <j@x>',
                  "a@x (Ann)", "g: a@x", "", ":", "<>", "x:y:z;a@b"]:
        assert linear(value) == original(value), value


def test_the_email_package_uses_it_once_mailgate_reads_mail() -> None:
    assert parseaddr.AddrlistClass.getaddress is linearaddresses.getaddress
    assert getaddresses(["g: a@x.org, b@x.org;"]) == [("", "a@x.org"), ("", "b@x.org")]


def test_a_group_of_280_000_addresses_is_read_in_seconds() -> None:
    """An unclosed group over ten To fields of 200 kB (parse reads that much of each, and
    the email package joins them): 280,000 addresses in one group. The original copied the
    list for each address added: 160,000 took 168 s on the bench machine (3.6-4.5 x per
    doubling), these would take about 9 minutes; read linearly, a few seconds. The bound
    only tells the two apart."""
    value = "a@b.c, " * 28_000
    raw = (b"From: a@example.com\r\nTo: team: " + value.encode() + b"\r\n"
           + b"".join(b"To: " + value.encode() + b"\r\n" for _ in range(9)) + b"\r\nbody")
    started = time.monotonic()
    msg = parse(raw)
    assert time.monotonic() - started < 60
    assert [a.addr for a in msg.to] == ["a@b.c"]
