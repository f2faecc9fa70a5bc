"""classify(): never answer automatic mail (RFC 3834), nor ourselves."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.core.classify import LoopContext, Verdict, classify
from mailgate.core.mime import mailheaders
from mailgate.core.mime.parse import parse
from mailgate.core.model import MailKind
from tests.factories import mail

CTX = LoopContext(frozenset({"it-help@example.com"}), "mailgate-test")
DATA = Path(__file__).parent / "data" / "mail"


def verdict_of(raw: bytes) -> Verdict:
    return classify(parse(raw), CTX)


def kind_of(raw: bytes) -> MailKind:
    return verdict_of(raw).kind


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, MailKind.REQUEST),
    ({"Auto-Submitted": "no"}, MailKind.REQUEST),
    ({"Auto-Submitted": "auto-replied"}, MailKind.AUTO_REPLY),
    ({"Auto-Submitted": "auto-generated; owner-email=x@y"}, MailKind.AUTO_REPLY),
    ({"X-Autoreply": "yes"}, MailKind.AUTO_REPLY),
    ({"Precedence": "auto_reply"}, MailKind.AUTO_REPLY),
    ({"X-Auto-Response-Suppress": "All"}, MailKind.AUTO_REPLY),
    ({"Precedence": "bulk"}, MailKind.BULK),
    ({"Precedence": "list"}, MailKind.BULK),
    ({"Precedence": "junk"}, MailKind.BULK),
    ({"List-Id": "<news.example.com>"}, MailKind.BULK),
    ({"List-Unsubscribe": "<mailto:x@y>"}, MailKind.BULK),
    ({"X-Failed-Recipients": "a@b.example"}, MailKind.BOUNCE),
    ({"X-Mailgate-Instance": "mailgate-test"}, MailKind.OWN),
])
def test_headers_decide_the_kind(headers: dict[str, str], expected: MailKind) -> None:
    assert kind_of(mail(headers=headers)) is expected


@pytest.mark.parametrize(("fields", "expected"), [
    # An autoresponder that copies the headers of the mail it answers (our relayed answer
    # says "Auto-Submitted: no") and adds its own below: every field counts.
    (b"Auto-Submitted: no\r\nAuto-Submitted: auto-replied\r\n", MailKind.AUTO_REPLY),
    (b"Auto-Submitted: (none)\r\nAuto-Submitted: auto-generated\r\n", MailKind.AUTO_REPLY),
    (b"Precedence: normal\r\nPrecedence: bulk\r\n", MailKind.BULK),
    (b"Precedence: first-class\r\nPrecedence: auto_reply\r\n", MailKind.AUTO_REPLY),
    (b"Auto-Submitted: no\r\nAuto-Submitted: no (a person)\r\n", MailKind.REQUEST),
])
def test_every_instance_of_a_marking_field_counts(fields: bytes, expected: MailKind) -> None:
    assert kind_of(fields + mail()) is expected


@pytest.mark.parametrize("subject", ["Automatic reply: Laptop", "Out of Office: away",
                                     "AUTO: gone", "Abwesenheitsnotiz: Urlaub",
                                     "Réponse automatique : absent"])
def test_out_of_office_subjects(subject: str) -> None:
    assert kind_of(mail(subject)) is MailKind.AUTO_REPLY


def test_ordinary_subjects_that_look_similar_are_requests() -> None:
    assert kind_of(mail("Automatic backups failing")) is MailKind.REQUEST
    assert kind_of(mail("Out of paper in printer 3")) is MailKind.REQUEST


@pytest.mark.parametrize("part", ["message/disposition-notification",
                                  "message/global-disposition-notification",
                                  "message/global-headers"])
def test_a_report_part_without_its_multipart_report_is_still_a_report(part: str) -> None:
    """A read receipt (RFC 8098) whose sender wrapped it in multipart/mixed."""
    raw = mail(body=f"--b\r\nContent-Type: text/plain\r\n\r\nRead: Laptop\r\n--b\r\n"
                    f"Content-Type: {part}\r\n\r\nFinal-Recipient: rfc822; ann@example.com"
                    f"\r\n--b--\r\n").replace(
        b"Content-Type: text/plain; charset=utf-8",
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"')
    assert verdict_of(raw) == Verdict(MailKind.BOUNCE, f"{part} part")


def test_bounces_by_report_or_by_sender_with_another_sign() -> None:
    report = (b"From: mx@example.com\r\nContent-Type: multipart/report; "
              b"report-type=delivery-status; boundary=b\r\n\r\n--b--\r\n")
    assert kind_of(report) is MailKind.BOUNCE
    daemon = "MAILER-DAEMON@mx.example.com"
    assert kind_of(mail("Undelivered Mail Returned to Sender", sender=daemon)) is MailKind.BOUNCE
    assert kind_of(mail("x", sender=daemon, headers={"Return-Path": "<>"})) is MailKind.BOUNCE
    assert kind_of(b"From: MAILER-DAEMON\r\nSubject: failure notice\r\n\r\nx") is \
        MailKind.BOUNCE
    assert kind_of(b"From: MAILER-DAEMON <>\r\nSubject: Mail delivery failed\r\n\r\nx") is \
        MailKind.BOUNCE
    status = (b"From: mx@example.com\r\nSubject: note\r\nContent-Type: multipart/mixed; "
              b"boundary=b\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n"
              b"Reporting-MTA: dns; mx.example.com\r\n\r\nAction: failed\r\n--b--\r\n")
    assert verdict_of(status) == Verdict(MailKind.BOUNCE, "message/delivery-status part")


def test_a_role_sender_without_a_delivery_report_is_ticketed_not_answered() -> None:
    for sender in ("postmaster@example.org", "MAILER-DAEMON@mx.example.com"):
        verdict = verdict_of(mail("TLS certificate expires Friday", sender=sender))
        assert verdict.kind is MailKind.BULK
        assert "without a delivery report" in verdict.reason
    html = (DATA / "postmaster-html-no-report.eml").read_bytes()
    assert kind_of(html) is MailKind.BULK


def test_mail_from_our_own_address_is_own() -> None:
    assert kind_of(mail(sender="IT <it-help@example.com>")) is MailKind.OWN
    assert kind_of(mail(sender="IT-Help+IT-1001@Example.com")) is MailKind.OWN  # tag, case
    assert kind_of(mail(sender="it-help-desk@example.com")) is MailKind.REQUEST


def test_the_first_matching_rule_gives_the_reason() -> None:
    verdict = classify(parse(mail(headers={"Auto-Submitted": "auto-replied",
                                           "List-Id": "<x>"})), CTX)
    assert verdict.kind is MailKind.AUTO_REPLY and "Auto-Submitted" in verdict.reason


@pytest.mark.parametrize(("headers", "reason"), [
    ({"List-Id": "Helpdesk users <helpdesk-users.lists.example.org>"}, "list-id header"),
    ({"List-Help": "<mailto:users-help@example.org>"}, "list-help header"),
    ({"List-Subscribe": "<https://lists.example.org/subscribe>"}, "list-subscribe header"),
    ({"List-Post": "NO (posting not allowed)"}, "list-post header"),
    ({"List-Owner": "<mailto:owner@example.org>"}, "list-owner header"),
    ({"List-Archive": "<https://lists.example.org/archive>"}, "list-archive header"),
    ({"Mailing-List": "contact users-help@example.org; run by ezmlm"}, "mailing-list header"),
    ({"X-Mailman-Version": "2.1.39"}, "x-mailman-version header"),
    ({"X-Mailing-List": "<linux-kernel@vger.kernel.org>"}, "x-mailing-list header"),
    ({"Sender": "owner-users@example.org"}, "sender owner-users@example.org"),
    ({"Sender": "users-bounces+ann=example.com@lists.example.org"}, "sender users-bounces"),
    ({"Return-Path": "<users-request@example.org>"}, "return-path users-request@"),
    ({"Precedence": "list (via majordomo)"}, "Precedence: list"),
    ({"Feedback-ID": "1234:campaign:mailer:esp"}, "Feedback-ID header"),
    ({"X-MS-Exchange-Inbox-Rules-Loop": "boss@example.com"}, "boss@example.com's mailbox rule"),
    ({"X-MS-Exchange-Generated-Message-Source": "Mailbox Rules Agent"},
     "Generated-Message-Source: Mailbox Rules Agent"),
])
def test_list_and_automatic_mail_is_bulk(headers: dict[str, str], reason: str) -> None:
    verdict = verdict_of(mail(headers=headers))
    assert verdict.kind is MailKind.BULK
    assert reason in verdict.reason


@pytest.mark.parametrize("name", ["X-Autoreply", "X-Autorespond", "X-Autoresponder"])
def test_autoresponder_flags(name: str) -> None:
    assert kind_of(mail(headers={name: "yes"})) is MailKind.AUTO_REPLY
    assert kind_of(mail(headers={name: "no"})) is MailKind.REQUEST


def test_list_fixtures() -> None:
    assert verdict_of((DATA / "mailman-digest.eml").read_bytes()).kind is MailKind.BULK
    ezmlm = verdict_of((DATA / "ezmlm-list.eml").read_bytes())
    assert ezmlm == Verdict(MailKind.BULK, "mailing-list header (list mail)")


def test_our_own_mailbox_rule_is_plumbing_not_automatic_mail() -> None:
    # The department address redirects to mailgate's mailbox with an Exchange rule.
    own = {"X-MS-Exchange-Inbox-Rules-Loop": "it-help@example.com",
           "X-MS-Exchange-Generated-Message-Source": "Mailbox Rules Agent"}
    assert kind_of(mail(headers=own)) is MailKind.REQUEST


@pytest.mark.parametrize(("envelope_sender", "expected", "reason"), [
    ("", MailKind.AUTO_REPLY, "null return path"),
    ("users-bounces+ann=example.com@lists.example.org", MailKind.BULK,
     "envelope sender users-bounces+ann=example.com@lists.example.org is a list address"),
    ("Owner-Users@Example.org", MailKind.BULK, "envelope sender owner-users@example.org"),
    ("ann@example.com", MailKind.REQUEST, ""),
    (None, MailKind.REQUEST, ""),  # read from a mailbox: its Return-Path says it
])
def test_the_envelope_of_pushed_mail_is_its_return_path(envelope_sender: str | None,
                                                        expected: MailKind,
                                                        reason: str) -> None:
    """Mail pushed to our SMTP listener has no Return-Path header (the final delivery
    writes one, and that is us): its MAIL FROM is the reverse-path RFC 3834 speaks of.
    An out-of-office reply sent from <> with an ordinary subject and no Auto-Submitted
    must not be acknowledged."""
    verdict = classify(parse(mail("Re: Laptop won't boot")),
                       LoopContext(CTX.own_addresses, CTX.instance, envelope_sender))
    assert verdict.kind is expected
    assert reason in verdict.reason
    bounce = mail("Your message", sender="MAILER-DAEMON@mx.example.org")
    assert classify(parse(bounce), LoopContext(CTX.own_addresses, CTX.instance, "")
                    ) == Verdict(MailKind.BOUNCE, "sent by mailer-daemon with a null return path")


@pytest.mark.parametrize("headers", [
    {"Precedence": "=?utf-8?q?bulk?="},  # an encoded word is no keyword here
    {"Precedence": "(bulk) normal"},  # a comment is no keyword either
    {"Auto-Submitted": "no (auto-replied is what it is not)"},
    {"List-Id": "=?utf-8?q?x?="},  # no <list.id>
    {"List-Unsubscribe": "just some words"},  # no <URL>
    {"Sender": "Ann <ann@example.com>"},
    {"Return-Path": "<owner@example.org>"},  # owner@ is not owner-list@
    {"X-Mailgate-Instance": "someone-else"},
])
def test_headers_are_read_by_their_grammar(headers: dict[str, str]) -> None:
    assert kind_of(mail(headers=headers)) is MailKind.REQUEST


def test_grammar_readers() -> None:
    assert mailheaders.strip_comments('a (b (c) \\) d) "(e)" f') == 'a  "(e)" f'
    assert mailheaders.keyword(" Auto-Replied ; owner-email=x@y (why)") == "auto-replied"
    assert mailheaders.keywords("OOF, AutoReply") == ("oof", "autoreply")
    assert mailheaders.is_null_path(" < > (bounce)") and not mailheaders.is_null_path("<a@b>")
    assert mailheaders.list_id("List <users.example.org>") == "users.example.org"
    assert mailheaders.list_id("<nodot>") is None
    assert mailheaders.list_urls("<mailto:a@b>, (c) <https://x>") == ("mailto:a@b", "https://x")
    assert mailheaders.local_part("List-Bounces+ann=x@lists.example.org") == "list-bounces"
    assert mailheaders.mailbox_word("MAILER-DAEMON <>") == "mailer-daemon"
