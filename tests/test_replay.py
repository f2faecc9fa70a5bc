"""A copy of an agent's DKIM-signed mail, sent again by someone else, runs no command on a
ticket the agent did not mean: the pipeline on a real SQLite database (no servers), behind
an MTA that writes Authentication-Results as mx.example.com.

DKIM vouches for the body and for the header fields its signature's h= tag lists (RFC 6376
3.5, 5.4). Whoever holds a copy can send it again with any other field changed or added,
and DKIM still passes: each test below is one such field (or an l= body limit), and the
command in the copy must not run.
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

B = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789+/AbCdEfGhIjKlMnOp="
ALL = "from:to:cc:subject:date:message-id:in-reply-to:references:content-type"
PASS = f"mx.example.com; dkim=pass header.d=example.com header.s=sel header.b={B[:8]}"
SPF = "mx.example.com; spf=pass smtp.mailfrom=alice@example.com"


def signature(h: str = ALL, *, d: str = "example.com", s: str = "sel", b: str = B,
              extra: str = "") -> str:
    return (f"v=1; a=rsa-sha256; c=relaxed/relaxed; d={d}; s={s};\r\n\th={h};{extra}\r\n"
            f"\tbh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r\n\tb={b}")


def alices(body: str, *, subject: str = "Re: [IT-1001] Laptop won't boot",
           fields: dict[str, str] | None = None, h: str = ALL,
           results: tuple[str, ...] = (PASS,), signatures: tuple[str, ...] | None = None,
           content_type: str = "text/plain; charset=utf-8",
           message_id: str | None = "<alice-1@example.com>") -> bytes:
    """A mail by alice (an IT agent) as our MTA hands it over: its Authentication-Results
    on top, then her DKIM-Signature and the fields she wrote."""
    lines = [f"Authentication-Results: {r}" for r in results]
    lines += [f"DKIM-Signature: {s}" for s in (signatures if signatures is not None
                                                else (signature(h),))]
    lines += ["From: Alice Adams <alice@example.com>", "To: it-help@example.com",
              f"Subject: {subject}", "Date: Tue, 24 Nov 2026 10:00:00 +0100"]
    if message_id:
        lines.append(f"Message-ID: {message_id}")
    lines += [f"{k}: {v}" for k, v in (fields or {}).items()]
    lines += [f"Content-Type: {content_type}", "", body, ""]
    return "\r\n".join(lines).encode()


@pytest.fixture
async def milter(tmp_path: Path) -> AsyncIterator[Harness]:
    clock = FakeClock()
    store = await Store.open(database(tmp_path / "state"))
    policy = TrustPolicy(frozenset({"example.com"}), "mx.example.com")
    pipeline = Pipeline(example_directory(), Renderer(TEMPLATES),
                        PipelineSettings(instance="mailgate-test", trust=policy, keys=TEST_KEYS),
                        clock)
    h = Harness(store, pipeline, clock)
    await h.deliver(mail())  # IT-1001, ann's
    await h.deliver(mail("Printer on fire", sender="Carl <carl@example.com>",
                         message_id="<req-2@example.com>"))  # IT-1002, carl's
    yield h
    await store.close()


async def field(h: Harness, column: str, ref: str = "IT-1001") -> object:
    [(value,)] = await h.rows(f"SELECT {column} FROM tickets WHERE ref = ?", ref)
    return value


async def notices(h: Harness) -> list[Message]:
    rows = await h.rows("SELECT raw FROM outbox WHERE kind = 'unproven-notice' ORDER BY id")
    return [email.message_from_bytes(r[0]) for r in rows]


# --- the genuine mail still commands ---------------------------------------------------


async def test_a_signature_over_every_field_that_matters_commands(milter: Harness) -> None:
    await milter.deliver(alices("#close", fields={"In-Reply-To": "<req-1@example.com>"}))
    assert await field(milter, "status") == "closed"
    assert await milter.rows("SELECT sender_trust FROM messages WHERE message_id = "
                             "'alice-1@example.com'") == [("verified",)]


# --- each field DKIM does not vouch for ----------------------------------------------------


async def test_a_subject_outside_h_cannot_move_a_command_to_another_ticket(
        milter: Harness) -> None:
    """Signed for IT-1001 with Subject outside h=: sent again as [IT-1002]."""
    no_subject = ALL.replace("subject:", "")
    await milter.deliver(alices("#close", subject="Re: [IT-1002] Printer on fire",
                                h=no_subject, message_id="<alice-2@example.com>"))
    assert await field(milter, "status", "IT-1002") != "closed"
    [notice] = await notices(milter)  # alice learns why, at her directory address
    assert notice["To"] == "alice@example.com"
    text = notice.get_payload(decode=True).decode()
    assert "signature" in text and "Subject" in text


async def test_an_in_reply_to_added_outside_h_threads_but_commands_nothing(
        milter: Harness) -> None:
    """Her signed mail had no In-Reply-To and h= does not list one: the copy adds one
    naming carl's request."""
    no_threading = "from:to:subject:date:message-id:content-type"
    await milter.deliver(alices("#close", subject="Re: Printer", h=no_threading,
                                fields={"In-Reply-To": "<req-2@example.com>"}))
    assert await field(milter, "status", "IT-1002") != "closed"
    # Still a reply on IT-1002, kept as what it is.
    assert await milter.rows(
        "SELECT e.kind FROM events e JOIN tickets t ON t.id = e.ticket "
        "WHERE t.ref = 'IT-1002' AND e.actor = 'alice@example.com'") == [("reply",)]


async def test_references_changed_outside_h_command_nothing(milter: Harness) -> None:
    h = "from:to:subject:date:message-id:in-reply-to:content-type"
    await milter.deliver(alices("#close", subject="Re: Laptop", h=h, fields={
        "In-Reply-To": "<req-1@example.com>", "References": "<req-2@example.com>"}))
    assert await field(milter, "status", "IT-1002") != "closed"
    assert await field(milter, "status", "IT-1001") != "closed"


async def test_a_body_length_limit_leaves_appended_commands_unsigned(milter: Harness) -> None:
    """l=7 signs "#take\\r\\n" only; the copy appends "#priority high"."""
    await milter.deliver(alices("#take\r\n#priority high", fields={
        "In-Reply-To": "<req-1@example.com>"}, signatures=(signature(extra=" l=7;"),)))
    assert await field(milter, "priority") == "normal"
    assert await field(milter, "assignee") is None


async def test_a_content_type_outside_h_cannot_pick_another_text(milter: Harness) -> None:
    """Her signed mail forwards mallory's inline. Content-Type is not in h= (as Gmail
    signs): the copy declares the forward's separator line a MIME boundary, so the
    forwarded text, mallory's '#close', becomes the body's first part."""
    body = ("FYI, see below.\r\n\r\n---------- Forwarded message ---------\r\n"
            "From: Mallory <mallory@example.com>\r\nSubject: hi\r\n\r\n#close\r\n")
    no_type = ALL.replace(":content-type", "")
    await milter.deliver(alices(body, h=no_type, fields={"In-Reply-To": "<req-1@example.com>"},
                                content_type='multipart/mixed; '
                                             'boundary="-------- Forwarded message ---------"'))
    assert await field(milter, "status") != "closed"


async def test_a_message_id_outside_h_cannot_run_a_command_twice(milter: Harness) -> None:
    """Her '#take' signed without its Message-ID; bob takes the ticket over; the copy with
    a new Message-ID is not a duplicate and would take it back."""
    no_id = ALL.replace("message-id:", "")
    await milter.deliver(alices("#take", h=no_id, results=(PASS, SPF),
                                fields={"In-Reply-To": "<req-1@example.com>"}))
    assert await field(milter, "assignee") == "alice@example.com"  # SPF: our servers
    [(key,)] = await milter.rows("SELECT message_id FROM outbox WHERE kind = 'notify-team' "
                                 "AND recipients = '[\"bob@example.com\"]' ORDER BY id LIMIT 1")
    await milter.deliver(mail("Re: [IT-1001] x", sender="bob@example.com", body="#take",
                              message_id="<bob-1@example.com>",
                              headers={"In-Reply-To": f"<{key}>"}))
    assert await field(milter, "assignee") == "bob@example.com"
    await milter.deliver(alices("#take", h=no_id, message_id="<replayed@evil.example>",
                                fields={"In-Reply-To": "<req-1@example.com>"}))
    assert await field(milter, "assignee") == "bob@example.com"


# --- which signature passed --------------------------------------------------------------


async def test_a_covering_signature_that_failed_does_not_stand_in_for_one_that_passed(
        milter: Harness) -> None:
    """The copy carries a second DKIM-Signature over every field (made up, so it fails);
    header.b says which one passed: the one without Subject."""
    fake = signature(b="ZZZZZZZZ" + B[8:])
    await milter.deliver(alices(
        "#close", subject="Re: [IT-1002] Printer", h=ALL.replace("subject:", ""),
        results=(PASS + "; dkim=fail header.d=example.com header.s=sel header.b=ZZZZZZZZ",),
        signatures=(fake, signature(ALL.replace("subject:", "")))))
    assert await field(milter, "status", "IT-1002") != "closed"


async def test_without_header_b_every_signature_that_could_have_passed_must_cover(
        milter: Harness) -> None:
    result = "mx.example.com; dkim=pass header.d=example.com header.s=sel"
    two = (signature(b="ZZZZZZZZ" + B[8:]), signature(ALL.replace("subject:", "")))
    await milter.deliver(alices("#close", subject="Re: [IT-1002] Printer", results=(result,),
                                signatures=two))
    assert await field(milter, "status", "IT-1002") != "closed"
    await milter.deliver(alices("#close", results=(result,), message_id="<alice-3@example.com>",
                                signatures=(signature(), signature(b="ZZZZZZZZ" + B[8:]))))
    assert await field(milter, "status") == "closed"


# --- DMARC and SPF --------------------------------------------------------------------------


async def test_a_dmarc_pass_alone_pins_no_ticket(milter: Harness) -> None:
    """DMARC passes on an aligned DKIM pass as well as on SPF: alone it does not say which,
    so it does not say the fields that chose the ticket are hers."""
    dmarc = "mx.example.com; dmarc=pass header.from=example.com"
    await milter.deliver(alices("#close", subject="Re: [IT-1002] Printer",
                                h=ALL.replace("subject:", ""), results=(PASS, dmarc)))
    assert await field(milter, "status", "IT-1002") != "closed"
    await milter.deliver(alices("#close", results=(dmarc,), signatures=(),
                                message_id="<alice-3@example.com>"))
    assert await field(milter, "status") != "closed"


async def test_an_spf_pass_still_proves_the_mail_came_from_our_servers(
        milter: Harness) -> None:
    await milter.deliver(alices("#close", results=(SPF,), signatures=()))
    assert await field(milter, "status") == "closed"


# --- the same copy through another mailbox ---------------------------------------------------


async def test_a_copy_through_another_departments_mailbox_runs_nothing_again(
        milter: Harness) -> None:
    """Her signed '#take', every field covered, sent again unchanged to the facilities
    address (or Bcc'd there): the same mail, worked on IT-1001 once already."""
    signed = alices("#take", fields={"In-Reply-To": "<req-1@example.com>"})
    await milter.deliver(signed)
    [(key,)] = await milter.rows("SELECT message_id FROM outbox WHERE kind = 'notify-team' "
                                 "AND recipients = '[\"bob@example.com\"]' ORDER BY id LIMIT 1")
    await milter.deliver(mail("Re: [IT-1001] x", sender="bob@example.com", body="#take",
                              message_id="<bob-1@example.com>",
                              headers={"In-Reply-To": f"<{key}>"}))
    outcome = await milter.deliver(signed, FACILITIES)
    assert (outcome.action, outcome.tickets) == ("duplicate", ("IT-1001",))
    assert await field(milter, "assignee") == "bob@example.com"
    assert await milter.count("events", "kind = 'assigned'") == 2
    assert (await milter.deliver(signed, FACILITIES)).action == "duplicate"


async def test_the_team_is_told_a_requesters_mail_may_be_a_replayed_copy(
        milter: Harness) -> None:
    await milter.deliver(mail("Monitor flickers", message_id="<req-3@example.com>"))  # IT-1003
    signed = alices("Thanks, that fixed it.", subject="Re: [IT-1003] Monitor flickers",
                    h=ALL.replace("subject:", "")).replace(b"Alice Adams <alice@", b"Ann <ann@")
    await milter.deliver(signed)
    rows = await milter.rows("SELECT raw FROM outbox WHERE kind = 'relay-team' ORDER BY id")
    text = email.message_from_bytes(rows[-1][0]).get_payload(decode=True).decode()
    assert "may be a copy of another mail" in text and "Thanks, that fixed it." in text
    assert await milter.rows("SELECT sender_trust FROM messages WHERE message_id = "
                             "'alice-1@example.com'") == [("replayable",)]
