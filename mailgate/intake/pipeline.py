"""One message: parse -> classify -> dedupe -> thread -> route -> apply, in one savepoint.

The caller owns the transaction (a batch of messages plus the mailbox position, or one
pushed message); `handle` decides in one place what a failure means: a storage error
propagates so the whole batch is retried, anything else quarantines the raw bytes with
its reason and the batch goes on.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from mailgate.config.directory import Department, Directory, member_address
from mailgate.config.settings import Config
from mailgate.core.addresses import canonical, domain_of
from mailgate.core.classify import LoopContext, Verdict, classify
from mailgate.core.mime.largemail import LARGE, Light, decoded_chunks, lighten
from mailgate.core.mime.parse import fingerprint, parse
from mailgate.core.model import Inbound, MailKind, Origin, Outgoing, Ticket
from mailgate.core.render import Renderer
from mailgate.core.replykey import KeyRing, keyed_message_id, proven_refs
from mailgate.core.routing import Route, routes_for
from mailgate.core.trust import TrustPolicy, sender_trust
from mailgate.errors import BadMessage
from mailgate.outbound.compose import Envelope, compose
from mailgate.service.log import get_logger
from mailgate.storage import ticketops as ops
from mailgate.storage.attachments import Attachments, Part, extract, select
from mailgate.storage.errors import TEMPORARY
from mailgate.storage.slaclock import SlaBook
from mailgate.storage.store import Seen, Tx, pack
from mailgate.tickets.budget import MailBudget
from mailgate.tickets.conversation import clean_subject, tagged_subject, thread_hints
from mailgate.tickets.workflow import ConversationSettings, Incoming, Opened, Workflow

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
    packed: bytes | None = None  # the raw bytes as the database keeps them (large mail)

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
        if self.light is None:
            return extract(self.raw)
        parts = await asyncio.to_thread(extract, self.light.slim)
        return [self._real(part) for part in parts]

    def _real(self, part: Part) -> Part:
        assert self.light is not None
        span = self.light.real(part.data)
        return part if span is None else replace(part, size=span.size)

    async def keep(self, store: Attachments, part: Part) -> str:
        span = self.light.real(part.data) if self.light else None
        if span is None:
            return await asyncio.to_thread(store.put, part.data)
        digest, _ = await asyncio.to_thread(store.put_chunks, decoded_chunks(self.raw, span))
        return digest


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    instance: str = "mailgate"
    acks_per_sender_per_hour: int = 10
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

    @classmethod
    def from_config(cls, config: Config, keys: KeyRing | None = None) -> PipelineSettings:
        """`keys`: the reply-key ring from the state directory (keyfile.load); without
        one, no mail carries a key and only Authentication-Results can prove a sender."""
        limits, security = config.limits, config.security
        return cls(instance=config.instance,
                   acks_per_sender_per_hour=limits.acks_per_sender_per_hour,
                   max_body_chars=config.limits.max_body_chars,
                   trust=TrustPolicy(config.security.trusted_domains,
                                     config.security.authserv_id),
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
                   bulk_mail=config.conversation.bulk_mail)

    def budget(self, own_domains: frozenset[str]) -> MailBudget:
        """The automatic-mail budget; the organisation's domains (trusted_domains and the
        departments' own) have no domain-wide limit, only the per-mailbox one."""
        return MailBudget(self.acks_per_sender_per_hour, self.auto_mail_per_domain_per_hour,
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
        self.sla = SlaBook(directory)
        self.budget = settings.budget(frozenset(
            domain_of(d.address) for d in directory.departments.values()))
        self.workflow = Workflow(directory, renderer, self.sla,
                                 settings.conversation(self.budget))

    async def handle(self, tx: Tx, raw: bytes, origin: Origin) -> Outcome:
        now = self.clock()
        mail = await Received.of(raw)
        msg = await _safe_parse(mail.readable, self.settings.max_body_chars)
        if msg is not None and mail.light is not None:
            msg = mail.light_fixed(msg)
        try:
            async with tx.savepoint():
                return await self._process(tx, mail, msg, origin, now)
        except TEMPORARY:
            raise  # disk full, locked, I/O error: the caller retries the whole batch
        except BadMessage as exc:
            reason = str(exc)
        except Exception as exc:
            log.exception("message.failed", source=origin.source, message_id=_mid(msg))
            reason = f"internal error: {type(exc).__name__}: {exc}"
        return await self._quarantine(tx, raw, msg, origin, reason, now)

    async def _quarantine(self, tx: Tx, raw: bytes, msg: Inbound | None, origin: Origin,
                          reason: str, now: datetime) -> Outcome:
        entry = await tx.quarantine(raw, origin.source, reason, msg, now)
        log.warning("message.quarantined", source=origin.source, quarantine=entry,
                    message_id=_mid(msg), reason=reason)
        return Outcome("quarantined", reason=reason, quarantine=entry)

    async def _process(self, tx: Tx, mail: Received, msg: Inbound | None, origin: Origin,
                       now: datetime) -> Outcome:
        if msg is None:
            raise BadMessage("the parser could not read this message")
        msg, fp, seen = await self._distinct(tx, msg)
        covered = seen.departments
        routes = {r.department: r for r in routes_for(msg, origin, self.directory)}
        targets = list(routes)
        if not targets:
            raise BadMessage("addressed to no known department and no default_department set")
        pending = [d for d in targets if d not in covered]
        if not pending:
            # A re-delivery (a copy through a second mailbox, an MTA retrying after a lost
            # 250, a re-read after a crash): nothing to do, but it leaves a trace.
            times = await tx.record_redelivery(seen.message, now) if seen.message else 0
            log.info("message.duplicate", message_id=msg.message_id, source=origin.source,
                     departments=targets, deliveries=times)
            return Outcome("duplicate", reason="already received for " + ", ".join(targets))
        verdict = classify(msg, self.loop_context)
        existing = await self._thread(tx, msg, verdict)
        if existing and verdict.kind is MailKind.REQUEST:
            stale = [t for t in existing if await self.workflow.is_stale(tx, t, msg, now)]
            if stale and len(stale) == len(existing):
                # Too long after the resolution: a new ticket that links the old one, for
                # the old tickets' departments; the message counts as received for every
                # pending one, so its copies through other mailboxes are duplicates.
                routes = {t.department: Route(t.department, t.priority, "follow-up")
                          for t in stale if t.department in self.directory.departments
                          and t.department in pending}
                if routes:
                    return await self._open(tx, mail, msg, fp, verdict, list(routes), origin,
                                            now, routes, seen.message, predecessors=stale,
                                            received=pending)
        if existing:
            return await self._append(tx, mail, msg, fp, verdict, existing, pending, origin,
                                      now, seen.message)
        if verdict.kind not in (MailKind.REQUEST, MailKind.BULK):
            return await self._quarantine(
                tx, mail.raw, msg, origin, f"{verdict.kind.value} matching no ticket: "
                f"{verdict.reason}", now)
        if verdict.kind is MailKind.BULK and self.settings.bulk_mail == "ignore":
            return await self._ignore(tx, mail, msg, fp, verdict, pending, origin, now,
                                      seen.message)
        if msg.sender is None:
            raise BadMessage("no usable From address")
        return await self._open(tx, mail, msg, fp, verdict, pending, origin, now, routes,
                                seen.message)

    async def _ignore(self, tx: Tx, mail: Received, msg: Inbound, fp: str, verdict: Verdict,
                      pending: list[str], origin: Origin, now: datetime,
                      stored: int | None) -> Outcome:
        """List and bulk mail with [conversation] bulk_mail = "ignore": kept (so a copy is
        a duplicate and the raw mail is there to look at), but no ticket and no mail."""
        message = await tx.store_message(msg, fp, verdict.kind, mail.raw, origin.source, now,
                                         stored=stored, packed=mail.packed)
        await tx.add_receipts(msg.dedupe_key, pending, message, "ignored")
        log.info("message.ignored", message_id=msg.message_id, source=origin.source,
                 reason=verdict.reason)
        return Outcome("ignored", reason=f"bulk: {verdict.reason}")

    async def _distinct(self, tx: Tx, msg: Inbound) -> tuple[Inbound, str, Seen]:
        """Give a re-used Message-ID with different content a key of its own; return the
        message, its fingerprint and what is stored under its key."""
        fp = fingerprint(msg)
        seen = await tx.seen(msg.dedupe_key)
        if seen.fingerprint is not None and seen.fingerprint != fp:
            log.warning("message.id_reused", message_id=msg.message_id)
            msg = replace(msg, dedupe_key=f"{msg.dedupe_key}#{fp}")
            seen = await tx.seen(msg.dedupe_key)
        return msg, fp, seen

    async def _thread(self, tx: Tx, msg: Inbound, verdict: Verdict) -> list[Ticket]:
        hints = thread_hints(msg, self.prefixes)
        found = (await tx.tickets_by_refs(hints.ticket_refs)
                 or await tx.tickets_by_message_ids(hints.message_ids))
        if not found and verdict.kind in (MailKind.BOUNCE, MailKind.AUTO_REPLY):
            # A bounce names the mail it is about only inside its report part. Forwarded
            # mail also carries such parts, so only automatic mail is matched this way.
            found = await tx.tickets_by_message_ids(msg.embedded_ids)
        return found

    async def _append(self, tx: Tx, mail: Received, msg: Inbound, fp: str, verdict: Verdict,
                      tickets: list[Ticket], pending: list[str], origin: Origin,
                      now: datetime, stored: int | None) -> Outcome:
        """A follow-up to known tickets: record it on each; automatic mail is only noted."""
        trust = sender_trust(msg, self.settings.trust)
        message = await tx.store_message(msg, fp, verdict.kind, mail.raw, origin.source, now,
                                         trust, stored=stored, packed=mail.packed)
        await tx.add_receipts(msg.dedupe_key, pending, message, "reply")
        kind = "reply" if verdict.kind in (MailKind.REQUEST, MailKind.BULK) else verdict.kind
        actor = msg.sender.addr if msg.sender else None
        dropped = []
        if kind == "reply":
            dropped = await self._keep_attachments(tx, mail, msg, message, tickets, now)
        incoming = Incoming(msg, mail.raw, message, trust, self._proven(msg, now),
                            light=mail.light)
        if verdict.kind is MailKind.REQUEST and actor:
            # A person wrote: answers, notes, commands, replies (workflow.py).
            for ticket in tickets:
                kind = await self.workflow.follow_up(tx, ticket, incoming, now)
            if dropped:  # what they sent did not all arrive: they should know
                await self.workflow.not_kept(tx, tickets[0], incoming, dropped,
                                             _size(self.settings.max_attachment_bytes), now)
            log.info("ticket.appended", tickets=[t.ref for t in tickets], kind=kind,
                     message_id=msg.message_id, source=origin.source)
            return Outcome("reply", tuple(t.ref for t in tickets))
        for ticket in tickets:
            await tx.add_event(ticket.id, kind, now, actor=actor, message=message,
                               detail={"reason": verdict.reason} if verdict.reason else None)
            await tx.touch_ticket(ticket.id, now)
            if kind == "reply" and actor:
                await self._follow_clocks(tx, ticket, incoming, now)
        refs = tuple(t.ref for t in tickets)
        log.info("ticket.appended", tickets=refs, kind=kind, message_id=msg.message_id,
                 source=origin.source)
        return Outcome("reply", refs)

    async def _open(self, tx: Tx, mail: Received, msg: Inbound, fp: str, verdict: Verdict,
                    pending: list[str], origin: Origin, now: datetime,
                    routes: dict[str, Route], stored: int | None,
                    predecessors: list[Ticket] | None = None,
                    received: list[str] | None = None) -> Outcome:
        """A new request: one ticket per department, linked, and one acknowledgement;
        `received` (default: those departments) are the ones its receipts cover.

        A new request is kept whole as the conversation's text: what looks like quoted
        history in it (a forwarded mail, "see below") is often the request itself."""
        assert msg.sender is not None
        message = await tx.store_message(msg, fp, verdict.kind, mail.raw, origin.source, now,
                                         sender_trust(msg, self.settings.trust), stored=stored,
                                         text=msg.body.strip(), packed=mail.packed)
        await tx.add_receipts(msg.dedupe_key, received or pending, message, "ticket")
        subject = clean_subject(msg.subject)
        own = self.directory.own_addresses()
        cc = tuple(dict.fromkeys(a.addr for a in msg.cc
                                 if a.addr not in own and a.addr != msg.sender.addr))
        cc = cc[:ops.MAX_CC]
        tickets, opened = [], []
        for key in pending:
            dept = self.directory.departments[key]
            priority = routes[key].priority
            clocks = self.sla.plan(key, priority, now)
            ticket = await tx.create_ticket(key, dept.prefix, subject, msg.sender.addr,
                                            msg.sender.name, priority, now, cc=cc,
                                            next_escalation_at=clocks.next_escalation_at)
            await tx.add_event(ticket.id, "created", now, actor=msg.sender.addr,
                               message=message,
                               detail={"kind": verdict.kind.value} if verdict.reason else None)
            await self.sla.open(tx, ticket.id, clocks)
            tickets.append(ticket)
            opened.append(Opened(ops.TicketState.of(ticket, cc=cc), msg.message_id or None,
                                 clocks.first_response_due))
            log.info("ticket.created", ticket=ticket.ref, dept=key, message_id=msg.message_id,
                     source=origin.source, priority=ticket.priority.value,
                     rule=routes[key].rule)
        if len(tickets) > 1:
            await tx.link_tickets([t.id for t in tickets])
        for ticket in tickets:
            old = next((p for p in predecessors or () if p.department == ticket.department),
                       None)
            if old is not None:
                await tx.link_tickets([old.id, ticket.id])
                await tx.add_event(old.id, "followed_up", now, actor=msg.sender.addr,
                                   message=message, detail={"by": ticket.ref})
                await tx.add_event(ticket.id, "follows", now, detail={"ticket": old.ref})
        dropped = await self._keep_attachments(tx, mail, msg, message, tickets, now)
        acknowledged = await self._acknowledge(tx, msg, verdict, tickets, now, dropped)
        for new in opened:
            await self.workflow.opened(tx, new, msg, mail.raw, now, light=mail.light)
        return Outcome("ticket", tuple(t.ref for t in tickets), acknowledged=acknowledged)

    async def _keep_attachments(self, tx: Tx, mail: Received, msg: Inbound, message: int,
                                tickets: list[Ticket], now: datetime) -> list[str]:
        """Store the mail's attachments (up to [limits] max_attachment_bytes in all) and
        record them on each ticket; returns the names of those not kept.

        Each file is written and fsynced *before* the rows naming it are inserted, and the
        rows commit with this message's transaction: a crash leaves at most an orphan file,
        never a row naming a missing file (see attachments.py)."""
        files = tx.attachments
        if not msg.attachments or files is None:
            return []
        parts = await mail.attachments()
        if not parts:
            return []
        kept, dropped = select(parts, self.settings.max_attachment_bytes)
        rows = []
        for part in kept:
            digest = await mail.keep(files, part)  # durable before the rows
            rows.append((part, digest))
        rows += [(part, None) for part in dropped]
        await tx.add_attachments([t.id for t in tickets], message, rows, now)
        if dropped:
            for ticket in tickets:
                await tx.add_event(ticket.id, "attachments_dropped", now, message=message,
                                   detail={"files": [[p.filename, p.length] for p in dropped],
                                           "limit": self.settings.max_attachment_bytes})
            log.warning("attachments.dropped", message_id=msg.message_id,
                        files=[p.filename for p in dropped])
        return [p.filename for p in dropped]

    async def _follow_clocks(self, tx: Tx, ticket: Ticket, mail: Incoming,
                             now: datetime) -> None:
        """Bulk-looking mail from a person: a member's answers (stops the response
        clocks), the requester's asks again -- each only with proof of who wrote it, or
        a forged "Precedence: bulk" mail would silence an SLA."""
        if not mail.proof(ticket.ref, self.settings.from_header_is_proof):
            return
        dept = self.directory.departments.get(ticket.department)
        if dept and member_address(dept, mail.sender):
            await self.workflow.clocks_answered(tx, ticket.id, mail.sender, now)
        elif canonical(mail.sender) == canonical(ticket.requester):
            await self.sla.requester_wrote(tx, ticket.id, now)

    async def _acknowledge(self, tx: Tx, msg: Inbound, verdict: Verdict,
                           tickets: list[Ticket], now: datetime,
                           dropped: list[str] | None = None) -> bool:
        assert msg.sender is not None
        refusal = await self._ack_refusal(tx, msg, verdict, now)
        if refusal:
            for ticket in tickets:
                await tx.add_event(ticket.id, "ack_suppressed", now, detail={"reason": refusal})
            log.info("ack.suppressed", tickets=[t.ref for t in tickets], reason=refusal)
            return False
        mail = self._ack_mail(msg, tickets, now, dropped or [])
        outgoing = await tx.enqueue(mail, now)
        for ticket in tickets:
            await tx.add_event(ticket.id, "ack_queued", now, outgoing=outgoing)
        return True

    async def _ack_refusal(self, tx: Tx, msg: Inbound, verdict: Verdict,
                           now: datetime) -> str | None:
        """Why no acknowledgement may go out, or None. Loops are the thing to avoid."""
        assert msg.sender is not None
        if verdict.kind is not MailKind.REQUEST:
            return f"{verdict.kind.value}: {verdict.reason}"
        return await self.budget.refusal(tx, msg.sender.addr, now)

    def _ack_mail(self, msg: Inbound, tickets: list[Ticket], now: datetime,
                  dropped: list[str]) -> Outgoing:
        assert msg.sender is not None
        first = self.directory.departments[tickets[0].department]
        context = {
            "requester": {"name": msg.sender.name, "address": msg.sender.addr},
            "subject": clean_subject(msg.subject),
            "tickets": [self._ticket_context(t) for t in tickets],
            "received_at": now,
            "dropped": dropped,  # attachments not kept: over [limits] max_attachment_bytes
            "max_attachment_size": _size(self.settings.max_attachment_bytes),
        }
        body = self.renderer.render("ack", first.key, context)
        refs = [t.ref for t in tickets]
        # The requester's reply key for every ticket of this request: a reply to the
        # acknowledgement proves who wrote it (replykey.py).
        message_id = keyed_message_id(self.settings.keys, refs, msg.sender.addr,
                                      first.address.partition("@")[2], now)
        envelope = Envelope(
            from_name=first.name, from_addr=first.address, to=(msg.sender.addr,),
            subject=tagged_subject(refs, msg.subject), message_id=message_id, date=now,
            instance=self.settings.instance, in_reply_to=msg.message_id or None,
            references=(*msg.references, msg.message_id) if msg.message_id else msg.references,
            extra=(("X-Mailgate-Ticket", " ".join(refs)),),
        )
        mailbox, domain = self.budget.keys(msg.sender.addr)
        return Outgoing(message_id=message_id, kind="ack", mail_from=first.address,
                        recipients=(msg.sender.addr,), raw=compose(envelope, body.text,
                                                                    body.html),
                        ticket_id=tickets[0].id, budget=mailbox, budget_domain=domain)

    def _ticket_context(self, ticket: Ticket) -> dict:
        dept: Department = self.directory.departments[ticket.department]
        sla = self.directory.sla_for(dept)
        return {
            "ref": ticket.ref,
            "department": {"key": dept.key, "name": dept.name, "address": dept.address},
            "priority": ticket.priority.value,
            "first_response": sla.first_response[ticket.priority],
            "business_hours": dept.calendar is not None,
        }


    def _proven(self, msg: Inbound, now: datetime) -> frozenset[str]:
        """Tickets a reply key in this mail proves its sender for: In-Reply-To and
        References echo our Message-IDs; a rating link's mail carries the key in its body."""
        if not self.settings.keys.active or msg.sender is None:
            return frozenset()
        candidates = [*msg.in_reply_to, *msg.references]
        if "mgk1." in msg.body:
            candidates += KEY_IN_TEXT.findall(msg.body)[:20]
        return proven_refs(self.settings.keys, candidates, msg.sender.addr, now)


KEY_IN_TEXT = re.compile(r"mgk1\.[A-Za-z0-9._-]{20,300}")


async def _safe_parse(raw: bytes, max_body_chars: int,
                      in_thread_above: int = 1024 * 1024) -> Inbound | None:
    """Parse; a large message in a worker thread (seconds of CPU for 50 MB would stall
    every connection and the metrics endpoint), small mail inline (a thread hop would
    cost more than parsing it)."""
    try:
        if len(raw) > in_thread_above:
            return await asyncio.to_thread(parse, raw, max_body_chars)
        return parse(raw, max_body_chars)
    except Exception:  # parse promises not to raise; if it does, quarantine, don't crash
        log.exception("parse.failed")
        return None


def _size(n: int) -> str:
    return f"{n / 1048576:.3g} MB" if n >= 1048576 else f"{n / 1024:.3g} KB"


def _mid(msg: Inbound | None) -> str | None:
    return msg.message_id if msg else None
