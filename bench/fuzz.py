#!/usr/bin/env python3
"""Long fuzz run of the pure core: parse -> classify -> thread -> route must never raise.

    python bench/fuzz.py [--cases 100000] [--seed 1]

Mutates every corpus message (and a few synthetic ones) with tests.fuzzing.mutate and
prints a results table; any exception is printed with the seed and case to reproduce it.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailgate.core.classify import LoopContext
from mailgate.core.model import Origin
from tests.factories import example_directory, mail
from tests.fuzzing import mutate, run_core

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def seeds() -> list[bytes]:
    manifest = CORPUS / "MANIFEST.tsv"
    found = [mail(), mail("Re: [IT-1001] x", headers={"References": "<a@b>"})]
    if manifest.exists():
        paths = [line.split("\t")[0] for line in manifest.read_text().splitlines()[1:] if line]
        found += [(CORPUS / p).read_bytes() for p in paths]
    return [s for s in found if len(s) < 200_000]  # big ones make each case slow, not deeper


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    directory = example_directory()
    ctx = LoopContext(directory.own_addresses(), "mailgate-fuzz")
    prefixes = frozenset(d.prefix for d in directory.departments.values())
    origin = Origin("imap:it", ("it",))
    corpus = seeds()
    rng = random.Random(args.seed)
    failures = 0
    started = time.perf_counter()
    for case in range(args.cases):
        raw = mutate(rng.choice(corpus), rng)
        try:
            run_core(raw, directory, ctx, prefixes, origin)
        except Exception:
            failures += 1
            print(f"case {case} (seed {args.seed}) raised:", file=sys.stderr)
            traceback.print_exc()
    elapsed = time.perf_counter() - started
    rows = [("seed messages", len(corpus)), ("cases run", args.cases),
            ("unhandled exceptions", failures), ("seconds", f"{elapsed:.1f}"),
            ("cases per second", f"{args.cases / elapsed:.0f}")]
    for name, value in rows:
        print(f"{name:<22} {value}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
