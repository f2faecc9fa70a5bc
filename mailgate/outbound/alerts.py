"""Mail an admin when a mailbox cannot be read: once, then at most daily while it fails.

Helpdesk trackers are full of channels that stopped silently -- an expired OAuth2 grant,
a changed password -- until users complained. With `[alerts] admin = "ops@example.com"` a
failing mailbox queues one mail in the outbox (so it is retried like any other) that says
what is wrong in words and what to run; while it keeps failing, one more per `repeat`
(1d); when it works again, one "works again" mail. Problems that need someone (a refused
login or certificate, an OAuth2 failure, a missing folder) alert at once; network trouble
only after it lasted `after` (15m), since servers restart.

When to mail is decided by pure functions over a small record per mailbox; the records
live in `<state>/alerts.json`, so a restart neither forgets an alert nor repeats it.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from mailgate.config.settings import AlertsConfig
from mailgate.connect.diagnose import Diagnosis
from mailgate.core.model import OutgoingKind
from mailgate.core.render import Rendered
from mailgate.outbound import kinds
from mailgate.service.log import get_logger
from mailgate.storage.store import Store

if TYPE_CHECKING:
    from mailgate.service.current import Current, Snapshot

log = get_logger("mailgate.outbound.alerts")
FILENAME = "alerts.json"


@dataclass(frozen=True)
class Failing:
    """A mailbox's failure episode: since when, and when the admin last heard of it."""

    since: float  # Unix seconds
    error: str
    alerted_at: float | None = None


def on_failure(record: Failing | None, found: Diagnosis, now: float,
               policy: AlertsConfig) -> tuple[Failing, bool]:
    """The new record, and whether to mail now (pure)."""
    current = Failing(now, found.text) if record is None else replace(record,
                                                                       error=found.text)
    if current.alerted_at is not None:
        due = now - current.alerted_at >= policy.repeat.total_seconds()
    else:
        due = found.needs_admin or now - current.since >= policy.after.total_seconds()
    return (replace(current, alerted_at=now) if due else current), due


def on_recovery(record: Failing | None) -> bool:
    """Whether to mail "works again": only if the admin heard it was broken."""
    return record is not None and record.alerted_at is not None


def failure_text(mailbox: str, where: str, record: Failing, repeat: timedelta) -> str:
    since = datetime.fromtimestamp(record.since, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"mailgate cannot read the mailbox {mailbox!r} ({where}) since {since}:\n\n"
            f"  {record.error}\n\n"
            f"mailgate keeps trying; the other mailboxes are not affected. Until this is "
            f"fixed, mail sent to this mailbox waits there and gets no ticket.\n\n"
            f"To see every connection in words:  mailgate check --connect\n"
            f"To see the mailbox states:          mailgate status\n\n"
            f"You get this mail again every {_words(repeat)} while the mailbox fails, and "
            f"once more when it works again.\n")


def recovery_text(mailbox: str, where: str, record: Failing, now: float) -> str:
    since = datetime.fromtimestamp(record.since, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"The mailbox {mailbox!r} ({where}) works again; it failed from {since} with:\n\n"
            f"  {record.error}\n\nMail that arrived meanwhile is being read now.\n")


def _words(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return "day" if hours == 24 else f"{hours:g} hours"


class Alerter:
    """Queues alert mail for the watchers; one per daemon, records kept across reloads."""

    def __init__(self, store: Store, state_dir: Path, current: Current,
                 notify: Callable[[], None],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.path = state_dir / FILENAME
        self.current = current  # [alerts] and the sender, read at each failure: reloadable
        self.notify = notify
        self.clock = clock
        self.records: dict[str, Failing] = _load(self.path)
        self._lock = asyncio.Lock()

    async def failing(self, mailbox: str, where: str, found: Diagnosis) -> None:
        snapshot = self.current.snapshot
        policy = snapshot.config.alerts
        async with self._lock:
            now = self.clock().timestamp()
            if policy is None:
                self.records[mailbox] = self.records.get(mailbox) or Failing(now, found.text)
                return
            record, due = on_failure(self.records.get(mailbox), found, now, policy)
            self.records[mailbox] = record
            if due:
                await self._queue(snapshot, mailbox, policy, "failing",
                                  failure_text(mailbox, where, record, policy.repeat))
                log.warning("alert.queued", mailbox=mailbox, to=policy.admin, error=found.text)
            await asyncio.to_thread(_save, self.path, self.records)

    async def recovered(self, mailbox: str, where: str) -> None:
        async with self._lock:
            record = self.records.pop(mailbox, None)
            if record is None:
                return
            snapshot = self.current.snapshot
            policy = snapshot.config.alerts
            if policy is not None and on_recovery(record):
                await self._queue(snapshot, mailbox, policy, "recovered",
                                  recovery_text(mailbox, where, record,
                                                self.clock().timestamp()))
                log.info("alert.recovered", mailbox=mailbox, to=policy.admin)
            await asyncio.to_thread(_save, self.path, self.records)

    async def _queue(self, snapshot: Snapshot, mailbox: str, policy: AlertsConfig, state: str,
                     text: str) -> None:
        """Queue the alert mail; `state` is the kind's subject ("failing", "recovered")."""
        sender = policy.sender or department_address(snapshot, mailbox) or policy.admin
        now = self.clock()
        mail = kinds.Mail(kind=OutgoingKind.ALERT, from_name="mailgate", from_addr=sender,
                          to=(policy.admin,), body=Rendered(text, None), variant=state,
                          fields={"mailbox": mailbox, "millis": int(now.timestamp() * 1000)})
        [out] = kinds.build(mail, None, kinds.Sending(snapshot.config.instance), now)
        async with self.store.transaction() as tx:
            await tx.enqueue(out, now)
        self.notify()


def department_address(snapshot: Snapshot, mailbox: str) -> str | None:
    """The address alerts about a mailbox come from: its department's."""
    box = next((b for b in snapshot.config.mailboxes if b.name == mailbox), None)
    dept = snapshot.directory.departments.get(box.department) if box else None
    return dept.address if dept else None


def _load(path: Path) -> dict[str, Failing]:
    try:
        data = json.loads(path.read_text())
        return {name: Failing(**value) for name, value in data.items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError) as exc:  # a damaged file: start afresh, say so
        log.warning("alert.state_unreadable", path=str(path), error=str(exc))
        return {}


def _save(path: Path, records: dict[str, Failing]) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({name: asdict(r) for name, r in records.items()}, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
