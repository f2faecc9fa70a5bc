"""The hot lookups use their indexes (SQLite's own query plan, not a timing).

A lookup that scans a table is invisible in a test with ten tickets and costs seconds per
mail with a million (bench/scale.py); the plan shows it at any size.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.storage.gather import _by_message_ids
from tests.factories import harness


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
