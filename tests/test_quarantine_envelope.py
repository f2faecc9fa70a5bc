"""A quarantined mail keeps the envelope it was pushed with (schema 11), so that `mailgate
quarantine retry` classifies and routes it as the first time: MAIL FROM:<> is automatic
mail, RCPT TO routes a Bcc. On SQLite and (MAILGATE_TEST_ENGINE=postgresql) PostgreSQL;
tests/test_e2e_forgery.py retries one through the real CLI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailgate.core.model import Origin
from mailgate.storage import quarantine, schema
from mailgate.storage.postgres import schema as pg_schema
from tests.factories import IT, Harness, harness, mail
from tests.harness import database, query

PUSHED = Origin("smtp", ("it",), "", ("it-help@example.com", "hr@example.com"))
OOF = mail("Re: Printer", sender="Robot <robot@vendor.example.net>",
           message_id="<oof@vendor.example.net>", body="I am away until Monday.")


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    built = await harness(tmp_path)
    yield built
    await built.store.close()


async def held(h: Harness) -> quarantine.HeldMail:
    [entry] = await h.store.quarantined()
    found = await quarantine.entry(h.store, entry.id)
    assert found is not None
    return found


async def test_pushed_mail_is_held_with_its_envelope(h: Harness) -> None:
    outcome = await h.deliver(OOF, PUSHED)
    assert outcome.action == "quarantined" and "null return path" in outcome.reason
    mail_ = await held(h)
    assert (mail_.source, mail_.envelope_sender, mail_.envelope_recipients) == (
        "smtp", "", ("it-help@example.com", "hr@example.com"))


async def test_a_copy_from_a_mailbox_keeps_the_envelope_known(h: Harness) -> None:
    """The same mail held again through a mailbox (which has no envelope) is one entry,
    and the envelope the push gave stays: a retry must still see MAIL FROM:<>."""
    delivered = mail("Re: Printer", sender="Robot <robot@vendor.example.net>",
                     message_id="<oof@vendor.example.net>", headers={"Return-Path": "<>"})
    await h.deliver(delivered, PUSHED)
    assert (await h.deliver(delivered, IT)).action == "quarantined"
    assert (await held(h)).envelope_sender == ""


async def test_mail_from_a_mailbox_has_no_envelope(h: Harness) -> None:
    await h.deliver(mail(headers={"Auto-Submitted": "auto-replied"}), IT)
    mail_ = await held(h)
    assert (mail_.envelope_sender, mail_.envelope_recipients) == (None, ())


async def test_a_schema_10_database_keeps_its_held_mail_without_an_envelope(
        tmp_path: Path) -> None:
    """Held by mailgate at schema 10: the next start adds the columns; the old entry has
    no envelope (a retry runs it as before), new ones get theirs (either engine)."""
    h = await harness(tmp_path)
    try:
        await h.deliver(OOF, PUSHED)
    finally:
        await h.store.close()
    target = database(tmp_path / "state")
    for column in ("envelope_sender", "envelope_recipients"):
        query(target, f"ALTER TABLE quarantine DROP COLUMN {column}")
    if isinstance(target, Path):
        query(target, "PRAGMA user_version = 10")
    else:
        query(target, "UPDATE schema_version SET version = 10")
    assert len(schema.MIGRATIONS) == len(pg_schema.MIGRATIONS) == 11
    h = await harness(tmp_path)
    try:
        assert await h.store.schema_version() == 11
        old = await held(h)
        assert (old.reason.startswith("auto_reply"), old.envelope_sender) == (True, None)
        await h.deliver(mail(message_id="<oof-new@example.net>", sender="x@example.net"),
                        PUSHED)
        [_, new] = await h.store.quarantined()
        entry = await quarantine.entry(h.store, new.id)
        assert entry is not None and entry.envelope_sender == ""
    finally:
        await h.store.close()
