"""One message: parse -> classify -> dedupe -> thread -> route -> apply, in one savepoint.

The caller owns the transaction (a batch of messages plus the mailbox position, or one
pushed message); `handle` decides in one place what a failure means: a storage error
propagates so the whole batch is retried, anything else quarantines the raw bytes with
its reason and the batch goes on.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from mailgate.config.directory import Directory
from mailgate.config.settings import Config
from mailgate.core.addresses import canonical, domain_of
from mailgate.core.classify import LoopContext, Verdict, classify
from mailgate.core.exposure import exposed_keys, others
from mailgate.core.mime.files import Part, extract, select
from mailgate.core.mime.largemail import LARGE, Light, decoded_chunks, lighten
from mailgate.core.mime.parse import fingerprint, parse
from mailgate.core.model import Inbound, MailKind, Origin, Outgoing
from mailgate.core.render import Renderer
from mailgate.core.replykey import VERSIONS, Key, KeyRing, valid_keys
from mailgate.core.routing import Route, routes_for, searches_of
from mailgate.core.rulesearch import Searched
from mailgate.core.trust import Trust, TrustPolicy, dmarc_failed, mail_trust
from mailgate.errors import BadMessage
from mailgate.intake.read import Asked, Read
from mailgate.outbound.compose import RelayParts
from mailgate.outbound.kinds import Sending
from mailgate.outbound.queued import QueuedMail, parts_to_relay
from mailgate.service.log import get_logger
from mailgate.storage import errors as store_errors
from mailgate.storage import gather
from mailgate.storage.apply import Arrival, MailWriter, apply
from mailgate.storage.attachments import Attachments, AttachmentStore
from mailgate.storage.packing import pack
from mailgate.storage.slaclock import SlaBook
from mailgate.storage.store import Tx
from mailgate.tickets.budget import MailBudget
from mailgate.tickets.conversation import thread_hints
from mailgate.tickets.effects import (
    AddAttachments,
    AddEvent,
    AddReceipts,
    Drawn,
    Effect,
    ExposeKeys,
    Facts,
    HoldNotification,
    Log,
    QueueMail,
    StoredFile,
    StoreMessage,
    Usage,
)
from mailgate.tickets.new_request import (
    NewRequestPolicy,
    Request,
    acknowledged,
    is_stale,
    open_request,
    size_in_words,
    team_budget,
)
from mailgate.tickets.reply import (
    Conversation,
    ConversationSettings,
    Incoming,
    budget_recipients,
    needs_texts,
)
from mailgate.tickets.state import TicketState

log = get_logger("mailgate.intake.pipeline")
Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class Outcome:
    action: str  # ticket | reply | duplicate | quarantined | ignored
    tickets: tuple[str, ...] = ()
    reason: str = ""
    acknowledged: bool = False
    quarantine: int | None = None  # the quarantine entry, when action is "quarantined"


@dataclass(frozen=True, slots=True)
class Received:
    """The raw mail, and for a large one its light view (largemail.py): everything that
    reads the whole message reads `readable`, and a big attachment is decoded straight
    from the raw bytes into the store, a piece at a time, off the event loop."""

    raw: bytes
    light: Light | None = None
    packed: bytes | None = None  # the raw bytes as the database keeps them, when known
    parts: tuple[Part, ...] | None = None  # its attachments, when read already
    relay: RelayParts | None = None  # its attachments to relay, when read already
    stored: tuple[str | None, ...] = ()  # each part's digest, when stored already ...
    stored_in: str | None = None  # ... in this attachment directory (intake/read.py)

    @classmethod
    async def of(cls, raw: bytes) -> Received:
        if len(raw) <= LARGE:
            return cls(raw)
        light, packed = await asyncio.gather(asyncio.to_thread(lighten, raw),
                                             asyncio.to_thread(pack, raw))
        return cls(raw, light, packed)

    @property
    def readable(self) -> bytes:
        return self.light.slim if self.light else self.raw

    def light_fixed(self, msg: Inbound) -> Inbound:
        """What parse read from the light view, with the real size of the message and of
        each lightened attachment (parse saw its stand-in)."""
        assert self.light is not None
        sizes = iter(self.light.sizes())
        stand_in = self.light.stand_in_size
        files = tuple(replace(a, size=next(sizes, a.size)) if a.size == stand_in else a
                      for a in msg.attachments)
        return replace(msg, size=len(self.raw), attachments=files)

    async def attachments(self) -> list[Part]:
        if self.parts is not None:
            return list(self.parts)
        if self.light is None:
            if len(self.raw) > PARSE_INLINE_UP_TO:  # read again: as slow as parse
                return await asyncio.to_thread(extract, self.raw)
            return extract(self.raw)
        parts = await asyncio.to_thread(extract, self.light.slim)
        return [self._real(part) for part in parts]

    def _stored_ahead(self, store: Attachments, part: Part) -> str | None:
        """The digest the reading process stored this very part under, in this store."""
        if not (self.stored and isinstance(store, AttachmentStore)
                and self.stored_in == str(store.root)):
            return None
        for candidate, digest in zip(self.parts or (), self.stored, strict=False):
            if candidate is part:
                return digest
        return None

    def _real(self, part: Part) -> Part:
        assert self.light is not None
        span = self.light.real(part.data)
        return part if span is None else replace(part, size=span.size)

    async def keep(self, store: Attachments, part: Part) -> str:
        ahead = self._stored_ahead(store, part)
        if ahead is not None:
            return ahead  # written and fsynced by the reading process, like put() would
        span = self.light.real(part.data) if self.light else None
        if span is None:
            return await asyncio.to_thread(store.put, part.data)
        digest, _ = await asyncio.to_thread(store.put_chunks, decoded_chunks(self.raw, span))
        return digest


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    instance: str = "mailgate"
    auto_mail_per_recipient_per_hour: int = 10
    max_body_chars: int = 200_000
    trust: TrustPolicy = field(default_factory=TrustPolicy)
    reopen_window: timedelta = timedelta(days=7)
    max_relay_bytes: int = 10 * 1024 * 1024
    notify_team: bool = True
    keep_cc_informed: bool = True
    max_attachment_bytes: int = 25 * 1024 * 1024
    keys: KeyRing = field(default_factory=KeyRing)
    from_header_is_proof: bool = False
    comments_from: str = "ticket"
    auto_mail_per_domain_per_hour: int = 100
    team_notices_per_sender_per_hour: int = 5
    bulk_mail: str = "ticket"  # ticket | ignore: list and bulk mail matching no ticket
    # The [[mailbox]] usernames that are addresses: mailgate's own, like the departments'
    # (a mail to them and to nobody else exposes no reply key, see core/exposure.py).
    own_mailboxes: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, config: Config, keys: KeyRing | None = None) -> PipelineSettings:
        """`keys`: the reply-key ring from the state directory (keyfile.load); without
        one, no mail carries a key and only Authentication-Results can prove a sender."""
        limits, security = config.limits, config.security
        return cls(instance=config.instance,
                   auto_mail_per_recipient_per_hour=limits.auto_mail_per_recipient_per_hour,
                   max_body_chars=config.limits.max_body_chars,
                   trust=TrustPolicy(config.security.trusted_domains,
                                     config.security.authserv_id,
                                     config.security.authserv_position),
                   reopen_window=config.conversation.reopen_window,
                   max_relay_bytes=config.conversation.max_relay_bytes,
                   notify_team=config.conversation.notify_team,
                   keep_cc_informed=config.conversation.keep_cc_informed,
                   max_attachment_bytes=config.limits.max_attachment_bytes,
                   keys=keys or KeyRing(),
                   from_header_is_proof=security.from_header_is_proof,
                   comments_from=config.conversation.comments_from,
                   auto_mail_per_domain_per_hour=limits.auto_mail_per_domain_per_hour,
                   team_notices_per_sender_per_hour=limits.team_notifications_per_sender_per_hour,
                   bulk_mail=config.conversation.bulk_mail,
                   own_mailboxes=frozenset(canonical(m.username) for m in config.mailboxes
                                           if "@" in m.username))

    def budget(self, own_domains: frozenset[str]) -> MailBudget:
        """The automatic-mail budget; the organisation's domains (trusted_domains and the
        departments' own) have no domain-wide limit, only the per-mailbox one."""
        return MailBudget(self.auto_mail_per_recipient_per_hour,
                          self.auto_mail_per_domain_per_hour,
                          own_domains | self.trust.trusted_domains)

    def conversation(self, budget: MailBudget) -> ConversationSettings:
        return ConversationSettings(
            instance=self.instance, reopen_window=self.reopen_window,
            max_relay_bytes=self.max_relay_bytes, notify_team=self.notify_team,
            keep_cc_informed=self.keep_cc_informed, keys=self.keys, budget=budget,
            from_header_is_proof=self.from_header_is_proof,
            team_notices_per_sender_per_hour=self.team_notices_per_sender_per_hour,
            comments_from=self.comments_from, organisation=self.trust.trusted_domains)


class Pipeline:
    def __init__(self, directory: Directory, renderer: Renderer, settings: PipelineSettings,
                 clock: Clock) -> None:
        self.directory = directory
        self.renderer = renderer
        self.settings = settings
        self.clock = clock
        self.loop_context = LoopContext(directory.own_addresses(), settings.instance)
        self.prefixes = frozenset(d.prefix for d in directory.departments.values())
        # What a reading process does ahead for this pipeline (intake/read.py).
        self.reading = Asked(settings.max_body_chars, settings.max_relay_bytes,
                             searches_of(directory), settings.max_attachment_bytes)
        self.sla = SlaBook(directory)
        self.budget = settings.budget(frozenset(
            domain_of(d.address) for d in directory.departments.values()))
        self.conversation = Conversation(directory, self.sla,
                                         settings.conversation(self.budget))
        self.new_requests = NewRequestPolicy(
            directory, self.sla, self.budget, settings.notify_team,
            settings.team_notices_per_sender_per_hour, settings.max_attachment_bytes)
        self.mailer = QueuedMail(directory, renderer,
                                 Sending(settings.instance, settings.keys, self.budget))

    async def handle(self, tx: Tx, raw: bytes, origin: Origin,
                     read: Read | None = None) -> Outcome:
        """`read`: the mail as a reading process read it (intake/reading.py), if it did."""
        now = self.clock()
        searched: Searched = {}
        if read is not None and read.gave_up and read.asked == self.reading:
            return await self._quarantine(tx, raw, None, origin, read.gave_up, now)
        if read is not None and read.msg is not None and read.asked == self.reading:
            mail = Received(raw, packed=read.packed, parts=read.parts, relay=read.relay,
                            stored=read.stored, stored_in=read.stored_in)
            msg, searched = read.msg, read.searched
        else:
            mail = await Received.of(raw)
            msg = await _safe_parse(mail.readable, self.settings.max_body_chars)
            if msg is not None and mail.light is not None:
                msg = mail.light_fixed(msg)
        try:
            async with tx.savepoint():
                return await self._process(tx, mail, msg, origin, now, searched)
        except store_errors.TEMPORARY:
            raise  # disk full, locked, I/O error: the caller retries the whole batch
        except BadMessage as exc:
            reason = str(exc)
        except Exception as exc:
            log.exception("message.failed", source=origin.source, message_id=_mid(msg))
            reason = f"internal error: {type(exc).__name__}: {exc}"
        return await self._quarantine(tx, raw, msg, origin, reason, now)

    async def _quarantine(self, tx: Tx, raw: bytes, msg: Inbound | None, origin: Origin,
                          reason: str, now: datetime) -> Outcome:
        entry = await tx.quarantine(raw, origin, reason, msg, now)
        log.warning("message.quarantined", source=origin.source, quarantine=entry,
                    message_id=_mid(msg), reason=reason)
        return Outcome("quarantined", reason=reason, quarantine=entry)

    async def _process(self, tx: Tx, mail: Received, msg: Inbound | None, origin: Origin,
                       now: datetime, searched: Searched) -> Outcome:
        """`searched`: the routing rules' searches done ahead (routing.py)."""
        if msg is None:
            raise BadMessage("the parser could not read this message")
        routes = {r.department: r
                  for r in routes_for(msg, origin, self.directory, searched)}
        if not routes:
            raise BadMessage("addressed to no known department and no default_department set")
        targets = list(routes)
        msg, arrival, facts = await self._read(tx, mail, msg, origin, targets, now)
        pending = [d for d in targets if d not in facts.received_by]
        if not pending:
            # A re-delivery (a copy through a second mailbox, an MTA retrying after a lost
            # 250, a re-read after a crash): nothing to do, but it leaves a trace.
            times = await tx.record_redelivery(facts.message, now) if facts.message else 0
            log.info("message.duplicate", message_id=msg.message_id, source=origin.source,
                     departments=targets, deliveries=times)
            return Outcome("duplicate", reason="already received for " + ", ".join(targets))
        verdict = classify(msg, replace(self.loop_context,
                                        envelope_sender=origin.envelope_sender))
        facts = replace(facts, threaded=await self._thread(tx, msg, verdict))
        existing = list(facts.threaded)
        if existing and facts.message is not None:
            return await self._worked_already(tx, mail, arrival, existing, pending, now)
        request = Request(msg, verdict, tuple(pending), routes, tuple(pending),
                          mail_trust(msg, self.settings.trust))
        if existing and verdict.kind is MailKind.REQUEST:
            stale = [t for t in existing if is_stale(t, msg, self.directory,
                                                      self.settings.reopen_window, now)]
            if stale and len(stale) == len(existing):
                # Too long after the resolution: a new ticket that links the old one, for
                # the old tickets' departments; the message counts as received for every
                # pending one, so its copies through other mailboxes are duplicates.
                follow = {t.department: Route(t.department, t.priority, "follow-up")
                          for t in stale if t.department in self.directory.departments
                          and t.department in pending}
                if follow:
                    return await self._open(tx, mail, arrival, replace(
                        request, departments=tuple(follow), routes=follow,
                        follows=tuple(stale)), facts, now)
        if existing:
            return await self._append(tx, mail, arrival, verdict, request.trust, facts,
                                      pending, now)
        if verdict.kind not in (MailKind.REQUEST, MailKind.BULK):
            return await self._quarantine(
                tx, mail.raw, msg, origin, f"{verdict.kind.value} matching no ticket: "
                f"{verdict.reason}", now)
        if verdict.kind is MailKind.BULK and self.settings.bulk_mail == "ignore":
            return await self._ignore(tx, mail, arrival, verdict, pending, now)
        if msg.sender is None:
            raise BadMessage("no usable From address")
        return await self._open(tx, mail, arrival, request, facts, now)

    async def _worked_already(self, tx: Tx, mail: Received, arrival: Arrival,
                              tickets: list[TicketState], pending: list[str],
                              now: datetime) -> Outcome:
        """This very mail (same key, same content) is stored already and threads into
        tickets: it was worked on them when it came through another department's mailbox
        (a Bcc, or a copy someone sent there again). The new departments receive it; its
        answers and commands are not carried out a second time."""
        await apply(tx, [AddReceipts(tuple(pending), "duplicate")], arrival,
                    self._mail_writer(mail, arrival.msg, now), now)
        assert arrival.stored is not None
        times = await tx.record_redelivery(arrival.stored, now)
        refs = tuple(t.ref for t in tickets)
        log.info("message.duplicate", message_id=arrival.msg.message_id,
                 source=arrival.source, departments=pending, tickets=refs, deliveries=times)
        return Outcome("duplicate", refs, reason="already worked on " + ", ".join(refs))

    async def _ignore(self, tx: Tx, mail: Received, arrival: Arrival, verdict: Verdict,
                      pending: list[str], now: datetime) -> Outcome:
        """List and bulk mail with [conversation] bulk_mail = "ignore": kept (so a copy is
        a duplicate and the raw mail is there to look at), but no ticket and no mail."""
        effects: list[Effect] = [StoreMessage(verdict.kind),
                                 AddReceipts(tuple(pending), "ignored")]
        await apply(tx, effects, arrival, self._mail_writer(mail, arrival.msg, now), now)
        log.info("message.ignored", message_id=arrival.msg.message_id, source=arrival.source,
                 reason=verdict.reason)
        return Outcome("ignored", reason=f"bulk: {verdict.reason}")

    async def _read(self, tx: Tx, mail: Received, msg: Inbound, origin: Origin,
                    departments: list[str], now: datetime,
                    ) -> tuple[Inbound, Arrival, Facts]:
        """What is stored under the message's key, and what its sender drew on this hour,
        in one query. A re-used Message-ID with different content gets a key of its own."""
        fp = fingerprint(msg)
        facts = await self._stored(tx, msg, departments, now)
        if facts.fingerprint is not None and facts.fingerprint != fp:
            log.warning("message.id_reused", message_id=msg.message_id)
            msg = replace(msg, dedupe_key=f"{msg.dedupe_key}#{fp}")
            facts = await self._stored(tx, msg, departments, now)
        return msg, Arrival(msg, fp, mail.raw, origin.source, facts.message,
                            mail.packed), facts

    async def _stored(self, tx: Tx, msg: Inbound, departments: list[str],
                      now: datetime) -> Facts:
        keys = self._keys(msg, now)
        asks = self._asks(msg, departments, keys)
        message, fp, received, usage, exposed = await gather.stored(
            tx, asks.dedupe_key, asks.budget, asks.flood, now, asks.tokens)
        return Facts(message, fp, received, usage=usage, keys=keys, exposed=exposed)

    def _asks(self, msg: Inbound, departments: Sequence[str],
              keys: Sequence[Key]) -> gather.Asks:
        """What reading a mail's stored state asks for (gather.stored): with it, whether
        the reply keys that would prove its sender (`keys`) have been exposed."""
        sender = msg.sender.addr if msg.sender else None
        flood = tuple((d, team_budget(d, sender)) for d in departments) \
            if sender and self.settings.notify_team else ()
        tokens = tuple(k.identity for k in keys)
        return gather.Asks(msg.dedupe_key, self.budget.keys(sender) if sender else None,
                           flood, tokens)

    async def read_ahead(self, tx: Tx, reads: Sequence[Read | None], origin: Origin) -> None:
        """Before a group of mail from one source is handled in `tx`: what each one's
        handle() would first read of the store, for all of them in one query
        (gather.read_ahead), so a message costs one round trip to the database less. Only
        mail a reading process read for this pipeline is known here; the rest, and
        anything the group's own writes make stale, is read by handle() as before."""
        asks, now = [], self.clock()
        for read in reads:
            if read is None or read.msg is None or read.asked != self.reading:
                continue
            try:
                routes = routes_for(read.msg, origin, self.directory, read.searched)
            except Exception:  # handle() quarantines such mail; it must not stop the group
                continue
            if routes:
                departments = list(dict.fromkeys(r.department for r in routes))
                asks.append(self._asks(read.msg, departments, self._keys(read.msg, now)))
        await gather.read_ahead(tx, asks, now)

    async def _thread(self, tx: Tx, msg: Inbound, verdict: Verdict) -> tuple[TicketState, ...]:
        hints = thread_hints(msg, self.prefixes)
        # A bounce names the mail it is about only inside its report part. Forwarded mail
        # also carries such parts, so only automatic mail is matched this way.
        automatic = verdict.kind in (MailKind.BOUNCE, MailKind.AUTO_REPLY)
        return await gather.threaded(tx, hints.ticket_refs, hints.message_ids,
                                     msg.embedded_ids if automatic else ())

    async def _append(self, tx: Tx, mail: Received, arrival: Arrival, verdict: Verdict,
                      trust: Trust, read: Facts, pending: list[str],
                      now: datetime) -> Outcome:
        """A follow-up to known tickets: read, decide (reply.py), write (apply.py). A
        person's mail works the tickets; automatic mail is only noted. `trust`: the
        request's (mail_trust), not worked out again."""
        msg, tickets = arrival.msg, list(read.threaded)
        effects: list[Effect] = [StoreMessage(verdict.kind, trust),
                                 AddReceipts(tuple(pending), "reply"),
                                 *self._exposure(msg, now)]
        person = verdict.kind in (MailKind.REQUEST, MailKind.BULK)
        dropped: list[str] = []
        if person:
            files = await self._store_files(tx, mail, msg)
            effects += self._attachment_effects(tickets, files)
            dropped = [f.filename for f in files if f.sha256 is None]
        incoming = _incoming(msg, trust, read)
        sender = msg.sender.addr if msg.sender else None
        texts = verdict.kind is MailKind.REQUEST and needs_texts(msg)
        facts = [await gather.ticket_facts(tx, t, sender or "", now, texts) for t in tickets]
        parts = RelayParts((), ())
        if verdict.kind is MailKind.REQUEST and sender:
            # A person wrote: answers, notes, commands, replies (reply.py).
            parts = await self._relay_parts(mail, msg)
            recipients = budget_recipients(incoming, tickets, self.directory)
            drawn = await self._drawn(tx, sender, read.usage, recipients, now)
            replied = self.conversation.decide(
                incoming, facts, parts, drawn, now, dropped,
                size_in_words(self.settings.max_attachment_bytes))
            effects += replied.effects
            kind = replied.kind
        else:
            kind = "reply" if person else verdict.kind.value
            effects += self.conversation.noted(incoming, facts, kind, verdict.reason, now)
        await apply(tx, effects, arrival, self._mail_writer(mail, msg, now, parts), now)
        _log(effects)
        refs = tuple(t.ref for t in tickets)
        log.info("ticket.appended", tickets=refs, kind=kind, message_id=msg.message_id,
                 source=arrival.source)
        return Outcome("reply", refs)

    async def _drawn(self, tx: Tx, sender: str, usage: Usage, recipients: list[str],
                     now: datetime) -> Drawn:
        """Automatic mail drawn this hour by each recipient a reply decision may notify:
        the sender's was read with the message's key; others' (a member's directory
        spelling of another mailbox) are read now."""
        mailbox, domain = self.budget.keys(sender)
        known = Drawn({mailbox: usage.to_mailbox}, {domain: usage.to_domain} if domain else {})
        others = [keys for keys in map(self.budget.keys, recipients)
                  if keys != (mailbox, domain)]
        if not others:
            return known
        more = await gather.drawn(tx, others, now)
        return Drawn(dict(known.mailboxes) | dict(more.mailboxes),
                     dict(known.domains) | dict(more.domains))

    async def _open(self, tx: Tx, mail: Received, arrival: Arrival, request: Request,
                    facts: Facts, now: datetime) -> Outcome:
        """A new request: read, decide (new_request.py), write (apply.py).

        A new request is kept whole as the conversation's text: what looks like quoted
        history in it (a forwarded mail, "see below") is often the request itself."""
        msg = request.msg
        request = replace(request, files=await self._store_files(tx, mail, msg))
        effects = [*open_request(request, facts, self.new_requests, now),
                   *self._exposure(msg, now)]
        applied = await apply(tx, effects, arrival, self._mail_writer(mail, msg, now), now)
        _log(effects)
        for ticket in applied.opened:
            log.info("ticket.created", ticket=ticket.ref, dept=ticket.department,
                     message_id=msg.message_id, source=arrival.source,
                     priority=ticket.priority.value, rule=request.routes[ticket.department].rule)
        refs = [t.ref for t in applied.opened]
        for effect in effects:
            if isinstance(effect, AddEvent) and effect.kind == "ack_suppressed":
                log.info("ack.suppressed", tickets=refs, reason=effect.detail["reason"])
                break
        for effect in effects:
            if isinstance(effect, HoldNotification):
                log.info("team_notify.held", ticket=applied.opened[effect.ticket.slot].ref,
                         sender=effect.sender)
        return Outcome("ticket", tuple(refs), acknowledged=acknowledged(effects))

    def _mail_writer(self, mail: Received, msg: Inbound, now: datetime,
                     parts: RelayParts | None = None) -> MailWriter:
        """Writes the mail a decision queued; the attachments of the mail being handled
        are read once (unless known already), if a mail carries them."""
        found: list[RelayParts] = [parts] if parts is not None else []

        async def mail_parts() -> RelayParts:
            if not found:
                found.append(await self._relay_parts(mail, msg))
            return found[0]

        async def write(queued: QueueMail, tickets: Sequence[TicketState],
                        first: str | None) -> list[Outgoing]:
            return await self.mailer.write(queued, tickets, now, mail_parts, first)
        return write

    async def _relay_parts(self, mail: Received, msg: Inbound) -> RelayParts:
        if mail.relay is not None:  # read ahead
            return mail.relay
        return await parts_to_relay(mail.raw, msg, self.settings.max_relay_bytes, mail.light,
                                    in_thread_above=PARSE_INLINE_UP_TO)

    async def _store_files(self, tx: Tx, mail: Received, msg: Inbound) -> tuple[StoredFile, ...]:
        """Write the mail's attachments (up to [limits] max_attachment_bytes in all);
        returns each, with its digest or (not kept) None.

        Each file is written and fsynced *before* the rows naming it are inserted, and the
        rows commit with this message's transaction: a crash leaves at most an orphan file,
        never a row naming a missing file (see attachments.py)."""
        store = tx.attachments
        if not msg.attachments or store is None:
            return ()
        parts = await mail.attachments()
        if not parts:
            return ()
        kept, dropped = select(parts, self.settings.max_attachment_bytes)
        files = []
        for part in kept:
            digest = await mail.keep(store, part)  # durable before the rows
            files.append(StoredFile(part.filename, part.content_type, part.length, digest))
        files += [StoredFile(p.filename, p.content_type, p.length, None) for p in dropped]
        if dropped:
            log.warning("attachments.dropped", message_id=msg.message_id,
                        files=[p.filename for p in dropped])
        return tuple(files)

    def _attachment_effects(self, tickets: list[TicketState],
                            files: tuple[StoredFile, ...]) -> list[Effect]:
        """A reply's attachments, on each of its tickets, and those not kept named."""
        if not files:
            return []
        on = tuple(t.id for t in tickets)
        effects: list[Effect] = [AddAttachments(on, files)]
        dropped = [[f.filename, f.size] for f in files if f.sha256 is None]
        if dropped:
            effects += [AddEvent(t, "attachments_dropped", of_mail=True,
                                 detail={"files": dropped,
                                         "limit": self.settings.max_attachment_bytes})
                        for t in on]
        return effects

    def _keys(self, msg: Inbound, now: datetime) -> tuple[Key, ...]:
        """The reply keys in this mail that are valid for its sender: In-Reply-To and
        References echo our Message-IDs; a rating link's mail carries the key in its body.
        None when our MTA says the From: (one of our domains) failed DMARC: a key can leak
        with a copy of our mail, and whoever holds it did not send from that mailbox."""
        if not self.settings.keys.active or msg.sender is None:
            return ()
        if dmarc_failed(msg, self.settings.trust):
            return ()
        return valid_keys(self.settings.keys, _key_candidates(msg), (msg.sender.addr,), now)

    def _exposure(self, msg: Inbound, now: datetime) -> list[Effect]:
        """Burn the reply keys this mail shows to others (core/exposure.py)."""
        if not self.settings.keys.active:
            return []
        keys = exposed_keys(self.settings.keys, msg, _key_candidates(msg), self._own, now)
        if not keys:
            return []
        return [ExposeKeys({k.identity: k.expires for k in keys}),
                Log("warning", "reply_keys.exposed", {
                    "message_id": msg.message_id, "keys": len(keys),
                    "to": list(others(msg, self._own))[:10]})]

    def _own(self, addr: str) -> bool:
        return self.directory.is_own(addr) or canonical(addr) in self.settings.own_mailboxes


def _incoming(msg: Inbound, trust: Trust, read: Facts) -> Incoming:
    """The mail as the conversation decides on it: the tickets its reply keys (read with
    its stored state) prove its sender for, unless others have seen the key
    (`read.exposed`); those tickets' keys that were seen are named, to say why."""
    keys, exposed = read.keys, read.exposed
    proven = frozenset(r for k in keys if k.identity not in exposed for r in k.refs)
    seen = frozenset(r for k in keys if k.identity in exposed for r in k.refs) - proven
    return Incoming(msg, trust, proven, seen)


def _key_candidates(msg: Inbound) -> Iterator[str]:
    """Where a mail may carry reply keys: every id of In-Reply-To and References, then a
    rating link's body; all of them, found lazily. Proof (_keys) and exposure (_exposure)
    read this same sequence: proof checks the first replykey.MAX_KEYS that could be keys,
    exposure burns every one, so no key the mail shows others is left to prove."""
    yield from msg.reply_ids
    if any(f"{version}." in msg.body for version in VERSIONS):
        yield from (m.group() for m in KEY_IN_TEXT.finditer(msg.body))


KEY_IN_TEXT = re.compile(rf"(?:{'|'.join(VERSIONS)})\.[A-Za-z0-9._-]{{20,300}}")


# Reading takes time linear in a mail's size, but up to ~3.5 s a MB for a hostile shape
# (bench/hostile_scaling.py: an HTML body of 256 KB of "<" took 0.85 s): on the event loop
# that would stall every connection, mailbox and the metrics endpoint. Inline, a mail up
# to this size stalls it for at most ~0.2 s; ordinary mail is far below it.
PARSE_INLINE_UP_TO = 64 * 1024


async def _safe_parse(raw: bytes, max_body_chars: int,
                      in_thread_above: int = PARSE_INLINE_UP_TO) -> Inbound | None:
    """Parse; a larger message in a worker thread (PARSE_INLINE_UP_TO), small mail inline
    (a thread hop would cost more than parsing it)."""
    try:
        if len(raw) > in_thread_above:
            return await asyncio.to_thread(parse, raw, max_body_chars)
        return parse(raw, max_body_chars)
    except Exception:  # parse promises not to raise; if it does, quarantine, don't crash
        log.exception("parse.failed")
        return None


def _log(effects: list[Effect]) -> None:
    """The log lines a decision asked for, once its effects are written."""
    for effect in effects:
        if isinstance(effect, Log):
            getattr(log, effect.level)(effect.event, **effect.fields)


def _mid(msg: Inbound | None) -> str | None:
    return msg.message_id if msg else None
