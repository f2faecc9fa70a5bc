#!/usr/bin/env python3
"""How reading hostile mail scales with its size: every shape at n, 2n, 4n, 8n.

    PYTHONPATH=$PWD .venv/bin/python bench/hostile_scaling.py [--shapes a,b] [--stages ...]
        [--budget 30] [--steps 4] [--scale 1.0] [--profile SHAPE]

"Every byte of mail is the attacker's": a mail whose *shape* makes reading it take time
that grows faster than its size stalls intake on every re-read. For each shape (a
function of a count n) it times the stages of reading:

- read: intake.read.read_mail (parse, files.extract, relay parts, packing, searches)
- lighten: core/mime/largemail.lighten (mail over LARGE takes that path)
- post: what the pipeline does with the parsed Inbound: classify, thread_hints,
  clean_subject, trim_reply, parse_commands, proven_refs, sender_trust, routing searches
- deliver: the whole pipeline (tests.factories.harness, h.deliver(raw))

and prints shape, stage, n, bytes, seconds and the ratio per doubling; a ratio above
2.5 (with more than 0.2 s at the larger size) is flagged `SUPERLINEAR`. A shape stops
doubling once a stage took longer than --budget seconds. --profile SHAPE prints the
cProfile of the largest size's read and deliver for one shape.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/profile.py would stand in for the stdlib's profile module that cProfile imports.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import base64  # noqa: E402
import cProfile  # noqa: E402
import pstats  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

from mailgate.core.classify import LoopContext, classify  # noqa: E402
from mailgate.core.commands import parse_commands  # noqa: E402
from mailgate.core.mime import message as message_module  # noqa: E402
from mailgate.core.mime import parse as parse_module  # noqa: E402
from mailgate.core.mime.largemail import lighten  # noqa: E402
from mailgate.core.replykey import proven_refs  # noqa: E402
from mailgate.core.rulesearch import Search, search_ahead  # noqa: E402
from mailgate.core.trim import trim_reply  # noqa: E402
from mailgate.core.trust import TrustPolicy, sender_trust  # noqa: E402
from mailgate.intake.read import Asked, read_mail  # noqa: E402
from mailgate.service.log import setup_logging  # noqa: E402
from mailgate.tickets.conversation import clean_subject, thread_hints  # noqa: E402
from tests.factories import TEST_KEYS, harness  # noqa: E402

HEAD = b"From: Ann <ann@example.com>\r\nTo: it-help@example.com\r\n"
FLAG_RATIO = 2.5
SEARCHES = (Search(r"printer|toner", 2, "subject"), Search(r"urgent.*outage", 2, "body"))
ASKED = Asked(200_000, 10 * 1024 * 1024, SEARCHES, 25 * 1024 * 1024)


def simple(headers: bytes, body: bytes = b"body\r\n") -> bytes:
    return HEAD + headers + b"\r\n" + body


def multipart(parts: list[bytes] | bytes, boundary: bytes = b"b", extra: bytes = b"") -> bytes:
    joined = parts if isinstance(parts, bytes) else b"".join(
        b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
    return (HEAD + b"Subject: parts\r\n" + extra
            + b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n'
            + joined + b"--" + boundary + b"--\r\n")


def nested(levels: int) -> bytes:
    out = [HEAD + b"Subject: deep\r\n"]
    for i in range(levels):
        out.append(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i))
    out.append(b"Content-Type: text/plain\r\n\r\nbottom\r\n")
    out += [b"--b%d--\r\n" % i for i in reversed(range(levels))]
    return b"".join(out)


def text_part(body: bytes, ctype: bytes = b"text/plain", extra: bytes = b"") -> bytes:
    return b"Content-Type: " + ctype + b"\r\n" + extra + b"\r\n" + body


def b64_attachment(name: bytes, data: bytes) -> bytes:
    return (b"Content-Type: application/octet-stream; name=\"" + name + b"\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(data))


def tnef(attributes: int) -> bytes:
    """A winmail.dat of `attributes` message attributes (level 1) and one file."""
    def attr(level: int, kind: int, data: bytes) -> bytes:
        return (bytes([level]) + kind.to_bytes(4, "little") + len(data).to_bytes(4, "little")
                + data + (sum(data) & 0xFFFF).to_bytes(2, "little"))
    out = [b"\x78\x9f\x3e\x22", (1).to_bytes(2, "little")]
    out += [attr(1, 0x00018004, b"subject\x00") for _ in range(attributes)]
    out += [attr(2, 0x00069002, b"\x00" * 8), attr(2, 0x00018010, b"a.txt\x00"),
            attr(2, 0x0006800F, b"hello")]
    return b"".join(out)


# Each shape: (count at the first size, count -> mail).
SHAPES: dict[str, tuple[int, Callable[[int], bytes]]] = {
    "many distinct headers": (20_000, lambda n: simple(b"".join(
        b"X-H%d: v\r\n" % i for i in range(n)))),
    "many Received fields": (20_000, lambda n: simple(
        b"Received: from a.example (a [10.0.0.1]) by mx.example; Mon, 1 Jan 2026\r\n" * n)),
    "many To fields": (20_000, lambda n: simple(b"To: u@example.com\r\n" * n)),
    "many Auth-Results fields": (20_000, lambda n: simple(
        b"Authentication-Results: mx.example; spf=pass smtp.mailfrom=a@example.com\r\n" * n)),
    "long folded subject": (50_000, lambda n: simple(
        b"Subject: start" + b"\r\n word" * n + b"\r\n")),
    "huge To list": (20_000, lambda n: simple(
        b"To: " + b", ".join(b"u%d@example.com" % i for i in range(n)) + b"\r\n")),
    "To of display names": (10_000, lambda n: simple(
        b"To: " + b", ".join(b'"Doe, J %d" <u%d@example.com>' % (i, i) for i in range(n))
        + b"\r\n")),
    "To of encoded words": (10_000, lambda n: simple(
        b"To: " + b", ".join(b"=?utf-8?q?J=C3=B6rg_%d?= <u%d@example.com>" % (i, i)
                             for i in range(n)) + b"\r\n")),
    "To group": (5_000, lambda n: simple(
        b"To: team: " + b"a@b.c, " * n + b"\r\n")),
    "To nested comments": (10_000, lambda n: simple(
        b"To: u@example.com " + b"(" * n + b")" * n + b"\r\n")),
    "To unclosed quotes": (20_000, lambda n: simple(b"To: " + b'"a, ' * n + b"\r\n")),
    "To many angles": (20_000, lambda n: simple(b"To: " + b"<" * n + b"\r\n")),
    "From many @": (20_000, lambda n: simple(b"Reply-To: " + b"a@" * n + b"\r\n")),
    "many encoded words": (10_000, lambda n: simple(
        b"Subject: " + b" ".join(b"=?utf-8?q?w%d?=" % i for i in range(n)) + b"\r\n")),
    "encoded-word starts": (50_000, lambda n: simple(b"Subject: " + b"=?" * n + b"\r\n")),
    "RFC 2231 filename": (20_000, lambda n: multipart([
        text_part(b"see file"),
        b"Content-Type: application/octet-stream\r\nContent-Disposition: attachment; "
        + b"; ".join(b"filename*%d*=utf-8''a%%C3%%A4" % i for i in range(n)) + b"\r\n\r\nx"])),
    "deep nesting": (500, nested),
    "deep nesting long part": (5_000, lambda n: nested(900).replace(
        b"bottom\r\n", b"x\r\n" * n)),
    "many parts": (5_000, lambda n: multipart(
        [text_part(b"text")] + [b"Content-Type: application/x-a\r\n\r\nx"] * n)),
    "many empty multiparts": (5_000, lambda n: multipart(
        [text_part(b"text")]
        + [b'Content-Type: multipart/mixed; boundary="c"\r\n\r\n--c--'] * n)),
    "near boundaries": (50_000, lambda n: multipart(
        [text_part(b"--bx\r\n--b x\r\n-- b\r\n--bb\r\n" * n)])),
    "long boundary": (100_000, lambda n: multipart(
        [text_part(b"hello")], boundary=b"x" * n)),
    "body of -- lines": (100_000, lambda n: multipart([text_part(b"--\r\n" * n)])),
    "html deep nesting": (20_000, lambda n: simple(
        b"Content-Type: text/html\r\n", b"<div>" * n + b"x" + b"</div>" * n)),
    "html many tags": (50_000, lambda n: simple(
        b"Content-Type: text/html\r\n", b"<p>a</p><br>" * n)),
    "html huge attribute": (200_000, lambda n: simple(
        b"Content-Type: text/html\r\n", b'<a href="' + b"x" * n + b'">l</a>')),
    "html many attributes": (20_000, lambda n: simple(
        b"Content-Type: text/html\r\n", b"<a " + b'x="1" ' * n + b">l</a>")),
    "html many entities": (50_000, lambda n: simple(
        b"Content-Type: text/html\r\n", b"&amp;&#233;&lt;&bogus;" * n)),
    "html unclosed comment": (50_000, lambda n: simple(
        b"Content-Type: text/html\r\n", b"<!-- " + b"<a> " * n)),
    "html unterminated tags": (2_500, lambda n: simple(
        b"Content-Type: text/html\r\n", b"<p>x</p>" + b"<a " * n)),
    "html unclosed comments": (2_500, lambda n: simple(
        b"Content-Type: text/html\r\n", b"<p>x</p>" + b"<!--" * n)),
    "html unclosed tag": (50_000, lambda n: simple(
        b"Content-Type: text/html\r\n", b"<a " + b"b " * n)),
    "html many lt": (50_000, lambda n: simple(
        b"Content-Type: text/html\r\n", b"<" * n)),
    "html nested citations": (20_000, lambda n: simple(  # lines x quote depth
        b"Content-Type: text/html\r\n", b'<blockquote type="cite">line<br>' * n)),
    "html stray end tags": (20_000, lambda n: simple(
        b"Content-Type: text/html\r\n", b"<div>" * n + b"</span>" * n + b"x")),
    "html unclosed cells": (20_000, lambda n: simple(
        b"Content-Type: text/html\r\n", b"<table><tr>" + b"<td><p><li>x" * n)),
    "html blanks in a style": (100_000, lambda n: simple(
        b"Content-Type: text/html\r\n", b'<div style="display:a' + b" " * n
        + b"b !" + b" " * n + b"x; opacity:" + b"0" * n + b'y">shown</div>')),
    "enriched many lt": (200_000, lambda n: simple(
        b"Content-Type: text/enriched\r\n", b"<" * n)),
    "enriched unclosed params": (50_000, lambda n: simple(
        b"Content-Type: text/enriched\r\n", b"<param>" * n)),
    "enriched line breaks": (200_000, lambda n: simple(
        b"Content-Type: text/enriched\r\n", b"a\r\n\r\n" * n)),
    "media type then blanks": (50_000, lambda n: multipart([
        b"Content-Type: text/plain" + b" " * n + b"x\r\n\r\ntext"])),
    "folded Content-Type": (20_000, lambda n: multipart([
        b"Content-Type: text/plain;" + b"\r\n a=b;" * n + b"\r\n\r\ntext"])),
    "html blank lines": (50_000, lambda n: simple(
        b"Content-Type: text/html\r\n", b"<p>\r\n\r\n\r\n" * n)),
    "flowed soft breaks": (50_000, lambda n: simple(
        b"Content-Type: text/plain; format=flowed\r\n", b"word \r\n" * n + b"end\r\n")),
    "flowed quoted": (50_000, lambda n: simple(
        b"Content-Type: text/plain; format=flowed; delsp=yes\r\n", b">>> w \r\n" * n)),
    "uuencode begin blanks": (2_500, lambda n: simple(
        b"Subject: uu\r\n", b"begin 644 a" + b" \t" * n + b"x\r\r\nend\r\n")),
    "uuencode begin lines": (20_000, lambda n: simple(
        b"Subject: uu\r\n", b"begin 644 a.txt\r\nM86)C\r\n" * n)),
    "uuencode unclosed": (20_000, lambda n: simple(
        b"Subject: uu\r\n", b"begin 644 a.txt\r\n" + b"M86)C86)C86)C\r\n" * n)),
    "uuencode blank runs": (20_000, lambda n: simple(
        b"Subject: uu\r\n", (b"begin 644 a.txt\r\n" + b"\r\n" * 20) * n)),
    "tnef many attributes": (20_000, lambda n: multipart([
        text_part(b"see attached"), b"Content-Type: application/ms-tnef; name=winmail.dat\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(tnef(n))])),
    "long line": (1_000_000, lambda n: simple(b"Subject: l\r\n", b"x" * n)),
    "bare CRs": (500_000, lambda n: simple(b"Subject: cr\r\n", b"a\r" * n)),
    "only CRs": (500_000, lambda n: simple(b"Subject: cr\r\n", b"\r" * n)),
    "bare LFs in header": (50_000, lambda n: HEAD + b"Subject: x\n" + b"X-A: b\n" * n + b"\nx"),
    "QP soft breaks": (200_000, lambda n: simple(
        b"Content-Transfer-Encoding: quoted-printable\r\n", b"a=\r\n" * n)),
    "QP many escapes": (200_000, lambda n: simple(
        b"Content-Transfer-Encoding: quoted-printable\r\n", b"=C3=A4=\r\n" * n)),
    "QP padded soft breaks": (200_000, lambda n: simple(
        b"Content-Transfer-Encoding: quoted-printable\r\n", b"a= \t \r\n" * n)),
    "QP bare-CR soft breaks": (200_000, lambda n: simple(
        b"Content-Transfer-Encoding: quoted-printable\r\n", b"a=\r" * n)),
    "S/MIME nested indefinite": (20_000, lambda n: simple(
        b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n"
        b"Content-Transfer-Encoding: base64\r\n",
        base64.encodebytes(b"\x30\x80" * n + b"\x00\x00" * n))),
    "S/MIME content in many pieces": (20_000, lambda n: simple(
        b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n"
        b"Content-Transfer-Encoding: base64\r\n", base64.encodebytes(
            b"\x30\x80\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02\xa0\x80\x30\x80"
            b"\x02\x01\x01\x31\x00\x30\x80\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x01"
            b"\xa0\x80\x24\x80" + b"\x04\x01x" * n + b"\x00\x00" * 5))),
    "attribution verbs and dates": (20_000, lambda n: simple(
        b"Subject: Re: x\r\n", b"top\r\n" + b"Ann wrote at 10:00 ha scritto napisal:\r\n" * n)),
    "Outlook labels in many languages": (20_000, lambda n: simple(
        b"Subject: Re: x\r\n",
        b"top\r\n" + b"Da: a\r\nVon: b\r\n\xe5\xb7\xae\xe5\x87\xba: c\r\n" * n)),
    "base64 garbage": (200_000, lambda n: simple(
        b"Content-Transfer-Encoding: base64\r\n", b"!@#$%^&*()=\r\n" * n)),
    "CTE with trailing space": (2_000, lambda n: multipart([
        text_part(b"text"), b"Content-Type: application/x-a; name=a.bin\r\n"
        b"Content-Transfer-Encoding: base64 \r\nX-Long: " + b"a, " * (n * 10) + b"\r\n\r\nQUJD"])),
    "attached message long To": (2_000, lambda n: multipart([
        text_part(b"text"), b"Content-Type: message/rfc822\r\n\r\nTo: "
        + b", ".join(b"u%d@example.com" % i for i in range(n * 10)) + b"\r\n\r\nx"])),
    "relay part long header": (2_000, lambda n: multipart([
        text_part(b"text"), b"Content-Type: application/x-a; name=a.bin\r\nX-Long: "
        + b"a;" * (n * 10) + b"\r\n\r\nx"])),
    "quoted reply levels": (20_000, lambda n: simple(
        b"Subject: Re: x\r\n", b"top\r\n" + b"".join(b"> " * (i % 50) + b"q\r\n"
                                                     for i in range(n)))),
    "deep quote line": (200_000, lambda n: simple(b"Subject: Re: x\r\n", b"> " * n)),
    "attribution-like lines": (20_000, lambda n: simple(
        b"Subject: Re: x\r\n", b"On " + b"x " * 150 + b"\r\n" * 1 + b"On a\r\n" * n)),
    "From-like lines": (20_000, lambda n: simple(
        b"Subject: Re: x\r\n", b"top\r\n" + b"From: a\r\n" * n)),
    "command lines": (50_000, lambda n: simple(b"Subject: Re: x\r\n", b"#note x\r\n" * n)),
    "References 100k ids": (20_000, lambda n: simple(
        b"References: " + b" ".join(b"<id%d@example.com>" % i for i in range(n)) + b"\r\n")),
    "References of keys": (20_000, lambda n: simple(
        b"References: " + b" ".join(b"<mgk1.k.abc.IT-%d.aaaaaaaaaaaaaaaaaaaa.n@x>" % i
                                    for i in range(n)) + b"\r\n")),
    "In-Reply-To of brackets": (50_000, lambda n: simple(b"In-Reply-To: " + b"<" * n + b"\r\n")),
    "Auth-Results resinfo": (2_000, lambda n: simple(
        b"Authentication-Results: mx.example; "
        + b"; ".join(b"spf=pass smtp.mailfrom=a@example.com" for _ in range(n)) + b"\r\n")),
    "Auth-Results comments": (20_000, lambda n: simple(
        b"Authentication-Results: mx.example " + b"(" * n + b")" * n + b"; none\r\n")),
    "Auto-Submitted comments": (50_000, lambda n: simple(
        b"Auto-Submitted: " + b"(" * n + b"\\)" * n + b" no\r\n")),
    "List-Id angles": (50_000, lambda n: simple(b"List-Id: " + b"<a" * n + b"\r\n")),
    "subject prefixes": (10_000, lambda n: simple(
        b"Subject: " + b"Re: Fwd: [IT-1] " * n + b"x\r\n")),
    "ticket tokens in body": (50_000, lambda n: simple(
        b"Subject: [IT-1001] x\r\n", b"[IT-1001] mgk1.aaaaaaaaaaaaaaaaaaaaaaaa " * n)),
    "mbox junk before headers": (20_000, lambda n: b"junk line\r\n" * n + HEAD + b"\r\nbody"),
    "colon-less header lines": (5_000, lambda n: HEAD + b"Subject: x\r\n"
                                + b"no colon here\r\nX-A: b\r\n" * n + b"\r\nbody"),
    "boundary without ;": (5_000, lambda n: HEAD + b"Content-Type: multipart/mixed"
                           + b" " * n + b"x\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n"),
    "boundary without ; folds": (5_000, lambda n: HEAD + b"Content-Type: multipart/mixed"
                                 + b"\r\n " * n + b"x\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n"),
    "big mail many parts": (2_000, lambda n: multipart(
        [text_part(b"text")] + [b"Content-Type: application/x-a\r\n\r\n" + b"x" * 600] * n
        + [b"Content-Type: application/x-a; name=big.bin\r\n\r\n" + b"y" * (1024 * 1100)])),
    "big mail near boundaries": (20_000, lambda n: multipart(
        [text_part(b"text"), b"Content-Type: application/x-a; name=big.bin\r\n\r\n"
         + b"--b x\r\n" * n + b"y" * (1024 * 1100)])),
    "big mail nested": (8, lambda n: nested(n) + b"y" * (1024 * 1100)),
}


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def fresh_read(raw: bytes) -> object:
    message_module._last_read = None  # no cached reading from an earlier stage
    return read_mail(raw, ASKED)


def post(raw: bytes) -> None:
    message_module._last_read = None
    msg = parse_module.parse(raw)
    ctx = LoopContext(frozenset({"it-help@example.com"}), "mailgate")
    started = time.perf_counter()
    classify(msg, ctx)
    thread_hints(msg, frozenset({"IT"}))
    clean_subject(msg.subject)
    text = trim_reply(msg.body)
    parse_commands(text)
    proven_refs(TEST_KEYS, [*msg.in_reply_to, *msg.references], "ann@example.com",
                datetime.now(UTC))
    sender_trust(msg, TrustPolicy(frozenset({"example.com"}), "mx.example"))
    search_ahead(msg, SEARCHES)
    post.seconds = time.perf_counter() - started  # type: ignore[attr-defined]


class Delivery:
    """One pipeline (tests.factories.harness) on its own loop, for h.deliver(raw)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.TemporaryDirectory()
        self.count = 0
        self.h = self.loop.run_until_complete(harness(Path(self.tmp.name), acks_per_hour=10**6))

    def deliver(self, raw: bytes) -> None:
        message_module._last_read = None
        self.count += 1  # a Message-ID of its own: a duplicate would skip the work
        unique = b"Message-ID: <bench-%d@example.com>\r\n" % self.count
        self.loop.run_until_complete(self.h.deliver(unique + raw))

    def close(self) -> None:
        self.loop.run_until_complete(self.h.store.close())
        self.loop.close()
        self.tmp.cleanup()


def stages(delivery: Delivery) -> dict[str, Callable[[bytes], float]]:
    def post_stage(raw: bytes) -> float:
        post(raw)
        return post.seconds  # type: ignore[attr-defined]

    return {
        "read": lambda raw: timed(lambda: fresh_read(raw)),
        "lighten": lambda raw: timed(lambda: lighten(raw)),
        "post": post_stage,
        "deliver": lambda raw: timed(lambda: delivery.deliver(raw)),
    }


def run(names: list[str], wanted: list[str], steps: int, budget: float, scale: float) -> int:
    delivery = Delivery()
    flagged = 0
    print(f"{'shape':28} {'stage':8} {'n':>9} {'bytes':>11} {'seconds':>8} {'ratio':>6}")
    try:
        for name in names:
            base, make = SHAPES[name]
            over: set[str] = set()
            last: dict[str, float] = {}
            for step in range(steps):
                n = max(1, int(base * scale)) * 2 ** step
                raw = make(n)
                for stage, measure in stages(delivery).items():
                    if stage not in wanted or stage in over:
                        continue
                    seconds = measure(raw)
                    ratio = seconds / last[stage] if last.get(stage) else 0.0
                    flag = ("  SUPERLINEAR" if ratio > FLAG_RATIO and seconds > 0.2 else "")
                    flagged += bool(flag)
                    print(f"{name[:28]:28} {stage:8} {n:9d} {len(raw):11d} {seconds:8.3f} "
                          f"{ratio:6.2f}{flag}", flush=True)
                    last[stage] = seconds
                    if seconds > budget:
                        over.add(stage)
    finally:
        delivery.close()
    return flagged


def profile(name: str, steps: int, scale: float) -> None:
    base, make = SHAPES[name]
    raw = make(max(1, int(base * scale)) * 2 ** (steps - 1))
    delivery = Delivery()
    try:
        for stage, call in (("read", lambda: fresh_read(raw)),
                            ("deliver", lambda: delivery.deliver(raw))):
            profiler = cProfile.Profile()
            profiler.runcall(call)
            print(f"--- {name}: {stage}, {len(raw)} bytes")
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    finally:
        delivery.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", help="comma-separated shape names (default: all)")
    parser.add_argument("--stages", default="read,lighten,post,deliver")
    parser.add_argument("--steps", type=int, default=4, help="sizes n, 2n, ... (doublings)")
    parser.add_argument("--budget", type=float, default=30.0,
                        help="stop doubling a stage once it took this many seconds")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every first n")
    parser.add_argument("--profile", metavar="SHAPE")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    setup_logging("error")  # the pipeline's info lines would drown the table
    if args.list:
        print("\n".join(SHAPES))
        return
    if args.profile:
        profile(args.profile, args.steps, args.scale)
        return
    names = args.shapes.split(",") if args.shapes else list(SHAPES)
    flagged = run(names, args.stages.split(","), args.steps, args.budget, args.scale)
    print(f"\n{flagged} measurement(s) grew more than {FLAG_RATIO}x per doubling")


if __name__ == "__main__":
    main()
