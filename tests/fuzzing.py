"""Inputs for fuzzing the pure core: mutate real messages the way broken software does.

Shared by the property test (tests/test_fuzz.py) and the long run (bench/fuzz.py) so both
exercise the same path: parse -> classify -> thread hints -> route, which must never raise.
"""

from __future__ import annotations

import random

from mailgate.config.directory import Directory
from mailgate.core.classify import LoopContext, classify
from mailgate.core.mime.parse import fingerprint, parse_without_safety_net
from mailgate.core.model import Origin
from mailgate.core.routing import departments_for
from mailgate.tickets.conversation import thread_hints

SNIPPETS = (
    b"\r\n", b"\n\n", b"\x00", b"=?utf-8?B?", b"?=", b"=?", b"Content-Type: multipart/mixed; "
    b'boundary="x"\r\n', b"--x\r\n", b"--x--", b"Message-ID: <", b">", b"\xff\xfe", b"\xc3",
    b"From: <@>", b"To: ,,,;<>", b"Subject: [IT-", b"1001]", b"Content-Transfer-Encoding: "
    b"base64\r\n", b"Content-Transfer-Encoding: quoted-printable\r\n", b"=\r\n", b"=ZZ",
    b"charset=\"nonexistent-8\"", b"References: <a@b> <", b"\t", b" " * 300,
)


def mutate(data: bytes, rng: random.Random, rounds: int = 4) -> bytes:
    """Flip, cut, duplicate and splice bytes of a real message."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, rounds)):
        choice = rng.randrange(5)
        pos = rng.randrange(len(buf) + 1)
        if choice == 0 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif choice == 1:
            del buf[pos:pos + rng.randint(1, 200)]
        elif choice == 2:
            buf[pos:pos] = rng.choice(SNIPPETS)
        elif choice == 3 and buf:
            start = rng.randrange(len(buf))
            buf[pos:pos] = buf[start:start + rng.randint(1, 500)]
        else:
            buf = buf[:pos]
    return bytes(buf)


def run_core(raw: bytes, directory: Directory, ctx: LoopContext,
             prefixes: frozenset[str], origin: Origin) -> None:
    """Everything the pipeline does before touching the database.

    Uses the parser without its last-resort catch, so a trap it does not handle yet
    shows up here instead of being papered over as "unparseable".
    """
    msg = parse_without_safety_net(raw)
    classify(msg, ctx)
    thread_hints(msg, prefixes)
    departments_for(msg, origin, directory)
    fingerprint(msg)
