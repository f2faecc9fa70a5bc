#!/usr/bin/env python3
"""Big mail: 20 concurrent 50 MB deliveries (a text part and a base64 attachment) through
the SMTP push listener of a real daemon (a separate process), as Postfix would send them
(it delivers 20 at a time by default).

    python bench/bigmail.py [--messages 20] [--mb 50]
    python bench/bigmail.py --stages [--mb 50]    # where one message's memory and time go

Measures the daemon's peak memory (VmHWM from /proc), the event loop's lag seen from
outside (a probe process opens a connection every 20 ms and times the 220 greeting from
the instant it was due, so a stall counts for every probe it holds up), and checks that
every message became a ticket. Prints a table and writes bench/results/bigmail.json.
Targets: peak RSS <= 300 MB, loop lag p99 <= 100 ms, every message ticketed.

--stages runs, on one message in this process and each in a worker thread as the daemon
would, the steps that read a whole message with the stdlib parser (parse, attachment
extraction, the team notification's relay parts) next to the light path the pipeline takes
above 1 MB (largemail.py: lighten, parse the slim view, decode the attachment in pieces),
and the compression of the raw bytes for the database: time, peak memory (tracemalloc)
and the longest stall of an event loop running beside it (big C calls hold the GIL).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.factories import EXAMPLE_DIRECTORY, ROOT
from tests.mailservers import free_port

RESULTS = ROOT / "bench" / "results" / "bigmail.json"
PROBE_EVERY = 0.02  # seconds between probe connections
TARGET_RSS_MB = 300
TARGET_LAG_MS = 100
RECIPIENT = "it-help@example.com"


# --- the messages ------------------------------------------------------------------------

def big_message(index: int, total_bytes: int, noise: bytes) -> bytes:
    """About `total_bytes` on the wire: a short text part and a base64 attachment, CRLF
    line ends; no line starts with a dot, so no dot-stuffing is needed to send it."""
    head = (f"From: Requester {index} <user{index}@example.com>\r\nTo: {RECIPIENT}\r\n"
            f"Subject: Crash dump {index} attached\r\n"
            f"Date: Tue, 24 Nov 2026 09:00:00 +0100\r\n"
            f"Message-ID: <bigmail-{index}@bench.example>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="==b=="\r\n\r\n'
            "--==b==\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            "Hello, the server crashed again last night; the dump is attached.\r\n"
            "Thanks, a requester\r\n\r\n"
            "--==b==\r\nContent-Type: application/octet-stream\r\n"
            "Content-Transfer-Encoding: base64\r\n"
            f'Content-Disposition: attachment; filename="dump-{index}.bin"\r\n\r\n').encode()
    data_bytes = (total_bytes - len(head) - 20) * 57 // 78  # base64: 57 bytes -> 78 on the wire
    data = index.to_bytes(4, "big") + noise[4:data_bytes]  # distinct per message
    body = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return head + body + b"--==b==--\r\n"


# --- sending -------------------------------------------------------------------------------

@dataclass
class Delivery:
    index: int
    code: int = 0
    reply: str = ""
    seconds: float = 0.0


def deliver(port: int, raw: bytes, result: Delivery) -> None:
    """One SMTP transaction on a plain socket (smtplib would copy 50 MB three times)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=900) as sock:
        reader = sock.makefile("rb")

        def reply() -> str:
            while True:
                line = reader.readline().decode()
                if line[3:4] != "-":
                    return line.strip()

        def command(text: str) -> str:
            sock.sendall(text.encode() + b"\r\n")
            return reply()

        steps = [reply(), command("EHLO bench"),
                 command(f"MAIL FROM:<user{result.index}@example.com> SIZE={len(raw)}"),
                 command(f"RCPT TO:<{RECIPIENT}>"), command("DATA")]
        if not steps[-1].startswith("354"):
            result.code, result.reply = int(steps[-1][:3] or 0), " / ".join(steps)
            return
        sock.sendall(raw)
        sock.sendall(b".\r\n")
        final = reply()
        result.code, result.reply = int(final[:3]), final
        command("QUIT")
    result.seconds = time.monotonic() - started


# --- watching the daemon ---------------------------------------------------------------------

def memory_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sample_rss(pid: int, stop: threading.Event, samples: list[tuple[float, float]]) -> None:
    started = time.monotonic()
    while not stop.wait(0.1):
        try:
            samples.append((time.monotonic() - started, memory_mb(pid, "VmRSS")))
        except FileNotFoundError:
            return


def probe(port: int, out: Path, duration: float) -> None:
    """Runs in its own process: greeting latency of a connection opened every 20 ms,
    measured from the instant it was due (no coordinated omission)."""

    async def once(due: float, lags: list[float]) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                          local_addr=("127.0.0.2", 0))
            await reader.readline()
            lags.append(time.monotonic() - due)
            writer.close()
            await writer.wait_closed()
        except OSError:
            lags.append(float("nan"))

    async def main() -> None:
        lags: list[float] = []
        tasks = set()
        start = time.monotonic()
        due = start
        while due - start < duration and not (out.parent / "stop").exists():
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            task = asyncio.create_task(once(due, lags))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            due += PROBE_EVERY
        await asyncio.gather(*tasks)
        out.write_text(json.dumps(lags))

    asyncio.run(main())


# --- the run -------------------------------------------------------------------------------

def write_config(tmp: Path, port: int) -> Path:
    config = tmp / "mailgate.toml"
    config.write_text(f"""
[state]
dir = "state"
[directory]
path = "{EXAMPLE_DIRECTORY}"
[outbox]
dir = "outgoing"
[limits]
auto_mail_per_recipient_per_hour = 1000000
[intake.smtp]
listen = "127.0.0.1:{port}"
""")
    return config


def wait_for_listener(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            sys.exit("the daemon did not start")
        time.sleep(0.1)


def ticketed(database: Path, count: int) -> tuple[int, int]:
    """Messages of this run on exactly one new ticket; quarantined ones."""
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT m.message_id, COUNT(e.id) FROM messages m LEFT JOIN events e "
            "ON e.message = m.id AND e.kind = 'created' WHERE m.message_id LIKE "
            "'bigmail-%' GROUP BY m.id").fetchall()
        quarantined = db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
    db.close()
    wanted = {f"bigmail-{i}@bench.example" for i in range(count)}
    return sum(1 for mid, n in rows if mid in wanted and n == 1), quarantined


def _commit() -> str:
    found = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                           capture_output=True, text=True, check=False)
    return found.stdout.strip() or "unknown"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(count: int, megabytes: float) -> dict:
    noise = os.urandom(int(megabytes * 1e6))
    messages = [big_message(i, int(megabytes * 1e6), noise) for i in range(count)]
    del noise
    with tempfile.TemporaryDirectory(prefix="mailgate-bigmail-") as tmp_dir:
        tmp = Path(tmp_dir)
        port = free_port()
        config = write_config(tmp, port)
        with (tmp / "daemon.log").open("wb") as log:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "mailgate", "--log-level", "warning", "--config",
                 str(config), "run"], cwd=ROOT, stdout=log, stderr=log)
        try:
            wait_for_listener(port, daemon)
            time.sleep(1)
            idle_rss = memory_mb(daemon.pid, "VmRSS")
            stop, samples = threading.Event(), []
            sampler = threading.Thread(target=sample_rss, args=(daemon.pid, stop, samples))
            sampler.start()
            prober = subprocess.Popen([sys.executable, __file__, "--probe", str(port),
                                       str(tmp / "lags.json")], cwd=ROOT)
            time.sleep(0.5)
            started = time.monotonic()
            results = [Delivery(i) for i in range(count)]
            senders = [threading.Thread(target=deliver, args=(port, raw, result))
                       for raw, result in zip(messages, results, strict=True)]
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join()
            elapsed = time.monotonic() - started
            time.sleep(0.5)
            (tmp / "stop").touch()
            prober.wait(120)
            stop.set()
            sampler.join()
            peak = memory_mb(daemon.pid, "VmHWM")
        finally:
            daemon.terminate()
            daemon.wait(60)
        tickets, quarantined = ticketed(tmp / "state" / "mailgate.sqlite3", count)
        lags = [x * 1000 for x in json.loads((tmp / "lags.json").read_text())]
        errors = (tmp / "daemon.log").read_text(errors="replace").count('"level": "error"')
    failed_probes = sum(1 for x in lags if x != x)
    lags = [x for x in lags if x == x]
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"host": platform.node(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "system": platform.platform()},
        "commit": _commit(),
        "messages": count, "message_bytes": len(messages[0]),
        "accepted": sum(1 for r in results if r.code == 250),
        "replies": sorted({r.reply[:60] for r in results if r.code != 250}),
        "seconds": round(elapsed, 1),
        "slowest_delivery_s": round(max(r.seconds for r in results), 1),
        "idle_rss_mb": round(idle_rss, 1),
        "peak_rss_mb": round(peak, 1),
        "rss_samples_max_mb": round(max((s[1] for s in samples), default=0), 1),
        "loop_lag_p50_ms": round(statistics.median(lags), 1),
        "loop_lag_p99_ms": round(percentile(lags, 0.99), 1),
        "loop_lag_max_ms": round(max(lags), 1),
        "probes": len(lags), "failed_probes": failed_probes,
        "tickets": tickets, "quarantined": quarantined, "daemon_errors": errors,
    }


def report(result: dict) -> None:
    rows = [
        ("deliveries", f"{result['messages']} x {result['message_bytes'] / 1e6:.1f} MB, "
                       f"all at once"),
        ("accepted (250)", f"{result['accepted']}"),
        ("first send -> last 250", f"{result['seconds']} s "
                                   f"(slowest delivery {result['slowest_delivery_s']} s)"),
        ("daemon RSS idle / peak (VmHWM)", f"{result['idle_rss_mb']:.0f} / "
                                           f"{result['peak_rss_mb']:.0f} MB "
                                           f"(target <= {TARGET_RSS_MB})"),
        ("loop lag p50 / p99 / max", f"{result['loop_lag_p50_ms']} / "
                                     f"{result['loop_lag_p99_ms']} / "
                                     f"{result['loop_lag_max_ms']} ms "
                                     f"(target p99 <= {TARGET_LAG_MS})"),
        ("probes (failed)", f"{result['probes']} ({result['failed_probes']})"),
        ("tickets / quarantined", f"{result['tickets']} / {result['quarantined']}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    for line in result["replies"]:
        print(f"  not accepted: {line}")


def stages(megabytes: float) -> None:
    from mailgate.core.mime.files import extract
    from mailgate.core.mime.largemail import decoded_chunks, lighten
    from mailgate.core.mime.parse import parse
    from mailgate.outbound.compose import relay_parts

    raw = big_message(0, int(megabytes * 1e6), os.urandom(int(megabytes * 1e6)))
    light = lighten(raw)
    assert light is not None, "the light path did not take this message"

    def decode_in_pieces() -> int:
        return sum(len(chunk) for span in light.spans.values()
                   for chunk in decoded_chunks(raw, span))

    steps: list[tuple[str, Callable[[], object]]] = [
        ("stdlib: parse.parse", lambda: parse(raw)),
        ("stdlib: files.extract", lambda: extract(raw)),
        ("stdlib: relay_parts", lambda: relay_parts(raw, 10 * 1024 * 1024)),
        ("light: lighten", lambda: lighten(raw)),
        ("light: parse the slim view", lambda: parse(light.slim)),
        ("light: decode in pieces", decode_in_pieces),
        ("zlib.compress, whole", lambda: zlib.compress(raw, 1))]
    print(f"one message of {len(raw) / 1e6:.1f} MB; each step in a worker thread")
    print(f"{'step':28} {'seconds':>8} {'peak MB':>8} {'longest loop stall ms':>22}")
    for name, step in steps:
        seconds, stall = asyncio.run(_stage(step))  # untraced: tracemalloc slows C code
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        step()
        peak = (tracemalloc.get_traced_memory()[1] - base) / 1e6
        tracemalloc.stop()
        print(f"{name:28} {seconds:8.2f} {peak:8.0f} {stall:22.0f}")


async def _stage(step: Callable[[], object]) -> tuple[float, float]:
    stalls: list[float] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            stalls.append(time.perf_counter() - before - 0.005)

    watcher = asyncio.create_task(watch())
    started = time.perf_counter()
    await asyncio.to_thread(step)
    seconds = time.perf_counter() - started
    done.set()
    await watcher
    return seconds, max(stalls, default=0.0) * 1000


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--probe":
        probe(int(sys.argv[2]), Path(sys.argv[3]), duration=3600)
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--mb", type=float, default=50.0, help="size of each message")
    parser.add_argument("--no-save", action="store_true",
                        help=f"do not write {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--stages", action="store_true",
                        help="where one message's time and memory go (no daemon)")
    args = parser.parse_args()
    if args.stages:
        stages(args.mb)
        return
    result = run(args.messages, args.mb)
    report(result)
    if not args.no_save:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    missed = (result["tickets"] != args.messages or result["peak_rss_mb"] > TARGET_RSS_MB
              or result["loop_lag_p99_ms"] > TARGET_LAG_MS)
    if missed:
        print("TARGET MISSED")
        sys.exit(1)


if __name__ == "__main__":
    main()
