#!/usr/bin/env python3
"""Burst: N messages land at once across 3 mailboxes of a real Dovecot; the real daemon
(a separate process) tickets and acknowledges all of them through a real SMTP sink.

    python bench/burst.py [--messages 10000]

Prints throughput, time to the last acknowledgement, the daemon's peak memory (VmHWM) and
a check that every message became exactly one acknowledged ticket.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.factories import ROOT, mail
from tests.mailservers import (
    DovecotServer,
    ImapAccount,
    SmtpSink,
    find_dovecot,
    imap_mailbox,
    write_daemon_config,
)

BOXES = (("it", "it-help@example.com"), ("facilities", "facilities@example.com"),
         ("payroll", "payroll@example.com"))


def write_config(tmp: Path, sink: SmtpSink, accounts: dict[str, ImapAccount]) -> Path:
    return write_daemon_config(
        tmp / "mailgate.toml", sink=sink, acks_per_sender_per_hour=1000000,
        mailboxes=[imap_mailbox(name, account, tmp / f"{name}.secret", batch_size=100)
                   for name, account in accounts.items()])


def append_all(dovecot: DovecotServer, account: ImapAccount, box: str, address: str,
               count: int) -> None:
    with dovecot.client(account) as client:
        for i in range(count):
            raw = mail(f"{box} request {i}", to=address, sender=f"user{i % 997}@example.com",
                       message_id=f"<burst-{box}-{i}@example.com>", body="Please help. " * 40)
            client.append("INBOX", raw)


async def report_progress(tmp: Path, sink: SmtpSink, started: float) -> None:
    """One line a second when MAILGATE_BENCH_VERBOSE is set: where does the time go?"""
    if not os.environ.get("MAILGATE_BENCH_VERBOSE"):
        return
    while True:
        await asyncio.sleep(1)
        with sqlite3.connect(tmp / "state" / "mailgate.sqlite3") as db:
            tickets = db.execute("SELECT COUNT(*) FROM tickets").fetchone()[0]
            sent = db.execute("SELECT COUNT(*) FROM outbox WHERE status='sent'").fetchone()[0]
        print(f"{time.monotonic() - started:5.1f}s tickets {tickets} sent {sent} "
              f"sink {len(sink.messages)}", flush=True)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(total: int) -> None:
    binary = find_dovecot()
    if binary is None:
        sys.exit("Dovecot is not installed (apt-get install dovecot-imapd)")
    dovecot = DovecotServer(binary)
    dovecot.start()
    sink = SmtpSink()
    await sink.start()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        accounts = {box: dovecot.add_user() for box, _ in BOXES}
        config = write_config(tmp, sink, accounts)
        daemon = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mailgate", "--log-level", "warning", "--config", str(config),
            "run", cwd=ROOT, stderr=open(tmp / "daemon.log", "wb"))  # noqa: SIM115
        await asyncio.sleep(2)  # connected and idling
        per_box = total // len(BOXES)
        started = time.monotonic()
        threads = [threading.Thread(target=append_all, args=(dovecot, accounts[box], box,
                                                             address, per_box))
                   for box, address in BOXES]
        for thread in threads:
            thread.start()
        await asyncio.to_thread(lambda: [t.join() for t in threads])
        appended = time.monotonic() - started
        expected = per_box * len(BOXES)
        progress = asyncio.create_task(report_progress(tmp, sink, started))
        # Each request brings an acknowledgement and a notification to the team.
        await sink.wait_for(count=2 * expected, timeout=1800)
        progress.cancel()
        elapsed = time.monotonic() - started
        rss = peak_rss_mb(daemon.pid)
        daemon.terminate()
        await daemon.wait()
        with sqlite3.connect(tmp / "state" / "mailgate.sqlite3") as db:
            tickets = db.execute("SELECT COUNT(*) FROM tickets").fetchone()[0]
        acks = [m for m in sink.messages if m.message["Auto-Submitted"] == "auto-replied"]
        acked = len({m.message["X-Mailgate-Ticket"] for m in acks})
    await sink.stop()
    dovecot.cleanup()
    rows = [
        ("messages (3 mailboxes)", f"{expected}"),
        ("APPEND phase", f"{appended:.1f} s ({expected / appended:.0f} msg/s offered)"),
        ("first APPEND -> last ack", f"{elapsed:.1f} s"),
        ("throughput", f"{expected / elapsed:.0f} msg/s ticketed and acknowledged"),
        ("daemon peak RSS (VmHWM)", f"{rss:.0f} MB"),
        ("tickets / acknowledged tickets", f"{tickets} / {acked}"),
        ("acks received (duplicates)", f"{len(acks)} ({len(acks) - acked})"),
        ("team notifications received", f"{len(sink.messages) - len(acks)}"),
    ]
    for name, value in rows:
        print(f"{name:<32} {value}")
    if tickets != expected or acked != expected:
        sys.exit("MISMATCH: some message was lost or doubled")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    asyncio.run(run(parser.parse_args().messages))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
