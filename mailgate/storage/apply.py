"""The write step of a mail's processing: a decision's effects (tickets/effects.py), in one go.

Effects of one kind are written together (one executemany each), in the order their
rows depend on one another: the message, the new tickets (whose ids and refs the rest
names), the message's receipts, changes to existing tickets (each written once, as the
decision leaves it), clocks, links, attachments, held notifications, exposed reply keys,
the outgoing mail,
and last the events (which name the message, the tickets and the mail). Events keep the order the
decision listed them in, so "the first event of a ticket" means what it did.

Portable SQL only (SQLite and PostgreSQL): ON CONFLICT DO NOTHING, subqueries for ids.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from mailgate.core.model import Inbound, Outgoing
from mailgate.storage import slaclock
from mailgate.storage import ticketops as ops
from mailgate.storage.store import Tx, ts
from mailgate.tickets.effects import (
    AddAttachments,
    AddEvent,
    AddReceipts,
    Change,
    Effect,
    ExposeKeys,
    HoldNotification,
    LinkTickets,
    NewTicket,
    OpenTicket,
    QueueMail,
    SetMessageText,
    StartClocks,
    StoreMessage,
    TicketRef,
    UpdateTicket,
    WriteClock,
)
from mailgate.tickets.state import TicketState

E = TypeVar("E")
CHANGES = (UpdateTicket, WriteClock)
# Writes the outbox rows a QueueMail asks for (outbound/queued.py), given its tickets and
# (for a twin) the Message-ID of the previous mail's first copy.
MailWriter = Callable[[QueueMail, Sequence[TicketState], str | None],
                      Awaitable[list[Outgoing]]]


@dataclass(frozen=True, slots=True)
class Arrival:
    """The mail being handled, as the store keeps it."""

    msg: Inbound
    fingerprint: str
    raw: bytes
    source: str
    stored: int | None = None  # its messages row, when a copy was stored before
    packed: bytes | None = None  # raw, compressed already (large mail)


@dataclass(frozen=True, slots=True)
class Applied:
    message: int | None  # the mail's messages row
    opened: tuple[TicketState, ...]  # the tickets opened, in slot order


class _Written:
    """Ids known so far: the message's row and the tickets, new and existing."""

    def __init__(self) -> None:
        self.message: int | None = None
        self.opened: dict[int, TicketState] = {}

    def id(self, ref: TicketRef) -> int:
        return self.opened[ref.slot].id if isinstance(ref, NewTicket) else ref

    def ticket(self, ref: TicketState | NewTicket) -> TicketState:
        return self.opened[ref.slot] if isinstance(ref, NewTicket) else ref

    def detail(self, detail: Mapping[str, Any] | None) -> str | None:
        """An event's detail as stored; a new ticket in it is written as its ref."""
        if not detail:
            return None
        return json.dumps({k: self.opened[v.slot].ref if isinstance(v, NewTicket) else v
                           for k, v in detail.items()})


async def apply(tx: Tx, effects: Sequence[Effect], arrival: Arrival, write_mail: MailWriter,
                now: datetime) -> Applied:
    """Write `effects` (the decision's list, as it came)."""
    done = _Written()
    done.message = arrival.stored  # unless the effects store it now
    # What the conversation shows of the mail: the decision's last word on it.
    texts = [e.text for e in effects if isinstance(e, SetMessageText)]
    message_row = None  # the new messages row's id, once asked for
    for store in _of(effects, StoreMessage):
        message_row = await tx.store_message_later(
            arrival.msg, arrival.fingerprint, store.kind, arrival.raw, arrival.source, now,
            store.trust, stored=arrival.stored, packed=arrival.packed,
            text=texts[-1] if texts else store.text)
    # The tickets are opened before the message's id is asked for: on PostgreSQL it then
    # comes back with theirs, in one round trip (Tx.fetch_later).
    for new in _of(effects, OpenTicket):
        ticket = await tx.create_ticket(new.department, new.prefix, new.subject, new.requester,
                                        new.requester_name, new.priority, now, cc=new.cc,
                                        next_escalation_at=new.next_escalation_at)
        done.opened[new.slot] = TicketState.of(ticket, cc=new.cc)
    if message_row is not None:
        done.message = await message_row()
    if texts and (arrival.stored is not None or not _of(effects, StoreMessage)):
        assert done.message is not None  # stored before: its text is set now
        await ops.set_text(tx, done.message, texts[-1])
    for receipts in _of(effects, AddReceipts):
        assert done.message is not None, "receipts name the stored message"
        await tx.add_receipts(arrival.msg.dedupe_key, receipts.departments, done.message,
                              receipts.outcome)
    await _changes(tx, [e for e in effects if isinstance(e, CHANGES)], now)
    await _clocks(tx, done, _of(effects, StartClocks))
    await _links(tx, done, _of(effects, LinkTickets))
    await _attachments(tx, done, _of(effects, AddAttachments), now)
    await _holds(tx, done, _of(effects, HoldNotification), now)
    await _exposed(tx, _of(effects, ExposeKeys), now)
    events = await _mail(tx, done, effects, write_mail, now)
    await _events(tx, done, events, now)
    return Applied(done.message, tuple(done.opened[slot] for slot in sorted(done.opened)))


def _of(effects: Sequence[Effect], kind: type[E]) -> list[E]:
    return [e for e in effects if isinstance(e, kind)]


async def _clocks(tx: Tx, done: _Written, starts: list[StartClocks]) -> None:
    rows = [(done.id(s.ticket), *row) for s in starts for row in s.opening.rows]
    if rows:
        await tx.conn.executemany(
            "INSERT INTO sla_clocks (ticket, target, started_at, seconds, due_at, next_at) "
            "VALUES (?, ?, ?, ?, ?, ?)", rows)


async def _links(tx: Tx, done: _Written, links: list[LinkTickets]) -> None:
    pairs = dict.fromkeys((a, b) for link in links
                          for a in map(done.id, link.tickets)
                          for b in map(done.id, link.tickets) if a != b)
    if pairs:
        await tx.conn.executemany(
            "INSERT INTO ticket_links (ticket, other) VALUES (?, ?) ON CONFLICT DO NOTHING",
            list(pairs))


async def _attachments(tx: Tx, done: _Written, adds: list[AddAttachments],
                       now: datetime) -> None:
    rows = [(done.id(t), done.message, f.filename, f.content_type, f.size, f.sha256, ts(now))
            for add in adds for t in add.tickets for f in add.files]
    if rows:
        await tx.conn.executemany(
            "INSERT INTO attachments (ticket, message, filename, content_type, size, "
            "sha256, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)


async def _holds(tx: Tx, done: _Written, holds: list[HoldNotification],
                 now: datetime) -> None:
    rows = [(done.id(h.ticket), h.department, h.sender, ts(now)) for h in holds]
    if rows:
        await tx.conn.executemany(
            "INSERT INTO held_notifications (ticket, department, sender, at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", rows)


async def _exposed(tx: Tx, exposes: list[ExposeKeys], now: datetime) -> None:
    """Burn the keys; the first time a key was seen elsewhere is the one kept."""
    keys = {token: expires for e in exposes for token, expires in e.keys.items()}
    if keys:
        tx.exposed_tokens.update(keys)
        await tx.conn.executemany(
            "INSERT INTO exposed_keys (token, at, expires) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING", [(t, ts(now), keys[t]) for t in sorted(keys)])


async def _mail(tx: Tx, done: _Written, effects: Sequence[Effect], write_mail: MailWriter,
                now: datetime) -> list[tuple[AddEvent, str | None]]:
    """Queue every mail; returns the events in the decision's order, each with the
    Message-ID of the mail it names (a mail's recorded events name its first copy)."""
    events: list[tuple[AddEvent, str | None]] = []
    queued: list[Outgoing] = []
    first: str | None = None
    for effect in effects:
        if isinstance(effect, AddEvent):
            events.append((effect, None))
        elif isinstance(effect, QueueMail):
            copies = await write_mail(effect, [done.ticket(t) for t in effect.about],
                                      first if effect.twin else None)
            queued += copies
            if not copies:
                continue  # an optional mail left out: nothing names it
            first = first if effect.twin else copies[0].message_id
            events += [(event, first) for event in effect.recorded]
    if queued:
        await tx.enqueue_many(queued, now)
    return events


async def _changes(tx: Tx, changes: list[Change], now: datetime) -> None:
    """Changes to existing tickets, each as it ends after the mail: its clocks set-wise,
    then one UPDATE per ticket (with its next escalation instant, when its clocks moved)."""
    clocks = [c for c in changes if isinstance(c, WriteClock)]
    await slaclock.write_clocks(tx, clocks, now)
    moved = {c.ticket for c in clocks}
    updates = {c.ticket: c.columns for c in changes if isinstance(c, UpdateTicket)}
    for ticket in sorted(set(updates) | moved):
        await ops.update_ticket(tx, ticket, updates.get(ticket, {}), reschedule=ticket in moved)


async def _events(tx: Tx, done: _Written, events: list[tuple[AddEvent, str | None]],
                  now: datetime) -> None:
    rows = [(done.id(e.ticket), ts(now), e.kind, e.actor,
             done.message if e.of_mail else None, outgoing, done.detail(e.detail),
             e.visibility) for e, outgoing in events]
    if rows:
        await tx.conn.executemany(
            "INSERT INTO events (ticket, at, kind, actor, message, outgoing, detail, "
            "visibility) VALUES (?, ?, ?, ?, ?, (SELECT id FROM outbox WHERE message_id = ?), "
            "?, ?)", rows)
