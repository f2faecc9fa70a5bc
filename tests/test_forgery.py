"""Forged mail commands nothing, and no flood lands on anyone: the pipeline, the store
and the flood worker on a real SQLite database (no servers; test_e2e_forgery.py sends the
same attacks through the SMTP listener).

The numbers in the test names are the findings of the issue "Forged mail commands
nothing": 2 stock MTA, 3 forged requester, 4 mail bombing, 5 strangers and list addresses.
"""

from __future__ import annotations

import email
from collections.abc import AsyncIterator
from email.message import Message
from pathlib import Path

import pytest

from mailgate.core.render import Renderer
from mailgate.core.trust import TrustPolicy
from mailgate.intake.pipeline import Pipeline, PipelineSettings
from mailgate.storage.store import Store
from mailgate.tickets.budget import MailBudget
from mailgate.tickets.new_request import team_budget
from mailgate.workers.flood import FloodSummaries
from tests.factories import (
    FACILITIES,
    TEMPLATES,
    TEST_KEYS,
    FakeClock,
    Harness,
    example_directory,
    mail,
)
from tests.harness import database

ORG = frozenset({"example.com"})
OUR_MTA = "mx.example.com"


async def make(tmp_path: Path, authserv_id: str | None = None, position: str = "top",
               **settings: object) -> Harness:
    clock = FakeClock()
    store = await Store.open(database(tmp_path / "state"))
    policy = TrustPolicy(ORG, authserv_id, position)
    pipeline = Pipeline(example_directory(), Renderer(TEMPLATES),
                        PipelineSettings(instance="mailgate-test", trust=policy, keys=TEST_KEYS,
                                         **settings),  # type: ignore[arg-type]
                        clock)
    return Harness(store, pipeline, clock)


@pytest.fixture
async def stock(tmp_path: Path) -> AsyncIterator[Harness]:
    """As behind a stock Postfix: trusted_domains set, no Authentication-Results."""
    h = await make(tmp_path)
    yield h
    await h.store.close()


@pytest.fixture
async def milter(tmp_path: Path) -> AsyncIterator[Harness]:
    """Behind an MTA that writes Authentication-Results as mx.example.com."""
    h = await make(tmp_path, OUR_MTA)
    yield h
    await h.store.close()


async def sent(h: Harness, kind: str) -> list[tuple[str, Message]]:
    rows = await h.rows("SELECT recipients, raw FROM outbox WHERE kind = ? ORDER BY id", kind)
    return [(r[0][2:-2], email.message_from_bytes(r[1])) for r in rows]


async def field(h: Harness, column: str, ref: str = "IT-1001") -> object:
    [(value,)] = await h.rows(f"SELECT {column} FROM tickets WHERE ref = ?", ref)
    return value


def text_of(msg: Message) -> str:
    return msg.get_payload(decode=True).decode()


def forged_alice(body: str, n: int = 1, headers: dict[str, str] | None = None) -> bytes:
    return mail("Re: [IT-1001] Laptop won't boot", sender="Alice Adams <alice@example.com>",
                message_id=f"<forged-{n}@evil.example>", body=body, headers=headers)


# --- 2: on a stock MTA, From: is no authority ------------------------------------------


async def test_2_a_forged_agent_closes_nothing_on_a_stock_mta(stock: Harness) -> None:
    await stock.deliver(mail())
    await stock.deliver(forged_alice("#close\nplease reply with your VPN password"))
    assert await field(stock, "status") == "new"
    assert await sent(stock, "reply") == [] and await sent(stock, "command-reply") == []
    [(to, notice)] = await sent(stock, "unproven-notice")
    assert to == "alice@example.com"  # her directory address, whoever wrote
    assert "please reply with your VPN password" in text_of(notice)  # she sees what was said
    [(visibility,)] = await stock.rows(
        "SELECT visibility FROM events WHERE actor = 'alice@example.com' AND kind = 'reply'")
    assert visibility == "internal"


async def test_2_the_notice_goes_to_the_directory_spelling_not_the_from(stock: Harness) -> None:
    await stock.deliver(mail())
    await stock.deliver(mail("Re: [IT-1001] x", sender="ALICE+x@Example.com",
                             message_id="<f@evil.example>", body="#take"))
    [(to, _)] = await sent(stock, "unproven-notice")
    assert to == "alice@example.com"
    assert await field(stock, "assignee") is None


async def test_2_a_reply_to_our_notification_is_proof_on_a_stock_mta(stock: Harness) -> None:
    await stock.deliver(mail())
    key = await stock.key_from("alice@example.com", "notify-team")
    await stock.deliver(mail("Re: [IT-1001] New request", sender="alice@example.com",
                             message_id="<a1@example.com>", body="#take\n#priority high",
                             headers={"In-Reply-To": key}))
    assert await field(stock, "assignee") == "alice@example.com"
    assert await field(stock, "priority") == "high"


async def test_2_bob_cannot_use_alices_key(stock: Harness) -> None:
    await stock.deliver(mail())
    alices = await stock.key_from("alice@example.com", "notify-team")
    await stock.deliver(mail("Re: [IT-1001] x", sender="bob@example.com",
                             message_id="<b1@example.com>", body="#close",
                             headers={"References": alices}))
    assert await field(stock, "status") == "new"


async def test_2_a_key_for_another_ticket_proves_nothing_here(stock: Harness) -> None:
    await stock.deliver(mail())
    await stock.deliver(mail("Second", message_id="<req-2@example.com>"))
    key_1002 = (await stock.rows(
        "SELECT message_id FROM outbox WHERE kind = 'notify-team' AND ticket = 2 AND "
        "recipients = '[\"alice@example.com\"]'"))[0][0]
    await stock.deliver(mail("Re: [IT-1001] x", sender="alice@example.com",
                             message_id="<a2@example.com>", body="#close",
                             headers={"In-Reply-To": f"<{key_1002}>"}))
    assert await field(stock, "status") == "new"


async def test_2_the_old_behaviour_is_an_explicit_setting(tmp_path: Path) -> None:
    h = await make(tmp_path, from_header_is_proof=True)
    try:
        await h.deliver(mail())
        await h.deliver(forged_alice("#close"))
        assert await field(h, "status") == "closed"
    finally:
        await h.store.close()


async def test_2_a_bulk_looking_forgery_does_not_meet_the_sla(stock: Harness) -> None:
    await stock.deliver(mail())
    await stock.deliver(forged_alice("On it.", headers={"Precedence": "bulk"}))
    assert await field(stock, "first_response_at") is None


# --- 1: our MTA's verdict counts only as RFC 8601 says ---------------------------------


async def test_1_the_envelope_sender_cannot_smuggle_a_dmarc_pass(milter: Harness) -> None:
    await milter.deliver(mail())
    for n, result in enumerate((
            "mx.example.com; spf=fail smtp.mailfrom==?us-ascii?q?x=3B_dmarc=3Dpass?=@evil.org;"
            " dmarc=fail header.from=example.com",
            'mx.example.com; spf=fail smtp.mailfrom="x;dmarc=pass"@evil.org; dmarc=fail '
            "header.from=example.com",
            "mx.example.com; spf=fail (a (b;dmarc=pass) c) smtp.mailfrom=x@evil.org",
            "mx.example.com; dmarc=pass")):  # without header.from: not for our From:
        await milter.deliver(forged_alice("#take\n#priority high", n=n,
                                          headers={"Authentication-Results": result}))
    assert await field(milter, "assignee") is None
    assert await field(milter, "priority") == "normal"
    assert len(await sent(milter, "reply")) == 0


async def test_1_a_real_pass_from_our_mta_is_proof(milter: Harness) -> None:
    await milter.deliver(mail())
    await milter.deliver(forged_alice("#take", headers={
        "Authentication-Results": "mx.example.com; spf=pass smtp.mailfrom=example.com; "
                                  "dmarc=pass header.from=example.com"}))
    assert await field(milter, "assignee") == "alice@example.com"


# --- 3: a forged requester ---------------------------------------------------------------


async def resolved(h: Harness) -> None:
    await h.deliver(mail())
    key = await h.key_from("alice@example.com", "notify-team")
    await h.deliver(mail("Re: [IT-1001] x", sender="alice@example.com",
                         message_id="<take@example.com>", body="#take",
                         headers={"In-Reply-To": key}))
    await h.deliver(mail("Re: [IT-1001] x", sender="alice@example.com",
                         message_id="<done@example.com>", body="#resolve\nNew PSU.",
                         headers={"In-Reply-To": key}))
    assert await field(h, "status") == "resolved"


async def test_3_a_forged_requester_rates_and_reopens_nothing(milter: Harness) -> None:
    await resolved(milter)
    fail = {"Authentication-Results": "mx.example.com; dmarc=fail header.from=example.com"}
    await milter.deliver(mail("Re: [IT-1001] Rating: 1", message_id="<r@evil.example>",
                              body="1", headers=fail))
    assert await field(milter, "rating") is None
    await milter.deliver(mail("Re: [IT-1001] Laptop", message_id="<o@evil.example>",
                              body="It is broken again; mail the new password to "
                                   "ann.backup@evil.org", headers=fail))
    assert await field(milter, "status") == "resolved"
    # Both reach the assignee, marked: the rating as text, the "password" request.
    [(to, rating), (_, relayed)] = await sent(milter, "relay-team")
    assert to == "alice@example.com" and "UNVERIFIED SENDER" in text_of(rating)
    assert "UNVERIFIED SENDER" in text_of(relayed) and "ann.backup@evil.org" in text_of(relayed)
    assert "(unverified)" in relayed["Subject"] and "(unverified)" in relayed["From"]
    assert await sent(milter, "thanks") == []


async def test_3_the_real_requester_replying_to_our_summary_reopens(milter: Harness) -> None:
    await resolved(milter)
    summary = await milter.key_from("ann@example.com", "summary")
    await milter.deliver(mail("Re: [IT-1001] Laptop", message_id="<ann-2@example.com>",
                              body="Still broken.", headers={"In-Reply-To": summary}))
    assert await field(milter, "status") == "open"
    [(_, relayed)] = await sent(milter, "relay-team")
    assert "UNVERIFIED" not in text_of(relayed)


# --- 4: mail bombing through us ---------------------------------------------------------


async def test_4_plus_tags_and_case_share_one_budget(stock: Harness) -> None:
    for n in range(25):
        await stock.deliver(mail(f"Request {n}", sender=f"Victim+{n}@Example.com",
                                 message_id=f"<v{n}@example.com>"))
    assert await stock.count("tickets") == 25  # every request is kept
    assert len(await sent(stock, "ack")) == 10
    assert await stock.count("events", "kind = 'ack_suppressed'") == 15


def test_4_unicode_case_variants_share_one_budget() -> None:
    """Identity folds ASCII case only (a lookalike mailbox is not an agent's), but a server
    may deliver J\u00d6RG@ and j\u00f6rg@ to one person: budgets fold every case rule."""
    budget = MailBudget(own_domains=ORG)
    keys = {budget.keys(f"{s}+{n}@example.com")
            for n, s in enumerate(["J\u00d6RG", "j\u00f6rg", "J\u00f6rg", "j\u00d6rg"])}
    assert keys == {("j\u00f6rg@example.com", None)}
    assert team_budget("it", "J\u00d6RG+1@example.com") == team_budget("it",
                                                                   "j\u00f6rg@example.com")


async def test_4_a_domain_outside_the_organisation_has_a_budget(tmp_path: Path) -> None:
    h = await make(tmp_path, auto_mail_per_domain_per_hour=5)
    try:
        for n in range(8):
            await h.deliver(mail(f"R{n}", sender=f"person{n}@victim.example",
                                 message_id=f"<d{n}@victim.example>"))
            await h.deliver(mail(f"O{n}", sender=f"colleague{n}@example.com",
                                 message_id=f"<o{n}@example.com>"))
        acks = [to for to, _ in await sent(h, "ack")]
        assert sum(a.endswith("@victim.example") for a in acks) == 5
        assert sum(a.endswith("@example.com") for a in acks) == 8  # ours: no domain limit
    finally:
        await h.store.close()


async def test_4_forged_commands_on_guessable_numbers_send_no_refusals(stock: Harness) -> None:
    for n in range(5):
        await stock.deliver(mail(f"R{n}", message_id=f"<q{n}@example.com>"))
    for n in range(5):
        await stock.deliver(mail(f"Re: [IT-{1001 + n}] x", sender="victim@example.org",
                                 message_id=f"<g{n}@evil.example>", body="#resolve"))
    assert await sent(stock, "command-reply") == []


async def test_4_a_flood_is_notified_five_times_then_summarised_hourly(stock: Harness) -> None:
    for n in range(30):
        await stock.deliver(mail(f"Flood {n}", sender="script@example.com",
                                 message_id=f"<f{n}@example.com>"))
    notified = await sent(stock, "notify-team")
    assert sorted({to for to, _ in notified}) == ["alice@example.com", "bob@example.com"]
    assert len(notified) == 10  # five requests, a copy for each of the two
    assert await stock.count("held_notifications") == 25
    await stock.deliver(mail("Other", sender="ann@example.com", message_id="<ann@example.com>"))
    assert len(await sent(stock, "notify-team")) == 12  # another sender is not held

    floods = FloodSummaries(stock.store, stock.current(), stock.clock, lambda: None)
    assert await floods.run_once() == 1
    [(_, summary)] = await sent(stock, "flood-summary")
    assert "25 more requests from script@example.com" in text_of(summary)
    assert "IT-1030" in text_of(summary)
    assert await floods.run_once() == 0  # nothing new
    stock.clock.advance(minutes=10)
    await stock.deliver(mail("Flood 31", sender="script@example.com", message_id="<f31@x>"))
    assert await floods.run_once() == 0  # not twice within the hour
    stock.clock.advance(hours=1)
    assert await floods.run_once() == 1
    second = (await sent(stock, "flood-summary"))[1][1]
    assert "1 more request from script@example.com" in text_of(second)


# --- 5: strangers and list addresses -----------------------------------------------------


async def test_5_a_stranger_who_knows_a_number_reaches_nobody(stock: Harness) -> None:
    await stock.deliver(mail())
    before = await stock.count("outbox")
    outcome = await stock.deliver(mail("Re: [IT-1001] x", sender="mallory@evil.example",
                                       message_id="<m@evil.example>", body="Call me!"))
    assert outcome.action == "reply"
    assert await stock.count("outbox") == before
    assert await stock.count("messages", "sender = 'mallory@evil.example'") == 1


async def test_5_the_organisation_may_comment_when_configured(tmp_path: Path) -> None:
    h = await make(tmp_path, comments_from="organisation")
    try:
        await h.deliver(mail())
        await h.deliver(mail("Re: [IT-1001] x", sender="heidi@example.com",
                             message_id="<h@example.com>", body="Same here."))
        await h.deliver(mail("Re: [IT-1001] x", sender="mallory@evil.example",
                             message_id="<m@evil.example>", body="Call me!"))
        relayed = [text_of(m) for _, m in await sent(h, "relay-team")]
        assert len(relayed) == 2 and all("Same here." in t for t in relayed)  # alice, bob
        assert "UNVERIFIED" in relayed[0]  # heidi's From: is not proven either
    finally:
        await h.store.close()


async def test_5_a_notify_list_address_never_commands(milter: Harness) -> None:
    await milter.deliver(mail(to="payroll@example.com"))
    verified = {"Authentication-Results": "mx.example.com; spf=pass smtp.mailfrom=example.com; "
                                          "dmarc=pass header.from=example.com"}
    await milter.deliver(mail("Re: [PAY-1001] x", sender="payroll-team@example.com",
                              to="payroll@example.com", message_id="<list@example.com>",
                              body="#close", headers=verified))
    assert await field(milter, "status", "PAY-1001") == "new"


# --- lookalike mailboxes: only ASCII case is one mailbox ---------------------------------


async def test_a_mailbox_that_unicode_case_folds_to_an_agents_is_not_the_agent(
        milter: Harness) -> None:
    """fran\u212a@example.com (KELVIN SIGN) is another SMTPUTF8 mailbox of our domain; its
    owner's mail passes DMARC for example.com, but str.lower() would make it frank's."""
    await milter.deliver(mail(to="facilities@example.com"), FACILITIES)
    verified = {"Authentication-Results": "mx.example.com; spf=pass smtp.mailfrom=example.com; "
                                          "dmarc=pass header.from=example.com"}
    await milter.deliver(mail("Re: [FAC-1001] x", sender="Frank <fran\u212a@example.com>",
                              to="facilities@example.com", message_id="<kelvin@example.com>",
                              body="#close", headers=verified), FACILITIES)
    assert await field(milter, "status", "FAC-1001") == "new"
    assert await milter.count("events", "actor = 'frank@example.com'") == 0


async def test_1_a_forged_header_the_stripping_rule_leaves_in_proves_nothing(
        milter: Harness) -> None:
    """Our MTA's header on top (example.com publishes no DMARC record), the sender's below
    it with our id after a comment: README's header_checks regex does not strip it."""
    await milter.deliver(mail())
    ours = ("mx.example.com; spf=pass smtp.mailfrom=evil.example; "
            "dmarc=none header.from=example.com")
    forged = "(mx) mx.example.com; dkim=pass header.d=example.com"
    raw = f"Authentication-Results: {ours}\r\n".encode() + forged_alice(
        "#take", headers={"Authentication-Results": forged})
    await milter.deliver(raw)
    assert await field(milter, "assignee") is None


@pytest.mark.parametrize("position", ["top", "bottom"])
async def test_1_a_forged_header_above_exims_appended_one_proves_nothing(
        tmp_path: Path, position: str) -> None:
    """Exim's add_header appends our results below the sender's fields and strips
    nothing unless told: the sender's own "dmarc=pass" with our id sits on top. Whichever
    end mailgate is told our MTA writes, the forged one is never believed."""
    h = await make(tmp_path, OUR_MTA, position)
    try:
        await h.deliver(mail())
        head, _, body = forged_alice("#take").partition(b"\r\n\r\n")
        await h.deliver(b"Authentication-Results: mx.example.com; dmarc=pass "
                        b"header.from=example.com\r\n" + head + b"\r\nAuthentication-Results: "
                        b"mx.example.com; spf=fail smtp.mailfrom=evil.example\r\n\r\n" + body)
        assert await field(h, "assignee") is None
        [(trust,)] = await h.rows("SELECT sender_trust FROM messages WHERE sender = ?",
                                  "alice@example.com")
        assert trust == "unverified"
    finally:
        await h.store.close()


# --- what a mail carries beyond its leading lines is never a command ---------------------


def forwarded(body: str, inner: str) -> str:
    """A multipart body: `body` as text, then a message/rfc822 part whose text is `inner`."""
    return (f"--b\r\nContent-Type: text/plain\r\n\r\n{body}\r\n--b\r\n"
            "Content-Type: message/rfc822\r\n\r\nFrom: mallory@evil.example\r\n"
            f"Subject: fwd\r\nContent-Type: text/plain\r\n\r\n{inner}\r\n--b\r\n"
            'Content-Type: text/plain; name="c.txt"\r\nContent-Disposition: attachment; '
            f'filename="c.txt"\r\n\r\n{inner}\r\n--b--')


@pytest.mark.parametrize(("subject", "body", "multipart"), [
    ("Re: [IT-1001] x", "> #close\n> #assign bob\n\nLooks fine to me.", False),  # quoted
    ("Re: [IT-1001] x", "On Tue, Ann wrote:\n> #close", False),
    ("Re: [IT-1001] x", "\u200b#close", False),  # ZERO WIDTH SPACE before the sign
    ("Re: [IT-1001] x", "\u202e#close", False),  # RIGHT-TO-LEFT OVERRIDE
    ("Re: [IT-1001] x", "\uff03close", False),  # FULLWIDTH NUMBER SIGN
    ("Re: [IT-1001] x", "#clos\u0435", False),  # CYRILLIC SMALL LETTER IE: not a command
    ("#close Re: [IT-1001] x", "Looks fine to me.", False),  # in the subject
    ("Re: [IT-1001] x", forwarded("See the attached mail.", "#close"), True),
])
async def test_only_the_leading_lines_of_the_text_command(stock: Harness, subject: str,
                                                          body: str, multipart: bool) -> None:
    await stock.deliver(mail())
    key = await stock.key_from("alice@example.com", "notify-team")
    headers = {"In-Reply-To": key}
    raw = mail(subject, sender="alice@example.com", message_id="<a-q@example.com>",
               body=body, headers=headers)
    if multipart:
        raw = raw.replace(b"Content-Type: text/plain; charset=utf-8",
                          b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"')
    await stock.deliver(raw)
    assert await field(stock, "status") != "closed"  # "open" for a public answer
    assert await field(stock, "assignee") is None
    assert await stock.count("events", "kind = 'closed'") == 0


async def test_the_requesters_own_key_commands_nothing(stock: Harness) -> None:
    await stock.deliver(mail())
    key = await stock.key_from("ann@example.com", "ack")
    await stock.deliver(mail("Re: [IT-1001] x", message_id="<ann-cmd@example.com>",
                             body="#close\n#assign bob", headers={"References": key}))
    assert await field(stock, "status") == "new"
    assert await field(stock, "assignee") is None


async def test_1_a_leaked_key_proves_nothing_where_our_mta_says_dmarc_failed(
        milter: Harness) -> None:
    """Alice forwarded our notification, headers and all, to a vendor: its Message-ID is
    her key. Whoever holds it writes as her from outside; our MTA says DMARC failed."""
    await milter.deliver(mail())
    key = await milter.key_from("alice@example.com", "notify-team")
    await milter.deliver(forged_alice("#take\n#priority high", headers={
        "In-Reply-To": key,
        "Authentication-Results": "mx.example.com; dmarc=fail header.from=example.com"}))
    assert await field(milter, "assignee") is None
    assert await field(milter, "priority") == "normal"
    # Her own reply, with the same key, still works; so does one our MTA says nothing of.
    await milter.deliver(forged_alice("#priority high", n=2, headers={"In-Reply-To": key}))
    assert await field(milter, "priority") == "high"


async def test_1_a_signed_mail_replayed_with_a_second_subject_proves_nothing(
        milter: Harness) -> None:
    """Alice's genuine, DKIM-signed '#close' for IT-1001, sent again by someone else with
    'Subject: [IT-1002]' put above the signed Subject: DKIM still passes (it checks the
    last Subject), mailgate would read the first."""
    await milter.deliver(mail())
    await milter.deliver(mail("Second", message_id="<req-2@example.com>"))
    signed = forged_alice("#close", headers={
        "Authentication-Results": "mx.example.com; dkim=pass header.d=example.com"})
    await milter.deliver(b"Subject: Re: [IT-1002] x\r\nMessage-ID: <replay@evil.example>\r\n"
                         + signed)
    assert await field(milter, "status", "IT-1002") != "closed"
    assert await field(milter, "status", "IT-1001") != "closed"
