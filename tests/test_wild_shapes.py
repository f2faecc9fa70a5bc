"""Shapes of real mail from public collections other than the shared corpus (mikel/mail,
MimeKit, zbateson/mail-mime-parser, nodemailer/mailparser, SpamScope/mail-parser) that
mailgate read wrongly. Each message here is hand-made: the shape, not the third-party file.
"""

from __future__ import annotations

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

