#!/usr/bin/env python3
"""Start-up: how long `python -m mailgate run` takes from spawn to READY=1, and how much of
that is the interpreter and mailgate's imports.

    python bench/startup.py [--runs 5] [--mailboxes 1] [--engine sqlite|postgresql]

Each run measures, as separate processes: the bare interpreter (`python -c pass`); the
imports `mailgate run` needs (mailgate.cli.main, cli.service and service.daemon, timed in
the child); the daemon from spawn to READY=1 on a fresh state directory (an empty store:
the schema is created), and again on the store the previous start left (the usual
restart). The daemon watches MAILBOXES empty Dovecot mailboxes and sends through an SMTP
sink, as in burst.py.
Figures are medians over the runs, in milliseconds; `--profile FILE` also writes one
cProfile of a fresh start up to READY=1 (for `python -m pstats FILE`). Writes
bench/results/startup.json (one entry per engine) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import rig

# Timed inside the child: the wall time of a whole `python -c` would add the interpreter's
# teardown of every module, which a daemon on its way to READY=1 does not pay.
IMPORTS = ("import time; started = time.perf_counter(); "
           "import mailgate.cli.main, mailgate.cli.service, mailgate.service.daemon; "
           "print((time.perf_counter() - started) * 1000)")
# Runs `mailgate run` under cProfile and stops at the first READY=1: the daemon's own
# sd_notify is wrapped, so what is profiled is exactly the start systemd waits for.
PROFILED = """
import cProfile, sys
import mailgate.service.daemon as daemon
from mailgate.cli.main import main
profile = cProfile.Profile()
notify = daemon.sd_notify
def stop_at_ready(*lines):
    notify(*lines)
    if "READY=1" in lines:
        profile.disable()
        profile.dump_stats(sys.argv[1])
        raise SystemExit(0)
daemon.sd_notify = stop_at_ready
profile.enable()
main(sys.argv[2:])
"""


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(rig.ROOT)}


def python_ms() -> float:
    """Wall time of `python -c pass` in a fresh process, in ms."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], cwd=rig.ROOT, check=True, env=environment())
    return (time.monotonic() - started) * 1000


def imports_ms() -> float:
    """What `mailgate run` imports before it parses its arguments, timed in a fresh process."""
    rig.compile_bytecode()
    done = subprocess.run([sys.executable, "-c", IMPORTS], cwd=rig.ROOT, check=True,
                          env=environment(), capture_output=True, text=True)
    return float(done.stdout)


def ready_ms(config: Path) -> float:
    daemon = rig.start_daemon(config)
    daemon.stop()
    return (daemon.ready - daemon.spawned) * 1000


def profile(config: Path, output: Path) -> None:
    rig.compile_bytecode()
    subprocess.run([sys.executable, "-c", PROFILED, str(output), "--log-level", "warning",
                    "--config", str(config), "run"], cwd=rig.ROOT, check=True,
                   env=environment())


def run(args: argparse.Namespace) -> dict:
    sink = rig.Sink()
    found: dict[str, list[float]] = {"python": [], "imports": [], "ready_fresh": [],
                                     "ready_restart": []}
    with (rig.dovecot() as server, rig.tempdir("startup") as tmp,
          rig.postgres() if args.engine == "postgresql" else nullcontext() as pg):
        accounts = {key: server.add_user() for key, _ in rig.BOXES[:args.mailboxes]}
        for number in range(args.runs):
            work = Path(tmp) / f"run{number}"
            work.mkdir()
            setup = rig.DaemonSetup(database_url=pg.create_database() if pg else None)
            config = rig.write_config(work, sink, accounts, setup)
            found["python"].append(python_ms())
            found["imports"].append(imports_ms())
            found["ready_fresh"].append(ready_ms(config))
            found["ready_restart"].append(ready_ms(config))
            print(f"run {number + 1}: " + ", ".join(f"{name} {values[-1]:.0f} ms"
                                                    for name, values in found.items()),
                  flush=True)
        if args.profile:
            work = Path(tmp) / "profile"
            work.mkdir()
            setup = rig.DaemonSetup(database_url=pg.create_database() if pg else None)
            profile(rig.write_config(work, sink, accounts, setup), args.profile)
    sink.close()
    return {"engine": args.engine, "mailboxes": args.mailboxes, "runs": args.runs,
            **{f"{name}_ms": round(statistics.median(values)) for name, values in found.items()},
            "runs_ms": {name: [round(v) for v in values] for name, values in found.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mailboxes", type=int, choices=(1, 2, 3), default=1)
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--profile", type=Path, metavar="FILE")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    meta = rig.header(args.engine)
    result = run(args)
    print(rig.table([[result["engine"], result["python_ms"], result["imports_ms"],
                      result["ready_fresh_ms"], result["ready_restart_ms"]]],
                    ["engine", "python ms", "imports ms", "READY fresh ms",
                     "READY restart ms"]))
    if not args.no_save:
        path = rig.RESULTS / "startup.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        kept = [s for s in old.get("engines", []) if s["engine"] != args.engine]
        entries = sorted([*kept, rig.stamp_end({**meta, **result})], key=lambda s: s["engine"])
        print(rig.save("startup.json", {"engines": entries}))


if __name__ == "__main__":
    main()
