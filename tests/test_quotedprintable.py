"""Quoted-printable decoding (quotedprintable.py): the soft line breaks binascii misreads,
through every reader of mail content (the body text, attachments, the large-mail path)."""

from __future__ import annotations

import binascii
import random

import pytest

from mailgate.core.mime import largemail, quotedprintable
from mailgate.core.mime.files import extract
from mailgate.core.mime.largemail import decoded_chunks, lighten
from mailgate.core.mime.parse import parse
from tests.test_largemail import big_mail


def qp_mail(body: bytes, *, eol: bytes = b"\r\n") -> bytes:
    head = (b"From: ann@example.com", b"To: it-help@example.com", b"Subject: qp",
            b"MIME-Version: 1.0", b"Content-Type: text/plain; charset=iso-8859-1",
            b"Content-Transfer-Encoding: quoted-printable", b"", b"")
    return eol.join(head) + body


@pytest.mark.parametrize(("encoded", "decoded"), [
    (b"line one=\r, line two\rline three\r", b"line one, line two\rline three\r"),
    (b"J=FCrgen wrote=  \r\nthis", b"J\xfcrgen wrotethis"),
    (b"tab padding=\t\nhere", b"tab paddinghere"),
    (b"padding and bare CR= \rhere", b"padding and bare CRhere"),
    (b"plain=\r\nsoft", b"plainsoft"),
    (b"a hard\r\nbreak", b"a hard\r\nbreak"),
    (b"=ZZ and =4 stay", b"=ZZ and =4 stay"),
])
def test_soft_breaks(encoded: bytes, decoded: bytes) -> None:
    assert quotedprintable.decode(encoded) == decoded


def test_what_binascii_reads_right_is_read_the_same() -> None:
    rng = random.Random(7)
    alphabet = b"abc =\t\r\n\xfc=3D=FC=fc=Z"
    for _ in range(5000):
        data = bytes(rng.choice(alphabet) for _ in range(rng.randrange(60)))
        if not quotedprintable._odd_soft_breaks(data):
            assert quotedprintable.decode(data) == binascii.a2b_qp(data)
        encoded = binascii.b2a_qp(data)
        assert quotedprintable.decode(encoded) == binascii.a2b_qp(encoded)


def test_a_mac_mail_with_bare_cr_loses_no_text() -> None:
    """binascii dropped everything after '=\\r': here the rest of the message."""
    raw = qp_mail(b"Hallo J=FCrgen,=\rthe printer on floor 3=\r is jammed.\rThanks\r", eol=b"\r")
    body = parse(raw).body
    assert "Hallo Jürgen,the printer on floor 3 is jammed." in body
    assert "Thanks" in body


def test_transport_padding_after_a_soft_break_is_no_text() -> None:
    body = parse(qp_mail(b"The VPN client=   \r\n crashes at start.\r\n")).body
    assert body.strip() == "The VPN client crashes at start."


def test_an_attachment_and_an_attached_message_decode_the_same() -> None:
    part = (b"--b\r\nContent-Type: text/csv; name=\"a.csv\"\r\n"
            b"Content-Disposition: attachment; filename=\"a.csv\"\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\nname;sum=\t\r\n;=E4\r\n"
            b"--b\r\nContent-Type: message/rfc822\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            b"Subject: inner=  \r\n text\r\n\r\nbody\r\n--b--\r\n")
    raw = (b"From: ann@example.com\r\nSubject: files\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
           b"Content-Type: text/plain\r\n\r\nsee attached\r\n" + part)
    files = {p.filename: p.data for p in extract(raw)}
    assert files["a.csv"] == b"name;sum;\xe4"  # the CRLF before "--b" is the boundary's
    [enclosed] = [data for name, data in files.items() if name != "a.csv"]
    assert enclosed.startswith(b"Subject: inner text\n")


def test_the_large_mail_path_reads_it_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(largemail, "CHUNK", 1000)
    lines = b"".join(b"row %05d=  \r\n continued=\rand ended\r\n" % i for i in range(20_000))
    light = lighten(big_mail(lines, cte="quoted-printable", name="rows.txt"))
    assert light is not None
    [span] = light.spans.values()
    decoded = b"".join(decoded_chunks(big_mail(lines, cte="quoted-printable",
                                               name="rows.txt"), span))
    assert decoded == b"".join(b"row %05d continuedand ended\r\n" % i for i in range(20_000))
