"""parse(): bytes -> Inbound, tolerant of everything real mail does."""

from __future__ import annotations

from mailgate.parse import clean_address, decode_text, fingerprint, html_to_text, parse
from tests.factories import mail


def test_rfc2047_subjects_in_several_charsets() -> None:
    assert decode_text("=?utf-8?B?TGFwdG9wIGthcHV0dCDwn5Sl?=") == "Laptop kaputt 🔥"
    assert decode_text("=?iso-8859-1?Q?Gr=FC=DFe?=") == "Grüße"
    assert decode_text("=?koi8-r?B?8NLJ18XU?=") == "Привет"
    assert decode_text("=?utf-8?q?a?= =?utf-8?q?b?=") == "ab"  # whitespace between words


def test_undeclared_8bit_header_falls_back_to_latin1_or_utf8() -> None:
    latin = parse(b"From: a@example.com\r\nSubject: Gr\xfc\xdfe\r\n\r\nx")
    utf8 = parse("From: a@example.com\r\nSubject: Grüße\r\n\r\nx".encode())
    assert latin.subject == "Grüße" and utf8.subject == "Grüße"


def test_unknown_charset_does_not_raise() -> None:
    msg = parse(b"From: a@example.com\r\nSubject: =?x-klingon?Q?abc?=\r\n"
                b"Content-Type: text/plain; charset=x-klingon\r\n\r\nbody")
    assert msg.subject == "abc" and msg.body == "body"


def test_message_id_normalised_and_missing_one_hashed() -> None:
    assert parse(mail(message_id="  <Abc@Example.COM>  ")).message_id == "Abc@Example.COM"
    first, second = parse(mail(message_id=None)), parse(mail(message_id=None))
    assert first.message_id == ""
    assert first.dedupe_key.startswith("sha256:") and first.dedupe_key == second.dedupe_key
    assert parse(mail(message_id=None, body="other")).dedupe_key != first.dedupe_key


def test_addresses_are_lower_cased_and_deduplicated() -> None:
    msg = parse(b"From: Ann <Ann@Example.COM>\r\nTo: IT <it-help@example.com>, it-help@example.com"
                b"\r\nCc: b@example.com\r\nDelivered-To: helpdesk@example.com\r\n\r\nx")
    assert msg.sender is not None and msg.sender.addr == "ann@example.com"
    assert msg.sender.name == "Ann"
    assert [a.addr for a in msg.to] == ["it-help@example.com"]
    assert msg.recipients() == ("it-help@example.com", "b@example.com", "helpdesk@example.com")


def test_threading_headers() -> None:
    msg = parse(mail(headers={"In-Reply-To": "<x@y>", "References": "<a@b> <c@d>\r\n <x@y>"}))
    assert msg.in_reply_to == ("x@y",)
    assert msg.references == ("a@b", "c@d", "x@y")


def test_plain_text_preferred_over_html() -> None:
    raw = (b"From: a@example.com\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n"
           b"--b\r\nContent-Type: text/plain\r\n\r\nplain\r\n--b--\r\n")
    assert parse(raw).body.strip() == "plain"


def test_html_only_becomes_text_without_scripts() -> None:
    raw = (b"From: a@example.com\r\nContent-Type: text/html\r\n\r\n"
           b"<html><head><style>p{}</style></head><body><p>Hello</p><script>x()</script>"
           b"<p>World &amp; you</p></body></html>")
    body = parse(raw).body
    assert "Hello" in body and "World & you" in body
    assert "x()" not in body and "p{}" not in body
    assert html_to_text("<b>unclosed") == "unclosed"


def test_attachment_metadata() -> None:
    raw = (b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain\r\n\r\nsee file\r\n--b\r\n"
           b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
           b"Content-Disposition: attachment; filename=\"=?utf-8?q?Rechnung_M=C3=A4rz.pdf?=\"\r\n"
           b"\r\nJVBERi0xLjQK\r\n--b--\r\n")
    msg = parse(raw)
    assert msg.body.strip() == "see file"
    [attachment] = msg.attachments
    assert attachment.filename == "Rechnung März.pdf"
    assert attachment.content_type == "application/pdf" and attachment.size == 9


def test_long_body_is_cut_with_a_defect() -> None:
    msg = parse(mail(body="x" * 5000), max_body_chars=1000)
    assert len(msg.body) == 1000
    assert any("cut" in d for d in msg.defects)


def test_sender_falls_back_to_reply_to() -> None:
    msg = parse(b"From: Whoever\r\nReply-To: real@example.com\r\n\r\nx")
    assert msg.sender is not None and msg.sender.addr == "real@example.com"
    assert any("no usable From" in d for d in msg.defects)


def test_clean_address_rejects_junk() -> None:
    assert clean_address("<Ann@Example.com>") == "ann@example.com"
    for junk in ("", "ann", "@example.com", "ann@", "a b@example.com", "a@b", "a\r\n@x.com"):
        assert clean_address(junk) == "", junk


def test_fingerprint_ignores_transport_headers_but_not_content() -> None:
    base = mail()
    relayed = b"Received: from mx by mx2\r\nDelivered-To: it-help@example.com\r\n" + base
    assert fingerprint(parse(base)) == fingerprint(parse(relayed))
    assert fingerprint(parse(base)) != fingerprint(parse(mail(body="different")))
