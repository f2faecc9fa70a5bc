#!/usr/bin/env python3
"""Idle: what 20 quiet mailboxes cost the daemon when no mail comes.

    python bench/idle.py [--mailboxes 20] [--seconds 60]

The daemon (a separate process) watches 20 empty Dovecot mailboxes with IDLE. After it is
ready and has settled, its CPU time (utime + stime of /proc/PID/stat, all threads) is read
at the start and the end of the window; the figure is the share of one core. Context
switches per second (voluntary + involuntary, all threads from /proc/PID/task) show a busy
loop even when each wakeup is cheap. Writes bench/results/idle.json and prints a table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import rig

SETTLE = 5.0  # seconds after READY=1: every mailbox connected and idling


def context_switches(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                total += int(line.split()[1])
    return total


def run(mailboxes: int, seconds: float) -> dict:
    sink = rig.Sink()
    with rig.dovecot() as server, rig.tempdir("idle") as tmp:
        accounts = {f"box{i}": server.add_user() for i in range(mailboxes)}
        keys = [key for key, _ in rig.BOXES]
        setup = rig.DaemonSetup(departments={name: keys[i % len(keys)]
                                             for i, name in enumerate(accounts)})
        config = rig.write_config(Path(tmp), sink, accounts, setup)
        daemon = rig.start_daemon(config)
        try:
            time.sleep(SETTLE)
            threads = len(list(Path(f"/proc/{daemon.pid}/task").iterdir()))
            cpu0, switches0, t0 = (rig.cpu_seconds(daemon.pid),
                                   context_switches(daemon.pid), time.monotonic())
            time.sleep(seconds)
            cpu1, switches1, t1 = (rig.cpu_seconds(daemon.pid),
                                   context_switches(daemon.pid), time.monotonic())
            rss = rig.family_mb(daemon.pid, "VmRSS")
        finally:
            daemon.stop()
    sink.close()
    window = t1 - t0
    return {
        "mailboxes": mailboxes, "seconds": round(window, 1),
        "cpu_percent": round((cpu1 - cpu0) / window * 100, 3),
        "cpu_seconds": round(cpu1 - cpu0, 3),
        "clock_tick_s": 1 / rig.TICKS,
        "context_switches_per_s": round((switches1 - switches0) / window, 1),
        "threads": threads, "rss_mb": round(rss, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mailboxes", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    meta = rig.header("sqlite")
    result = run(args.mailboxes, args.seconds)
    print(rig.table([[result["mailboxes"], result["seconds"], result["cpu_percent"],
                      result["context_switches_per_s"], result["threads"], result["rss_mb"]]],
                    ["mailboxes", "window s", "CPU % of a core", "ctx switches/s",
                     "threads", "RSS MB"]))
    if not args.no_save:
        print(f"wrote {rig.save('idle.json', rig.stamp_end({**meta, **result}))}")


if __name__ == "__main__":
    main()
