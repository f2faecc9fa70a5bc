"""Boundary lines are recognised in time independent of the nesting
(core/mime/linearboundaries.py): the same lines end the same parts as in the email
package's own reader, which tries every enclosing boundary on every line (CPython 3.11)."""

from __future__ import annotations

import re
import time
from email import feedparser
from email.message import Message
from email.policy import compat32

from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.core.mime import linearboundaries
from mailgate.core.mime.linearboundaries import Matchers
from mailgate.core.mime.parse import parse


def boundary_matcher(boundary: str):  # noqa: ANN201  (a bound re method)
    """What feedparser._parsegen pushes for a multipart with this boundary."""
    return re.compile("(?P<sep>" + re.escape("--" + boundary) + r")(?P<end>--)?(?P<ws>[ \t]*)"
                      r"(?P<linesep>\r\n|\r|\n)?$").match


BOUNDARIES = st.text(alphabet="-ab \t=", max_size=5)
LINES = st.builds(lambda body, end: body + end, st.text(alphabet="-ab \t=", max_size=9),
                  st.sampled_from(["", "\n", "\r", "\r\n"]))


@settings(max_examples=2000, deadline=None)
@given(st.lists(BOUNDARIES, max_size=4), st.booleans(), LINES)
def test_a_line_any_matcher_matches_is_one_that_may_end_a_part(
        boundaries: list[str], newline: bool, line: str) -> None:
    stack = [boundary_matcher(b) for b in boundaries]
    stack += [feedparser.NLCRE.match] if newline else []
    matchers = Matchers()
    for matcher in stack:
        matchers.count(matcher, +1)
    if any(matcher(line) for matcher in stack):
        assert matchers.may_end(line)


def test_boundaries_are_read_back_from_the_parser_s_matchers() -> None:
    assert linearboundaries.boundary_of(boundary_matcher("=_a.b+c")) == "=_a.b+c"
    assert linearboundaries.boundary_of(boundary_matcher("ends in a blank ")) is None
    assert linearboundaries.boundary_of(feedparser.NLCRE.match) is None


class OriginalLines(feedparser.BufferedSubFile):
    readline = linearboundaries.ORIGINAL_READLINE
    push_eof_matcher = linearboundaries.ORIGINAL_PUSH
    pop_eof_matcher = linearboundaries.ORIGINAL_POP


def read(text: str, original: bool) -> Message:
    parser = feedparser.FeedParser(policy=compat32)
    if original:
        parser._input = OriginalLines()
    parser.feed(text)
    return parser.close()


def shape(msg: Message) -> tuple:
    payload = msg.get_payload()
    return (msg.items(), [type(d).__name__ for d in msg.defects], msg.preamble, msg.epilogue,
            [shape(p) for p in payload] if isinstance(payload, list) else payload)


MIME_LINES = st.sampled_from([
    "Content-Type: multipart/mixed; boundary=a", 'Content-Type: multipart/mixed; boundary="a b"',
    "Content-Type: multipart/alternative; boundary=b", "Content-Type: message/delivery-status",
    "Content-Type: message/rfc822", "Content-Type: text/plain", "X-A: y", "", "text", "--",
    "--a", "--a--", "--a  ", "--a--\t", "--a b", "--a b--", "--b", "--b--", "--bb", "----"])


@settings(max_examples=1000, deadline=None)
@given(st.lists(MIME_LINES, max_size=40), st.sampled_from(["\n", "\r\n", "\r"]))
def test_mail_is_read_into_the_same_parts_as_by_the_email_package(
        lines: list[str], end: str) -> None:
    text = end.join(["Content-Type: multipart/mixed; boundary=a", "", *lines])
    expected = shape(read(text, original=True))
    shallow = linearboundaries.SHALLOW
    try:
        for linearboundaries.SHALLOW in (0, 1, shallow):  # counted from the first matcher on
            assert shape(read(text, original=False)) == expected
    finally:
        linearboundaries.SHALLOW = shallow


def test_the_email_package_uses_it_once_mailgate_reads_mail() -> None:
    assert feedparser.BufferedSubFile.push_eof_matcher is linearboundaries.push_eof_matcher
    assert feedparser.BufferedSubFile.pop_eof_matcher is linearboundaries.pop_eof_matcher
    lines = feedparser.BufferedSubFile()
    for i in range(linearboundaries.SHALLOW + 1):  # deep: its lines come through the count
        lines.push_eof_matcher(boundary_matcher(f"b{i}"))
    assert lines.readline.__func__ is linearboundaries.deep_readline
    lines.pop_eof_matcher()  # shallow again: the email package's own loop
    assert lines.readline.__func__ is linearboundaries.ORIGINAL_READLINE


def nested(levels: int, body: bytes) -> bytes:
    out = [b"From: a@example.com\r\nSubject: deep\r\n"]
    for i in range(levels):
        out.append(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i))
    out.append(b"Content-Type: text/plain\r\n\r\n" + body)
    out += [b"--b%d--\r\n" % i for i in reversed(range(levels))]
    return b"".join(out)


def test_a_long_part_900_multiparts_deep_is_read_in_seconds() -> None:
    """200,000 lines (600 kB) in the innermost part of 900 nested multiparts (the parser's
    recursion allows about 980). The email package tried all 900 boundaries on each line:
    50,000 such lines took 32 s on the bench machine, these would take over 2 minutes;
    now a line that cannot be a boundary line costs the same at any depth. The bound only
    tells the two apart."""
    raw = nested(900, b"x\r\n" * 100_000 + b"--x\r\n" * 100_000)
    started = time.monotonic()
    msg = parse(raw)
    assert time.monotonic() - started < 60
    assert "multipart nesting deeper than 50; inner parts ignored" in msg.defects
