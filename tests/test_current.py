"""One configuration snapshot, swapped whole: what a reload changes, each running part sees
on its next round, without being restarted, and no part keeps a copy of the old one."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import shutil
import smtplib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from mailgate.config import settings
from mailgate.config.directory import Directory
from mailgate.config.loader import load_setup
from mailgate.config.settings import AlertsConfig, ConversationConfig, MailboxConfig
from mailgate.connect.diagnose import Diagnosis
from mailgate.core.render import Renderer
from mailgate.core.replykey import KeyRing
from mailgate.intake.imap import MailboxWatcher
from mailgate.intake.pipeline import Pipeline, PipelineSettings
from mailgate.outbound.alerts import Alerter
from mailgate.service.current import Snapshot
from mailgate.service.daemon import Daemon, reload
from mailgate.storage.slaclock import SlaBook
from mailgate.workers.autoclose import AutoCloser
from mailgate.workers.digest import Digester
from mailgate.workers.escalation import Escalator
from mailgate.workers.flood import FloodSummaries
from tests.factories import (
    ROOT,
    TEMPLATES,
    TEST_KEYS,
    Harness,
    bare_config,
    example_directory,
    harness,
    mail,
)
from tests.mailservers import Mailbox, SmtpSink, free_port, write_daemon_config
from tests.test_digest import MONDAY_8, berlin
from tests.test_escalation import utc
from tests.test_workflow import agent, make

# Everything a configuration is made of: a running part holding one of these would keep
# using it after a reload.
CONFIGURATION = (Snapshot, Directory, Renderer, Pipeline, PipelineSettings, KeyRing, SlaBook,
                 *(value for value in vars(settings).values()
                   if isinstance(value, type) and dataclasses.is_dataclass(value)))


def renamed(h: Harness, instance: str, **config: object) -> Snapshot:
    """Another snapshot than h's: another instance name (in every mail's
    X-Mailgate-Instance) and these config fields."""
    pipeline = Pipeline(example_directory(), Renderer(TEMPLATES),
                        PipelineSettings(instance=instance, keys=TEST_KEYS), h.clock)
    return Snapshot(dataclasses.replace(bare_config(), instance=instance, **config), pipeline)


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    built = await harness(tmp_path)
    yield built
    await built.store.close()


async def instances(h: Harness, kind: str) -> list[str]:
    rows = await h.rows("SELECT raw FROM outbox WHERE kind = ? ORDER BY id", kind)
    return [email.message_from_bytes(raw)["X-Mailgate-Instance"] for (raw,) in rows]


# --- each kind of running part, built once, reads the snapshot of the moment -------------

async def test_the_pipeline_a_watcher_uses_is_the_one_current_at_each_batch(
        h: Harness) -> None:
    current = h.current()
    box = MailboxConfig(name="it", department="it", host="imap.invalid", port=993,
                        tls="implicit", username="u", password=None)
    watcher = MailboxWatcher(box, h.store, current, lambda: None, h.clock)
    await watcher._process(7, [1], {1: mail(message_id="<one@example.com>")}, {})
    current.snapshot = renamed(h, "after-reload")
    await watcher._process(7, [2], {2: mail("Other", message_id="<two@example.com>")}, {})
    assert await instances(h, "ack") == ["mailgate-test", "after-reload"]


async def test_autoclose_reads_its_window_at_each_round(tmp_path: Path) -> None:
    w = await make(tmp_path)
    try:
        await w.deliver(mail())
        await w.deliver(agent("#resolve\nDone."))
        month = ConversationConfig(auto_close_after=timedelta(days=30))
        current = w.current(conversation=month)
        closer = AutoCloser(w.store, current, w.clock)
        w.clock.advance(days=8)
        assert await closer.run_once() == 0
        current.snapshot = Snapshot(
            dataclasses.replace(current.snapshot.config, conversation=ConversationConfig()),
            w.pipeline)
        assert await closer.run_once() == 1  # the same worker, the new 7 days
    finally:
        await w.store.close()


async def test_a_digest_switched_on_by_a_reload_goes_out_at_the_next_round(
        h: Harness) -> None:
    current = h.current(digest=None)
    digester = Digester(h.store, current, h.clock, lambda: None)
    h.clock.now = berlin(30, 8, 30)
    assert await digester.run_once() == []
    current.snapshot = renamed(h, "weekly", digest=MONDAY_8)
    assert await digester.run_once()
    assert set(await instances(h, "digest")) == {"weekly"}


async def test_escalation_mail_is_written_with_the_snapshot_in_effect_when_sent(
        h: Harness) -> None:
    await h.deliver(mail())
    current = h.current()
    escalator = Escalator(h.store, current, h.clock, lambda: None)
    h.clock.now = utc(24, 13, 0)
    assert await escalator.run_once() == 1
    current.snapshot = renamed(h, "after-reload")
    row = next(r for r in await h.store.due_outgoing(h.clock(), 100) if r.draft)
    written = email.message_from_bytes(await escalator.write(row))
    assert written["X-Mailgate-Instance"] == "after-reload"


async def test_a_flood_summary_uses_the_snapshot_of_its_round(h: Harness) -> None:
    for n in range(7):  # five notified one by one, two held
        await h.deliver(mail(f"Request {n}", sender="script@example.com",
                             message_id=f"<flood-{n}@example.com>"))
    current = h.current()
    floods = FloodSummaries(h.store, current, h.clock, lambda: None)
    current.snapshot = renamed(h, "after-reload")
    assert await floods.run_once() == 1
    assert await instances(h, "flood-summary") == ["after-reload"]


async def test_alerts_switched_on_by_a_reload_reach_the_admin_on_the_next_failure(
        h: Harness, tmp_path: Path) -> None:
    current = h.current(alerts=None)
    alerter = Alerter(h.store, tmp_path, current, lambda: None, clock=h.clock)
    refused = Diagnosis("login", "the server refused the login")
    await alerter.failing("it", "imap.example.com", refused)
    assert await h.count("outbox", "kind = 'alert'") == 0
    current.snapshot = renamed(h, "after-reload", alerts=AlertsConfig("ops@example.com"))
    h.clock.advance(hours=1)
    await alerter.failing("it", "imap.example.com", refused)
    assert await instances(h, "alert") == ["after-reload"]


# --- the daemon: one Current shared by all, replaced whole on reload ----------------------

def held_copies(part: object, allowed: tuple[str, ...] = ()) -> list[str]:
    """Attributes through which PART could keep seeing an old configuration."""
    return [name for name, value in vars(part).items() if name not in allowed and (
        isinstance(value, CONFIGURATION) or getattr(value, "__name__", "") == "<lambda>")]


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    running = SmtpSink()
    await running.start()
    yield running
    await running.stop()


def write(tmp_path: Path, sink: SmtpSink, port: int, instance: str, acks: int = 10,
          mailboxes: tuple[Mailbox, ...] = ()) -> Path:
    return write_daemon_config(
        tmp_path / "mailgate.toml", sink=sink, instance=instance, templates="templates",
        acks_per_sender_per_hour=acks, notify_team=False, listen=f"127.0.0.1:{port}",
        mailboxes=mailboxes)


def push(port: int, sender: str, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail(sender, ["it-help@example.com"], raw)


def text_of(message: email.message.Message) -> str:
    part = message
    while part.is_multipart():
        part = part.get_payload()[0]
    return part.get_payload(decode=True).decode()


async def test_every_part_reads_the_one_current_and_a_reload_replaces_it_whole(
        tmp_path: Path, sink: SmtpSink) -> None:
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    secret = tmp_path / "imap.secret"
    secret.write_text("pw")
    # Nobody listens there: the watcher runs (and fails), which is all this test needs.
    box = Mailbox("it", "127.0.0.1", "u", port=free_port(), password_file=secret,
                  poll_interval="1h")
    port = free_port()
    setup = load_setup(write(tmp_path, sink, port, "before", mailboxes=(box,)))
    async with Daemon(setup.config, setup.directory, renderer=setup.renderer) as daemon:
        assert daemon.current is not None
        [watcher] = daemon.watchers
        parts = {"escalator": daemon.escalator, "autocloser": daemon.autocloser,
                 "digester": daemon.digester, "floods": daemon.floods,
                 "alerter": daemon.alerter, "handler": daemon.handler, "watcher": watcher}
        for name, part in parts.items():
            assert vars(part)["current"] is daemon.current, name
            # The watcher's own mailbox settings are its identity: a change restarts it.
            assert held_copies(part, allowed=("config",) if part is watcher else ()) == [], name
        for part in (daemon.outbox, daemon.sweeper):
            assert held_copies(part) == []
        first = daemon.current.snapshot

        template = tmp_path / "templates" / "ack.txt.j2"
        good = template.read_text()
        template.write_text("{% if %}broken" + good)
        assert not await reload(daemon)  # rejected: the old snapshot stays, untouched
        assert daemon.current.snapshot is first
        template.write_text(good)
        write(tmp_path, sink, port, "after", mailboxes=(box,))
        assert await reload(daemon)
        assert daemon.current.snapshot is not first
        assert daemon.current.snapshot.config.instance == "after"
        assert daemon.watchers == [watcher]  # its mailbox did not change: not restarted
        assert {name: vars(part)["current"] for name, part in parts.items()} == \
            dict.fromkeys(parts, daemon.current)


async def test_a_reload_reaches_the_next_pushed_mail_without_a_restart(
        tmp_path: Path, sink: SmtpSink) -> None:
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    port = free_port()
    setup = load_setup(write(tmp_path, sink, port, "before", acks=10))
    async with Daemon(setup.config, setup.directory, renderer=setup.renderer) as daemon:
        handler = daemon.handler
        await asyncio.to_thread(push, port, "ann@example.com",
                                mail("First", message_id="<first@example.com>"))
        [first] = await sink.wait_for(count=1)
        assert first.message["X-Mailgate-Instance"] == "before"
        assert "Reloaded text" not in text_of(first.message)

        # A new template text, instance name and limit of automatic mail per person.
        template = tmp_path / "templates" / "ack.txt.j2"
        template.write_text("Reloaded text.\n" + template.read_text())
        write(tmp_path, sink, port, "after", acks=1)
        assert await reload(daemon)
        assert daemon.handler is handler  # the same listener and handler, not restarted

        await asyncio.to_thread(push, port, "bob@example.com",
                                mail("Second", sender="bob@example.com",
                                     message_id="<second@example.com>"))
        second = (await sink.wait_for(count=2))[1]
        assert second.message["X-Mailgate-Instance"] == "after"
        assert text_of(second.message).startswith("Reloaded text.")
        # Ann had one acknowledgement this hour; the new limit is one: no second.
        await asyncio.to_thread(push, port, "ann@example.com",
                                mail("Third", message_id="<third@example.com>"))
        assert daemon.store is not None
        events = await daemon.store.read_committed(
            "SELECT e.kind FROM events e JOIN tickets t ON t.id = e.ticket "
            "WHERE t.subject = 'Third'")
        assert ("ack_suppressed",) in [tuple(e) for e in events]


async def test_a_snapshot_is_frozen(h: Harness) -> None:
    snapshot = h.current().snapshot
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.config = bare_config()  # type: ignore[misc]
    assert snapshot.directory is h.pipeline.directory and snapshot.keys is TEST_KEYS
