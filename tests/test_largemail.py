"""Large mail through the light path (largemail.py): the same outcome as the normal path,
without holding the message many times over or decoding it in one piece."""

from __future__ import annotations

import base64
import email
import hashlib
import json
import os
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailgate.core.mime import largemail
from mailgate.core.mime.largemail import decoded_chunks, lighten
from tests.factories import Harness, harness


def big_mail(data: bytes, *, name: str = "scan.pdf", cte: str = "base64",
             message_id: str = "<big@example.com>", text: str = "Please see the scan.") -> bytes:
    body = base64.encodebytes(data).replace(b"\n", b"\r\n") if cte == "base64" else data
    return (b"From: Ann Example <ann@example.com>\r\nTo: it-help@example.com\r\n"
            b"Subject: Big scan\r\nMessage-ID: " + message_id.encode() + b"\r\n"
            b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="=b="\r\n\r\n'
            b"--=b=\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text.encode() +
            b"\r\n--=b=\r\nContent-Type: application/pdf; name=\"" + name.encode() + b"\"\r\n"
            b"Content-Disposition: attachment; filename=\"" + name.encode() + b"\"\r\n"
            b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n\r\n" + body +
            b"\r\n--=b=--\r\n")


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    built = await harness(tmp_path)
    yield built
    await built.store.close()


def test_decoded_in_pieces_is_the_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(largemail, "CHUNK", 1000)  # many pieces, cut mid-line too
    data = os.urandom(200_000)
    raw = big_mail(data)
    light = lighten(raw)
    assert light is not None and len(light.slim) < 2000
    [span] = light.spans.values()
    assert b"".join(decoded_chunks(raw, span)) == data
    assert span.size == len(data)


def test_odd_line_lengths_and_a_damaged_structure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(largemail, "CHUNK", 997)
    data = os.urandom(100_000)
    odd = base64.b64encode(data)
    lines = b"\r\n".join(odd[i:i + 57] for i in range(0, len(odd), 57))  # not multiples of 4
    raw = big_mail(lines, cte="base64").replace(
        base64.encodebytes(lines).replace(b"\n", b"\r\n"), lines)
    light = lighten(raw)
    assert light is not None
    [span] = light.spans.values()
    assert b"".join(decoded_chunks(raw, span)) == data
    assert lighten(raw.replace(b"--=b=--", b"--=x=--")) is None  # no closing delimiter


async def test_a_large_request_is_ticketed_like_any_other(h: Harness, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024)  # over LARGE once encoded
    raw = big_mail(data)
    outcome = await h.deliver(raw)
    assert outcome.action == "ticket"
    [(size, sha)] = await h.rows("SELECT size, sha256 FROM attachments")
    assert size == len(data) and sha == hashlib.sha256(data).hexdigest()
    files = h.store.attachments()
    assert files is not None and files.read(sha) == data
    [(body, files, packed, text)] = await h.rows(
        "SELECT body, attachments, raw, text FROM messages")
    assert zlib.decompress(packed) == raw  # the raw mail is kept whole
    assert json.loads(files) == [["scan.pdf", "application/pdf", len(data)]]
    assert "Please see the scan." in text and "MAILGATE-LIGHTENED" not in body
    # The team's notification carries the file as it came.
    [(note,)] = await h.rows("SELECT raw FROM outbox WHERE kind = 'notify-team' "
                             "AND copy_of IS NULL")
    parsed = email.message_from_bytes(note)
    [attached] = [p for p in parsed.walk() if p.get_filename() == "scan.pdf"]
    assert attached.get_payload(decode=True) == data


async def test_a_part_too_big_to_relay_is_named_not_sent(h: Harness) -> None:
    data = os.urandom(9 * 1024 * 1024)  # 12 MB encoded: over max_relay_bytes (10 MB)
    await h.deliver(big_mail(data))
    [(note,)] = await h.rows("SELECT raw FROM outbox WHERE kind = 'notify-team' "
                             "AND copy_of IS NULL")
    assert len(note) < 100_000 and b"scan.pdf (too large, not attached)" in note
    assert await h.count("attachments", "sha256 IS NOT NULL") == 1  # kept on the ticket


async def test_the_light_and_the_normal_path_agree(h: Harness, monkeypatch: pytest.MonkeyPatch,
                                                   ) -> None:
    data = os.urandom(300_000)
    await h.deliver(big_mail(data, message_id="<normal@example.com>"))
    monkeypatch.setattr("mailgate.intake.pipeline.LARGE", 1000)  # the same size, the light path
    await h.deliver(big_mail(data, message_id="<light@example.com>"))
    rows = await h.rows("SELECT filename, content_type, size, sha256 FROM attachments "
                        "ORDER BY id")
    assert rows[0] == rows[1]
    files = await h.rows("SELECT attachments FROM messages ORDER BY id")
    assert files[0] == files[1]
