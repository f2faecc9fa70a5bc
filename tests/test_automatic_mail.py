"""Automatic and list mail through the pipeline: ticketed (or threaded) without an
acknowledgement; a role sender without a delivery report is not quarantined."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.factories import Harness, harness, mail

DATA = Path(__file__).parent / "data" / "mail"


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    built = await harness(tmp_path, acks_per_hour=10**6)
    yield built
    await built.store.close()


@pytest.mark.parametrize("name", ["postmaster-html-no-report.eml", "mailman-digest.eml",
                                  "ezmlm-list.eml"])
async def test_ticketed_without_an_acknowledgement(h: Harness, name: str) -> None:
    raw = (DATA / name).read_bytes().replace(b"users@example.org", b"it-help@example.com")
    outcome = await h.deliver(raw)
    assert outcome.action == "ticket", outcome
    assert not outcome.acknowledged
    assert await h.count("outbox", "kind = 'ack'") == 0  # the team is still told
    assert await h.count("quarantine") == 0


async def test_a_person_is_still_acknowledged(h: Harness) -> None:
    outcome = await h.deliver(mail())
    assert outcome.action == "ticket" and outcome.acknowledged


async def test_a_real_bounce_matching_no_ticket_is_quarantined(h: Harness) -> None:
    bounce = mail("Undelivered Mail Returned to Sender", sender="MAILER-DAEMON@mx.example.com",
                  headers={"Return-Path": "<>"})
    outcome = await h.deliver(bounce)
    assert outcome.action == "quarantined" and "bounce" in (outcome.reason or "")
