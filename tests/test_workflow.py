"""Working a ticket by email, on the pipeline and a real SQLite database (no servers)."""

from __future__ import annotations

import base64
import email
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from email.message import Message
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from mailgate.config.settings import ConversationConfig
from mailgate.core.render import Renderer
from mailgate.core.trust import TrustPolicy
from mailgate.intake.pipeline import Pipeline, PipelineSettings
from mailgate.storage.store import Store
from tests.factories import (
    FACILITIES,
    IT,
    TEMPLATES,
    TEST_KEYS,
    FakeClock,
    Harness,
    example_directory,
    mail,
)
from tests.harness import database

A_R = "Authentication-Results"


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    built = await make(tmp_path)
    yield built
    await built.store.close()


async def make(tmp_path: Path, **settings: object) -> Harness:
    clock = FakeClock()
    store = await Store.open(database(tmp_path / "state"))
    policy = TrustPolicy(frozenset({"example.com"}), "mx.example.com")
    pipeline = Pipeline(example_directory(), Renderer(TEMPLATES),
                        PipelineSettings(instance="mailgate-test", trust=policy,
                                         keys=TEST_KEYS,
                                         **settings),  # type: ignore[arg-type]
                        clock)
    return Harness(store, pipeline, clock)


def verified(domain: str = "example.com") -> dict[str, str]:
    return {A_R: f"mx.example.com; spf=pass smtp.mailfrom={domain}; "
                 f"dmarc=pass header.from={domain}"}


def agent(body: str, sender: str = "Alice <alice@example.com>", n: int = 1,
          subject: str = "Re: [IT-1001] New request: Laptop won't boot",
          headers: dict[str, str] | None = None) -> bytes:
    return mail(subject, sender=sender, message_id=f"<agent-{n}@example.com>", body=body,
                headers=verified() | (headers or {}))


def requester(body: str, n: int = 1, headers: dict[str, str] | None = None) -> bytes:
    return mail("Re: [IT-1001] Re: Laptop won't boot", message_id=f"<ann-{n}@example.com>",
                body=body, headers=verified() | (headers or {}))


async def sent(h: Harness, kind: str) -> list[Message]:
    """The mails of this kind, one each: a mail to several people goes out as one copy
    per person (each with its own reply key); the copies after the first are left out."""
    rows = await h.rows("SELECT raw FROM outbox WHERE kind = ? AND copy_of IS NULL "
                        "ORDER BY id", kind)
    return [email.message_from_bytes(r[0]) for r in rows]


def text_of(msg: Message) -> str:
    part = msg
    while part.is_multipart():
        part = part.get_payload()[0]
    return part.get_payload(decode=True).decode()


async def ticket(h: Harness, column: str, ref: str = "IT-1001") -> object:
    [(value,)] = await h.rows(f"SELECT {column} FROM tickets WHERE ref = ?", ref)
    return value


async def test_new_ticket_notifies_the_team(h: Harness) -> None:
    await h.deliver(mail(body="It only beeps.\n\n-- \nAnn, 3rd floor"))
    [note] = await sent(h, "notify-team")
    assert note["To"] == "alice@example.com, bob@example.com"
    assert note["From"] == "IT Service Desk <it-help@example.com>"
    assert note["Reply-To"] == "it-help@example.com"
    assert note["Subject"] == "[IT-1001] New request: Laptop won't boot"
    assert note["Auto-Submitted"] == "auto-generated"
    assert note["References"] == "<req-1@example.com>"
    body = text_of(note)
    assert "It only beeps." in body and "3rd floor" in body  # a request is kept whole
    assert "Ann Example <ann@example.com>" in body
    assert "Answer by  2026-11-24 15:00 CET (first response)" in body  # 10:00 + 4 bh + lunch
    assert "#resolve" in body and "#note" in body


async def test_agent_answer_is_relayed_from_the_department_threaded(h: Harness) -> None:
    await h.deliver(mail())
    [ack] = await sent(h, "ack")
    outcome = await h.deliver(agent(
        "Please restart it holding F2.\n\n-- \nAlice Adams\nIT\n\nOn Tue, Ann wrote:\n"
        "> It only beeps."))
    assert outcome.action == "reply"
    [reply] = await sent(h, "reply")
    assert reply["To"] == "ann@example.com"
    assert reply["From"] == "Alice Adams via IT Service Desk <it-help@example.com>"
    assert reply["Subject"] == "[IT-1001] Re: Laptop won't boot"
    assert reply["In-Reply-To"] == "<req-1@example.com>"
    # Threaded on the requester's own mail only: our Message-IDs carry reply keys, and
    # one person's copy must never carry another's key in its References.
    assert reply["References"].split() == ["<req-1@example.com>"]
    assert ack["Message-ID"].startswith("<mgk2.") and reply["Message-ID"].startswith("<mgk2.")
    assert reply["Auto-Submitted"] == "no"
    assert reply["X-Auto-Response-Suppress"] is None and reply["Precedence"] is None
    body = text_of(reply)
    assert body.startswith("Please restart it holding F2.")
    assert "Alice Adams\nIT" not in body and "> It only beeps" not in body
    assert await ticket(h, "status") == "open"
    assert await ticket(h, "first_response_at") is not None
    [(text,)] = await h.rows("SELECT text FROM messages WHERE message_id = 'agent-1@example.com'")
    assert text == "Please restart it holding F2."
    assert await sent(h, "relay-team") == []  # the author is not sent their own answer


async def test_requester_reply_threads_on_her_own_mail_and_goes_to_the_team(
        h: Harness) -> None:
    await h.deliver(mail())
    await h.deliver(agent("Which model is it?"))
    await h.deliver(requester("A T14.\n\nOn Tue, IT wrote:\n> Which model is it?"))
    [relay] = await sent(h, "relay-team")
    assert relay["To"] == "alice@example.com, bob@example.com"
    assert relay["Reply-To"] == "it-help@example.com"
    [notify] = await sent(h, "notify-team")
    assert relay["In-Reply-To"] == notify["In-Reply-To"] == "<req-1@example.com>"
    assert relay["References"] == notify["References"] == "<req-1@example.com>"
    assert "A T14." in text_of(relay) and "Which model" not in text_of(relay)
    # The agent's next answer replies to ann's latest mail.
    await h.deliver(agent("Thanks, a new one is on its way.", n=2))
    second = (await sent(h, "reply"))[1]
    assert second["In-Reply-To"] == "<ann-1@example.com>"
    assert second["References"].split() == ["<req-1@example.com>", "<ann-1@example.com>"]


async def test_reply_goes_to_the_assignee_once_assigned(h: Harness) -> None:
    await h.deliver(mail())
    await h.deliver(agent("#assign bob"))
    assert await ticket(h, "assignee") == "bob@example.com"
    assert await sent(h, "reply") == []  # commands only: nothing for the requester
    await h.deliver(requester("Any news?"))
    [relay] = await sent(h, "relay-team")
    assert relay["To"] == "bob@example.com"


async def test_note_stays_internal(h: Harness) -> None:
    await h.deliver(mail())
    await h.deliver(agent("#note\nAnn is the CFO's assistant, be quick."))
    assert await sent(h, "reply") == []
    [note] = await sent(h, "note-team")
    assert note["To"] == "bob@example.com"  # the team, without the author
    assert "CFO" in text_of(note) and "#note\r\n" not in text_of(note)
    assert await ticket(h, "first_response_at") is None  # a note answers nobody
    [(kind, visibility)] = await h.rows(
        "SELECT kind, visibility FROM events WHERE message IS NOT NULL "
        "AND actor = 'alice@example.com'")
    assert (kind, visibility) == ("note", "internal")
    for raw in await h.rows("SELECT raw, recipients FROM outbox"):
        assert "ann@example.com" not in raw[1] or b"CFO" not in raw[0]


async def test_attachments_are_relayed_as_they_came_and_capped(tmp_path: Path) -> None:
    h = await make(tmp_path, max_relay_bytes=5000)
    try:
        await h.deliver(mail())
        small = base64.b64encode(b"PNG" * 100).decode()
        big = base64.b64encode(b"x" * 9000).decode()
        raw = (
            f"{A_R}: mx.example.com; spf=pass smtp.mailfrom=example.com; "
            "dmarc=pass header.from=example.com\r\n"
            "From: Alice <alice@example.com>\r\nTo: it-help@example.com\r\n"
            "Subject: Re: [IT-1001] Laptop\r\nMessage-ID: <att@example.com>\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain\r\n\r\nSee the screenshot.\r\n"
            '--b\r\nContent-Type: image/png; name="shot.png"\r\n'
            "Content-Disposition: attachment; filename=\"shot.png\"\r\n"
            f"Content-Transfer-Encoding: base64\r\n\r\n{small}\r\n"
            '--b\r\nContent-Type: application/octet-stream\r\n'
            "Content-Disposition: attachment; filename=\"dump.bin\"\r\n"
            f"Content-Transfer-Encoding: base64\r\n\r\n{big}\r\n--b--\r\n").encode()
        await h.deliver(raw)
        [reply] = await sent(h, "reply")
        parts = reply.get_payload()
        assert reply.get_content_type() == "multipart/mixed" and len(parts) == 2
        assert parts[1].get_filename() == "shot.png"
        assert parts[1].get_payload(decode=True) == b"PNG" * 100
        assert "dump.bin" in text_of(reply)  # told what was left out
    finally:
        await h.store.close()


async def test_commands_take_priority_waiting_and_the_requester_resumes(h: Harness) -> None:
    await h.deliver(mail())
    await h.deliver(agent("#take\n#priority high\n#waiting\n\nCould you send the serial?"))
    assert await ticket(h, "assignee") == "alice@example.com"
    assert await ticket(h, "priority") == "high"
    assert await ticket(h, "status") == "waiting"
    assert await ticket(h, "paused_at") is not None
    [reply] = await sent(h, "reply")
    assert text_of(reply).startswith("Could you send the serial?")
    kinds = [r[0] for r in await h.rows("SELECT kind FROM events ORDER BY id")]
    assert {"assigned", "priority", "waiting"} <= set(kinds)
    h.clock.advance(hours=2)
    await h.deliver(requester("SN 12345"))
    assert await ticket(h, "status") == "open"
    assert await ticket(h, "paused_at") is None


async def test_unknown_command_changes_nothing_and_tells_the_agent(h: Harness) -> None:
    await h.deliver(mail())
    await h.deliver(agent("#ntoe\n#resolve\nInternal: the CFO's laptop"))
    assert await ticket(h, "status") == "new"
    assert await sent(h, "reply") == [] and await sent(h, "summary") == []
    [answer] = await sent(h, "command-reply")
    assert answer["To"] == "alice@example.com"
    assert answer["Auto-Submitted"] == "auto-replied"
    assert "unknown command #ntoe" in text_of(answer)
    assert answer["In-Reply-To"] == "<agent-1@example.com>"


async def test_bad_assignee_or_department_changes_nothing(h: Harness) -> None:
    await h.deliver(mail())
    await h.deliver(agent("#assign erin\n#priority low"))
    assert await ticket(h, "assignee") is None and await ticket(h, "priority") == "normal"
    await h.deliver(agent("#transfer accounting", n=2))
    assert await ticket(h, "department") == "it"
    texts = [text_of(m) for m in await sent(h, "command-reply")]
    assert "no member of IT Service Desk is called 'erin'" in texts[0]
    assert "#transfer accounting: no such department" in texts[1]


async def test_a_stranger_on_a_ticket_changes_nothing_reaches_nobody_and_gets_no_mail(
        h: Harness) -> None:
    await h.deliver(mail())
    outcome = await h.deliver(mail("Re: [IT-1001] Laptop", sender="mallory@evil.example",
                                   message_id="<m@evil.example>", body="#resolve\nall done"))
    assert outcome.action == "reply"  # kept on the ticket
    assert await ticket(h, "status") == "new"
    assert await sent(h, "command-reply") == [] and await sent(h, "relay-team") == []
    assert await sent(h, "summary") == []
    [(detail, visibility)] = await h.rows(
        "SELECT detail, visibility FROM events WHERE actor = 'mallory@evil.example'")
    assert json.loads(detail)["not_relayed"] == "not on the ticket" and visibility == "internal"


async def test_a_proven_non_member_is_refused_by_mail(h: Harness) -> None:
    await h.deliver(mail())
    await h.deliver(requester("#resolve\nall done"))
    assert await ticket(h, "status") == "new"
    [refusal] = await sent(h, "command-reply")
    assert refusal["To"] == "ann@example.com"
    assert "not a member of IT Service Desk" in text_of(refusal)


async def test_spoofed_agent_address_cannot_run_commands_or_reach_the_requester(
        h: Harness) -> None:
    await h.deliver(mail())
    # From: alice, but our MTA did not vouch for it (no Authentication-Results of ours).
    spoof = mail("Re: [IT-1001] Laptop", sender="Alice <alice@example.com>",
                 message_id="<spoof@evil.example>",
                 body="#resolve\nPlease enter your password at http://evil.example",
                 headers={A_R: "evil.example; dmarc=pass header.from=example.com"})
    await h.deliver(spoof)
    assert await ticket(h, "status") == "new"
    assert await sent(h, "reply") == [] and await sent(h, "summary") == []
    assert await sent(h, "command-reply") == []
    [notice] = await sent(h, "unproven-notice")  # to alice's own address, with her key
    assert notice["To"] == "alice@example.com"
    assert notice["Message-ID"].startswith("<mgk2.")
    assert "nothing proves that you wrote it" in text_of(notice)
    assert await ticket(h, "first_response_at") is None
    # The real alice answers that notice: her reply carries her key, and now it counts.
    await h.deliver(mail("Re: [IT-1001] Laptop", sender="Alice <alice@example.com>",
                         message_id="<real@example.com>", body="#take",
                         headers={"In-Reply-To": notice["Message-ID"]}))
    assert await ticket(h, "assignee") == "alice@example.com"


async def test_refusals_are_rate_limited(tmp_path: Path) -> None:
    h = await make(tmp_path, auto_mail_per_recipient_per_hour=3)
    try:
        await h.deliver(mail())  # the acknowledgement draws on the same budget
        for n in range(4):
            await h.deliver(requester("#close", n=n))
        assert len(await sent(h, "command-reply")) == 2
        assert await h.count("events", "kind = 'command_reply_suppressed'") == 2
    finally:
        await h.store.close()


async def test_automatic_mail_is_never_answered_or_relayed(h: Harness) -> None:
    await h.deliver(mail())
    await h.deliver(agent("Restart it."))
    ooo = mail("Automatic reply: [IT-1001] Laptop", message_id="<ooo@example.com>",
               body="#resolve\nI am out of office.", headers={"Auto-Submitted": "auto-replied"})
    await h.deliver(ooo)
    assert await sent(h, "relay-team") == [] and await sent(h, "command-reply") == []
    assert await ticket(h, "status") == "open"


async def test_resolve_sends_summary_and_survey_then_rating_is_stored(h: Harness) -> None:
    await h.deliver(mail())
    await h.deliver(agent("Replaced the power supply."))
    h.clock.advance(hours=3, minutes=5)
    await h.deliver(agent("#resolve", n=2))
    assert await ticket(h, "status") == "resolved"
    assert await ticket(h, "resolved_at") is not None
    [(met,)] = await h.rows("SELECT met_at FROM sla_clocks c JOIN tickets t ON t.id = c.ticket "
                            "WHERE c.target = 'resolution'")
    assert met is not None
    [summary] = await sent(h, "summary")
    body = text_of(summary)
    assert summary["To"] == "ann@example.com"
    assert "It only beeps." in body and "Replaced the power supply." in body
    assert "Time to resolve: 3 hours 5 minutes" in body
    assert "single digit from 1" in body
    assert summary["In-Reply-To"] == "<req-1@example.com>"
    await h.deliver(requester("4\nQuick, thanks!\n\nOn Tue, IT wrote:\n> How satisfied"))
    assert await ticket(h, "rating") == 4
    assert await ticket(h, "rating_comment") == "Quick, thanks!"
    assert await ticket(h, "status") == "resolved"  # a rating does not reopen
    assert len(await sent(h, "thanks")) == 1
    await h.deliver(requester("5", n=2))
    assert await ticket(h, "rating") == 5
    assert await ticket(h, "rating_comment") == "Quick, thanks!"  # a bare digit keeps it
    assert len(await sent(h, "thanks")) == 1  # thanked once
    assert await sent(h, "relay-team") == []


async def test_resolve_with_text_puts_it_in_the_summary(h: Harness) -> None:
    await h.deliver(mail())
    await h.deliver(agent("#resolve\nThe driver was updated."))
    [summary] = await sent(h, "summary")
    assert "The driver was updated." in text_of(summary)
    assert await sent(h, "reply") == []  # one mail, not an answer and a summary
    assert await ticket(h, "first_response_at") is not None


async def test_reply_inside_the_window_reopens(h: Harness) -> None:
    await h.deliver(mail())
    await h.deliver(agent("#resolve\nDone."))
    h.clock.advance(days=6)
    await h.deliver(requester("It beeps again."))
    assert await ticket(h, "status") == "open"
    assert await ticket(h, "resolved_at") is None
    [relay] = await sent(h, "relay-team")
    assert "reopened" in text_of(relay)
    [(round_, met)] = await h.rows("SELECT round, met_at FROM sla_clocks "
                                   "WHERE target = 'resolution'")
    assert round_ == 2 and met is None
    assert await h.count("tickets") == 1


async def test_reply_after_the_window_opens_a_linked_ticket(h: Harness) -> None:
    await h.deliver(mail())
    await h.deliver(agent("#resolve\nDone."))
    h.clock.advance(days=8)
    outcome = await h.deliver(requester("It beeps again."))
    assert outcome.action == "ticket" and outcome.tickets == ("IT-1002",)
    assert await ticket(h, "status") == "resolved"
    assert await h.count("ticket_links") == 2
    [ack] = [m for m in await sent(h, "ack") if "IT-1002" in m["Subject"]]
    assert ack["To"] == "ann@example.com"
    assert len(await sent(h, "notify-team")) == 2


async def test_reopen_and_close_commands(h: Harness) -> None:
    await h.deliver(mail())
    await h.deliver(agent("#close duplicate"))
    assert await ticket(h, "status") == "closed"
    assert await ticket(h, "paused_at") is not None  # clocks stop, none counts as met
    await h.deliver(agent("#reopen", n=2))
    assert await ticket(h, "status") == "open"
    assert await ticket(h, "paused_at") is None
    await h.deliver(agent("#reopen", n=3))
    [refusal] = await sent(h, "command-reply")
    assert "is open, not resolved" in text_of(refusal)


def html_only(raw: bytes, html: str) -> bytes:
    return raw.replace(b"Content-Type: text/plain", b"Content-Type: text/html").replace(
        b"\r\n\r\nPLACEHOLDER", b"\r\n\r\n" + html.encode())


async def test_a_quoted_or_hidden_command_in_an_html_only_reply_runs_nothing(
        h: Harness) -> None:
    """A verified agent's HTML-only reply (Apple Mail: the quote first, no attribution)
    whose only text is a quoted "#close": the quote is marked as quoted, so its first line
    is no command. Nor is a "#close" the agent's client never showed (display:none)."""
    await h.deliver(mail())
    await h.deliver(html_only(agent("PLACEHOLDER"), '<html><body><blockquote type="cite">'
                              "<div>#close duplicate</div><div>thanks</div></blockquote>"
                              "</body></html>"))
    await h.deliver(html_only(agent("PLACEHOLDER", n=2), '<div style="display:none">#close'
                              "</div><div>Looking into it.</div>"))
    assert await ticket(h, "status") == "open"
    assert await h.rows("SELECT kind FROM events WHERE kind = 'closed'") == []
    [(quoted,), (hidden,)] = await h.rows(
        "SELECT text FROM messages WHERE message_id LIKE 'agent-%' ORDER BY message_id")
    assert quoted == "" and hidden == "Looking into it."
    # The same reply with the command as the agent's own text does close the ticket.
    await h.deliver(html_only(agent("PLACEHOLDER", n=3), "<div>#close duplicate</div>"
                              '<blockquote type="cite">old</blockquote>'))
    assert await ticket(h, "status") == "closed"


async def test_transfer_keeps_the_number_and_restarts_the_sla(h: Harness) -> None:
    await h.deliver(mail())
    await h.deliver(agent("#take"))
    h.clock.advance(hours=1)
    await h.deliver(agent("#transfer facilities\nThis is a power socket problem.", n=2))
    assert await ticket(h, "department") == "facilities"
    assert await ticket(h, "assignee") is None
    [_, moved] = await sent(h, "notify-team")
    assert moved["To"] == "erin@example.com"
    assert moved["From"] == "Facilities <facilities@example.com>"
    assert moved["Subject"].startswith("[IT-1001] Transferred")
    assert "from IT Service Desk by alice@example.com" in text_of(moved)
    rows = await h.rows("SELECT target, round, started_at FROM sla_clocks ORDER BY target")
    assert {r[0]: r[1] for r in rows} == {"first_response": 2, "resolution": 2}
    assert all(r[2] == h.clock.now.timestamp() for r in rows)
    # The requester keeps the thread; the answer comes from the new department.
    [reply] = await sent(h, "reply")
    assert reply["From"] == "Alice Adams via Facilities <facilities@example.com>"
    assert reply["Subject"] == "[IT-1001] Re: Laptop won't boot"
    await h.deliver(mail("Re: [IT-1001] Laptop", sender="erin@example.com",
                         message_id="<erin@example.com>", body="#take",
                         headers=verified()))
    assert await ticket(h, "assignee") == "erin@example.com"


async def test_every_command_is_an_event(h: Harness) -> None:
    await h.deliver(mail())
    await h.deliver(agent("#take\n#priority low\n#resolve"))
    rows = await h.rows("SELECT kind, json_extract(detail, '$.command') FROM events "
                        "WHERE kind IN ('assigned', 'priority', 'resolved') ORDER BY id")
    assert rows == [("assigned", "#take"), ("priority", "#priority low"),
                    ("resolved", "#resolve")]


def test_reopen_window_default_is_a_week() -> None:
    assert PipelineSettings().reopen_window == timedelta(days=7)


async def test_resolved_tickets_close_automatically_after_n_days(h: Harness) -> None:
    from mailgate.workers.autoclose import AutoCloser

    await h.deliver(mail())
    await h.deliver(mail("Second", message_id="<req-2@example.com>"))
    await h.deliver(agent("#resolve\nDone."))
    h.clock.advance(days=3)
    await h.deliver(agent("#resolve\nDone too.", n=2, subject="Re: [IT-1002] Second"))
    closer = AutoCloser(
        h.store, h.current(conversation=ConversationConfig(auto_close_after=timedelta(days=5))),
        h.clock)
    h.clock.advance(days=2, minutes=1)
    assert await closer.run_once() == 1
    assert await ticket(h, "status") == "closed"
    assert await ticket(h, "closed_at") is not None
    assert await ticket(h, "status", "IT-1002") == "resolved"
    [(detail,)] = await h.rows("SELECT detail FROM events WHERE kind = 'closed'")
    assert "not answered" in detail
    assert await closer.run_once() == 0
    # A late reply to the closed ticket (outside the reopen window) opens a new one.
    h.clock.advance(days=6)
    outcome = await h.deliver(requester("Broken again."))
    assert outcome.tickets == ("IT-1003",)


def test_conversation_config(tmp_path: Path) -> None:
    from mailgate.config.settings import load_config
    from mailgate.errors import ConfigError

    path = tmp_path / "mailgate.toml"
    base = '[outbox]\ndir = "out"\n[conversation]\n'
    path.write_text(base + 'reopen_window = "3d"\nauto_close_after = "14d"\n'
                    "max_relay_bytes = 1000\nnotify_team = false\nkeep_cc_informed = false\n")
    conversation = load_config(path).conversation
    assert conversation.reopen_window == timedelta(days=3)
    assert conversation.auto_close_after == timedelta(days=14)
    assert (conversation.max_relay_bytes, conversation.notify_team) == (1000, False)
    assert conversation.keep_cc_informed is False
    path.write_text(base + 'reopen_window = "soon"\nreopen = "7d"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert any("conversation.reopen_window" in p for p in caught.value.problems)
    assert any("conversation.reopen" in p and "unknown" in p for p in caught.value.problems)


# --- people copied on the request, and comments from other employees -------------------


def cc_request() -> bytes:
    return mail(cc="Carl Colleague <carl@example.com>, it-help@example.com, "
                   "ann@example.com, Dora <DORA@example.com>, carl@example.com")


async def test_cc_of_the_request_is_stored_and_copied_on_answers_and_summary(
        h: Harness) -> None:
    await h.deliver(cc_request())
    # not our own address, not the requester, no duplicates, lower-cased
    assert json.loads(str(await ticket(h, "cc"))) == ["carl@example.com", "dora@example.com"]
    await h.deliver(agent("Please restart it."))
    [reply] = await sent(h, "reply")
    assert reply["To"] == "ann@example.com"
    assert reply["Cc"] == "carl@example.com, dora@example.com"
    copies = await h.rows("SELECT recipients, message_id FROM outbox WHERE kind = 'reply'")
    assert [json.loads(r)[0] for r, _ in copies] == [
        "ann@example.com", "carl@example.com", "dora@example.com"]  # one copy each
    assert len({mid for _, mid in copies}) == 3  # each with its own key
    await h.deliver(agent("#resolve\nFixed.", n=2))
    [summary] = await sent(h, "summary")
    assert summary["Cc"] == "carl@example.com, dora@example.com"
    # The rating links carry the requester's key in her copy only.
    copies = await h.rows("SELECT recipients, raw FROM outbox WHERE kind = 'summary'")
    keyed = {json.loads(r)[0]: b"mgk2." in raw.split(b"\r\n\r\n", 1)[1]
             for r, raw in copies}
    assert keyed == {"ann@example.com": True, "carl@example.com": False,
                     "dora@example.com": False}
    [ack] = await sent(h, "ack")
    assert ack["Cc"] is None  # the acknowledgement is the requester's alone


async def test_cc_is_capped_at_twenty(h: Harness) -> None:
    await h.deliver(mail(cc=", ".join(f"p{i}@example.com" for i in range(30))))
    assert len(json.loads(str(await ticket(h, "cc")))) == 20


async def test_keep_cc_informed_false_copies_nobody(tmp_path: Path) -> None:
    h = await make(tmp_path, keep_cc_informed=False)
    try:
        await h.deliver(cc_request())
        await h.deliver(agent("Please restart it."))
        [reply] = await sent(h, "reply")
        assert reply["Cc"] is None
        [(recipients,)] = await h.rows("SELECT recipients FROM outbox WHERE kind = 'reply'")
        assert json.loads(recipients) == ["ann@example.com"]
    finally:
        await h.store.close()


async def test_mail_from_another_employee_is_a_comment_that_never_reopens(h: Harness) -> None:
    await h.deliver(cc_request())
    await h.deliver(agent("#waiting\nWhich model is it?"))
    assert await ticket(h, "status") == "waiting"
    carl = mail("Re: [IT-1001] Laptop won't boot", sender="Carl <carl@example.com>",
                message_id="<carl-1@example.com>", body="I think it is a T14.",
                headers=verified())
    outcome = await h.deliver(carl)
    assert outcome.action == "reply"
    [(kind, visibility)] = await h.rows(
        "SELECT kind, visibility FROM events WHERE actor = 'carl@example.com' "
        "AND kind != 'relayed'")
    assert (kind, visibility) == ("comment", "public")
    assert await ticket(h, "status") == "waiting"  # only the requester resumes
    assert await ticket(h, "paused_at") is not None
    [relay] = await sent(h, "relay-team")
    assert "I think it is a T14." in text_of(relay)
    await h.deliver(agent("#resolve\nDone.", n=2))
    await h.deliver(mail("Re: [IT-1001] Laptop won't boot", sender="carl@example.com",
                         message_id="<carl-2@example.com>", body="Still broken for me.",
                         headers=verified()))
    assert await ticket(h, "status") == "resolved"  # a comment never reopens
    assert await h.count("tickets") == 1
    assert await h.count("events", "kind = 'comment'") == 2


# --- attachments kept on disk, content-addressed ---------------------------------------


def with_files(files: list[tuple[str, bytes]], n: int = 1, subject: str = "Laptop won't boot",
               sender: str = "Ann Example <ann@example.com>") -> bytes:
    parts = "".join(
        f'--b\r\nContent-Type: application/octet-stream; name="{name}"\r\n'
        f'Content-Disposition: attachment; filename="{name}"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{base64.b64encode(data).decode()}\r\n"
        for name, data in files)
    return (f"From: {sender}\r\nTo: it-help@example.com\r\nSubject: {subject}\r\n"
            f"Message-ID: <files-{n}@example.com>\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
            f"{parts}--b--\r\n").encode()


def stored_files(tmp_path: Path) -> list[Path]:
    root = tmp_path / "state" / "attachments"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.mark.sqlite_only("attachment files on disk: PostgreSQL keeps them in the database "
                          "(tests/test_postgres_store.py)")
async def test_identical_attachments_are_stored_once_with_private_modes(
        h: Harness, tmp_path: Path) -> None:
    import hashlib
    import stat

    log = b"kernel panic\n" * 100
    await h.deliver(with_files([("boot.log", log), ("copy.log", log)]))
    await h.deliver(with_files([("boot.log", log)], n=2, subject="Re: [IT-1001] Laptop"))
    digest = hashlib.sha256(log).hexdigest()
    [path] = stored_files(tmp_path)  # three references, one file
    assert path == tmp_path / "state" / "attachments" / digest[:2] / digest[2:]
    assert path.read_bytes() == log
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    rows = await h.rows("SELECT filename, content_type, size, sha256 FROM attachments "
                        "ORDER BY id")
    assert rows == [("boot.log", "application/octet-stream", len(log), digest),
                    ("copy.log", "application/octet-stream", len(log), digest),
                    ("boot.log", "application/octet-stream", len(log), digest)]
    assert not list((tmp_path / "state" / "attachments").rglob("*.tmp"))
    from mailgate.storage import history
    story = await history.load(h.store, "IT-1001", h.clock())
    assert story is not None and story["attachments"][0]["path"] == str(path)
    assert any(str(path) in line for line in history.lines(story))


async def test_oversized_attachments_are_dropped_and_named_in_the_ack(tmp_path: Path) -> None:
    h = await make(tmp_path, max_attachment_bytes=1000)
    try:
        outcome = await h.deliver(with_files([("small.txt", b"s" * 600),
                                              ("huge.iso", b"h" * 5000),
                                              ("other.txt", b"o" * 300)]))
        assert outcome.action == "ticket"  # still ticketed
        rows = await h.rows("SELECT filename, size, sha256 FROM attachments ORDER BY id")
        assert [(name, size, sha is not None) for name, size, sha in rows] == [
            ("small.txt", 600, True), ("other.txt", 300, True), ("huge.iso", 5000, False)]
        files = h.store.attachments()  # small.txt and other.txt fit in 1000: both kept
        assert files is not None
        assert [files.read(sha) for _, _, sha in rows[:2]] == [b"s" * 600, b"o" * 300]
        [ack] = await sent(h, "ack")
        body = text_of(ack)
        assert "Not kept" in body and "huge.iso" in body and "small.txt" not in body
        assert await h.count("events", "kind = 'attachments_dropped'") == 1
    finally:
        await h.store.close()


async def test_a_reply_whose_files_were_not_kept_tells_its_sender(tmp_path: Path) -> None:
    h = await make(tmp_path, max_attachment_bytes=1000)
    try:
        await h.deliver(mail())
        reply = with_files([("photo.jpg", b"p" * 400), ("scan.pdf", b"s" * 5000)], n=2,
                           subject="Re: [IT-1001] Laptop won't boot")
        outcome = await h.deliver(reply)
        assert outcome.action == "reply"
        [notice] = await sent(h, "not-kept")
        assert notice["To"] == "ann@example.com"
        assert notice["In-Reply-To"] == "<files-2@example.com>"
        assert notice["Auto-Submitted"] == "auto-replied"
        body = text_of(notice)
        assert "- scan.pdf" in body and "photo.jpg" not in body
        assert "may total 0.977 KB at most" in body.replace("\r\n", " ").replace("\n", " ")
        for n in range(3, 15):  # a sender who keeps trying is told at most 10 times an hour
            await h.deliver(with_files([("scan.pdf", b"s" * 5000)], n=n,
                                       subject="Re: [IT-1001] Laptop won't boot"))
        # One budget of 10 automatic mails an hour: the acknowledgement took one.
        assert len(await sent(h, "not-kept")) == 9
    finally:
        await h.store.close()


async def test_a_templates_folder_from_before_not_kept_still_loads(tmp_path: Path) -> None:
    """An admin's copy of the templates from an older version lacks not_kept.txt.j2: the
    one shipped with mailgate is used, and check() does not fail."""
    import shutil

    from mailgate.core.render import Renderer
    old = tmp_path / "templates"
    shutil.copytree(TEMPLATES, old)
    (old / "not_kept.txt.j2").unlink()
    renderer = Renderer(old)
    assert renderer.check() == []
    assert renderer.loader.sources["not_kept.txt.j2"][1] == str(TEMPLATES / "not_kept.txt.j2")


@pytest.mark.sqlite_only("attachment files on disk: PostgreSQL keeps them in the database "
                          "(tests/test_postgres_store.py)")
async def test_attachment_files_are_written_before_the_transaction_commits(
        h: Harness, tmp_path: Path) -> None:
    # A crash (here: an exception) after the files are written rolls the rows back: what is
    # left is an orphan file, never a row naming a file that is not there.
    raw = with_files([("a.bin", b"A" * 10)])
    with pytest.raises(RuntimeError):
        async with h.store.transaction() as tx:
            await h.pipeline.handle(tx, raw, IT)
            assert len(stored_files(tmp_path)) == 1  # durable before COMMIT
            raise RuntimeError("crash before commit")
    assert await h.count("attachments") == 0 and await h.count("tickets") == 0
    assert len(stored_files(tmp_path)) == 1  # the orphan; the retry reuses it
    await h.deliver(raw)
    assert len(stored_files(tmp_path)) == 1
    [(sha,)] = await h.rows("SELECT sha256 FROM attachments")
    assert (tmp_path / "state" / "attachments" / sha[:2] / sha[2:]).exists()


def test_attachment_limit_config(tmp_path: Path) -> None:
    from mailgate.config.settings import load_config

    path = tmp_path / "mailgate.toml"
    path.write_text('[outbox]\ndir = "out"\n')
    assert load_config(path).limits.max_attachment_bytes == 25 * 1024 * 1024
    path.write_text('[outbox]\ndir = "out"\n[limits]\nmax_attachment_bytes = 1000\n')
    assert load_config(path).limits.max_attachment_bytes == 1000


async def test_a_rating_link_in_the_summary_opens_a_reply_that_is_stored(h: Harness) -> None:
    await h.deliver(mail())
    await h.deliver(agent("#resolve\nReplaced the power supply."))
    [summary] = await sent(h, "summary")
    links = [line.split(": ", 1)[1] for line in text_of(summary).splitlines()
             if line.startswith("  3 partly: ")]
    assert len(links) == 1
    url = urlsplit(links[0])
    assert (url.scheme, url.path) == ("mailto", "it-help@example.com")
    fields = parse_qs(url.query)
    assert fields["subject"] == ["[IT-1001] Rating: 3"]
    # A mail opened from a link has no In-Reply-To: the key rides below a signature line.
    score, key = fields["body"][0].split("\r\n\r\n-- \r\n")
    assert score == "3" and key.startswith("mgk2.")
    forged = mail(fields["subject"][0], message_id="<forged@example.com>", body="1")
    await h.deliver(forged)  # the same click without the key: no proof, no rating
    assert await ticket(h, "rating") is None
    clicked = mail(fields["subject"][0], message_id="<click@example.com>",
                   body=fields["body"][0])
    await h.deliver(clicked)
    assert await ticket(h, "rating") == 3
    assert not await ticket(h, "rating_comment")  # the key line is not a comment
    assert await ticket(h, "status") == "resolved"
    assert len(await sent(h, "thanks")) == 1


async def test_resolve_summary_on_the_command_line_is_what_was_done(h: Harness) -> None:
    await h.deliver(mail())
    await h.deliver(agent("#resolve Replaced the battery"))
    [summary] = await sent(h, "summary")
    body = text_of(summary)
    assert "What was done:\n  Replaced the battery\n" in body.replace("\r\n", "\n")


async def test_resolve_with_nothing_said_leaves_out_what_was_done(h: Harness) -> None:
    await h.deliver(mail())
    await h.deliver(agent("#resolve"))
    [summary] = await sent(h, "summary")
    body = text_of(summary)
    assert "What was done" not in body and "earlier replies" not in body
    assert "Time to resolve:" in body


async def test_a_flood_of_replies_on_one_ticket_is_kept_but_not_all_relayed(
        h: Harness) -> None:
    await h.deliver(mail())
    for n in range(1, 26):  # a script replying 25 times within the hour
        await h.deliver(requester(f"Any news? ({n})", n=n))
    assert len(await sent(h, "relay-team")) == 20
    assert await h.count("events", "kind = 'relay_suppressed'") == 5
    assert await h.count("messages") == 26  # every mail is kept on the ticket
    h.clock.advance(hours=1, minutes=1)
    await h.deliver(requester("Still there?", n=26))
    assert len(await sent(h, "relay-team")) == 21


async def test_a_note_with_resolve_keeps_its_text_out_of_the_summary(h: Harness) -> None:
    await h.deliver(mail())
    await h.deliver(agent("Try holding the power button."))
    await h.deliver(agent("#note\n#resolve\nBetween us: the board is cracked.", n=2))
    [summary] = await sent(h, "summary")
    body = text_of(summary)
    assert "cracked" not in body
    assert "Try holding the power button." in body  # the last public answer


async def test_the_relay_limit_never_silences_an_agent(h: Harness) -> None:
    await h.deliver(mail())
    for n in range(1, 23):  # a busy agent: answers and notes
        await h.deliver(agent(f"#note\nStep {n} done.", n=n))
    assert len(await sent(h, "note-team")) == 22
    assert await h.count("events", "kind = 'relay_suppressed'") == 0


async def test_a_missing_not_kept_template_costs_the_notice_not_the_reply(
        tmp_path: Path) -> None:
    h = await make(tmp_path, max_attachment_bytes=1000)
    try:
        h.pipeline.renderer.loader.sources.pop("not_kept.txt.j2")
        h.pipeline.renderer._templates.clear()
        await h.deliver(mail())
        outcome = await h.deliver(with_files([("scan.pdf", b"s" * 5000)], n=2,
                                             subject="Re: [IT-1001] Laptop won't boot"))
        assert outcome.action == "reply"
        assert await sent(h, "not-kept") == []
        assert await h.count("quarantine") == 0
    finally:
        await h.store.close()


async def test_a_late_follow_up_copied_to_another_desk_is_one_new_ticket(h: Harness) -> None:
    """After the reopen window a reply opens a new linked ticket. When it was also sent to
    another desk, its copy through that desk's mailbox (and any re-delivery) is the same
    message: no further tickets, no further acknowledgements."""
    await h.deliver(mail())
    await h.deliver(agent("#resolve Fixed."))
    h.clock.advance(days=30)
    late = mail("Re: [IT-1001] Laptop won't boot", message_id="<late@example.com>",
                cc="facilities@example.com", body="It broke again.", headers=verified())
    first = await h.deliver(late)
    assert first.action == "ticket" and first.tickets == ("IT-1002",)
    for _ in range(2):
        again = await h.deliver(late, FACILITIES)
        assert again.action == "duplicate", again
    assert await h.count("tickets") == 2
    assert len(await sent(h, "ack")) == 2
