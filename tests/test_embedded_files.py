"""Files people really send inside other things: uuencoded in the body text, and in
Outlook's winmail.dat (TNEF). parse() lists them, files.extract() hands them to the store."""

from __future__ import annotations

import base64
import binascii
import re
import struct
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.core.mime import tnef, uuencode
from mailgate.core.mime.files import extract
from mailgate.core.mime.parse import parse

DATA = Path(__file__).parent / "data" / "mail"
INVENTORY = b"Name;Abteilung;Raum\nAnn;IT;2.14\nBob;HR;1.02\n" * 3


def test_inline_uuencode_becomes_an_attachment_and_leaves_the_text() -> None:
    raw = (DATA / "uuencoded-attachment.eml").read_bytes()
    msg = parse(raw)
    assert "begin 644" not in msg.body and "\nend\n" not in msg.body
    assert msg.body == "Hallo,\n\nanbei die Inventarliste.\n\n\nGruss\nBob\n"
    assert [(a.filename, a.content_type, a.size) for a in msg.attachments] == [
        ("inventory.csv", "text/csv", len(INVENTORY))]
    [part] = extract(raw)
    assert (part.filename, part.data) == ("inventory.csv", INVENTORY)


def test_uuencode_needs_a_complete_block() -> None:
    prose = b"We begin 644 tests today.\nbegin 644 plan.txt\nfirst we talk\nend\n"
    assert uuencode.split(prose) == (prose, [])
    unfinished = b"begin 644 a.bin\n" + binascii.b2a_uu(b"abc")  # no end line
    assert uuencode.split(unfinished) == (unfinished, [])


def test_uuencode_variants() -> None:
    data = bytes(range(256)) * 2
    lines = b"".join(binascii.b2a_uu(data[i:i + 45]) for i in range(0, len(data), 45))
    crlf = b"begin 600 ../../etc/x.bin\r\n" + lines.replace(b"\n", b"\r\n") + b"`\r\nend\r\n"
    text, [found] = uuencode.split(b"before\r\n" + crlf + b"after\r\n")
    assert text == b"before\r\nafter\r\n"
    assert found == uuencode.UUFile("x.bin", data)  # a name, never a path
    b64 = b"begin-base64 644 y.bin\n" + base64.encodebytes(data) + b"====\n"
    assert uuencode.split(b64)[1] == [uuencode.UUFile("y.bin", data)]


@given(st.binary(max_size=400))
def test_uuencode_never_raises(data: bytes) -> None:
    uuencode.split(b"begin 644 f\n" + data + b"\nend\n")


# --- TNEF ----------------------------------------------------------------------------------
# A winmail.dat written here, by the structure of [MS-OXTNEF]: signature, key, then
# attributes (level, id, length, data, checksum). Outlook writes more attributes; these
# are the ones that carry a file.

LVL_MESSAGE, LVL_ATTACHMENT = 1, 2


def _attribute(level: int, kind: int, name: int, data: bytes) -> bytes:
    checksum = sum(data) & 0xFFFF
    return struct.pack("<BHHI", level, name, kind, len(data)) + data + struct.pack("<H", checksum)


def _long_filename(name: str) -> bytes:
    """attAttachment: MAPI properties with PR_ATTACH_LONG_FILENAME (PT_UNICODE)."""
    value = name.encode("utf-16-le") + b"\x00\x00"
    padded = value + b"\x00" * (-len(value) % 4)
    return struct.pack("<IHHII", 1, 0x001F, 0x3707, 1, len(value)) + padded


def winmail(files: list[tuple[str, str, bytes]]) -> bytes:
    out = [struct.pack("<IH", 0x223E9F78, 0x1234),
           _attribute(LVL_MESSAGE, 0x0008, 0x9006, struct.pack("<I", 0x00010000)),  # version
           _attribute(LVL_MESSAGE, 0x0006, 0x9007, struct.pack("<II", 1252, 0))]  # code page
    for short, long, data in files:
        out += [_attribute(LVL_ATTACHMENT, 0x0006, 0x9002, b"\x01\x00" + b"\xff" * 12),
                _attribute(LVL_ATTACHMENT, 0x0001, 0x8010, short.encode() + b"\x00"),
                _attribute(LVL_ATTACHMENT, 0x0006, 0x800F, data),
                _attribute(LVL_ATTACHMENT, 0x0006, 0x9005, _long_filename(long))]
    return b"".join(out)


def outlook_mail(attachment: bytes) -> bytes:
    encoded = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    return (b"From: Frank <frank@example.com>\r\nTo: it-help@example.com\r\n"
            b"Subject: Angebot\r\nMessage-ID: <tnef-1@example.com>\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            b"Content-Type: text/plain; charset=us-ascii\r\n\r\nSiehe Anhang.\r\n--b\r\n"
            b'Content-Type: application/ms-tnef; name="winmail.dat"\r\n'
            b"Content-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="winmail.dat"\r\n\r\n'
            + encoded + b"--b--\r\n")


PDF = b"%PDF-1.4\n% a tiny pdf\n%%EOF\n"
SHEET = b"PK\x03\x04 not really a spreadsheet"


def test_winmail_dat_gives_up_its_files() -> None:
    raw = outlook_mail(winmail([("ANGEBO~1.PDF", "Angebot März.pdf", PDF),
                                ("KALKUL~1.XLS", "Kalkulation.xlsx", SHEET)]))
    msg = parse(raw)
    assert msg.body == "Siehe Anhang."
    assert [(a.filename, a.content_type, a.size) for a in msg.attachments] == [
        ("Angebot März.pdf", "application/pdf", len(PDF)),
        ("Kalkulation.xlsx",
         "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", len(SHEET))]
    assert [(p.filename, p.data) for p in extract(raw)] == [
        ("Angebot März.pdf", PDF), ("Kalkulation.xlsx", SHEET)]


def test_unreadable_winmail_dat_is_kept_as_it_came() -> None:
    broken = b"\x78\x9f\x3e\x22" + b"\x00\x01" + b"\xff" * 40
    msg = parse(outlook_mail(broken))
    assert [a.filename for a in msg.attachments] == ["winmail.dat"]
    assert [p.data for p in extract(outlook_mail(broken))] == [broken]
    not_tnef = parse(outlook_mail(b"just bytes"))
    assert [a.filename for a in not_tnef.attachments] == ["winmail.dat"]
    assert any("winmail.dat" in d for d in not_tnef.defects)


@given(st.binary(max_size=300))
def test_tnef_never_raises(data: bytes) -> None:
    tnef.files(b"\x78\x9f\x3e\x22" + data)


def test_attachment_names_are_decoded_and_never_paths() -> None:
    raw = (b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain\r\n\r\nsee file\r\n--b\r\n"
           b"Content-Type: application/octet-stream\r\n"
           b"Content-Disposition: attachment; "
           b'filename="=?utf-8?q?..=2F..=2FRechnung_M=C3=A4rz.pdf?="\r\n\r\n'
           b"xyz\r\n--b\r\nContent-Type: text/plain\r\n"
           b'Content-Disposition: attachment; filename="Gr\xfc\xdfe.txt"\r\n\r\nhi\r\n--b--\r\n')
    assert [a.filename for a in parse(raw).attachments] == ["Rechnung März.pdf", "Grüße.txt"]
    assert [p.filename for p in extract(raw)] == ["Rechnung März.pdf", "Grüße.txt"]


def test_extract_stores_what_parse_lists() -> None:
    raw = (b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain\r\n\r\nText\r\n"
           b"--b\r\nContent-Type: image/png; name=p.png\r\nContent-Disposition: inline\r\n\r\n"
           b"png\r\n--b\r\nContent-Type: text/plain\r\n\r\nmore text\r\n"
           + b"begin 644 inventory.csv\r\n"
           + binascii.b2a_uu(INVENTORY[:45]).replace(b"\n", b"\r\n")
           + b"`\r\nend\r\n--b--\r\n")
    listed = [(a.filename, a.size) for a in parse(raw).attachments]
    stored = [(p.filename, len(p.data)) for p in extract(raw)]
    assert sorted(listed) == sorted(stored) == [("inventory.csv", 45), ("p.png", 3)]
    single = b"From: a@example.com\r\nContent-Type: application/pdf; name=scan.pdf\r\n\r\n%PDF"
    assert [a.filename for a in parse(single).attachments] == ["scan.pdf"]
    assert [p.filename for p in extract(single)] == ["scan.pdf"]


# The begin line as one regex read it: the same lines and names, quadratic in the blanks
# after a name that is followed by something else.
QUADRATIC_BEGIN = re.compile(rb"^begin(-base64)?[ \t]+([0-7]{3,4})[ \t]+([^\r\n]+?)[ \t]*\r?$",
                             re.MULTILINE)
BEGIN_PIECES = st.sampled_from([b"begin", b"-base64", b" ", b"\t", b"644", b"0755", b"7",
                                b"\r", b"\n", b"\r\n", b"a.txt", b"x", b"begin 644 "])


@settings(max_examples=3000, deadline=None)
@given(st.lists(BEGIN_PIECES, max_size=16).map(b"".join))
def test_begin_lines_are_what_the_old_regex_found(text: bytes) -> None:
    old = [(m.start(), m.end(), m.group(1) is not None, m.group(3))
           for m in QUADRATIC_BEGIN.finditer(text)]
    new = [(b.start, b.end, b.base64, b.name) for b in uuencode.begin_lines(text)]
    assert new == old


def test_known_begin_lines() -> None:
    for text in [b"begin 644 a.txt\r\nM\r\n", b"begin-base64 0755 x y \t\r\n", b"begin 644   ",
                 b"begin 644  \r", b"begin 644 a\rb\n", b"begin 64445 a\n", b"xbegin 644 a",
                 b"text\nbegin\t644\tname.bin\t\n"]:
        old = [(m.start(), m.end(), m.group(1) is not None, m.group(3))
               for m in QUADRATIC_BEGIN.finditer(text)]
        assert [(b.start, b.end, b.base64, b.name) for b in uuencode.begin_lines(text)] == old


def test_a_begin_line_of_200_000_blanks_is_read_in_seconds() -> None:
    """`begin 644 a`, 100,000 blank-tab pairs, then more name (200 kB on one line). The old
    begin-line regex tried every way of splitting those blanks between the name and the
    line's end: 20,000 pairs took 64 s on the bench machine (3 x per doubling), these would
    take many minutes; read linearly, milliseconds. The bound only tells the two apart."""
    raw = (b"From: a@example.com\r\nSubject: uu\r\n\r\nbegin 644 a" + b" \t" * 100_000
           + b"x\r\r\nend\r\n")
    started = time.monotonic()
    msg = parse(raw)
    assert time.monotonic() - started < 60
    assert msg.body.startswith("begin 644 a")
