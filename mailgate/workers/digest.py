"""The weekly digest: each department head gets the department's report by mail.

`[digest] weekly = "mon 08:00"` in mailgate.toml: at that local time in each department's
calendar zone, the report for the 7 days before it is queued in the outbox, from the
department address to its head. Exactly once per department and week: the digest's
Message-ID is derived from both, and it is queued only if the outbox holds no mail with
that Message-ID (outbox.message_id is unique), so restarts and reloads never repeat it. A
digest missed by more than a day (mailgate was down) is skipped, not sent late.

`[digest] organisation = "ops@example.com"` adds one organisation-wide digest a week to
that address: the report for all departments plus the dependency view (which departments
send requests to which, and how fast each answers; mailgate/dependencies.py). It follows
the same schedule in the calendar zone of the default department (else the first one),
comes from that department's address, and is queued exactly once per week the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from mailgate.config.directory import Department, Directory
from mailgate.config.settings import DigestConfig
from mailgate.core.model import Outgoing, OutgoingKind
from mailgate.core.render import Rendered
from mailgate.outbound import kinds
from mailgate.service.log import get_logger
from mailgate.storage import outbox
from mailgate.storage.store import Store
from mailgate.workers.periodic import every, repeat

if TYPE_CHECKING:
    from mailgate.service.current import Current, Snapshot

log = get_logger("mailgate.workers.digest")
PERIOD = timedelta(days=7)
LATE_LIMIT = timedelta(days=1)  # a slot missed by more than this is skipped
CHECK_EVERY = 60.0  # seconds

Clock = Callable[[], datetime]


def last_slot(config: DigestConfig, zone: ZoneInfo, now: datetime) -> datetime:
    """The latest scheduled instant at or before now, in the zone's wall-clock time."""
    local = now.astimezone(zone)
    day = local.date() - timedelta(days=(local.weekday() - config.weekday) % 7)
    slot = datetime.combine(day, config.at, tzinfo=zone)
    if slot > now:
        slot = datetime.combine(day - timedelta(days=7), config.at, tzinfo=zone)
    return slot


def department_digest(dept: Department, slot: datetime) -> kinds.Mail:
    """The department's digest for the week ending at `slot`, all but its body."""
    assert dept.head is not None
    return kinds.Mail(kind=OutgoingKind.DIGEST, from_name=dept.name, from_addr=dept.address,
                      to=(dept.head,), variant="department",
                      fields={"scope": dept.key, "name": dept.name, "since": slot - PERIOD,
                              "until": slot})


def organisation_digest(sender: Department, to: str, slot: datetime) -> kinds.Mail:
    """The organisation's digest for the week ending at `slot`, all but its body."""
    return kinds.Mail(kind=OutgoingKind.DIGEST, from_name="mailgate", from_addr=sender.address,
                      to=(to,), variant="organisation",
                      fields={"scope": "organisation", "since": slot - PERIOD, "until": slot})


def organisation_sender(directory: Directory) -> Department | None:
    """The department the organisation digest comes from (and whose zone schedules it)."""
    key = directory.default_department
    if key and key in directory.departments:
        return directory.departments[key]
    return next(iter(directory.departments.values()), None)


class Digester:
    def __init__(self, store: Store, current: Current, clock: Clock,
                 sent: Callable[[], None]) -> None:
        self.store = store
        self.current = current  # read once per round: a reload may switch it on or off
        self.clock = clock
        self.sent = sent

    async def run(self) -> None:
        await repeat("digest", self.run_once, asyncio.Event(), every(CHECK_EVERY))

    async def run_once(self) -> list[str]:
        """Queue every digest that is due and not queued yet; return their Message-IDs."""
        snapshot, now = self.current.snapshot, self.clock()
        config, directory = snapshot.config.digest, snapshot.directory
        if config is None:
            return []
        queued = []
        for dept in directory.departments.values():
            if not dept.head:
                continue
            zone = directory.calendar_for(dept).zone
            slot = last_slot(config, zone, now)
            if now - slot > LATE_LIMIT:
                continue
            mail = department_digest(dept, slot)
            message_id = kinds.message_id_of(mail)
            if await self._queue_once(message_id, self._mail, (snapshot, dept, slot, mail), now,
                                      department=dept.key, to=dept.head,
                                      period_end=slot.isoformat()):
                queued.append(message_id)
        if config.organisation:
            message_id = await self._organisation(config, config.organisation, snapshot, now)
            if message_id:
                queued.append(message_id)
        if queued:
            self.sent()
        return queued

    async def _organisation(self, config: DigestConfig, to: str, snapshot: Snapshot,
                            now: datetime) -> str | None:
        directory = snapshot.directory
        sender = organisation_sender(directory)
        if sender is None:
            return None
        slot = last_slot(config, directory.calendar_for(sender).zone, now)
        if now - slot > LATE_LIMIT:
            return None
        mail = organisation_digest(sender, to, slot)
        message_id = kinds.message_id_of(mail)
        queued = await self._queue_once(
            message_id, self._organisation_mail, (snapshot, slot, mail), now,
            department="organisation", to=to, period_end=slot.isoformat())
        return message_id if queued else None

    async def _organisation_mail(self, snapshot: Snapshot, slot: datetime,
                                 mail: kinds.Mail) -> Outgoing:
        from mailgate.core import dependencies
        from mailgate.core.report import as_html, as_text
        from mailgate.storage.reports import department_report, dependency_view

        since, directory = slot - PERIOD, snapshot.directory
        report = await department_report(self.store, directory, since, slot)
        view = await dependency_view(self.store, directory, since, slot)
        text = as_text(report) + "\n" + dependencies.as_text(view)
        html = as_html(report, dependencies.as_html_section(view))
        return self._built(snapshot, replace(mail, body=Rendered(text, html)))

    def _built(self, snapshot: Snapshot, mail: kinds.Mail) -> Outgoing:
        sending = kinds.Sending(snapshot.config.instance)
        [out] = kinds.build(mail, None, sending, self.clock())
        return out

    async def _queue_once(self, message_id: str, build: Callable[..., Awaitable[Outgoing]],
                          args: tuple, now: datetime, **about: object) -> bool:
        """Build and queue the digest with this Message-ID unless it is queued already
        (checked before building, which reads the period's figures, and again in the
        transaction); True when this call queued it."""
        if await outbox.committed_row(self.store, message_id) is not None:
            return False
        mail = await build(*args)
        async with self.store.transaction() as tx:
            if await outbox.holds(tx, message_id):
                return False
            await tx.enqueue(mail, now)
        log.info("digest.queued", **about)
        return True

    async def _mail(self, snapshot: Snapshot, dept: Department, slot: datetime,
                    mail: kinds.Mail) -> Outgoing:
        from mailgate.core.report import as_html, as_text
        from mailgate.storage.reports import department_report

        report = await department_report(self.store, snapshot.directory, slot - PERIOD,
                                         slot, [dept.key])
        return self._built(snapshot, replace(mail, body=Rendered(as_text(report), as_html(report))))

