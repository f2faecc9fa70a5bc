"""S/MIME opaque-signed mail (smime.py): the entity inside a CMS SignedData is read as the
mail's content; encrypted or damaged CMS stays a file. The .p7m files in tests/data/smime
were made by `openssl smime -sign -nodetach` (DER) and `openssl cms -sign -stream` (BER,
indefinite lengths, the content in pieces), with a throwaway self-signed certificate."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from mailgate.core.mime import smime
from mailgate.core.mime.files import extract
from mailgate.core.mime.parse import parse

DATA = Path(__file__).parent / "data" / "smime"
SIGNED_DATA = bytes.fromhex("06092a864886f70d010702")
ID_DATA = bytes.fromhex("06092a864886f70d010701")
TEXT_ENTITY = (b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
               b"My laptop screen is broken. Gr\xc3\xbc\xc3\x9fe\r\n")


def tlv(tag: int, content: bytes) -> bytes:
    """DER: definite length."""
    n = len(content)
    length = bytes([n]) if n < 0x80 else bytes([0x80 | 2]) + n.to_bytes(2, "big")
    return bytes([tag]) + length + content


def indefinite(tag: int, *children: bytes) -> bytes:
    """BER: indefinite length, closed by end-of-contents."""
    return bytes([tag, 0x80]) + b"".join(children) + b"\x00\x00"


def content_info(octets: bytes, *, streamed: bool = False) -> bytes:
    """A ContentInfo holding SignedData with OCTETS (an encoded OCTET STRING) as content;
    no signer (smime.py never checks one)."""
    version, no_algorithms, no_signers = tlv(0x02, b"\x01"), tlv(0x31, b""), tlv(0x31, b"")
    if streamed:
        encapsulated = indefinite(0x30, ID_DATA, indefinite(0xA0, octets))
        signed = indefinite(0x30, version, no_algorithms, encapsulated, no_signers)
        return indefinite(0x30, SIGNED_DATA, indefinite(0xA0, signed))
    encapsulated = tlv(0x30, ID_DATA + tlv(0xA0, octets))
    signed = tlv(0x30, version + no_algorithms + encapsulated + no_signers)
    return tlv(0x30, SIGNED_DATA + tlv(0xA0, signed))


def mail(der: bytes, ctype: str = 'application/pkcs7-mime; smime-type=signed-data; '
         'name="smime.p7m"') -> bytes:
    return (b"From: Ann Example <ann@example.com>\r\nTo: it-help@example.com\r\n"
            b"Subject: Broken screen\r\nMIME-Version: 1.0\r\nContent-Type: " + ctype.encode() +
            b"\r\nContent-Disposition: attachment; filename=\"smime.p7m\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(der))


def test_outlook_opaque_signed_text_is_the_body() -> None:
    msg = parse(mail((DATA / "opaque-streamed.p7m").read_bytes()))
    assert msg.body == "My laptop screen is broken. Grüße\n"
    assert msg.subject == "Broken screen" and msg.sender and msg.sender.addr == "ann@example.com"
    assert msg.attachments == ()
    assert "S/MIME opaque-signed content opened (signature not checked)" in msg.defects


def test_the_entity_s_attachments_are_the_mail_s_files() -> None:
    raw = mail((DATA / "opaque-multipart.p7m").read_bytes())
    msg = parse(raw)
    assert msg.body.startswith("The VPN token app shows an error. Grüße, Ann")
    assert [a.filename for a in msg.attachments] == ["log.csv"]
    [file] = extract(raw)
    assert (file.filename, file.data) == ("log.csv", b"time;error\r\n09:00;E42")


@pytest.mark.parametrize("octets", [
    tlv(0x04, TEXT_ENTITY),
    indefinite(0x24, tlv(0x04, TEXT_ENTITY[:30]), tlv(0x04, TEXT_ENTITY[30:])),
    indefinite(0x24, indefinite(0x24, tlv(0x04, TEXT_ENTITY[:7])), tlv(0x04, TEXT_ENTITY[7:])),
    tlv(0x24, tlv(0x04, TEXT_ENTITY[:50]) + tlv(0x04, TEXT_ENTITY[50:])),
])
@pytest.mark.parametrize("streamed", [False, True])
def test_ber_shapes_of_the_content(octets: bytes, streamed: bool) -> None:
    assert smime.signed_content(content_info(octets, streamed=streamed)) == TEXT_ENTITY


def test_a_signed_part_inside_a_multipart_is_opened_in_place() -> None:
    der = content_info(tlv(0x04, TEXT_ENTITY))
    raw = (b"From: ann@example.com\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
           b"Content-Type: application/octet-stream; name=smime.p7m\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(der) +
           b"--b\r\nContent-Type: application/pdf; name=a.pdf\r\n\r\n%PDF\r\n--b--\r\n")
    msg = parse(raw)
    assert msg.body.startswith("My laptop screen is broken. Grüße")
    assert [a.filename for a in msg.attachments] == ["a.pdf"]


def test_signed_inside_signed_is_opened_a_few_layers_deep() -> None:
    entity = TEXT_ENTITY
    for _ in range(3):
        der = content_info(tlv(0x04, entity))
        entity = (b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n"
                  b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(der))
    assert parse(mail(content_info(tlv(0x04, entity)))).body == ""  # four layers: no further
    inner = entity.split(b"\r\n\r\n", 1)[1]
    assert parse(mail(base64.decodebytes(inner))).body.startswith("My laptop screen")


def test_encrypted_content_stays_a_file_and_says_why() -> None:
    msg = parse(mail(b"\x30\x03\x02\x01\x00",
                     'application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"'))
    assert [a.filename for a in msg.attachments] == ["smime.p7m"]
    assert "S/MIME encrypted content cannot be read; kept as a file" in msg.defects


@pytest.mark.parametrize("der", [
    b"",
    b"\x30",
    b"\x30\x80",  # indefinite, never ended
    b"\x30\x84\xff\xff\xff\xff" + SIGNED_DATA,  # a length past the end
    b"\x30\x85\x01\x00\x00\x00\x00\x00",  # a length of five bytes
    content_info(tlv(0x04, TEXT_ENTITY))[:-3],  # cut short
    content_info(tlv(0x0C, TEXT_ENTITY)),  # a UTF8String, not an OCTET STRING
    tlv(0x30, ID_DATA + tlv(0xA0, tlv(0x04, TEXT_ENTITY))),  # plain data, not SignedData
    tlv(0x30, SIGNED_DATA + tlv(0xA0, tlv(0x30, tlv(0x02, b"\x01") + tlv(0x31, b"") +
                                          tlv(0x30, ID_DATA) + tlv(0x31, b"")))),  # detached
    b"\x1f\xff\xff\x00",  # a high tag number
    b"\x30\x80" * 20_000 + b"\x00\x00" * 20_000,  # nested without end: bounded
    b"\x24\x80" * 20_000,
])
def test_damaged_cms_stays_a_file(der: bytes) -> None:
    started = time.process_time()
    assert smime.signed_content(der) is None
    assert time.process_time() - started < 5  # generous: the quadratic walk took minutes
    msg = parse(mail(der))
    assert [a.filename for a in msg.attachments] == ["smime.p7m"]
    assert "S/MIME signed content could not be read; kept as a file" in msg.defects


def test_an_attachment_named_p7m_that_is_no_cms_is_untouched() -> None:
    raw = (b"From: ann@example.com\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
           b"Content-Type: text/plain\r\n\r\nsee the file\r\n--b\r\n"
           b"Content-Type: application/octet-stream; name=notes.p7m\r\n\r\nhello\r\n--b--\r\n")
    msg = parse(raw)
    assert msg.body.strip() == "see the file"
    assert [a.filename for a in msg.attachments] == ["notes.p7m"]
    assert not any("S/MIME" in d for d in msg.defects)
