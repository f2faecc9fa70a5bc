"""The pipeline on a real SQLite database, without mail servers."""

from __future__ import annotations

import email
import os
import stat
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailgate.intake import pipeline as pipeline_module
from mailgate.intake.pipeline import Outcome
from mailgate.intake.read import read_mail
from mailgate.outbound import queued as queued_module
from tests.factories import FACILITIES, IT, Harness, harness, mail
from tests.harness import database


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    built = await harness(tmp_path)
    yield built
    await built.store.close()


async def test_new_request_becomes_ticket_with_one_ack(h: Harness) -> None:
    outcome = await h.deliver(mail())
    assert outcome.action == "ticket"
    assert outcome.tickets == ("IT-1001",)
    assert outcome.acknowledged
    [(raw,)] = await h.rows("SELECT raw FROM outbox WHERE kind = 'ack'")
    ack = email.message_from_bytes(raw)
    assert ack["Subject"] == "[IT-1001] Re: Laptop won't boot"
    assert ack["To"] == "ann@example.com"
    assert ack["From"] == "IT Service Desk <it-help@example.com>"
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["In-Reply-To"] == "<req-1@example.com>"
    assert "<req-1@example.com>" in ack["References"]
    text = ack.get_payload()[0].get_payload(decode=True).decode()
    assert "IT-1001" in text and "4 business hours" in text


async def test_ticket_numbers_count_up_per_prefix(h: Harness) -> None:
    first = await h.deliver(mail(message_id="<a@x.example>"))
    second = await h.deliver(mail(message_id="<b@x.example>"))
    other = await h.deliver(mail(message_id="<c@x.example>", to="facilities@example.com"),
                            FACILITIES)
    assert (first.tickets, second.tickets, other.tickets) == (
        ("IT-1001",), ("IT-1002",), ("FAC-1001",))


async def test_same_message_twice_is_one_ticket(h: Harness) -> None:
    await h.deliver(mail())
    again = await h.deliver(mail())
    assert again.action == "duplicate"
    assert await h.count("tickets") == 1
    assert await h.count("outbox", "kind = 'ack'") == 1


async def test_message_without_message_id_is_deduplicated_by_content(h: Harness) -> None:
    raw = mail(message_id=None)
    assert (await h.deliver(raw)).action == "ticket"
    assert (await h.deliver(raw)).action == "duplicate"
    assert await h.count("tickets") == 1


async def test_two_addresses_of_one_department_make_one_ticket(h: Harness) -> None:
    raw = mail(to="it-help@example.com", cc="helpdesk@example.com")
    outcome = await h.deliver(raw)
    assert outcome.tickets == ("IT-1001",)
    assert await h.count("tickets") == 1


async def test_two_departments_get_linked_tickets_and_one_ack(h: Harness) -> None:
    raw = mail(to="it-help@example.com", cc="facilities@example.com")
    outcome = await h.deliver(raw)
    assert outcome.tickets == ("IT-1001", "FAC-1001")
    # The facilities mailbox receives the same message: nothing new happens.
    assert (await h.deliver(raw, FACILITIES)).action == "duplicate"
    [(raw_ack,)] = await h.rows("SELECT raw FROM outbox WHERE kind = 'ack'")
    ack = email.message_from_bytes(raw_ack)
    assert ack["Subject"] == "[IT-1001] [FAC-1001] Re: Laptop won't boot"
    assert await h.count("ticket_links") == 2


async def test_bcc_copy_in_another_department_mailbox_opens_its_ticket(h: Harness) -> None:
    raw = mail(to="it-help@example.com")  # facilities was Bcc'd: not in the headers
    await h.deliver(raw, IT)
    outcome = await h.deliver(raw, FACILITIES)
    assert outcome.tickets == ("FAC-1001",)


async def test_reply_with_subject_tag_threads(h: Harness) -> None:
    await h.deliver(mail())
    reply = mail("Re: [IT-1001] Laptop won't boot", message_id="<reply-1@example.com>",
                 body="It works again after a reboot.")
    outcome = await h.deliver(reply)
    assert outcome.action == "reply"
    assert outcome.tickets == ("IT-1001",)
    assert await h.count("tickets") == 1
    assert await h.count("outbox", "kind = 'ack'") == 1  # replies are not acknowledged again


async def test_reply_by_in_reply_to_our_ack_threads(h: Harness) -> None:
    await h.deliver(mail())
    [(ack_id,)] = await h.rows("SELECT message_id FROM outbox WHERE kind = 'ack'")
    reply = mail("Re: Laptop", message_id="<reply-2@example.com>",
                 headers={"In-Reply-To": f"<{ack_id}>"})
    assert (await h.deliver(reply)).tickets == ("IT-1001",)


async def test_reply_by_references_to_the_request_threads(h: Harness) -> None:
    await h.deliver(mail())
    reply = mail("more info", message_id="<reply-3@example.com>",
                 headers={"References": "<req-1@example.com>"})
    assert (await h.deliver(reply)).tickets == ("IT-1001",)


async def test_unknown_tag_does_not_thread(h: Harness) -> None:
    outcome = await h.deliver(mail("Re: [IT-4242] old thing"))
    assert outcome.action == "ticket"


async def test_auto_reply_gets_no_ticket_and_no_ack(h: Harness) -> None:
    outcome = await h.deliver(mail("Out of Office", headers={"Auto-Submitted": "auto-replied"}))
    assert outcome.action == "quarantined"
    assert "auto_reply" in outcome.reason
    assert await h.count("tickets") == 0
    assert await h.count("outbox") == 0


async def test_auto_reply_to_our_ack_is_noted_on_the_ticket(h: Harness) -> None:
    await h.deliver(mail())
    ooo = mail("Automatic reply: [IT-1001] Re: Laptop", message_id="<ooo@example.com>",
               headers={"Auto-Submitted": "auto-replied"})
    outcome = await h.deliver(ooo)
    assert outcome.action == "reply"
    assert await h.count("events", "kind = 'auto_reply'") == 1
    assert await h.count("outbox", "kind = 'ack'") == 1


async def test_list_mail_is_ticketed_but_not_acknowledged(h: Harness) -> None:
    outcome = await h.deliver(mail("Newsletter", headers={"List-Id": "<news.example.com>"}))
    assert outcome.action == "ticket"
    assert not outcome.acknowledged
    assert await h.count("outbox", "kind = 'ack'") == 0
    assert await h.count("events", "kind = 'ack_suppressed'") == 1


async def test_mail_from_our_own_address_is_never_answered(h: Harness) -> None:
    outcome = await h.deliver(mail(sender="facilities@example.com"))
    assert outcome.action == "quarantined"
    assert await h.count("outbox") == 0


async def test_ack_rate_limit_per_sender(tmp_path: Path) -> None:
    h = await harness(tmp_path, acks_per_hour=2)
    try:
        outcomes = [await h.deliver(mail(f"request {i}", message_id=f"<r{i}@x.example>"))
                    for i in range(4)]
        assert [o.acknowledged for o in outcomes] == [True, True, False, False]
        assert await h.count("tickets") == 4
        h.clock.advance(hours=1, seconds=1)
        later = await h.deliver(mail("later", message_id="<r9@x.example>"))
        assert later.acknowledged
    finally:
        await h.store.close()


async def test_mail_without_sender_is_quarantined_with_raw_bytes(h: Harness) -> None:
    raw = b"To: it-help@example.com\r\nSubject: who am I\r\n\r\nbody\r\n"
    outcome = await h.deliver(raw)
    assert outcome.action == "quarantined"
    [(reason, stored)] = await h.rows("SELECT reason, raw FROM quarantine")
    assert "From" in reason
    assert stored == raw


async def test_quarantining_the_same_message_twice_keeps_one_entry(h: Harness) -> None:
    raw = b"To: it-help@example.com\r\nSubject: who am I\r\n\r\nbody\r\n"
    await h.deliver(raw)
    await h.deliver(raw)
    assert await h.count("quarantine") == 1


async def test_a_failing_message_rolls_back_only_itself(h: Harness,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    async def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    async with h.store.transaction() as tx:
        ok = await h.pipeline.handle(tx, mail(message_id="<ok@x.example>"), IT)
        # The mail is written after the message, its receipts and its ticket.
        monkeypatch.setattr(h.pipeline.mailer, "write", explode)
        bad = await h.pipeline.handle(tx, mail(message_id="<bad@x.example>"), IT)
    assert ok.action == "ticket"
    assert bad.action == "quarantined" and "boom" in bad.reason
    assert await h.count("tickets") == 1  # the failed one's ticket was rolled back
    assert await h.count("receipts") == 1
    assert await h.count("quarantine") == 1


async def refuse_outgoing_mail_to(h: Harness, address: str) -> None:
    """A database that refuses to queue mail to `address`: the write that fails is the
    message's last but one (its events come after), one a pipeline does not wait for."""
    if h.store.engine.name == "sqlite":
        await h.store.conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON outbox "
            f"WHEN NEW.recipients LIKE '%{address}%' "
            "BEGIN SELECT RAISE(ABORT, 'refused by the database'); END")
        return
    await h.store.conn.run_script(f"""
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.recipients LIKE '%{address}%' THEN
                RAISE EXCEPTION 'refused by the database';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON outbox
            FOR EACH ROW EXECUTE FUNCTION refuse()""")


async def test_a_write_the_database_refuses_undoes_its_own_message_only(h: Harness) -> None:
    """On PostgreSQL a message's writes whose results are not needed are not waited for
    one by one; a failure among them is still this message's, not the next one's."""
    await refuse_outgoing_mail_to(h, "zoe.q@example.com")
    async with h.store.transaction() as tx:
        before = await h.pipeline.handle(tx, mail(message_id="<a@x.example>"), IT)
        refused = await h.pipeline.handle(tx, mail(
            "Printer jammed", sender="Zoe Q <zoe.q@example.com>", message_id="<b@x.example>"), IT)
        after = await h.pipeline.handle(tx, mail(
            "VPN down", sender="Cy <cy@example.com>", message_id="<c@x.example>"), IT)
    assert (before.action, after.action) == ("ticket", "ticket")
    assert refused.action == "quarantined" and "refused by the database" in refused.reason
    assert await h.count("tickets") == 2
    assert await h.count("messages") == 2  # the refused message's rows were undone
    assert await h.count("receipts") == 2
    assert await h.count("outbox", "ticket NOT IN (SELECT id FROM tickets)") == 0
    assert await h.count("quarantine") == 1


async def test_header_injection_in_subject_cannot_add_headers(h: Harness) -> None:
    evil = mail("=?utf-8?q?hi=0D=0ABcc=3A_victim=40example=2Ecom?=")
    await h.deliver(evil)
    [(raw,)] = await h.rows("SELECT raw FROM outbox WHERE kind = 'ack'")
    ack = email.message_from_bytes(raw)
    assert ack["Bcc"] is None
    assert "\n" not in ack["Subject"]


async def test_template_syntax_in_mail_is_rendered_literally(h: Harness) -> None:
    subject = "{{ 7*7 }} {% if true %}x{% endif %}"
    await h.deliver(mail(subject, sender="{{ config }} <a@b.example>"))
    [(raw,)] = await h.rows("SELECT raw FROM outbox WHERE kind = 'ack'")
    text = email.message_from_bytes(raw).get_payload()[0].get_payload(decode=True).decode()
    assert "{{ 7*7 }}" in text and "49" not in text


@pytest.mark.sqlite_only("the database is a file with private modes on SQLite")
async def test_database_is_private(h: Harness) -> None:
    mode = os.stat(h.store.path).st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(h.store.path.parent).st_mode) == 0o700


def dsn_for(message_id: str) -> bytes:
    """A delivery status notification about the mail with this Message-ID."""
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.com>\r\n"
        "To: it-help@example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <dsn-1@mx.example.com>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n'
        "\r\n--b\r\nContent-Type: text/plain\r\n\r\nI could not deliver your mail.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.com\r\n\r\n"
        "Final-Recipient: rfc822; ann@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: it-help@example.com\r\nMessage-ID: <{message_id}>\r\n"
        "Subject: [IT-1001] Re: Laptop won't boot\r\n\r\n--b--\r\n"
    ).encode()


async def test_bounce_of_our_ack_is_recorded_on_its_ticket(h: Harness) -> None:
    await h.deliver(mail())
    [(ack_id,)] = await h.rows("SELECT message_id FROM outbox WHERE kind = 'ack'")
    outcome = await h.deliver(dsn_for(ack_id))
    assert outcome.action == "reply" and outcome.tickets == ("IT-1001",)
    assert await h.count("events", "kind = 'bounce'") == 1
    assert await h.count("tickets") == 1
    assert await h.count("outbox", "kind = 'ack'") == 1


async def test_bounce_about_unknown_mail_is_quarantined_not_ticketed(h: Harness) -> None:
    outcome = await h.deliver(dsn_for("unknown@elsewhere.example"))
    assert outcome.action == "quarantined" and "bounce" in outcome.reason
    assert await h.count("tickets") == 0


async def test_two_instances_pointed_at_each_other_exchange_one_message(tmp_path: Path) -> None:
    a = await harness(tmp_path / "a")
    b = await harness(tmp_path / "b", instance="mailgate-other")
    try:
        # A user of instance A writes to A; the requester address is B's department address.
        await a.deliver(mail(sender="facilities@example.com", to="it-help@example.com"))
        # Instance A never answers a department address, its own included:
        assert await a.count("outbox", "kind = 'ack'") == 0
        # A request from an outside person is acknowledged by A; B receives that ack.
        await a.deliver(mail(message_id="<p@x.example>", sender="person@example.org"))
        [(ack,)] = await a.rows("SELECT raw FROM outbox WHERE kind = 'ack'")
        outcome = await b.deliver(ack)
        assert outcome.action == "quarantined"  # automatic mail matching no ticket
        assert "auto_reply" in outcome.reason or "own" in outcome.reason
        assert await b.count("outbox", "kind = 'ack'") == 0  # ... and never answered
    finally:
        await a.store.close()
        await b.store.close()


async def test_a_redelivery_is_logged_counted_and_shown(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    import structlog
    from structlog.testing import capture_logs

    from mailgate.intake import pipeline
    from mailgate.storage import history

    await h.deliver(mail())
    h.clock.advance(minutes=5)
    with capture_logs() as logged:
        # A logger another test already used may be cached with that test's setup.
        monkeypatch.setattr(pipeline, "log", structlog.get_logger("mailgate.intake.pipeline"))
        assert (await h.deliver(mail())).action == "duplicate"
        assert (await h.deliver(mail(), FACILITIES)).action == "ticket"  # another desk: new
        assert (await h.deliver(mail(), FACILITIES)).action == "duplicate"
    duplicates = [e for e in logged if e["event"] == "message.duplicate"]
    assert [e["message_id"] for e in duplicates] == ["req-1@example.com"] * 2
    assert await h.rows("SELECT deliveries FROM messages") == [(3,)]
    story = await history.load(h.store, "IT-1001", h.clock())
    assert story is not None
    [created] = [e for e in story["events"] if e["kind"] == "created"]
    assert created["message"]["deliveries"] == 3
    assert any("arrived 3 times, last" in line for line in history.lines(story))


async def test_bulk_mail_is_ticketed_or_ignored_as_configured(tmp_path: Path) -> None:
    from mailgate.core.render import Renderer
    from mailgate.intake.pipeline import Pipeline, PipelineSettings
    from mailgate.storage.store import Store
    from tests.factories import TEMPLATES, FakeClock, example_directory

    digest = mail("Digest, Vol 12", message_id="<digest@lists.example.com>",
                  headers={"List-Id": "<staff.lists.example.com>"})
    for setting, action, tickets in (("ticket", "ticket", 1), ("ignore", "ignored", 0)):
        store = await Store.open(database(tmp_path / setting))
        pipeline = Pipeline(example_directory(), Renderer(TEMPLATES),
                            PipelineSettings(bulk_mail=setting), FakeClock())
        h = Harness(store, pipeline, FakeClock())
        try:
            assert (await h.deliver(digest)).action == action
            assert await h.count("tickets") == tickets
            assert await h.count("outbox", "kind = 'ack'") == 0  # never acknowledged
            assert (await h.deliver(digest)).action == "duplicate"  # kept either way
        finally:
            await store.close()


async def deliver_read_ahead(h: Harness, raws: list[bytes]) -> list[Outcome]:
    """A group of mail as the IMAP intake hands it over: read by a reading process,
    the group's stored state read ahead, then each mail handled in one transaction."""
    reads = [read_mail(raw, h.pipeline.reading) for raw in raws]
    async with h.store.transaction() as tx:
        await h.pipeline.read_ahead(tx, reads, IT)
        return [await h.pipeline.handle(tx, raw, IT, read) for raw, read in zip(raws, reads,
                                                                                 strict=True)]


async def test_a_group_read_ahead_is_handled_as_without(h: Harness) -> None:
    await h.deliver(mail("known", message_id="<known@x.example>"))
    outcomes = await deliver_read_ahead(h, [
        mail("known", message_id="<known@x.example>"),  # stored before the group
        mail("first", message_id="<a@x.example>", sender="Bo <bo@example.com>"),
        mail("first", message_id="<a@x.example>", sender="Bo <bo@example.com>"),  # again
        mail("second", message_id="<b@x.example>", sender="Cy <cy@example.com>")])
    assert [o.action for o in outcomes] == ["duplicate", "ticket", "duplicate", "ticket"]
    assert await h.count("tickets") == 3
    assert await h.count("outbox", "kind = 'ack'") == 3


async def test_mail_queued_in_the_group_counts_against_a_budget_read_ahead(
        tmp_path: Path) -> None:
    """Budgets read before the group are stale once the group queues mail on them: the
    third request from one sender is not acknowledged, as without reading ahead."""
    h = await harness(tmp_path, acks_per_hour=2)
    try:
        await h.deliver(mail("before", message_id="<r0@x.example>"))
        outcomes = await deliver_read_ahead(h, [
            mail(f"request {i}", message_id=f"<r{i}@x.example>") for i in range(1, 4)])
        assert [o.acknowledged for o in outcomes] == [True, False, False]
        assert await h.count("tickets") == 4
    finally:
        await h.store.close()


async def test_a_read_ahead_answers_each_mail_once(h: Harness) -> None:
    raws = [mail(f"request {i}", message_id=f"<r{i}@x.example>",
                 sender=f"P{i} <p{i}@example.com>") for i in range(3)]
    reads = [read_mail(raw, h.pipeline.reading) for raw in raws]
    async with h.store.transaction() as tx:
        await h.pipeline.read_ahead(tx, reads, IT)
        assert tx.ahead is not None
        for raw, read in zip(raws, reads, strict=True):
            assert (await h.pipeline.handle(tx, raw, IT, read)).action == "ticket"
        assert tx.ahead.given == {read.msg.dedupe_key for read in reads if read.msg}


async def test_mail_that_breaks_routing_is_left_to_handle(h: Harness,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading ahead never stops a group: mail it cannot work out is read by handle(),
    which quarantines it if it fails there too."""
    raws = [mail("fine", message_id="<fine@x.example>"),
            mail("odd", message_id="<odd@x.example>", sender="Od <od@example.com>")]
    reads = [read_mail(raw, h.pipeline.reading) for raw in raws]
    real = pipeline_module.routes_for

    def fragile(msg: object, *args: object) -> object:
        if getattr(msg, "subject", "") == "odd":
            raise RuntimeError("routing broke")
        return real(msg, *args)

    monkeypatch.setattr(pipeline_module, "routes_for", fragile)
    async with h.store.transaction() as tx:
        await h.pipeline.read_ahead(tx, reads, IT)
        outcomes = [await h.pipeline.handle(tx, raw, IT, read)
                    for raw, read in zip(raws, reads, strict=True)]
    assert [o.action for o in outcomes] == ["ticket", "quarantined"]


async def test_mail_past_a_small_size_is_read_off_the_event_loop(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile shape reads at up to seconds a MB: only small mail is parsed on the
    event loop's thread (pushed mail, and IMAP mail not read ahead)."""
    read_on: list[str] = []
    real_parse = pipeline_module.parse

    def parse(raw: bytes, max_body_chars: int) -> object:
        read_on.append(threading.current_thread().name)
        return real_parse(raw, max_body_chars)

    monkeypatch.setattr(pipeline_module, "parse", parse)
    small = mail("Small", message_id="<small@x>")
    html = b"Content-Type: text/html\r\n\r\n" + b"<" * (pipeline_module.PARSE_INLINE_UP_TO + 1)
    bigger = mail("Bigger", message_id="<bigger@x>").replace(
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n", html)
    assert (await h.deliver(small)).tickets and (await h.deliver(bigger)).tickets
    loop = threading.current_thread().name
    assert read_on[0] == loop and read_on[1] != loop, read_on


async def test_the_parts_of_mail_past_a_small_size_are_read_off_the_event_loop(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Attachments are read twice more after parse (to store, to relay to the team): for
    pushed mail those readings ran on the event loop whatever the size, and 800 kB of
    empty parts (--b lines) stopped it for 2 s."""
    read_on: dict[str, list[str]] = {"extract": [], "relay_parts": []}

    def recording(module: object, name: str) -> None:
        real = getattr(module, name)

        def record(*args: object) -> object:
            read_on[name].append(threading.current_thread().name)
            return real(*args)
        monkeypatch.setattr(module, name, record)

    recording(pipeline_module, "extract")
    recording(queued_module, "relay_parts")
    head = b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
    part = (b'--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--b\r\n'
            b'Content-Type: application/pdf; name="a.pdf"\r\n\r\n%PDF-1.4\r\n')
    small = mail("Small", message_id="<small@x>").replace(
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n", head + part) + b"--b--\r\n"
    empty = b"--b\r\n\r\n" * (pipeline_module.PARSE_INLINE_UP_TO // 6)
    bigger = small.replace(b"<small@x>", b"<bigger@x>").replace(b"--b--", empty + b"--b--")
    assert (await h.deliver(small)).tickets and (await h.deliver(bigger)).tickets
    loop = threading.current_thread().name
    for name, threads in read_on.items():
        assert threads[0] == loop and threads[-1] != loop, (name, threads)
