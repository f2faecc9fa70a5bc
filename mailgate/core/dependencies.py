"""The dependency view: which departments send requests to which, and how fast each
answers them. Pure: no I/O (storage/reports.py reads the rows).

For the requests that came in during the period, the *requesting* department is the
requester's department in the directory's people; a requester who is not listed (or is
listed without a department) counts as "unknown". The *receiving* department is the
ticket's department. Per (requesting, receiving) pair: how many requests, how many were
answered, and the median time to the first agent answer in the receiving department's
business calendar (as in the department report).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

from mailgate.core.businesstime import BusinessCalendar
from mailgate.core.report import Stat, duration, html_page

UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class RequestFacts:
    requester: str  # address, lower-case
    department: str  # the receiving department (the ticket's)
    created_at: datetime
    first_response_at: datetime | None


@dataclass(frozen=True, slots=True)
class Flow:
    source: str  # requesting department key, or "unknown"
    target: str  # receiving department key
    requests: int
    first_response: Stat  # count = answered requests

    @property
    def answered(self) -> int:
        return self.first_response.count


@dataclass(frozen=True, slots=True)
class DependencyView:
    since: datetime
    until: datetime
    sources: tuple[str, ...]  # requesting departments with requests, "unknown" last
    targets: tuple[str, ...]  # receiving departments with requests
    flows: tuple[Flow, ...]  # by source, then target (the order of sources and targets)

    def flow(self, source: str, target: str) -> Flow | None:
        return next((f for f in self.flows if f.source == source and f.target == target),
                    None)


def build_dependencies(requests: Sequence[RequestFacts],
                       department_of: Callable[[str], str | None], *, since: datetime,
                       until: datetime, calendars: Mapping[str, BusinessCalendar],
                       order: Sequence[str] = ()) -> DependencyView:
    """Group the requests by (requesting, receiving) department.

    department_of maps a requester address to its department key (None: not known).
    Departments appear in `order` (the directory's), then any others alphabetically,
    then "unknown".
    """
    always = BusinessCalendar.always()
    groups: dict[tuple[str, str], list[RequestFacts]] = {}
    for r in requests:
        source = department_of(r.requester) or UNKNOWN
        groups.setdefault((source, r.department), []).append(r)

    def ranked(keys: set[str]) -> tuple[str, ...]:
        known = [k for k in order if k in keys]
        rest = sorted(keys - set(known) - {UNKNOWN})
        return tuple([*known, *rest, *([UNKNOWN] if UNKNOWN in keys else [])])

    sources = ranked({s for s, _ in groups})
    targets = ranked({t for _, t in groups})
    flows = []
    for source in sources:
        for target in targets:
            group = groups.get((source, target))
            if not group:
                continue
            calendar = calendars.get(target, always)
            times = [calendar.elapsed(r.created_at, r.first_response_at)
                     for r in group if r.first_response_at is not None]
            flows.append(Flow(source, target, len(group), Stat.of(times)))
    return DependencyView(since, until, sources, targets, tuple(flows))


# --- forms ------------------------------------------------------------------------------

HEADERS = ("FROM", "TO", "REQUESTS", "ANSWERED", "FIRST RESPONSE median")


def title(view: DependencyView) -> str:
    since, until = view.since.astimezone(UTC), view.until.astimezone(UTC)
    return (f"mailgate dependencies {since:%Y-%m-%d %H:%M} - {until:%Y-%m-%d %H:%M} UTC: "
            "who sends requests to whom")


def rows(view: DependencyView) -> list[tuple[str, ...]]:
    return [(f.source, f.target, str(f.requests), str(f.answered),
             duration(f.first_response.median)) for f in view.flows]


def as_text(view: DependencyView) -> str:
    lines = [title(view), ""]
    table = [HEADERS, *rows(view)]
    if len(table) == 1:
        lines.append("(no requests in the period)")
    else:
        widths = [max(len(r[i]) for r in table) for i in range(len(HEADERS))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                  for r in table]
    lines.append("")
    lines.append("FROM: the requester's department in the directory's people (unknown: "
                 "not listed there).")
    lines.append("TO: the department that got the request. FIRST RESPONSE: median business "
                 "time in TO's calendar (n/a: none answered yet).")
    return "\n".join(lines) + "\n"


def as_json(view: DependencyView) -> dict:
    return {"since": view.since.isoformat(), "until": view.until.isoformat(),
            "sources": list(view.sources), "targets": list(view.targets),
            "flows": [{"from": f.source, "to": f.target, "requests": f.requests,
                       "answered": f.answered,
                       "first_response_median_seconds": f.first_response.median}
                      for f in view.flows]}


_CELL = "padding:4px 8px;border:1px solid #ddd;text-align:center;"


def as_html_section(view: DependencyView) -> str:
    """A heat-map table: a row per requesting department, a column per receiving one; the
    cell's shade grows with the number of requests. Plain table and inline styles: every
    mail client shows it, no SVG or script needed."""
    heading = ('<h2 style="font-size:16px;margin-top:24px;">Dependencies: who sends '
               "requests to whom</h2>\n")
    if not view.flows:
        return heading + '<p style="font-size:13px;">No requests in the period.</p>\n'
    top = max(f.requests for f in view.flows)
    head = (f'<th style="{_CELL}background:#f0f0f0;">from \\ to</th>'
            + "".join(f'<th style="{_CELL}background:#f0f0f0;">{escape(t)}</th>'
                      for t in view.targets))
    body = []
    for source in view.sources:
        cells = [f'<th style="{_CELL}background:#f0f0f0;text-align:left;">'
                 f"{escape(source)}</th>"]
        for target in view.targets:
            flow = view.flow(source, target)
            if flow is None:
                cells.append(f'<td style="{_CELL}color:#999;">-</td>')
                continue
            cells.append(f'<td style="{_CELL}{_shade(flow.requests / top)}">'
                         f"<b>{flow.requests}</b><br>"
                         f'<span style="font-size:11px;">median '
                         f"{escape(duration(flow.first_response.median))}</span></td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (heading
            + '<p style="font-size:13px;color:#555;">Requests from the requester\'s '
              "department (row; unknown: not in the directory's people) to the department "
              "that received them (column), with the receiving department's median first "
              "response in its business time. Darker: more requests.</p>\n"
            + '<table style="border-collapse:collapse;font-size:13px;" cellspacing="0">'
            + f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>\n")


def as_html(view: DependencyView) -> str:
    """The view alone as one self-contained page (`mailgate report --dependencies --html`)."""
    return html_page(title(view), as_html_section(view))


def _shade(share: float) -> str:
    """Background from light to dark blue by share (0..1], readable text on both."""
    light, dark = (234, 241, 250), (43, 90, 150)
    r, g, b = (round(lo + (hi - lo) * share) for lo, hi in zip(light, dark, strict=True))
    text = "#ffffff" if share > 0.55 else "#222222"
    return f"background:#{r:02x}{g:02x}{b:02x};color:{text};"
