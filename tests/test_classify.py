"""classify(): never answer automatic mail (RFC 3834), nor ourselves."""

from __future__ import annotations

import pytest

from mailgate.classify import LoopContext, classify
from mailgate.model import MailKind
from mailgate.parse import parse
from tests.factories import mail

CTX = LoopContext(frozenset({"it-help@example.com"}), "mailgate-test")


def kind_of(raw: bytes) -> MailKind:
    return classify(parse(raw), CTX).kind


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


@pytest.mark.parametrize("subject", ["Automatic reply: Laptop", "Out of Office: away",
                                     "AUTO: gone", "Abwesenheitsnotiz: Urlaub",
                                     "Réponse automatique : absent"])
def test_out_of_office_subjects(subject: str) -> None:
    assert kind_of(mail(subject)) is MailKind.AUTO_REPLY


def test_ordinary_subjects_that_look_similar_are_requests() -> None:
    assert kind_of(mail("Automatic backups failing")) is MailKind.REQUEST
    assert kind_of(mail("Out of paper in printer 3")) is MailKind.REQUEST


def test_bounces_by_sender_and_report() -> None:
    assert kind_of(mail(sender="MAILER-DAEMON@mx.example.com")) is MailKind.BOUNCE
    assert kind_of(b"From: MAILER-DAEMON\r\nSubject: failure\r\n\r\nx") is MailKind.BOUNCE
    report = (b"From: mx@example.com\r\nContent-Type: multipart/report; "
              b"report-type=delivery-status; boundary=b\r\n\r\n--b--\r\n")
    assert kind_of(report) is MailKind.BOUNCE


def test_mail_from_our_own_address_is_own() -> None:
    assert kind_of(mail(sender="IT <it-help@example.com>")) is MailKind.OWN


def test_the_first_matching_rule_gives_the_reason() -> None:
    verdict = classify(parse(mail(headers={"Auto-Submitted": "auto-replied",
                                           "List-Id": "<x>"})), CTX)
    assert verdict.kind is MailKind.AUTO_REPLY and "Auto-Submitted" in verdict.reason
