"""SLA clocks in the database: start, meet, pause, resume, and what is due.

Every change ends with `_reschedule`, which writes the ticket's next_escalation_at: the
earliest instant any of its running clocks has a level due (NULL when none, or while the
ticket waits on the requester). The scheduler reads only that indexed column, so its cost
follows the number of due tickets, not the number of open ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from mailgate.businesstime import BusinessCalendar
from mailgate.directory import Department, Directory, SlaPolicy
from mailgate.model import Priority
from mailgate.sla import Clock, Escalation, Firing, Target, firing, next_level
from mailgate.store import Tx, from_ts, ts


@dataclass(frozen=True, slots=True)
class DueLevel:
    """One level fired now on one ticket's clock: the scheduler mails it."""

    ticket_id: int
    clock: Clock
    round: int
    firing: Firing
    due_at: datetime


class SlaBook:
    def __init__(self, directory: Directory) -> None:
        self.directory = directory

    # --- policy lookups ----------------------------------------------------------------

    def department(self, key: str) -> Department | None:
        return self.directory.departments.get(key)

    def calendar(self, dept: Department | None) -> BusinessCalendar:
        return self.directory.calendar_for(dept) if dept else BusinessCalendar.always()

    def policy(self, dept: Department | None) -> SlaPolicy | None:
        return self.directory.sla_for(dept) if dept else None

    def escalation(self, dept: Department | None) -> Escalation:
        policy = self.policy(dept)
        if policy is None:
            return Escalation()
        every = policy.re_escalate_every
        return Escalation(policy.warn_at, every.total_seconds() if every else None)

    def roles(self, dept: Department, kind: str) -> tuple[str, ...]:
        """Who hears about an escalation of this kind, as directory roles."""
        policy = self.policy(dept)
        return tuple(policy.notify.get(kind, ())) if policy else ()

    def budget(self, dept: Department | None, target: Target,
               priority: Priority) -> timedelta | None:
        policy = self.policy(dept)
        if policy is None:
            return None
        targets = {Target.FIRST_RESPONSE: policy.first_response,
                   Target.RESOLUTION: policy.resolution,
                   Target.NEXT_RESPONSE: policy.next_response}[target]
        return targets.get(priority) if targets else None

    # --- changes -----------------------------------------------------------------------

    async def start(self, tx: Tx, ticket_id: int, target: Target, now: datetime) -> None:
        """Start (or restart) a clock; a restart is a new round that escalates afresh."""
        row = await tx.fetch_one("SELECT department, priority FROM tickets WHERE id = ?",
                                 (ticket_id,))
        if row is None:
            return
        dept = self.department(row[0])
        budget = self.budget(dept, target, Priority(row[1]))
        if budget is None:
            return
        clock = Clock(target, now, budget.total_seconds())
        await tx.execute(
            """INSERT INTO sla_clocks (ticket, target, started_at, seconds, due_at)
               VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (ticket, target) DO UPDATE SET started_at = excluded.started_at,
                   seconds = excluded.seconds, due_at = excluded.due_at, paused_seconds = 0,
                   met_at = NULL, fired = 0, round = round + 1""",
            (ticket_id, target.value, ts(now), clock.budget,
             ts(clock.due_at(self.calendar(dept)))))
        await self._reschedule(tx, ticket_id)

    async def start_next_response(self, tx: Tx, ticket_id: int, now: datetime) -> None:
        """The requester wrote again after being answered: an answer is owed again.

        Not before the first response (its own clock runs), and not while a next-response
        clock already runs (the oldest unanswered mail sets the deadline).
        """
        row = await tx.fetch_one(
            "SELECT t.first_response_at, c.met_at, c.ticket FROM tickets t "
            "LEFT JOIN sla_clocks c ON c.ticket = t.id AND c.target = ? WHERE t.id = ?",
            (Target.NEXT_RESPONSE.value, ticket_id))
        if row is None or row[0] is None:
            return
        running = row[2] is not None and row[1] is None
        if not running:
            await self.start(tx, ticket_id, Target.NEXT_RESPONSE, now)

    async def meet(self, tx: Tx, ticket_id: int, targets: tuple[Target, ...],
                   now: datetime) -> list[Target]:
        """Stop running clocks: the answer came (or the ticket was resolved)."""
        met = []
        for target in targets:
            cur = await tx.execute(
                "UPDATE sla_clocks SET met_at = ? WHERE ticket = ? AND target = ? "
                "AND met_at IS NULL", (ts(now), ticket_id, target.value))
            if cur.rowcount:
                met.append(target)
        if Target.FIRST_RESPONSE in met:
            await tx.execute("UPDATE tickets SET first_response_at = ? WHERE id = ? "
                             "AND first_response_at IS NULL", (ts(now), ticket_id))
        if met:
            await self._reschedule(tx, ticket_id)
        return met

    async def pause(self, tx: Tx, ticket_id: int, now: datetime) -> None:
        """Waiting on the requester: every clock of the ticket stops counting."""
        await tx.execute("UPDATE tickets SET paused_at = ? WHERE id = ? AND paused_at IS NULL",
                         (ts(now), ticket_id))
        await self._reschedule(tx, ticket_id)

    async def resume(self, tx: Tx, ticket_id: int, now: datetime) -> None:
        """The requester answered: clocks go on, pushed back by the business time paused."""
        row = await tx.fetch_one("SELECT department, paused_at FROM tickets WHERE id = ?",
                                 (ticket_id,))
        if row is None or row[1] is None:
            return
        calendar = self.calendar(self.department(row[0]))
        paused = calendar.elapsed(from_ts(row[1]), now)
        await tx.execute("UPDATE sla_clocks SET paused_seconds = paused_seconds + ? "
                         "WHERE ticket = ? AND met_at IS NULL", (paused, ticket_id))
        await tx.execute("UPDATE tickets SET paused_at = NULL WHERE id = ?", (ticket_id,))
        await self._reschedule(tx, ticket_id)

    # --- the scheduler's side ----------------------------------------------------------

    async def due_tickets(self, tx: Tx, now: datetime, limit: int = 500) -> list[int]:
        rows = await tx.fetch_all(
            "SELECT id FROM tickets WHERE next_escalation_at <= ? "
            "ORDER BY next_escalation_at LIMIT ?", (ts(now), limit))
        return [int(r[0]) for r in rows]

    async def fire(self, tx: Tx, ticket_id: int, now: datetime) -> list[DueLevel]:
        """Mark every level due on this ticket as fired, exactly once; return them to mail."""
        dept_key, clocks = await self._running(tx, ticket_id)
        dept = self.department(dept_key)
        calendar, escalation = self.calendar(dept), self.escalation(dept)
        fired = []
        for clock, round_ in clocks:
            due = firing(clock, escalation, calendar, now)
            if due is None:
                continue
            for level in (*due.skipped, due.level):
                await tx.execute(
                    """INSERT INTO escalations (ticket, target, round, level, kind, at, due_at)
                       VALUES (?, ?, ?, ?, ?, ?, ?)""",
                    (ticket_id, clock.target.value, round_, level.number,
                     "skipped" if level in due.skipped else level.kind.value, ts(now),
                     ts(clock.due_at(calendar))))
            await tx.execute("UPDATE sla_clocks SET fired = ? WHERE ticket = ? AND target = ?",
                             (due.level.number, ticket_id, clock.target.value))
            fired.append(DueLevel(ticket_id, clock, round_, due, clock.due_at(calendar)))
        await self._reschedule(tx, ticket_id)
        return fired

    async def _running(self, tx: Tx, ticket_id: int) -> tuple[str, list[tuple[Clock, int]]]:
        row = await tx.fetch_one("SELECT department, paused_at FROM tickets WHERE id = ?",
                                 (ticket_id,))
        if row is None:
            return "", []
        if row[1] is not None:  # paused: nothing runs
            return row[0], []
        rows = await tx.fetch_all(
            "SELECT target, started_at, seconds, paused_seconds, fired, round FROM sla_clocks "
            "WHERE ticket = ? AND met_at IS NULL ORDER BY target", (ticket_id,))
        return row[0], [(Clock(Target(r[0]), from_ts(r[1]), r[2], r[3], r[4]), r[5])
                        for r in rows]

    async def _reschedule(self, tx: Tx, ticket_id: int) -> None:
        dept_key, clocks = await self._running(tx, ticket_id)
        dept = self.department(dept_key)
        calendar, escalation = self.calendar(dept), self.escalation(dept)
        instants = [found[1] for clock, _ in clocks
                    if (found := next_level(clock, escalation, calendar))]
        await tx.execute("UPDATE tickets SET next_escalation_at = ? WHERE id = ?",
                         (ts(min(instants)) if instants else None, ticket_id))
