"""Department figures for a period, and their text, JSON and HTML forms. Pure: no I/O.

The figures describe the requests that came in during the period (a cohort): how many,
how fast they were first answered and resolved (in the department's business time), how
many were resolved with a single agent answer, and how their SLA clocks fared. Backlog is
the open tickets now, whenever they came in. The query layer (storage/reports.py) reads
the rows; everything here is arithmetic and formatting over them.

- median: the middle value (mean of the two middle ones for an even count);
- p90: nearest rank, the smallest value at least 90 % of the values do not exceed;
- first-touch resolution: share of the resolved tickets with exactly one agent answer;
- SLA compliance per target: clocks met by their due time, out of the clocks that ended
  (met) or are overdue; clocks still running within their time are not counted yet. The
  store counts them (ClockTally): the figures need no business time, and a month has
  160,000 clocks at a million tickets.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from html import escape
from itertools import compress

from mailgate.core.businesstime import BusinessCalendar

# One request of the period: (department, created_at, first_response_at, resolved_at,
# rating), its instants as the store keeps them: Unix timestamps, each the instant
# datetime.fromtimestamp(stamp, UTC) is; rating 1-5 or None (always None where the schema
# has no ratings). A plain tuple, the row as the store reads it: a report reads one per
# request of the period (80,000 a month at a million tickets), and an object built for
# each, or a datetime, costs more than the figures' arithmetic.
TicketFacts = tuple[str, float, float | None, float | None, int | None]


@dataclass(frozen=True, slots=True)
class ClockTally:
    """The SLA clocks of one department's requests of the period for one target, counted
    as of the report's end: `ended` were met or are overdue, `in_time` were met by their
    due time. Clocks still running within their time are in neither."""

    department: str
    target: str  # first_response | resolution | next_response
    ended: int
    in_time: int


@dataclass(frozen=True, slots=True)
class Stat:
    """Business seconds over a set of tickets."""

    count: int
    median: float | None
    p90: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        if not values:
            return cls(0, None, None)
        ordered = sorted(values)
        rank = max(1, math.ceil(0.9 * len(ordered)))
        return cls(len(ordered), statistics.median(ordered), ordered[rank - 1])


@dataclass(frozen=True, slots=True)
class Rate:
    hits: int
    total: int

    @property
    def value(self) -> float | None:
        return self.hits / self.total if self.total else None


@dataclass(frozen=True, slots=True)
class Satisfaction:
    count: int
    average: float | None


@dataclass(frozen=True, slots=True)
class DepartmentFigures:
    key: str
    name: str
    requests_in: int
    first_response: Stat
    resolution: Stat
    first_touch: Rate  # hits: resolved with one answer; total: resolved
    sla_response: Rate
    sla_resolution: Rate
    backlog: int
    satisfaction: Satisfaction | None  # None: the schema has no ratings
    per_day: tuple[tuple[date, int], ...] = ()  # requests in per local calendar day


@dataclass(frozen=True, slots=True)
class Report:
    since: datetime
    until: datetime
    departments: tuple[DepartmentFigures, ...]
    total: DepartmentFigures | None = None  # all departments together, when more than one
    notes: tuple[str, ...] = field(default=())


def build_report(tickets: Sequence[TicketFacts], clocks: Sequence[ClockTally],
                 first_touch: Mapping[str, int], backlog: Mapping[str, int], *,
                 since: datetime, until: datetime, names: Mapping[str, str],
                 calendars: Mapping[str, BusinessCalendar], ratings: bool) -> Report:
    """The figures per department named in `names` (in that order), plus a total row.
    `first_touch`: per department, its resolved requests of the period with exactly one
    agent answer (the store counts them: who is an agent is the directory's to say)."""
    always = BusinessCalendar.always()
    cal = {key: calendars.get(key, always) for key in names}
    grouped: dict[str, list[TicketFacts]] = {key: [] for key in names}
    for t in tickets:
        group = grouped.get(t[0])
        if group is not None:
            group.append(t)
    # Each request's business times once, in its department's calendar; the total row
    # reuses them.
    times = {key: _Times.of(grouped[key], cal[key]) for key in names}
    figures = tuple(
        _figures(key, name, grouped[key], times[key],
                 [c for c in clocks if c.department == key], first_touch.get(key, 0),
                 backlog.get(key, 0), ratings, since, until, cal[key])
        for key, name in names.items())
    total = None
    if len(names) > 1:
        total = _figures("all", "All departments",
                         [t for key in names for t in grouped[key]],
                         _Times.joined(times.values()),
                         [c for c in clocks if c.department in names],
                         sum(first_touch.get(k, 0) for k in names),
                         sum(backlog.get(k, 0) for k in names), ratings, since, until, always)
    notes = []
    if all(resolved is None for _, _, _, resolved, _ in tickets):
        notes.append("no request of the period is resolved yet: resolution time and "
                     "first-touch resolution are n/a")
    if not ratings:
        notes.append("satisfaction ratings are not recorded by this version: n/a")
    return Report(since, until, figures, total, tuple(notes))


@dataclass(slots=True)
class _Times:
    """Business seconds from arrival to first response and to resolution, of the
    requests that have them."""

    response: list[float]
    resolution: list[float]

    @classmethod
    def of(cls, tickets: list[TicketFacts], calendar: BusinessCalendar) -> _Times:
        # One pass over the pairs, each ticket's two after each other: the calendar
        # converts a ticket's arrival once for both.
        pairs: list[tuple[float, float]] = []
        responses: list[bool] = []
        for _, created, responded, resolved, _ in tickets:
            if responded is not None:
                pairs.append((created, responded))
                responses.append(True)
            if resolved is not None:
                pairs.append((created, resolved))
                responses.append(False)
        found = calendar.elapsed_us_each(pairs)  # elapsed() is elapsed_us() / 1e6
        resolutions = [not response for response in responses]
        return cls([us / 1e6 for us in compress(found, responses)],
                   [us / 1e6 for us in compress(found, resolutions)])

    @classmethod
    def joined(cls, parts: Iterable[_Times]) -> _Times:
        every = list(parts)
        return cls([s for p in every for s in p.response],
                   [s for p in every for s in p.resolution])


def _figures(key: str, name: str, tickets: list[TicketFacts], times: _Times,
             clocks: list[ClockTally], first_touch: int, backlog: int, ratings: bool,
             since: datetime, until: datetime,
             day_calendar: BusinessCalendar) -> DepartmentFigures:
    rated = [rating for _, _, _, _, rating in tickets if rating is not None]
    satisfaction = (Satisfaction(len(rated), statistics.fmean(rated) if rated else None)
                    if ratings else None)
    return DepartmentFigures(
        key=key, name=name, requests_in=len(tickets),
        first_response=Stat.of(times.response), resolution=Stat.of(times.resolution),
        first_touch=Rate(first_touch, len(times.resolution)),  # a time per resolved one
        sla_response=_compliance(clocks, "first_response"),
        sla_resolution=_compliance(clocks, "resolution"),
        backlog=backlog, satisfaction=satisfaction,
        per_day=_per_day(tickets, since, until, day_calendar))


def _compliance(clocks: list[ClockTally], target: str) -> Rate:
    counted = [c for c in clocks if c.target == target]
    return Rate(sum(c.in_time for c in counted), sum(c.ended for c in counted))


def _per_day(tickets: list[TicketFacts], since: datetime, until: datetime,
             calendar: BusinessCalendar) -> tuple[tuple[date, int], ...]:
    zone = calendar.zone
    first, last = since.astimezone(zone).date(), (until - timedelta(microseconds=1)).astimezone(
        zone).date()
    counts = Counter(calendar.days_each([created for _, created, _, _, _ in tickets]))
    start = first.toordinal()
    return tuple((first + timedelta(days=n), counts[start + n])
                 for n in range((last - first).days + 1))


# --- forms ------------------------------------------------------------------------------

def duration(seconds: float | None) -> str:
    """Business time as hours and minutes: '45m', '3h 20m', '31h'."""
    if seconds is None:
        return "n/a"
    minutes = round(seconds / 60)
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"{rest}m"
    return f"{hours}h {rest:02d}m" if rest else f"{hours}h"


def percent(rate: Rate) -> str:
    value = rate.value
    return "n/a" if value is None else f"{value:.0%} ({rate.hits}/{rate.total})"


def stars(satisfaction: Satisfaction | None) -> str:
    if satisfaction is None or satisfaction.average is None:
        return "n/a"
    return f"{satisfaction.average:.1f}/5 ({satisfaction.count})"


def _spread(stat: Stat) -> str:
    if stat.count == 0:
        return "n/a"
    return f"{duration(stat.median)} / {duration(stat.p90)}"


HEADERS = ("DEPARTMENT", "IN", "FIRST RESPONSE med/p90", "RESOLUTION med/p90",
           "FIRST TOUCH", "SLA RESPONSE", "SLA RESOLUTION", "BACKLOG", "SATISFACTION")


def rows(report: Report) -> list[tuple[str, ...]]:
    every = [*report.departments, *([report.total] if report.total else [])]
    return [(f.key, str(f.requests_in), _spread(f.first_response), _spread(f.resolution),
             percent(f.first_touch), percent(f.sla_response), percent(f.sla_resolution),
             str(f.backlog), stars(f.satisfaction)) for f in every]


def title(report: Report) -> str:
    since, until = report.since.astimezone(UTC), report.until.astimezone(UTC)
    return f"mailgate report {since:%Y-%m-%d %H:%M} - {until:%Y-%m-%d %H:%M} UTC"


def as_text(report: Report) -> str:
    table = [HEADERS, *rows(report)]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADERS))]
    lines = [title(report), ""]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in table]
    lines.append("")
    lines.append("Times are business time in each department's calendar, for the requests "
                 "received in the period; backlog is open tickets now.")
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines) + "\n"


def as_json(report: Report) -> dict:
    def stat(s: Stat) -> dict:
        return {"count": s.count, "median_seconds": s.median, "p90_seconds": s.p90}

    def rate(r: Rate) -> dict:
        return {"hits": r.hits, "total": r.total, "rate": r.value}

    def one(f: DepartmentFigures) -> dict:
        sat = f.satisfaction
        return {
            "department": f.key, "name": f.name, "requests_in": f.requests_in,
            "first_response": stat(f.first_response), "resolution": stat(f.resolution),
            "first_touch_resolution": rate(f.first_touch),
            "sla_response": rate(f.sla_response), "sla_resolution": rate(f.sla_resolution),
            "backlog": f.backlog,
            "satisfaction": None if sat is None else {"count": sat.count,
                                                      "average": sat.average},
            "per_day": {d.isoformat(): n for d, n in f.per_day},
        }

    return {"since": report.since.isoformat(), "until": report.until.isoformat(),
            "departments": [one(f) for f in report.departments],
            "total": one(report.total) if report.total else None,
            "notes": list(report.notes)}


# --- HTML: one self-contained page, inline styles and SVG, no script --------------------

_CELL = "padding:4px 8px;border-bottom:1px solid #ddd;text-align:left;"
_FONT = "font-family:Arial,Helvetica,sans-serif;color:#222;"


def as_html(report: Report, extra: str = "") -> str:
    """The page; extra is more HTML (already escaped) after the departments' sections."""
    head = "".join(f'<th style="{_CELL}background:#f0f0f0;">{escape(h)}</th>'
                   for h in HEADERS)
    body = "".join(
        "<tr>" + "".join(f'<td style="{_CELL}">{escape(c)}</td>' for c in row) + "</tr>"
        for row in rows(report))
    sections = "".join(_department_html(f) for f in report.departments)
    notes = "".join(f'<p style="font-size:13px;color:#555;">Note: {escape(n)}</p>'
                    for n in report.notes)
    return html_page(title(report), f"""\
<p style="font-size:13px;color:#555;">Times are business time in each department's calendar
(median / 90th percentile) for the requests received in the period; backlog is open
tickets now.</p>
<table style="border-collapse:collapse;font-size:13px;" cellspacing="0">
<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
{notes}
{sections}{extra}
""")


def html_page(heading: str, body: str) -> str:
    """A self-contained page: inline styles, no script, the heading as its title."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(heading)}</title></head>
<body style="{_FONT}margin:16px;background:#ffffff;">
<h1 style="font-size:20px;">{escape(heading)}</h1>
{body}</body></html>
"""


def _department_html(f: DepartmentFigures) -> str:
    facts = (f"requests in: {f.requests_in}, backlog {f.backlog}; first response "
             f"{_spread(f.first_response)}; SLA response {percent(f.sla_response)}, "
             f"resolution {percent(f.sla_resolution)}")
    return (f'<h2 style="font-size:16px;margin-top:24px;">{escape(f.name)} '
            f'({escape(f.key)})</h2>\n<p style="font-size:13px;">{escape(facts)}</p>\n'
            f"{bar_chart(f)}\n")


def bar_chart(f: DepartmentFigures, width: int = 560, height: int = 140) -> str:
    """Requests in per day as an inline SVG bar chart (mail clients without SVG still
    have the numbers in the table and the text above)."""
    days = f.per_day
    label = f"{f.name}: requests in per day"
    if not days:
        return ""
    top = max(n for _, n in days) or 1
    left, plot_h = 32, height - 32
    slot = (width - left - 4) / len(days)
    bar = max(1.0, slot * 0.8)
    bars = []
    for index, (day, count) in enumerate(days):
        h = plot_h * count / top
        x = left + index * slot + (slot - bar) / 2
        y = 8 + plot_h - h
        bars.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                    f'fill="#3b6ea8"><title>{day.isoformat()}: {count}</title></rect>')
    base = 8 + plot_h
    axis = (f'<line x1="{left}" y1="{base}" x2="{width - 4}" y2="{base}" stroke="#999"/>'
            f'<text x="{left - 4}" y="14" font-size="11" text-anchor="end">{top}</text>'
            f'<text x="{left - 4}" y="{base}" font-size="11" text-anchor="end">0</text>'
            f'<text x="{left}" y="{height - 4}" font-size="11">{days[0][0].isoformat()}</text>'
            f'<text x="{width - 4}" y="{height - 4}" font-size="11" text-anchor="end">'
            f'{days[-1][0].isoformat()}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}" '
            f'font-family="Arial,Helvetica,sans-serif">'
            f'<title>{escape(label)}</title>'
            f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fafafa"/>'
            f'{"".join(bars)}{axis}</svg>')
