"""Escalations through the real pipeline, store and scheduler with an injected clock.

The example directory's IT desk works 09:00-12:30 and 13:30-17:30 Europe/Berlin, Monday to
Friday, and owes a first response within 4 business hours (normal priority). The harness
clock starts on Tuesday 2026-11-24 at 10:00 Berlin (09:00 UTC), so a request then is due at
15:00 Berlin; its warnings fall at 75 % (14:00) and 90 % (14:36).
"""

from __future__ import annotations

import email
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailgate.core.render import Renderer
from mailgate.outbound import escalation_mail
from mailgate.outbound.outbox import MAX_ATTEMPTS, Outbox
from mailgate.outbound.sentlog import SentLog
from mailgate.outbound.transport import DirectoryTransport
from mailgate.storage import history
from mailgate.storage.store import OutboxRow, Store
from mailgate.workers.escalation import Escalator, _unsent_reason
from tests.factories import IT, TEMPLATES, Harness, example_directory, harness, mail
from tests.harness import database
from tests.test_pipeline import dsn_for


def utc(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, tzinfo=UTC)


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    h = await harness(tmp_path)
    yield h
    await h.store.close()


def escalator(h: Harness, store: Store | None = None) -> Escalator:
    return Escalator(store or h.store, h.current(), h.clock, lambda: None)


async def queued_escalations(h: Harness) -> list[tuple[str, str]]:
    """(kind, recipients) per escalation mail: its copies (one per person) taken together."""
    rows = await h.rows("SELECT kind, recipients, message_id, copy_of FROM outbox "
                        "WHERE kind LIKE 'escalation-%' ORDER BY id")
    mails: dict[str, tuple[str, list[str]]] = {}
    for kind, recipients, message_id, copy_of in rows:
        mails.setdefault(copy_of or message_id, (kind, []))[1].extend(json.loads(recipients))
    return [(kind, json.dumps(to)) for kind, to in mails.values()]


async def written(h: Harness, kind: str, copy: int = 0) -> bytes:
    """The mail the outbox would send for a queued row of this kind (its first copy)."""
    rows = [r for r in await h.store.due_outgoing(h.clock(), limit=1000) if r.kind == kind]
    row = rows[copy]
    assert row.raw == b"" and row.draft == "escalation"  # written when sent, not when fired
    return await escalator(h).write(row)


async def at(h: Harness, moment: datetime) -> int:
    h.clock.now = moment
    return await escalator(h).run_once()


async def test_unanswered_request_warns_twice_breaches_then_re_escalates(h: Harness) -> None:
    await h.deliver(mail())
    assert await at(h, utc(24, 12, 59)) == 0
    assert await at(h, utc(24, 13, 0)) == 1
    assert await at(h, utc(24, 13, 0)) == 0  # exactly once
    assert await at(h, utc(24, 13, 36)) == 1
    assert await at(h, utc(24, 14, 0)) == 1
    assert await at(h, utc(24, 16, 0)) == 0
    # re_escalate_every = "4h": 2.5 h on Tuesday after 15:00, 1.5 h on Wednesday morning.
    assert await at(h, utc(25, 9, 29)) == 0
    assert await at(h, utc(25, 9, 30)) == 1
    team = '["alice@example.com", "bob@example.com"]'
    assert await queued_escalations(h) == [
        ("escalation-warning", team), ("escalation-warning", team),
        ("escalation-breach", '["carol@example.com", "dave@example.com"]'),
        ("escalation-re_escalation", '["dave@example.com", "ivan@example.com"]')]
    text = (await written(h, "escalation-breach")).decode()
    assert "[IT-1001] SLA breached, first response overdue" in text
    assert "Auto-Submitted: auto-generated" in text
    story = await history.load(h.store, "IT-1001", h.clock())
    assert story is not None
    assert [(e["kind"], e["detail"]["level"], e["mail"]["kind"]) for e in story["events"]
            if e["kind"].startswith("sla_")] == [
        ("sla_warning", 1, "escalation-warning"), ("sla_warning", 2, "escalation-warning"),
        ("sla_breach", 3, "escalation-breach"),
        ("sla_re_escalation", 4, "escalation-re_escalation")]


async def test_answered_request_never_escalates_its_first_response(h: Harness) -> None:
    await h.deliver(mail())
    h.clock.now = utc(24, 10)
    await h.deliver(mail("Re: [IT-1001] Laptop won't boot", sender="alice@example.com",
                         message_id="<answer@example.com>",
                         headers={"In-Reply-To": await h.key_from("alice@example.com")}))
    for hour in range(10, 18):
        assert await at(h, utc(25, hour)) == 0
    met = await h.rows("SELECT first_response_at FROM tickets")
    assert met == [(utc(24, 10).timestamp(),)]


async def test_a_requester_reply_is_not_an_answer(h: Harness) -> None:
    await h.deliver(mail())
    await h.deliver(mail("Re: [IT-1001] Laptop won't boot", message_id="<more@example.com>"))
    assert await at(h, utc(24, 13)) == 1


async def test_after_downtime_only_the_breach_goes_out(h: Harness) -> None:
    await h.deliver(mail())
    assert await at(h, utc(25, 9)) == 1
    assert [k for k, _ in await queued_escalations(h)] == ["escalation-breach"]
    levels = await h.rows("SELECT level, kind FROM escalations ORDER BY level")
    assert levels == [(1, "skipped"), (2, "skipped"), (3, "breach")]
    story = await history.load(h.store, "IT-1001", h.clock())
    assert story is not None
    shown = "\n".join(history.lines(story))
    assert shown.count("sla_skipped") == 2
    assert "sla_breach  -> carol@example.com, dave@example.com (queued)" in shown
    assert "target: first_response, level: 3" in shown


async def test_fired_levels_survive_a_restart(h: Harness, tmp_path: Path) -> None:
    await h.deliver(mail())
    assert await at(h, utc(24, 13)) == 1
    await h.store.close()
    h.store = await Store.open(database(tmp_path / "state"))
    assert await at(h, utc(24, 13, 1)) == 0
    assert await at(h, utc(24, 13, 36)) == 1


async def test_waiting_on_the_requester_pauses_the_clock(h: Harness) -> None:
    await h.deliver(mail())
    sla = h.pipeline.sla
    h.clock.now = utc(24, 9, 30)  # 10:30 Berlin
    async with h.store.transaction() as tx:
        await sla.pause(tx, 1, h.clock())
    assert await at(h, utc(25, 9, 29)) == 0  # a whole business day later: still quiet
    # 10:30 Berlin the next day: 7.5 business hours were spent waiting.
    h.clock.now = utc(25, 9, 30)
    async with h.store.transaction() as tx:
        await sla.resume(tx, 1, h.clock())
    assert await h.rows("SELECT next_escalation_at FROM tickets") == [
        (utc(25, 13).timestamp(),)]
    assert await at(h, utc(25, 13)) == 1


async def test_scheduler_sleeps_until_the_earliest_due_instant(h: Harness) -> None:
    await h.deliver(mail())
    h.clock.now = utc(24, 12, 58)
    assert await escalator(h)._sleep() == 60.0  # capped: wall-clock jumps are noticed
    h.clock.now = utc(24, 12, 59, 30)
    assert await escalator(h)._sleep() == 30.0


async def test_mail_written_later_states_the_moment_the_level_fired(h: Harness) -> None:
    """Drafts are written when sent: a mail sent an hour late still says what was true
    when its level fired (1 business hour left at 75 %), dated then, with its own id."""
    await h.deliver(mail())
    assert await at(h, utc(24, 13, 0)) == 1
    h.clock.now = utc(24, 16, 0)  # the outbox gets to it late (the server was down)
    message = email.message_from_bytes(await written(h, "escalation-warning"))
    text = message.get_payload(decode=True).decode()
    assert "The first response for IT-1001 is due in 1 business hour." in text
    assert "Due        2026-11-24 15:00 CET" in text
    assert "Opened     3 business hours ago" in text
    assert message["Date"] == "Tue, 24 Nov 2026 13:00:00 +0000"
    [(alice, _), (bob, first)] = await h.rows(
        "SELECT message_id, copy_of FROM outbox WHERE kind LIKE 'esc%' ORDER BY id")
    assert message["Message-ID"] == f"<{alice}>" and first == alice
    assert message["To"] == "alice@example.com"  # one copy each: each has its own key
    copy = email.message_from_bytes(await written(h, "escalation-warning", copy=1))
    assert copy["To"] == "bob@example.com" and copy["Message-ID"] == f"<{bob}>"
    assert copy.get_payload(decode=True).decode() == text  # the same mail


async def test_a_draft_that_cannot_be_written_is_kept_and_sent_later(
        h: Harness, tmp_path: Path) -> None:
    """A writer that fails (a bug, a broken template) must not lose the escalation: the
    row stays queued with the error, without using up delivery attempts however long the
    cause lasts, and the first round after it is fixed sends it."""
    await h.deliver(mail())
    await at(h, utc(24, 13, 0))
    outbox_dir = tmp_path / "outgoing"
    failing = True

    async def write(row: OutboxRow) -> bytes:
        if failing:
            raise RuntimeError("template exploded")
        return await escalator(h).write(row)

    outbox = Outbox(h.store, DirectoryTransport(outbox_dir), h.clock,
                    SentLog(tmp_path / "sent.log"), write)
    await outbox.drain_once()  # the ack and the team notifications go; the warnings wait
    for _ in range(MAX_ATTEMPTS + 5):  # days of a broken template
        h.clock.advance(minutes=5)
        assert await outbox.drain_once() == 0
    for status, attempts, error in await h.rows(
            "SELECT status, attempts, last_error FROM outbox WHERE kind = 'escalation-warning'"):
        assert (status, attempts) == ("queued", 0)
        assert "could not write the mail: template exploded" in error
    failing = False
    h.clock.advance(minutes=5)
    assert await outbox.drain_once() == 2  # alice's copy and bob's
    sent = sorted(outbox_dir.glob("*-escalation-warning.eml"))
    assert len(sent) == 2
    assert all(b"SLA warning, first response due soon" in f.read_bytes() for f in sent)
    assert await h.rows("SELECT status FROM outbox WHERE kind = 'escalation-warning'") == \
        [("sent",), ("sent",)]


async def test_a_department_removed_by_a_reload_still_gets_its_mail_written(
        h: Harness) -> None:
    await h.deliver(mail())
    await at(h, utc(24, 13, 0))
    row = next(r for r in await h.store.due_outgoing(h.clock(), 100) if r.draft)
    fired = await escalation_mail.load(h.store, row)
    orphan = replace(fired, ticket=replace(fired.ticket, department="gone"))
    text = escalation_mail.write(orphan, row, h.pipeline.sla, Renderer(TEMPLATES),
                                 "mailgate").decode()
    assert "From: gone <it-help@example.com>" in text
    assert "SLA warning, first response due soon" in text


async def test_a_draft_with_nothing_recorded_fails_on_its_ticket(
        h: Harness, tmp_path: Path) -> None:
    await h.deliver(mail())
    await at(h, utc(24, 13, 0))
    await h.store.conn.execute("UPDATE escalations SET outgoing = NULL")
    outbox = Outbox(h.store, DirectoryTransport(tmp_path / "out"), h.clock,
                    SentLog(tmp_path / "sent.log"), escalator(h).write)
    await outbox.drain_once()
    for status, error in await h.rows(
            "SELECT status, last_error FROM outbox WHERE kind = 'escalation-warning'"):
        assert status == "failed" and "no escalation is recorded" in error
    assert await h.count("events", "kind = 'delivery_failed'") == 2


async def test_mail_keeps_the_department_it_fired_for_when_transferred_before_sending(
        h: Harness) -> None:
    await h.deliver(mail())
    await at(h, utc(24, 13, 0))
    h.clock.now = utc(24, 13, 5)  # the ticket moves to Facilities before the mail goes out
    await h.deliver(mail("Re: [IT-1001] Laptop won't boot", sender="alice@example.com",
                         message_id="<move@example.com>", body="#transfer facilities",
                         headers={"In-Reply-To": await h.key_from("alice@example.com",
                                                                  "notify-team")}))
    assert (await h.rows("SELECT department FROM tickets"))[0][0] == "facilities"
    message = email.message_from_bytes(await written(h, "escalation-warning"))
    text = message.get_payload(decode=True).decode()
    assert message["From"] == "IT Service Desk <it-help@example.com>"
    assert "You receive this as assignee / team of IT Service Desk." in text
    assert "in the subject.\r\nYou receive" in text  # not run together


async def test_replies_and_bounces_to_escalation_mail_find_their_ticket(h: Harness) -> None:
    await h.deliver(mail())
    await at(h, utc(24, 13, 0))
    [(message_id,), _] = await h.rows("SELECT message_id FROM outbox WHERE draft IS NOT NULL")
    lead = await h.deliver(mail("Re: what is going on?", sender="carol@example.com",
                                message_id="<lead@example.com>",
                                headers={"In-Reply-To": f"<{message_id}>"}))
    assert lead.action == "reply" and lead.tickets == ("IT-1001",)
    bounce = await h.deliver(dsn_for(message_id))
    assert bounce.action == "reply" and bounce.tickets == ("IT-1001",)
    assert await h.count("tickets") == 1


async def test_the_sender_never_sees_a_queued_row_before_its_transaction_commits(
        h: Harness) -> None:
    """One connection for everything would let the outbox read (and send) a row that a
    rollback then removes, and whose id the next insert takes."""
    async with h.store.transaction() as tx:
        await h.pipeline.handle(tx, mail(), IT)
        assert await h.store.due_outgoing(h.clock(), 100) == []  # not committed yet
    assert len(await h.store.due_outgoing(h.clock(), 100)) == 3  # ack, alice's, bob's notice


def test_an_unsent_escalation_says_what_to_fix() -> None:
    it = example_directory().departments["it"]
    assert "department 'gone' is not in the directory" in _unsent_reason("gone", None,
                                                                          "breach", ())
    assert "names no roles to notify for breach" in _unsent_reason("it", it, "breach", ())
    assert "nobody in the directory fills lead / head for it" in _unsent_reason(
        "it", it, "breach", ("lead", "head"))
