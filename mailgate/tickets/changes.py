"""A ticket as one mail changes it, in memory: its columns and its SLA clocks.

A reply decision (reply.py) changes a ticket step by step -- answered, assigned,
transferred, resolved -- and reads it back between steps (a clock restarted after a
transfer follows the new department's policy; the relay shows the ticket as changed).
`TicketChanges` keeps that state and, at the end, says what to write, each thing once:
one UpdateTicket with the changed columns' final values and one WriteClock per clock
touched (effects.py). Clocks change as storage/slaclock.py keeps them: met, started as a
new round by the ticket's policy at that point, paused, pushed back when resumed. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from mailgate.core.model import Priority, Status
from mailgate.core.sla import Clock, Target
from mailgate.tickets.clocks import ClockPolicy
from mailgate.tickets.effects import Effect, TicketFacts, UpdateTicket, WriteClock


@dataclass
class ClockWrite:
    """One clock as this mail leaves it (see effects.WriteClock)."""

    clock: Clock
    due_at: float = 0.0
    next_at: float | None = None
    rounds: int = 0
    shifted: bool = False
    met: bool = False


class TicketChanges:
    def __init__(self, facts: TicketFacts, policy: ClockPolicy, now: datetime) -> None:
        self.facts = facts
        self.policy = policy
        self.now = now
        self.st = facts.state  # the ticket as changed so far
        self.clocks: dict[Target, Clock] = dict(facts.clocks)  # the running ones
        self.paused_at = facts.paused_at
        self.first_response_at = facts.first_response_at
        self.mail_on_it = False  # an event names the mail being handled already
        self.columns: dict[str, object] = {}  # changed, with their final values
        self.writes: dict[Target, ClockWrite] = {}

    def effects(self) -> list[Effect]:
        """What this mail changed on the ticket, each written once."""
        found: list[Effect] = []
        if self.columns:
            found.append(UpdateTicket(self.st.id, dict(self.columns)))
        found += [WriteClock(self.st.id, w.clock, w.due_at, w.next_at, w.rounds, w.shifted,
                             w.met) for w in self.writes.values()]
        return found

    # --- columns ------------------------------------------------------------------------

    def touch(self) -> None:
        self.columns["updated_at"] = self.now
        self.st = replace(self.st, updated_at=self.now)

    def set_status(self, status: Status) -> None:
        """Status with its timestamps: resolving stamps resolved_at, reopening clears both."""
        stamps: dict[str, datetime | None] = {
            Status.RESOLVED: {"resolved_at": self.now, "closed_at": None},
            Status.CLOSED: {"closed_at": self.now},
            Status.OPEN: {"resolved_at": None, "closed_at": None}}.get(status, {})
        self.columns |= {"status": status, "updated_at": self.now} | stamps
        self.st = replace(self.st, status=status, updated_at=self.now, **stamps)

    def set_field(self, column: str, value: object) -> None:
        assert column in ("assignee", "priority", "department", "survey_at")
        self.columns |= {column: value, "updated_at": self.now}
        shown = Priority(value) if column == "priority" else value
        self.st = replace(self.st, **{column: shown}, updated_at=self.now)

    def rate(self, rating: int, comment: str) -> None:
        """A later rating without a comment keeps the earlier comment (None: unchanged)."""
        self.columns |= {"rating": rating, "rated_at": self.now,
                         "rating_comment": comment or None}
        self.st = replace(self.st, rating=rating)

    # --- clocks -------------------------------------------------------------------------

    def meet(self, targets: tuple[Target, ...]) -> list[Target]:
        """Stop the running ones of these clocks (the answer came, or the resolution);
        returns those that ran."""
        met = [target for target in targets if target in self.clocks]
        for target in met:
            self._write(target).met = True
            del self.clocks[target]
        if Target.FIRST_RESPONSE in met and self.first_response_at is None:
            self.first_response_at = self.columns["first_response_at"] = self.now
        return met

    def start(self, target: Target) -> None:
        """Start (or restart) a clock by the ticket's policy now: a new round. No budget
        for it in that policy: nothing changes."""
        dept = self.policy.department(self.st.department)
        budget = self.policy.budget(dept, target, self.st.priority)
        if budget is None:
            return
        clock = Clock(target, self.now, budget.total_seconds())
        write = self.writes.get(target) or ClockWrite(clock)
        due_at, next_at = self.policy.clock_row(dept, clock)
        self.writes[target] = replace(write, clock=clock, due_at=due_at, next_at=next_at,
                                      rounds=write.rounds + 1, shifted=False, met=False)
        self.clocks[target] = clock

    def pause(self) -> None:
        """Waiting on the requester (or closed): every clock stops counting."""
        if self.paused_at is None:
            self.paused_at = self.columns["paused_at"] = self.now

    def resume(self) -> None:
        """The requester answered: clocks go on, pushed back by the business time paused."""
        if self.paused_at is None:
            return
        dept = self.policy.department(self.st.department)
        paused = self.policy.calendar(dept).elapsed(self.paused_at, self.now)
        for target, clock in list(self.clocks.items()):
            clock = replace(clock, paused_seconds=clock.paused_seconds + paused)
            write = self._write(target)
            write.clock = self.clocks[target] = clock
            write.due_at, write.next_at = self.policy.clock_row(dept, clock)
            write.shifted = write.shifted or not write.rounds
        self.paused_at = self.columns["paused_at"] = None

    def requester_wrote(self) -> None:
        """The requester (or someone for them) wrote: paused clocks go on, and an answer
        is owed again if one was already given -- not before the first response, and not
        while one is owed already (the oldest unanswered mail sets the deadline)."""
        self.resume()
        if self.first_response_at is not None and Target.NEXT_RESPONSE not in self.clocks:
            self.start(Target.NEXT_RESPONSE)

    def _write(self, target: Target) -> ClockWrite:
        found = self.writes.get(target)
        if found is None:
            found = self.writes[target] = ClockWrite(self.clocks[target])
        return found
