"""SLA risk for `mailgate status` and the filters of `mailgate tickets`, on real pipeline rows.

The example IT desk works 09:00-12:30 and 13:30-17:30 Europe/Berlin (UTC+1 in November)
and owes a first response within 4 business hours. Times below are UTC.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailgate.storage.queries import TicketFilter, find_tickets, risk_horizons, sla_overview
from tests.factories import FACILITIES, Harness, harness, mail
from tests.harness import database


def utc(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    h = await harness(tmp_path)
    yield h
    await h.store.close()


async def states(h: Harness, now: datetime, **filters: object) -> dict[str, str | None]:
    horizons = risk_horizons(h.pipeline.directory, now)
    rows = await find_tickets(h.store, TicketFilter(**filters), now,  # type: ignore[arg-type]
                              horizons)
    return {r.ticket.ref: r.sla for r in rows}


async def overview(h: Harness, now: datetime) -> dict[str, tuple[int, int, int]]:
    load = await sla_overview(h.store, now, risk_horizons(h.pipeline.directory, now))
    return {d.department: (d.open, d.at_risk, d.breached) for d in load}


async def request(h: Harness, at: datetime, n: int, **kwargs: object) -> None:
    h.clock.now = at
    outcome = await h.deliver(mail(f"Request {n}", message_id=f"<r{n}@example.com>",
                                   **kwargs))  # type: ignore[arg-type]
    assert outcome.action == "ticket"


async def test_ok_then_at_risk_within_a_business_hour_then_breached(h: Harness) -> None:
    await request(h, utc(24, 8), 1)  # 09:00 Berlin: due 14:00 Berlin (lunch in between)
    assert await states(h, utc(24, 10)) == {"IT-1001": "ok"}  # 2 business hours left
    # 12:15 Berlin: 1 h 45 min on the wall clock, but only 45 business minutes (lunch).
    assert await states(h, utc(24, 11, 15)) == {"IT-1001": "at_risk"}
    assert await overview(h, utc(24, 11, 15)) == {"it": (1, 1, 0)}
    assert await states(h, utc(24, 13, 1)) == {"IT-1001": "breached"}
    assert await overview(h, utc(24, 13, 1)) == {"it": (1, 0, 1)}


async def test_a_fired_warning_puts_a_ticket_at_risk_early(h: Harness) -> None:
    await request(h, utc(24, 8), 1)
    await h.store.conn.execute("UPDATE sla_clocks SET fired = 1 WHERE target = "
                               "'first_response'")
    assert await states(h, utc(24, 8, 30)) == {"IT-1001": "at_risk"}


async def test_an_answer_stops_the_response_clock_and_resolution_runs_on(h: Harness) -> None:
    await request(h, utc(24, 8), 1)
    h.clock.now = utc(24, 9)
    await h.deliver(mail("Re: [IT-1001] Request 1", sender="alice@example.com",
                         message_id="<a1@example.com>",
                         headers={"In-Reply-To": await h.key_from("alice@example.com")}))
    # The resolution clock (24 business hours) is far from due on Wednesday.
    assert await states(h, utc(25, 13)) == {"IT-1001": "ok"}
    assert await overview(h, utc(25, 13)) == {"it": (1, 0, 0)}


async def test_paused_tickets_are_breached_only_if_overdue_when_paused(h: Harness) -> None:
    await request(h, utc(24, 8), 1)
    await request(h, utc(24, 8), 2)
    await h.store.conn.execute("UPDATE tickets SET paused_at = ?, status = 'waiting' "
                               "WHERE ref = 'IT-1001'", (utc(24, 9).timestamp(),))
    await h.store.conn.execute("UPDATE tickets SET paused_at = ?, status = 'waiting' "
                               "WHERE ref = 'IT-1002'", (utc(24, 13, 30).timestamp(),))
    assert await states(h, utc(25, 12)) == {"IT-1002": "breached", "IT-1001": "ok"}


async def test_resolved_tickets_have_no_sla_state(h: Harness) -> None:
    await request(h, utc(24, 8), 1)
    await h.store.conn.execute("UPDATE tickets SET status = 'resolved'")
    assert await states(h, utc(26, 8)) == {"IT-1001": None}
    assert await overview(h, utc(26, 8)) == {}


async def test_filters_combine(h: Harness) -> None:
    await request(h, utc(24, 8), 1)  # due 13:00 UTC
    await request(h, utc(24, 10), 2, sender="bob@other.org")  # due 15:00 UTC
    h.clock.now = utc(24, 10)
    await h.deliver(mail("Broken door", message_id="<f1@example.com>",
                         to="facilities@example.com"), FACILITIES)
    now = utc(24, 13, 30)
    assert await states(h, now) == {"FAC-1001": "ok", "IT-1002": "ok", "IT-1001": "breached"}
    assert await states(h, now, breached=True) == {"IT-1001": "breached"}
    assert await states(h, now, department="it") == {"IT-1002": "ok", "IT-1001": "breached"}
    assert await states(h, now, requester="@other.org") == {"IT-1002": "ok"}
    assert await states(h, now, requester="ANN@example.com", department="facilities") == {
        "FAC-1001": "ok"}
    assert await states(h, now, older_than=timedelta(hours=4)) == {"IT-1001": "breached"}
    assert await states(h, now, statuses=("open",)) == {}
    assert await states(h, now, statuses=("new", "open"), limit=1) == {"FAC-1001": "ok"}
    # 14:40 UTC: IT-1002 has 20 business minutes left, FAC-1001 too (same calendar).
    later = utc(24, 14, 40)
    assert await states(h, later, at_risk=True) == {"FAC-1001": "at_risk",
                                                    "IT-1002": "at_risk"}
    assert await states(h, later, at_risk=True, breached=True, department="it") == {
        "IT-1002": "at_risk", "IT-1001": "breached"}
    assert await overview(h, later) == {"facilities": (1, 1, 0), "it": (2, 1, 1)}


async def test_a_domain_search_ignores_case_and_takes_the_domain_literally(
        h: Harness) -> None:
    """The same answers on both engines: PostgreSQL's LIKE minds case, SQLite's does not,
    and `_` in a domain is a character, not LIKE's any-one-character."""
    await request(h, utc(24, 8), 1, sender="Bob <Bob@Other.ORG>")
    await request(h, utc(24, 8), 2, sender="carol@other.org")
    await request(h, utc(24, 8), 3, sender="dan@otherxorg.net")
    # A requester kept as it was written (addresses are lower-cased on intake now).
    await h.store.conn.execute("UPDATE tickets SET requester = 'Carol@OTHER.org' "
                               "WHERE ref = 'IT-1002'")
    now = utc(24, 9)
    assert await states(h, now, requester="@OTHER.org") == {"IT-1002": "ok", "IT-1001": "ok"}
    assert await states(h, now, requester="@other_org") == {}
    assert await states(h, now, requester="bob@other.org") == {"IT-1001": "ok"}


async def test_the_overview_is_in_department_order(h: Harness) -> None:
    await request(h, utc(24, 8), 1)
    h.clock.now = utc(24, 8)
    await h.deliver(mail("Broken door", message_id="<f1@example.com>",
                         to="facilities@example.com"), FACILITIES)
    load = await sla_overview(h.store, utc(24, 9), risk_horizons(h.pipeline.directory,
                                                                  utc(24, 9)))
    assert [d.department for d in load] == ["facilities", "it"]


# --- the commands, on rows placed relative to the real clock ----------------------------

def test_status_tickets_and_report_commands(tmp_path: Path) -> None:
    import asyncio
    import json

    from mailgate.storage.store import Store
    from tests.test_cli import GOOD, run, write_config

    config = write_config(tmp_path, GOOD.replace("imap.example.com", "127.0.0.1"))
    now = datetime.now(UTC).timestamp()

    async def seed() -> None:
        store = await Store.open(database(tmp_path / "state"))
        rows = [("IT-1001", "it", "ann@example.com", now - 3 * 86400, now - 3600, 0),
                ("IT-1002", "it", "bob@example.com", now - 600, now + 30 * 86400, 1),
                ("IT-1003", "it", "cy@other.org", now - 300, now + 30 * 86400, 0),
                ("FAC-1001", "facilities", "ann@example.com", now - 60, now - 1, 0)]
        for number, (ref, dept, who, created, due, fired) in enumerate(rows, 1001):
            cur = await store.conn.execute(
                "INSERT INTO tickets (ref, department, number, subject, requester, status, "
                "priority, created_at, updated_at) VALUES (?, ?, ?, 'Help', ?, 'new', "
                "'normal', ?, ?)", (ref, dept, number, who, created, created))
            await store.conn.execute(
                "INSERT INTO sla_clocks (ticket, target, started_at, seconds, due_at, fired) "
                "VALUES (?, 'first_response', ?, 0, ?, ?)", (cur.lastrowid, created, due, fired))
        await store.close()

    asyncio.run(seed())
    env = {"MAILGATE_TEST_SECRET": "x"}
    cfg = ("--config", str(config))

    def tickets(*args: str) -> list[str]:
        result = run(*cfg, "tickets", "--json", *args, env=env)
        assert result.returncode == 0, result.stderr
        return [t["ref"] for t in json.loads(result.stdout)]

    assert tickets("--breached") == ["FAC-1001", "IT-1001"]
    assert tickets("--at-risk") == ["IT-1002"]
    assert tickets("--department", "it", "--older-than", "2d") == ["IT-1001"]
    assert tickets("--requester", "@other.org", "--status", "active") == ["IT-1003"]
    assert tickets("--status", "resolved") == []
    bad = run(*cfg, "tickets", "--older-than", "soon", env=env)
    assert bad.returncode == 2 and "not a duration" in bad.stderr
    table = run(*cfg, "tickets", env=env).stdout.splitlines()
    assert table[0].split()[:7] == ["TICKET", "DEPT", "STATUS", "PRIORITY", "CREATED", "AGE",
                                    "SLA"]
    assert "BREACHED" in table[-1] and table[-1].startswith("IT-1001 ")
    assert len({line.index("STATUS") if "STATUS" in line else line.index("new")
                for line in table}) == 1  # aligned columns

    status = json.loads(run(*cfg, "status", "--json", env=env).stdout)
    assert status["sla"] == {"facilities": {"open": 1, "at_risk": 0, "breached": 1},
                             "it": {"open": 3, "at_risk": 1, "breached": 1}}
    assert status["open_tickets"] == {"facilities": 1, "it": 3}
    text = run(*cfg, "status", env=env).stdout
    assert any(line.split() == ["it", "3", "1", "1"] for line in text.splitlines()), text

    report = json.loads(run(*cfg, "report", "--since", "7d", "--json", env=env).stdout)
    it = report["departments"][0]
    assert (it["department"], it["requests_in"], it["backlog"]) == ("it", 3, 3)
    assert it["sla_response"] == {"hits": 0, "total": 1, "rate": 0.0}
    one = json.loads(run(*cfg, "report", "--since", "2d", "--department", "facilities",
                         "--json", env=env).stdout)
    assert [d["department"] for d in one["departments"]] == ["facilities"]
    html = run(*cfg, "report", "--html", env=env).stdout
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html
    plain = run(*cfg, "report", env=env).stdout
    assert plain.splitlines()[2].startswith("DEPARTMENT")
