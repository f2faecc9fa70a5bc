"""Prometheus metrics: counters the daemon bumps, gauges read at scrape time, and a tiny
HTTP endpoint (`[metrics] listen`) on the event loop.

The text exposition format (version 0.0.4) is written here directly instead of using
prometheus-client: it is a few dozen lines, needs no dependency, and the endpoint runs on
the daemon's own event loop rather than in the library's server thread, so a scrape sees
the same state the loop does and a stuck loop shows up as a failing scrape.

Hooks call `metrics.METRICS.<method>(...)`. METRICS is a no-op until the daemon installs a
Registry (only when [metrics] is configured), so intake, outbox and escalation code pay
one attribute lookup and an empty call when metrics are off.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from mailgate.core.model import OutgoingKind
from mailgate.service.log import get_logger

log = get_logger("mailgate.service.metrics")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds from a request's arrival to the server accepting its acknowledgement.
ACK_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)

Labels = tuple[tuple[str, str], ...]


class Metrics:
    """The hooks; this base class does nothing (metrics off)."""

    def message_in(self, mailbox: str, outcome: str) -> None:
        """A message committed by intake: mailbox name (or "smtp") and pipeline outcome."""

    def mail_sent(self, kind: str, latency: float) -> None:
        """The SMTP server accepted an outgoing mail, `latency` s after it was queued."""

    def escalation(self, department: str, kind: str) -> None:
        """An SLA level fired: warning, breach or re_escalation."""

    def imap_reconnect(self, mailbox: str) -> None:
        """A mailbox connection failed and will be retried."""

    def mailbox_state(self, mailbox: str, state: str) -> None:
        """A mailbox's watcher changed state (idle, polling, reconnecting, error)."""

    def forget_mailbox(self, mailbox: str) -> None:
        """The mailbox left the configuration (reload)."""


METRICS: Metrics = Metrics()


def install(registry: Metrics) -> None:
    global METRICS
    METRICS = registry


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1


# name -> (type, help)
FAMILIES = {
    "mailgate_messages_total": ("counter", "Messages committed by intake, by mailbox (smtp "
                                "for push) and outcome (ticket, reply, duplicate, quarantined)."),
    "mailgate_mail_sent_total": ("counter", "Outgoing mail accepted by the SMTP server, by "
                                 "kind (ack, escalation-warning, ...)."),
    "mailgate_acks_sent_total": ("counter", "Acknowledgements accepted by the SMTP server."),
    "mailgate_ack_latency_seconds": ("histogram", "Time from a request's arrival to the SMTP "
                                     "server accepting its acknowledgement."),
    "mailgate_sla_escalations_total": ("counter", "SLA levels fired, by department and kind "
                                       "(warning, breach, re_escalation)."),
    "mailgate_imap_reconnects_total": ("counter", "Failed IMAP connections (retried), by "
                                       "mailbox."),
    "mailgate_outbox_depth": ("gauge", "Mail queued and not yet accepted by the server."),
    "mailgate_quarantine_held": ("gauge", "Messages held in the quarantine."),
    "mailgate_tickets": ("gauge", "Open tickets by department and SLA state (open counts "
                         "all of them; at_risk and breached as in `mailgate status`)."),
    "mailgate_mailbox_state": ("gauge", "1 for each mailbox's current state (starting, idle, "
                               "polling, reconnecting, error), 0 for the others."),
}
MAILBOX_STATES = ("starting", "idle", "polling", "reconnecting", "error")


class Registry(Metrics):
    def __init__(self) -> None:
        self.counters: dict[tuple[str, Labels], float] = {}
        self.ack_latency = Histogram(ACK_LATENCY_BUCKETS)
        self.mailbox_states: dict[str, str] = {}

    def inc(self, name: str, labels: Labels = (), by: float = 1.0) -> None:
        key = (name, labels)
        self.counters[key] = self.counters.get(key, 0.0) + by

    def message_in(self, mailbox: str, outcome: str) -> None:
        self.inc("mailgate_messages_total", (("mailbox", mailbox), ("outcome", outcome)))

    def mail_sent(self, kind: str, latency: float) -> None:
        self.inc("mailgate_mail_sent_total", (("kind", kind),))
        if kind == OutgoingKind.ACK:
            self.inc("mailgate_acks_sent_total")
            self.ack_latency.observe(max(0.0, latency))

    def escalation(self, department: str, kind: str) -> None:
        self.inc("mailgate_sla_escalations_total", (("department", department),
                                                    ("kind", kind)))

    def imap_reconnect(self, mailbox: str) -> None:
        self.inc("mailgate_imap_reconnects_total", (("mailbox", mailbox),))

    def mailbox_state(self, mailbox: str, state: str) -> None:
        self.mailbox_states[mailbox] = state

    def forget_mailbox(self, mailbox: str) -> None:
        self.mailbox_states.pop(mailbox, None)

    def exposition(self, gauges: Iterable[tuple[str, Labels, float]] = ()) -> str:
        """The text format: counters, the histogram, then gauges read at scrape time."""
        samples: dict[str, list[str]] = {name: [] for name in FAMILIES}
        for (name, labels), value in sorted(self.counters.items()):
            if labels:
                samples[name].append(f"{name}{_labels(labels)} {_number(value)}")
        acks = self.counters.get(("mailgate_acks_sent_total", ()), 0.0)
        samples["mailgate_acks_sent_total"] = [f"mailgate_acks_sent_total {_number(acks)}"]
        samples["mailgate_ack_latency_seconds"] = self._histogram()
        for name, labels, value in gauges:
            samples[name].append(f"{name}{_labels(labels)} {_number(value)}")
        for mailbox, current in sorted(self.mailbox_states.items()):
            for state in MAILBOX_STATES:
                labels = (("mailbox", mailbox), ("state", state))
                samples["mailgate_mailbox_state"].append(
                    f"mailgate_mailbox_state{_labels(labels)} {int(state == current)}")
        lines = []
        for name, (kind, text) in FAMILIES.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", *samples[name]]
        return "\n".join(lines) + "\n"

    def _histogram(self) -> list[str]:
        name, h = "mailgate_ack_latency_seconds", self.ack_latency
        lines, running = [], 0
        for bound, count in zip(h.buckets, h.counts, strict=True):
            running += count
            lines.append(f'{name}_bucket{{le="{_number(bound)}"}} {running}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {h.count}')
        lines += [f"{name}_sum {_number(h.total)}", f"{name}_count {h.count}"]
        return lines


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# --- the endpoint -------------------------------------------------------------------------

Gauges = Callable[[], Awaitable[list[tuple[str, Labels, float]]]]
READ_TIMEOUT = 5.0


async def serve(host: str, port: int, registry: Registry, gauges: Gauges) -> asyncio.Server:
    """GET /metrics answers the exposition; anything else 404. One request per connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            method, _, rest = request.decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            if method in ("GET", "HEAD") and path == "/metrics":
                try:
                    extra = await gauges()
                except Exception as exc:  # the database is busy or full: counters still go
                    log.warning("metrics.gauges_failed", error=f"{type(exc).__name__}: {exc}")
                    extra = []
                body = registry.exposition(extra).encode()
                status = "200 OK"
                ctype = CONTENT_TYPE
            else:
                body, status, ctype = b"see /metrics\n", "404 Not Found", "text/plain"
            head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
            writer.write(head + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, host, port, limit=16 * 1024)
    log.info("metrics.listening", host=host, port=server.sockets[0].getsockname()[1])
    return server
