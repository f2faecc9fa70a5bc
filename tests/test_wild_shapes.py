"""Shapes of real mail from public collections other than the shared corpus (mikel/mail,
MimeKit, zbateson/mail-mime-parser, nodemailer/mailparser, SpamScope/mail-parser) that
mailgate read wrongly. Each message here is hand-made: the shape, not the third-party file.
"""
# ruff: noqa: RUF001  (text in other scripts, and their punctuation, is the point here)

from __future__ import annotations

import base64
import struct

import pytest

from mailgate.core.mime.files import extract
from mailgate.core.mime.parse import parse
from mailgate.outbound.compose import relay_parts


def test_a_boundary_folded_inside_its_quotes_is_read_unfolded() -> None:
    # Outlook 2000 folded the quoted boundary; RFC 5322 2.2.3: unfolding removes the CRLF
    # only, so the boundary keeps the blank, and the delimiter lines carry it too.
    raw = (b"From: Ann <ann@example.com>\r\nSubject: printer\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed;\r\n    boundary=\"----=_NextPart\r\n"
           b" _000_0002_01BFC036\"\r\n\r\n"
           b"------=_NextPart _000_0002_01BFC036\r\n"
           b"Content-Type: text/plain; charset=iso-8859-1\r\n"
           b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
           b"The printer on floor 2 is jammed. Gr=FC=DFe\r\n"
           b"------=_NextPart _000_0002_01BFC036\r\n"
           b"Content-Type: image/png; name=\"jam.png\"\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n"
           b"------=_NextPart _000_0002_01BFC036--\r\n")
    msg = parse(raw)
    assert msg.body.strip() == "The printer on floor 2 is jammed. Grüße"
    assert [a.filename for a in msg.attachments] == ["jam.png"]



def test_a_byte_order_mark_before_the_header_block_is_skipped() -> None:
    # A mail saved by a Windows editor and fed back in: the BOM hid the From field.
    raw = "\ufeffFrom: Ann <ann@example.com>\r\nSubject: VPN\r\n\r\nIt drops.\r\n".encode()
    msg = parse(raw)
    assert msg.sender is not None and msg.sender.addr == "ann@example.com"
    assert msg.subject == "VPN" and msg.body.strip() == "It drops."


def test_utf8_text_under_a_legacy_multibyte_label_is_read_as_utf8() -> None:
    # Web forms send UTF-8 under the site's old label; as GB2312 it was mojibake.
    text = "你好，我的打印机坏了"
    raw = ("From: ann@example.com\r\nSubject: =?gb2312?B?"
           + base64.b64encode(text.encode()).decode() + "?=\r\n"
           "Content-Type: text/plain;charset=\"GB2312\"\r\n"
           "Content-Transfer-Encoding: 8bit\r\n\r\n" + text + "\r\n").encode()
    msg = parse(raw)
    assert msg.body.strip() == text and msg.subject == text
    assert any("read as UTF-8" in d for d in msg.defects)


@pytest.mark.parametrize(("label", "text"), [
    ("gb2312", "你好，我的打印机坏了。请帮忙。"), ("big5", "您好，我的印表機壞了。"),
    ("shift_jis", "プリンターが壊れました。日本語"), ("euc-jp", "プリンターが壊れました。日本語"),
    ("euc-kr", "안녕하세요, 프린터가 고장났습니다."), ("ks_c_5601-1987", "프린터 고장"),
])
def test_text_really_in_a_legacy_multibyte_charset_keeps_its_label(label: str,
                                                                    text: str) -> None:
    raw = (f"From: ann@example.com\r\nSubject: x\r\n"
           f"Content-Type: text/plain; charset={label}\r\n\r\n").encode() + text.encode(
               label.replace("ks_c_5601-1987", "cp949")) + b"\r\n"
    msg = parse(raw)
    assert msg.body.strip() == text and msg.defects == ()


def _alternative(boundary: str, plain: str, html: str) -> str:
    return (f"Content-Type: multipart/alternative; boundary={boundary}\r\n\r\n"
            f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{plain}\r\n"
            f"--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n"
            f"--{boundary}--\r\n")


def test_each_alternative_shown_in_a_mixed_mail_gives_its_text() -> None:
    # A gateway's banner, then the request, each as its own plain/HTML pair side by side
    # in a multipart/mixed (RFC 2046 5.1.3: shown one after the other): the request's text
    # is the ticket's text, not an "unnamed" attachment.
    raw = ("From: ann@example.com\r\nSubject: laptop\r\nMIME-Version: 1.0\r\n"
           "Content-Type: multipart/mixed; boundary=m\r\n\r\n"
           "--m\r\n" + _alternative("a1", "Scanned for viruses.", "<p>Scanned for viruses.</p>")
           + "--m\r\n" + _alternative("a2", "My laptop will not boot.",
                                      "<p>My laptop will not boot.</p>")
           + "--m\r\nContent-Type: image/png; name=screen.png\r\n"
           "Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--m--\r\n").encode()
    msg = parse(raw)
    assert " ".join(msg.body.split()) == "Scanned for viruses. My laptop will not boot."
    assert [a.filename for a in msg.attachments] == ["screen.png"]
    assert [p.filename for p in extract(raw)] == ["screen.png"]


def test_the_alternatives_of_one_choice_are_still_one_text() -> None:
    raw = (b"From: ann@example.com\r\nSubject: laptop\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=m\r\n\r\n--m\r\n"
           b"Content-Type: multipart/alternative; boundary=a\r\n\r\n"
           b"--a\r\nContent-Type: text/plain\r\n\r\nplain words\r\n"
           b"--a\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nother words\r\n"
           b"--a\r\nContent-Type: text/html\r\n\r\n<p>html words</p>\r\n--a--\r\n"
           b"--m--\r\n")
    assert parse(raw).body.strip() == "plain words"


def test_a_first_header_line_indented_by_mistake_is_still_a_field() -> None:
    raw = (b" From: Ann Example <ann@example.com>\r\nSubject: printer\r\n"
           b"Content-Type: text/plain\r\n\r\nIt jams.\r\n")
    msg = parse(raw)
    assert msg.sender is not None and msg.sender.addr == "ann@example.com"
    assert msg.sender.name == "Ann Example" and msg.body.strip() == "It jams."


def test_a_multipart_without_the_blank_line_after_its_header_keeps_its_parts() -> None:
    # No empty line before the preamble: the boundary line is body, never a continuation
    # of Content-Type, even though the first part's fields follow it.
    raw = (b"From: ann@example.com\r\nSubject: printer\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/alternative;\r\n boundary=\"b1\"\r\n"
           b"This is a multi-part message in MIME format.\r\n"
           b"--b1\r\nContent-Type: text/plain; charset=ISO-8859-1\r\n"
           b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
           b"The printer jams. Andr=E9\r\n"
           b"--b1\r\nContent-Type: text/html; charset=ISO-8859-1\r\n\r\n"
           b"<html><body>The printer jams.</body></html>\r\n--b1--\r\n")
    msg = parse(raw)
    assert msg.body.strip() == "The printer jams. André"
    assert msg.attachments == ()


def test_a_media_type_without_the_semicolon_before_its_parameters() -> None:
    raw = ("From: ann@example.com\r\nSubject: invoice\r\nMIME-Version: 1.0\r\n"
           "Content-Type: multipart/mixed; boundary=m\r\n\r\n"
           "--m\r\nContent-Type: text/plain charset=\"utf-8\"\r\n\r\nGrüße, the invoice.\r\n"
           "--m\r\nContent-Type: application/pdf name=\"inv.pdf\"\r\n"
           "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--m--\r\n").encode()
    msg = parse(raw)
    assert msg.body.strip() == "Grüße, the invoice."
    assert [(a.filename, a.content_type) for a in msg.attachments] == [
        ("inv.pdf", "application/pdf")]
    assert [(p.filename, p.content_type) for p in extract(raw)] == [
        ("inv.pdf", "application/pdf")]


def test_a_display_name_before_a_bare_address_is_a_name() -> None:
    # "From: Big Bug bb@bug.com", no angle brackets (old scripts): the one word with an
    # "@", last, is the address; the words before it are the name.
    msg = parse(b"From: Big Bug bb@bug.example\r\nSubject: x\r\n\r\nhello\r\n")
    assert msg.sender is not None
    assert (msg.sender.addr, msg.sender.name) == ("bb@bug.example", "Big Bug")
    quoted = parse(b'From: "Big Bug" bb@bug.example\r\nSubject: x\r\n\r\nhello\r\n')
    assert quoted.sender is not None and quoted.sender.name == "Big Bug"


def test_words_around_two_addresses_are_not_guessed_apart() -> None:
    msg = parse(b"From: Big a@x.example b@y.example\r\nSubject: x\r\n\r\nhello\r\n")
    assert msg.sender is None


def test_obsolete_blanks_before_the_colon_of_a_first_from_field() -> None:
    # RFC 5322 4.5 (its appendix A.6.3 example): "From  :" is a field, not an mbox line.
    raw = (b"From  : John Doe <jdoe@machine(comment).  example>\r\n"
           b"Subject     : Saying Hello\r\n\r\nThis is a message just to say hello.\r\n")
    msg = parse(raw)
    assert msg.sender is not None and msg.sender.addr == "jdoe@machine.example"
    assert msg.subject == "Saying Hello"


def _tnef_object(name: int, data: bytes) -> bytes:
    """One message-level TNEF attribute: level, id, type, length, data, checksum."""
    return (bytes([1]) + struct.pack("<HHI", name & 0xFFFF, name >> 16, len(data)) + data
            + struct.pack("<H", sum(data) & 0xFFFF))


def _winmail(*objects: bytes) -> str:
    stream = b"\x78\x9f\x3e\x22\x01\x00" + b"".join(objects)
    return base64.encodebytes(stream).decode()


def _outlook_mail(winmail: str) -> bytes:
    # Outlook's "Rich Text" mail to the outside: an empty text part, the text in winmail.dat.
    return ("From: ann@example.com\r\nSubject: printer\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=m\r\n\r\n"
            "--m\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n\r\n\r\n"
            "--m\r\nContent-Type: application/ms-tnef; name=winmail.dat\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n" + winmail + "--m--\r\n").encode()


def test_the_text_outlook_put_into_winmail_dat_is_the_body() -> None:
    body = b"Please reset my password.\r\n\x00"
    msg = parse(_outlook_mail(_winmail(_tnef_object(0x0002800C, body))))  # attBody
    assert msg.body.strip() == "Please reset my password."


def test_the_html_outlook_put_into_winmail_dat_is_the_body() -> None:
    html = b"<html><body><p>Printer on floor 3 is offline.</p></body></html>"
    props = (struct.pack("<I", 1) + struct.pack("<HH", 0x0102, 0x1013)  # PR_BODY_HTML
             + struct.pack("<II", 1, len(html)) + html + b"\x00" * (-len(html) % 4))
    msg = parse(_outlook_mail(_winmail(_tnef_object(0x00069003, props))))  # attMsgProps
    assert msg.body.strip() == "Printer on floor 3 is offline."


def test_a_text_subtype_without_a_reader_is_read_as_plain_text() -> None:
    # RFC 2046 4.1.4: unrecognised subtypes of text are treated as text/plain.
    raw = (b"From: ann@example.com\r\nSubject: notes\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=m\r\n\r\n"
           b"--m\r\nContent-Type: text/markdown; charset=utf-8\r\n\r\n"
           b"**Hello!** The VPN drops every hour.\r\n--m--\r\n")
    msg = parse(raw)
    assert msg.body.strip() == "**Hello!** The VPN drops every hour."


def test_enriched_text_is_read_without_its_formatting() -> None:
    # RFC 1896: a single line break is a space, n breaks are n-1, "<<" is "<".
    raw = (b"From: ann@example.com\r\nSubject: notes\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/enriched\r\n\r\n"
           b"<bold>The VPN</bold> drops\r\nevery hour.\r\n\r\n"
           b"<param>red</param><color>Since</color> 9 <<am>.\r\n")
    assert parse(raw).body.strip() == "The VPN drops every hour.\nSince 9 <am>."


def test_a_calendar_part_is_not_the_text() -> None:
    raw = (b"From: ann@example.com\r\nSubject: meeting\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/calendar; method=REQUEST\r\n\r\n"
           b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n")
    msg = parse(raw)
    assert msg.body == "" and [a.content_type for a in msg.attachments] == ["text/calendar"]


def test_an_html_part_shown_in_a_mixed_mail_is_text_beside_a_plain_footer() -> None:
    # A list server (or a gateway) appends its footer as a text/plain part after an
    # HTML-only request: both are shown, one after the other (RFC 2046 5.1.3).
    raw = (b"From: ann@example.com\r\nSubject: laptop\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=m\r\n\r\n"
           b"--m\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
           b"<html><body><p>My laptop will not boot.</p></body></html>\r\n"
           b"--m\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
           b"-- \r\nhelpdesk-users mailing list\r\n"
           b"--m\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Sent from my phone</p>\r\n"
           b"--m--\r\n")
    msg = parse(raw)
    assert msg.body.split("\n") == ["My laptop will not boot.", "", "-- ",
                                    "helpdesk-users mailing list", "", "Sent from my phone"]
    assert msg.attachments == () and extract(raw) == []


def test_an_html_request_with_pictures_keeps_its_text_beside_a_plain_footer() -> None:
    raw = (b"From: ann@example.com\r\nSubject: laptop\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=m\r\n\r\n"
           b"--m\r\nContent-Type: multipart/related; boundary=r\r\n\r\n"
           b"--r\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
           b"<p>My laptop shows this:</p><img src=\"cid:s1\">\r\n"
           b"--r\r\nContent-Type: image/png\r\nContent-ID: <s1>\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--r--\r\n"
           b"--m\r\nContent-Type: text/plain\r\n\r\nhelpdesk-users mailing list\r\n--m--\r\n")
    msg = parse(raw)
    assert msg.body.split("\n") == ["My laptop shows this:", "", "helpdesk-users mailing list"]
    assert [a.content_type for a in msg.attachments] == ["image/png"]
    assert [p.content_type for p in extract(raw)] == ["image/png"]


def test_a_mixed_html_alternative_is_not_read_beside_its_plain_twin() -> None:
    # Apple Mail's HTML with a picture between two texts: the alternative's HTML choice
    # is a multipart/mixed; the plain choice is the text, read once.
    raw = (b"From: ann@example.com\r\nSubject: laptop\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/alternative; boundary=a\r\n\r\n"
           b"--a\r\nContent-Type: text/plain\r\n\r\nBefore. After.\r\n"
           b"--a\r\nContent-Type: multipart/mixed; boundary=m\r\n\r\n"
           b"--m\r\nContent-Type: text/html\r\n\r\n<p>Before.</p>\r\n"
           b"--m\r\nContent-Type: image/png; name=s.png\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n"
           b"--m\r\nContent-Type: text/html\r\n\r\n<p>After.</p>\r\n--m--\r\n--a--\r\n")
    msg = parse(raw)
    assert msg.body.strip() == "Before. After."
    assert [a.filename for a in msg.attachments] == [p.filename for p in extract(raw)]


def test_an_appledouble_file_is_its_data_fork_alone() -> None:
    # Mac mail clients send a file as multipart/appledouble (RFC 1740): the Finder data
    # and resource fork (application/applefile, same name), then the file itself.
    raw = (b"From: ann@example.com\r\nSubject: doc\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=o\r\n\r\n"
           b"--o\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
           b"--o\r\nContent-Type: multipart/appledouble; boundary=ad\r\n\r\n"
           b"--ad\r\nContent-Type: application/applefile; name=\"report.pdf\"\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\nAAUWBwACAAA=\r\n"
           b"--ad\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--ad--\r\n--o--\r\n")
    msg = parse(raw)
    assert [(a.filename, a.content_type) for a in msg.attachments] == [
        ("report.pdf", "application/pdf")]
    assert [(p.filename, p.data) for p in extract(raw)] == [("report.pdf", b"%PDF-1.4\n")]
    [relayed] = relay_parts(raw, 10**6).parts
    assert b"application/pdf" in relayed and b"applefile" not in relayed
    # A resource fork alone is still the file that came.
    lone = raw.replace(b"--ad\r\nContent-Type: application/pdf", b"--x\r\nContent-Type: x/y")
    assert [a.content_type for a in parse(lone).attachments] == ["application/applefile"]
