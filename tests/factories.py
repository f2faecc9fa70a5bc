"""Builders shared by tests: messages, a directory, a pipeline on the test's database
(tests/harness.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mailgate.config.directory import Directory, load_directory
from mailgate.config.settings import Config
from mailgate.core.model import Origin
from mailgate.core.render import Renderer
from mailgate.core.replykey import KeyRing
from mailgate.intake.pipeline import Outcome, Pipeline, PipelineSettings
from mailgate.service.current import Current, Snapshot
from mailgate.storage.store import Store
from tests.harness import database

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DIRECTORY = ROOT / "config" / "directory.example.toml"


def find_corpus() -> Path | None:
    """The shared real-world corpus: $MAILGATE_CORPUS, else ../shared/corpus beside the
    checkout, else /work/shared/corpus. None when it is not on this machine."""
    candidates = [os.environ.get("MAILGATE_CORPUS"), ROOT.parent / "shared" / "corpus",
                  "/work/shared/corpus"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "MANIFEST.tsv").is_file():
            return Path(candidate)
    return None
TEMPLATES = ROOT / "templates"
IT = Origin(source="imap:it", departments=("it",))
TEST_KEYS = KeyRing((("t1", b"test secret, not for production"),))
FACILITIES = Origin(source="imap:facilities", departments=("facilities",))


def mail(subject: str = "Laptop won't boot", *, sender: str = "Ann Example <ann@example.com>",
         to: str = "it-help@example.com", cc: str | None = None,
         message_id: str | None = "<req-1@example.com>", body: str = "It only beeps.",
         headers: dict[str, str] | None = None) -> bytes:
    """A small RFC 5322 message as bytes; pass message_id=None for none at all.
    Authentication-Results among `headers` go on top, as our MTA writes them."""
    headers = headers or {}
    lines = [f"{k}: {v}" for k, v in headers.items() if k.lower() == "authentication-results"]
    lines += [f"From: {sender}", f"To: {to}", f"Subject: {subject}",
              "Date: Tue, 24 Nov 2026 09:00:00 +0100"]
    if cc:
        lines.append(f"Cc: {cc}")
    if message_id:
        lines.append(f"Message-ID: {message_id}")
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "authentication-results"]
    lines += ["Content-Type: text/plain; charset=utf-8", "", body, ""]
    return "\r\n".join(lines).encode()


@dataclass
class FakeClock:
    now: datetime = field(default_factory=lambda: datetime(2026, 11, 24, 9, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def example_directory() -> Directory:
    return load_directory(EXAMPLE_DIRECTORY)


@dataclass
class Harness:
    store: Store
    pipeline: Pipeline
    clock: FakeClock

    async def deliver(self, raw: bytes, origin: Origin = IT) -> Outcome:
        async with self.store.transaction() as tx:
            return await self.pipeline.handle(tx, raw, origin)

    def current(self, **config: object) -> Current:
        """What a daemon hands its workers, around this pipeline: a snapshot whose config
        has these fields (digest=..., conversation=...) and this pipeline's instance."""
        return current_of(self.pipeline, **config)

    async def rows(self, sql: str, *args: object) -> list[tuple]:
        async with self.store.conn.execute(sql, args) as cur:
            return [tuple(r) for r in await cur.fetchall()]

    async def key_from(self, recipient: str, kind: str | None = None) -> str:
        """The Message-ID of our newest mail to `recipient` (of `kind`), bracketed: what a
        reply to it echoes in In-Reply-To, carrying that person's reply key."""
        kinds = "AND kind = ?" if kind else ""
        rows = await self.rows(
            f"SELECT message_id FROM outbox WHERE recipients = ? {kinds} ORDER BY id DESC "
            "LIMIT 1", f'["{recipient}"]', *([kind] if kind else []))
        assert rows, f"no mail to {recipient} ({kind or 'any kind'}) was queued"
        return f"<{rows[0][0]}>"

    async def count(self, table: str, where: str = "TRUE") -> int:
        rows = await self.rows(f"SELECT COUNT(*) FROM {table} WHERE {where}")
        return int(rows[0][0])


def current_of(pipeline: Pipeline, **config: object) -> Current:
    """A Current around this pipeline; its config has these fields and the pipeline's
    instance."""
    fields = {"instance": pipeline.settings.instance, **config}
    return Current(Snapshot(replace(bare_config(), **fields), pipeline))  # type: ignore[arg-type]


def bare_config() -> Config:
    """A Config with no file behind it, for components built by hand."""
    return Config(path=ROOT / "mailgate.toml", state_dir=ROOT / "state",
                  directory_path=EXAMPLE_DIRECTORY, templates_dir=TEMPLATES, smtp=None,
                  outbox_dir=ROOT / "outbox", listener=None)


async def harness(tmp_path: Path, acks_per_hour: int = 10,
                  instance: str = "mailgate-test") -> Harness:
    clock = FakeClock()
    store = await Store.open(database(tmp_path / "state"))
    settings = PipelineSettings(instance=instance, auto_mail_per_recipient_per_hour=acks_per_hour,
                                keys=TEST_KEYS)
    pipeline = Pipeline(example_directory(), Renderer(TEMPLATES), settings, clock)
    return Harness(store, pipeline, clock)
