"""Prometheus metrics: the text format, [metrics] config, and a real daemon scraped over HTTP.

The daemon test runs the whole daemon in the test's loop with an SMTP push listener, an
aiosmtpd sink as its outgoing server, a mailbox whose IMAP server is not there (so it
reconnects), and an injected clock for SLA warnings.
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailgate.config.loader import load_setup
from mailgate.config.settings import MetricsConfig, load_config
from mailgate.errors import ConfigError
from mailgate.service import metrics
from mailgate.service.daemon import Daemon
from tests.factories import TEMPLATES, FakeClock, mail
from tests.mailservers import Mailbox, SmtpSink, free_port, write_daemon_config


def samples(text: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def test_exposition_format() -> None:
    registry = metrics.Registry()
    registry.message_in("it", "ticket")
    registry.message_in("it", "ticket")
    registry.message_in('we"ird\\box', "duplicate")
    registry.mail_sent("ack", 0.3)
    registry.mail_sent("ack", 7.0)
    registry.mail_sent("escalation-warning", 1.0)
    registry.escalation("it", "breach")
    text = registry.exposition([("mailgate_outbox_depth", (), 3)])
    got = samples(text)
    assert got['mailgate_messages_total{mailbox="it",outcome="ticket"}'] == 2
    assert got['mailgate_messages_total{mailbox="we\\"ird\\\\box",outcome="duplicate"}'] == 1
    assert got["mailgate_acks_sent_total"] == 2
    assert got['mailgate_mail_sent_total{kind="escalation-warning"}'] == 1
    assert got['mailgate_ack_latency_seconds_bucket{le="0.25"}'] == 0
    assert got['mailgate_ack_latency_seconds_bucket{le="0.5"}'] == 1
    assert got['mailgate_ack_latency_seconds_bucket{le="10"}'] == 2
    assert got['mailgate_ack_latency_seconds_bucket{le="+Inf"}'] == 2
    assert got["mailgate_ack_latency_seconds_sum"] == 7.3
    assert got["mailgate_ack_latency_seconds_count"] == 2
    assert got['mailgate_sla_escalations_total{department="it",kind="breach"}'] == 1
    assert got["mailgate_outbox_depth"] == 3
    for family in metrics.FAMILIES:  # every family is declared once, even when empty
        assert text.count(f"# TYPE {family} ") == 1
    assert metrics.Registry().exposition().count("mailgate_acks_sent_total 0") == 1


def test_metrics_config(tmp_path: Path) -> None:
    path = tmp_path / "mailgate.toml"
    base = '[outbox]\ndir = "out"\n'
    path.write_text(base)
    assert load_config(path).metrics is None
    path.write_text(base + '[metrics]\nlisten = "127.0.0.1:9464"\n')
    assert load_config(path).metrics == MetricsConfig("127.0.0.1", 9464)
    path.write_text(base + '[metrics]\nlisten = "9464"\nport = 1\n')
    with pytest.raises(ConfigError) as problem:
        load_config(path)
    assert any("metrics.listen: expected HOST:PORT" in p for p in problem.value.problems)
    assert any("metrics.port" in p for p in problem.value.problems)


def write_config(tmp_path: Path, sink: SmtpSink, imap_port: int) -> Path:
    return write_daemon_config(
        tmp_path / "mailgate.toml", sink=sink, templates=TEMPLATES, listen="127.0.0.1:0",
        metrics="127.0.0.1:0",
        mailboxes=[Mailbox("it", "127.0.0.1", "it", port=imap_port,
                           password_env="MAILGATE_METRICS_TEST")])


async def scrape(port: int, path: str = "/metrics") -> tuple[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return head, body


def push(port: int, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("ann@example.com", ["it-help@example.com"], raw)


async def until(port: int, check: Callable[[dict[str, float]], bool],
                timeout: float = 15.0) -> dict[str, float]:
    """Scrape until check(samples) holds; return the samples."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = samples((await scrape(port))[1])
        if check(got):
            return got
        assert asyncio.get_running_loop().time() < deadline, got
        await asyncio.sleep(0.1)


async def test_a_running_daemon_serves_its_metrics(tmp_path: Path, smtp_sink: SmtpSink,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILGATE_METRICS_TEST", "x")
    setup = load_setup(write_config(tmp_path, smtp_sink, free_port()))  # nobody listens
    clock = FakeClock(datetime(2026, 11, 24, 9, 0, tzinfo=UTC))  # 10:00 Berlin
    daemon = Daemon(setup.config, setup.directory, clock=clock)
    await daemon.start()
    try:
        assert daemon.metrics_port and daemon.listen_port
        port = daemon.metrics_port
        head, body = await scrape(daemon.metrics_port)
        assert head.startswith("HTTP/1.1 200") and "version=0.0.4" in head
        assert "# TYPE mailgate_messages_total counter" in body
        assert (await scrape(daemon.metrics_port, "/"))[0].startswith("HTTP/1.1 404")

        request = mail("VPN down", message_id="<vpn@example.com>")
        await asyncio.to_thread(push, daemon.listen_port, request)
        await asyncio.to_thread(push, daemon.listen_port, request)  # the same mail again
        await smtp_sink.wait_for(count=1)
        got = await until(port, lambda s: s.get("mailgate_acks_sent_total") == 1
                          and s.get("mailgate_outbox_depth") == 0)  # team copies sent too
        assert got['mailgate_messages_total{mailbox="smtp",outcome="ticket"}'] == 1
        assert got['mailgate_messages_total{mailbox="smtp",outcome="duplicate"}'] == 1
        assert got['mailgate_mail_sent_total{kind="ack"}'] == 1
        assert got["mailgate_ack_latency_seconds_count"] == 1
        assert got['mailgate_ack_latency_seconds_bucket{le="0.1"}'] == 1  # injected clock
        assert got["mailgate_outbox_depth"] == 0
        assert got["mailgate_quarantine_held"] == 0
        assert got['mailgate_tickets{department="it",state="open"}'] == 1
        assert got['mailgate_tickets{department="it",state="breached"}'] == 0
        await until(port, lambda s: s.get('mailgate_imap_reconnects_total{mailbox="it"}', 0) >= 1)

        assert daemon.escalator is not None
        clock.now = datetime(2026, 11, 24, 13, 5, tzinfo=UTC)  # 14:05 Berlin: past 75 %
        daemon.escalator.notify()
        got = await until(port, lambda s: s.get(
            'mailgate_sla_escalations_total{department="it",kind="warning"}') == 1)
        assert got['mailgate_tickets{department="it",state="at_risk"}'] == 1
        warned = 'mailgate_mail_sent_total{kind="escalation-warning"}'
        await until(port, lambda s: s.get(warned) == 2)  # a copy each for alice and bob
        assert "metrics on port" in await daemon.status_line()
    finally:
        await daemon.stop()
    assert type(metrics.METRICS) is metrics.Metrics  # off again once the daemon stopped
    with pytest.raises(OSError):
        await scrape(port)
