"""QueueMail effects (tickets/effects.py) into outbox rows, through outbound/kinds.py.

A decision names the kind of mail and what its template needs; the tickets it is about
are known here, once written (their refs go into the subject, the template and the reply
keys). Pure apart from the handled mail's attachments, which a relay reads from the raw
mail (in a worker thread for large mail) only when it carries them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from jinja2 import TemplateNotFound

from mailgate.config.directory import Department, Directory
from mailgate.core.mime.largemail import Light, restored_parts
from mailgate.core.model import Inbound, Outgoing
from mailgate.core.model import OutgoingKind as K
from mailgate.core.render import Renderer
from mailgate.outbound.compose import RelayParts, carries_parts, relay_parts
from mailgate.outbound.kinds import Mail, Sending, build
from mailgate.service.log import get_logger
from mailgate.tickets.effects import QueueMail
from mailgate.tickets.state import TicketState

log = get_logger("mailgate.outbound.queued")
NO_PARTS = RelayParts((), ())
MailParts = Callable[[], Awaitable[RelayParts]]  # the handled mail's attachments, on demand


async def no_parts() -> RelayParts:
    return NO_PARTS


async def parts_to_relay(raw: bytes, msg: Inbound, limit: int, light: Light | None = None,
                         in_thread_above: int | None = None) -> RelayParts:
    """A received mail's attachments to relay. A single text body has none: skip the
    second parse. A large mail's are read from its light view, off the loop, and its big
    parts put back as they came (or named as left out when they do not fit); a mail
    longer than `in_thread_above` off the loop too: 800 kB of empty parts took 2 s."""
    if not carries_parts(msg):
        return NO_PARTS
    if light is None:
        if in_thread_above is not None and len(raw) > in_thread_above:
            return await asyncio.to_thread(relay_parts, raw, limit)
        return relay_parts(raw, limit)
    found = await asyncio.to_thread(relay_parts, light.slim, limit)
    return await asyncio.to_thread(restored_parts, found, light, raw, limit)


class QueuedMail:
    """Writes the mail a QueueMail effect asks for."""

    def __init__(self, directory: Directory, renderer: Renderer, sending: Sending) -> None:
        self.directory = directory
        self.renderer = renderer
        self.sending = sending

    async def write(self, queued: QueueMail, tickets: Sequence[TicketState], now: datetime,
                    parts: MailParts = no_parts, first: str | None = None,
                    ) -> list[Outgoing]:
        """`tickets`: those the mail is about, in `queued.about`'s order; `first`: the
        Message-ID of the mail's first copy when another QueueMail wrote that."""
        found = await parts() if queued.relay_attachments else NO_PARTS
        mail = self.mail(queued, tickets, found)
        try:
            return build(mail, self.renderer, self.sending, now, only=queued.only,
                         first=first)
        except TemplateNotFound:
            if not queued.optional:
                raise
            # A templates folder from before this kind: the notice is left out, the mail
            # it answers is kept.
            log.warning("template.missing", template=mail.spec.template,
                        ticket=mail.tickets[0] if mail.tickets else None)
            return []

    def mail(self, queued: QueueMail, tickets: Sequence[TicketState],
             parts: RelayParts = NO_PARTS) -> Mail:
        dept = self.directory.departments[queued.department]
        context = dict(queued.context)
        if queued.kind is K.ACK:  # one mail for all the request's tickets
            context["tickets"] = [self._ack_ticket(t) for t in tickets]
        else:
            context = ticket_context(tickets[0], dept) | context
        if queued.kind is K.NOTIFY_TEAM:
            context["attachments"] = (
                [f"{len(parts.parts)} file(s), attached"] * bool(parts.parts)
                + [f"{name} (too large, not attached)" for name, _ in parts.left_out])
        return Mail(queued.kind, queued.from_name or dept.name, dept.address, queued.to,
                    fields={"subject": queued.subject or tickets[0].subject},
                    context=context, department=dept.key, variant=queued.variant,
                    tickets=tuple(t.ref for t in tickets), ticket_id=tickets[0].id,
                    thread=queued.thread, cc=queued.cc, attachments=parts.parts,
                    budget=queued.budget)

    def _ack_ticket(self, ticket: TicketState) -> dict:
        dept: Department = self.directory.departments[ticket.department]
        sla = self.directory.sla_for(dept)
        return {
            "ref": ticket.ref,
            "department": {"key": dept.key, "name": dept.name, "address": dept.address},
            "priority": ticket.priority.value,
            "first_response": sla.first_response[ticket.priority],
            "business_hours": dept.calendar is not None,
        }


def ticket_context(st: TicketState, dept: Department) -> dict:
    """What every template about one ticket may use."""
    return {
        "ticket": {"ref": st.ref, "subject": st.subject, "priority": st.priority.value,
                   "status": st.status.value, "assignee": st.assignee,
                   "created_at": st.created_at},
        "requester": {"name": st.requester_name, "address": st.requester},
        "department": {"key": dept.key, "name": dept.name, "address": dept.address},
    }
