"""Business-calendar arithmetic: worked examples, DST days, properties, and TOML parsing."""

from __future__ import annotations

import math
import sys
import tomllib
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.core.businesstime import (
    HOLIDAY_YEARS,
    WEEKDAYS,
    BusinessCalendar,
    HolidayLookup,
    Interval,
    calendar_from_table,
    default_holiday_lookup,
)
from mailgate.errors import ConfigError

BERLIN = ZoneInfo("Europe/Berlin")
HOUR = 3600.0
US = timedelta(microseconds=1)
WORKWEEK = ("mon", "tue", "wed", "thu", "fri")


def berlin(year: int, month: int, day: int, hour: int, minute: int, second: int = 0
           ) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=BERLIN)


def calendar(hours: dict[str, list[str]] | str, **extra: object) -> BusinessCalendar:
    return calendar_from_table("office", {"timezone": "Europe/Berlin", "hours": hours, **extra})


def nine_to_five(**extra: object) -> BusinessCalendar:
    return calendar({day: ["09:00-17:00"] for day in WORKWEEK}, **extra)


def problems_of(table: dict[str, object], holiday_lookup: HolidayLookup | None = None
                ) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        calendar_from_table("office", table, holiday_lookup)
    return caught.value.problems


# -- worked examples ----------------------------------------------------------------------


def test_friday_afternoon_plus_four_hours_is_monday_noon() -> None:
    # 2026-03-06 is a Friday: one hour on Friday, three on Monday.
    result = nine_to_five().add(berlin(2026, 3, 6, 16, 0), 4 * HOUR)
    assert result == berlin(2026, 3, 9, 12, 0)
    assert result.tzinfo is UTC


def test_lunch_break_is_not_counted() -> None:
    cal = calendar({"mon": ["09:00-12:00", "13:00-17:30"]})
    assert cal.add(berlin(2026, 3, 2, 11, 0), 2 * HOUR) == berlin(2026, 3, 2, 14, 0)
    assert cal.elapsed(berlin(2026, 3, 2, 11, 0), berlin(2026, 3, 2, 14, 0)) == 2 * HOUR
    assert cal.elapsed(berlin(2026, 3, 2, 0, 0), berlin(2026, 3, 3, 0, 0)) == 7.5 * HOUR
    assert not cal.is_open(berlin(2026, 3, 2, 12, 30))
    assert cal.next_open(berlin(2026, 3, 2, 12, 30)) == berlin(2026, 3, 2, 13, 0)


def test_holiday_is_skipped() -> None:
    # Christmas 2026 is a Friday: Thursday 16:00 + 2 h runs into Monday.
    cal = nine_to_five(holidays=["2026-12-25"])
    assert cal.add(berlin(2026, 12, 24, 16, 0), 2 * HOUR) == berlin(2026, 12, 28, 10, 0)
    assert not cal.is_open(berlin(2026, 12, 25, 10, 0))
    assert cal.elapsed(berlin(2026, 12, 24, 0, 0), berlin(2026, 12, 29, 0, 0)) == 16 * HOUR


def test_interval_crossing_midnight_belongs_to_the_day_it_starts() -> None:
    cal = calendar({day: ["22:00-06:00"] for day in WORKWEEK}, holidays=["2026-03-03"])
    assert cal.add(berlin(2026, 3, 2, 23, 0), 4 * HOUR) == berlin(2026, 3, 3, 3, 0)
    assert cal.is_open(berlin(2026, 3, 7, 5, 0))  # Saturday morning: Friday's night shift
    assert not cal.is_open(berlin(2026, 3, 7, 22, 0))
    # Friday's shift ends Saturday 06:00 exactly; one more second waits until Monday.
    assert cal.add(berlin(2026, 3, 6, 22, 0), 8 * HOUR) == berlin(2026, 3, 7, 6, 0)
    assert cal.add(berlin(2026, 3, 6, 22, 0), 8 * HOUR + 1) == berlin(2026, 3, 9, 22, 0, 1)
    # Tuesday is a holiday: its night shift is dropped, Monday's (ending Tuesday) is not.
    assert cal.is_open(berlin(2026, 3, 3, 5, 0))
    assert not cal.is_open(berlin(2026, 3, 3, 23, 0))


def test_twenty_four_seven_is_plain_arithmetic() -> None:
    cal = BusinessCalendar.always()
    start = berlin(2026, 3, 28, 12, 0)  # across the spring-forward night
    assert cal.add(start, 86400) == berlin(2026, 3, 29, 13, 0)  # 24 real hours
    assert cal.elapsed(start, berlin(2026, 3, 29, 12, 0)) == 23 * HOUR
    assert cal.is_open(start)
    assert cal.next_open(start) == start
    assert calendar_from_table("24x7", {"hours": "24x7"}) == cal


def test_whole_day_interval() -> None:
    cal = calendar({"sat": ["00:00-24:00"]})
    assert cal.elapsed(berlin(2026, 3, 6, 12, 0), berlin(2026, 3, 9, 12, 0)) == 24 * HOUR
    assert cal.next_open(berlin(2026, 3, 6, 12, 0)) == berlin(2026, 3, 7, 0, 0)


def test_spring_forward_day_has_an_hour_less() -> None:
    # 2026-03-29 (Sunday): 02:00 CET jumps to 03:00 CEST.
    cal = calendar({"sun": ["01:00-04:00"]})
    assert cal.elapsed(berlin(2026, 3, 29, 0, 0), berlin(2026, 3, 30, 0, 0)) == 2 * HOUR
    assert cal.add(berlin(2026, 3, 29, 1, 0), 1 * HOUR) == berlin(2026, 3, 29, 3, 0)
    assert cal.add(berlin(2026, 3, 29, 1, 0), 2 * HOUR) == berlin(2026, 3, 29, 4, 0)
    # An interval wholly inside the gap has no real time; one starting in it begins after
    # the gap (fold=0 reads 02:30 with the old offset: 03:30 CEST).
    assert calendar({"sun": ["02:00-03:00"]}).elapsed(
        berlin(2026, 3, 29, 0, 0), berlin(2026, 3, 30, 0, 0)) == 0
    late = calendar({"sun": ["02:30-05:00"]})
    assert late.next_open(berlin(2026, 3, 29, 0, 0)) == berlin(2026, 3, 29, 3, 30)
    assert late.elapsed(berlin(2026, 3, 29, 0, 0), berlin(2026, 3, 30, 0, 0)) == 1.5 * HOUR
    # 02:30-03:10 would end (03:10 CEST) before it starts (03:30 CEST): no time, not negative.
    backwards = calendar({"sun": ["02:30-03:10"], "mon": ["09:00-10:00"]})
    assert backwards.elapsed(berlin(2026, 3, 29, 0, 0), berlin(2026, 3, 31, 0, 0)) == HOUR
    assert backwards.add(berlin(2026, 3, 29, 0, 0), 60) == berlin(2026, 3, 30, 9, 1)


def test_fall_back_day_has_an_hour_more() -> None:
    # 2026-10-25 (Sunday): 03:00 CEST falls back to 02:00 CET; 02:xx happens twice.
    cal = calendar({"sun": ["01:00-04:00"]})
    day = (berlin(2026, 10, 25, 0, 0), berlin(2026, 10, 26, 0, 0))
    assert cal.elapsed(*day) == 4 * HOUR
    assert cal.add(berlin(2026, 10, 25, 1, 0), 3 * HOUR) == berlin(2026, 10, 25, 3, 0)
    assert cal.add(berlin(2026, 10, 25, 1, 0), 1.5 * HOUR) == datetime(
        2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST, the first 02:30
    # An ambiguous interval means its first occurrence (fold=0).
    early = calendar({"sun": ["02:15-02:45"]})
    assert early.elapsed(*day) == 0.5 * HOUR
    assert early.next_open(day[0]) == datetime(2026, 10, 25, 0, 15, tzinfo=UTC)


def test_start_inside_and_outside_hours() -> None:
    cal = nine_to_five()
    monday = berlin(2026, 3, 2, 10, 0)
    assert cal.is_open(monday) and cal.next_open(monday) == monday
    assert cal.is_open(berlin(2026, 3, 2, 9, 0))
    assert not cal.is_open(berlin(2026, 3, 2, 17, 0))  # intervals are half-open
    assert cal.next_open(berlin(2026, 3, 2, 7, 0)) == berlin(2026, 3, 2, 9, 0)
    assert cal.next_open(berlin(2026, 3, 2, 18, 0)) == berlin(2026, 3, 3, 9, 0)
    assert cal.next_open(berlin(2026, 3, 7, 12, 0)) == berlin(2026, 3, 9, 9, 0)
    assert cal.add(berlin(2026, 3, 2, 7, 0), HOUR) == berlin(2026, 3, 2, 10, 0)
    assert cal.add(berlin(2026, 3, 2, 18, 0), HOUR) == berlin(2026, 3, 3, 10, 0)
    assert cal.add(berlin(2026, 3, 7, 12, 0), 0) == berlin(2026, 3, 7, 12, 0)
    assert cal.elapsed(berlin(2026, 3, 3, 0, 0), berlin(2026, 3, 2, 0, 0)) == 0


def test_other_zones_in_and_out() -> None:
    cal = nine_to_five()
    start = datetime(2026, 3, 6, 10, 0, tzinfo=ZoneInfo("America/New_York"))  # 16:00 Berlin
    assert cal.add(start, 4 * HOUR) == berlin(2026, 3, 9, 12, 0)


def test_long_spans_are_fast_and_exact() -> None:
    cal = nine_to_five(holidays=["2026-12-25", "2027-01-01"])
    start = berlin(2026, 1, 5, 9, 0)
    end = cal.add(start, 8 * HOUR * 250)  # a working year
    assert cal.elapsed(start, end) == 8 * HOUR * 250
    assert end == berlin(2026, 12, 18, 17, 0)  # the 250th weekday from Jan 5, Christmas aside


def test_rejects_naive_negative_and_never_open() -> None:
    cal = nine_to_five()
    with pytest.raises(ValueError, match="naive"):
        cal.add(datetime(2026, 3, 2, 9, 0), HOUR)
    with pytest.raises(ValueError, match="naive"):
        cal.is_open(datetime(2026, 3, 2, 9, 0))
    with pytest.raises(ValueError, match=">= 0"):
        cal.add(berlin(2026, 3, 2, 9, 0), -1)
    with pytest.raises(ValueError, match=">= 0"):
        cal.add(berlin(2026, 3, 2, 9, 0), math.nan)
    closed = BusinessCalendar("closed", BERLIN, ((),) * 7)
    with pytest.raises(ValueError, match="no working time in the 20 years"):
        closed.add(berlin(2026, 3, 2, 9, 0), 1)
    with pytest.raises(ValueError, match="no working time"):
        closed.next_open(berlin(2026, 3, 2, 9, 0))
    assert closed.elapsed(berlin(2026, 1, 1, 0, 0), berlin(2027, 1, 1, 0, 0)) == 0
    with pytest.raises(ValueError, match="7 entries"):
        BusinessCalendar("short", BERLIN, ((),) * 5)


# -- properties ----------------------------------------------------------------------------

ZONES = [ZoneInfo(z) for z in ("UTC", "Europe/Berlin", "America/New_York",
                               "Australia/Lord_Howe", "America/Santiago")]
# Random intervals on a half-hour grid may overlap or cross midnight into the next day's:
# parsing rejects such overlaps, but the arithmetic must still treat working time as their
# union. Drawn as one flat list, which keeps generation cheap.
SLOTS = st.lists(st.tuples(st.integers(0, 6), st.integers(0, 47), st.integers(0, 47)),
                 min_size=1, max_size=8)


def half_hour(n: int) -> time:
    return time(n // 2, 30 * (n % 2))


@st.composite
def calendars(draw: st.DrawFn, zones: list[ZoneInfo] = ZONES) -> BusinessCalendar:
    week: list[list[Interval]] = [[] for _ in range(7)]
    for weekday, start, end in draw(SLOTS):
        week[weekday].append(Interval(half_hour(start), half_hour(end)))
    days_off = {date(2025, 12, 1) + timedelta(days=n)
                for n in draw(st.lists(st.integers(0, 120), max_size=8))}
    return BusinessCalendar("prop", draw(st.sampled_from(zones)),
                            tuple(tuple(day) for day in week), frozenset(days_off))


INSTANTS = st.datetimes(datetime(2025, 12, 1), datetime(2026, 4, 30),
                        timezones=st.sampled_from(ZONES))
MILLIS = st.integers(0, 60 * 3600 * 1000)  # up to 60 business hours, in whole ms


@settings(deadline=None)
@given(calendars(), INSTANTS, MILLIS, MILLIS)
def test_add_is_monotonic(cal: BusinessCalendar, start: datetime, x: int, y: int) -> None:
    x, y = sorted((x, y))
    assert cal.add(start, x / 1000) <= cal.add(start, y / 1000)


@settings(deadline=None)
@given(calendars(), INSTANTS, MILLIS)
def test_elapsed_inverts_add(cal: BusinessCalendar, start: datetime, ms: int) -> None:
    end = cal.add(start, ms / 1000)
    assert end >= start
    assert cal.elapsed(start, end) == pytest.approx(ms / 1000, abs=1e-6)


@settings(deadline=None)
@given(calendars(), INSTANTS, MILLIS, MILLIS)
def test_add_is_additive(cal: BusinessCalendar, start: datetime, a: int, b: int) -> None:
    assert cal.add(cal.add(start, a / 1000), b / 1000) == cal.add(start, (a + b) / 1000)


@settings(deadline=None)
@given(calendars(), st.lists(INSTANTS, min_size=3, max_size=3))
def test_elapsed_is_additive(cal: BusinessCalendar, instants: list[datetime]) -> None:
    a, b, c = sorted(instants)
    assert cal.elapsed(a, c) == pytest.approx(cal.elapsed(a, b) + cal.elapsed(b, c), abs=1e-6)


@settings(deadline=None)
@given(calendars(), INSTANTS, MILLIS.filter(lambda ms: ms > 0))
def test_add_ends_inside_working_time(cal: BusinessCalendar, start: datetime, ms: int) -> None:
    end = cal.add(start, ms / 1000)
    # At an open instant or the end of an interval: the microsecond before is working time,
    # and it is the earliest such instant.
    assert cal.is_open(end - US)
    assert cal.elapsed(start, end - US) < ms / 1000


@settings(deadline=None)
@given(calendars(), INSTANTS)
def test_next_open_is_the_first_working_instant(cal: BusinessCalendar, at: datetime) -> None:
    opened = cal.next_open(at)
    assert opened >= at and cal.is_open(opened)
    assert cal.elapsed(at, opened) == 0
    # Compare in UTC: == across zones is always False for a time in a DST gap (PEP 495).
    assert (opened == at.astimezone(UTC)) == cal.is_open(at)


@settings(deadline=None)
@given(calendars(zones=[ZoneInfo("UTC")]), st.integers(0, 14 * 48), st.integers(0, 14 * 48))
def test_elapsed_matches_a_slot_by_slot_count(cal: BusinessCalendar, i: int, j: int) -> None:
    # An independent reading of the calendar, on half-hour slots of a UTC fortnight: a slot
    # works if its own date has an interval covering it, or the day before has one running
    # past midnight over it (holidays drop the intervals that start on them).
    base = datetime(2026, 1, 5, tzinfo=UTC)
    i, j = sorted((i, j))

    def works(slot: int) -> bool:
        moment = base + timedelta(minutes=30 * slot)
        minute = moment.hour * 60 + moment.minute
        for back in (0, 1):
            day = moment.date() - timedelta(days=back)
            if day in cal.holidays:
                continue
            for interval in cal.hours[day.weekday()]:
                start, end = interval.minutes()
                if start <= minute + 1440 * back < end:
                    return True
        return False

    expected = sum(works(slot) for slot in range(i, j)) * 1800.0
    start, end = base + timedelta(minutes=30 * i), base + timedelta(minutes=30 * j)
    assert cal.elapsed(start, end) == expected
    assert all(cal.is_open(base + timedelta(minutes=30 * s)) == works(s) for s in range(i, j))


@given(INSTANTS, st.floats(0, 1e9, allow_nan=False), INSTANTS)
def test_always_is_timedelta_arithmetic(start: datetime, seconds: float, end: datetime) -> None:
    # Plain arithmetic on real time: in UTC, since `+` on a zoned datetime is wall-clock.
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    cal = BusinessCalendar.always()
    assert cal.add(start, seconds) == start + timedelta(seconds=seconds)
    assert cal.elapsed(start, end) == max(0.0, (end - start).total_seconds())
    # A zone-local whole-day calendar without holidays is the same clock.
    berlin_always = calendar_from_table("x", {"timezone": "Europe/Berlin", "hours": "24x7"})
    assert berlin_always.add(start, seconds) == cal.add(start, seconds)


# -- parsing -------------------------------------------------------------------------------


def test_parses_the_documented_toml() -> None:
    table = tomllib.loads("""
        timezone = "Europe/Berlin"
        holidays = ["2026-12-24", 2026-12-31]
        holiday_country = "DE"
        holiday_subdivision = "BY"
        [hours]
        mon = ["09:00-12:00", "13:00-17:30"]
        fri = ["09:00-12:00"]
        sun = "22:00-24:00"
    """)
    asked: list[tuple[str, str | None, range]] = []

    def lookup(country: str, subdivision: str | None, years: range) -> set[date]:
        asked.append((country, subdivision, years))
        return {date(2026, 12, 25)}

    cal = calendar_from_table("office", table, holiday_lookup=lookup)
    assert asked == [("DE", "BY", HOLIDAY_YEARS)]
    assert cal.zone == BERLIN
    assert cal.holidays == {date(2026, 12, 24), date(2026, 12, 31), date(2026, 12, 25)}
    assert [str(iv) for iv in cal.hours[0]] == ["09:00-12:00", "13:00-17:30"]
    assert cal.hours[1] == ()
    assert [str(iv) for iv in cal.hours[6]] == ["22:00-24:00"]
    assert Interval.parse("22:00-06:00").crosses_midnight
    assert Interval.parse(" 9:05 - 17:00 ") == Interval(time(9, 5), time(17, 0))


@pytest.mark.parametrize(("table", "problem"), [
    ({"hours": {"mon": ["9-5"]}}, "calendar.office: hours.mon: '9-5' is not HH:MM-HH:MM"),
    ({"hours": {"mon": ["09:00-25:00"]}}, "hours.mon: '09:00-25:00' is not a time range"),
    ({"hours": {"mon": ["24:00-24:00"]}}, "hours.mon: '24:00-24:00' is not a time range"),
    ({"hours": {"mon": ["09:00-09:00"]}}, "hours.mon: '09:00-09:00' is empty"),
    ({"hours": {"mon": [9]}}, "hours.mon: expected a list of"),
    ({"hours": {"monday": ["09:00-17:00"]}}, "hours.monday: unknown weekday"),
    ({"hours": {"mon": ["09:00-12:00", "11:00-13:00"]}},
     "hours.mon: '09:00-12:00' overlaps '11:00-13:00'"),
    ({"hours": {"sun": ["22:00-06:00"], "mon": ["05:00-09:00"]}},
     "hours.sun: '22:00-06:00' runs into hours.mon '05:00-09:00'"),
    ({"hours": {}}, "hours: no working time on any day"),
    ({"hours": {"mon": []}}, "hours: no working time on any day"),
    ({"hours": 42}, "hours: expected a table or \"24x7\""),
    ({"timezone": None}, "timezone: missing"),
    ({"timezone": "Mars/Olympus"}, "timezone: unknown time zone 'Mars/Olympus'"),
    ({"timezone": 5}, "timezone: expected a string"),
    ({"holidays": ["2026-13-01"]}, "holidays: '2026-13-01' is not a date (YYYY-MM-DD)"),
    ({"holidays": [42]}, "holidays: 42 is not a date"),
    ({"holidays": "2026-12-25"}, "holidays: expected a list of dates"),
    ({"holiday_subdivision": "BY"}, "holiday_subdivision: needs holiday_country"),
    ({"holiday_country": 49}, "holiday_country: expected a string"),
    ({"weekends": "off"}, "weekends: unknown key"),
])
def test_each_problem_is_reported(table: dict[str, object], problem: str) -> None:
    full: dict[str, object] = {"timezone": "Europe/Berlin", "hours": {"mon": ["09:00-17:00"]}}
    full.update(table)
    if full.get("timezone") is None:
        del full["timezone"]
    found = problems_of(full)
    assert any(problem in line for line in found), found
    assert all(line.startswith("calendar.office: ") for line in found)


def test_every_problem_is_collected() -> None:
    found = problems_of({"timezone": "Nowhere/Land", "hours": {"mon": ["9-5"], "xyz": []},
                         "holidays": ["soon"], "colour": "blue"})
    assert len(found) == 5, found


def test_twenty_four_seven_needs_a_zone_only_with_holidays() -> None:
    assert calendar_from_table("x", {"hours": "24x7"}).zone == ZoneInfo("UTC")
    assert any("timezone: missing" in p
               for p in problems_of({"hours": "24x7", "holidays": ["2026-12-25"]}))
    cal = calendar_from_table("x", {"hours": "24x7", "timezone": "Europe/Berlin",
                                    "holidays": ["2026-12-25"]})
    assert not cal.is_open(berlin(2026, 12, 25, 12, 0))
    assert cal.elapsed(berlin(2026, 12, 24, 0, 0), berlin(2026, 12, 27, 0, 0)) == 48 * HOUR


def test_holiday_lookup_failures_become_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(country: str, subdivision: str | None, years: range) -> set[date]:
        raise ValueError(f"Country {country} not available")

    table = {"timezone": "UTC", "hours": {"mon": ["09:00-17:00"]}, "holiday_country": "XX"}
    assert problems_of(table, holiday_lookup=refuse) == [
        "calendar.office: holiday_country: Country XX not available"]
    monkeypatch.setitem(sys.modules, "holidays", None)  # as if not installed
    assert problems_of(table) == ["calendar.office: holiday_country: the Python package "
                                  "'holidays' is not installed (pip install holidays)"]


def test_real_holidays_package() -> None:
    days = default_holiday_lookup("DE", "BY", range(2026, 2027))
    assert date(2026, 1, 6) in days  # Epiphany: Bavaria, not Berlin
    assert date(2026, 1, 6) not in default_holiday_lookup("DE", "BE", range(2026, 2027))
    with pytest.raises(ValueError, match="XX"):
        default_holiday_lookup("XX", None, range(2026, 2027))
    cal = calendar({day: ["09:00-17:00"] for day in WEEKDAYS[:5]}, holiday_country="DE",
                   holiday_subdivision="BY")
    assert not cal.is_open(berlin(2026, 1, 6, 10, 0))
    assert cal.is_open(berlin(2026, 1, 7, 10, 0))
