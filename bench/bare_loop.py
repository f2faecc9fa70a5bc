#!/usr/bin/env python3
"""The reference: what a mail-to-database-to-mail loop costs with no ticket logic at all.

    python bench/bare_loop.py [--messages 1000] [--mailboxes 1|3]

One thread, one mailbox after the other: imaplib batch UID FETCH of BODY.PEEK[] from
Dovecot, `email` parse (policy.default: headers and the text body), an SQLite insert
(one transaction per batch), then smtplib sends an acknowledgement per message to the
sink over one connection. The clock runs from the first IMAP connection to the last
acknowledgement the sink accepted. Standalone it starts its own Dovecot and sink with the
issue's message mix; bench/burst.py calls measure() in the same run as the daemon, in a
child process, so the peak RSS (VmHWM) is the loop's own.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import imaplib
import json
import smtplib
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from pathlib import Path

# The loop itself imports the standard library only: its peak RSS is what such a loop
# costs, not what the benchmark's helpers (and mailgate, through tests/) would add.
BATCH = 100
SCHEMA = """CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, message_id TEXT UNIQUE, sender TEXT, subject TEXT,
    body TEXT, raw BLOB, received_at REAL)"""


@dataclass(frozen=True)
class Account:
    host: str
    port: int
    username: str
    password: str


@dataclass(frozen=True)
class BareResult:
    messages: int
    seconds: float
    peak_rss_mb: float

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds


def run(accounts: Sequence[Account], sink_host: str, sink_port: int, database: Path,
        batch: int = BATCH) -> int:
    """Read every message of every account's INBOX, store it, acknowledge it; the count."""
    db = sqlite3.connect(database)
    db.execute(SCHEMA)
    smtp = smtplib.SMTP(sink_host, sink_port)
    done = 0
    try:
        for account in accounts:
            done += _drain(account, db, smtp, batch)
    finally:
        smtp.quit()
        db.close()
    return done


def _drain(account: Account, db: sqlite3.Connection, smtp: smtplib.SMTP,
           batch: int) -> int:
    imap = imaplib.IMAP4(account.host, account.port)
    imap.login(account.username, account.password)
    imap.select("INBOX", readonly=True)
    uids = imap.uid("SEARCH", "ALL")[1][0].split()
    for start in range(0, len(uids), batch):
        group = b",".join(uids[start:start + batch]).decode()
        fetched = [item[1] for item in imap.uid("FETCH", group, "(BODY.PEEK[])")[1]
                   if isinstance(item, tuple)]
        parsed = [email.message_from_bytes(raw, policy=email.policy.default)
                  for raw in fetched]
        with db:
            db.executemany(
                "INSERT INTO messages (message_id, sender, subject, body, raw, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(str(msg["Message-ID"]), str(msg["From"]), str(msg["Subject"]),
                  _text(msg), raw, time.time()) for msg, raw in zip(parsed, fetched,
                                                                   strict=True)])
        for msg in parsed:
            smtp.send_message(_ack(msg))
    imap.logout()
    return len(uids)


def _text(msg: EmailMessage) -> str:
    body = msg.get_body(("plain", "html"))
    return body.get_content() if body is not None else ""


def _ack(msg: EmailMessage) -> EmailMessage:
    ack = EmailMessage()
    ack["From"] = str(msg["To"])
    ack["To"] = str(msg["From"])
    ack["Subject"] = f"Received: {msg['Subject']}"
    ack["In-Reply-To"] = str(msg["Message-ID"])
    ack["Auto-Submitted"] = "auto-replied"
    ack.set_content("We have your request.\n")
    return ack


def measure(accounts: Sequence[object], sink_host: str, sink_port: int,
            workdir: Path) -> BareResult:
    """run() in a child process (this file with --child), so its peak RSS is its own.
    ACCOUNTS: dataclasses with host, port, username and password (tests' ImapAccount)."""
    order = json.dumps({"accounts": [asdict(a) for a in accounts], "sink": [sink_host,
                       sink_port], "database": str(workdir / "bare.sqlite3")})
    done = subprocess.run([sys.executable, __file__, "--child", order], capture_output=True,
                          text=True, check=True)
    return BareResult(**json.loads(done.stdout))


def child(order_text: str) -> None:
    order = json.loads(order_text)
    accounts = [Account(**a) for a in order["accounts"]]
    started = time.monotonic()
    count = run(accounts, *order["sink"], Path(order["database"]))
    seconds = time.monotonic() - started
    print(json.dumps({"messages": count, "seconds": seconds,
                      "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--mailboxes", type=int, choices=(1, 3), default=1)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench import rig

    mix = rig.message_mix(args.messages, args.mailboxes)
    sink = rig.Sink()
    with rig.dovecot() as server, rig.tempdir("bare") as tmp:
        accounts = rig.fill(server, mix)
        result = measure(list(accounts.values()), sink.host, sink.port, Path(tmp))
    acked = len(sink.messages)
    sink.close()
    print(rig.table([[result.messages, f"{result.seconds:.2f}", f"{result.msgs_per_s:.0f}",
                      f"{result.peak_rss_mb:.0f}", acked]],
                    ["messages", "seconds", "msgs/s", "peak RSS MB", "acks at sink"]))
    if acked != len(mix):
        sys.exit("MISMATCH: not every message was acknowledged")


if __name__ == "__main__":
    main()
