"""Read-only questions about tickets and their SLA state: the admin CLI's `tickets` and
`status`, the daemon's status. The reports' reads are in storage/reports.py.

Nothing here writes. SLA state is derived from sla_clocks as follows (README, "Reports and
metrics"):

- a clock is *running* while it is not met (met_at IS NULL) and its ticket is not
  resolved or closed;
- a running clock is *breached* once its due_at has passed; a ticket waiting on the
  requester (paused) is breached only if it was already overdue when it was paused;
- a running clock that is not breached is *at risk* when one of its warning levels has
  already fired (fired >= 1) or when at most one business hour of the department's
  calendar is left (due_at <= calendar.add(now, 1 h)); paused tickets are never at risk.

A ticket is breached if any of its clocks is, and at risk if it is not breached and any
clock is at risk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from mailgate.storage.engine import BinaryRows
from mailgate.storage.store import Store, from_ts, ticket_from_row, ts

if TYPE_CHECKING:
    from mailgate.config.directory import Directory
    from mailgate.core.businesstime import BusinessCalendar
    from mailgate.core.model import Ticket

RISK_HORIZON = 3600.0  # business seconds: this much or less left counts as at risk

# Written for both engines: flags are 0/1 integers (CASE), not booleans, which PostgreSQL
# neither takes MAX of nor adds up; the horizons arrive as a VALUES list (_horizon_rows).
# `a` is the active tickets (neither resolved nor closed) whose state is wanted.
_STATE = """
    horizon(department, at) AS ({horizons}),
    state AS (
        SELECT a.id AS ticket,
               MAX(CASE WHEN c.due_at <= COALESCE(a.paused_at, :now) THEN 1 ELSE 0 END)
                   AS breached,
               MAX(CASE WHEN a.paused_at IS NULL AND c.due_at > :now
                   AND (c.fired >= 1 OR c.due_at <= COALESCE(h.at, :now + :risk))
                   THEN 1 ELSE 0 END) AS at_risk,
               MIN(c.due_at) AS next_due
        FROM {tickets} a {join} sla_clocks c ON c.ticket = a.id AND c.met_at IS NULL
        LEFT JOIN horizon h ON h.department = a.department
        WHERE a.status NOT IN ('resolved', 'closed')
        GROUP BY a.id)"""


def risk_horizons(directory: Directory | None, now: datetime) -> dict[str, float]:
    """Per department, the instant one business hour from now (Unix seconds).

    Departments the database knows but the directory no longer does fall back to one
    wall-clock hour in the SQL.
    """
    return {key: ts(calendar.add(now, RISK_HORIZON))
            for key, calendar in calendar_lookup(directory).items()}


async def read_rows(store: Store, sql: str, params: Mapping[str, object],
                    committed: bool = False, binary: bool = False) -> list:
    """The rows of one read: on the writer connection (it sees this process's own open
    transaction), or with `committed` on the reader (which never waits for the writer).
    `binary`: many rows of text and numbers, in the server's binary form where the engine
    has one (engine.BinaryRows)."""
    conn = await store.reader() if committed else store.conn
    if binary and isinstance(conn, BinaryRows):
        return await conn.execute_fetchall_binary(sql, params)
    return list(await conn.execute_fetchall(sql, params))


def _params(now: datetime, horizons: Mapping[str, float]) -> dict[str, object]:
    params: dict[str, object] = {"now": ts(now), "risk": RISK_HORIZON}
    for i, (department, at) in enumerate(horizons.items()):
        params[f"hd{i}"], params[f"ha{i}"] = department, at
    return params


def _state(horizons: Mapping[str, float], scope: str | None = None) -> str:
    """The _STATE clauses for these horizons (named :hdN, :haN in _params).

    With `scope`, the state of the tickets in that CTE only (named before these clauses,
    with at least the columns id, department, status, paused_at), each one's clocks looked up by
    the clocks' primary key (ticket, target). The LEFT JOIN is on purpose: for an inner
    join SQLite (with ANALYZE's statistics) builds a Bloom filter over all the running
    clocks first, reading every one of them for the page's fifty tickets. A ticket
    without a running clock then gets a state row with no next_due, which reads as no
    SLA state, as no row does.
    """
    rows = ", ".join(f"(:hd{i}, CAST(:ha{i} AS DOUBLE PRECISION))"
                     for i in range(len(horizons)))
    empty = "SELECT CAST(NULL AS TEXT), CAST(NULL AS DOUBLE PRECISION) WHERE 1 = 0"
    return _STATE.format(horizons=f"VALUES {rows}" if rows else empty,
                         tickets=scope or "tickets", join="LEFT JOIN" if scope else "JOIN")


@dataclass(frozen=True, slots=True)
class DepartmentLoad:
    department: str
    open: int
    at_risk: int
    breached: int


async def sla_overview(store: Store, now: datetime, horizons: Mapping[str, float], *,
                       committed: bool = False) -> list[DepartmentLoad]:
    """Open, at-risk and breached tickets per department (departments with open tickets);
    `committed`: read on the reader connection (the daemon's status, which must not wait
    for intake)."""
    sql = f"""WITH {_state(horizons)}
        SELECT t.department, COUNT(*),
               COALESCE(SUM(CASE WHEN s.at_risk = 1 AND s.breached = 0 THEN 1 ELSE 0 END), 0),
               COALESCE(SUM(s.breached), 0)
        FROM tickets t LEFT JOIN state s ON s.ticket = t.id
        WHERE t.status NOT IN ('resolved', 'closed')
        GROUP BY t.department"""
    rows = await read_rows(store, sql, _params(now, horizons), committed)
    # By department key, in Python: an ORDER BY would follow the PostgreSQL database's
    # collation (locale rules for case and punctuation), SQLite's code point order.
    return sorted((DepartmentLoad(r[0], r[1], r[2], r[3]) for r in rows),
                  key=lambda load: load.department)


@dataclass(frozen=True, slots=True)
class TicketFilter:
    department: str | None = None
    statuses: tuple[str, ...] = ()
    at_risk: bool = False
    breached: bool = False
    requester: str | None = None  # an address, or "@domain" for everyone there
    older_than: timedelta | None = None  # wall-clock age since the request came in
    limit: int = 50


@dataclass(frozen=True, slots=True)
class TicketRow:
    ticket: Ticket
    sla: str | None  # breached | at_risk | ok | None (no running clock)
    next_due: datetime | None  # earliest due instant of a running clock

    def as_json(self) -> dict:
        t = self.ticket
        return {"ref": t.ref, "department": t.department, "status": t.status.value,
                "priority": t.priority.value, "subject": t.subject, "requester": t.requester,
                "requester_name": t.requester_name, "created_at": t.created_at.isoformat(),
                "updated_at": t.updated_at.isoformat(), "sla": self.sla,
                "next_due_at": self.next_due.isoformat() if self.next_due else None}


async def find_tickets(store: Store, flt: TicketFilter, now: datetime,
                       horizons: Mapping[str, float]) -> list[TicketRow]:
    """Tickets matching every given filter, newest first, with their SLA state."""
    where: list[str] = []
    params = _params(now, horizons)
    if flt.department:
        where.append("t.department = :department")
        params["department"] = flt.department
    if flt.statuses:
        marks = ", ".join(f":status{i}" for i in range(len(flt.statuses)))
        where.append(f"t.status IN ({marks})")
        params.update({f"status{i}": s for i, s in enumerate(flt.statuses)})
    if flt.requester:
        # Addresses are kept lower-case; lower() also makes the LIKE ignore case on
        # PostgreSQL, whose LIKE (unlike SQLite's) is case-sensitive.
        who = flt.requester.strip().lower()
        if who.startswith("@"):
            where.append("lower(t.requester) LIKE :requester ESCAPE '\\'")
            params["requester"] = "%" + who.replace("\\", "\\\\").replace(
                "%", "\\%").replace("_", "\\_")
        else:
            where.append("t.requester = :requester")
            params["requester"] = who
    if flt.older_than is not None:
        where.append("t.created_at <= :before")
        params["before"] = ts(now - flt.older_than)
    sla_wanted = []
    if flt.breached:
        sla_wanted.append("s.breached = 1")
    if flt.at_risk:
        sla_wanted.append("(s.at_risk = 1 AND s.breached = 0)")
    params["limit"] = flt.limit
    # Pick the tickets first (an index on the filters, newest first), then derive the SLA
    # state of those only: a million tickets have two million clocks. Without an SLA
    # filter the page itself is picked first; with one, every matching active ticket's
    # state is needed to know which ones make the page (only a ticket neither resolved nor
    # closed has SLA state).
    if sla_wanted:
        where.append("t.status NOT IN ('resolved', 'closed')")
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    page = "" if sla_wanted else "ORDER BY t.id DESC LIMIT :limit"
    columns = ("id, ref, department, subject, requester, requester_name, status, priority, "
               "created_at, updated_at")
    sql = f"""WITH picked AS (SELECT {columns}, paused_at FROM tickets t {clause} {page}),
        {_state(horizons, scope="picked")}
        SELECT {columns}, s.breached, s.at_risk, s.next_due
        FROM picked p LEFT JOIN state s ON s.ticket = p.id
        {"WHERE " + " OR ".join(sla_wanted) if sla_wanted else ""}
        ORDER BY id DESC LIMIT :limit"""
    rows = await read_rows(store, sql, params)
    return [TicketRow(ticket_from_row(r), _sla(r[10], r[11], r[12]),
                      from_ts(r[12]) if r[12] is not None else None) for r in rows]


def _sla(breached: int | None, at_risk: int | None, next_due: float | None) -> str | None:
    if next_due is None:
        return None
    if breached:
        return "breached"
    return "at_risk" if at_risk else "ok"


def calendar_lookup(directory: Directory | None) -> dict[str, BusinessCalendar]:
    if directory is None:
        return {}
    return {key: directory.calendar_for(dept) for key, dept in directory.departments.items()}
