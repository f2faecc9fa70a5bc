"""Templates are sandboxed files; outgoing headers cannot be injected."""

from __future__ import annotations

import email
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from jinja2 import UndefinedError

from mailgate.core.render import Renderer, humanize_duration
from mailgate.outbound.compose import Envelope, compose
from tests.factories import TEMPLATES


def context(subject: str = "Laptop", name: str = "Ann") -> dict:
    dept = {"key": "it", "name": "IT", "address": "it@example.com"}
    return {"requester": {"name": name, "address": "a@example.com"}, "subject": subject,
            "received_at": datetime(2026, 1, 1, tzinfo=UTC),
            "tickets": [{"ref": "IT-1001", "department": dept, "priority": "normal",
                         "first_response": timedelta(hours=4), "business_hours": True}]}


def test_mail_content_is_data_not_template() -> None:
    rendered = Renderer(TEMPLATES).render("ack", "it", context(
        subject="{{ 7*7 }} {% raw %}x{% endraw %}", name="<script>alert(1)</script>"))
    assert "{{ 7*7 }} {% raw %}x{% endraw %}" in rendered.text
    assert "49" not in rendered.text
    assert rendered.html is not None
    assert "<script>" not in rendered.html and "&lt;script&gt;" in rendered.html


def test_strict_undefined(tmp_path: Path) -> None:
    (tmp_path / "ack.txt.j2").write_text("{{ nonexistent.thing }}")
    with pytest.raises(UndefinedError):
        Renderer(tmp_path).render("ack", None, context())


def test_department_override_wins(tmp_path: Path) -> None:
    (tmp_path / "ack.txt.j2").write_text("default {{ tickets[0].ref }}")
    (tmp_path / "it").mkdir()
    (tmp_path / "it" / "ack.txt.j2").write_text("IT special {{ tickets[0].ref }}")
    renderer = Renderer(tmp_path)
    assert renderer.render("ack", "it", context()).text == "IT special IT-1001"
    assert renderer.render("ack", "payroll", context()).text == "default IT-1001"


def test_sandbox_blocks_attribute_tricks(tmp_path: Path) -> None:
    (tmp_path / "ack.txt.j2").write_text("{{ subject.__class__.__mro__ }}")
    with pytest.raises(Exception, match="unsafe"):
        Renderer(tmp_path).render("ack", None, context())


def test_check_reports_broken_templates(tmp_path: Path) -> None:
    (tmp_path / "ack.txt.j2").write_text("{% if %}")
    problem, missing = Renderer(tmp_path).check()
    assert "ack.txt.j2" in problem and "TemplateSyntaxError" in problem
    assert "missing escalation.txt.j2, notify_team.txt.j2" in missing


def test_shipped_templates_are_complete() -> None:
    assert Renderer(TEMPLATES).check() == []


def envelope(subject: str, name: str = "IT Desk") -> Envelope:
    return Envelope(from_name=name, from_addr="it@example.com", to=("a@example.com",),
                    subject=subject, message_id="m1@example.com",
                    date=datetime(2026, 1, 1, tzinfo=UTC), instance="mailgate",
                    in_reply_to="req@x", references=("root@x", "req@x"))


@pytest.mark.parametrize("evil", ["hi\r\nBcc: victim@example.com", "hi\nBcc: v@x.com",
                                  "hi\rBcc: v@x.com", "hi\x00\r\n\r\nbody"])
def test_crlf_in_subject_or_name_cannot_add_headers(evil: str) -> None:
    raw = compose(envelope(evil, name=evil), "text")
    msg = email.message_from_bytes(raw)
    assert msg["Bcc"] is None
    assert "\n" not in str(msg["Subject"]) and msg.get_payload(decode=True) == b"text"


def test_threading_and_loop_headers() -> None:
    msg = email.message_from_bytes(compose(envelope("[IT-1001] Re: Grüße"), "Grüße", "<p>x</p>"))
    assert msg["Message-ID"] == "<m1@example.com>" and msg["In-Reply-To"] == "<req@x>"
    assert msg["References"].split() == ["<root@x>", "<req@x>"]
    assert msg["Auto-Submitted"] == "auto-replied"
    assert str(email.header.make_header(email.header.decode_header(msg["Subject"]))) == \
        "[IT-1001] Re: Grüße"
    text, html = msg.get_payload()
    assert text.get_payload(decode=True).decode() == "Grüße"
    assert html.get_content_type() == "text/html"


def test_humanize_duration() -> None:
    assert humanize_duration(timedelta(hours=4), business=True) == "4 business hours"
    assert humanize_duration(timedelta(days=1)) == "1 day"
    assert humanize_duration(timedelta(minutes=90)) == "90 minutes"
    assert humanize_duration(timedelta(hours=1, minutes=30, seconds=1)) == "1.5 hours"
