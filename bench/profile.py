#!/usr/bin/env python3
"""Where one burst's time goes inside the daemon: py-spy attached to `mailgate run`.

    python bench/profile.py [--messages 1000] [--shape acks] [--rate 200]
        [--engine sqlite|postgresql]

Fills one Dovecot mailbox with the issue's mix, starts the daemon (acks only by default),
attaches `py-spy record` to it once it is ready (all threads, idle stacks left out; with
--gil only the thread holding the GIL, i.e. where Python's CPU time goes) and
stops it once the last acknowledgement reached the sink. Writes the folded stacks to
bench/results/profile-SHAPE[-gil].txt (flamegraph.pl or speedscope read them) and prints the
functions with the most samples on top of the stack (self) and anywhere in it (total),
as file:line. py-spy must be installed (pip install py-spy). With --engine postgresql the
daemon's store is a fresh database on a private PostgreSQL (fsync on), as in burst.py.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import burst, rig

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def record(messages: int, shape: str, rate: int, out: Path, gil: bool,
           engine: str = "sqlite") -> float:
    """Run the burst under py-spy; the burst's seconds (spawn -> last ack)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    notify_team, cpus = burst.SHAPES[shape]
    mix = rig.message_mix(messages, 1)
    sink = rig.Sink()
    requests = sum(1 for r in mix if r.reply_to is None)
    with (rig.dovecot() as server, rig.tempdir("profile") as tmp,
          rig.postgres() if engine == "postgresql" else nullcontext() as pg):
        accounts = rig.fill(server, mix)
        config = rig.write_config(Path(tmp), sink, accounts, rig.DaemonSetup(
            notify_team=notify_team, database_url=pg.create_database() if pg else None))
        daemon = rig.start_daemon(config, cpus=cpus)
        spy = subprocess.Popen([py_spy, "record", "--pid", str(daemon.pid), "--threads",
                                "--rate", str(rate), "--format", "raw", "--output", str(out),
                                "--nonblocking", *(["--gil"] if gil else [])],
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
        try:
            sink.wait_until(lambda: len(sink.acks) >= requests, burst.TIMEOUT)
            seconds = sink.acks[-1].at - daemon.spawned
        finally:
            spy.send_signal(signal.SIGINT)
            _, errors = spy.communicate(timeout=120)
            daemon.stop()
    sink.close()
    if not out.exists():
        sys.exit(f"py-spy wrote nothing: {errors.decode(errors='replace')[-2000:]}")
    return seconds


def frames(stack: str) -> list[tuple[str, str, str]]:
    """(function, file, line) per frame of one folded stack, outermost first."""
    found = []
    for text in stack.split(";"):
        match = FRAME.match(text.strip())
        if match:
            found.append((match["func"], short(match["file"]), match["line"] or "?"))
        else:
            found.append((text.strip(), "", "?"))
    return found


def short(path: str) -> str:
    for marker in ("/mailgate/", "/site-packages/", "/lib/python3.11/"):
        if marker in path:
            return path[path.index(marker) + 1:]
    return path


def summarise(folded: Path, top: int) -> str:
    self_lines: Counter[str] = Counter()
    self_funcs: Counter[str] = Counter()
    total_funcs: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    inner_ours: Counter[str] = Counter()
    samples = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        named = [f[0] for f in frames(stack) if f[0].startswith("thread ")]
        # "thread (TID): NAME" -> NAME without its pool index: asyncio_3 -> asyncio
        threads[re.sub(r"_\d+$", "", named[0].partition(": ")[2]) if named else "?"] += count
        stack_frames = [f for f in frames(stack) if not f[0].startswith(("process ",
                                                                        "thread "))]
        if not stack_frames:
            continue
        func, file, lineno = stack_frames[-1]
        self_lines[f"{file}:{lineno} {func}"] += count
        self_funcs[f"{file} {func}"] += count
        for name in {f"{f[1]} {f[0]}" for f in stack_frames}:
            total_funcs[name] += count
        ours = [f for f in stack_frames if _ours(f[1])]
        if ours:  # the line of mailgate's code below which this sample's time went
            inner_ours[f"{ours[-1][1]}:{ours[-1][2]} {ours[-1][0]}"] += count

    def block(title: str, counter: Counter[str]) -> str:
        rows = [[f"{100 * n / samples:5.1f}", n, name] for name, n in counter.most_common(top)]
        return f"{title}\n" + rig.table(rows, ["%", "samples", "where"])

    ours = Counter({name: n for name, n in total_funcs.items() if _ours(name)})
    return "\n\n".join([f"{samples} samples (active stacks, all threads)",
                        block("by thread (name without its pool index)", threads),
                        block("self, by line", self_lines),
                        block("self, by function", self_funcs),
                        block("total (inclusive), by function", total_funcs),
                        block("total (inclusive), mailgate's own functions", ours),
                        block("innermost line of mailgate's own code", inner_ours)])


def _ours(file: str) -> bool:
    """mailgate's code, not the entry point and command line every stack starts in."""
    return file.startswith("mailgate/") and not file.startswith(("mailgate/__main__",
                                                                  "mailgate/cli/"))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--summarise":  # an earlier recording
        print(summarise(Path(sys.argv[2]), 40))
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--shape", choices=list(burst.SHAPES), default="acks")
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--gil", action="store_true",
                        help="only the thread holding the GIL: where Python CPU time goes")
    args = parser.parse_args()
    engine = "" if args.engine == "sqlite" else f"-{args.engine}"
    out = rig.RESULTS / f"profile-{args.shape}{engine}{'-gil' if args.gil else ''}.txt"
    rig.RESULTS.mkdir(exist_ok=True)
    started = time.monotonic()
    seconds = record(args.messages, args.shape, args.rate, out, args.gil, args.engine)
    print(f"{args.messages} messages, {args.shape}: {seconds:.1f} s under py-spy "
          f"({time.monotonic() - started:.0f} s in all); folded stacks in {out}")
    print(summarise(out, args.top))


if __name__ == "__main__":
    main()
