"""Shapes of real mail from public collections other than the shared corpus (mikel/mail,
MimeKit, zbateson/mail-mime-parser, nodemailer/mailparser, SpamScope/mail-parser) that
mailgate read wrongly. Each message here is hand-made: the shape, not the third-party file.
"""
# ruff: noqa: RUF001  (text in other scripts, and their punctuation, is the point here)

from __future__ import annotations

import base64

import pytest

from mailgate.core.mime.parse import parse


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
