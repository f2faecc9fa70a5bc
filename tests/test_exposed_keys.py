"""A reply key someone else has seen proves nothing any more (core/exposure.py): the real
pipeline and store, on SQLite and (under MAILGATE_TEST_ENGINE=postgresql) PostgreSQL.

The hole: an agent answers mailgate's notification with the requester in Cc. Her answer's
In-Reply-To carries HER key for the ticket, so the requester now holds it and could send
"#close" From: the agent. mailgate saw the agent's answer (it was addressed to mailgate
too), so it burns every key that answer carried.
"""

from __future__ import annotations

import email
from collections.abc import AsyncIterator
from datetime import timedelta
from email.message import Message
from pathlib import Path

import pytest

from mailgate.core.replykey import DAY, _b36, _mac
from mailgate.intake.pipeline import Outcome
from mailgate.intake.read import read_mail
from mailgate.storage import schema
from mailgate.storage.exposed import sweep_expired
from mailgate.storage.postgres import schema as pg_schema
from mailgate.storage.store import Store
from tests.factories import IT, TEST_KEYS, FakeClock, Harness, harness, mail
from tests.harness import database, query

SUBJECT = "Re: [IT-1001] Laptop won't boot"
[(KEY_ID, SECRET)] = TEST_KEYS.secrets


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    built = await harness(tmp_path)
    yield built
    await built.store.close()


async def field(h: Harness, column: str, ref: str = "IT-1001") -> object:
    [(value,)] = await h.rows(f"SELECT {column} FROM tickets WHERE ref = ?", ref)
    return value


async def sent(h: Harness, kind: str) -> list[tuple[str, Message]]:
    rows = await h.rows("SELECT recipients, raw FROM outbox WHERE kind = ? ORDER BY id", kind)
    return [(r[0][2:-2], email.message_from_bytes(r[1])) for r in rows]


def text_of(msg: Message) -> str:
    return msg.get_payload(decode=True).decode()


def from_alice(body: str, key: str, n: int, *, to: str = "it-help@example.com",
               cc: str | None = None) -> bytes:
    """A mail From: alice@example.com (an IT agent) answering the mail whose key is `key`."""
    return mail(SUBJECT, sender="Alice Adams <alice@example.com>", to=to, cc=cc,
                message_id=f"<alice-{n}@example.com>", body=body,
                headers={"In-Reply-To": key, "References": f"<req-1@example.com> {key}"})


def forged_by_ann(body: str, key: str, n: int = 1) -> bytes:
    """Ann (the requester) writing From: alice, with the key alice's answer showed her."""
    return mail(SUBJECT, sender="Alice Adams <alice@example.com>",
                message_id=f"<forged-{n}@ann.example>", body=body,
                headers={"In-Reply-To": key})


async def opened(h: Harness) -> str:
    """IT-1001 from ann; the key of alice's team notification about it."""
    await h.deliver(mail())
    return await h.key_from("alice@example.com", "notify-team")


async def test_the_agents_answer_with_the_requester_in_cc_runs_and_burns_her_key(
        h: Harness) -> None:
    key = await opened(h)
    await h.deliver(from_alice("#take\n#priority high\nI will look at it today.", key, 1,
                               cc="Ann Example <ann@example.com>"))
    assert await field(h, "assignee") == "alice@example.com"  # the genuine mail counts
    assert await field(h, "priority") == "high"
    assert await h.count("exposed_keys") == 1
    # Ann now holds alice's key and writes as alice: nothing runs, alice is told why.
    await h.deliver(forged_by_ann("#close\n#assign bob", key))
    assert await field(h, "status") != "closed"
    assert await field(h, "assignee") == "alice@example.com"
    assert await h.count("events", "kind = 'closed'") == 0
    [(to, notice)] = await sent(h, "unproven-notice")
    assert to == "alice@example.com"
    text = " ".join(text_of(notice).split())
    assert "had been seen by others" in text and "Send it to mailgate only" in text
    [(detail, visibility)] = await h.rows(
        "SELECT detail, visibility FROM events WHERE message IN "
        "(SELECT id FROM messages WHERE message_id = 'forged-1@ann.example') AND kind = 'reply'")
    assert '"exposed_key": true' in detail and visibility == "internal"


async def test_the_notices_fresh_key_works(h: Harness) -> None:
    """The member takes the unproven path: the notice carries a new key, not exposed, and
    answering it (to mailgate only) runs her commands."""
    key = await opened(h)
    await h.deliver(from_alice("On it.", key, 1, cc="ann@example.com"))
    await h.deliver(from_alice("#priority high", key, 2))  # her own, but the key is burnt
    assert await field(h, "priority") == "normal"
    fresh = await h.key_from("alice@example.com", "unproven-notice")
    await h.deliver(from_alice("#priority high", fresh, 3))
    assert await field(h, "priority") == "high"


async def test_a_keyed_answer_to_mailgate_only_exposes_nothing(h: Harness) -> None:
    key = await opened(h)
    # To mailgate, with herself in Cc (some clients do that): no one else saw it.
    await h.deliver(from_alice("#take", key, 1, cc="Alice Adams <ALICE+sent@example.com>"))
    assert await h.count("exposed_keys") == 0
    await h.deliver(from_alice("#priority high", key, 2))
    assert await field(h, "assignee") == "alice@example.com"
    assert await field(h, "priority") == "high"


@pytest.mark.parametrize("cc", [
    "IT-Help+urgent@Example.COM",  # a plus tag and other case on the department's address
    "HELPDESK@example.com, Facilities <facilities@EXAMPLE.com>",  # its second, another's
    "help+facilities@example.com, help+anything@example.com",  # addresses rules route by
])
async def test_our_own_addresses_in_any_spelling_expose_nothing(h: Harness, cc: str) -> None:
    key = await opened(h)
    await h.deliver(from_alice("#take", key, 1, cc=cc))
    assert await h.count("exposed_keys") == 0
    await h.deliver(from_alice("#priority high", key, 2))
    assert await field(h, "priority") == "high"


async def test_a_colleague_in_cc_exposes_the_key_too(h: Harness) -> None:
    """Anyone but mailgate and the key's holder: bob, a team member, could write as
    alice with it just as well."""
    key = await opened(h)
    await h.deliver(from_alice("#take", key, 1, to="it-help@example.com, bob@example.com"))
    await h.deliver(forged_by_ann("#priority high", key))
    assert await field(h, "priority") == "normal"


async def test_the_next_mail_to_her_keeps_its_own_key(h: Harness) -> None:
    """Burning one mail's key leaves the key of another mail to her about the same
    ticket, sent the same day, proving (mgk2: the MAC covers the nonce)."""
    notified = await opened(h)
    await h.deliver(mail(SUBJECT, message_id="<ann-2@example.com>", body="Any news?"))
    relayed = await h.key_from("alice@example.com", "relay-team")
    await h.deliver(from_alice("Looking into it.", notified, 1, cc="ann@example.com"))
    await h.deliver(from_alice("#priority high", relayed, 2))
    assert await field(h, "priority") == "high"
    await h.deliver(forged_by_ann("#priority low", notified))
    assert await field(h, "priority") == "high"


async def test_the_requesters_key_shown_to_a_colleague_reopens_nothing(h: Harness) -> None:
    key = await opened(h)
    anns = await h.key_from("ann@example.com", "ack")
    await h.deliver(mail(SUBJECT, to="it-help@example.com", cc="carl@elsewhere.example",
                         message_id="<ann-2@example.com>", body="It beeps three times.",
                         headers={"In-Reply-To": anns}))
    assert await h.count("exposed_keys") == 1
    await h.deliver(from_alice("#resolve\nA new battery fixed it.", key, 1))
    assert await field(h, "status") == "resolved"
    await h.deliver(mail(SUBJECT, message_id="<carl-forged@elsewhere.example>",
                         body="It broke again, please reopen.", headers={"In-Reply-To": anns}))
    assert await field(h, "status") == "resolved"
    relays = [m for _, m in await sent(h, "relay-team") if "broke again" in text_of(m)]
    assert relays and all("the key it carries had been" in text_of(m) for m in relays)


def mgk1_key(recipient: str, nonce: str) -> str:
    """An mgk1 key for IT-1001 as mailgate issued them before mgk2 (the MAC leaves the
    nonce out), valid for 60 days."""
    expiry = _b36(int(FakeClock().now.timestamp()) // DAY + 30)  # the harness's clock's
    mac = _mac(SECRET, "mgk1", KEY_ID, expiry, "IT-1001", recipient)
    return f"<mgk1.{KEY_ID}.{expiry}.IT-1001.{mac}.{nonce}@example.com>"


async def test_old_keys_still_prove_and_are_burnt_for_their_day(h: Harness) -> None:
    await h.deliver(mail())
    key, same_day = mgk1_key("alice@example.com", "a" * 32), mgk1_key("alice@example.com",
                                                                       "b" * 32)
    await h.deliver(from_alice("#take", key, 1))
    assert await field(h, "assignee") == "alice@example.com"
    await h.deliver(from_alice("#priority high", key, 2, cc="ann@example.com"))
    assert await field(h, "priority") == "high"
    await h.deliver(forged_by_ann("#priority low", same_day))
    assert await field(h, "priority") == "high"


async def test_a_group_read_ahead_sees_a_key_burnt_earlier_in_the_group(h: Harness) -> None:
    """The exposing answer and the forgery arrive in one IMAP group: the forgery's
    exposed_keys read ahead (before the answer burnt the key) is read again."""
    key = await opened(h)
    raws = [from_alice("#take", key, 1, cc="ann@example.com"),
            forged_by_ann("#close", key)]
    reads = [read_mail(raw, h.pipeline.reading) for raw in raws]
    async with h.store.transaction() as tx:
        await h.pipeline.read_ahead(tx, reads, IT)
        outcomes: list[Outcome] = [await h.pipeline.handle(tx, raw, IT, read)
                                   for raw, read in zip(raws, reads, strict=True)]
    assert [o.action for o in outcomes] == ["reply", "reply"]
    assert await field(h, "assignee") == "alice@example.com"
    assert await field(h, "status") != "closed"


def junk_key(n: int) -> str:
    """An id shaped like a key of ours (our key id, a live expiry day) whose MAC is
    nobody's: what a mail can carry by the hundred."""
    expiry = _b36(int(FakeClock().now.timestamp()) // DAY + 30)
    return f"<mgk2.{KEY_ID}.{expiry}.IT-1001.{'a' * 20}.{n:032x}@example.com>"


def long_thread(key: str, shape: str) -> tuple[dict[str, str], str]:
    """Headers and body of a mail that carries `key` where a cut on the ids read used to
    leave it: each shape is one cut."""
    if shape == "references beyond the last 50":
        return {"In-Reply-To": "<r59@example.com>", "References": " ".join(
            [key, *(f"<r{i}@example.com>" for i in range(60))])}, "Thanks."
    if shape == "references beyond 4096 characters":
        return {"In-Reply-To": "<r1@example.com>", "References": "\r\n ".join(
            [*(f"<{'x' * 150}.{i}@example.com>" for i in range(30)), key])}, "Thanks."
    if shape == "in-reply-to beyond its first 10":
        return {"In-Reply-To": " ".join(
            [*(f"<r{i}@example.com>" for i in range(10)), key])}, "Thanks."
    if shape == "beyond the keys proof checks":
        return {"In-Reply-To": "<r1@example.com>", "References": "\r\n ".join(
            [*(junk_key(n) for n in range(85)), key])}, "Thanks."
    assert shape == "a body beyond its first 20 keys"
    return {}, "\r\n".join([*(junk_key(n)[1:-1] for n in range(21)), key[1:-1]])


@pytest.mark.parametrize("shape", ["references beyond the last 50",
                                   "references beyond 4096 characters",
                                   "in-reply-to beyond its first 10",
                                   "beyond the keys proof checks",
                                   "a body beyond its first 20 keys"])
async def test_every_key_a_mail_shows_others_is_burnt_wherever_it_sits(
        h: Harness, shape: str) -> None:
    """A long thread's answer with ann in Cc carries alice's key where the ids read for
    threading, or the keys proof checks, stop: a later mail that puts it in In-Reply-To
    would be proven by it, so it is burnt all the same."""
    key = await opened(h)
    headers, body = long_thread(key, shape)
    await h.deliver(mail(SUBJECT, sender="Alice Adams <alice@example.com>",
                         cc="ann@example.com", message_id="<alice-1@example.com>",
                         body=body, headers=headers))
    await h.deliver(forged_by_ann("#close", key))
    assert await field(h, "status") != "closed"
    assert await h.count("events", "kind = 'closed'") == 0


async def test_another_persons_key_shown_to_others_is_burnt_too(h: Harness) -> None:
    """Bob forwarded his notification to alice with its headers; her answer with ann in
    Cc carries bob's key in References: ann could write as bob with it."""
    await opened(h)
    bobs = await h.key_from("bob@example.com", "notify-team")
    await h.deliver(mail(SUBJECT, sender="Alice Adams <alice@example.com>",
                         cc="ann@example.com", message_id="<alice-1@example.com>",
                         body="Bob asked me to look.",
                         headers={"In-Reply-To": "<fwd@example.com>",
                                  "References": f"{bobs} <fwd@example.com>"}))
    await h.deliver(mail(SUBJECT, sender="Bob <bob@example.com>", body="#close",
                         message_id="<forged-bob@ann.example>", headers={"In-Reply-To": bobs}))
    assert await field(h, "status") != "closed"


async def test_many_ids_before_the_key_do_not_hide_a_genuine_answer(h: Harness) -> None:
    """Proof reads the same ids, In-Reply-To's first: alice's answer in a long thread,
    sent to mailgate only, still proves her."""
    key = await opened(h)
    await h.deliver(mail(SUBJECT, sender="Alice Adams <alice@example.com>", body="#take",
                         message_id="<alice-1@example.com>",
                         headers={"In-Reply-To": key, "References": " ".join(
                             [*(f"<r{i}@example.com>" for i in range(200)), key])}))
    assert await field(h, "assignee") == "alice@example.com"


async def test_expired_keys_rows_are_swept(h: Harness) -> None:
    key = await opened(h)
    await h.deliver(from_alice("#take", key, 1, cc="ann@example.com"))
    assert await sweep_expired(h.store, h.clock() + timedelta(days=30)) == 0
    assert await h.count("exposed_keys") == 1
    assert await sweep_expired(h.store, h.clock() + timedelta(days=62)) == 1
    assert await h.count("exposed_keys") == 0


async def test_a_schema_9_database_gains_exposed_keys(tmp_path: Path) -> None:
    """A database as mailgate at schema 9 left it, with a ticket on it: the next start
    migrates it to the latest, and the new table works at once (either engine)."""
    h = await harness(tmp_path)
    try:
        key = await opened(h)
    finally:
        await h.store.close()
    target = database(tmp_path / "state")
    query(target, "DROP TABLE exposed_keys")
    for column in ("envelope_sender", "envelope_recipients"):  # migration 11's
        query(target, f"ALTER TABLE quarantine DROP COLUMN {column}")
    if isinstance(target, Path):
        query(target, "PRAGMA user_version = 9")
    else:
        query(target, "UPDATE schema_version SET version = 9")
    assert len(schema.MIGRATIONS) == len(pg_schema.MIGRATIONS) == 11
    h = await harness(tmp_path)
    try:
        assert await h.store.schema_version() == 11
        assert await h.count("tickets") == 1
        await h.deliver(from_alice("#take", key, 1, cc="ann@example.com"))
        await h.deliver(forged_by_ann("#close", key))
        assert await field(h, "assignee") == "alice@example.com"
        assert await field(h, "status") != "closed"
    finally:
        await h.store.close()


async def test_store_open_on_a_current_database_keeps_its_rows(tmp_path: Path) -> None:
    h = await harness(tmp_path)
    try:
        key = await opened(h)
        await h.deliver(from_alice("#take", key, 1, cc="ann@example.com"))
    finally:
        await h.store.close()
    h = await harness(tmp_path)
    try:
        assert await h.count("exposed_keys") == 1
        assert isinstance(h.store, Store)
    finally:
        await h.store.close()
