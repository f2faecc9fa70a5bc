"""Property: the pure core never raises, whatever bytes arrive (bench/fuzz.py runs longer)."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailgate.core.classify import LoopContext
from mailgate.core.model import Origin
from tests.factories import example_directory, find_corpus, mail
from tests.fuzzing import mutate, run_core

DIRECTORY = example_directory()
CONTEXT = LoopContext(DIRECTORY.own_addresses(), "mailgate-test")
PREFIXES = frozenset(d.prefix for d in DIRECTORY.departments.values())
ORIGIN = Origin("imap:it", ("it",))
CORPUS = find_corpus()
SEEDS = [mail(), mail("Re: [IT-1001] x", headers={"References": "<a@b> <c@d>"})] + [
    p.read_bytes() for p in sorted(CORPUS.glob("*/*.eml") if CORPUS else [])[:40]]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    run_core(raw, DIRECTORY, CONTEXT, PREFIXES, ORIGIN)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(SEEDS) - 1), st.randoms(use_true_random=False))
def test_mutated_real_mail_never_raises(index: int, rng: random.Random) -> None:
    run_core(mutate(SEEDS[index], rng), DIRECTORY, CONTEXT, PREFIXES, ORIGIN)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.text(max_size=100))
def test_arbitrary_header_text_never_raises(subject: str, name: str) -> None:
    raw = (f"From: {name} <a@example.com>\r\nTo: it-help@example.com\r\n"
           f"Subject: {subject}\r\n\r\nbody").encode("utf-8", "surrogatepass")
    run_core(raw, DIRECTORY, CONTEXT, PREFIXES, ORIGIN)
