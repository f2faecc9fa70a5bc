#!/usr/bin/env python3
"""Latency: one request at a time, how long until its acknowledgement reaches the sink.

    python bench/latency.py [--samples 30]

IDLE path: a request is APPENDed to the Dovecot mailbox the daemon watches with IDLE; a
plain IMAP IDLE client on the same mailbox, in this process, notes when Dovecot announces
it (EXISTS). Dovecot announces new mail on its own schedule (mailbox_idle_check_interval,
1 s in the test config), so the daemon's share is APPEND -> ack minus APPEND -> announcement,
both measured on the same messages. Push path: the request goes by SMTP to the daemon's
listener; the clock runs from the start of the SMTP transaction to the ack at the sink.
Requests are spaced by a varying pause so they fall at every phase of Dovecot's check.
Writes bench/results/latency.json and prints a table.
"""

from __future__ import annotations

import argparse
import smtplib
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imapclient import IMAPClient

from bench import rig
from tests.mailservers import DovecotServer, ImapAccount, free_port

TIMEOUT = 30.0


class IdleWatcher:
    """A plain IDLE client: the monotonic instant each EXISTS count was announced."""

    def __init__(self, server: DovecotServer, account: ImapAccount) -> None:
        self.client: IMAPClient = server.client(account)
        self.client.select_folder("INBOX", readonly=True)
        self.announced: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> None:
        self.client.idle()
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            for response in self.client.idle_check(timeout=0.2):
                if len(response) == 2 and response[1] == b"EXISTS":
                    self.announced.setdefault(int(response[0]), time.monotonic())

    def wait_for(self, count: int) -> float:
        deadline = time.monotonic() + TIMEOUT
        while count not in self.announced:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Dovecot never announced message {count}")
            time.sleep(0.005)
        return self.announced[count]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.idle_done()
        self.client.logout()


def request(i: int, path: str) -> tuple[str, bytes]:
    message_id = f"latency-{path}-{i}@example.com"
    raw = rig.plain(f"user{i}@example.com", "it-help@example.com",
                    f"{path} request {i}: the VPN drops", message_id, i)
    return message_id, raw


def ack_at(sink: rig.Sink, message_id: str) -> float:
    sink.wait_until(lambda: sink.ack_for(message_id) is not None, TIMEOUT)
    found = sink.ack_for(message_id)
    assert found is not None
    return found.at


def measure_idle(server: DovecotServer, account: ImapAccount, sink: rig.Sink,
                 samples: int) -> list[tuple[float, float]]:
    """Per request: (APPEND -> announcement, APPEND -> ack) in seconds."""
    watcher = IdleWatcher(server, account)
    watcher.start()
    found = []
    try:
        with server.client(account) as appender:
            for i in range(samples):
                message_id, raw = request(i, "idle")
                sent = time.monotonic()
                appender.append("INBOX", raw)
                announced = watcher.wait_for(i + 1)
                acked = ack_at(sink, message_id)
                found.append((announced - sent, acked - sent))
                time.sleep(0.3 + (i * 0.37) % 1.0)  # every phase of Dovecot's 1 s check
    finally:
        watcher.stop()
    return found


def measure_push(port: int, sink: rig.Sink, samples: int) -> list[float]:
    found = []
    for i in range(samples):
        message_id, raw = request(i, "push")
        sent = time.monotonic()
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            smtp.sendmail(f"user{i}@example.com", ["it-help@example.com"], raw)
        found.append(ack_at(sink, message_id) - sent)
        time.sleep(0.1)
    return found


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def run(samples: int) -> dict:
    sink = rig.Sink()
    port = free_port()
    with rig.dovecot() as server, rig.tempdir("latency") as tmp:
        account = server.add_user()
        config = rig.write_config(Path(tmp), sink, {"it": account},
                                  rig.DaemonSetup(listen=f"127.0.0.1:{port}"))
        daemon = rig.start_daemon(config)
        try:
            time.sleep(2)  # connected and idling
            idle = measure_idle(server, account, sink, samples)
            push = measure_push(port, sink, samples)
        finally:
            daemon.stop()
    sink.close()
    announce = [a for a, _ in idle]
    total = [t for _, t in idle]
    return {
        "samples": samples,
        "idle_p50_ms": ms(statistics.median(total) - statistics.median(announce)),
        "idle_share_p50_ms": ms(statistics.median(t - a for a, t in idle)),
        "idle_append_to_ack_p50_ms": ms(statistics.median(total)),
        "idle_append_to_ack_max_ms": ms(max(total)),
        "dovecot_announce_p50_ms": ms(statistics.median(announce)),
        "push_p50_ms": ms(statistics.median(push)),
        "push_max_ms": ms(max(push)),
    }


def report(result: dict) -> str:
    rows = [
        ["APPEND -> ack (IDLE)", result["idle_append_to_ack_p50_ms"],
         result["idle_append_to_ack_max_ms"]],
        ["APPEND -> Dovecot's IDLE announcement", result["dovecot_announce_p50_ms"], "-"],
        ["mailgate's share (p50 - p50)", result["idle_p50_ms"], "-"],
        ["mailgate's share (p50 per message)", result["idle_share_p50_ms"], "-"],
        ["SMTP to listener -> ack", result["push_p50_ms"], result["push_max_ms"]],
    ]
    return rig.table(rows, ["path", "p50 ms", "max ms"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    meta = rig.header("sqlite")
    result = run(args.samples)
    print(report(result))
    if not args.no_save:
        print(f"wrote {rig.save('latency.json', rig.stamp_end({**meta, **result}))}")


if __name__ == "__main__":
    main()
