"""Escalations through the real pipeline, store and scheduler with an injected clock.

The example directory's IT desk works 09:00-12:30 and 13:30-17:30 Europe/Berlin, Monday to
Friday, and owes a first response within 4 business hours (normal priority). The harness
clock starts on Tuesday 2026-11-24 at 10:00 Berlin (09:00 UTC), so a request then is due at
15:00 Berlin; its warnings fall at 75 % (14:00) and 90 % (14:36).
"""

from __future__ import annotations

import email
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailgate import escalation_mail, history
from mailgate.escalation import Escalator
from mailgate.outbox import Outbox
from mailgate.render import Renderer
from mailgate.sentlog import SentLog
from mailgate.store import OutboxRow, Store
from mailgate.transport import DirectoryTransport
from tests.factories import TEMPLATES, Harness, harness, mail


def utc(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, tzinfo=UTC)


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    h = await harness(tmp_path)
    yield h
    await h.store.close()


def escalator(h: Harness, store: Store | None = None) -> Escalator:
    renderer = Renderer(TEMPLATES)
    return Escalator(store or h.store, lambda: h.pipeline.sla, lambda: renderer, h.clock,
                     lambda: None)


async def queued_escalations(h: Harness) -> list[tuple[str, str]]:
    rows = await h.rows("SELECT kind, recipients FROM outbox WHERE kind LIKE 'escalation-%' "
                        "ORDER BY id")
    return [(kind, recipients) for kind, recipients in rows]


async def written(h: Harness, kind: str) -> bytes:
    """The mail the outbox would send for the first queued row of this kind."""
    [row] = [r for r in await h.store.due_outgoing(h.clock(), limit=1000) if r.kind == kind]
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
                         message_id="<answer@example.com>"))
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
    h.store = await Store.open(tmp_path / "state" / "mailgate.sqlite3")
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
    [(message_id,)] = await h.rows("SELECT message_id FROM outbox WHERE kind LIKE 'esc%'")
    assert message["Message-ID"] == f"<{message_id}>"
    assert message["To"] == "alice@example.com, bob@example.com"


async def test_a_draft_that_cannot_be_written_is_kept_and_sent_later(
        h: Harness, tmp_path: Path) -> None:
    """A writer that fails (a bug, a broken template) must not lose the escalation: the
    row stays queued with the error, and the next round sends it."""
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
    await outbox.drain_once()  # the ack and the team notification go; the warning waits
    [(status, attempts, error)] = await h.rows(
        "SELECT status, attempts, last_error FROM outbox WHERE kind = 'escalation-warning'")
    assert (status, attempts) == ("queued", 1)
    assert "could not write the mail: template exploded" in error
    failing = False
    h.clock.advance(hours=2)  # past the retry delay
    assert await outbox.drain_once() == 1
    [sent] = sorted(outbox_dir.glob("*-escalation-warning.eml"))
    assert b"SLA warning, first response due soon" in sent.read_bytes()
    assert await h.rows("SELECT status FROM outbox WHERE kind = 'escalation-warning'") == \
        [("sent",)]


async def test_a_department_removed_by_a_reload_still_gets_its_mail_written(
        h: Harness) -> None:
    await h.deliver(mail())
    await at(h, utc(24, 13, 0))
    [row] = [r for r in await h.store.due_outgoing(h.clock(), 100) if r.draft]
    fired = await escalation_mail.load(h.store, row)
    orphan = replace(fired, ticket=replace(fired.ticket, department="gone"))
    text = escalation_mail.write(orphan, row, h.pipeline.sla, Renderer(TEMPLATES),
                                 "mailgate").decode()
    assert "From: gone <it-help@example.com>" in text
    assert "SLA warning, first response due soon" in text
