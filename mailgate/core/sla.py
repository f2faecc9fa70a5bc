"""SLA clocks and their escalation levels, in business time. Pure: no I/O, no wall clock.

A clock starts at an instant with a budget of business seconds (say 4 business hours for a
first response). Its escalation levels are points along that budget: warnings at fractions
of it (75 %, 90 %), the breach at 100 %, then optional re-escalations every N business
seconds after the breach. Time spent waiting on the requester (paused) pushes every level
back by the business time it lasted.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from mailgate.core.businesstime import BusinessCalendar, business_us

MAX_RE_ESCALATIONS = 10  # an abandoned ticket must not mail its head forever


class Target(StrEnum):
    FIRST_RESPONSE = "first_response"
    RESOLUTION = "resolution"
    NEXT_RESPONSE = "next_response"  # an answer after the requester wrote again


class LevelKind(StrEnum):
    WARNING = "warning"
    BREACH = "breach"
    RE_ESCALATION = "re_escalation"


@dataclass(frozen=True, slots=True)
class Level:
    number: int  # 1-based, the order levels fire in
    kind: LevelKind
    offset: float  # business seconds after the clock started


@dataclass(frozen=True, slots=True)
class Escalation:
    """How a policy escalates one clock: when to warn, and how often to repeat a breach."""

    warn_at: tuple[float, ...] = (0.75, 0.9)
    re_escalate_every: float | None = None  # business seconds; None: the breach is the last

    def levels(self, budget: float) -> tuple[Level, ...]:
        return _levels(self, budget)


@functools.lru_cache(maxsize=1024)  # a handful of policies x priorities in practice
def _levels(escalation: Escalation, budget: float) -> tuple[Level, ...]:
    offsets = [(LevelKind.WARNING, budget * f) for f in sorted(set(escalation.warn_at))]
    offsets.append((LevelKind.BREACH, budget))
    if escalation.re_escalate_every:
        offsets += [(LevelKind.RE_ESCALATION, budget + k * escalation.re_escalate_every)
                    for k in range(1, MAX_RE_ESCALATIONS + 1)]
    return tuple(Level(n, kind, offset) for n, (kind, offset) in enumerate(offsets, 1))


@dataclass(frozen=True, slots=True)
class Clock:
    target: Target
    started_at: datetime
    budget: float  # business seconds allowed
    paused_seconds: float = 0.0  # business seconds spent waiting on the requester
    fired: int = 0  # levels already fired (or skipped as superseded)

    def instant(self, calendar: BusinessCalendar, offset: float) -> datetime:
        return calendar.add(self.started_at, self.paused_seconds + offset)

    def due_at(self, calendar: BusinessCalendar) -> datetime:
        return self.instant(calendar, self.budget)


@dataclass(frozen=True, slots=True)
class Firing:
    """What the scheduler does with one clock now: fire `level`, record `skipped` as done,
    and look at the clock again at `next_at` (None: every level has fired)."""

    level: Level | None
    skipped: tuple[Level, ...]
    next_at: datetime | None


def next_level(clock: Clock, escalation: Escalation,
               calendar: BusinessCalendar) -> tuple[Level, datetime] | None:
    """The first level not yet fired and the instant it is due, or None when all are done."""
    levels = escalation.levels(clock.budget)
    if clock.fired >= len(levels):
        return None
    level = levels[clock.fired]
    return level, clock.instant(calendar, level.offset)


def advance(clock: Clock, escalation: Escalation, calendar: BusinessCalendar,
            now: datetime) -> Firing:
    """The level to fire now, if any, and when the one after it is due.

    Normally one level is due at a time. After downtime several may be: only the latest
    of them is sent (a 75 % warning after the breach is noise), the earlier ones are
    recorded as skipped so that none of them ever fires later.

    One business-time measurement (how long the clock has run) decides which levels are
    due, however many; one more finds when the next one is: a tick after a long downtime
    costs what a normal one does.
    """
    levels = escalation.levels(clock.budget)[clock.fired:]
    if not levels:
        return Firing(None, (), None)
    # Before the start (a clock stepped back) nothing is reached, not even an offset of 0.
    # Compared as instants: two datetimes with the same tzinfo compare by wall time, and
    # a local time in a DST gap or fold would put "now" on the wrong side of the start.
    started = clock.started_at.astimezone(UTC) <= now.astimezone(UTC)
    ran = calendar.elapsed_us(clock.started_at, now) if started else -1
    count = 0
    for level in levels:  # in time order: the first one not reached ends the due ones
        if business_us(clock.paused_seconds + level.offset) > ran:
            break
        count += 1
    due = levels[:count]
    next_at = clock.instant(calendar, levels[count].offset) if count < len(levels) else None
    return Firing(due[-1] if due else None, tuple(due[:-1]), next_at)


def time_left(clock: Clock, calendar: BusinessCalendar, now: datetime) -> float:
    """Business seconds until the clock is due; negative once it is overdue."""
    return business_time_left(clock.due_at(calendar), calendar, now)


def business_time_left(due: datetime, calendar: BusinessCalendar, now: datetime) -> float:
    """Business seconds from now until `due`; negative once it has passed."""
    if now <= due:
        return calendar.elapsed(now, due)
    return -calendar.elapsed(due, now)
