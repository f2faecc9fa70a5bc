"""The hot lookups use their indexes (SQLite's own query plan, not a timing).

A lookup that scans a table is invisible in a test with ten tickets and costs seconds per
mail with a million (bench/scale.py); the plan shows it at any size.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailgate.storage import queries
from mailgate.storage.gather import _by_message_ids
from mailgate.storage.queries import TicketFilter, find_tickets, risk_horizons
from mailgate.storage.reports import report_rows
from mailgate.storage.store import Store
from tests.factories import example_directory, harness

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
# The tables a million tickets make big: tickets, their events and their SLA clocks, by
# name or by the aliases storage/queries.py and storage/reports.py give them.
BIG = {"tickets", "events", "sla_clocks", "t", "e", "c"}


def big_scans(plan: list) -> list[str]:
    """The plan's walks over the whole of a big table or one of its indexes."""
    return [step for step in scans(plan) if step.split()[1] in BIG]


def explaining(monkeypatch: pytest.MonkeyPatch) -> list[list]:
    """Make storage/queries.py and storage/reports.py explain each of their reads instead
    of running it: the plans, in order (the reads see no rows)."""
    plans: list[list] = []

    async def explain(store: Store, sql: str, params: Mapping[str, object],
                      committed: bool = False, binary: bool = False) -> list:
        plans.append(list(await store.conn.execute_fetchall(f"EXPLAIN QUERY PLAN {sql}",
                                                            params)))
        return []

    monkeypatch.setattr(queries, "read_rows", explain)
    return plans


def scans(plan: list) -> list[str]:
    """The plan's walks over a whole table or index ("SCAN ..."; "SEARCH" looks rows up)."""
    return [str(row[-1]) for row in plan if str(row[-1]).startswith("SCAN")]


@pytest.mark.sqlite_only("reads SQLite's EXPLAIN QUERY PLAN")
async def test_threading_by_message_id_searches_the_index(tmp_path: Path) -> None:
    h = await harness(tmp_path)
    try:
        sql = _by_message_ids(2, 3)
        ids = ["<a@x>", "<b@x>", "<c@x>"]
        plan = await h.store.fetch_all(f"EXPLAIN QUERY PLAN {sql}", ids * 3)
        assert not scans(plan), plan  # before the fix: "SCAN e USING INDEX events_message"
    finally:
        await h.store.close()


@pytest.mark.sqlite_only("reads SQLite's EXPLAIN QUERY PLAN")
async def test_ticket_list_picks_its_page_before_reading_clocks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = await harness(tmp_path)
    try:
        plans = explaining(monkeypatch)
        flt = TicketFilter(department="it", statuses=("open",))
        await find_tickets(h.store, flt, NOW, risk_horizons(example_directory(), NOW))
        [plan] = plans
        # before: "SCAN c" (every running clock of every ticket, then the 50 listed)
        assert not big_scans(plan), plan
    finally:
        await h.store.close()


# ANALYZE's figures from bench/scale.py's store of 200,000 tickets.
BIG_STORE_STATISTICS = [("tickets", None, "200000"),
                        ("tickets", "tickets_department_status", "200000 66667 13334"),
                        ("tickets", "tickets_created_at", "200000 1"),
                        ("sla_clocks", "sla_clocks", "400000 2 1"),
                        ("events", "events_ticket", "984097 5 1")]


@pytest.mark.sqlite_only("reads SQLite's EXPLAIN QUERY PLAN")
async def test_ticket_list_on_a_big_stores_statistics_looks_clocks_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = await harness(tmp_path)
    try:
        await h.store.conn.execute("ANALYZE")
        await h.store.conn.executemany("INSERT INTO sqlite_stat1 VALUES (?, ?, ?)",
                                       BIG_STORE_STATISTICS)
        await h.store.conn.execute("ANALYZE sqlite_schema")  # reload the statistics
        plans = explaining(monkeypatch)
        flt = TicketFilter(department="it", statuses=("open",))
        await find_tickets(h.store, flt, NOW, risk_horizons(example_directory(), NOW))
        [plan] = plans
        # with an inner join: "BLOOM FILTER ON c", built by reading every running clock
        assert not big_scans(plan) and not any("BLOOM" in str(row[-1]) for row in plan), plan
    finally:
        await h.store.close()


@pytest.mark.sqlite_only("reads SQLite's EXPLAIN QUERY PLAN")
@pytest.mark.parametrize("statistics", [False, True], ids=["no-analyze", "big-store-analyze"])
async def test_report_reads_the_period_and_the_backlog_by_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, statistics: bool) -> None:
    h = await harness(tmp_path)
    try:
        if statistics:
            await h.store.conn.execute("ANALYZE")
            await h.store.conn.executemany("INSERT INTO sqlite_stat1 VALUES (?, ?, ?)",
                                           BIG_STORE_STATISTICS)
            await h.store.conn.execute("ANALYZE sqlite_schema")
        plans = explaining(monkeypatch)
        await report_rows(h.store, example_directory(), NOW - timedelta(days=30), NOW)
        # the period's tickets, their clocks tallied, their replies, the backlog
        assert len(plans) == 4
        # before: "SCAN t" for the period's tickets, "SCAN e" for their replies; the
        # backlog "SCAN t USING COVERING INDEX tickets_department_status" (every ticket)
        assert not [big_scans(plan) for plan in plans if big_scans(plan)], plans
        plans.clear()
        await report_rows(h.store, example_directory(), NOW - timedelta(days=30), NOW,
                          ["it", "payroll"])
        assert not [big_scans(plan) for plan in plans if big_scans(plan)], plans
    finally:
        await h.store.close()
