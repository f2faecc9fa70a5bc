"""The weekly digest to department heads: schedule, exactly once, and its content."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time
from email import message_from_bytes
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailgate.config.settings import DigestConfig, load_config
from mailgate.errors import ConfigError
from mailgate.workers.digest import Digester, last_slot
from tests.factories import Harness, harness, mail

BERLIN = ZoneInfo("Europe/Berlin")
MONDAY_8 = DigestConfig(0, time(8, 0))


def berlin(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=BERLIN)


def test_parse_and_config(tmp_path: Path) -> None:
    assert DigestConfig.parse("mon 08:00") == MONDAY_8
    assert DigestConfig.parse("Friday 16:30") == DigestConfig(4, time(16, 30))
    for bad in ("08:00", "someday 08:00", "mon 25:00", ""):
        with pytest.raises(ValueError):
            DigestConfig.parse(bad)
    path = tmp_path / "mailgate.toml"
    path.write_text('[outbox]\ndir = "out"\n[digest]\nweekly = "mon 8 o\'clock"\n')
    with pytest.raises(ConfigError) as problem:
        load_config(path)
    assert any("digest.weekly: expected a weekday" in p for p in problem.value.problems)
    path.write_text('[outbox]\ndir = "out"\n[digest]\nweekly = "mon 08:00"\n')
    assert load_config(path).digest == MONDAY_8


def test_last_slot_is_the_latest_local_monday_8() -> None:
    assert last_slot(MONDAY_8, BERLIN, berlin(24, 9)) == berlin(23, 8)
    assert last_slot(MONDAY_8, BERLIN, berlin(30, 8)) == berlin(30, 8)
    assert last_slot(MONDAY_8, BERLIN, berlin(30, 7, 59)) == berlin(23, 8)
    # Across the DST change (25 October): still 08:00 local.
    assert last_slot(MONDAY_8, BERLIN, datetime(2026, 10, 27, tzinfo=UTC)).hour == 8


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    h = await harness(tmp_path)
    yield h
    await h.store.close()


def digester(h: Harness, config: DigestConfig | None = MONDAY_8) -> Digester:
    return Digester(h.store, h.current(digest=config), h.clock, lambda: None)


async def test_each_head_gets_one_digest_per_week(h: Harness) -> None:
    h.clock.now = berlin(24, 10)
    await h.deliver(mail("VPN down"))
    h.clock.now = berlin(30, 8, 30)
    queued = await digester(h).run_once()
    # IT and Payroll have a head; Facilities has only a lead and gets none.
    assert queued == ["digest.it.20261130@example.com", "digest.payroll.20261130@example.com"]
    assert await digester(h).run_once() == []  # exactly once
    rows = await h.rows("SELECT kind, recipients, raw FROM outbox WHERE kind = 'digest' "
                        "ORDER BY id")
    assert [(k, json.loads(r)) for k, r, _ in rows] == [
        ("digest", ["dave@example.com"]), ("digest", ["heidi@example.com"])]
    message = message_from_bytes(rows[0][2])
    assert message["Subject"] == "Weekly report IT Service Desk: 23 Nov - 30 Nov 2026"
    assert message["Auto-Submitted"] == "auto-generated"
    parts = {p.get_content_type(): p.get_payload(decode=True).decode()
             for p in message.walk() if not p.is_multipart()}
    text = parts["text/plain"]
    it_line = next(line for line in text.splitlines() if line.startswith("it "))
    assert it_line.split()[:2] == ["it", "1"]
    assert "<svg" in parts["text/html"]

    h.clock.now = berlin(30, 8, 30).replace(day=2, month=12)  # Wednesday: nothing due
    assert await digester(h).run_once() == []
    h.clock.now = datetime(2026, 12, 7, 8, 0, tzinfo=BERLIN)  # next Monday
    assert len(await digester(h).run_once()) == 2


async def test_a_digest_missed_by_more_than_a_day_is_skipped(h: Harness) -> None:
    h.clock.now = berlin(24, 8, 1)  # Tuesday: Monday's slot is a day and a minute old
    assert await digester(h).run_once() == []
    assert await digester(h, None).run_once() == []
