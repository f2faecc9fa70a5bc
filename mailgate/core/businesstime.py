"""Business-calendar arithmetic for SLA clocks: pure functions over instants, no I/O.

A calendar names, per weekday, the working intervals in local wall-clock time. Each local
date's intervals are turned into real instants through the IANA zone, so a working interval
that spans a DST change is one hour shorter or longer that day, as the people working it see.

Internally every instant is an integer count of microseconds since the Unix epoch: the
arithmetic is exact (add and elapsed are inverses to the microsecond) and cheap. Days are
walked one at a time and each date's working spans are cached, so a scheduler asking about
many tickets pays the zone conversions once per date.

elapsed() answers from a timeline instead (see _Timeline): the working time of a run of
days as one list of disjoint spans with the business time before each, so the time between
two instants is a difference of two prefix sums, found by bisection, however far apart they
are. A report asks this for every ticket of a month; walking days made it most of the
report's time. The walk stays as the reference and for what a timeline cannot answer.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailgate.errors import ConfigError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HOLIDAY_YEARS = range(2000, 2101)
MAX_SEARCH_DAYS = 20 * 366  # add()/next_open() give up after ~20 years instead of looping

_US = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = _EPOCH.toordinal()
_DAY_US = 86_400_000_000
_CACHE_DAYS = 4096  # per-calendar cache of converted dates; cleared whole when full
_TIMELINE_MARGIN = 400  # days a timeline reaches beyond the dates asked for, both ways
_TIMELINE_MAX_DAYS = 40 * 366  # wider questions walk the days (one-off, rare)
_NO_TIME_BEFORE = -(1 << 80)  # sentinels beyond any instant in microseconds
_NO_TIME_AFTER = 1 << 80
_INTERVAL = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")
_TABLE_KEYS = ("timezone", "hours", "holidays", "holiday_country", "holiday_subdivision")

HolidayLookup = Callable[[str, str | None, range], set[date]]


@dataclass(frozen=True)
class Interval:
    """Working time within one day; end <= start means it runs past midnight (22:00-06:00),
    and 00:00-00:00 (written "00:00-24:00") is the whole day."""

    start: time
    end: time

    def __post_init__(self) -> None:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("interval times are local wall-clock times: no tzinfo")
        # fold=0 for every conversion (see BusinessCalendar), whatever the caller passed.
        object.__setattr__(self, "start", self.start.replace(fold=0))
        object.__setattr__(self, "end", self.end.replace(fold=0))

    @classmethod
    def parse(cls, text: str) -> Interval:
        """Parse "HH:MM-HH:MM" (end may be "24:00"); ValueError with a readable message."""
        match = _INTERVAL.fullmatch(text)
        if match is None:
            raise ValueError(f"{text!r} is not HH:MM-HH:MM")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2 != 0):
            raise ValueError(f"{text!r} is not a time range within a day (00:00 to 24:00)")
        start, end = time(h1, m1), time(h2 % 24, m2)
        if start == end and start != time(0):
            # 09:00-09:00 would silently mean 24 hours; nobody writes that on purpose.
            raise ValueError(f"{text!r} is empty; for a whole day write 00:00-24:00")
        return cls(start, end)

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start

    def minutes(self) -> tuple[int, int]:
        """(start, end) in minutes after the day's midnight; end may exceed 1440."""
        start = self.start.hour * 60 + self.start.minute
        end = self.end.hour * 60 + self.end.minute
        return start, end + 1440 if self.crosses_midnight else end

    def __str__(self) -> str:
        end = "24:00" if self.end == time(0) else f"{self.end:%H:%M}"
        return f"{self.start:%H:%M}-{end}"


_WHOLE_DAY = (Interval(time(0), time(0)),)


@dataclass(frozen=True)
class BusinessCalendar:
    """Working hours in one zone. All methods take aware datetimes and return UTC ones.

    Local times are converted with fold=0 throughout (Python's default): an ambiguous time
    (fall back) means its first occurrence, and a nonexistent time (spring forward) is read
    with the offset before the change, so it lands just after the gap. Both ends of an
    interval follow the same rule, so spans stay contiguous and never go negative.
    """

    name: str
    zone: ZoneInfo
    hours: tuple[tuple[Interval, ...], ...]
    holidays: frozenset[date] = frozenset()
    _always: bool = field(init=False, repr=False, compare=False, default=False)
    _days: dict[int, tuple[tuple[int, int], ...]] = field(
        init=False, repr=False, compare=False, default_factory=dict)
    _timeline: _Timeline | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if len(self.hours) != 7:
            raise ValueError(f"hours needs 7 entries (Monday first), got {len(self.hours)}")
        # Whole days every day with no holidays is continuous time in any zone: use plain
        # arithmetic instead of walking days.
        always = not self.holidays and all(day == _WHOLE_DAY for day in self.hours)
        object.__setattr__(self, "_always", always)

    @classmethod
    def always(cls, name: str = "24x7") -> BusinessCalendar:
        return cls(name, ZoneInfo("UTC"), (_WHOLE_DAY,) * 7)

    def is_open(self, at: datetime) -> bool:
        now = _to_us(at)
        if self._always:
            return True
        today = self._local_ordinal(now)
        return any(a <= now < b for day in (today - 1, today) for a, b in self._spans_on(day))

    def next_open(self, at: datetime) -> datetime:
        now = _to_us(at)
        if self._always:
            return _from_us(now)
        for start, _ in self._spans(now):
            return _from_us(start)
        raise self._never_open(at)

    def add(self, start: datetime, seconds: float) -> datetime:
        begin = _to_us(start)
        need = _seconds_to_us(seconds)
        if self._always or need == 0:
            return _from_us(begin + need)
        for a, b in self._spans(begin):
            if need <= b - a:
                return _from_us(a + need)
            need -= b - a
        raise self._never_open(start)

    def elapsed(self, start: datetime, end: datetime) -> float:
        return self.elapsed_us(start, end) / 1e6

    def elapsed_us(self, start: datetime, end: datetime) -> int:
        """Business time from start to end in whole microseconds, the unit add() counts
        in: add(start, s) <= end exactly when business_us(s) <= elapsed_us(start, end)."""
        begin, stop = _to_us(start), _to_us(end)
        if stop <= begin:
            return 0
        if self._always:
            return stop - begin
        return self._between(begin, stop, self._ordinal(start, begin),
                             self._ordinal(end, stop))

    def elapsed_us_each(self, pairs: Iterable[tuple[float, float]]) -> list[int]:
        """elapsed_us() of every (start, end) pair of Unix timestamps as the store keeps
        instants, each the instant datetime.fromtimestamp(stamp, UTC) is: a report's
        thousands of tickets without a datetime built, converted and taken apart again
        for each. Consecutive pairs with the same start (a ticket's arrival to its
        response, then to its resolution) convert it once.

        _between() and _Timeline.below() and answers() written out in one loop: a report
        asks this 200,000 times a month at a million tickets, and the calls were half the
        time. _between() stays the definition."""
        zone, found = self.zone, []
        if self._always:
            return [max(0, _stamp_us(end) - _stamp_us(start)) for start, end in pairs]
        fromtimestamp, bisect_right, modf = datetime.fromtimestamp, bisect.bisect_right, math.modf
        last_start: float | None = None
        begin = first = 0
        begin_below: int | None = None  # the timeline's business time before `begin`
        line = self._timeline
        for start, end in pairs:
            if start != last_start:
                fraction, whole = modf(start)  # _stamp_us(start)
                begin, last_start = int(whole) * 1_000_000 + round(fraction * 1e6), start
                first = fromtimestamp(start, zone).toordinal()
                begin_below = None
            fraction, whole = modf(end)
            stop = int(whole) * 1_000_000 + round(fraction * 1e6)
            if stop <= begin:
                found.append(0)
                continue
            last = fromtimestamp(end, zone).toordinal()
            if line is None or first - 1 < line.first or last > line.last:
                line = self._timeline_over(first - 1, last)
                begin_below = None
                if line is None:  # a range too wide to keep
                    found.append(self._between(begin, stop, first, last))
                    continue
            # line.answers(begin, stop, first, last), the coverage checked above
            offset = line.first
            if ((first - 1 > offset and line.reach[first - 2 - offset] > begin)
                    or (last != line.last and line.next_start[last + 1 - offset] < stop)):
                found.append(self._walked_us(begin, stop, last))
                continue
            starts = line.starts
            if begin_below is None:  # line.below(begin)
                i = bisect_right(starts, begin) - 1
                begin_below = (0 if i < 0 else line.before[i]
                               + min(begin, line.ends[i]) - starts[i])
            i = bisect_right(starts, stop) - 1  # line.below(stop)
            found.append((0 if i < 0 else line.before[i] + min(stop, line.ends[i]) - starts[i])
                         - begin_below)
        return found

    def days_each(self, stamps: Iterable[float]) -> list[int]:
        """The local date (an ordinal) of every Unix timestamp, as
        datetime.fromtimestamp(stamp, zone).toordinal() has it; in UTC by arithmetic on
        the microseconds fromtimestamp rounds to (a report's total row counts a month of
        requests per UTC day)."""
        if getattr(self.zone, "key", None) == "UTC":
            modf = math.modf  # _stamp_us(stamp) written out
            return [_EPOCH_ORDINAL + (int(whole) * 1_000_000 + round(fraction * 1e6)) // _DAY_US
                    for fraction, whole in map(modf, stamps)]
        zone, fromtimestamp = self.zone, datetime.fromtimestamp
        return [fromtimestamp(stamp, zone).toordinal() for stamp in stamps]

    def _ordinal(self, at: datetime, us: int) -> int:
        """_local_ordinal(us) for `at`, the same instant, without building it anew in UTC.
        astimezone() leaves a datetime already in the zone as it is, even a wall time in a
        DST gap: that one goes the long way, through the real instant."""
        if at.tzinfo is self.zone:
            return self._local_ordinal(us)
        return at.astimezone(self.zone).toordinal()

    def _between(self, begin: int, stop: int, first: int, last: int) -> int:
        """Business microseconds from begin (local date `first`) to stop (local date
        `last`), begin < stop: from the timeline where it answers, else walked."""
        line = self._timeline
        if line is None or first - 1 < line.first or last > line.last:
            line = self._timeline_over(first - 1, last)
        if line is not None and line.answers(begin, stop, first, last):
            return line.below(stop) - line.below(begin)
        return self._walked_us(begin, stop, last)

    def _walked_us(self, begin: int, stop: int, last: int) -> int:
        """elapsed_us by walking the working spans of the dates up to `last` (the local
        date of `stop`): the definition the timeline must agree with."""
        total = 0
        for a, b in self._spans(begin, last):
            if a >= stop:
                break
            total += min(b, stop) - a
        return total

    # -- internals: spans are (start_us, end_us) pairs of real instants --------------------

    def _local_ordinal(self, us: int) -> int:
        return _from_us(us).astimezone(self.zone).toordinal()

    def _timeline_over(self, first: int, last: int) -> _Timeline | None:
        """A timeline holding the dates first..last, extended (built anew) when they are
        outside the current one; None for a range too wide to keep."""
        line = self._timeline
        if line is not None and line.first <= first and last <= line.last:
            return line
        low, high = first - _TIMELINE_MARGIN, last + _TIMELINE_MARGIN
        if line is not None:
            low, high = min(low, line.first), max(high, line.last)
        if high - low > _TIMELINE_MAX_DAYS:
            return None
        line = _Timeline.build(low, high, self._spans_on)
        object.__setattr__(self, "_timeline", line)
        return line

    def _never_open(self, at: datetime) -> ValueError:
        return ValueError(f"calendar {self.name!r} has no working time in the 20 years "
                          f"after {at.isoformat()}")

    def _spans(self, begin: int, last_day: int | None = None) -> Iterator[tuple[int, int]]:
        """Working spans ending after `begin`, in order, clipped so none starts before
        `begin` or overlaps the previous one; from dates up to `last_day` (an ordinal,
        default MAX_SEARCH_DAYS ahead)."""
        cursor = begin
        first = self._local_ordinal(begin)
        last = first + MAX_SEARCH_DAYS if last_day is None else last_day
        # Start a date early: the previous date's interval may run past midnight.
        for day in range(first - 1, last + 1):
            for a, b in self._spans_on(day):
                if b > cursor:
                    yield max(a, cursor), b
                    cursor = b

    def _spans_on(self, ordinal: int) -> tuple[tuple[int, int], ...]:
        spans = self._days.get(ordinal)
        if spans is None:
            if len(self._days) >= _CACHE_DAYS:
                self._days.clear()
            spans = self._days[ordinal] = self._convert(date.fromordinal(ordinal))
        return spans

    def _convert(self, day: date) -> tuple[tuple[int, int], ...]:
        if day in self.holidays:
            return ()
        spans = []
        for interval in self.hours[day.weekday()]:
            end_day = day + timedelta(days=1) if interval.crosses_midnight else day
            a = _to_us(datetime.combine(day, interval.start, self.zone))
            b = _to_us(datetime.combine(end_day, interval.end, self.zone))
            if b > a:  # an interval inside a spring-forward gap has no real time
                spans.append((a, b))
        return tuple(sorted(spans))


@dataclass(frozen=True, slots=True)
class _Timeline:
    """The working spans of the dates first..last in the order BusinessCalendar._spans
    walks them (date by date, each date's spans sorted), each clipped to begin where the
    ones before it ended, so they are disjoint and ascending, with the business time
    before each. The business time below an instant is then one bisection away.

    This matches the walk from `begin` (elapsed_us) exactly when nothing of the dates
    before the walk's first date (the day before begin's date) reaches past `begin`, and
    nothing of the dates after stop's date starts before `stop`: the walk leaves those
    dates out, the timeline has them. `reach` and `next_start` per date tell; with ordinary
    hours both hold always, and where they do not (spans that DST or hand-built intervals
    make run into another date's) the caller walks instead.
    """

    first: int  # date ordinals
    last: int
    starts: list[int]  # spans, microseconds since the epoch
    ends: list[int]
    before: list[int]  # business microseconds before each span
    reach: list[int]  # per date: the latest end of the spans of the dates up to it
    next_start: list[int]  # per date: the start of the first span of that date or later

    @classmethod
    def build(cls, first: int, last: int,
              spans_on: Callable[[int], tuple[tuple[int, int], ...]]) -> _Timeline:
        starts: list[int] = []
        ends: list[int] = []
        before: list[int] = []
        reach: list[int] = []
        first_span: list[int] = []  # per date: index of its first span in starts
        total, cursor = 0, _NO_TIME_BEFORE
        for day in range(first, last + 1):
            first_span.append(len(starts))
            for a, b in spans_on(day):
                if b > cursor:  # as _spans clips them
                    a = max(a, cursor)
                    starts.append(a)
                    ends.append(b)
                    before.append(total)
                    total += b - a
                    cursor = b
            reach.append(cursor)
        next_start = [starts[i] if i < len(starts) else _NO_TIME_AFTER for i in first_span]
        return cls(first, last, starts, ends, before, reach, next_start)

    def below(self, us: int) -> int:
        """Business microseconds of the timeline before the instant `us`."""
        i = bisect.bisect_right(self.starts, us) - 1
        if i < 0:
            return 0
        return self.before[i] + min(us, self.ends[i]) - self.starts[i]

    def answers(self, begin: int, stop: int, first: int, last: int) -> bool:
        """Whether below(stop) - below(begin) is the walk's business time from begin
        (local date `first`) to stop (local date `last`): see the class."""
        walk_from = first - 1
        if walk_from < self.first or last > self.last:
            return False
        if walk_from > self.first and self.reach[walk_from - 1 - self.first] > begin:
            return False
        return last == self.last or self.next_start[last + 1 - self.first] >= stop


def _to_us(at: datetime) -> int:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"naive datetime {at.isoformat()}: pass a timezone-aware datetime")
    return (at - _EPOCH) // _US


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _stamp_us(stamp: float) -> int:
    """_to_us(datetime.fromtimestamp(stamp, UTC)) without the datetime: fromtimestamp's
    own rounding, the fraction's microseconds to the nearest, halves to even."""
    fraction, whole = math.modf(stamp)
    return int(whole) * 1_000_000 + round(fraction * 1e6)


def business_us(seconds: float) -> int:
    """Business seconds as the whole microseconds add() walks (see elapsed_us)."""
    return _seconds_to_us(seconds)


def _seconds_to_us(seconds: float) -> int:
    # timedelta's own rounding, so the 24x7 calendar matches start + timedelta(seconds=...).
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"business seconds must be finite and >= 0, got {seconds!r}")
    try:
        return timedelta(seconds=seconds) // _US
    except OverflowError:
        raise ValueError(f"business seconds out of range: {seconds!r}") from None


# -- parsing the directory's [calendar.NAME] tables -------------------------------------------


def default_holiday_lookup(country: str, subdivision: str | None, years: range) -> set[date]:
    """Public holidays from the `holidays` package, imported only when a calendar asks."""
    try:
        import holidays
    except ImportError:
        raise ImportError("the Python package 'holidays' is not installed "
                          "(pip install holidays)") from None
    try:
        return set(holidays.country_holidays(country, subdiv=subdivision, years=years))
    except NotImplementedError as exc:  # how `holidays` says "unknown country/subdivision"
        raise ValueError(str(exc)) from None


def calendar_from_table(name: str, table: dict[str, Any],
                        holiday_lookup: HolidayLookup | None = None) -> BusinessCalendar:
    """Build a calendar from a parsed [calendar.NAME] table; ConfigError lists every problem.

    Problems read "calendar.NAME: KEY: what is wrong"; the directory loader adds the file.
    """
    problems: list[str] = []

    def problem(key: str, message: str) -> None:
        problems.append(f"calendar.{name}: {key}: {message}")

    for key in sorted(set(table) - set(_TABLE_KEYS)):
        problem(key, f"unknown key (expected {', '.join(_TABLE_KEYS)})")
    hours_value = table.get("hours")
    always = hours_value == "24x7"
    hours = (_WHOLE_DAY,) * 7 if always else _read_hours(hours_value, problem)
    days_off = _read_holidays(table, problem, holiday_lookup or default_holiday_lookup)
    # A bare 24x7 calendar needs no zone; anything with local dates in it does.
    zone = _read_zone(table.get("timezone", "UTC" if always and not days_off else None),
                      problem)
    if problems or zone is None or hours is None:
        raise ConfigError(problems)
    return BusinessCalendar(name, zone, hours, frozenset(days_off))


def _read_zone(value: object, problem: Callable[[str, str], None]) -> ZoneInfo | None:
    if value is None:
        problem("timezone", 'missing; set it to an IANA zone such as "Europe/Berlin"')
    elif not isinstance(value, str):
        problem("timezone", f"expected a string, got {value!r}")
    else:
        try:
            return ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            problem("timezone", f'unknown time zone {value!r} (use e.g. "Europe/Berlin")')
    return None


def _read_hours(value: object,
                problem: Callable[[str, str], None]) -> tuple[tuple[Interval, ...], ...] | None:
    if not isinstance(value, dict):
        got = "missing" if value is None else f"expected a table or \"24x7\", got {value!r}"
        problem("hours", f'{got}; e.g. hours = {{ mon = ["09:00-17:00"] }} or "24x7"')
        return None
    bad = False

    def report(key: str, message: str) -> None:
        nonlocal bad
        bad = True
        problem(key, message)

    for key in sorted(set(value) - set(WEEKDAYS)):
        report(f"hours.{key}", f"unknown weekday (use {', '.join(WEEKDAYS)})")
    week: list[list[tuple[str, Interval]]] = []
    for key in WEEKDAYS:
        entries = value.get(key, [])
        if isinstance(entries, str):
            entries = [entries]
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            report(f"hours.{key}", f'expected a list of "HH:MM-HH:MM" strings, got {entries!r}')
            entries = []
        day = []
        for text in entries:
            try:
                day.append((text, Interval.parse(text)))
            except ValueError as exc:
                report(f"hours.{key}", str(exc))
        week.append(day)
    _check_overlaps(week, report)
    if not bad and not any(week):
        report("hours", 'no working time on any day, so SLA clocks would never run '
                        '(for always open write hours = "24x7")')
    return None if bad else tuple(tuple(iv for _, iv in day) for day in week)


def _check_overlaps(week: list[list[tuple[str, Interval]]],
                    report: Callable[[str, str], None]) -> None:
    """Intervals must not overlap within a day, nor run past midnight into the next day's."""
    for index, day in enumerate(week):
        ordered = sorted(day, key=lambda item: item[1].minutes())
        for (text1, iv1), (text2, iv2) in itertools.pairwise(ordered):
            if iv2.minutes()[0] < iv1.minutes()[1]:
                report(f"hours.{WEEKDAYS[index]}", f"{text1!r} overlaps {text2!r}")
        following = (index + 1) % 7
        for text1, iv1 in day:
            for text2, iv2 in week[following]:
                if iv1.minutes()[1] - 1440 > iv2.minutes()[0]:
                    report(f"hours.{WEEKDAYS[index]}",
                           f"{text1!r} runs into hours.{WEEKDAYS[following]} {text2!r}")


def _read_holidays(table: dict[str, Any], problem: Callable[[str, str], None],
                   lookup: HolidayLookup) -> set[date]:
    days: set[date] = set()
    listed = table.get("holidays", [])
    if not isinstance(listed, list):
        problem("holidays", f'expected a list of dates such as "2026-12-25", got {listed!r}')
        listed = []
    for entry in listed:
        # tomllib gives bare TOML dates (holidays = [2026-12-25]) as date objects.
        if isinstance(entry, date) and not isinstance(entry, datetime):
            days.add(entry)
            continue
        try:
            days.add(date.fromisoformat(entry))
        except (TypeError, ValueError):
            problem("holidays", f"{entry!r} is not a date (YYYY-MM-DD)")
    country = table.get("holiday_country")
    subdivision = table.get("holiday_subdivision")
    if subdivision is not None and not isinstance(subdivision, str):
        problem("holiday_subdivision", f"expected a string, got {subdivision!r}")
        subdivision = None
    if country is None:
        if subdivision is not None:
            problem("holiday_subdivision", 'needs holiday_country (e.g. "DE")')
    elif not isinstance(country, str):
        problem("holiday_country", f"expected a string, got {country!r}")
    else:
        try:
            days |= lookup(country, subdivision, HOLIDAY_YEARS)
        except (ImportError, ValueError) as exc:
            problem("holiday_country", str(exc))
    return days
