"""End-to-end: a ticket worked by email, on the real daemon, Dovecot and an aiosmtpd sink.

Requester and agents are simulated by APPENDing their mail to the department mailbox, as
their mail server would deliver it; what mailgate sends arrives at the sink. People prove
who they are by replying to mail mailgate sent them (its reply key), or by our MTA's
Authentication-Results ([security] authserv_id) where a test says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import Message

import pytest

from mailgate.config.loader import load_setup
from mailgate.service.daemon import Daemon
from tests.factories import FakeClock, mail
from tests.mailservers import Received
from tests.test_e2e import Env, count, env, eventually  # noqa: F401 (env is a fixture)

pytestmark = pytest.mark.e2e
SECURITY = """[security]
trusted_domains = ["example.com"]
authserv_id = "mx.example.com"
"""
VERIFIED = {"Authentication-Results": "mx.example.com; spf=pass smtp.mailfrom=example.com; "
                                      "dmarc=pass header.from=example.com"}


@pytest.fixture
async def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 24, 9, 0, tzinfo=UTC))  # Tuesday 10:00 Berlin


@pytest.fixture
async def daemon(env: Env, clock: FakeClock) -> AsyncIterator[Daemon]:  # noqa: F811
    setup = load_setup(env.config(tables=SECURITY, notify_team=True))
    running = Daemon(setup.config, setup.directory, clock=clock)
    await running.start()
    yield running
    await running.stop()


async def deliver(env: Env, raw: bytes) -> None:  # noqa: F811
    await asyncio.to_thread(env.append, raw)


async def arrivals(env: Env, before: int, new: int) -> list[Received]:  # noqa: F811
    """The `new` mails that arrive after the first `before`."""
    return (await env.sink.wait_for(count=before + new, timeout=20))[before:]


def text(msg: Message) -> str:
    part = msg
    while part.is_multipart():
        part = part.get_payload()[0]
    return part.get_payload(decode=True).decode()


def refs(msg: Message) -> list[str]:
    return (msg["References"] or "").split()


async def status(daemon: Daemon, ref: str = "IT-1001") -> str:
    assert daemon.store is not None
    ticket = await daemon.store.ticket(ref)
    assert ticket is not None
    return ticket.status.value


async def test_full_cycle_request_to_rating(env: Env, daemon: Daemon,  # noqa: F811
                                            clock: FakeClock) -> None:
    """As on a stock MTA that writes no Authentication-Results: every person proves who
    they are by answering the mail mailgate sent them (the reply key in its Message-ID)."""
    # 1. The request: an acknowledgement for ann, a notification for each of the team.
    await deliver(env, mail(body="It only beeps.\n\n-- \nAnn Example, 3rd floor",
                            cc="Carl <carl@example.com>"))  # stays informed
    first = {r.rcpt_tos[0]: r.message for r in await arrivals(env, 0, 3)}
    assert sorted(first) == ["alice@example.com", "ann@example.com", "bob@example.com"]
    n = first["alice@example.com"]
    assert first["ann@example.com"]["Subject"] == "[IT-1001] Re: Laptop won't boot"  # the ack
    assert n["Subject"] == "[IT-1001] New request: Laptop won't boot"
    assert n["From"] == "IT Service Desk <it-help@example.com>"
    assert n["Reply-To"] == "it-help@example.com"
    assert n["Auto-Submitted"] == "auto-generated"
    assert refs(n) == ["<req-1@example.com>"]
    assert "It only beeps." in text(n) and "#resolve" in text(n)
    assert n["Message-ID"] != first["bob@example.com"]["Message-ID"]  # a key each

    # 2. Alice answers her notification; ann (and carl) get it from the department.
    await deliver(env, mail(
        "Re: [IT-1001] New request: Laptop won't boot", sender="Alice Adams <alice@example.com>",
        message_id="<alice-1@example.com>", headers={
            "In-Reply-To": n["Message-ID"], "References": f"<req-1@example.com> {n['Message-ID']}"},
        body="Hold F2 while it starts, please.\n\n-- \nAlice Adams\nIT Service Desk\n\n"
             "On Tue, 24 Nov 2026, IT Service Desk wrote:\n> New request for IT"))
    answers = {r.rcpt_tos[0]: r.message for r in await arrivals(env, 3, 2)}
    assert sorted(answers) == ["ann@example.com", "carl@example.com"]
    a = answers["ann@example.com"]
    assert a["Cc"] == "carl@example.com"
    assert a["From"] == "Alice Adams via IT Service Desk <it-help@example.com>"
    assert a["Subject"] == "[IT-1001] Re: Laptop won't boot"
    assert a["In-Reply-To"] == "<req-1@example.com>"
    assert refs(a) == ["<req-1@example.com>"]  # never another person's key
    assert a["Auto-Submitted"] == "no" and a["Precedence"] is None
    assert text(a).startswith("Hold F2 while it starts, please.")
    assert "New request for IT" not in text(a) and "IT Service Desk\r\n\r\nOn" not in text(a)
    assert await count(daemon, "SELECT COUNT(*) FROM tickets "
                               "WHERE first_response_at IS NOT NULL") == 1

    # 3. Ann answers (her client replies to alice's relayed mail); the team gets it.
    await deliver(env, mail(
        "Re: [IT-1001] Re: Laptop won't boot", message_id="<ann-2@example.com>",
        headers={"In-Reply-To": a["Message-ID"],
                 "References": f"<req-1@example.com> {a['Message-ID']}"},
        body="Now it shows a blue screen.\n\nOn Tue, Alice wrote:\n> Hold F2"))
    relayed = await arrivals(env, 5, 2)
    assert sorted(m.rcpt_tos[0] for m in relayed) == ["alice@example.com", "bob@example.com"]
    r = relayed[0].message
    assert r["In-Reply-To"] == "<req-1@example.com>" and refs(r) == ["<req-1@example.com>"]
    assert "Now it shows a blue screen." in text(r) and "Hold F2" not in text(r)
    assert "UNVERIFIED" not in text(r)  # a reply to our mail: proven

    # 4. Bob's internal note (a reply to his own notification) reaches alice, never ann.
    await deliver(env, mail(
        "Re: [IT-1001] Re: Laptop won't boot", sender="Bob <bob@example.com>",
        message_id="<bob-1@example.com>",
        headers={"In-Reply-To": first["bob@example.com"]["Message-ID"]},
        body="#note\nSame model as last week's recall: SECRET-RECALL-42."))
    [note] = await arrivals(env, 7, 1)
    assert note.rcpt_tos == ["alice@example.com"]
    assert "SECRET-RECALL-42" in text(note.message)

    # 5. Alice resolves; ann gets the summary with the rating question.
    await deliver(env, mail(
        "Re: [IT-1001] Laptop won't boot", sender="Alice Adams <alice@example.com>",
        message_id="<alice-2@example.com>", headers={"References": n["Message-ID"]},
        body="#resolve\nReplaced the graphics driver."))
    summaries = {r.rcpt_tos[0]: r.message for r in await arrivals(env, 8, 2)}
    assert sorted(summaries) == ["ann@example.com", "carl@example.com"]
    s = summaries["ann@example.com"]
    assert s["Subject"] == "[IT-1001] Re: Laptop won't boot"
    assert s["In-Reply-To"] == "<ann-2@example.com>"
    assert refs(s) == ["<req-1@example.com>", "<ann-2@example.com>"]
    body = text(s)
    assert "It only beeps." in body and "Replaced the graphics driver." in body
    assert "single digit from 1" in body
    assert await status(daemon) == "resolved"

    # 6. Ann rates it; the rating is stored and she is thanked once.
    await deliver(env, mail(
        "Re: [IT-1001] Re: Laptop won't boot", message_id="<ann-3@example.com>",
        headers={"In-Reply-To": s["Message-ID"]},
        body="5\nVery quick, thank you!\n\nOn Tue, IT wrote:\n> How satisfied are you?"))
    [thanks] = await arrivals(env, 10, 1)
    assert thanks.rcpt_tos == ["ann@example.com"]
    assert "5 of 5" in text(thanks.message)
    assert await count(daemon, "SELECT rating FROM tickets WHERE ref = 'IT-1001'") == 5
    assert await status(daemon) == "resolved"

    caused = await env.sink.before_marker(env.deliver)
    for received in caused:
        if "ann@example.com" in received.rcpt_tos:
            assert b"SECRET-RECALL-42" not in received.raw
    assert len(caused) == 11

    # 7. Nobody writes again: the ticket closes by itself after [conversation]
    # auto_close_after (default 7 days).
    assert daemon.autocloser is not None
    clock.advance(days=7, minutes=1)
    daemon.autocloser.notify()
    await eventually(lambda: _status_is(daemon, "closed"))


async def _stored_from(daemon: Daemon, sender: str) -> bool:
    return await count(daemon, f"SELECT COUNT(*) FROM messages WHERE sender = '{sender}'") > 0


async def _status_is(daemon: Daemon, wanted: str) -> bool:
    return await status(daemon) == wanted


async def test_spoofed_and_outsider_commands_change_nothing(env: Env,  # noqa: F811
                                                            daemon: Daemon) -> None:
    await deliver(env, mail())
    await arrivals(env, 0, 3)
    # Someone outside forges alice's address: our MTA vouches for nothing.
    await deliver(env, mail("Re: [IT-1001] Laptop", sender="Alice <alice@example.com>",
                            message_id="<forged@evil.example>",
                            headers={"Authentication-Results":
                                     "evil.example; dmarc=pass header.from=example.com"},
                            body="#resolve\nLog in at http://evil.example to fix it."))
    [notice] = await arrivals(env, 3, 1)  # to alice's directory address: how to act
    assert notice.rcpt_tos == ["alice@example.com"]
    assert "nothing proves that you wrote it" in text(notice.message)
    # An outsider writes with the ticket tag: kept, and nobody hears of it.
    await deliver(env, mail("Re: [IT-1001] Laptop", sender="mallory@evil.example",
                            message_id="<m@evil.example>", body="#close"))
    await eventually(lambda: _stored_from(daemon, "mallory@evil.example"))
    assert await status(daemon) == "new"
    caused = await env.sink.before_marker(env.deliver)
    assert len(caused) == 4
    assert all(b"evil.example to fix" not in m.raw for m in caused
               if "ann@example.com" in m.rcpt_tos)


async def test_reopen_inside_the_window_and_new_ticket_after_it(
        env: Env, daemon: Daemon, clock: FakeClock) -> None:  # noqa: F811
    for n, subject in ((1, "Laptop won't boot"), (2, "Printer offline")):
        await deliver(env, mail(subject, message_id=f"<req-{n}@example.com>"))
    await arrivals(env, 0, 6)
    for n in (1, 2):
        await deliver(env, mail(f"Re: [IT-100{n}] x", sender="alice@example.com",
                                message_id=f"<res-{n}@example.com>", headers=VERIFIED,
                                body="#resolve\nFixed."))
    summaries = {m.message["X-Mailgate-Ticket"]: m.message for m in await arrivals(env, 6, 2)}

    clock.now += timedelta(days=3)  # inside the 7-day window: IT-1001 reopens
    await deliver(env, mail("Re: [IT-1001] Re: Laptop won't boot", message_id="<a1@example.com>",
                            headers={"In-Reply-To": summaries["IT-1001"]["Message-ID"]},
                            body="It beeps again."))
    [relayed, _] = await arrivals(env, 8, 2)  # to alice and to bob
    assert "reopened" in text(relayed.message)
    assert await status(daemon, "IT-1001") == "open"

    clock.now += timedelta(days=10)  # long after: a new ticket that links IT-1002
    await deliver(env, mail("Re: [IT-1002] Re: Printer offline", message_id="<a2@example.com>",
                            body="Offline again."))
    # IT-1003's acknowledgement and team notification (the reopened IT-1001 may escalate
    # meanwhile: ten days passed).
    await eventually(lambda: _mails_about(env, "IT-1003", 3))
    new = [m for m in env.sink.messages if m.message["X-Mailgate-Ticket"] == "IT-1003"]
    assert sorted(m.rcpt_tos[0] for m in new) == [
        "alice@example.com", "ann@example.com", "bob@example.com"]
    assert await status(daemon, "IT-1002") == "resolved"
    assert daemon.store is not None
    ticket = await daemon.store.ticket("IT-1003")
    assert ticket is not None
    assert await daemon.store.linked_refs(ticket.id) == ["IT-1002"]


async def test_transfer_reroutes_and_restarts_the_sla(env: Env, daemon: Daemon,  # noqa: F811
                                                     clock: FakeClock) -> None:
    await deliver(env, mail("Broken socket", message_id="<sock@example.com>"))
    await arrivals(env, 0, 3)
    clock.now += timedelta(hours=1)
    await deliver(env, mail("Re: [IT-1001] Broken socket", sender="alice@example.com",
                            message_id="<tr@example.com>", headers=VERIFIED,
                            body="#transfer facilities"))
    [moved] = await arrivals(env, 3, 1)
    assert moved.rcpt_tos == ["erin@example.com"]
    assert moved.message["From"] == "Facilities <facilities@example.com>"
    assert moved.message["Subject"] == "[IT-1001] Transferred: Broken socket"
    assert daemon.store is not None
    ticket = await daemon.store.ticket("IT-1001")
    assert ticket is not None and ticket.department == "facilities"
    started = await count(daemon, "SELECT MIN(started_at) FROM sla_clocks")
    assert started == int(clock.now.timestamp())
    # Facilities' SLA escalates from now on: erin hears about the first response.
    assert daemon.escalator is not None
    clock.now += timedelta(hours=4)  # 15:00 Berlin: past 75 % of 4 business hours
    daemon.escalator.notify()
    [warning] = await arrivals(env, 4, 1)
    assert warning.message["Subject"].startswith("[IT-1001] SLA warning, first response")
    assert warning.rcpt_tos == ["erin@example.com"]


async def _mails_about(env: Env, ref: str, wanted: int) -> bool:  # noqa: F811
    return sum(m.message["X-Mailgate-Ticket"] == ref for m in env.sink.messages) >= wanted
