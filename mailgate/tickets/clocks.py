"""SLA policy as plain lookups: which clocks a ticket gets, with what budget and levels.

Pure: the directory says a department's calendar, policy and escalation; this module turns
them into clocks and their due instants. The SQL that keeps clocks is storage/slaclock.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mailgate.config.directory import Department, Directory, SlaPolicy
from mailgate.core.businesstime import BusinessCalendar
from mailgate.core.model import Priority
from mailgate.core.sla import Clock, Escalation, Target, next_level


@dataclass(frozen=True, slots=True)
class Opening:
    """A new ticket's clocks as rows (target, started_at, seconds, due_at, next_at), in
    Unix seconds as the store keeps them."""

    rows: tuple[tuple, ...]
    next_escalation_at: float | None  # for the ticket row
    first_response_due: datetime | None


class ClockPolicy:
    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        # Per department; a reload builds a new policy, so these never go stale.
        self._escalations: dict[str, Escalation] = {}

    def department(self, key: str) -> Department | None:
        return self.directory.departments.get(key)

    def calendar(self, dept: Department | None) -> BusinessCalendar:
        return self.directory.calendar_for(dept) if dept else BusinessCalendar.always()

    def policy(self, dept: Department | None) -> SlaPolicy | None:
        return self.directory.sla_for(dept) if dept else None

    def escalation(self, dept: Department | None) -> Escalation:
        if dept is None:
            return Escalation()
        found = self._escalations.get(dept.key)  # asked for every due clock in a tick
        if found is None:
            policy = self.directory.sla_for(dept)
            every = policy.re_escalate_every
            found = self._escalations[dept.key] = Escalation(
                policy.warn_at, every.total_seconds() if every else None)
        return found

    def roles(self, dept: Department, kind: str) -> tuple[str, ...]:
        """Who hears about an escalation of this kind, as directory roles."""
        policy = self.policy(dept)
        return tuple(getattr(policy.notify, kind, ())) if policy else ()

    def budget(self, dept: Department | None, target: Target,
               priority: Priority) -> timedelta | None:
        policy = self.policy(dept)
        if policy is None:
            return None
        targets = {Target.FIRST_RESPONSE: policy.first_response,
                   Target.RESOLUTION: policy.resolution,
                   Target.NEXT_RESPONSE: policy.next_response}[target]
        return targets.get(priority) if targets else None

    def clock_row(self, dept: Department | None, clock: Clock) -> tuple[float, float | None]:
        """(due_at, next_at) of a clock, as stored."""
        calendar = self.calendar(dept)
        found = next_level(clock, self.escalation(dept), calendar)
        return clock.due_at(calendar).timestamp(), found[1].timestamp() if found else None

    def plan(self, department: str, priority: Priority, now: datetime) -> Opening:
        """A new ticket's first-response and resolution clocks, starting now."""
        dept = self.department(department)
        clocks = [Clock(target, now, budget.total_seconds())
                  for target in (Target.FIRST_RESPONSE, Target.RESOLUTION)
                  if (budget := self.budget(dept, target, priority)) is not None]
        rows = tuple((c.target.value, now.timestamp(), c.budget, *self.clock_row(dept, c))
                     for c in clocks)
        nexts = [r[4] for r in rows if r[4] is not None]
        due = next((datetime.fromtimestamp(r[3], UTC) for r in rows
                    if r[0] == Target.FIRST_RESPONSE.value), None)
        return Opening(rows, min(nexts) if nexts else None, due)
