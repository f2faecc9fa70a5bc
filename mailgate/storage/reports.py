"""The reports' reads: a period's requests, their SLA clocks, first-touch resolutions and
the backlog (`mailgate report`, the digests), and who sent requests to whom (`mailgate
report --dependencies`). mailgate.core.report and mailgate.core.dependencies compute the
figures from these rows. Nothing here writes.

The reads go through queries.read_rows, looked up on the module at each call, so that a
test can make every read of both modules explain itself.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from mailgate.config.directory import Directory, is_agent
from mailgate.core.dependencies import DependencyView, RequestFacts, build_dependencies
from mailgate.core.report import ClockTally, Report, TicketFacts, build_report
from mailgate.storage import queries
from mailgate.storage.queries import calendar_lookup
from mailgate.storage.store import Store, from_ts, maybe_ts, ts

# Event kinds that are an agent's answer on the ticket (pipeline._follow_clocks). Only
# events whose actor is an agent of the ticket's department count.
RESPONSE_EVENTS = ("reply",)

async def columns(store: Store, table: str) -> set[str]:
    return await store.engine.columns(table)


@dataclass(frozen=True, slots=True)
class ReportRows:
    tickets: list[TicketFacts]
    clocks: list[ClockTally]
    first_touch: dict[str, int]  # per department: resolved with exactly one agent answer
    backlog: dict[str, int]
    ratings: bool  # the schema has a satisfaction rating on tickets


async def report_rows(store: Store, directory: Directory | None,
                      since: datetime, until: datetime,
                      departments: Iterable[str] | None = None) -> ReportRows:
    """Everything a report needs about the requests that came in during [since, until):
    each request's instants, its department's resolved requests with one agent answer
    counted, and the SLA clocks tallied as of `until`."""
    async with _without_jit(store):
        return await _report_rows(store, directory, since, until, departments)


@asynccontextmanager
async def _without_jit(store: Store) -> AsyncIterator[None]:
    """PostgreSQL's JIT compiler off for the report's reads, the session's setting back
    after. A month of a million tickets is a lookup per request: the planner's estimate is
    past jit_above_cost, and compiling took longer than the reads it sped up (0.2 s of the
    period's 0.55 s read, 0.38 s of the backlog's 0.62 s)."""
    if store.engine.name != "postgresql":
        yield
        return
    connections = [store.conn, await store.reader()]  # _report_rows reads on both
    for conn in connections:
        await conn.execute("SET jit = off")
    try:
        yield
    finally:
        for conn in connections:
            await conn.execute("RESET jit")


# The report's reads are set-based: the period's requests once with their instants, then
# their clocks and their replies each as one join, counted in SQL. A lookup per request
# (a correlated subquery) costs PostgreSQL's executor a few microseconds each: three per
# request were 1.26 s of a month at a million tickets. The joins name the range of ids
# the period's requests lie in (r.lo..r.hi), besides joining them: a condition the join
# implies, so nothing changes in what is counted, but it lets the clocks and events be
# read by their index on the ticket for that range only -- without it PostgreSQL hashes
# every clock or event of the store. Requests are numbered as they come in, so the range
# is the period's requests and hardly any other.
_PERIOD = """p AS MATERIALIZED (SELECT t.id, t.department FROM tickets t WHERE {cohort}),
    r AS (SELECT MIN(id) AS lo, MAX(id) AS hi FROM p)"""


async def _report_rows(store: Store, directory: Directory | None, since: datetime,
                       until: datetime, departments: Iterable[str] | None) -> ReportRows:
    wanted = list(departments) if departments is not None else None
    ratings = "rating" in await columns(store, "tickets")
    params: dict[str, object] = {"since": ts(since), "until": ts(until)}
    params.update({f"dept{i}": d for i, d in enumerate(wanted or ())})
    marks = ", ".join(f":dept{i}" for i in range(len(wanted or ())))
    in_depts = ("1 = 1" if wanted is None
                else f"t.department IN ({marks})" if wanted else "1 = 0")
    cohort = f"t.created_at >= :since AND t.created_at < :until AND {in_depts}"
    rating = "t.rating" if ratings else "NULL"

    async def on_the_writer() -> tuple[list[TicketFacts], dict[str, int]]:
        # No ORDER BY: nothing in the figures depends on the tickets' order. Each row is
        # a TicketFacts as it is.
        tickets = await queries.read_rows(store, f"""
            SELECT t.department, t.created_at, t.first_response_at, t.resolved_at, {rating}
            FROM tickets t WHERE {cohort}""", params, binary=True)
        return tickets, await _first_touch(store, directory, cohort, params)

    async def on_the_reader() -> tuple[list[ClockTally], dict[str, int]]:
        clocks = await queries.read_rows(store, f"""WITH {_PERIOD.format(cohort=cohort)}
            SELECT p.department, c.target,
                   SUM(CASE WHEN c.met_at IS NOT NULL OR c.due_at <= :until THEN 1 ELSE 0 END),
                   SUM(CASE WHEN c.met_at <= c.due_at THEN 1 ELSE 0 END)
            FROM r, sla_clocks c JOIN p ON p.id = c.ticket
            WHERE c.ticket BETWEEN r.lo AND r.hi AND c.target IN ({_TALLIED})
            GROUP BY p.department, c.target""", params, committed=True)
        return ([ClockTally(*row) for row in clocks],
                await _backlog(store, wanted, params, committed=True))

    # Two lanes at once: the writer's connection and the reader's each read half, so the
    # database works on two reads at a time (PostgreSQL: two server processes; SQLite:
    # two threads, which leave the GIL while they step). Each read is a statement of its
    # own, as before: the report never was one snapshot.
    (tickets, first_touch), (clocks, backlog) = await asyncio.gather(on_the_writer(),
                                                                     on_the_reader())
    return ReportRows(tickets, clocks, first_touch, backlog, ratings)


async def _first_touch(store: Store, directory: Directory | None, cohort: str,
                       params: Mapping[str, object]) -> dict[str, int]:
    """Per department, the period's resolved requests with exactly one answer by one of
    its agents. Who is an agent is the directory's to say, so SQL hands over each
    resolved request's replies as "COUNT:actor<LF>actor..." (their actors), and counts
    the requests per department and text: a month is a few such texts, not a row per
    request."""
    replies = await _reply_condition(store)
    resolved = f"{cohort} AND t.resolved_at IS NOT NULL"
    rows = await queries.read_rows(store, f"""WITH {_PERIOD.format(cohort=resolved)}
        SELECT department, replies, COUNT(*) FROM (
            SELECT p.department, COUNT(*) || ':' || group_concat(e.actor, char(10)) AS replies
            FROM r, events e JOIN p ON p.id = e.ticket
            WHERE e.ticket BETWEEN r.lo AND r.hi AND {replies}
            GROUP BY p.id, p.department) answered
        GROUP BY department, replies""", params)
    answers = _AgentAnswers(directory)
    hits: Counter[str] = Counter()
    for department, text, requests in rows:
        count = answers.count(department, text)
        if count is None:  # an actor with a line feed in it: the replies read apart
            return await _first_touch_by_reply(store, answers, resolved, replies, params)
        if count == 1:
            hits[department] += requests
    return dict(hits)


async def _first_touch_by_reply(store: Store, answers: _AgentAnswers, resolved: str,
                                replies: str, params: Mapping[str, object]
                                ) -> dict[str, int]:
    """_first_touch from a row per reply: for actors that cannot be joined apart."""
    rows = await queries.read_rows(store, f"""SELECT t.id, t.department, e.actor
        FROM tickets t JOIN events e ON e.ticket = t.id WHERE {resolved} AND {replies}""",
                       params)
    department_of = {ticket: department for ticket, department, _ in rows}
    counts = Counter(ticket for ticket, department, actor in rows
                     if answers.is_agent(department, actor))
    return dict(Counter(department_of[ticket] for ticket, n in counts.items() if n == 1))


async def _reply_condition(store: Store) -> str:
    """Which events `e` are replies that may be an agent's answer."""
    kinds = ", ".join(f"'{k}'" for k in RESPONSE_EVENTS)
    # Internal notes (schema 4 marks events public or internal) are not answers.
    public = ("AND COALESCE(e.visibility, 'public') != 'internal'"
              if "visibility" in await columns(store, "events") else "")
    return f"e.kind IN ({kinds}) AND e.actor IS NOT NULL {public}"


class _AgentAnswers:
    """Counts a request's answers by an agent of its department."""

    def __init__(self, directory: Directory | None) -> None:
        self.directory = directory
        self.agent: dict[tuple[str, str], bool] = {}  # a few agents answer thousands

    def count(self, department: str, replies: str) -> int | None:
        """From the "COUNT:actor<LF>actor..." text; None when the count does not match."""
        number, _, joined = replies.partition(":")
        actors = joined.split("\n")
        return self.of(department, actors) if len(actors) == int(number) else None

    def of(self, department: str, actors: list[str]) -> int:
        return sum(1 for actor in actors if self.is_agent(department, actor))

    def is_agent(self, department: str, actor: str) -> bool:
        known = self.agent.get((department, actor))
        if known is None:
            dept = self.directory.departments.get(department) if self.directory else None
            known = self.agent[department, actor] = dept is not None and is_agent(dept, actor)
        return known


# The SLA targets a report counts. A clock is in time when it was met by its due time,
# ended when it was met (late or not) or is overdue as of :until; clocks still running
# within their time are in neither. The stored instants are the timestamps of whole
# microseconds (ts), so comparing them is comparing the datetimes.
TALLIED = ("first_response", "resolution")
_TALLIED = ", ".join(f"'{target}'" for target in TALLIED)


# The departments the tickets name, one index step each on tickets_department_status (a
# loose index scan: the recursive CTE asks for the next department after the last one).
_EVERY_DEPARTMENT = """
    departments(key) AS (
        SELECT MIN(department) FROM tickets
        UNION ALL
        SELECT (SELECT MIN(t.department) FROM tickets t WHERE t.department > d.key)
        FROM departments d WHERE d.key IS NOT NULL)"""

# A department's tickets neither resolved nor closed: the statuses other than those two
# are the three ranges around them, each counted on tickets_department_status as a range
# of the index. `status NOT IN (...)` reads every ticket of the department instead, and
# nearly all of a million are closed; the three ranges joined by OR in one count are read
# the same way by PostgreSQL (the index condition is the department, the statuses a
# filter: 330,000 entries a department at a million tickets).
_OPEN_RANGES = ("t.status < 'closed'", "t.status > 'closed' AND t.status < 'resolved'",
                "t.status > 'resolved'")


async def _backlog(store: Store, wanted: list[str] | None, params: Mapping[str, object],
                   committed: bool = False) -> dict[str, int]:
    """Per department, its tickets neither resolved nor closed now, whenever they came in
    (departments without any are left out)."""
    if wanted == []:
        return {}
    departments = (f"WITH RECURSIVE {_EVERY_DEPARTMENT}" if wanted is None else
                   "WITH departments(key) AS (VALUES "
                   + ", ".join(f"(:dept{i})" for i in range(len(wanted))) + ")")
    counts = " + ".join(f"(SELECT COUNT(*) FROM tickets t WHERE t.department = d.key "
                        f"AND {statuses})" for statuses in _OPEN_RANGES)
    rows = await queries.read_rows(store, f"""{departments}
        SELECT d.key, {counts} FROM departments d WHERE d.key IS NOT NULL""", params, committed)
    return {key: count for key, count in rows if count}


async def department_report(store: Store, directory: Directory | None,
                            since: datetime, until: datetime,
                            departments: Iterable[str] | None = None) -> Report:
    """Read the period's rows and compute the report (mailgate.core.report does the figures).

    Departments appear in directory order, then any only the database still knows.
    """
    wanted = list(departments) if departments else None
    rows = await report_rows(store, directory, since, until, wanted)
    names = {k: d.name for k, d in directory.departments.items()} if directory else {}
    known = {t[0] for t in rows.tickets} | set(rows.backlog)  # t: TicketFacts
    names.update({key: key for key in sorted(known - set(names))})
    if wanted:
        names = {key: names.get(key, key) for key in wanted}
    return build_report(rows.tickets, rows.clocks, rows.first_touch, rows.backlog,
                        since=since, until=until, names=names,
                        calendars=calendar_lookup(directory), ratings=rows.ratings)


async def dependency_view(store: Store, directory: Directory | None,
                          since: datetime, until: datetime,
                          departments: Iterable[str] | None = None) -> DependencyView:
    """Which departments sent requests to which during [since, until) (mailgate.core.dependencies
    does the grouping). With departments, only flows from or to one of them."""
    rows = await queries.read_rows(store, """
        SELECT t.requester, t.department, t.created_at, t.first_response_at
        FROM tickets t WHERE t.created_at >= :since AND t.created_at < :until
        ORDER BY t.id""", {"since": ts(since), "until": ts(until)})
    requests = [RequestFacts((r[0] or "").lower(), r[1], from_ts(r[2]), maybe_ts(r[3]))
                for r in rows]

    def department_of(address: str) -> str | None:
        person = directory.person(address) if directory else None
        return person.department if person else None

    wanted = set(departments or ())
    if wanted:
        requests = [r for r in requests
                    if r.department in wanted or department_of(r.requester) in wanted]
    order = list(directory.departments) if directory else []
    return build_dependencies(requests, department_of, since=since, until=until,
                              calendars=calendar_lookup(directory), order=order)
