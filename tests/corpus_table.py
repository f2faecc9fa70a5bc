"""The corpus expectation table (tests/data/corpus-expected.tsv): what each message of the
shared corpus must become, and how to compute what it does become.

One row per message: path, outcome (ticket | bulk | reply | bounce | auto-reply |
quarantine | duplicate), why (the classifier's or the quarantine's reason), sender, subject,
the start of the text (whitespace collapsed), and `wrong`: empty, or why the reading is
still wrong (such rows record the correct expectation; the test insists they still differ,
so a fix shows up as a table to update, never as silence).

    python -m tests.corpus_table > /tmp/draft.tsv   # a draft from today's code: review it
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from mailgate.core.classify import classify
from mailgate.core.mime.parse import parse
from mailgate.core.model import MailKind
from mailgate.intake.pipeline import Outcome
from tests.factories import IT, Harness, find_corpus, harness

TABLE = Path(__file__).parent / "data" / "corpus-expected.tsv"
TEXT_START = 70


@dataclass(frozen=True)
class Row:
    path: str
    outcome: str
    why: str
    sender: str
    subject: str
    text: str
    wrong: str = ""

    def reading(self) -> tuple[str, ...]:
        return astuple(self)[1:6]


COLUMNS = tuple(f.name for f in fields(Row))


def read_table(path: Path = TABLE) -> dict[str, Row]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert tuple(lines[0].split("\t")) == COLUMNS, f"{path}: header must be {COLUMNS}"
    rows = [Row(*line.split("\t")) for line in lines[1:] if line]
    return {row.path: row for row in rows}


def format_table(rows: list[Row]) -> str:
    lines = ["\t".join(COLUMNS)] + ["\t".join(astuple(row)) for row in rows]
    return "\n".join(lines) + "\n"


def corpus_files(corpus: Path) -> list[str]:
    manifest = (corpus / "MANIFEST.tsv").read_text().splitlines()[1:]
    return [line.split("\t")[0] for line in manifest if line]


def one_line(text: str, limit: int = 10_000) -> str:
    return " ".join(text.split())[:limit]


def outcome_of(result: Outcome, kind: MailKind, reason: str) -> tuple[str, str]:
    if result.action == "quarantined":
        for automatic in ("bounce", "auto_reply"):
            if result.reason.startswith(f"{automatic} matching no ticket"):
                return automatic.replace("_", "-"), reason
        return "quarantine", result.reason
    if result.action == "ticket":
        return ("bulk", reason) if kind is MailKind.BULK else ("ticket", reason)
    return result.action, reason


async def actual_rows(corpus: Path, h: Harness) -> list[Row]:
    """Every corpus message through the real pipeline, in one batch, in manifest order."""
    rows = []
    async with h.store.transaction() as tx:
        for path in corpus_files(corpus):
            raw = (corpus / path).read_bytes()
            msg = parse(raw)
            verdict = classify(msg, h.pipeline.loop_context)
            result = await h.pipeline.handle(tx, raw, IT)
            outcome, why = outcome_of(result, verdict.kind, verdict.reason)
            rows.append(Row(path, outcome, one_line(why, 200),
                            msg.sender.addr if msg.sender else "", one_line(msg.subject),
                            one_line(msg.body, TEXT_START)))
    return rows


async def _draft(corpus: Path) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        h = await harness(Path(tmp), acks_per_hour=10**6)
        try:
            rows = await actual_rows(corpus, h)
        finally:
            await h.store.close()
    known = read_table() if TABLE.exists() else {}
    # A row marked wrong keeps its (correct) expectation until someone fixes the reading.
    return format_table([known[r.path] if r.path in known and known[r.path].wrong else r
                         for r in rows])


if __name__ == "__main__":
    from mailgate.service.log import setup_logging
    setup_logging("critical", json=True, stream=sys.stderr)
    found = find_corpus()
    if found is None:
        sys.exit("corpus not found (set MAILGATE_CORPUS)")
    sys.stdout.write(asyncio.run(_draft(found)))
