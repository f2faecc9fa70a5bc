#!/usr/bin/env python3
"""Intake hot path without the network: parse cost and pipeline throughput.

    python bench/intake.py [--messages 5000] [--batch 50]

Prints a results table: parse time per corpus message (our parser vs. the standard
policy.default parser), and messages/second through parse -> ... -> apply on a real SQLite
database with one transaction per batch (the IMAP path) and one per message (SMTP push).
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailgate.core.mime.parse import parse
from mailgate.service.log import setup_logging
from tests.factories import IT, harness, mail

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def corpus_messages() -> list[bytes]:
    manifest = CORPUS / "MANIFEST.tsv"
    if not manifest.exists():
        return [mail(f"sample {i}", message_id=f"<s{i}@x.example>") for i in range(200)]
    paths = [line.split("\t")[0] for line in manifest.read_text().splitlines()[1:] if line]
    return [(CORPUS / p).read_bytes() for p in paths]


def per_message_us(func: Callable[[bytes], object], messages: list[bytes],
                   rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for raw in messages:
            func(raw)
        best = min(best, time.perf_counter() - start)
    return best / len(messages) * 1e6


def default_policy_parse(raw: bytes) -> None:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    _ = msg["subject"], msg["from"], msg["to"]
    try:
        body = msg.get_body(("plain", "html"))
        if body is not None:
            body.get_content()
    except Exception:
        pass


async def pipeline_rate(count: int, batch: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        h = await harness(Path(tmp), acks_per_hour=10**9)
        messages = [mail(f"request {i}", sender=f"user{i % 500}@example.com",
                         message_id=f"<b{i}@bench.example>", body="x " * 400)
                    for i in range(count)]
        start = time.perf_counter()
        for i in range(0, count, batch):
            async with h.store.transaction() as tx:
                for raw in messages[i:i + batch]:
                    await h.pipeline.handle(tx, raw, IT)
        batched = count / (time.perf_counter() - start)
        singles = [mail(f"single {i}", message_id=f"<s{i}@bench.example>") for i in range(300)]
        start = time.perf_counter()
        for raw in singles:
            await h.deliver(raw)
        single = len(singles) / (time.perf_counter() - start)
        await h.store.close()
    return batched, single


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    # As the daemon logs (info, JSON lines), into the void: logging is part of the cost.
    setup_logging("info", json=True, stream=open(os.devnull, "w"))  # noqa: SIM115
    messages = corpus_messages()
    ours = per_message_us(parse, messages)
    stdlib = per_message_us(default_policy_parse, messages)
    batched, single = asyncio.run(pipeline_rate(args.messages, args.batch))
    rows = [
        ("corpus messages", f"{len(messages)}"),
        ("parse, mailgate (compat32 + own decoding)", f"{ours:.0f} us/msg"),
        ("parse, email policy.default", f"{stdlib:.0f} us/msg ({stdlib / ours:.1f}x)"),
        (f"pipeline, batch of {args.batch} per transaction", f"{batched:.0f} msg/s"),
        ("pipeline, one transaction per message", f"{single:.0f} msg/s "
                                                  f"({1000 / single:.1f} ms/msg)"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  result")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


if __name__ == "__main__":
    main()
