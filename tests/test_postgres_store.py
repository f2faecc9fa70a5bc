"""The PostgreSQL engine's own behaviour: statement translation, the schema beside SQLite's,
several stores (nodes) on one database at once, attachments in the database, `mailgate
migrate --to`, and the password kept out of every output. Runs on the session's private
PostgreSQL (tests/postgres.py); the translation tests need no server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import psycopg
import pytest
import structlog
from structlog.testing import capture_logs

from mailgate.cli.main import main
from mailgate.core.model import Outgoing, Priority
from mailgate.core.trust import TrustPolicy
from mailgate.intake.pipeline import Pipeline, PipelineSettings
from mailgate.intake.read import read_mail
from mailgate.storage import errors as store_errors
from mailgate.storage.postgres.dialect import (
    TranslationError,
    one_insert,
    translate,
    translate_many,
)
from mailgate.storage.postgres.engine import (
    MIGRATION_LOCK,
    PgConnection,
    PostgresEngine,
    mask,
)
from mailgate.storage.postgres.schema import MIGRATIONS as PG_MIGRATIONS
from mailgate.storage.schema import MIGRATIONS as SQLITE_MIGRATIONS
from mailgate.storage.store import Store
from mailgate.workers import periodic
from mailgate.workers.attachment_sweep import AttachmentSweeper
from mailgate.workers.periodic import every, repeat
from tests.factories import (
    IT,
    TEMPLATES,
    TEST_KEYS,
    FakeClock,
    Harness,
    example_directory,
    mail,
)
from tests.postgres import PostgresServer

# --- translation (no server) ------------------------------------------------------------


def test_placeholders_become_psycopgs_and_literals_stay_untouched() -> None:
    done = translate("SELECT 'why?', \"odd?name\", x -- a ? here\n"
                     "FROM t WHERE a = ? AND b LIKE '50%' AND c = ? /* ?, % */")
    assert done.sql == ("SELECT 'why?', \"odd?name\", x -- a ? here\n"
                        "FROM t WHERE a = %s AND b ILIKE '50%%' AND c = %s /* ?, %% */")
    assert done.arguments(["A", "C"]) == ("A", "C")


def test_a_quote_inside_a_literal_does_not_end_it() -> None:
    done = translate("SELECT 'it''s ? a :trap' WHERE x = :value AND y = :value::text")
    assert done.sql == "SELECT 'it''s ? a :trap' WHERE x = %(value)s AND y = %(value)s::text"
    assert done.arguments({"value": 3}) == {"value": 3}


def test_numbered_placeholders_repeat_their_argument() -> None:
    done = translate("SELECT ?2, ?1 FROM t WHERE k = ?1")
    assert done.sql == "SELECT %s, %s FROM t WHERE k = %s"
    assert done.arguments(("one", "two")) == ("two", "one", "one")


def test_mixed_placeholder_styles_are_refused() -> None:
    with pytest.raises(TranslationError):
        translate("SELECT ? WHERE a = :name")


def test_sqlite_spellings_become_postgresqls() -> None:
    assert translate("INSERT OR IGNORE INTO receipts (a, b) VALUES (?, ?)").sql == (
        "INSERT INTO receipts (a, b) VALUES (%s, %s) ON CONFLICT DO NOTHING")
    assert translate("SELECT group_concat(d, char(31)) FROM r").sql == (
        "SELECT string_agg(d, chr(31)) FROM r")
    assert translate("SELECT json_object('a', f(x), 'b', 2), 1").sql == (
        "SELECT json_build_object('a', f(x), 'b', 2)::text, 1")
    assert translate("SELECT char_length('group_concat(')").sql == (
        "SELECT char_length('group_concat(')")


def test_inserts_into_id_tables_return_the_id_but_not_in_executemany() -> None:
    single = translate("INSERT INTO events (ticket, at) VALUES (?, ?)")
    assert single.returns_id and single.sql.endswith(" RETURNING id")
    assert not translate("INSERT INTO counters (prefix) VALUES (?) RETURNING x").returns_id
    assert not translate("INSERT INTO receipts (a) VALUES (?)").returns_id
    sql, rows = translate_many("INSERT INTO events (ticket) VALUES (?1)", [(1,), (2,)])
    assert sql == "INSERT INTO events (ticket) VALUES (%s)" and rows == [(1,), (2,)]


def test_executemany_of_a_plain_insert_is_one_statement_of_many_rows() -> None:
    sql, args = one_insert("INSERT OR IGNORE INTO receipts (k, d) VALUES (?, ?)",
                           [("a", 1), ("b", 2)]) or ("", ())
    assert sql == "INSERT INTO receipts (k, d) VALUES (%s, %s), (%s, %s) ON CONFLICT DO NOTHING"
    assert args == ("a", 1, "b", 2)
    sql, args = one_insert("INSERT INTO events (ticket, outgoing) VALUES "
                           "(?2, (SELECT id FROM outbox WHERE message_id = ?1))",
                           [("<m1>", 1), ("<m2>", 2)]) or ("", ())
    assert sql == ("INSERT INTO events (ticket, outgoing) VALUES "
                   "(%s, (SELECT id FROM outbox WHERE message_id = %s)), "
                   "(%s, (SELECT id FROM outbox WHERE message_id = %s))")  # no RETURNING
    assert args == (1, "<m1>", 2, "<m2>")
    rows = [(1,), (2,)]
    # Row by row where one statement would mean something else, or one row only.
    assert one_insert("INSERT INTO c (p) VALUES (?) ON CONFLICT (p) DO UPDATE SET n = 1",
                      rows) is None  # a row may not be updated twice by one statement
    assert one_insert("INSERT INTO e (a) VALUES ((SELECT max(a) FROM e) + ?)",
                      rows) is None  # each row must see the one before
    assert one_insert("INSERT INTO e (a) SELECT ? FROM x", rows) is None
    assert one_insert("INSERT INTO e (a) VALUES (?), (?)", rows) is None
    assert one_insert("UPDATE e SET a = ?", rows) is None
    assert one_insert("INSERT INTO e (a) VALUES (?)", rows[:1]) is None


def test_nul_in_text_becomes_a_replacement_character() -> None:
    done = translate("INSERT INTO t (a, b, c) VALUES (?, ?, ?)")
    assert done.arguments(["a\x00b", b"\x00", 3]) == ("a\ufffdb", b"\x00", 3)
    assert translate("SELECT :x").arguments({"x": "\x00"}) == {"x": "\ufffd"}


def test_a_url_is_shown_without_its_password() -> None:
    assert mask("postgresql://mg:s3cret@db.example.com:5432/mailgate?sslmode=verify-full") == (
        "postgresql://mg:***@db.example.com:5432/mailgate?sslmode=verify-full")
    assert mask("postgresql://mg@db/mailgate") == "postgresql://mg@db/mailgate"


def test_a_password_in_the_query_is_masked_too() -> None:
    # libpq reads ?password= as well as user:password@: neither may reach a log line.
    assert mask("postgresql://mg@db/mailgate?sslmode=require&password=s3cret") == (
        "postgresql://mg@db/mailgate?sslmode=require&password=***")
    assert "s3cret" not in mask("postgresql://mg:s3cret@db/mailgate?PassWord=s3cret")


# --- on a real PostgreSQL -----------------------------------------------------------------


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database()


@pytest.fixture
async def pg(pg_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(pg_url, state_dir=tmp_path / "state")
    yield store
    await store.close()


def _pg_pipeline(clock: FakeClock, trust: TrustPolicy | None = None) -> Pipeline:
    from mailgate.core.render import Renderer

    return Pipeline(example_directory(), Renderer(TEMPLATES),
                    PipelineSettings(instance="mailgate-test", keys=TEST_KEYS,
                                     trust=trust or TrustPolicy()), clock)


def _columns_sqlite(path: Path) -> dict[str, set[str]]:
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        found = {t: {r[1] for r in db.execute(f"PRAGMA table_info({t})")} for t in tables}
    db.close()
    return found


async def test_the_schema_has_every_sqlite_table_and_column(pg: Store, tmp_path: Path) -> None:
    assert len(PG_MIGRATIONS) == len(SQLITE_MIGRATIONS)
    assert await pg.schema_version() == len(SQLITE_MIGRATIONS)
    lite = await Store.open(tmp_path / "lite" / "mailgate.sqlite3")
    await lite.close()
    rows = await pg.fetch_all("SELECT table_name, column_name FROM information_schema.columns "
                              "WHERE table_schema = current_schema()")
    found: dict[str, set[str]] = {}
    for table, column in rows:
        found.setdefault(table, set()).add(column)
    assert found.pop("schema_version") == {"version"}
    assert found.pop("attachment_blobs") == {"sha256", "size", "data", "created_at"}
    assert found == _columns_sqlite(tmp_path / "lite" / "mailgate.sqlite3")


async def test_migrating_again_changes_nothing(pg: Store) -> None:
    assert await pg.migrate() == 0
    assert await pg.schema_version() == len(PG_MIGRATIONS)


async def test_a_start_on_a_current_database_does_not_wait_for_the_migration_lock(
        pg_url: str, pg: Store, tmp_path: Path) -> None:
    """A node holding the migration lock (migrating, or stuck) does not hold up another's
    start on a database already at this version: there is nothing to migrate."""
    with psycopg.connect(pg_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        async with asyncio.timeout(5):
            second = await Store.open(pg_url, state_dir=tmp_path / "second")
        await second.close()


async def test_two_nodes_draw_distinct_ticket_numbers(pg_url: str, pg: Store) -> None:
    other = await Store.open(pg_url)
    try:
        # One node's transaction holds the counter's row; the other's draw waits for it.
        async with pg.transaction() as tx:
            first = await tx.create_ticket("it", "IT", "one", "a@example.com", "",
                                           Priority.NORMAL, FakeClock()())
            waiting = asyncio.create_task(_one_ticket(other, "two"))
            await asyncio.sleep(0.2)
            assert not waiting.done()  # blocked on the row lock, not drawing the same number
        second = await waiting
        assert (first.ref, second) == ("IT-1001", "IT-1002")
        # And many at once, from both nodes.
        refs = await asyncio.gather(*(_one_ticket(s, f"n{i}")
                                      for i in range(20) for s in (pg, other)))
        assert sorted(refs) == [f"IT-{n}" for n in range(1003, 1043)]
    finally:
        await other.close()


async def _one_ticket(store: Store, subject: str) -> str:
    async with store.transaction() as tx:
        ticket = await tx.create_ticket("it", "IT", subject, "a@example.com", "",
                                        Priority.NORMAL, FakeClock()())
    return ticket.ref


async def test_other_tasks_reads_wait_while_a_message_is_pipelined(pg: Store,
                                                                   tmp_path: Path) -> None:
    """A mailbox watcher asks for its position on the writer connection while another's
    batch is open, its messages' writes pipelined: both go on, neither breaks the link."""
    clock = FakeClock()
    node = Harness(pg, _pg_pipeline(clock), clock)
    stop = asyncio.Event()

    async def positions() -> int:
        asked = 0
        while not stop.is_set():
            assert await pg.mailbox_position("nowhere") is None
            asked += 1
            await asyncio.sleep(0)
        return asked

    readers = [asyncio.create_task(positions()) for _ in range(3)]
    try:
        async with pg.transaction() as tx:
            outcomes = [await node.pipeline.handle(
                tx, mail(f"request {i}", message_id=f"<p{i}@example.com>"), IT)
                for i in range(30)]
    finally:
        stop.set()
        asked = await asyncio.gather(*readers)
    assert [o.action for o in outcomes] == ["ticket"] * 30
    assert min(asked) > 0
    assert await node.count("tickets") == 30


async def test_a_concurrent_duplicate_is_the_duplicate_path(pg_url: str,
                                                           tmp_path: Path) -> None:
    clock = FakeClock()
    nodes = [Harness(await Store.open(pg_url, state_dir=tmp_path / f"n{i}"),
                     _pg_pipeline(clock), clock) for i in range(2)]
    try:
        raw = mail(message_id="<same@example.com>")
        async with nodes[0].store.transaction() as tx:
            first = await nodes[0].pipeline.handle(tx, raw, IT)
            second_task = asyncio.create_task(nodes[1].deliver(raw))
            await asyncio.sleep(0.3)
            assert not second_task.done()  # waits on the key, does not race the insert
        second = await second_task
        assert first.action == "ticket" and second.action == "duplicate"
        assert await nodes[0].count("tickets") == 1
        assert await nodes[0].count("messages") == 1
        assert await nodes[0].count("quarantine") == 0
        # Both at once, many messages: each exactly one ticket, nothing quarantined.
        raws = [mail(message_id=f"<m{i}@example.com>", subject=f"s{i}") for i in range(15)]
        outcomes = await asyncio.gather(*(n.deliver(r) for r in raws for n in nodes))
        actions = sorted(o.action for o in outcomes)
        assert actions == ["duplicate"] * 15 + ["ticket"] * 15
        assert await nodes[0].count("tickets") == 16
        assert await nodes[0].count("quarantine") == 0
    finally:
        for node in nodes:
            await node.store.close()


async def test_groups_read_ahead_on_two_nodes_at_once_make_each_ticket_once(
        pg_url: str, tmp_path: Path) -> None:
    """Reading a group's stored state ahead locks its keys first, in one order on every
    node: two nodes reading overlapping groups (in opposite orders) neither deadlock
    nor both open a ticket for one mail."""
    clock = FakeClock()
    nodes = [Harness(await Store.open(pg_url, state_dir=tmp_path / f"n{i}"),
                     _pg_pipeline(clock), clock) for i in range(2)]

    async def group(node: Harness, raws: list[bytes]) -> list[str]:
        reads = [read_mail(raw, node.pipeline.reading) for raw in raws]
        async with node.store.transaction() as tx:
            await node.pipeline.read_ahead(tx, reads, IT)
            return [(await node.pipeline.handle(tx, raw, IT, read)).action
                    for raw, read in zip(raws, reads, strict=True)]

    try:
        raws = [mail(message_id=f"<g{i}@example.com>", subject=f"g{i}") for i in range(12)]
        first, second = await asyncio.gather(group(nodes[0], raws),
                                             group(nodes[1], raws[::-1]))
        assert sorted(first + second) == ["duplicate"] * 12 + ["ticket"] * 12
        assert await nodes[0].count("tickets") == 12
        assert await nodes[0].count("quarantine") == 0
    finally:
        for node in nodes:
            await node.store.close()


async def test_a_reply_racing_a_resolve_on_another_node_reopens_the_ticket(
        pg_url: str, tmp_path: Path) -> None:
    # Two nodes, two mails on one ticket at once: an agent's #resolve, the requester's
    # new question. The second decision must read the ticket as the first one left it
    # (resolved: the reply reopens it), not as it was (open: the reply would be noted on
    # a ticket that then stays resolved, and autoclose closes it over her question).
    clock = FakeClock()
    proof = {"Authentication-Results": "mx.example.com; spf=pass smtp.mailfrom=example.com; "
                                       "dmarc=pass header.from=example.com"}
    nodes = [Harness(await Store.open(pg_url, state_dir=tmp_path / f"n{i}"),
                     _pg_pipeline(clock, TrustPolicy(frozenset({"example.com"}),
                                                     "mx.example.com")), clock)
             for i in range(2)]
    try:
        await nodes[0].deliver(mail())
        clock.advance(minutes=5)
        resolve = mail("Re: [IT-1001] Laptop won't boot", sender="Alice <alice@example.com>",
                       message_id="<agent-1@example.com>", body="#resolve\nnew battery",
                       headers=proof)
        question = mail("Re: [IT-1001] Laptop won't boot", message_id="<ann-2@example.com>",
                        body="It beeps again.", headers=proof)
        async with nodes[0].store.transaction() as tx:
            await nodes[0].pipeline.handle(tx, resolve, IT)
            reply = asyncio.create_task(nodes[1].deliver(question))
            await asyncio.sleep(0.3)
            assert not reply.done()  # waits for the ticket, does not decide on its past
        assert (await reply).action == "reply"
        [(status,)] = await nodes[0].rows("SELECT status FROM tickets WHERE ref = 'IT-1001'")
        kinds = [r[0] for r in await nodes[0].rows("SELECT kind FROM events ORDER BY id")]
        assert status == "open" and kinds.index("resolved") < kinds.index("reopened")
    finally:
        for node in nodes:
            await node.store.close()


async def test_autoclose_on_another_node_does_not_close_a_ticket_a_reply_reopens(
        pg_url: str, tmp_path: Path) -> None:
    from mailgate.config.settings import ConversationConfig
    from mailgate.workers.autoclose import AutoCloser

    clock = FakeClock()
    proof = {"Authentication-Results": "mx.example.com; spf=pass smtp.mailfrom=example.com; "
                                       "dmarc=pass header.from=example.com"}
    nodes = [Harness(await Store.open(pg_url, state_dir=tmp_path / f"n{i}"),
                     _pg_pipeline(clock, TrustPolicy(frozenset({"example.com"}),
                                                     "mx.example.com")), clock)
             for i in range(2)]
    try:
        await nodes[0].deliver(mail())
        await nodes[0].deliver(mail("Re: [IT-1001] Laptop won't boot",
                                    sender="Alice <alice@example.com>",
                                    message_id="<agent-1@example.com>", body="#resolve\nDone.",
                                    headers=proof))
        clock.advance(days=5, minutes=1)  # past auto_close_after, inside the reopen window
        closer = AutoCloser(nodes[1].store, nodes[1].current(
            conversation=ConversationConfig(auto_close_after=timedelta(days=5))), clock)
        question = mail("Re: [IT-1001] Laptop won't boot", message_id="<ann-2@example.com>",
                        body="It beeps again.", headers=proof)
        async with nodes[0].store.transaction() as tx:
            await nodes[0].pipeline.handle(tx, question, IT)  # reopens, not committed yet
            closing = asyncio.create_task(closer.run_once())
            await asyncio.sleep(0.3)
        await closing
        [(status,)] = await nodes[0].rows("SELECT status FROM tickets WHERE ref = 'IT-1001'")
        assert status == "open"  # her question is not closed over
    finally:
        for node in nodes:
            await node.store.close()


async def test_an_escalation_on_another_node_skips_a_ticket_being_answered(
        pg_url: str, tmp_path: Path) -> None:
    from mailgate.workers.escalation import Escalator

    clock = FakeClock()  # Tuesday 10:00 Berlin: the first response is due at 15:00
    proof = {"Authentication-Results": "mx.example.com; spf=pass smtp.mailfrom=example.com; "
                                       "dmarc=pass header.from=example.com"}
    nodes = [Harness(await Store.open(pg_url, state_dir=tmp_path / f"n{i}"),
                     _pg_pipeline(clock, TrustPolicy(frozenset({"example.com"}),
                                                     "mx.example.com")), clock)
             for i in range(2)]
    try:
        await nodes[0].deliver(mail())
        clock.advance(hours=4)  # 14:00 Berlin: the 75 % warning is due
        escalator = Escalator(nodes[1].store, nodes[1].current(), clock, lambda: None)
        answer = mail("Re: [IT-1001] Laptop won't boot", sender="Alice <alice@example.com>",
                      message_id="<agent-1@example.com>", body="On my way.", headers=proof)
        async with nodes[0].store.transaction() as tx:
            await nodes[0].pipeline.handle(tx, answer, IT)  # meets the first response
            firing = asyncio.create_task(escalator.run_once())
            await asyncio.sleep(0.3)
        await firing
        assert await escalator.run_once() == 0
        # Answered in time: no warning about it, and nothing left due on the ticket.
        assert await nodes[0].count("outbox", "kind LIKE 'escalation-%'") == 0
        assert await nodes[0].count("tickets", "next_escalation_at IS NOT NULL "
                                               "AND next_escalation_at <= 0 + "
                                               f"{clock().timestamp()}") == 0
    finally:
        for node in nodes:
            await node.store.close()


def _outgoing(n: int) -> Outgoing:
    return Outgoing(message_id=f"out-{n}@mailgate.test", kind="ack", ticket_id=None,
                    mail_from="it-help@example.com", recipients=(f"p{n}@example.com",),
                    raw=b"Subject: x\r\n\r\nbody\r\n")


async def test_two_nodes_never_claim_one_outbox_row(pg_url: str, pg: Store) -> None:
    clock = FakeClock()
    async with pg.transaction() as tx:
        await tx.enqueue_many([_outgoing(n) for n in range(30)], clock())
    other = await Store.open(pg_url)
    try:
        # A row another transaction holds is skipped, not waited for.
        async with other.transaction() as tx:
            [(locked,)] = await tx.fetch_all(
                "SELECT id FROM outbox ORDER BY id LIMIT 1 FOR UPDATE")
            claimed = await asyncio.wait_for(pg.claim_outgoing(clock(), limit=5), 10)
            assert locked not in {row.id for row in claimed} and len(claimed) == 5
        # Both nodes claiming at once, round after round, keeping what they claimed.
        mine: dict[Store, set[int]] = {pg: {row.id for row in claimed}, other: set()}

        async def claim(store: Store) -> None:
            for row in await store.claim_outgoing(clock(), limit=4, keep=mine[store]):
                mine[store].add(row.id)

        for _ in range(5):
            await asyncio.gather(claim(pg), claim(other))
        assert not mine[pg] & mine[other]  # no row went to both
        assert len(mine[pg] | mine[other]) == 30 and mine[other]
        assert await pg.claim_outgoing(clock(), limit=100, keep=mine[pg]) == []
        # A node that dies lets go of its rows at once: the other one takes them.
        await other.close()
        taken: set[int] = set()
        async with asyncio.timeout(20):  # the server ends the closed session soon after
            while taken != mine[other]:
                got = await pg.claim_outgoing(clock(), limit=100, keep=mine[pg] | taken)
                taken |= {row.id for row in got}
                assert taken <= mine[other]  # never a row this node holds already
    finally:
        await other.close()
    # Settled rows are not handed out again; unsettled ones come back to their claimer.
    await pg.mark_sent(mine[pg], clock())
    again = await pg.claim_outgoing(clock(), limit=100)
    assert {row.id for row in again} == mine[other] == taken


async def test_rows_locked_by_a_claim_that_failed_half_way_are_claimed_again(
        pg: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # A claim locks its rows, then reads them again; if that read fails (cancelled by a
    # reload or a stop, a statement timeout) on a session that lives on, the locks must
    # still be let go at the next claim, or no node ever sends those rows.
    clock = FakeClock()
    async with pg.transaction() as tx:
        await tx.enqueue_many([_outgoing(n) for n in range(3)], clock())
    claims = pg.engine._claims  # type: ignore[attr-defined]
    real = claims.execute_fetchall

    async def failing_reread(sql: str, parameters: object = ()) -> list:
        if "ANY(CAST" in sql:
            monkeypatch.setattr(claims, "execute_fetchall", real)
            raise RuntimeError("cancelled between locking and reading")
        return await real(sql, parameters)

    monkeypatch.setattr(claims, "execute_fetchall", failing_reread)
    with pytest.raises(RuntimeError):
        await pg.claim_outgoing(clock(), limit=10)
    again = await pg.claim_outgoing(clock(), limit=10)
    assert len(again) == 3


def _with_attachment(message_id: str, data: bytes) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Ann Example <ann@example.com>"
    msg["To"] = "it-help@example.com"
    msg["Subject"] = "printer log"
    msg["Message-ID"] = message_id
    msg.set_content("see the log")
    msg.add_attachment(data, maintype="application", subtype="octet-stream",
                       filename="printer.log")
    return msg.as_bytes()


async def test_attachments_live_in_the_database(pg: Store, tmp_path: Path) -> None:
    clock = FakeClock()
    node = Harness(pg, _pg_pipeline(clock), clock)
    data = bytes(range(256)) * 40
    outcome = await node.deliver(_with_attachment("<att-1@example.com>", data))
    assert outcome.action == "ticket"
    await node.deliver(_with_attachment("<att-2@example.com>", data))  # same file again
    digest = hashlib.sha256(data).hexdigest()
    assert await node.rows("SELECT sha256, size FROM attachment_blobs") == [(digest, len(data))]
    assert await node.count("attachments", "sha256 IS NOT NULL") == 2
    files = pg.attachments()
    assert files is not None
    assert await asyncio.to_thread(files.read, digest) == data
    assert not (tmp_path / "state" / "attachments").exists()  # nothing on this node's disk


# --- migrate --to --------------------------------------------------------------------------


def _config(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mailgate.toml"
    path.write_text(f'[state]\ndir = "state"\n[directory]\npath = "{_directory_file()}"\n'
                    f'[outbox]\ndir = "outbox"\n')
    return path


def _directory_file() -> Path:
    from tests.factories import EXAMPLE_DIRECTORY

    return EXAMPLE_DIRECTORY


async def _sqlite_harness(folder: Path) -> Harness:
    """The pipeline on an SQLite file in FOLDER/state, whichever engine the suite runs."""
    clock = FakeClock()
    store = await Store.open(folder / "state" / "mailgate.sqlite3")
    return Harness(store, _pg_pipeline(clock), clock)


async def _sqlite_installation(folder: Path) -> Harness:
    """An SQLite database made by the real pipeline: tickets, replies, attachments."""
    h = await _sqlite_harness(folder)
    await h.deliver(mail())
    await h.deliver(mail(message_id="<two@example.com>", subject="VPN down"))
    await h.deliver(_with_attachment("<att@example.com>", b"log line\n" * 500))
    h.clock.advance(minutes=5)
    await h.deliver(mail(message_id="<two@example.com>", subject="VPN down"))  # redelivery
    await h.deliver(b"not a mail at all")  # quarantined
    return h


def _sqlite_counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        counts = {t: db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
    db.close()
    return counts


async def test_migrate_to_copies_every_table_and_verifies_the_counts(
        pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mailgate.storage.postgres import transfer

    monkeypatch.setattr(transfer, "CHUNK", 2)  # every table in several chunks
    config = _config(tmp_path)
    h = await _sqlite_installation(tmp_path)
    await h.store.close()
    database = tmp_path / "state" / "mailgate.sqlite3"
    want = _sqlite_counts(database)
    assert want["tickets"] == 3 and want["attachments"] == 1 and want["quarantine"] == 1
    capsys.readouterr()  # the pipeline's log lines so far
    assert await asyncio.to_thread(
        main, ["--config", str(config), "migrate", "--to", pg_url, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tables"] == want
    assert report["attachment_blobs"] == 1 and report["missing_files"] == []

    copied = await Store.open(pg_url, state_dir=tmp_path / "pg-state")
    try:
        for table, count in want.items():
            [(have,)] = await copied.fetch_all(f'SELECT COUNT(*) FROM "{table}"')
            assert have == count, table
        # Analysed at once: the planner knows the copied rows (not an empty table).
        unanalysed = await copied.fetch_all(
            "SELECT relname FROM pg_stat_user_tables WHERE last_analyze IS NULL "
            "AND relname IN (" + ",".join("?" * len(want)) + ")", list(want))
        assert unanalysed == []
        # The copy is a working database: numbers and ids go on after the copied ones.
        clock = FakeClock(h.clock() + timedelta(minutes=1))
        node = Harness(copied, _pg_pipeline(clock), clock)
        outcome = await node.deliver(mail(message_id="<after@example.com>", subject="new"))
        assert outcome.tickets == ("IT-1004",)
        again = await node.deliver(mail())  # a message the SQLite copy had seen
        assert again.action == "duplicate"
    finally:
        await copied.close()

    # A second run refuses: the target is not empty, and it stays as it is.
    assert await asyncio.to_thread(
        main, ["--config", str(config), "migrate", "--to", pg_url]) == 1
    assert "not empty" in capsys.readouterr().err


async def test_a_failed_copy_leaves_the_target_empty(
        pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    h = await _sqlite_installation(tmp_path)
    await h.store.close()
    # A row PostgreSQL refuses (SQLite keeps text in an INTEGER column) fails the copy
    # halfway, after the tables before it were copied.
    with sqlite3.connect(tmp_path / "state" / "mailgate.sqlite3") as db:
        db.execute("UPDATE messages SET size = 'big' WHERE id = (SELECT max(id) FROM messages)")
    db.close()
    assert await asyncio.to_thread(
        main, ["--config", str(config), "migrate", "--to", pg_url]) == 1
    assert "holds no copied row" in capsys.readouterr().err
    with psycopg.connect(pg_url) as conn:
        counts = [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                  for t in ("tickets", "messages", "events", "attachment_blobs")]
    assert counts == [0, 0, 0, 0]


async def test_the_password_is_never_printed_or_logged(
        postgres_server: PostgresServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    secret = "pw-9f8e7d-not-for-eyes"
    name = postgres_server.create_database().rsplit("/", 1)[1]
    postgres_server.sql(f"CREATE ROLE mg_user LOGIN PASSWORD '{secret}'")
    postgres_server.sql(f'ALTER DATABASE "{name}" OWNER TO mg_user')
    url = f"postgresql://mg_user@{postgres_server.host}:{postgres_server.port}/{name}"
    folder = tmp_path / "cfg"
    config = _config(folder)
    (folder / "db.password").write_text(secret + "\n")
    config.write_text(config.read_text() + f'[database]\nurl = "{url}"\n'
                      f'password_file = "db.password"\n')
    assert await asyncio.to_thread(main, ["--config", str(config), "check"]) == 0
    capsys.readouterr()
    assert await asyncio.to_thread(
        main, ["--config", str(config), "check", "--connect"]) == 0
    out = capsys.readouterr()
    assert f"database: OK: {url}, no TLS, schema 0, " in out.out  # nothing migrated yet
    assert secret not in out.out + out.err
    from mailgate.config.settings import load_config

    loaded = load_config(config)
    assert loaded.database_server is not None
    assert secret not in repr(loaded) and loaded.store_password == secret
    store = await Store.open(loaded.store_target, password=loaded.store_password)
    assert secret not in store.describe()
    await store.close()
    # The admin commands read it and print neither it nor a URL holding it.
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["--config", str(config), "tickets"]) == 0
    # A database that is not there: the error names the server, never the password.
    config.write_text(config.read_text().replace(f"/{name}\"", "/no_such_db\""))
    assert await asyncio.to_thread(main, ["--config", str(config), "tickets"]) != 0
    out = capsys.readouterr()
    assert "no_such_db" in out.err
    assert secret not in out.out + out.err
    # migrate --to with the password in the URL: printed masked.
    lite = tmp_path / "lite"
    lite_config = _config(lite)
    h = await _sqlite_harness(lite)
    await h.deliver(mail())
    await h.store.close()
    capsys.readouterr()
    with_password = url.replace("mg_user@", f"mg_user:{secret}@")
    assert await asyncio.to_thread(
        main, ["--config", str(lite_config), "migrate", "--to", with_password]) == 0
    out = capsys.readouterr()
    assert secret not in out.out + out.err and "mg_user:***@" in out.out


async def test_database_url_problems_are_named_by_check(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str],
                                                        ) -> None:
    config = _config(tmp_path)
    base = config.read_text()
    for table, problem in (
            ('url = "mysql://db/x"', "expected a postgresql:// URL"),
            ('url = "postgresql://u:pw@db/x"', "inline passwords are not accepted"),
            ('url = "postgresql://u@db/x?password=pw@"', "inline passwords are not accepted"),
            ('url = "postgresql://u@db/x"\npassword = "pw"', "inline passwords"),
            ('url = "postgresql://u@db"', "needs a host and a database name")):
        config.write_text(base + f"[database]\n{table}\n")
        assert await asyncio.to_thread(main, ["--config", str(config), "check"]) == 1
        err = capsys.readouterr()
        assert problem in err.out + err.err, table
        assert "pw@" not in err.out + err.err


async def test_the_sweep_deletes_only_old_blobs_no_row_names(pg: Store) -> None:
    clock = FakeClock()
    node = Harness(pg, _pg_pipeline(clock), clock)
    await node.deliver(_with_attachment("<kept@example.com>", b"named content"))
    blobs = pg.attachments()
    assert blobs is not None
    orphan = await asyncio.to_thread(blobs.put, b"a crash left me behind")
    sweeper = AttachmentSweeper(pg, blobs)  # type: ignore[arg-type]
    assert (await sweeper.run_once()).files == 0  # too young to tell
    sweeper.clock = lambda: time.time() + 2 * 86400
    swept = await sweeper.run_once()
    assert (swept.files, swept.bytes) == (1, len(b"a crash left me behind"))
    left = [r[0] for r in await node.rows("SELECT sha256 FROM attachment_blobs")]
    assert left == [hashlib.sha256(b"named content").hexdigest()] and orphan not in left


# --- psycopg's errors by what they mean to callers (storage/errors.py) ---------------------
# The engine registers them when it is imported: a daemon on SQLite never imports psycopg.


def _raising(sqlstate: str) -> str:
    return f"DO $$ BEGIN RAISE EXCEPTION 'raised by the test' USING ERRCODE = '{sqlstate}'; END $$"


@pytest.mark.parametrize("sqlstate", ["40001", "40P01", "25006", "55P03"])
async def test_failures_another_try_cures_are_temporary(pg: Store, sqlstate: str) -> None:
    """A serialization failure, a deadlock, a read-only standby, a lock not granted."""
    with pytest.raises(store_errors.TEMPORARY):
        await pg.fetch_all(_raising(sqlstate))


async def test_a_constraint_violation_is_a_store_error_but_not_temporary(pg: Store) -> None:
    with pytest.raises(store_errors.STORE_ERRORS) as raised:
        await pg.fetch_all(_raising("23505"))
    assert not isinstance(raised.value, store_errors.TEMPORARY)


async def test_a_worker_retries_a_round_whose_connection_the_server_cut(
        pg: Store, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker loop (periodic.repeat) takes a connection the server terminated as a
    retry, not a failure, and its next round runs on a new connection."""
    # The server's goodbye not yet read when the round starts (else it is, and the round
    # works at once: test_a_connection_the_server_closed_while_idle_is_renewed_before_use)
    monkeypatch.setattr(PgConnection, "_hung_up", lambda self: False)
    [(pid,)] = await pg.fetch_all("SELECT pg_backend_pid()")
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    outcomes: list[str] = []
    wake, done = asyncio.Event(), asyncio.Event()

    async def run_once() -> None:
        try:
            await pg.fetch_all("SELECT 1")
        except Exception as exc:
            outcomes.append(type(exc).__name__)
            wake.set()  # skip the backoff
            raise
        outcomes.append("ok")
        done.set()

    with capture_logs() as logs:
        # A logger another test already used may be cached with that test's setup.
        monkeypatch.setattr(periodic, "log", structlog.get_logger("mailgate.workers.periodic"))
        worker = asyncio.create_task(repeat("test", run_once, wake, every(3600)))
        async with asyncio.timeout(10):
            await done.wait()
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
    assert outcomes == ["AdminShutdown", "ok"]
    assert [entry["event"] for entry in logs] == ["test.retry"]


def _terminate(url: str, pid: int, wait: bool = False) -> None:
    """End one session as a restart does; with WAIT, until its process is gone (its
    goodbye and hang-up sent)."""
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 10
        while wait and admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                     (pid,)).fetchone():
            assert time.monotonic() < deadline
            time.sleep(0.02)


async def test_a_connection_the_server_closed_while_idle_is_renewed_before_use(
        pg: Store, pg_url: str) -> None:
    """The writer, the reader and the claims connection: each, closed by the server while
    idle, is opened anew by the next use, which works at once."""
    engine = pg.engine
    assert isinstance(engine, PostgresEngine)
    await engine.claim_outgoing("id", 0.0, 1, set())  # opens the claims connection
    pids = [(await conn.execute_fetchall("SELECT pg_backend_pid()"))[0][0]
            for conn in (pg.conn, await pg.reader(), engine._claims)]
    for pid in pids:
        await asyncio.to_thread(_terminate, pg_url, pid, True)
    async with pg.transaction() as tx:
        await tx.execute("INSERT INTO counters (prefix, next_number) VALUES ('x', 1)")
    assert await pg.read_committed("SELECT prefix FROM counters") == [("x",)]
    assert await engine.claim_outgoing("id", 0.0, 1, set()) == []
    renewed = [(await conn.execute_fetchall("SELECT pg_backend_pid()"))[0][0]
               for conn in (pg.conn, await pg.reader(), engine._claims)]
    assert not set(renewed) & set(pids)


async def test_a_read_between_transactions_renews_a_connection_the_server_cut(
        pg: Store, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read outside any transaction on the writer connection (a mailbox's position) is
    opened anew once the server cut it: when the cut was not seen before (its goodbye
    not arrived yet), the first read fails on it, the next works -- not "the connection is
    closed" until some transaction happens to renew it."""
    await pg.record_mailbox_state("it", "idle", None, FakeClock()())
    monkeypatch.setattr(PgConnection, "_hung_up", lambda self: False)
    [(pid,)] = await pg.fetch_all("SELECT pg_backend_pid()")
    await asyncio.to_thread(_terminate, pg_url, pid, True)
    with pytest.raises(store_errors.TEMPORARY):
        await pg.mailbox_position("it")
    assert await pg.mailbox_position("it") == (None, 0)
    [(renewed,)] = await pg.fetch_all("SELECT pg_backend_pid()")
    assert renewed != pid


async def test_a_transaction_the_server_cut_is_not_continued_on_a_new_connection(
        pg: Store, pg_url: str) -> None:
    """Inside a transaction a lost connection is never renewed: the statements after the
    cut would commit on their own, without the ones before it. The transaction fails
    with the cut's own error (not a failed ROLLBACK's), and the next one runs."""
    with pytest.raises(store_errors.TEMPORARY) as raised:
        async with pg.transaction() as tx:
            await tx.execute("INSERT INTO counters (prefix, next_number) VALUES ('cut', 1)")
            [(pid,)] = await pg.conn.execute_fetchall("SELECT pg_backend_pid()")
            await asyncio.to_thread(_terminate, pg_url, pid, True)
            await tx.execute("INSERT INTO counters (prefix, next_number) VALUES ('after', 1)")
    assert isinstance(raised.value, psycopg.errors.AdminShutdown)
    async with pg.transaction() as tx:
        await tx.execute("INSERT INTO counters (prefix, next_number) VALUES ('next', 1)")
    rows = await pg.fetch_all(
        "SELECT prefix FROM counters WHERE prefix IN ('cut', 'after', 'next')")
    assert rows == [("next",)]


async def test_connections_past_descriptor_1024_are_kept_and_renewed_alike(
        pg_url: str, tmp_path: Path) -> None:
    """The check for a server's hang-up works on any descriptor (select() refuses those
    past 1024, which a daemon with many SMTP clients reaches): an open connection stays,
    one the server closed is renewed."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        pytest.skip(f"the descriptor limit is {soft}")
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        store = await Store.open(pg_url, state_dir=tmp_path / "state")
        try:
            assert store.engine.conn.raw.pgconn.socket > 1024  # type: ignore[attr-defined]
            pids = [(await store.fetch_all("SELECT pg_backend_pid()"))[0][0] for _ in range(3)]
            assert len(set(pids)) == 1  # not reconnected for nothing
            await asyncio.to_thread(_terminate, pg_url, pids[0], True)
            [(renewed,)] = await store.fetch_all("SELECT pg_backend_pid()")
            assert renewed != pids[0]
        finally:
            await store.close()
    finally:
        for fd in filler:
            os.close(fd)
