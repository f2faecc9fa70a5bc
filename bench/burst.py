#!/usr/bin/env python3
"""Burst: N internal requests wait in one or three Dovecot mailboxes; the real daemon (a
separate process) tickets and acknowledges them through an SMTP sink. Measured beside the
bare loop (bench/bare_loop.py) in the same run, on the same mailboxes and the same sink.

    python bench/burst.py [--messages 1000] [--mailboxes 1|3] [--rounds 2]
        [--shapes acks,acks-pinned,notify,notify-pinned] [--engine sqlite|postgresql]

The mix is the issue's: 15 % replies to an earlier request (threaded, no ticket of their
own), 40 % multipart, 10 % with a 20 KB attachment. Shapes: `acks` runs with
notify_team = false, `notify` with the team notification (the default); `-pinned` runs the
daemon under `taskset -c 0` (one core). Rounds alternate the shapes so a load change on the
shared machine hits all of them alike; figures are medians over the rounds.

Wall time runs from spawning `python -m mailgate run` to the last mail the sink accepted
(acks only: the last acknowledgement; notify: the last acknowledgement or notification),
so interpreter start and imports count; `after_ready` runs from its READY=1 instead. Peak
RSS is the VmHWM of the daemon and its children (the reading process), summed. Every
request must have become exactly one ticket (checked with
`mailgate tickets --json`) and drawn exactly one acknowledgement (In-Reply-To at the sink),
and no reply may have made a ticket or an acknowledgement. Writes bench/results/burst.json
(one entry per messages x mailboxes x engine, others kept) and prints a table. With
--engine postgresql a private PostgreSQL (fsync on) runs beside Dovecot and each daemon run
gets a fresh database ([database] url); the bare loop stays on SQLite, the reference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from bench import bare_loop, rig
from tests.mailservers import ImapAccount, Received

SHAPES = {"acks": (False, None), "acks-pinned": (False, "0"),
          "notify": (True, None), "notify-pinned": (True, "0")}
TIMEOUT = 1800.0
CPU_PARTS = ("daemon", "reading", "dovecot", "postgres", "sink")
QUIET = 2.0  # no mail for this long after the last acknowledgement: the notifications are out


@dataclass
class Run:
    shape: str
    seconds: float  # spawn -> last mail accepted
    after_ready: float  # READY=1 -> last mail accepted
    startup: float  # spawn -> READY=1
    peak_rss_mb: float
    tickets: int
    acks: int
    mails: int
    problems: list[str]
    cpu: dict[str, float]  # CPU seconds from spawn to the last mail, per process (cpu_used)


def run_daemon(shape: str, accounts: dict[str, ImapAccount], sink: rig.Sink,
               mix: list[rig.Request], run_dir: Path, batch_size: int | None = None,
               state: Path | None = None, database_url: str | None = None) -> Run:
    """One burst through a fresh daemon; STATE is a prepared state directory (else empty),
    DATABASE_URL a PostgreSQL database (else SQLite in the state directory). Only tickets
    with the subject of one of the mix's requests are counted."""
    notify_team, cpus = SHAPES[shape]
    requests = {r.message_id for r in mix if r.reply_to is None}
    run_dir.mkdir()
    config = rig.write_config(run_dir, sink, accounts, rig.DaemonSetup(
        notify_team=notify_team, batch_size=batch_size, state=state,
        database_url=database_url))
    sink.clear()
    since = CpuSince()
    daemon = rig.start_daemon(config, cpus=cpus)
    try:
        sink.wait_until(lambda: len(sink.acks) >= len(requests), TIMEOUT,
                        quiet=QUIET if notify_team else 0.0)
        cpu = since.used(daemon.pid)
        peak = rig.family_mb(daemon.pid)
    finally:
        daemon.stop()
    mails, acks = list(sink.messages), list(sink.acks)
    last = (mails if notify_team else acks)[-1].at
    subjects = {r.subject for r in mix if r.reply_to is None}
    tickets = [t for t in rig.mailgate_json(config, "tickets", "--requester", "@example.com",
                                            "--limit", "100000") if t["subject"] in subjects]
    problems = check(mix, tickets, acks)
    return Run(shape, last - daemon.spawned, last - daemon.ready,
               daemon.ready - daemon.spawned, peak, len(tickets), len(acks), len(mails),
               problems, cpu)


class CpuSince:
    """CPU seconds used since it was made by everything a burst keeps busy: the daemon
    (all its threads), its reading process, Dovecot's imap processes, the PostgreSQL
    server's processes (the bench's private one) and this process (the sink's thread;
    the main thread only sleeps meanwhile). It shows where a message's CPU goes, and how
    much of the two cores the burst had."""

    def __init__(self) -> None:
        self.imap = rig.cpu_of_command("imap")
        self.postgres = rig.cpu_of_command("postgres")
        self.bench = time.process_time()

    def used(self, daemon: int) -> dict[str, float]:
        family = rig.family(daemon)
        imap = rig.cpu_of_command("imap")
        return {"daemon": rig.own_cpu_seconds(daemon),
                "reading": sum(rig.own_cpu_seconds(child) for child in family[1:]),
                "dovecot": sum(seconds - self.imap.get(pid, 0.0)
                               for pid, seconds in imap.items()),
                "postgres": sum(seconds - self.postgres.get(pid, 0.0)
                                for pid, seconds in rig.cpu_of_command("postgres").items()),
                "sink": time.process_time() - self.bench}


def check(mix: list[rig.Request], tickets: list[dict], acks: list[Received]) -> list[str]:
    """Every request exactly one ticket and one acknowledgement; replies neither."""
    requests = [r for r in mix if r.reply_to is None]
    problems = []
    if len(tickets) != len(requests):
        problems.append(f"{len(tickets)} tickets for {len(requests)} requests")
    per_request = Counter(rig.ack_of(m) for m in acks)
    missing = [r.message_id for r in requests if per_request[r.message_id] == 0]
    doubled = [mid for mid, n in per_request.items() if n > 1]
    strays = set(per_request) - {r.message_id for r in requests}
    refs = Counter(str(m.message["X-Mailgate-Ticket"]) for m in acks)
    for label, found in (("without an acknowledgement", missing),
                         ("acknowledged twice", doubled),
                         ("acknowledgements not for a request", sorted(strays)),
                         ("tickets acknowledged twice", [r for r, n in refs.items() if n > 1])):
        if found:
            problems.append(f"{len(found)} {label}, e.g. {found[:3]}")
    return problems


def scenario(args: argparse.Namespace) -> dict:
    mix = rig.message_mix(args.messages, args.mailboxes)
    shapes = args.shapes.split(",")
    runs: list[Run] = []
    bare: list[bare_loop.BareResult] = []
    sink = rig.Sink()
    with (rig.dovecot() as server, rig.tempdir("burst") as tmp,
          rig.postgres() if args.engine == "postgresql" else nullcontext() as pg):
        accounts = rig.fill(server, mix)
        for round_no in range(args.rounds):
            work = Path(tmp) / f"round{round_no}"
            work.mkdir()
            sink.clear()
            bare.append(bare_loop.measure(list(accounts.values()), sink.host, sink.port, work))
            print(f"round {round_no + 1}: bare loop {bare[-1].msgs_per_s:.0f} msgs/s",
                  flush=True)
            for shape in shapes:
                url = pg.create_database() if pg else None  # a fresh one per run
                runs.append(run_daemon(shape, accounts, sink, mix, work / shape,
                                       args.batch_size, database_url=url))
                done = runs[-1]
                print(f"round {round_no + 1}: {shape} {len(mix) / done.seconds:.0f} msgs/s "
                      f"({done.seconds:.2f} s, startup {done.startup:.2f} s), "
                      f"peak {done.peak_rss_mb:.0f} MB {'; '.join(done.problems)}",
                      flush=True)
    sink.close()
    return summarise(args, mix, shapes, runs, bare)


def summarise(args: argparse.Namespace, mix: list[rig.Request], shapes: list[str],
              runs: list[Run], bare: list[bare_loop.BareResult]) -> dict:
    bare_rate = statistics.median(b.msgs_per_s for b in bare)
    result = {
        "messages": len(mix), "mailboxes": args.mailboxes, "engine": args.engine,
        "requests": sum(1 for r in mix if r.reply_to is None),
        "replies": sum(1 for r in mix if r.reply_to is not None),
        "batch_size": args.batch_size or "default", "rounds": args.rounds,
        "bare_loop": {"msgs_per_s": round(bare_rate, 1),
                      "peak_rss_mb": round(max(b.peak_rss_mb for b in bare), 1),
                      "runs_msgs_per_s": [round(b.msgs_per_s, 1) for b in bare]},
        "shapes": {},
    }
    for shape in shapes:
        mine = [r for r in runs if r.shape == shape]
        rate = statistics.median(len(mix) / r.seconds for r in mine)
        result["shapes"][shape] = {
            "notify_team": SHAPES[shape][0], "pinned_cpus": SHAPES[shape][1],
            "msgs_per_s": round(rate, 1),
            "msgs_per_s_after_ready": round(statistics.median(len(mix) / r.after_ready
                                                              for r in mine), 1),
            "startup_s": round(statistics.median(r.startup for r in mine), 2),
            "bare_loop_msgs_per_s": round(bare_rate, 1),
            "ratio_to_bare_loop": round(rate / bare_rate, 2),
            "peak_rss_mb": round(max(r.peak_rss_mb for r in mine), 1),
            "runs_msgs_per_s": [round(len(mix) / r.seconds, 1) for r in mine],
            "tickets": [r.tickets for r in mine], "acks": [r.acks for r in mine],
            "mails_at_sink": [r.mails for r in mine],
            "problems": [p for r in mine for p in r.problems],
            "cpu_ms_per_msg": {part: round(statistics.median(
                1000 * r.cpu[part] / len(mix) for r in mine), 2) for part in mine[0].cpu},
            "cores_busy": round(statistics.median(sum(r.cpu.values()) / r.seconds
                                                  for r in mine), 2),
        }
    return result


def report(result: dict) -> str:
    rows = [["bare loop", "-", f"{result['bare_loop']['msgs_per_s']:.0f}", "-", "1.00",
             f"{result['bare_loop']['peak_rss_mb']:.0f}", "ok"]]
    for shape, s in result["shapes"].items():
        rows.append([shape, f"{s['startup_s']:.2f}", f"{s['msgs_per_s']:.0f}",
                     f"{s['msgs_per_s_after_ready']:.0f}", f"{s['ratio_to_bare_loop']:.2f}",
                     f"{s['peak_rss_mb']:.0f}", "ok" if not s["problems"] else "MISMATCH"])
    title = (f"{result['messages']} messages ({result['requests']} requests, "
             f"{result['replies']} replies) in {result['mailboxes']} mailbox(es), "
             f"engine {result['engine']}, median of {result['rounds']} round(s)")
    cpu_rows = [[shape, *(f"{s['cpu_ms_per_msg'][part]:.2f}" for part in CPU_PARTS),
                 f"{sum(s['cpu_ms_per_msg'].values()):.2f}", f"{s['cores_busy']:.2f}"]
                for shape, s in result["shapes"].items()]
    return (title + "\n" + rig.table(rows, ["system", "startup s", "msgs/s", "after READY",
                                            "x bare", "peak RSS MB", "check"])
            + "\n\nCPU per message (ms), spawn to last mail\n"
            + rig.table(cpu_rows, ["system", *CPU_PARTS, "all", "cores busy"]))


def save(result: dict, meta: dict) -> Path:
    """burst.json keeps one entry per messages x mailboxes x engine; this run replaces its own."""
    path = rig.RESULTS / "burst.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    key = (result["messages"], result["mailboxes"], result["engine"])
    kept = [s for s in old.get("scenarios", [])
            if (s["messages"], s["mailboxes"], s["engine"]) != key]
    scenarios = sorted([*kept, rig.stamp_end({**meta, **result})],
                       key=lambda s: (s["engine"], s["mailboxes"], s["messages"]))
    return rig.save("burst.json", {"scenarios": scenarios})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--mailboxes", type=int, choices=(1, 3), default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--batch-size", type=int, default=None,
                        help="[[mailbox]] batch_size (default: the daemon's own)")
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    unknown = set(args.shapes.split(",")) - set(SHAPES)
    if unknown:
        parser.error(f"unknown shapes {sorted(unknown)}; known: {', '.join(SHAPES)}")
    meta = rig.header(args.engine)
    result = scenario(args)
    print(report(result))
    if not args.no_save:
        print(f"wrote {save(result, meta)}")
    if any(s["problems"] for s in result["shapes"].values()):
        for shape, s in result["shapes"].items():
            for problem in s["problems"]:
                print(f"MISMATCH {shape}: {problem}")
        sys.exit(1)


if __name__ == "__main__":
    main()
