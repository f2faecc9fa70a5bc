"""The dependency view (who sends requests to whom) against a hand-computed fixture, the
organisation-wide weekly digest, and `mailgate report --dependencies`.

Example directory, office calendar (Europe/Berlin, UTC+1 in November): Monday-Thursday
09:00-12:30 and 13:30-17:30, Friday 09:00-12:30 and 13:30-15:00. Period: Monday 23 November
00:00 to Monday 30 November 15:00. People: alice, bob, carol (it), erin (facilities), grace,
heidi (payroll); ivan is listed without a department; ann is not listed.

  it -> facilities      alice  Mon 23 10:00, answered 11:00            1 h
                        bob    Tue 24 12:00, answered 16:00            0.5 + 2.5 = 3 h
                        carol+x Wed 25 09:00 (plus address), unanswered
                        -> 3 requests, 2 answered, median 2 h
  facilities -> payroll erin   Thu 26 15:00, answered 17:00            2 h
  payroll -> it         heidi  Mon 23 12:00, answered 14:00            0.5 + 0.5 = 1 h
                        grace  Thu 26 17:00, answered Fri 10:00        0.5 + 1 = 1.5 h
                        grace  Fri 27 14:30, answered Mon 30 09:30     0.5 + 0.5 = 1 h
                        -> 3 requests, 3 answered, median 1 h
  unknown -> it         ann    Mon 23 10:00, answered 12:00            2 h
                        ann    Tue 24 09:00, answered 13:30            3.5 h
                        ivan   Mon 30 10:00, unanswered
                        -> 3 requests, 2 answered, median 2 h 45 m
  unknown -> facilities ann    Wed 25 10:00, answered 11:00            1 h
  and alice -> payroll on 1 November: before the period, not counted.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from email import message_from_bytes
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailgate.config.settings import DigestConfig, load_config
from mailgate.core import dependencies
from mailgate.core.dependencies import UNKNOWN, RequestFacts, build_dependencies
from mailgate.core.report import Stat
from mailgate.errors import ConfigError
from mailgate.storage.reports import dependency_view
from mailgate.storage.store import Store
from mailgate.workers.digest import Digester
from tests.factories import ROOT, Harness, example_directory, harness
from tests.harness import database, database_table

BERLIN = ZoneInfo("Europe/Berlin")
H = 3600.0


def berlin(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=BERLIN)


SINCE, NOW = berlin(23, 0), berlin(30, 15)
PREFIX = {"it": "IT", "facilities": "FAC", "payroll": "PAY"}


async def insert(store: Store, requester: str, dept: str, created: datetime,
                 answered: datetime | None = None) -> None:
    row = await store.conn.execute_fetchall(
        "SELECT COALESCE(MAX(number), 1000) + 1 FROM tickets WHERE department = ?", (dept,))
    number = row[0][0]
    await store.conn.execute(
        """INSERT INTO tickets (ref, department, number, subject, requester, status,
               priority, created_at, updated_at, first_response_at)
           VALUES (?, ?, ?, 'x', ?, 'open', 'normal', ?, ?, ?)""",
        (f"{PREFIX[dept]}-{number}", dept, number, requester, created.timestamp(),
         created.timestamp(), answered.timestamp() if answered else None))


async def fixture(store: Store) -> None:
    await insert(store, "alice@example.com", "facilities", berlin(23, 10), berlin(23, 11))
    await insert(store, "bob@example.com", "facilities", berlin(24, 12), berlin(24, 16))
    await insert(store, "Carol+x@example.com", "facilities", berlin(25, 9))
    await insert(store, "erin@example.com", "payroll", berlin(26, 15), berlin(26, 17))
    await insert(store, "heidi@example.com", "it", berlin(23, 12), berlin(23, 14))
    await insert(store, "grace@example.com", "it", berlin(26, 17), berlin(27, 10))
    await insert(store, "grace@example.com", "it", berlin(27, 14, 30), berlin(30, 9, 30))
    await insert(store, "ann@example.com", "it", berlin(23, 10), berlin(23, 12))
    await insert(store, "ann@example.com", "it", berlin(24, 9), berlin(24, 13, 30))
    await insert(store, "ivan@example.com", "it", berlin(30, 10))
    await insert(store, "ann@example.com", "facilities", berlin(25, 10), berlin(25, 11))
    await insert(store, "alice@example.com", "payroll", berlin(1, 10), berlin(2, 10))
    await store.conn.commit()


EXPECTED = [  # (from, to, requests, answered, median business seconds)
    ("it", "facilities", 3, 2, 2 * H),
    ("facilities", "payroll", 1, 1, 2 * H),
    ("payroll", "it", 3, 3, 1 * H),
    (UNKNOWN, "it", 3, 2, 2.75 * H),
    (UNKNOWN, "facilities", 1, 1, 1 * H),
]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(database(tmp_path / "state"))
    yield store
    await store.close()


def test_grouping_and_medians_are_pure_arithmetic() -> None:
    t0 = datetime(2026, 11, 23, 10, tzinfo=BERLIN)
    from datetime import timedelta
    requests = [RequestFacts("a@x", "it", t0, t0 + timedelta(hours=1)),
                RequestFacts("a@x", "it", t0, t0 + timedelta(hours=3)),
                RequestFacts("b@x", "it", t0, None),
                RequestFacts("z@x", "hr", t0, t0 + timedelta(minutes=30))]
    view = build_dependencies(requests, {"a@x": "hr"}.get, since=t0, until=t0,
                              calendars={}, order=["it", "hr"])
    assert view.sources == ("hr", UNKNOWN) and view.targets == ("it", "hr")
    assert view.flow("hr", "it") is not None
    assert view.flow("hr", "it").first_response == Stat(2, 2 * H, 3 * H)  # type: ignore[union-attr]
    assert [(f.source, f.target, f.requests, f.answered) for f in view.flows] == [
        ("hr", "it", 2, 2), (UNKNOWN, "it", 1, 0), (UNKNOWN, "hr", 1, 1)]
    assert view.flow("hr", "hr") is None


async def test_dependency_view_matches_the_hand_computed_fixture(store: Store) -> None:
    await fixture(store)
    view = await dependency_view(store, example_directory(), SINCE, NOW)
    assert view.sources == ("it", "facilities", "payroll", UNKNOWN)
    assert view.targets == ("it", "facilities", "payroll")
    assert [(f.source, f.target, f.requests, f.answered, f.first_response.median)
            for f in view.flows] == EXPECTED

    text = dependencies.as_text(view)
    lines = text.splitlines()
    assert lines[2].split() == ["FROM", "TO", "REQUESTS", "ANSWERED", "FIRST", "RESPONSE",
                                "median"]
    assert lines[3].split() == ["it", "facilities", "3", "2", "2h"]
    assert lines[6].split() == ["unknown", "it", "3", "2", "2h", "45m"]

    data = dependencies.as_json(view)
    assert data["flows"][3] == {"from": "unknown", "to": "it", "requests": 3, "answered": 2,
                                "first_response_median_seconds": 2.75 * H}

    html = dependencies.as_html_section(view)
    assert "<script" not in html and "<table" in html
    assert html.count("<tr>") == 1 + len(view.sources)  # header row + one per source
    assert "median 2h 45m" in html

    only = await dependency_view(store, example_directory(), SINCE, NOW, ["payroll"])
    assert [(f.source, f.target) for f in only.flows] == [("facilities", "payroll"),
                                                          ("payroll", "it")]


async def test_no_requests_is_said_not_shown_as_an_empty_table(store: Store) -> None:
    view = await dependency_view(store, example_directory(), SINCE, NOW)
    assert view.flows == ()
    assert "(no requests in the period)" in dependencies.as_text(view)
    assert "No requests in the period" in dependencies.as_html_section(view)


def test_organisation_address_in_the_config(tmp_path: Path) -> None:
    path = tmp_path / "mailgate.toml"
    path.write_text('[outbox]\ndir = "out"\n[digest]\nweekly = "mon 08:00"\n'
                    'organisation = "Ops@Example.com"\n')
    assert load_config(path).digest == DigestConfig(0, datetime(2026, 1, 1, 8).time(),
                                                    "ops@example.com")
    path.write_text('[outbox]\ndir = "out"\n[digest]\nweekly = "mon 08:00"\n'
                    'organisation = "ops"\n')
    with pytest.raises(ConfigError) as problem:
        load_config(path)
    assert any("digest.organisation: expected one mail address" in p
               for p in problem.value.problems)


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    h = await harness(tmp_path)
    yield h
    await h.store.close()


async def test_the_organisation_digest_goes_once_a_week_with_the_dependency_view(
        h: Harness) -> None:
    await fixture(h.store)
    config = DigestConfig(0, datetime(2026, 1, 1, 8).time(), "ops@example.com")
    digester = Digester(h.store, h.current(digest=config), h.clock, lambda: None)
    h.clock.now = berlin(30, 8, 30)
    queued = await digester.run_once()
    assert queued == ["digest.it.20261130@example.com", "digest.payroll.20261130@example.com",
                      "digest.organisation.20261130@example.com"]
    assert await digester.run_once() == []  # exactly once
    rows = await h.rows("SELECT mail_from, recipients, raw FROM outbox "
                        "WHERE message_id LIKE 'digest.organisation.%'")
    assert len(rows) == 1
    mail_from, recipients, raw = rows[0]
    assert mail_from == "it-help@example.com"
    assert json.loads(recipients) == ["ops@example.com"]
    message = message_from_bytes(raw)
    assert message["Subject"] == "Weekly report, all departments: 23 Nov - 30 Nov 2026"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Mailgate-Digest"] == "organisation"
    parts = {p.get_content_type(): p.get_payload(decode=True).decode()
             for p in message.walk() if not p.is_multipart()}
    text, html = parts["text/plain"], parts["text/html"]
    # The report for all departments (the period ends at 08:00, before ivan's request) ...
    assert next(line for line in text.splitlines() if line.startswith("all ")).split()[1] \
        == "10"
    # ... and the dependency view, in text and as a heat-map table.
    assert any(line.split() == ["payroll", "it", "3", "3", "1h"]
               for line in text.splitlines())
    assert "who sends requests to whom" in text
    assert "Dependencies: who sends" in html and "<script" not in html
    # Without an organisation address only the heads get theirs.
    h.clock.now = datetime(2026, 12, 7, 8, 0, tzinfo=BERLIN)
    plain = Digester(h.store, h.current(digest=DigestConfig(0, config.at)), h.clock,
                     lambda: None)
    assert len(await plain.run_once()) == 2


def test_cli_report_dependencies(tmp_path: Path) -> None:
    import asyncio
    import subprocess
    import sys

    config = tmp_path / "mailgate.toml"
    config.write_text(f'[state]\ndir = "{tmp_path / "state"}"\n[directory]\npath = '
                      f'"{ROOT / "config" / "directory.example.toml"}"\n[outbox]\n'
                      f'dir = "{tmp_path / "out"}"\n' + database_table(tmp_path / "state"))

    async def seed() -> None:
        store = await Store.open(database(tmp_path / "state"))
        now = datetime.now(BERLIN)
        from datetime import timedelta
        await insert(store, "grace@example.com", "it", now - timedelta(days=2))
        await insert(store, "ann@example.com", "facilities", now - timedelta(days=1))
        await store.conn.commit()
        await store.close()

    asyncio.run(seed())

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mailgate", "--config", str(config),
                               "report", "--dependencies", *args], capture_output=True,
                              text=True, timeout=60, cwd=ROOT)

    done = run("--since", "7d")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("mailgate dependencies ")
    assert ["payroll", "it", "1", "0", "n/a"] in [line.split() for line in lines]
    assert ["unknown", "facilities", "1", "0", "n/a"] in [line.split() for line in lines]
    data = json.loads(run("--json").stdout)
    assert [(f["from"], f["to"], f["requests"]) for f in data["flows"]] == [
        ("payroll", "it", 1), ("unknown", "facilities", 1)]
    assert "<table" in run("--html").stdout
