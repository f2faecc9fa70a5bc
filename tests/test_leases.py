"""The lease statements (storage/leases.py) on two connections to one database, as two
nodes see it: acquire, renew, expiry, takeover, release, and a race. On SQLite (two
connections to one file) by default, on PostgreSQL with MAILGATE_TEST_ENGINE=postgresql."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailgate.storage.leases import LEADER, LeaseBook, leased_mailbox, mailbox_lease
from mailgate.storage.store import Store
from tests.harness import database

MINUTE = 60.0
EXPIRED = -1.0  # a lease written with negative seconds is already expired: no waiting


@pytest.fixture
async def books(tmp_path: Path) -> AsyncIterator[tuple[LeaseBook, LeaseBook]]:
    target = database(tmp_path / "state")  # two connections to one database: two nodes
    first = await Store.open(target)
    second = await Store.open(target)
    yield LeaseBook(first), LeaseBook(second)
    await first.close()
    await second.close()


async def test_a_free_lease_is_taken_until_the_databases_now_plus_seconds(
        books: tuple[LeaseBook, LeaseBook]) -> None:
    a, _ = books
    before = datetime.now(UTC)
    held = await a.claim([LEADER, mailbox_lease("it")], "node-a", MINUTE)
    assert set(held) == {LEADER, "mailbox:it"}
    lease = held[LEADER]
    assert lease.holder == "node-a" and lease.live
    # The database's clock and ours are the same machine's here.
    assert before - timedelta(seconds=1) <= lease.acquired_at <= datetime.now(UTC)
    assert lease.expires_at - lease.acquired_at == pytest.approx(timedelta(minutes=1),
                                                                 abs=timedelta(seconds=1))


async def test_a_live_lease_is_refused_to_another_node(
        books: tuple[LeaseBook, LeaseBook]) -> None:
    a, b = books
    await a.claim([LEADER, mailbox_lease("it")], "node-a", MINUTE)
    held = await b.claim([LEADER, mailbox_lease("it"), mailbox_lease("hr")], "node-b", MINUTE)
    assert set(held) == {"mailbox:hr"}
    assert {lease.name: lease.holder for lease in await b.all()} == {
        LEADER: "node-a", "mailbox:hr": "node-b", "mailbox:it": "node-a"}


async def test_renewing_moves_the_expiry_and_keeps_the_acquisition_time(
        books: tuple[LeaseBook, LeaseBook]) -> None:
    a, _ = books
    first = (await a.claim([LEADER], "node-a", 10.0))[LEADER]
    renewed = (await a.claim([LEADER], "node-a", MINUTE))[LEADER]
    assert renewed.acquired_at == first.acquired_at
    assert renewed.expires_at > first.expires_at + timedelta(seconds=40)


async def test_an_expired_lease_is_taken_over_with_a_new_acquisition_time(
        books: tuple[LeaseBook, LeaseBook]) -> None:
    a, b = books
    old = (await a.claim([LEADER], "node-a", EXPIRED))[LEADER]
    assert [lease.live for lease in await b.all()] == [False]
    taken = await b.claim([LEADER], "node-b", MINUTE)
    assert taken[LEADER].holder == "node-b"
    assert taken[LEADER].acquired_at >= old.acquired_at
    # The old holder's renewal comes too late: it is told, by an empty answer.
    assert await a.claim([LEADER], "node-a", MINUTE) == {}
    assert [(lease.holder, lease.live) for lease in await a.all()] == [("node-b", True)]


async def test_a_released_lease_is_free_at_once_and_only_its_holder_can_release_it(
        books: tuple[LeaseBook, LeaseBook]) -> None:
    a, b = books
    await a.claim([LEADER, mailbox_lease("it")], "node-a", MINUTE)
    await b.release([LEADER, mailbox_lease("it")], "node-b")  # not b's: nothing happens
    assert await b.claim([LEADER], "node-b", MINUTE) == {}
    await a.release([LEADER], "node-a")
    assert set(await b.claim([LEADER, mailbox_lease("it")], "node-b", MINUTE)) == {LEADER}
    await a.release([], "node-a")  # nothing to give up is not an error


async def test_racing_nodes_never_both_hold_a_lease(books: tuple[LeaseBook, LeaseBook]) -> None:
    a, b = books
    names = [mailbox_lease(f"box{i}") for i in range(20)]
    won_a, won_b = await asyncio.gather(a.claim(names, "node-a", MINUTE),
                                        b.claim(list(reversed(names)), "node-b", MINUTE))
    assert set(won_a) | set(won_b) == set(names)
    assert not set(won_a) & set(won_b)


def test_mailbox_lease_names_round_trip() -> None:
    assert leased_mailbox(mailbox_lease("it")) == "it"
    assert leased_mailbox(LEADER) is None
