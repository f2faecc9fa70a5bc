"""Broken and hostile mail through the whole pipeline: each is a ticket, a reply or a
quarantine entry with a reason, and nothing raises."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.factories import Harness, harness, mail

HEAD = b"From: Ann <ann@example.com>\r\nTo: it-help@example.com\r\n"


def nested(levels: int) -> bytes:
    parts = [HEAD + b"Subject: deep\r\nMessage-ID: <deep@x>\r\n"]
    for i in range(levels):
        parts.append(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode())
    parts.append(b"Content-Type: text/plain\r\n\r\nbottom\r\n")
    for i in reversed(range(levels)):
        parts.append(f"--b{i}--\r\n".encode())
    return b"".join(parts)


def big_attachment(megabytes: int) -> bytes:
    line = b"QUJD" * 19 + b"\r\n"  # 78 bytes of base64 per line
    body = line * (megabytes * 1024 * 1024 // len(line))
    return (HEAD + b"Subject: big file\r\nMessage-ID: <big@x>\r\n"
            b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            b"Content-Type: text/plain\r\n\r\nsee attachment\r\n--b\r\n"
            b'Content-Type: application/octet-stream; name="a.bin"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n" + body + b"--b--\r\n")


CASES: dict[str, Callable[[], bytes]] = {
    "zero bytes": lambda: b"",
    "only NUL bytes": lambda: b"\x00" * 1000,
    "NUL bytes in headers and body": lambda: HEAD + b"Subject: a\x00b\r\n\r\nbo\x00dy\r\n",
    "no header/body separator": lambda: b"From ann@example.com\r\nhello there",
    "8-bit undeclared header": lambda: HEAD + "Subject: Gr\xfc\xdfe caf\xe9\r\n\r\nx".encode(
        "latin-1"),
    "RFC 2047 garbage": lambda: HEAD + b"Subject: =?x-unknown?Q?=FF=FE?= =?utf-8?B?####?=\r\n"
                                       b"\r\nbody\r\n",
    "10,000 recipients": lambda: (b"From: ann@example.com\r\nTo: it-help@example.com, "
                                  + b", ".join(f"u{i}@example.com".encode()
                                               for i in range(10_000))
                                  + b"\r\nSubject: all hands\r\n\r\nhi\r\n"),
    "1 MB header": lambda: HEAD + b"Subject: " + b"A" * (1024 * 1024) + b"\r\n\r\nbody\r\n",
    "line over 1 MB": lambda: HEAD + b"Subject: long line\r\n\r\n" + b"x" * (1024 * 1024 + 7),
    "1,000 nested multiparts": lambda: nested(1000),
    "50 MB attachment": lambda: big_attachment(50),
    "encoded CR/LF in subject": lambda: HEAD + b"Subject: =?utf-8?q?a=0D=0ABcc=3A_x=40y=2Ez?=\r\n"
                                              b"\r\nbody\r\n",
    "broken boundary": lambda: HEAD + b'Content-Type: multipart/mixed; boundary="zz"\r\n\r\n'
                                      b"--yy\r\nnot closed",
    "address without domain": lambda: b"From: root\r\nTo: it-help@example.com\r\n\r\nhi",
}


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    built = await harness(tmp_path, acks_per_hour=10**6)
    yield built
    await built.store.close()


@pytest.mark.parametrize("name", list(CASES))
async def test_hostile_mail_has_an_outcome(h: Harness, name: str) -> None:
    raw = CASES[name]()
    outcome = await h.deliver(raw)
    assert outcome.action in ("ticket", "reply", "quarantined"), outcome
    if outcome.action == "quarantined":
        assert outcome.reason
        rows = await h.rows("SELECT raw FROM quarantine")
        assert rows and rows[0][0] == raw  # the raw bytes are kept for the admin
    for (raw_ack,) in await h.rows("SELECT raw FROM outbox"):
        head = raw_ack.split(b"\r\n\r\n", 1)[0]
        assert b"\nBcc:" not in head and len(head) < 20_000


async def test_reused_message_id_with_other_content_is_not_lost(h: Harness) -> None:
    first = await h.deliver(mail("printer", message_id="<same@x>", body="printer broken"))
    second = await h.deliver(mail("badge", message_id="<same@x>", body="lost my badge"))
    assert first.tickets == ("IT-1001",)
    assert second.tickets == ("IT-1002",)
    again = await h.deliver(mail("badge", message_id="<same@x>", body="lost my badge"))
    assert again.action == "duplicate"
