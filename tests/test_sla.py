"""SLA levels in business time: when each warning, breach and re-escalation is due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.core.businesstime import BusinessCalendar, calendar_from_table
from mailgate.core.sla import (
    Clock,
    Escalation,
    Firing,
    LevelKind,
    Target,
    advance,
    next_level,
    time_left,
)
from tests.test_businesstime import INSTANTS, calendars

OFFICE = calendar_from_table("office", {
    "timezone": "Europe/Berlin",
    "hours": {day: ["09:00-17:00"] for day in ("mon", "tue", "wed", "thu", "fri")},
})
BERLIN = ZoneInfo("Europe/Berlin")
HOUR = 3600.0


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN).astimezone(UTC)


def test_levels_are_warnings_breach_then_bounded_re_escalations() -> None:
    levels = Escalation((0.9, 0.75), re_escalate_every=4 * HOUR).levels(4 * HOUR)
    kinds = [lv.kind for lv in levels]
    assert kinds[:3] == [LevelKind.WARNING, LevelKind.WARNING, LevelKind.BREACH]
    assert set(kinds[3:]) == {LevelKind.RE_ESCALATION} and len(kinds[3:]) == 10
    assert [lv.offset for lv in levels[:4]] == [3 * HOUR, 3.6 * HOUR, 4 * HOUR, 8 * HOUR]
    assert [lv.number for lv in levels] == list(range(1, len(levels) + 1))
    assert len(Escalation().levels(HOUR)) == 3  # no re-escalation unless configured


def test_friday_afternoon_request_warns_and_breaches_on_monday() -> None:
    # Friday 15:00 + 4 business hours (09-17) = Monday 11:00; 75 % = Friday 16:00 + 1 h.
    clock = Clock(Target.FIRST_RESPONSE, berlin(2026, 11, 27, 15), 4 * HOUR)
    level, at = next_level(clock, Escalation(), OFFICE) or (None, None)
    assert at == berlin(2026, 11, 30, 10)
    assert level is not None and level.kind is LevelKind.WARNING
    assert clock.due_at(OFFICE) == berlin(2026, 11, 30, 11)
    saturday = advance(clock, Escalation(), OFFICE, berlin(2026, 11, 28, 12))
    assert saturday.level is None and saturday.next_at == at


def test_after_downtime_only_the_latest_level_fires_and_earlier_are_skipped() -> None:
    clock = Clock(Target.FIRST_RESPONSE, berlin(2026, 11, 27, 15), 4 * HOUR)
    due = advance(clock, Escalation(), OFFICE, berlin(2026, 11, 30, 12))
    assert due.level is not None and due.level.kind is LevelKind.BREACH
    assert [lv.kind for lv in due.skipped] == [LevelKind.WARNING, LevelKind.WARNING]
    assert due.next_at is None  # nothing after the breach without re-escalation
    fired = Clock(clock.target, clock.started_at, clock.budget, fired=due.level.number)
    done = advance(fired, Escalation(), OFFICE, berlin(2026, 12, 4, 12))
    assert (done.level, done.next_at) == (None, None)


def test_pause_pushes_every_level_back_by_business_time_paused() -> None:
    start = berlin(2026, 11, 23, 9)  # Monday
    clock = Clock(Target.RESOLUTION, start, 8 * HOUR, paused_seconds=2 * HOUR)
    assert clock.due_at(OFFICE) == berlin(2026, 11, 24, 11)


def test_time_left_is_negative_when_overdue_in_business_time() -> None:
    clock = Clock(Target.FIRST_RESPONSE, berlin(2026, 11, 23, 9), 4 * HOUR)
    assert time_left(clock, OFFICE, berlin(2026, 11, 23, 10)) == 3 * HOUR
    assert time_left(clock, OFFICE, berlin(2026, 11, 24, 10)) == -(4 * HOUR + HOUR)


@given(budget=st.floats(60, 30 * 86400), start=st.integers(0, 4 * 365 * 86400),
       every=st.one_of(st.none(), st.floats(600, 86400)))
def test_level_instants_are_in_order(budget: float, start: int, every: float | None) -> None:
    begin = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=start)
    clock = Clock(Target.RESOLUTION, begin, budget)
    escalation = Escalation(re_escalate_every=every)
    instants = [clock.instant(OFFICE, lv.offset) for lv in escalation.levels(budget)]
    assert instants == sorted(instants)
    assert instants[0] >= begin


@given(budget=st.floats(60, 10 * 86400), start=st.integers(0, 365 * 86400))
def test_on_24x7_levels_are_plain_arithmetic(budget: float, start: int) -> None:
    begin = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=start)
    clock = Clock(Target.RESOLUTION, begin, budget)
    due = clock.due_at(BusinessCalendar.always())
    assert abs((due - begin).total_seconds() - budget) < 1e-3


def stepwise(clock: Clock, escalation: Escalation, calendar: BusinessCalendar,
             now: datetime) -> Firing:
    """advance() as first written: each level's instant in turn (the reference)."""
    due: list = []
    for level in escalation.levels(clock.budget)[clock.fired:]:
        at = clock.instant(calendar, level.offset)
        if at > now:
            return Firing(due[-1] if due else None, tuple(due[:-1]), at)
        due.append(level)
    return Firing(due[-1] if due else None, tuple(due[:-1]), None)


@settings(deadline=None, max_examples=300)
@given(calendar=st.one_of(calendars(), st.just(BusinessCalendar.always())), start=INSTANTS,
       now=INSTANTS, budget=st.integers(0, 40 * 3600), paused=st.integers(0, 20 * 3600),
       fired=st.integers(0, 6), every=st.one_of(st.none(), st.integers(600, 8 * 3600)),
       warn=st.lists(st.floats(0.05, 0.95), max_size=3),
       at_level=st.one_of(st.none(), st.integers(0, 14)), nudge=st.sampled_from([-1, 0, 1]))
def test_advance_measures_once_and_agrees_with_each_level_in_turn(
        calendar: BusinessCalendar, start: datetime, now: datetime, budget: int,
        paused: int, fired: int, every: int | None, warn: list[float],
        at_level: int | None, nudge: int) -> None:
    """Deciding by one elapsed-time measurement must fire exactly the levels that
    computing every level's instant would: same level, same skipped, same next instant,
    also at a level's very instant and a microsecond either side of it."""
    clock = Clock(Target.FIRST_RESPONSE, start, float(budget), float(paused), fired)
    escalation = Escalation(tuple(warn) or (0.75, 0.9), every)
    levels = escalation.levels(clock.budget)
    if at_level is not None and at_level < len(levels):
        now = clock.instant(calendar, levels[at_level].offset) + timedelta(microseconds=nudge)
    assert advance(clock, escalation, calendar, now) == \
        stepwise(clock, escalation, calendar, now)


def test_advance_compares_instants_not_wall_times_across_a_dst_gap() -> None:
    """Found by the property above: 02:00 in New York's spring-forward gap (fold=1) is
    06:00 UTC, a microsecond *before* a clock started at 01:00:00.000001 EST; compared by
    wall time (same tzinfo), it looked later and a zero-budget clock fired early."""
    from zoneinfo import ZoneInfo

    york = ZoneInfo("America/New_York")
    start = datetime(2026, 3, 8, 1, 0, 0, 1, tzinfo=york)
    now = datetime(2026, 3, 8, 2, 0, fold=1, tzinfo=york)
    clock = Clock(Target.FIRST_RESPONSE, start, 0.0)
    calendar = BusinessCalendar.always()
    assert advance(clock, Escalation(), calendar, now) == \
        stepwise(clock, Escalation(), calendar, now)
    assert advance(clock, Escalation(), calendar, now).level is None
