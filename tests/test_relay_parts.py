"""Relaying attachments: original MIME parts out of a received mail, into a composed one."""

from __future__ import annotations

import base64
import email
import time
from datetime import UTC, datetime
from email.message import Message

from mailgate.outbound.compose import Envelope, _attachment_leaves, compose, relay_parts

PDF = base64.b64encode(b"%PDF-1.4 fake" * 50).decode()
RAW = (
    'From: a@example.com\r\nTo: b@example.com\r\nSubject: s\r\n'
    'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
    '--outer\r\nContent-Type: multipart/alternative; boundary="alt"\r\n\r\n'
    '--alt\r\nContent-Type: text/plain\r\n\r\nbody text\r\n'
    '--alt\r\nContent-Type: text/html\r\n\r\n<p>body text</p>\r\n--alt--\r\n'
    '--outer\r\nContent-Type: application/pdf; name="r\\u00e9sum\\u00e9.pdf"\r\n'
    'Content-Disposition: attachment; filename="report.pdf"\r\n'
    f'Content-Transfer-Encoding: base64\r\n\r\n{PDF}\r\n'
    '--outer\r\nContent-Type: text/plain; name="log.txt"\r\n'
    'Content-Disposition: attachment; filename="log.txt"\r\n\r\nline 1\r\nline 2\r\n'
    '--outer--\r\n').encode()


def test_body_parts_stay_behind_and_attachments_keep_their_encoding() -> None:
    found = relay_parts(RAW, 1_000_000)
    assert found.left_out == ()
    assert len(found.parts) == 2
    first = email.message_from_bytes(found.parts[0])
    assert first.get_filename() == "report.pdf"
    assert first["Content-Transfer-Encoding"] == "base64"
    assert first.get_payload(decode=True) == b"%PDF-1.4 fake" * 50


def test_the_size_cap_leaves_parts_out_by_name() -> None:
    found = relay_parts(RAW, 300)
    assert [name for name, _ in found.left_out] == ["report.pdf"]
    assert len(found.parts) == 1  # the small log still fits


def test_composed_mail_carries_text_and_parts() -> None:
    env = Envelope(from_name="IT", from_addr="it@example.com", to=("ann@example.com",),
                   subject="[IT-1] Re: s", message_id="x@example.com",
                   date=datetime(2026, 11, 24, tzinfo=UTC), instance="mailgate",
                   auto_submitted="no")
    raw = compose(env, "Here you are.", None, relay_parts(RAW, 1_000_000).parts)
    msg = email.message_from_bytes(raw)
    assert msg.get_content_type() == "multipart/mixed"
    text, pdf, log = msg.get_payload()
    assert text.get_payload(decode=True) == b"Here you are."
    assert pdf.get_payload(decode=True) == b"%PDF-1.4 fake" * 50
    assert log.get_payload(decode=True).replace(b"\r\n", b"\n") == b"line 1\nline 2"
    assert msg["Auto-Submitted"] == "no" and msg["Precedence"] is None
    assert not msg.defects


def test_garbage_has_no_parts() -> None:
    assert relay_parts(b"\x00\xff not mail", 1000).parts == ()


def test_parts_are_relayed_in_the_mail_s_order_through_nested_multiparts() -> None:
    raw = (b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n"
           b"--o\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
           b"--o\r\nContent-Type: multipart/mixed; boundary=i\r\n\r\n"
           b"--i\r\nContent-Type: application/x-a; name=1.bin\r\n\r\n1\r\n"
           b"--i\r\nContent-Type: multipart/mixed; boundary=j\r\n\r\n"
           b"--j\r\nContent-Type: application/x-a; name=2.bin\r\n\r\n2\r\n--j--\r\n"
           b"--i\r\nContent-Type: application/x-a; name=3.bin\r\n\r\n3\r\n--i--\r\n"
           b"--o\r\nContent-Type: application/x-a; name=4.bin\r\n\r\n4\r\n--o--\r\n")
    names = [email.message_from_bytes(p).get_filename() for p in relay_parts(raw, 10**6).parts]
    assert names == ["1.bin", "2.bin", "3.bin", "4.bin"]


def test_half_a_million_empty_multiparts_are_walked_in_seconds() -> None:
    """A multipart of 500,000 empty multiparts (what 26 MB of mail makes): none is an
    attachment, so the walk goes through all of them. Taken from the front of a list, each
    step moved the rest of the list: these took over 5 minutes on the bench machine; from
    the end, about 5 s. The bound only tells the two apart."""
    outer = Message()
    outer["Content-Type"] = "multipart/mixed"
    empty = []
    for _ in range(500_000):
        inner = Message()
        inner["Content-Type"] = "multipart/mixed"
        inner.set_payload([])
        empty.append(inner)
    last = Message()
    last["Content-Type"] = "application/x-a"
    outer.set_payload([*empty, last])
    started = time.monotonic()
    assert _attachment_leaves(outer) == [last]
    assert time.monotonic() - started < 60
