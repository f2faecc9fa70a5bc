#!/usr/bin/env python3
"""A million tickets: how the queries people type and intake itself hold up on a big store.

    python bench/scale.py [--tickets 1000000] [--runs 5] [--burst 300]

Builds a store with N tickets spread over the last year, with their messages, receipts,
events, acknowledgements in the outbox and SLA clocks, as an installation that ran for a
year would have them (mostly closed; the last two weeks busy; about 1 % of old tickets left
open). The schema comes from the store's own migrations (Store.open); the rows go in with
plain SQLite executemany in transactions of 20,000 tickets, because the store's transaction
API writes one row per call (one aiosqlite round trip each: hours for a million). Nothing
in the data is due: no escalation, auto-close or survey fires when the daemon starts on it.

Then, on the big store and on an empty one, each command runs RUNS times as a user would
type it (a new process each time, so interpreter start and imports count; the empty store
shows that fixed cost) and RUNS times through mailgate.cli.main in this process after one
untimed call (the command's own work: open the store, query, format); medians are kept:
`tickets --department it --status open`, `report --since 30d`, `show REF` (a recent
ticket). Last, a small burst (acks only, the
issue's mix, one mailbox) through the real daemon on the big store and on an empty one,
alternating. Writes bench/results/scale.json (one entry per tickets x engine, others kept)
and prints a table. With --engine postgresql the big store is the SQLite one copied into a
private PostgreSQL by `mailgate migrate --to` (timed), the empty one a fresh database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from contextlib import nullcontext, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import burst, rig
from mailgate.storage.store import Store
from tests.factories import ROOT
from tests.postgres import PostgresServer

DAY = 86400.0
CHUNK = 20_000
# (key, prefix, address, an agent of its team) as in config/directory.example.toml
DEPARTMENTS = (("it", "IT", "it-help@example.com", "alice@example.com"),
               ("facilities", "FAC", "facilities@example.com", "erin@example.com"),
               ("payroll", "PAY", "payroll@example.com", "grace@example.com"))
FIRST_NUMBER = 1000
QUERIES = {"tickets": ["tickets", "--department", "it", "--status", "open"],
           "report": ["report", "--since", "30d"],
           "show": ["show"]}
TARGET_MS = {"tickets": 200, "report": 2000, "show": 100}


# --- building the store ----------------------------------------------------------------------

@dataclass
class Built:
    seconds: float
    rows: dict[str, int]
    recent_ref: str
    database_mb: float


def department_of(i: int) -> int:
    """60 % IT, 25 % facilities, 15 % payroll."""
    slot = i % 20
    return 0 if slot < 12 else 1 if slot < 17 else 2


def status_of(i: int, age: float) -> str:
    if age <= 14 * DAY:
        status = ("new", "open", "open", "waiting", "resolved", "closed")[i % 6]
        # Resolved more than 6 days ago would be auto-closed at once: closed already.
        return "closed" if status == "resolved" and age > 6 * DAY else status
    return "open" if i % 100 == 0 else "closed"


REQUEST_RAW = zlib.compress(rig.plain("staff@example.org", "it-help@example.com",
                                      "The printer jams", "x@example.org", 0), 1)
ANSWER_RAW = zlib.compress(b"From: alice@example.com\r\nSubject: Re: The printer jams\r\n\r\n"
                           b"Fixed: the tray was bent.\r\n", 1)
BODY = "The printer jams on every second page and shows error E-42. " * 3
ANSWER = "Fixed: the tray was bent; please try again."


def rows_for(i: int, number: int, now: float, span: float, total: int) -> dict[str, list]:
    """Ticket i's rows: ids are derived from i, so rows link without reading anything."""
    key, prefix, address, agent = DEPARTMENTS[department_of(i)]
    created = now - span + span * i / total
    age = now - created
    status = status_of(i, age)
    requester = f"staff{i % 5000}@example.org"
    subject = f"The printer on floor {i % 9} jams ({i})"
    answered = status != "new"
    first_response = created + 3600 if answered else None
    resolved = created + DAY if status in ("resolved", "closed") else None
    closed = resolved + 5 * DAY if status == "closed" and resolved is not None else None
    tid, request, answer, ack = i + 1, 2 * i + 1, 2 * i + 2, i + 1
    out: dict[str, list] = {name: [] for name in ("tickets", "messages", "receipts",
                                                  "events", "outbox", "sla_clocks")}
    out["tickets"].append((
        tid, f"{prefix}-{number}", key, number, subject, requester, "Staff Member", status,
        "high" if i % 10 == 0 else "normal", created, closed or resolved or first_response
        or created, agent if answered else None, first_response, resolved,
        created + 7200 if status == "waiting" else None, closed, resolved,
        (5 - i % 3) if status == "closed" and i % 4 == 0 else None))
    dedupe = f"scale-{i}@example.org"
    out["messages"].append((request, dedupe, dedupe, f"{i:032x}", "request", requester,
                            "Staff Member", f'["{address}"]', subject, BODY, "[]", "[]", 420,
                            f"imap:{key}", created, REQUEST_RAW, "", BODY))
    out["receipts"].append((dedupe, key, request, "created"))
    out["events"] += [(tid, created, "created", requester, request, None, None, None),
                      (tid, created, "ack_queued", None, None, ack, None, None)]
    out["outbox"].append((ack, f"ack-{i}@example.com", "ack", tid, address,
                          f'["{requester}"]', REQUEST_RAW, "sent", 1, created, created,
                          created + 0.2, requester, "example.org"))
    if answered:
        reply_key = f"scale-answer-{i}@example.com"
        out["messages"].append((answer, reply_key, reply_key, f"{i:031x}a", "request", agent,
                                "Agent", f'["{address}"]', f"Re: {subject}", ANSWER, "[]",
                                "[]", 160, f"imap:{key}", first_response, ANSWER_RAW, "",
                                ANSWER))
        out["events"].append((tid, first_response, "reply", agent, answer, None, None,
                              "public"))
    if resolved is not None:
        out["events"].append((tid, resolved, "resolved", agent, None, None, None, None))
    if closed is not None:
        out["events"].append((tid, closed, "closed", None, None, None, None, None))
    # Every level fired or past (fired = 3, next_at NULL): nothing is due on a started daemon.
    out["sla_clocks"] += [(tid, "first_response", created, 4 * 3600, created + 4 * 3600,
                           first_response, 3),
                          (tid, "resolution", created, 3 * DAY, created + 3 * DAY, resolved, 3)]
    return out


INSERTS = {
    "tickets": "INSERT INTO tickets (id, ref, department, number, subject, requester, "
               "requester_name, status, priority, created_at, updated_at, assignee, "
               "first_response_at, resolved_at, paused_at, closed_at, survey_at, rating) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "messages": "INSERT INTO messages (id, dedupe_key, message_id, fingerprint, kind, sender, "
                "sender_name, recipients, subject, body, attachments, defects, size, source, "
                "received_at, raw, sender_trust, text) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "receipts": "INSERT INTO receipts (dedupe_key, department, message, outcome) "
                "VALUES (?, ?, ?, ?)",
    "events": "INSERT INTO events (ticket, at, kind, actor, message, outgoing, detail, "
              "visibility) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "outbox": "INSERT INTO outbox (id, message_id, kind, ticket, mail_from, recipients, raw, "
              "status, attempts, next_attempt, created_at, sent_at, budget, budget_domain) "
              "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "sla_clocks": "INSERT INTO sla_clocks (ticket, target, started_at, seconds, due_at, "
                  "met_at, fired) VALUES (?, ?, ?, ?, ?, ?, ?)",
}


def chunks(total: int, now: float) -> Iterator[tuple[dict[str, list], dict[str, int]]]:
    """CHUNK tickets' rows at a time, with the next ticket number per prefix so far."""
    numbers = {prefix: FIRST_NUMBER for _, prefix, _, _ in DEPARTMENTS}
    span = 365 * DAY - 3600
    for start in range(0, total, CHUNK):
        batch: dict[str, list] = {name: [] for name in INSERTS}
        for i in range(start, min(total, start + CHUNK)):
            prefix = DEPARTMENTS[department_of(i)][1]
            for name, rows in rows_for(i, numbers[prefix], now, span, total).items():
                batch[name] += rows
            numbers[prefix] += 1
        yield batch, dict(numbers)


def build(state: Path, total: int) -> Built:
    database = state / "mailgate.sqlite3"
    asyncio.run(_migrate(database))
    started = time.monotonic()
    now = time.time()
    counts = dict.fromkeys(INSERTS, 0)
    numbers: dict[str, int] = {}
    db = sqlite3.connect(database)
    db.execute("PRAGMA synchronous = OFF")  # a crash while building: build again
    db.execute("PRAGMA cache_size = -262144")  # 256 MB of page cache for index inserts
    for batch, numbers_so_far in chunks(total, now):
        numbers = numbers_so_far
        with db:
            for name, rows in batch.items():
                db.executemany(INSERTS[name], rows)
                counts[name] += len(rows)
        done = counts["tickets"]
        if done % (10 * CHUNK) == 0:
            print(f"  {done:>9,} tickets, {time.monotonic() - started:.0f} s", flush=True)
    with db:
        db.executemany("INSERT INTO counters (prefix, next_number) VALUES (?, ?)",
                       list(numbers.items()))
    db.execute("ANALYZE")
    db.close()
    return Built(time.monotonic() - started, counts, f"IT-{numbers['IT'] - 1}",  # the newest
                 database.stat().st_size / 1e6)


async def _migrate(target: Path | str) -> None:
    """The store's own schema on an SQLite file or a postgresql:// URL."""
    store = await Store.open(target)
    await store.close()


# --- timing the commands ---------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """One store to time: its state directory and, on PostgreSQL, its database."""

    label: str  # big | empty
    state: Path
    url: str | None = None
    database: str | None = None  # the PostgreSQL database's name, for psql

    def cli_config(self, tmp: Path) -> Path:
        config = tmp / f"cli-{self.label}.toml"
        database = f'[database]\nurl = "{self.url}"\n' if self.url else ""
        config.write_text(f'[state]\ndir = "{self.state}"\n'
                          f'[directory]\npath = "{rig.EXAMPLE_DIRECTORY}"\n'
                          f'[smtp]\nhost = "127.0.0.1"\nport = 25\n{database}')
        return config


def time_command(config: Path, args: list[str], runs: int,
                 check: bool = True) -> tuple[float, list[float]]:
    """Median wall time in ms of `mailgate --config CONFIG ARGS`, run RUNS times."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mailgate", "--config", str(config), *args],
                       cwd=ROOT, capture_output=True, check=check)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), times


def time_in_process(config: Path, args: list[str], runs: int) -> tuple[float, list[float]]:
    """Median ms of the same command through mailgate.cli.main.main in this process, after
    one untimed call: the command's own work (open the store, query, format) without the
    interpreter's start and the imports."""
    from mailgate.cli.main import main as cli

    argv = ["--config", str(config), *args]
    times = []
    with open(os.devnull, "w") as void, redirect_stdout(void), redirect_stderr(void):
        for _ in range(runs + 1):
            started = time.perf_counter()
            cli(argv)
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times[1:]), times[1:]


def time_queries(config: Path, ref: str, runs: int, empty: bool = False) -> dict[str, dict]:
    """On the EMPTY store `show` answers "no such ticket" (exit 1) at the same start-up cost."""
    found = {}
    for name, args in QUERIES.items():
        argv = args + ([ref] if name == "show" else [])
        median, times = time_command(config, argv, runs, check=not empty)
        inside, inside_times = time_in_process(config, argv, runs)
        found[name] = {"median_ms": round(median, 1), "runs_ms": [round(t, 1) for t in times],
                       "in_process_ms": round(inside, 1),
                       "in_process_runs_ms": [round(t, 1) for t in inside_times]}
    return found


# --- intake on the big store -------------------------------------------------------------------

def intake(targets: list[Target], messages: int, rounds: int, work: Path,
           pg: PostgresServer | None) -> dict[str, list]:
    """Acks-only bursts on the big store and on an empty one, alternating. Each round has
    its own requests (new Message-IDs and subjects) in a freshly filled mailbox, and each
    store forgets the mailbox's position, so every round's mail is new to every store."""
    sink = rig.Sink()
    found: dict[str, list] = {target.label: [] for target in targets}
    with rig.dovecot() as server:
        for round_no in range(rounds):
            mix = rig.message_mix(messages, 1, tag=f"r{round_no}-{os.getpid()}-")
            accounts = rig.fill(server, mix)
            for target in targets:
                run = burst.run_daemon("acks", accounts, sink, mix,
                                       work / f"intake-{target.label}-{round_no}",
                                       state=target.state, database_url=target.url)
                if run.problems:
                    sys.exit(f"MISMATCH in the {target.label} store burst: {run.problems}")
                found[target.label].append(run)
                print(f"  intake, {target.label} store: {len(mix) / run.seconds:.0f} msgs/s "
                      f"({len(mix) / run.after_ready:.0f} after READY, startup "
                      f"{run.startup:.2f} s)", flush=True)
                forget_position(target, pg)
    sink.close()
    return found


def forget_position(target: Target, pg: PostgresServer | None) -> None:
    if target.database and pg:
        pg.sql("DELETE FROM mailboxes", target.database)
        return
    with sqlite3.connect(target.state / "mailgate.sqlite3") as db:
        db.execute("DELETE FROM mailboxes")
    db.close()


def summarise_intake(found: dict[str, list], messages: int) -> dict:
    out = {}
    for label, runs in found.items():
        out[label] = {
            "msgs_per_s": round(statistics.median(messages / r.seconds for r in runs), 1),
            "msgs_per_s_after_ready": round(statistics.median(messages / r.after_ready
                                                              for r in runs), 1),
            "startup_s": round(statistics.median(r.startup for r in runs), 2),
            "peak_rss_mb": round(max(r.peak_rss_mb for r in runs), 1)}
    big, empty = out["big"]["msgs_per_s_after_ready"], out["empty"]["msgs_per_s_after_ready"]
    out["drop_percent_after_ready"] = round((1 - big / empty) * 100, 1)
    out["drop_percent"] = round((1 - out["big"]["msgs_per_s"] / out["empty"]["msgs_per_s"])
                                * 100, 1)
    return out


# --- the run -----------------------------------------------------------------------------------

def prepare(state: Path, total: int) -> Built | None:
    """Build the big SQLite store in STATE, or None when STATE holds one already (--store)."""
    if (state / "mailgate.sqlite3").exists():
        print(f"using the store in {state} as it is", flush=True)
        forget_position(Target("big", state), None)  # an earlier run's mailbox is gone
        return None
    print(f"building a store with {total:,} tickets", flush=True)
    built = build(state, total)
    print(f"  built in {built.seconds:.0f} s, {built.database_mb:.0f} MB", flush=True)
    return built


def newest_ref(state: Path) -> str:
    """The newest generated IT ticket: what `show` is timed on."""
    with sqlite3.connect(state / "mailgate.sqlite3") as db:
        row = db.execute("SELECT ref FROM tickets WHERE department = 'it' AND requester "
                         "LIKE '%@example.org' ORDER BY id DESC LIMIT 1").fetchone()
    db.close()
    return str(row[0])


def targets_for(big: Path, tmp: Path, pg: PostgresServer | None) -> tuple[list[Target], dict]:
    """The big store and an empty one on the engine asked for; on PostgreSQL the big one is
    the SQLite store copied by `mailgate migrate --to` (timed)."""
    empty = tmp / "empty"
    if pg is None:
        asyncio.run(_migrate(empty / "mailgate.sqlite3"))
        return [Target("big", big), Target("empty", empty)], {}
    big_url, empty_url = pg.create_database(), pg.create_database()
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "mailgate", "--config",
                    str(Target("sqlite", big).cli_config(tmp)), "migrate", "--to", big_url],
                   cwd=ROOT, check=True, capture_output=True)
    copied = time.monotonic() - started
    print(f"  mailgate migrate --to postgresql: {copied:.0f} s", flush=True)
    asyncio.run(_migrate(empty_url))
    return ([Target("big", tmp / "pg-big", big_url, big_url.rsplit("/", 1)[1]),
             Target("empty", empty, empty_url, empty_url.rsplit("/", 1)[1])],
            {"migrate_to_postgresql_s": round(copied, 1)})


def run(args: argparse.Namespace) -> dict:
    with (rig.tempdir("scale") as tmp_dir,
          rig.postgres() if args.engine == "postgresql" else nullcontext() as pg):
        tmp = Path(tmp_dir)
        big = args.store or tmp / "big"
        built = prepare(big, args.tickets)
        ref = newest_ref(big)
        targets, copy = targets_for(big, tmp, pg)
        timed = {t.label: time_queries(t.cli_config(tmp), ref if t.label == "big" else
                                       "IT-1000", args.runs, empty=t.label == "empty")
                 for t in targets}
        queries = {name: {"in_process_ms": timed["big"][name]["in_process_ms"],
                          "in_process_empty_ms": timed["empty"][name]["in_process_ms"],
                          "in_process_runs_ms": timed["big"][name]["in_process_runs_ms"],
                          "big_median_ms": timed["big"][name]["median_ms"],
                          "empty_median_ms": timed["empty"][name]["median_ms"],
                          "target_ms": TARGET_MS[name],
                          "command": " ".join(["mailgate", *QUERIES[name]]
                                              + ([ref] if name == "show" else [])),
                          "big_runs_ms": timed["big"][name]["runs_ms"]}
                   for name in QUERIES}
        print(query_table(queries), flush=True)
        found = intake(targets, args.burst, args.rounds, tmp, pg)
    return {"tickets": args.tickets, "engine": args.engine,
            "build_seconds": round(built.seconds, 1) if built else None,
            "database_mb": round(built.database_mb, 1) if built else None,
            "rows": built.rows if built else None, **copy,
            "runs_per_query": args.runs, "queries": queries,
            "intake": {"messages": args.burst, "rounds": args.rounds, "shape": "acks",
                       **summarise_intake(found, args.burst)}}


def query_table(queries: dict) -> str:
    rows = [[q["command"], q["in_process_ms"], q["in_process_empty_ms"], q["big_median_ms"],
             q["empty_median_ms"], q["target_ms"]] for q in queries.values()]
    return rig.table(rows, ["command", "in-process ms", "(empty)", "new process ms",
                            "(empty)", "target ms"])


def report(result: dict) -> str:
    intake = result["intake"]
    built = (f"{result['database_mb']:.0f} MB, built in {result['build_seconds']:.0f} s"
             if result["build_seconds"] else "a store built earlier")
    return "\n".join([
        f"{result['tickets']:,} tickets ({built}), engine {result['engine']}; medians of "
        f"{result['runs_per_query']} runs",
        query_table(result["queries"]), "",
        rig.table([["empty", intake["empty"]["msgs_per_s"],
                    intake["empty"]["msgs_per_s_after_ready"], intake["empty"]["startup_s"]],
                   ["big", intake["big"]["msgs_per_s"],
                    intake["big"]["msgs_per_s_after_ready"], intake["big"]["startup_s"]],
                   ["drop %", intake["drop_percent"], intake["drop_percent_after_ready"],
                    "-"]],
                  [f"intake, {intake['messages']} msgs", "msgs/s", "after READY",
                   "startup s"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5, help="runs per command (median)")
    parser.add_argument("--burst", type=int, default=300, help="messages per intake burst")
    parser.add_argument("--rounds", type=int, default=2, help="intake bursts per store")
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--store", type=Path, default=None,
                        help="state directory for the big SQLite store: built there and "
                             "kept, or used as it is when it holds one already")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    meta = rig.header(args.engine)
    result = run(args)
    print(report(result))
    if not args.no_save:
        print(f"wrote {save(rig.stamp_end({**meta, **result}))}")


def save(result: dict) -> Path:
    """scale.json keeps one entry per tickets x engine; this run replaces its own."""
    path = rig.RESULTS / "scale.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    kept = [s for s in old.get("stores", [])
            if (s["tickets"], s["engine"]) != (result["tickets"], result["engine"])]
    stores = sorted([*kept, result], key=lambda s: (s["engine"], s["tickets"]))
    return rig.save("scale.json", {"stores": stores})


if __name__ == "__main__":
    main()
