"""Shapes of real mail from more public collections (stalwartlabs/mail-parser, with its
expected readings; mailgun/flanker; apache/james-mime4j and the MIME-tools messages it
carries) that mailgate read wrongly. Each message here is hand-made: the shape, not the
third-party file. The first collections are in test_wild_shapes.py."""

from __future__ import annotations

import base64

from mailgate.core.mime.files import extract
from mailgate.core.mime.parse import parse


def test_a_plain_choice_made_of_several_parts_gives_all_its_text() -> None:
    # stalwartlabs/mail-parser rfc/007.eml (RFC 8621 4.1.4's example): the plain choice
    # of an alternative is a multipart/mixed of text, an inline picture, more text; the
    # other choice is HTML with its picture. The plain choice is read whole, as a
    # multipart/mixed is anywhere else (RFC 2046 5.1.3); before, only the text outside
    # the alternative was read.
    raw = (b"From: ann@example.com\r\nSubject: printer\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=m\r\n\r\n"
           b"--m\r\nContent-Type: text/plain\r\n\r\nHello,\r\n"
           b"--m\r\nContent-Type: multipart/alternative; boundary=a\r\n\r\n"
           b"--a\r\nContent-Type: multipart/mixed; boundary=p\r\n\r\n"
           b"--p\r\nContent-Type: text/plain\r\n\r\nthe printer shows this:\r\n"
           b"--p\r\nContent-Type: image/png\r\nContent-Disposition: inline\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n"
           b"--p\r\nContent-Type: text/plain\r\n\r\nand then stops.\r\n--p--\r\n"
           b"--a\r\nContent-Type: multipart/related; boundary=r\r\n\r\n"
           b"--r\r\nContent-Type: text/html\r\n\r\n<p>the printer shows this:"
           b"<img src=\"cid:i\"> and then stops.</p>\r\n"
           b"--r\r\nContent-Type: image/png\r\nContent-ID: <i>\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--r--\r\n"
           b"--a--\r\n"
           b"--m\r\nContent-Type: text/plain\r\n\r\nAnn\r\n--m--\r\n")
    msg = parse(raw)
    assert msg.body.split("\n\n") == ["Hello,", "the printer shows this:",
                                      "and then stops.", "Ann"]
    assert [a.content_type for a in msg.attachments] == ["image/png", "image/png"]
    assert [p.content_type for p in extract(raw)] == ["image/png", "image/png"]
    top = raw.split(b"--m\r\nContent-Type: multipart/alternative; boundary=a\r\n\r\n")[1]
    alone = (b"From: ann@example.com\r\nSubject: printer\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: multipart/alternative; boundary=a\r\n\r\n"
             + top.split(b"--m\r\n")[0])
    assert parse(alone).body.split("\n\n") == ["the printer shows this:", "and then stops."]


def test_text_inside_a_message_attached_to_a_choice_does_not_make_it_the_text() -> None:
    raw = (b"From: ann@example.com\r\nSubject: printer\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/alternative; boundary=a\r\n\r\n"
           b"--a\r\nContent-Type: multipart/mixed; boundary=p\r\n\r\n"
           b"--p\r\nContent-Type: text/html\r\n\r\n<p>See <b>this</b>:</p>\r\n"
           b"--p\r\nContent-Type: message/rfc822\r\n\r\n"
           b"From: bob@example.com\r\nSubject: old\r\n\r\nOld words.\r\n--p--\r\n"
           b"--a\r\nContent-Type: text/plain\r\n\r\nSee the mail below.\r\n--a--\r\n")
    assert parse(raw).body.strip() == "See the mail below."  # the plain choice


_FORWARDED = (b"From: bob@example.com\r\nSubject: the old ticket\r\n\r\n"
              b"The printer jammed again.\r\n")


def test_an_attached_message_is_stored_as_the_message_not_as_its_part() -> None:
    # stalwartlabs/mail-parser thirdparty/015.eml: the stored .eml of a forwarded mail
    # began with the part's own fields (Content-Type: message/rfc822, its disposition),
    # so a mail program opened an empty message holding the real one.
    raw = (b"From: ann@example.com\r\nSubject: fw\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=m\r\n\r\n"
           b"--m\r\nContent-Type: text/plain\r\n\r\nSee below.\r\n"
           b"--m\r\nContent-Type: message/rfc822; name=old.eml\r\n"
           b"Content-Disposition: attachment; filename=old.eml\r\n\r\n"
           + _FORWARDED + b"--m--\r\n")
    [stored] = extract(raw)
    assert stored.filename == "old.eml"
    # The line end before the delimiter is the delimiter's (RFC 2046 5.1.1).
    assert stored.data.replace(b"\r\n", b"\n") == _FORWARDED.replace(b"\r\n", b"\n")[:-1]


def test_a_message_attached_in_base64_is_stored_decoded() -> None:
    # apache/james-mime4j testmsgs/base64encoded-rfc822message.msg (and MIME-tools'
    # multi-2gifs-base64.msg): RFC 2046 5.2.1 allows only 7bit, 8bit or binary for
    # message/rfc822, but whole messages are sent base64-encoded; the file is the message.
    raw = (b"From: ann@example.com\r\nSubject: fw\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=m\r\n\r\n"
           b"--m\r\nContent-Type: text/plain\r\n\r\nSee below.\r\n"
           b"--m\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + base64.encodebytes(_FORWARDED) + b"--m--\r\n")
    [stored] = extract(raw)
    assert stored.content_type == "message/rfc822" and stored.data == _FORWARDED



def test_a_multipart_whose_boundary_never_comes_is_text_in_its_place() -> None:
    # mime4j missing-inner-boundary.msg: a multipart/alternative inside a mixed, its
    # boundary never written: no delimiter, so its content is plain text (what mail
    # programs show), shown after the first part. It was neither body nor attachment.
    raw = (b"From: ann@example.com\r\nSubject: printer\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=m\r\n\r\n"
           b"--m\r\nContent-Type: text/plain\r\n\r\nHello,\r\n"
           b"--m\r\nContent-Type: multipart/alternative; boundary=gone\r\n\r\n"
           b"The printer jams.\r\n--m--\r\n")
    msg = parse(raw)
    assert msg.body.strip().split("\n\n") == ["Hello,", "The printer jams."]
    assert msg.attachments == () and extract(raw) == []


def test_a_message_whose_multipart_boundary_never_comes_is_text_not_a_file() -> None:
    # mailgun/flanker false-multipart.eml: parse() read the content as the body, and
    # extract() stored it as a file named "unnamed" as well.
    raw = (b"From: ann@example.com\r\nSubject: printer\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/alternative; boundary=gone\r\n\r\n"
           b"The printer jams.\r\n")
    msg = parse(raw)
    assert msg.body.strip() == "The printer jams." and msg.attachments == ()
    assert extract(raw) == []



def _cut_base64(data: bytes) -> bytes:
    """`data` base64-encoded in lines of 76, cut one letter after a whole group of four."""
    letters = base64.b64encode(data)
    letters = letters[: len(letters) - len(letters) % 4 - 4 + 1]
    return b"\r\n".join(letters[i:i + 76] for i in range(0, len(letters), 76))


def test_base64_cut_one_letter_after_a_whole_group_still_decodes() -> None:
    # php-mime-mail-parser tests/mails/m0018: a JPEG cut short in transit, 233 base64
    # letters (4 x 58 + 1). The stdlib gives such a payload back undecoded: the file was
    # stored as its base64 letters, and a text part so cut read as letters, not words.
    text = b"The printer on floor 2 jams on every second page since Monday!!"  # 63 bytes
    picture = bytes(range(256)) * 3  # whole groups of three bytes: no padding
    raw = (b"From: ann@example.com\r\nSubject: printer\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=m\r\n\r\n"
           b"--m\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + _cut_base64(text) + b"\r\n"
           b"--m\r\nContent-Type: image/jpeg; name=jam.jpg\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + _cut_base64(picture)
           + b"\r\n--m--\r\n")
    msg = parse(raw)
    assert text.decode().startswith(msg.body) and len(msg.body) == len(text) - 3
    [stored] = extract(raw)
    assert picture.startswith(stored.data) and len(stored.data) == len(picture) - 3
    assert [a.size for a in msg.attachments] == [len(stored.data)]


def test_iso_2022_jp_reads_the_nec_characters_as_browsers_do() -> None:
    # php-mime-mail-parser tests/mails/issue116: "№" (NEC row 13) in an ISO-2022-JP
    # subject became U+FFFD. The WHATWG decoder reads JIS X 0208 through index-jis0208,
    # Windows-31J's table: NEC row 13 (№, ㈱, ①) and the IBM extensions are in it.
    jis = "\x1b$B-b\x1b(B41 \x1b$B-j%W%j%s%?!<\x1b(B".encode("ascii")  # №41 ㈱プリンター
    raw = (b"From: ann@example.com\r\nSubject: =?iso-2022-jp?B?"
           + base64.b64encode(jis) + b"?=\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=iso-2022-jp\r\n\r\n"
           + b"\x1b$B-!\x1b(B toner\r\n")  # ① toner
    msg = parse(raw)
    assert msg.subject == "№41 ㈱プリンター"
    assert msg.body.strip() == "① toner" and msg.defects == ()


def test_a_named_html_part_shown_inline_is_the_text_when_there_is_no_other() -> None:
    # notmuch test/corpora/html/attribute-text: the whole mail one text/html part with
    # "Content-Disposition: inline; filename=test.html" (report generators, scanners).
    # Shown inline, it is what the reader sees, as a named inline text/plain part is;
    # the body was empty. It stays an attachment too.
    raw = (b"From: ann@example.com\r\nSubject: report\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/html\r\nContent-Disposition: inline; filename=report.html\r\n"
           b"\r\n<html><body><p>Disk <b>C:</b> is 98% full.</p></body></html>\r\n")
    msg = parse(raw)
    assert msg.body.strip() == "Disk C: is 98% full."
    assert [a.filename for a in msg.attachments] == ["report.html"]
    attached = raw.replace(b"inline; filename", b"attachment; filename")
    assert parse(attached).body == ""


def test_a_head_without_its_end_tag_does_not_hide_the_body() -> None:
    # Thunderbird mailnews/test/data/base64-3 and multipart-base64-3: text written inside
    # <head>, which browsers show (HTML's "in head" mode: text, or a tag a head cannot
    # hold, ends the head). The same rule keeps a head whose </head> was left out from
    # taking the whole body with it; both read as an empty body.
    in_head = b"<html><head>The printer <b>jams</b> again.</head></html>"
    unclosed = (b"<html><head><meta charset=utf-8><title>Ticket</title>"
                b"<body><p>The printer jams again.</p></body></html>")
    for html in (in_head, unclosed):
        raw = (b"From: ann@example.com\r\nSubject: printer\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n"
               + base64.encodebytes(html))
        assert parse(raw).body == "The printer jams again.", html


def test_a_display_name_folded_inside_its_quotes_keeps_the_sender() -> None:
    # stalwartlabs/mail-parser resources/address.json ('"John\r\n Doe" <a@b.com>'), the
    # shape of a long "Lastname, Firstname (Department)" folded by its mailer: FWS is
    # allowed inside a quoted string (RFC 5322 3.2.4), and unfolding removes the CRLF
    # only. Read folded, the quoted name ended at the line break: no sender at all.
    raw = (b'From: "Doe,\r\n John (Accounts)" <john.doe@example.com>\r\n'
           b'To: "Help\r\n Desk" <help@example.com>, ann@example.com\r\n'
           b"Subject: printer\r\n\r\nIt jams.\r\n")
    msg = parse(raw)
    assert msg.sender is not None
    assert (msg.sender.addr, msg.sender.name) == ("john.doe@example.com",
                                                  "Doe, John (Accounts)")
    assert [(a.addr, a.name) for a in msg.to] == [("help@example.com", "Help Desk"),
                                                 ("ann@example.com", "")]


def test_blanks_and_comments_around_the_slash_of_a_media_type() -> None:
    # stalwartlabs/mail-parser resources/content_type.json ("text /plain",
    # "message / rfc822", "(hello) text (plain) / (world) plain (eod)"): type "/" subtype
    # are tokens of a structured field, and CFWS may stand between them (RFC 2045 5.1,
    # RFC 5322 3.2.2). Kept in the type, "text /plain" was no text: an empty body.
    raw = (b"From: ann@example.com\r\nSubject: printer\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=m\r\n\r\n"
           b"--m\r\nContent-Type: (the request) text /plain; charset=iso-8859-1\r\n"
           b"Content-Transfer-Encoding: 8bit\r\n\r\nThe printer jams. Gr\xfc\xdfe\r\n"
           b"--m\r\nContent-Type: image/ jpeg name=\"jam (1).jpg\"\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n/9j/4AAQ\r\n--m--\r\n")
    msg = parse(raw)
    assert msg.body.strip() == "The printer jams. Grüße"
    assert [(a.filename, a.content_type) for a in msg.attachments] == [
        ("jam (1).jpg", "image/jpeg")]


def test_words_labelled_base64_are_not_decoded_as_cut_base64() -> None:
    # jhillyerd/enmime mime-bad-content-transfer-encoding.raw: plain words under
    # "Content-Transfer-Encoding: base64", one letter over whole groups of four. Blanks
    # inside its lines say it is no base64; it stays the words the stdlib hands back.
    raw = (b"From: ann@example.com\r\nSubject: printer\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n"
           b"\r\nThe printer on floor 2 jams.\r\nPlease send Bobby.\r\n")
    assert parse(raw).body.startswith("The printer on floor 2 jams.")


def test_comments_between_the_tokens_of_a_date() -> None:
    # stalwartlabs/mail-parser resources/date.json: RFC 5322 3.3 lets CFWS stand between
    # the date's tokens; with a comment inside, the date was lost.
    raw = (b"From: ann@example.com\r\nSubject: printer\r\n"
           b"Date: Tue, 1 Jul 2003 ((a nested)\r\n comment) 10:52:37 +0200 (CEST)\r\n"
           b"\r\nIt jams.\r\n")
    date = parse(raw).date
    assert date is not None and date.isoformat() == "2003-07-01T10:52:37+02:00"


def test_8bit_text_under_iso_2022_jp_without_an_escape_is_in_another_charset() -> None:
    # apache/spamassassin t/data/nice/cjk/iso-2022-jp.2: a Japanese list's EUC-JP text
    # labelled ISO-2022-JP. That encoding is 7-bit, switching sets by escape sequences;
    # 8-bit bytes and no escape break its promise, so the label is wrong. It read as 186
    # replacement characters; it is read as undeclared text (here EUC-JP), with a defect.
    text = "ああ、心当たりがあります。たぶん、この前のsshと同じ問題です。調べます。"
    raw = (b"From: ann@example.com\r\nSubject: ruby\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=iso-2022-jp\r\n"
           b"Content-Transfer-Encoding: 7bit\r\n\r\n" + text.encode("euc-jp") + b"\r\n")
    msg = parse(raw)
    assert msg.body.strip() == text
    assert any("none of its escapes" in d for d in msg.defects)
    real = text.encode("iso-2022-jp")  # with its escapes: the label holds
    assert parse(raw.replace(text.encode("euc-jp"), real)).body.strip() == text


def test_every_attachment_parse_lists_is_a_file_extract_returns() -> None:
    # php-mime-mail-parser issue408: 328 attachments; 100 were stored, all 328 listed.
    parts = b"".join(b"--b\r\nContent-Type: text/csv; name=\"f%d.csv\"\r\n\r\nx;%d\r\n" % (i, i)
                     for i in range(300))
    raw = (b"From: ann@example.com\r\nSubject: files\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain"
           b"\r\n\r\nthe exports\r\n" + parts + b"--b--\r\n")
    listed = [a.filename for a in parse(raw).attachments]
    assert len(listed) == 300
    assert [f.filename for f in extract(raw)] == listed
