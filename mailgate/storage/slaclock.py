"""SLA clocks in the database: start, meet, pause, resume, and what is due.

Every change ends by writing the ticket's next_escalation_at: the earliest instant any of
its running clocks has a level due (NULL when none runs, or while the ticket waits on the
requester). The scheduler reads only that indexed column, so a tick costs what the due
tickets cost, not what the open ones do; and it reads and writes them set-wise (one query,
a few executemany), because a tick is a handful of round trips to SQLite, not thousands.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from mailgate.core.sla import Clock, Firing, Target, advance
from mailgate.storage.store import Tx, from_ts, ts
from mailgate.tickets.clocks import ClockPolicy
from mailgate.tickets.effects import WriteClock


@dataclass(frozen=True, slots=True)
class DueLevel:
    """One level fired now on one ticket's clock: the scheduler mails it."""

    ticket_id: int
    ref: str
    department: str
    assignee: str | None
    clock: Clock
    round: int
    firing: Firing
    due_at: datetime


@dataclass
class Tick:
    """What one scheduler round decided, written back by SlaBook.commit."""

    now: datetime
    due: list[DueLevel] = field(default_factory=list)
    clocks: list[tuple[int, float | None, int, str]] = field(default_factory=list)
    # ^ (fired, next_at, ticket, target) for every clock that fired
    schedule: list[tuple[float | None, int]] = field(default_factory=list)  # next, ticket
    tickets: int = 0


# What the tick needs of a ticket: the rest is read when the mail is written.
DUE_TICKET_COLUMNS = "t.id, t.ref, t.department, t.assignee"
CLOCK_COLUMNS = ("c.target, c.started_at, c.seconds, c.paused_seconds, c.fired, c.round, "
                 "c.due_at, c.next_at")
# The ticket's next instant is the earliest next level of its running clocks: plain SQL.
NEXT_ESCALATION = ("(SELECT MIN(next_at) FROM sla_clocks WHERE ticket = tickets.id "
                   "AND met_at IS NULL)")
RESCHEDULE = f"""UPDATE tickets SET next_escalation_at = CASE WHEN paused_at IS NULL THEN
                     {NEXT_ESCALATION} END
                 WHERE id = ?"""


_RESTART = """INSERT INTO sla_clocks (ticket, target, started_at, seconds, paused_seconds,
                 due_at, next_at, met_at, round) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (ticket, target) DO UPDATE SET started_at = excluded.started_at,
                 seconds = excluded.seconds, paused_seconds = excluded.paused_seconds,
                 due_at = excluded.due_at, next_at = excluded.next_at,
                 met_at = excluded.met_at, fired = 0, round = sla_clocks.round + ?"""
_SHIFT = """UPDATE sla_clocks SET paused_seconds = ?, due_at = ?, next_at = ?,
                met_at = coalesce(?, met_at) WHERE ticket = ? AND target = ?"""
_MEET = "UPDATE sla_clocks SET met_at = ? WHERE ticket = ? AND target = ? AND met_at IS NULL"


async def write_clocks(tx: Tx, clocks: list[WriteClock], now: datetime) -> None:
    """Clocks as a decision leaves them (effects.WriteClock), one executemany per shape:
    restarted (a new round; the row is written whole), pushed back by a pause, or met."""
    met = ts(now)
    restarted = [(w.ticket, w.clock.target.value, ts(w.clock.started_at), w.clock.budget,
                  w.clock.paused_seconds, w.due_at, w.next_at, met if w.met else None,
                  w.rounds, w.rounds) for w in clocks if w.rounds]
    shifted = [(w.clock.paused_seconds, w.due_at, w.next_at, met if w.met else None, w.ticket,
                w.clock.target.value) for w in clocks if not w.rounds and w.shifted]
    only_met = [(met, w.ticket, w.clock.target.value) for w in clocks
                if not w.rounds and not w.shifted and w.met]
    for sql, rows in ((_RESTART, restarted), (_SHIFT, shifted), (_MEET, only_met)):
        if rows:
            await tx.conn.executemany(sql, rows)


class SlaBook(ClockPolicy):
    """The clock policy (tickets/clocks.py) and the SQL that keeps clocks."""

    async def pause(self, tx: Tx, ticket_id: int, now: datetime) -> None:
        """Waiting on the requester: every clock of the ticket stops counting. (Mail
        pauses and resumes through a decision, apply.py; these are for other callers.)"""
        await tx.execute("UPDATE tickets SET paused_at = ?, next_escalation_at = NULL "
                         "WHERE id = ? AND paused_at IS NULL", (ts(now), ticket_id))

    async def resume(self, tx: Tx, ticket_id: int, now: datetime) -> None:
        """The requester answered: clocks go on, pushed back by the business time paused."""
        row = await tx.fetch_one("SELECT department, paused_at FROM tickets WHERE id = ?",
                                 (ticket_id,))
        if row is None or row[1] is None:
            return
        dept = self.department(row[0])
        paused = self.calendar(dept).elapsed(from_ts(row[1]), now)
        rows = await tx.fetch_all(
            f"SELECT {CLOCK_COLUMNS} FROM sla_clocks c WHERE c.ticket = ? AND c.met_at IS NULL",
            (ticket_id,))
        updates = []
        for r in rows:
            clock = _clock(r)
            clock = replace(clock, paused_seconds=clock.paused_seconds + paused)
            updates.append((clock.paused_seconds, *self.clock_row(dept, clock), ticket_id,
                            clock.target.value))
        await tx.conn.executemany(
            "UPDATE sla_clocks SET paused_seconds = ?, due_at = ?, next_at = ? "
            "WHERE ticket = ? AND target = ?", updates)
        await tx.execute("UPDATE tickets SET paused_at = NULL WHERE id = ?", (ticket_id,))
        await tx.execute(RESCHEDULE, (ticket_id,))

    # --- the scheduler's side ----------------------------------------------------------

    async def due(self, tx: Tx, now: datetime, limit: int) -> Tick:
        """Decide, for up to `limit` due tickets, which levels fire now (reads only).

        On a shared engine the tickets are locked until the tick commits, and one that
        another node's mail is working on (an answer meeting its clock) is skipped until
        the next tick: fired from its past, a warning would go out about an answered
        ticket, and its next instant would be written from a clock met meanwhile."""
        lock = " FOR UPDATE OF t SKIP LOCKED" if tx.engine is not None and tx.engine.shared \
            else ""
        rows = await tx.fetch_all(
            f"""SELECT {DUE_TICKET_COLUMNS}, {CLOCK_COLUMNS}
                FROM (SELECT id FROM tickets WHERE next_escalation_at <= ?
                      ORDER BY next_escalation_at LIMIT ?) d
                JOIN tickets t ON t.id = d.id
                JOIN sla_clocks c ON c.ticket = t.id AND c.met_at IS NULL
                ORDER BY t.next_escalation_at, t.id{lock}""", (ts(now), limit))
        tick = Tick(now)
        by_ticket: dict[int, list[tuple]] = {}
        for row in rows:
            by_ticket.setdefault(row[0], []).append(row)
        for ticket_rows in by_ticket.values():
            self._decide(tick, ticket_rows, ts(now))
        tick.tickets = len(by_ticket)
        return tick

    def _decide(self, tick: Tick, rows: list[tuple], now: float) -> None:
        ticket_id, ref, department, assignee = rows[0][:4]
        dept = self.department(department)
        calendar, escalation = self.calendar(dept), self.escalation(dept)
        nexts = []
        for row in rows:
            round_, due_at, next_at = row[9], row[10], row[11]
            if next_at is not None and next_at <= now:
                clock = _clock(row[4:])
                due = advance(clock, escalation, calendar, tick.now)
                next_at = ts(due.next_at) if due.next_at else None
                if due.level is not None:
                    tick.due.append(DueLevel(ticket_id, ref, department, assignee, clock,
                                             round_, due, from_ts(due_at)))
                    tick.clocks.append((due.level.number, next_at, ticket_id,
                                        clock.target.value))
            if next_at is not None:
                nexts.append(next_at)
        tick.schedule.append((min(nexts) if nexts else None, ticket_id))

    async def commit(self, tx: Tx, tick: Tick, sent: dict[int, str | None]) -> None:
        """Record the tick: each level once (the primary key makes a second time an error),
        the clocks' progress and the tickets' next instants. `sent` maps an index into
        tick.due to the Message-ID of the mail enqueued for it."""
        rows = []
        for index, due in enumerate(tick.due):
            assert due.firing.level is not None  # only firing clocks are in tick.due
            for level in (*due.firing.skipped, due.firing.level):
                skipped = level is not due.firing.level
                rows.append((due.ticket_id, due.clock.target.value, due.round, level.number,
                             "skipped" if skipped else level.kind.value, ts(tick.now),
                             ts(due.due_at), due.department, due.assignee,
                             None if skipped else sent.get(index)))
        await tx.conn.executemany(
            """INSERT INTO escalations (ticket, target, round, level, kind, at, due_at,
                   department, assignee, outgoing) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?,
                   (SELECT id FROM outbox WHERE message_id = ?))""", rows)
        await tx.conn.executemany(
            "UPDATE sla_clocks SET fired = ?, next_at = ? WHERE ticket = ? AND target = ?",
            tick.clocks)
        await tx.conn.executemany(
            "UPDATE tickets SET next_escalation_at = ? WHERE id = ?", tick.schedule)


def _clock(row: tuple) -> Clock:
    return Clock(Target(row[0]), from_ts(row[1]), row[2], row[3], row[4])

