"""elapsed() from a timeline (prefix sums over working spans) against the walk it replaced.

The oracle below is the day-by-day walk elapsed_us did before timelines, written out again
from the calendar's public fields (zone, hours, holidays): every answer must be the same to
the microsecond. Instants are drawn at random with fixed seeds, and on purpose at the
awkward places: DST changes in the calendar's zone, holidays, weekends, outside hours, span
boundaries, zero length, more than a year, and local dates that a zone skipped or repeated.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.core.businesstime import BusinessCalendar, Interval, calendar_from_table
from tests.test_businesstime import ZONES, calendars

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)
WORKWEEK = ("mon", "tue", "wed", "thu", "fri")


def to_us(at: datetime) -> int:
    return (at - EPOCH) // US


@functools.lru_cache(maxsize=100_000)
def spans_of(cal: BusinessCalendar, day: date) -> tuple[tuple[int, int], ...]:
    """The date's working intervals as instants (fold=0), empty on a holiday."""
    if day in cal.holidays:
        return ()
    spans = []
    for interval in cal.hours[day.weekday()]:
        end_day = day + timedelta(days=1) if interval.crosses_midnight else day
        a = to_us(datetime.combine(day, interval.start, cal.zone))
        b = to_us(datetime.combine(end_day, interval.end, cal.zone))
        if b > a:
            spans.append((a, b))
    return tuple(sorted(spans))


def walked_us(cal: BusinessCalendar, start: datetime, end: datetime) -> int:
    """Business microseconds from start to end as the walk counts them: the dates from the
    day before start's local date to end's local date, each span clipped to begin where
    the one before ended (and not before start), cut at end."""
    begin, stop = to_us(start), to_us(end)
    if stop <= begin:
        return 0
    first = start.astimezone(UTC).astimezone(cal.zone).toordinal()
    last = end.astimezone(UTC).astimezone(cal.zone).toordinal()
    total, cursor = 0, begin
    for ordinal in range(first - 1, last + 1):
        for a, b in spans_of(cal, date.fromordinal(ordinal)):
            if b > cursor:
                a = max(a, cursor)
                if a >= stop:
                    return total
                total += min(b, stop) - a
                cursor = b
    return total


def office(zone: str = "Europe/Berlin") -> BusinessCalendar:
    """The example directory's office calendar, with its holidays."""
    hours = {day: ["09:00-12:30", "13:30-17:30"] for day in WORKWEEK}
    hours["fri"] = ["09:00-12:30", "13:30-15:00"]
    return calendar_from_table("office", {
        "timezone": zone, "hours": hours,
        "holidays": ["2025-12-24", "2025-12-25", "2025-12-31", "2026-12-24", "2026-12-25",
                     "2026-12-31", "2027-04-02"]})


def night_shift(zone: str) -> BusinessCalendar:
    """Intervals across midnight and around the usual DST hours (01:00-03:00 local), the
    night running into the next day's early interval (parsing would refuse the overlap;
    the arithmetic counts the union)."""
    def hours(*texts: str) -> tuple[Interval, ...]:
        return tuple(Interval.parse(text) for text in texts)

    week = (hours("00:30-02:30", "22:00-06:00"),) * 5 + (hours("06:00-22:00"),
                                                         hours("01:00-04:00"))
    return BusinessCalendar("night", ZoneInfo(zone), week,
                            frozenset({date(2026, 3, 29), date(2026, 10, 26)}))


def assert_same(cal: BusinessCalendar, pairs: Iterator[tuple[datetime, datetime]]) -> int:
    checked = 0
    for start, end in pairs:
        expected = walked_us(cal, start, end)
        assert cal.elapsed_us(start, end) == expected, (cal.name, start, end)
        assert cal.elapsed(start, end) == expected / 1e6
        checked += 1
    return checked


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# -- seeded random intervals -----------------------------------------------------------------

def random_pairs(seed: int, count: int, around: datetime, days: int
                 ) -> Iterator[tuple[datetime, datetime]]:
    """Starts within `days` of `around`, lengths from nothing to over a year, in UTC and in
    other zones; a few ends before their starts."""
    rng = random.Random(seed)
    zones = [UTC, *ZONES]
    lengths = (0, 1e-6, 1, 59, 3600, 4 * 3600, 86400, 3 * 86400, 9 * 86400, 40 * 86400,
               400 * 86400)
    for _ in range(count):
        start = around + timedelta(microseconds=rng.randrange(-days * 86400 * 10**6,
                                                              days * 86400 * 10**6))
        if rng.random() < 0.5:
            length = rng.choice(lengths)
        else:
            length = rng.uniform(-3600, rng.choice(lengths) + 1)
        end = start + timedelta(seconds=length)
        yield (start.astimezone(rng.choice(zones)), end.astimezone(rng.choice(zones)))


@pytest.mark.parametrize("make", [office, lambda: office("America/New_York"),
                                  lambda: night_shift("Europe/Berlin"),
                                  lambda: night_shift("Australia/Lord_Howe"),
                                  lambda: night_shift("America/Santiago")])
def test_random_intervals_match_the_walk(make: object) -> None:
    cal = make()  # type: ignore[operator]
    assert assert_same(cal, random_pairs(15, 3000, utc(2026, 6, 1), 500)) == 3000


def test_the_same_calendar_answers_far_apart_questions_alike() -> None:
    # The timeline grows (built anew) when a question lies outside it, and questions wider
    # than it keeps at all are walked; answers do not depend on what was asked before.
    cal = office()
    pairs = [(utc(2026, 11, 2, 8), utc(2026, 11, 3, 15)),
             (utc(1990, 3, 1), utc(1990, 3, 9)),  # far before: the timeline is rebuilt
             (utc(2026, 11, 2, 8), utc(2026, 11, 3, 15)),
             (utc(2026, 1, 1), utc(2090, 1, 1)),  # wider than any timeline: walked
             (utc(2099, 12, 30), utc(2100, 1, 5)),
             (utc(2026, 11, 2, 8), utc(2028, 11, 3, 15))]
    assert assert_same(cal, iter(pairs)) == len(pairs)


# -- awkward places ----------------------------------------------------------------------------

def around(instants: list[datetime], offsets: tuple[timedelta, ...]
           ) -> Iterator[tuple[datetime, datetime]]:
    """Every pair of the instants moved by each offset (each real instant once): starts
    and ends on and next to each awkward instant, in both orders."""
    moved = list({to_us(i + o): i + o for i in instants for o in offsets}.values())
    for start in moved:
        for end in moved:
            yield start, end


NEAR = (timedelta(0), US, -US, timedelta(minutes=30), -timedelta(hours=3),
        timedelta(hours=25))


def local(zone: str, *moments: tuple[int, int, int, int, int]) -> list[datetime]:
    z = ZoneInfo(zone)
    return [datetime(*m, tzinfo=z) for m in moments] + [
        datetime(*m, tzinfo=z, fold=1) for m in moments]


def test_dst_changes_in_the_calendars_zone() -> None:
    # Europe/Berlin 2026: spring forward 29 March 02:00 -> 03:00, back 25 October
    # 03:00 -> 02:00; the night shift works through both, and 29 March is a holiday.
    moments = local("Europe/Berlin", (2026, 3, 29, 2, 30), (2026, 3, 29, 0, 0),
                    (2026, 3, 28, 22, 0), (2026, 3, 30, 6, 0), (2026, 10, 25, 2, 30),
                    (2026, 10, 25, 1, 0), (2026, 10, 24, 22, 0), (2026, 10, 26, 9, 0))
    for cal in (office(), night_shift("Europe/Berlin")):
        assert assert_same(cal, around(moments, NEAR)) > 2000


def test_dst_at_midnight_and_by_half_an_hour() -> None:
    # America/Santiago changes at 24:00 (a local midnight that does not exist or comes
    # twice); Australia/Lord_Howe moves its clocks by 30 minutes at 02:00.
    santiago = local("America/Santiago", (2026, 4, 4, 23, 30), (2026, 4, 5, 0, 0),
                     (2026, 9, 5, 23, 30), (2026, 9, 6, 0, 0), (2026, 9, 6, 0, 30))
    lord_howe = local("Australia/Lord_Howe", (2026, 4, 5, 1, 45), (2026, 4, 5, 2, 0),
                      (2026, 10, 4, 2, 0), (2026, 10, 4, 2, 15))
    for zone, moments in (("America/Santiago", santiago), ("Australia/Lord_Howe", lord_howe)):
        for cal in (office(zone), night_shift(zone)):
            assert_same(cal, around(moments, NEAR))


@pytest.mark.parametrize(("zone", "moments"), [
    # Samoa skipped Friday 30 December 2011 (UTC-10 -> UTC+14).
    ("Pacific/Apia", [(2011, 12, 29, 9, 0), (2011, 12, 30, 12, 0), (2011, 12, 31, 10, 0)]),
    # Kwajalein skipped 21 August 1993 the same way.
    ("Pacific/Kwajalein", [(1993, 8, 20, 16, 0), (1993, 8, 21, 9, 0), (1993, 8, 22, 11, 0)]),
    # Alaska lived 18 October 1867 twice (+15:02 -> -8:57 local mean time).
    ("America/Sitka", [(1867, 10, 18, 10, 0), (1867, 10, 18, 23, 0), (1867, 10, 19, 13, 0)]),
])
def test_dates_a_zone_skipped_or_repeated(zone: str, moments: list[tuple[int, ...]]) -> None:
    instants = local(zone, *moments)  # type: ignore[arg-type]
    nights = BusinessCalendar("nights", ZoneInfo(zone),
                              ((Interval(time(8), time(18)), Interval(time(20), time(2))),) * 7)
    hours = {day: ["09:00-17:00"] for day in (*WORKWEEK, "sat", "sun")}
    for cal in (calendar_from_table("days", {"timezone": zone, "hours": hours}), nights):
        assert_same(cal, around(instants, NEAR))


def test_repeated_dates_fall_back_to_the_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    # Sitka left local mean time +14:58:47 for -9:01:13 on 19 October 1867 at 15:30, so the
    # afternoon of 18 October came twice. Saturday 19th's 09:00-17:00 runs from its 09:00
    # before the change to its 17:00 after it, 32 real hours. From 16:00 to 20:00 on the
    # second 18 October the walk reads the dates up to the 18th only and finds nothing,
    # where the timeline would count four hours of the 19th's span: it must refuse.
    sitka = ZoneInfo("America/Sitka")
    cal = calendar_from_table("days", {"timezone": "America/Sitka", "hours": {
        day: ["09:00-17:00"] for day in (*WORKWEEK, "sat", "sun")}})
    walked = []
    real = BusinessCalendar._walked_us
    monkeypatch.setattr(BusinessCalendar, "_walked_us",
                        lambda self, *args: walked.append(args) or real(self, *args))
    start = datetime(1867, 10, 18, 16, 0, tzinfo=sitka, fold=1)
    end = datetime(1867, 10, 18, 20, 0, tzinfo=sitka, fold=1)
    assert cal.elapsed_us(start, end) == walked_us(cal, start, end) == 0
    assert walked


def test_edges_of_working_time() -> None:
    # Span boundaries, lunch, a weekend, holidays (24-25 December), in and out of hours.
    berlin = ZoneInfo("Europe/Berlin")
    moments = [datetime(2026, 12, d, h, m, tzinfo=berlin)
               for d, h, m in ((18, 15, 0), (21, 9, 0), (21, 12, 30), (21, 13, 30),
                               (23, 17, 30), (24, 10, 0), (26, 11, 0), (28, 8, 59),
                               (31, 23, 59))]
    assert assert_same(office(), around(moments, (timedelta(0), US, -US)))


def test_whole_days_and_closed_calendars() -> None:
    zone = ZoneInfo("Europe/Berlin")
    whole = BusinessCalendar("whole", zone, ((Interval(time(0), time(0)),),) * 7,
                             frozenset({date(2026, 3, 29)}))
    closed = BusinessCalendar("closed", zone, ((),) * 7)
    pairs = list(random_pairs(7, 500, utc(2026, 3, 29), 30))
    assert assert_same(whole, iter(pairs)) == assert_same(closed, iter(pairs)) == len(pairs)


# -- properties over random calendars ----------------------------------------------------------

WIDE = st.datetimes(datetime(2024, 12, 1), datetime(2027, 4, 30),
                    timezones=st.sampled_from(ZONES))


@settings(deadline=None, derandomize=True, max_examples=300)
@given(calendars(), WIDE, WIDE)
def test_random_calendars_match_the_walk(cal: BusinessCalendar, start: datetime,
                                         end: datetime) -> None:
    assert cal.elapsed_us(start, end) == walked_us(cal, start, end)
    assert cal.elapsed_us(end, start) == walked_us(cal, end, start)


@settings(deadline=None, derandomize=True, max_examples=200)
@given(calendars(), st.lists(WIDE, min_size=2, max_size=12))
def test_one_calendar_many_questions_match_the_walk(cal: BusinessCalendar,
                                                    instants: list[datetime]) -> None:
    # One calendar asked many times, as a report does: the timeline built for the first
    # question answers (or grows for) the next ones.
    for start, end in itertools.pairwise(instants):
        assert cal.elapsed_us(start, end) == walked_us(cal, start, end)


# -- Unix timestamps, as a report reads them -------------------------------------------------

def stamp(at: datetime) -> float:
    return at.timestamp()


def stamp_pairs(seed: int, count: int, around_: datetime, days: int) -> list[tuple[float, float]]:
    """Float timestamps with sub-microsecond parts, as random_pairs; every other start is
    used twice in a row (a ticket's response and resolution)."""
    rng = random.Random(seed)
    pairs = []
    for start, end in random_pairs(seed, count, around_, days):
        a = stamp(start) + rng.uniform(-1e-6, 1e-6)
        pairs.append((a, stamp(end) + rng.uniform(-1e-6, 1e-6)))
        if rng.random() < 0.5:
            pairs.append((a, a + rng.choice((0.0, 1e-7, 7200.0, 86400.0 * 3))))
    return pairs


@pytest.mark.parametrize("make", [office, lambda: office("America/Santiago"),
                                  lambda: night_shift("Australia/Lord_Howe"),
                                  lambda: BusinessCalendar.always()])
def test_timestamps_match_the_walk_of_their_datetimes(make: object) -> None:
    cal = make()  # type: ignore[operator]
    pairs = stamp_pairs(16, 1500, utc(2026, 6, 1), 500)
    expected = [walked_us(cal, datetime.fromtimestamp(a, UTC), datetime.fromtimestamp(b, UTC))
                for a, b in pairs]
    assert cal.elapsed_us_each(pairs) == expected


def test_timestamps_round_to_the_microsecond_as_fromtimestamp_does() -> None:
    # Exactly half a microsecond (a double holds such fractions near the epoch) goes to
    # the even one, as fromtimestamp's rounding does; anything else to the nearest.
    rng = random.Random(21)
    near_epoch = (rng.randrange(-5, 5) + (rng.randrange(10**6) + 0.5) / 1e6
                  for _ in range(5000))
    halves = [s for s in near_epoch if abs(math.modf(s)[0] * 1e6 % 1) == 0.5]
    assert len(halves) > 100
    others = [rng.uniform(-3e9, 4e9) for _ in range(5000)]
    cal = BusinessCalendar.always()
    for s in halves + others:
        whole = float(math.floor(s) - 1)  # whole seconds convert exactly
        expected = (to_us(datetime.fromtimestamp(s, UTC))
                    - to_us(datetime.fromtimestamp(whole, UTC)))
        assert cal.elapsed_us_each([(whole, s)]) == [expected], s


@settings(deadline=None, derandomize=True, max_examples=200)
@given(calendars(), st.lists(WIDE, min_size=2, max_size=12))
def test_random_calendars_from_timestamps_match_the_walk(cal: BusinessCalendar,
                                                         instants: list[datetime]) -> None:
    stamps = [stamp(i) for i in instants]
    pairs = [(stamps[0], s) for s in stamps[1:]] + list(itertools.pairwise(stamps))
    expected = [walked_us(cal, datetime.fromtimestamp(a, UTC), datetime.fromtimestamp(b, UTC))
                for a, b in pairs]
    assert cal.elapsed_us_each(pairs) == expected


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "Australia/Lord_Howe"])
def test_local_days_of_timestamps_are_fromtimestamps_dates(zone: str) -> None:
    # UTC is counted by arithmetic on the microseconds: a stamp half a microsecond or less
    # before midnight rounds (halves to even) into the next day, as fromtimestamp does.
    rng = random.Random(5)
    midnights = [86400.0 * rng.randrange(-20000, 30000) for _ in range(2000)]
    stamps = ([m + d for m in midnights for d in (-5e-7, -4.9e-7, -1e-6, 0.0, 1e-7)]
              + [rng.uniform(-3e9, 4e9) for _ in range(5000)])
    cal = office(zone) if zone != "UTC" else BusinessCalendar.always()
    expected = [datetime.fromtimestamp(s, ZoneInfo(zone)).toordinal() for s in stamps]
    assert cal.days_each(stamps) == expected
