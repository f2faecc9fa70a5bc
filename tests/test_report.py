"""Department reports against a hand-computed fixture, and the HTML form in a real browser.

Rows are inserted directly (no pipeline), times in Europe/Berlin (UTC+1 in November). The
example directory's office calendar: Monday-Thursday 09:00-12:30 and 13:30-17:30 (7.5 h),
Friday 09:00-12:30 and 13:30-15:00. The period is Monday 23 November 00:00 to Monday 30
November 15:00 (now).

IT, requests in the period (business time from created):
  1  Mon 23 10:00, answered Mon 11:00 (1 h), resolved Mon 14:30 (2.5 h + 1 h = 3.5 h),
     one agent answer -> first touch. Response due Mon 15:00, met; resolution met.
  2  Mon 23 17:00, answered Tue 10:00 (0.5 h + 1 h = 1.5 h), resolved Wed 10:00
     (0.5 + 7.5 + 1 = 9 h), two agent answers. Both clocks met in time.
  3  Tue 24 12:00, answered Tue 14:00 (0.5 + 0.5 = 1 h), open. Resolution due Fri 14:30:
     overdue now, counts as missed.
  4  Fri 27 14:00, answered Mon 30 13:00 (1 h + 3.5 h = 4.5 h) after its due time Mon
     12:00: response missed. The requester's own reply is not an agent answer.
  5  Mon 30 09:00, unanswered, response due 13:00 -> overdue, missed.
  and one older open ticket (1 November): backlog only.
First response [1, 1, 1.5, 4.5] h: median 1 h 15 m, p90 (nearest rank 4 of 4) 4 h 30 m.
Resolution [3.5, 9] h: median 6 h 15 m, p90 9 h. First touch 1 of 2 resolved.
SLA response: met in time 3 of 5; resolution: 2 of 3 ended or overdue (4 and 5 still run).
Backlog 4 (3, 4, 5 and the old one).

Facilities: one request Tue 24 10:00, unanswered, response due Tue 14:00 -> 0 of 1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailgate.core.report import Rate, Satisfaction, Stat, as_html, as_json, as_text
from mailgate.storage.reports import columns, department_report
from mailgate.storage.store import Store
from tests.environment import missing
from tests.factories import example_directory
from tests.harness import database

BERLIN = ZoneInfo("Europe/Berlin")
H = 3600.0


def berlin(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=BERLIN)


SINCE, NOW = berlin(23, 0), berlin(30, 15)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(database(tmp_path / "state"))
    yield store
    await store.close()


class Rows:
    def __init__(self, store: Store) -> None:
        self.conn = store.conn
        self.numbers: dict[str, int] = {}

    async def ticket(self, dept: str, created: datetime, *, answered: datetime | None = None,
                     resolved: datetime | None = None, status: str = "open") -> int:
        prefix = {"it": "IT", "facilities": "FAC"}[dept]
        number = self.numbers[prefix] = self.numbers.get(prefix, 1000) + 1
        cur = await self.conn.execute(
            """INSERT INTO tickets (ref, department, number, subject, requester, status,
                   priority, created_at, updated_at, first_response_at, resolved_at)
               VALUES (?, ?, ?, 'x', 'ann@example.com', ?, 'normal', ?, ?, ?, ?)""",
            (f"{prefix}-{number}", dept, number, "resolved" if resolved else status,
             created.timestamp(), created.timestamp(),
             answered.timestamp() if answered else None,
             resolved.timestamp() if resolved else None))
        return int(cur.lastrowid or 0)

    async def clock(self, ticket: int, target: str, due: datetime,
                    met: datetime | None = None) -> None:
        await self.conn.execute(
            "INSERT INTO sla_clocks (ticket, target, started_at, seconds, due_at, met_at) "
            "VALUES (?, ?, 0, 0, ?, ?)",
            (ticket, target, due.timestamp(), met.timestamp() if met else None))

    async def reply(self, ticket: int, actor: str, at: datetime) -> None:
        await self.conn.execute("INSERT INTO events (ticket, at, kind, actor) "
                                "VALUES (?, ?, 'reply', ?)", (ticket, at.timestamp(), actor))


async def fixture(store: Store) -> None:
    rows = Rows(store)
    t1 = await rows.ticket("it", berlin(23, 10), answered=berlin(23, 11),
                           resolved=berlin(23, 14, 30))
    await rows.clock(t1, "first_response", berlin(23, 15), berlin(23, 11))
    await rows.clock(t1, "resolution", berlin(26, 11), berlin(23, 14, 30))
    await rows.reply(t1, "alice@example.com", berlin(23, 11))
    t2 = await rows.ticket("it", berlin(23, 17), answered=berlin(24, 10),
                           resolved=berlin(25, 10))
    await rows.clock(t2, "first_response", berlin(24, 12, 30), berlin(24, 10))
    await rows.clock(t2, "resolution", berlin(27, 10), berlin(25, 10))
    await rows.reply(t2, "alice@example.com", berlin(24, 10))
    await rows.reply(t2, "bob@example.com", berlin(25, 9))
    t3 = await rows.ticket("it", berlin(24, 12), answered=berlin(24, 14))
    await rows.clock(t3, "first_response", berlin(24, 16), berlin(24, 14))
    await rows.clock(t3, "resolution", berlin(27, 14, 30))
    await rows.reply(t3, "alice@example.com", berlin(24, 14))
    t4 = await rows.ticket("it", berlin(27, 14), answered=berlin(30, 13))
    await rows.clock(t4, "first_response", berlin(30, 12), berlin(30, 13))
    await rows.clock(t4, "resolution", berlin(30, 17, 30))
    await rows.reply(t4, "ann@example.com", berlin(30, 9))
    await rows.reply(t4, "bob@example.com", berlin(30, 13))
    t5 = await rows.ticket("it", berlin(30, 9), status="new")
    await rows.clock(t5, "first_response", berlin(30, 13))
    await rows.clock(t5, "resolution", berlin(30, 17, 30))  # not due yet: not counted
    await rows.ticket("it", berlin(1, 10))  # before the period: backlog only
    fac = await rows.ticket("facilities", berlin(24, 10), status="new")
    await rows.clock(fac, "first_response", berlin(24, 14))


def test_median_and_nearest_rank_p90() -> None:
    assert Stat.of([]) == Stat(0, None, None)
    assert Stat.of([3.0]) == Stat(1, 3.0, 3.0)
    assert Stat.of([4, 1, 3, 2]) == Stat(4, 2.5, 4)
    assert Stat.of(list(range(1, 11))) == Stat(10, 5.5, 9)
    assert Stat.of(list(range(1, 12))) == Stat(11, 6, 10)
    assert Rate(0, 0).value is None


async def test_figures_match_the_hand_computed_fixture(store: Store) -> None:
    await fixture(store)
    report = await department_report(store, example_directory(), SINCE, NOW)
    it, facilities, payroll = report.departments
    assert (it.key, facilities.key, payroll.key) == ("it", "facilities", "payroll")
    assert it.requests_in == 5
    assert it.first_response == Stat(4, 1.25 * H, 4.5 * H)
    assert it.resolution == Stat(2, 6.25 * H, 9 * H)
    assert it.first_touch == Rate(1, 2)
    assert it.sla_response == Rate(3, 5)
    assert it.sla_resolution == Rate(2, 3)
    assert it.backlog == 4
    assert it.satisfaction in (None, Satisfaction(0, None))  # before/after schema 4
    counts = {d.day: n for d, n in it.per_day if n}
    assert counts == {23: 2, 24: 1, 27: 1, 30: 1}
    assert len(it.per_day) == 8
    assert facilities.requests_in == 1 and facilities.backlog == 1
    assert facilities.first_response == Stat(0, None, None)
    assert facilities.sla_response == Rate(0, 1)
    assert facilities.first_touch == Rate(0, 0)
    assert payroll.requests_in == 0 and payroll.sla_response == Rate(0, 0)
    assert report.total is not None
    assert report.total.requests_in == 6 and report.total.backlog == 5
    assert report.total.sla_response == Rate(3, 6)

    text = as_text(report)
    lines = text.splitlines()
    it_line = next(line for line in lines if line.startswith("it "))
    assert it_line.split() == ["it", "5", "1h", "15m", "/", "4h", "30m", "6h", "15m", "/",
                               "9h", "50%", "(1/2)", "60%", "(3/5)", "67%", "(2/3)", "4",
                               "n/a"]
    fac_line = next(line for line in lines if line.startswith("facilities "))
    assert fac_line.split() == ["facilities", "1", "n/a", "n/a", "n/a", "0%", "(0/1)", "n/a",
                                "1", "n/a"]
    assert ("satisfaction ratings are not recorded" in text) == (it.satisfaction is None)
    data = as_json(report)
    assert data["departments"][0]["first_response"] == {
        "count": 4, "median_seconds": 4500.0, "p90_seconds": 16200.0}
    assert data["departments"][0]["per_day"]["2026-11-23"] == 2


async def test_one_department_and_ratings_when_the_schema_has_them(store: Store) -> None:
    await fixture(store)
    if "rating" not in await columns(store, "tickets"):  # before schema 4
        await store.conn.execute("ALTER TABLE tickets ADD COLUMN rating INTEGER")
    await store.conn.execute("UPDATE tickets SET rating = 5 WHERE ref = 'IT-1001'")
    await store.conn.execute("UPDATE tickets SET rating = 2 WHERE ref = 'IT-1002'")
    report = await department_report(store, example_directory(), SINCE, NOW, ["it"])
    assert [d.key for d in report.departments] == ["it"]
    assert report.total is None
    sat = report.departments[0].satisfaction
    assert sat is not None and (sat.count, sat.average) == (2, 3.5)
    assert "3.5/5 (2)" in as_text(report)


async def test_html_is_one_self_contained_page_with_a_chart_per_department(
        store: Store) -> None:
    await fixture(store)
    report = await department_report(store, example_directory(), SINCE, NOW)
    html = as_html(report)
    assert html.count("<svg") == 3
    lowered = html.lower()
    for forbidden in ("<script", "<link", "src=", "@import", "url("):
        assert forbidden not in lowered, forbidden
    assert "IT Service Desk (it)" in html
    assert "2026-11-23: 2" in html  # bar tooltips carry the numbers


CHROMIUM = "/usr/bin/chromium"


def chromium() -> str:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    # "Where available" (issue 6): scripts/dev.py installs it when apt can; a machine where
    # it cannot must not block the rest of the suite.
    missing("Chromium is not installed (apt-get install chromium, or run "
                "`python3 scripts/dev.py test` as root to install it)")


async def test_html_renders_in_headless_chromium(store: Store, tmp_path: Path) -> None:
    binary = chromium()
    await fixture(store)
    report = await department_report(store, example_directory(), SINCE, NOW)
    page = tmp_path / "report.html"
    page.write_text(as_html(report))
    shot = tmp_path / "report.png"
    profile = tmp_path / "profile"
    result = subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={profile}", "--window-size=1100,1400",
         f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert shot.exists(), result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # A blank page compresses to a few kB; text, tables and bars do not.
    assert len(data) > 20_000, len(data)
    if os.environ.get("MAILGATE_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["MAILGATE_KEEP_SCREENSHOT"])


async def test_an_actor_with_a_line_feed_is_one_actor(store: Store) -> None:
    # The store hands a request's reply actors over joined by line feeds; an actor that
    # has one in it (bad input is data) must still count once, and as nobody's agent.
    rows = Rows(store)
    ticket = await rows.ticket("it", berlin(23, 10), answered=berlin(23, 11),
                               resolved=berlin(23, 14))
    await rows.reply(ticket, "alice@example.com", berlin(23, 11))
    await rows.reply(ticket, "alice@example.com\nalice@example.com", berlin(23, 12))
    report = await department_report(store, example_directory(), SINCE, NOW, ["it"])
    [it] = report.departments
    assert it.first_touch == Rate(1, 1)  # one agent answer, not three


async def test_a_request_of_another_period_numbered_between_the_periods_is_left_out(
        store: Store) -> None:
    # The store reads the period's clocks and replies by the range of ticket ids its
    # requests lie in; a request that came in before the period but was numbered within
    # that range (imported, say) is in the range and must not be counted.
    rows = Rows(store)
    first = await rows.ticket("it", berlin(23, 10), answered=berlin(23, 11),
                              resolved=berlin(23, 14))
    await rows.clock(first, "first_response", berlin(23, 15), berlin(23, 11))
    await rows.reply(first, "alice@example.com", berlin(23, 11))
    older = await rows.ticket("it", berlin(2, 10), answered=berlin(2, 11),
                              resolved=berlin(23, 12))
    await rows.clock(older, "first_response", berlin(2, 12), berlin(2, 11))
    await rows.clock(older, "resolution", berlin(3, 12), berlin(23, 12))
    await rows.reply(older, "bob@example.com", berlin(2, 11))
    last = await rows.ticket("it", berlin(24, 10), answered=berlin(24, 16),
                             resolved=berlin(24, 17))
    await rows.clock(last, "first_response", berlin(24, 14), berlin(24, 16))
    await rows.reply(last, "alice@example.com", berlin(24, 16))
    await rows.reply(last, "bob@example.com", berlin(24, 16, 30))
    report = await department_report(store, example_directory(), SINCE, NOW, ["it"])
    [it] = report.departments
    assert first < older < last
    assert it.requests_in == 2
    assert it.first_touch == Rate(1, 2)  # the first: one answer; the last: two
    assert it.sla_response == Rate(1, 2)  # the first in time, the last late
    assert it.sla_resolution == Rate(0, 0)
