"""The registry of outgoing mail kinds: complete, loop-guarded, injection-proof."""

from __future__ import annotations

import email
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import Message
from pathlib import Path

import pytest

from mailgate.core.addresses import canonical
from mailgate.core.classify import LoopContext, classify
from mailgate.core.mime.parse import parse
from mailgate.core.model import MailKind, OutgoingKind
from mailgate.core.render import OPTIONAL, REQUIRED, Rendered, Renderer
from mailgate.core.replykey import KeyRing, proven_refs
from mailgate.core.sla import LevelKind
from mailgate.outbound import kinds
from mailgate.outbound.kinds import KEYED, KINDS, Budget, Mail, Sending, Thread, Threading
from tests.factories import TEMPLATES

NOW = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
INSTANCE = "mailgate-test"
RING = KeyRing(secrets=(("k1", b"s" * 32),))
EVIL = "Printer\r\nBcc: victim@example.net\r\n\r\nbody {ref} {{ 7*7 }}"
ALLOWED_HEADERS = {
    "From", "To", "Cc", "Subject", "Date", "Message-ID", "In-Reply-To", "References",
    "Reply-To", "Auto-Submitted", "X-Auto-Response-Suppress", "Precedence",
    "X-Mailgate-Instance", "X-Mailgate-Ticket", "X-Mailgate-Escalation", "X-Mailgate-Digest",
    "X-Mailgate-Alert", "MIME-Version", "Content-Type", "Content-Transfer-Encoding"}
THREAD = Thread(answered="asked@example.net", answered_refs=("root@example.net",),
                request="request@example.net", requester_last="last@example.net")


def renderer(tmp_path: Path) -> Renderer:
    """Every template the table names, reduced to a line of the context's text: these
    tests are about the headers; test_render.py checks the shipped templates."""
    for spec in KINDS.values():
        if spec.template:
            (tmp_path / f"{spec.template}.txt.j2").write_text("{{ text }}\n")
    return Renderer(tmp_path, shipped=tmp_path)


def variants(kind: OutgoingKind) -> list[str]:
    subject = KINDS[kind].subject
    return [""] if isinstance(subject, str) else list(subject)


def sample(kind: OutgoingKind, variant: str, evil: str = EVIL) -> Mail:
    """A mail of this kind, with text from mail wherever a kind takes some."""
    spec = KINDS[kind]
    return Mail(
        kind=kind, from_name=evil, from_addr="it@example.com",
        to=("ann@example.net", "bob@example.com"), cc=("cy@example.net",),
        fields={"subject": evil, "target": "first_response", "what": evil, "count": 3,
                "sender": evil, "name": evil, "scope": "it", "since": NOW, "until": NOW,
                "mailbox": "payroll", "millis": 1},
        context={"text": evil}, department="it", variant=variant,
        body=None if spec.template else Rendered(evil, None),
        tickets=("IT-1001",), ticket_id=1, thread=THREAD, budget="team:it:ann@example.net")


def built(tmp_path: Path) -> Iterator[tuple[OutgoingKind, str, list]]:
    rendering = renderer(tmp_path)
    for kind in OutgoingKind:
        for variant in variants(kind):
            rows = kinds.build(sample(kind, variant), rendering, Sending(INSTANCE, RING), NOW)
            yield kind, variant, rows


def message(raw: bytes) -> Message:
    return email.message_from_bytes(raw)


def unfolded(value: str) -> str:
    """A header's value as one line: a fold is a line break before white space."""
    return re.sub(r"\r?\n(?=[ \t])", "", str(make_header(decode_header(value))))


def test_every_kind_has_an_entry() -> None:
    assert set(KINDS) == set(OutgoingKind)


def test_inbound_classes_are_not_outgoing_kinds() -> None:
    # MailKind says what arrived; OutgoingKind what we send. One name in both would make
    # the outbox's kind column and the classifier's verdict easy to confuse.
    assert not {k.value for k in MailKind} & {k.value for k in OutgoingKind}


def test_templates_named_exist_and_are_checked() -> None:
    for kind, spec in KINDS.items():
        if spec.template is None:
            continue
        assert (TEMPLATES / f"{spec.template}.txt.j2").is_file(), kind
        assert spec.template in (*REQUIRED, *OPTIONAL), kind  # `mailgate check` sees it


def test_every_template_shipped_is_some_kinds() -> None:
    named = {spec.template for spec in KINDS.values()}
    assert set(REQUIRED) | set(OPTIONAL) <= named


def test_every_mail_carries_the_loop_guard(tmp_path: Path) -> None:
    for kind, variant, rows in built(tmp_path):
        assert rows, kind
        spec = KINDS[kind]
        for row in rows:
            msg = message(row.raw)
            assert msg.get_all("X-Mailgate-Instance") == [INSTANCE], kind
            assert msg.get_all("Auto-Submitted") == [spec.auto_submitted], kind
            automatic = spec.auto_submitted != "no"
            assert (msg["Precedence"] == "bulk") is automatic, kind
            assert (msg["X-Auto-Response-Suppress"] == "All") is automatic, kind
            # Come back to us, it is ours, by the header alone (whatever the From: says).
            verdict = classify(parse(row.raw), LoopContext(frozenset(), INSTANCE))
            assert verdict.kind is MailKind.OWN, (kind, variant)


def test_auto_submitted_follows_rfc_3834() -> None:
    """auto-replied answers a mail, auto-generated starts on its own, and only a
    person's words relayed as they wrote them say no."""
    for kind, spec in KINDS.items():
        if spec.threading in (Threading.ANSWER, Threading.NOTICE) or kind is OutgoingKind.THANKS:
            assert spec.auto_submitted == "auto-replied", kind
        elif kind in (OutgoingKind.REPLY, OutgoingKind.RELAY_TEAM, OutgoingKind.NOTE_TEAM):
            assert spec.auto_submitted == "no", kind
        else:
            assert spec.auto_submitted == "auto-generated", kind


@pytest.mark.parametrize("evil", [EVIL, "hi\nBcc: v@x.com", "hi\rBcc: v@x.com",
                                  "hi\x00\r\n\r\nbody"])
def test_text_from_mail_cannot_add_headers(tmp_path: Path, evil: str) -> None:
    rendering = renderer(tmp_path)
    for kind in OutgoingKind:
        for variant in variants(kind):
            for row in kinds.build(sample(kind, variant, evil), rendering,
                                   Sending(INSTANCE, RING), NOW):
                msg = message(row.raw)
                assert msg["Bcc"] is None, kind
                head = row.raw.partition(b"\r\n\r\n")[0].decode("ascii")
                names = [line.partition(":")[0] for line in head.split("\r\n")
                         if line[:1] not in (" ", "\t")]
                assert set(names) <= ALLOWED_HEADERS, (kind, names)
                for name in ("Subject", "From"):
                    value = unfolded(msg[name])
                    assert "\n" not in value and "\r" not in value, (kind, name)
                assert not msg.defects, kind


def test_text_from_mail_is_a_value_never_a_format(tmp_path: Path) -> None:
    """A subject that looks like a format or a template stays as it was written."""
    evil = "{ref} {{ 7*7 }} {0} {subject.__class__}"
    for kind, variant, _ in built(tmp_path):
        mail = sample(kind, variant, evil)
        if "{subject}" in KINDS[kind].subject_format(variant):
            assert evil in kinds.subject_of(mail), kind


def test_keyed_kinds_give_each_recipient_their_own_key(tmp_path: Path) -> None:
    for kind, _, rows in built(tmp_path):
        if KINDS[kind].message_id != KEYED:
            assert len(rows) == 1 and rows[0].recipients == (
                "ann@example.net", "bob@example.com", "cy@example.net"), kind
            continue
        assert [r.recipients for r in rows] == [("ann@example.net",), ("bob@example.com",),
                                               ("cy@example.net",)], kind
        assert [r.copy_of for r in rows] == [None, rows[0].message_id, rows[0].message_id]
        for row in rows:
            msg = message(row.raw)
            assert msg["Message-ID"] == f"<{row.message_id}>"
            assert msg["X-Mailgate-Ticket"] == "IT-1001"
            [recipient] = row.recipients
            assert proven_refs(RING, [row.message_id], recipient, NOW) == {"IT-1001"}
            others = {"ann@example.net", "bob@example.com", "cy@example.net"} - {recipient}
            for other in others:  # a copy proves nothing for anyone else
                assert proven_refs(RING, [row.message_id], other, NOW) == frozenset()


def test_budget_rows_say_what_each_copy_draws_on(tmp_path: Path) -> None:
    for kind, _, rows in built(tmp_path):
        rule = KINDS[kind].budget
        for row in rows:
            if rule is Budget.RECIPIENT:
                assert row.budget == canonical(row.recipients[0]), kind
            elif rule is Budget.NAMED:
                assert row.budget == "team:it:ann@example.net" and row.budget_domain is None
            else:
                assert row.budget is None and row.budget_domain is None, kind


def test_recipient_budgets_are_keyed_mail_only() -> None:
    # A budget is counted per recipient: a mail with one row for several cannot say whose.
    for kind, spec in KINDS.items():
        if spec.budget is Budget.RECIPIENT:
            assert spec.message_id == KEYED, kind


def test_threading_rules() -> None:
    rules = {rule: kinds.threading_headers(rule, THREAD) for rule in Threading}
    assert rules == {
        Threading.NONE: (None, ()),
        Threading.ANSWER: ("asked@example.net", ("root@example.net", "asked@example.net")),
        Threading.NOTICE: ("asked@example.net", ("asked@example.net",)),
        Threading.REQUESTER: ("last@example.net", ("request@example.net",
                                                   "last@example.net")),
        Threading.TEAM: ("request@example.net", ("request@example.net",)),
    }
    # Nothing known: no header; the same ID twice is named once.
    assert kinds.threading_headers(Threading.REQUESTER, Thread()) == (None, ())
    same = Thread(request="r@x", requester_last="r@x")
    assert kinds.threading_headers(Threading.REQUESTER, same) == ("r@x", ("r@x",))


def test_built_mail_threads_by_its_kinds_rule(tmp_path: Path) -> None:
    for kind, _, rows in built(tmp_path):
        in_reply_to, references = kinds.threading_headers(KINDS[kind].threading, THREAD)
        msg = message(rows[0].raw)
        assert msg["In-Reply-To"] == (f"<{in_reply_to}>" if in_reply_to else None), kind
        found = msg["References"].split() if msg["References"] else []
        assert found == [f"<{r}>" for r in references], kind


def test_fixed_message_ids_come_from_the_fields() -> None:
    digest = sample(OutgoingKind.DIGEST, "department")
    assert kinds.message_id_of(digest) == "digest.it.20261124@example.com"
    alert = sample(OutgoingKind.ALERT, "failing")
    assert kinds.message_id_of(alert) == "alert.payroll.1@example.com"
    flood = sample(OutgoingKind.FLOOD_SUMMARY, "")
    assert kinds.message_id_of(flood) != kinds.message_id_of(flood)  # fresh each time
    with pytest.raises(ValueError):
        kinds.message_id_of(sample(OutgoingKind.ACK, ""))


def test_escalation_kinds_follow_the_levels() -> None:
    for level in LevelKind:
        kind = kinds.escalation_kind(level)
        assert KINDS[kind].written_when_sent
        assert f" {level.value}" in dict(KINDS[kind].headers)["X-Mailgate-Escalation"]


def test_drafts_are_keyed_copies_without_bytes() -> None:
    mail = Mail(kind=OutgoingKind.ESCALATION_BREACH, from_name="IT", from_addr="it@example.com",
                to=("lead@example.com", "head@example.com"), tickets=("IT-7",), ticket_id=7)
    rows = kinds.keyed_copies(mail, Sending(INSTANCE, RING), NOW, draft="escalation")
    assert [(r.raw, r.draft, r.recipients) for r in rows] == [
        (b"", "escalation", ("lead@example.com",)), (b"", "escalation", ("head@example.com",))]
    assert proven_refs(RING, [rows[1].message_id], "head@example.com", NOW) == {"IT-7"}
