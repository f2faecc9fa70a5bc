"""Working a ticket by email: what a person's mail to an existing ticket does.

The pipeline calls `follow_up` for every human mail (MailKind.REQUEST) that threads into
a ticket, inside the message's savepoint; automatic mail never gets here, so nothing here
can answer an auto-reply or a bounce.

A From: line proves nothing. What a mail may *do* depends on its proof (`Incoming.proof`):
a reply key for this ticket and this sender (replykey.py: the reply echoes the Message-ID
of mail we sent that person about the ticket), or a pass from our own MTA's
Authentication-Results (trust.py). In order:

1. a member of the ticket's department (team, lead, head; never a notify list) with proof
   answers publicly (relayed to the requester from the department address), writes an
   internal #note (sent to the team), and/or runs commands;
2. a member's address without proof is kept on the ticket, internal: never relayed to the
   requester, never obeyed; the member's directory address (not the From:) gets one notice
   saying how to act -- a keyed mail, so answering it works;
3. the requester is a reply: relayed to the assignee or the team; with proof it reopens a
   resolved ticket, resumes paused clocks and answers the satisfaction question; without,
   it changes nothing and reaches the team marked as unverified;
4. people on the ticket's Cc (and, with [conversation] comments_from = "organisation",
   anyone in the organisation's domains) comment: relayed the same way (marked unverified
   without proof), never reopening or restarting a clock;
5. anyone else is kept on the ticket and reaches nobody.

Commands are all or nothing (see commands.py): one line that cannot be carried out and
nothing changes; the agent is told why. Every mail to a person carries that person's own
reply key, so mail to several people goes out as one copy each (`_mails`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from jinja2 import TemplateNotFound

from mailgate.config.directory import Department, Directory, is_agent, member_address
from mailgate.core.addresses import canonical, domain_of, within
from mailgate.core.commands import HELP, Command, Parsed, parse_commands, parse_rating, rating_links
from mailgate.core.mime.largemail import Light
from mailgate.core.model import Inbound, Outgoing, Priority, Status, Ticket
from mailgate.core.model import OutgoingKind as K
from mailgate.core.render import Renderer
from mailgate.core.replykey import KeyRing, keyed_message_id
from mailgate.core.sla import Target
from mailgate.core.trim import trim_reply
from mailgate.core.trust import Trust, may_command
from mailgate.outbound.compose import RelayParts
from mailgate.outbound.kinds import Mail, Sending, Thread, build
from mailgate.outbound.queued import (
    QueuedMail,
    parts_to_relay,
    ticket_context,
)
from mailgate.service.log import get_logger
from mailgate.storage import ticketops as ops
from mailgate.storage.slaclock import SlaBook
from mailgate.storage.store import Tx
from mailgate.tickets.budget import MailBudget
from mailgate.tickets.effects import QueueMail

log = get_logger("mailgate.tickets.workflow")
HOUR = timedelta(hours=1)
MAX_QUOTED_CHARS = 20_000  # request text shown in a notification or summary


@dataclass(frozen=True, slots=True)
class ConversationSettings:
    instance: str = "mailgate"
    reopen_window: timedelta = timedelta(days=7)
    max_relay_bytes: int = 10 * 1024 * 1024
    relays_per_sender_per_hour: int = 20  # mail relayed to the team, per sender and ticket
    notify_team: bool = True
    keep_cc_informed: bool = True
    keys: KeyRing = field(default_factory=KeyRing)  # signs every mail to a person
    budget: MailBudget = field(default_factory=MailBudget)  # automatic mail per recipient
    # [security] from_header_is_proof: believe a trusted domain's From: without a key or
    # Authentication-Results (the old behaviour; only behind an MTA that rejects forgery).
    from_header_is_proof: bool = False
    team_notices_per_sender_per_hour: int = 5  # new requests from one sender, per department
    comments_from: str = "ticket"  # ticket: requester, Cc, agents | organisation: + domains
    organisation: frozenset[str] = frozenset()  # [security] trusted_domains (empty: all)


@dataclass(frozen=True, slots=True)
class Incoming:
    """The mail being handled, as the workflow needs it."""

    msg: Inbound
    raw: bytes
    message: int  # its messages row
    trust: Trust
    proven: frozenset[str] = frozenset()  # tickets a reply key in this mail proves
    light: Light | None = None  # a large mail's light view (largemail.py)

    @property
    def sender(self) -> str:
        assert self.msg.sender is not None  # the pipeline only hands over mail with a From
        return self.msg.sender.addr

    def proof(self, ref: str, from_header_is_proof: bool) -> str | None:
        """How this mail proves its sender for ticket `ref`, or None."""
        if ref in self.proven:
            return "key"
        if self.trust is Trust.VERIFIED:
            return "verified"
        if from_header_is_proof and may_command(self.trust):
            return "from-header"
        return None


class Workflow:
    def __init__(self, directory: Directory, renderer: Renderer, sla: SlaBook,
                 settings: ConversationSettings) -> None:
        self.directory = directory
        self.renderer = renderer
        self.sla = sla
        self.settings = settings
        self.mail = QueuedMail(directory, renderer, Sending(
            settings.instance, settings.keys, settings.budget))

    # --- a ticket's team ------------------------------------------------------------------

    async def _parts(self, raw: bytes, msg: Inbound, light: Light | None = None) -> RelayParts:
        return await parts_to_relay(raw, msg, self.settings.max_relay_bytes, light)

    async def notify_team(self, tx: Tx, st: ops.TicketState, text: str, now: datetime,
                          actor: str | None, transferred_from: str | None) -> None:
        """Tell the department's team about a ticket that came to them (a transfer: a new
        request's notification is decided in new_request.py)."""
        dept = self.directory.departments[st.department]
        to = self.directory.recipients(dept, ("team",), None)
        if not to:
            await tx.add_event(st.id, "team_notify_unsent", now,
                               detail={"reason": f"{dept.key} has no team and no notify address"})
            return
        due = await ops.first_response_due(tx, st.id)
        request = await ops.request_message_id(tx, st.id)
        calendar = self.directory.calendar_for(dept)
        context = {"text": text[:MAX_QUOTED_CHARS], "help": HELP, "actor": actor,
                   "transferred_from": transferred_from,
                   "due_at": due.astimezone(calendar.zone) if due else None}
        notice = QueueMail(K.NOTIFY_TEAM, dept.key, to, (st.id,), context,
                           variant="transferred", thread=Thread(request=request))
        mail = await self.mail.write(notice, [st], now)
        await self._send(tx, st.id, mail, "team_notified", now, detail={"to": list(to)},
                         visibility="internal")

    # --- follow-ups ----------------------------------------------------------------------

    async def follow_up(self, tx: Tx, ticket: Ticket, mail: Incoming, now: datetime) -> str:
        """Handle one human mail on one ticket; returns what it was (for the log)."""
        st = await ops.state(tx, ticket.id)
        dept = self.directory.departments.get(st.department)
        text = trim_reply(mail.msg.body)
        proof = mail.proof(st.ref, self.settings.from_header_is_proof)
        member = member_address(dept, mail.sender) if dept is not None else None
        if dept is not None and member is not None:
            if proof:
                return await self._from_agent(tx, st, dept, mail, parse_commands(text), now)
            return await self._unproven_member(tx, st, dept, member, mail, text, now)
        return await self._from_other(tx, st, dept, mail, text, proof, now)

    async def _from_agent(self, tx: Tx, st: ops.TicketState, dept: Department, mail: Incoming,
                          parsed: Parsed, now: datetime) -> str:
        problems = list(parsed.errors) or self._problems(st, dept, parsed.actions)
        if problems:
            await ops.set_text(tx, mail.message, parsed.text)
            await tx.add_event(st.id, "command_rejected", now, actor=mail.sender,
                               message=mail.message, detail={"problems": problems},
                               visibility="internal")
            await self._command_reply(tx, st, dept, mail, now, problems=problems)
            return "rejected"
        parts = await self._parts(mail.raw, mail.msg, mail.light)
        has_content = bool(parsed.text.strip() or parts.parts)
        kind = "note" if parsed.note else "reply" if has_content else "commands"
        await ops.set_text(tx, mail.message, parsed.text)
        detail: dict = {"role": "agent"}
        if parsed.commands:
            detail["commands"] = [str(c) for c in parsed.commands]
        await tx.add_event(st.id, kind, now, actor=mail.sender, message=mail.message,
                           detail=detail, visibility="public" if kind == "reply" else "internal")
        await tx.touch_ticket(st.id, now)
        if kind == "reply":
            await self._answered(tx, st, mail.sender, now)
        for command in parsed.actions:
            await self._run(tx, st, dept, command, mail, parsed, parts, now)
        resolving = any(c.name == "resolve" for c in parsed.actions)
        if kind == "note":
            await self._relay_to_team(tx, await ops.state(tx, st.id), mail, parsed.text, parts,
                                      now, kind="note")
        elif kind == "reply" and not resolving:
            await self._relay_to_requester(tx, await ops.state(tx, st.id), mail, parsed.text,
                                           parts, now)
        return kind

    async def _unproven_member(self, tx: Tx, st: ops.TicketState, dept: Department,
                               member: str, mail: Incoming, text: str, now: datetime) -> str:
        """A member's address, but nothing proves the mail is theirs: kept, internal,
        never relayed or obeyed; the member's own address is told how to act."""
        await ops.set_text(tx, mail.message, text)
        await tx.add_event(st.id, "reply", now, actor=mail.sender, message=mail.message,
                           detail={"unproven": mail.trust.value}, visibility="internal")
        log.warning("member.unproven", ticket=st.ref, sender=mail.sender,
                    trust=mail.trust.value)
        await self._notice(tx, st, dept, K.UNPROVEN_NOTICE, member, mail, now,
                           {"name": self._name(member, mail), "text": text[:2000]})
        return "unproven"

    async def _from_other(self, tx: Tx, st: ops.TicketState, dept: Department | None,
                          mail: Incoming, text: str, proof: str | None, now: datetime) -> str:
        requester = canonical(mail.sender) == canonical(st.requester)
        await ops.set_text(tx, mail.message, text)
        if not requester and not self._may_comment(st, mail.sender):
            # A stranger who knows (or guessed) a ticket number: kept, reaches nobody.
            await tx.add_event(st.id, "comment", now, actor=mail.sender, message=mail.message,
                               detail={"role": "outside", "not_relayed": "not on the ticket"},
                               visibility="internal")
            log.info("comment.kept", ticket=st.ref, sender=mail.sender)
            return "kept"
        parsed = parse_commands(text)
        if dept is not None and parsed.has_commands and not parsed.unknown_only:
            await self._refuse(tx, st, dept, mail, now,
                               f"{mail.sender} is not a member of {dept.name}",
                               reply=proof is not None)  # a forged From: gets no mail
        rating = parse_rating(text) if requester and st.survey_at else None
        if requester and proof is None:
            return await self._unproven_requester(tx, st, dept, mail, text, rating, now)
        if rating is not None:
            return await self._rated(tx, st, dept, mail, *rating, now)
        if not requester:
            # Someone else on the ticket (a colleague in Cc): a comment. It is relayed to
            # the team like a reply, but only the requester reopens, resumes a waiting
            # ticket or asks for the next response.
            await tx.add_event(st.id, "comment", now, actor=mail.sender,
                               message=mail.message,
                               detail={"role": "other"} | self._unverified(proof),
                               visibility="public")
            await tx.touch_ticket(st.id, now)
            if dept is not None:
                parts = await self._parts(mail.raw, mail.msg, mail.light)
                await self._relay_to_team(tx, st, mail, text, parts, now, kind="comment",
                                          unverified=proof is None)
            return "comment"
        reopened = False
        if st.status in (Status.RESOLVED, Status.CLOSED):
            await self._reopen(tx, st, now, actor=mail.sender, why="the requester replied")
            reopened = True
        elif st.status is Status.WAITING:
            await ops.set_status(tx, st.id, Status.OPEN, now)
        await tx.add_event(st.id, "reply", now, actor=mail.sender, message=mail.message,
                           detail={"role": "requester"}, visibility="public")
        await tx.touch_ticket(st.id, now)
        await self.sla.requester_wrote(tx, st.id, now)
        if dept is not None:
            parts = await self._parts(mail.raw, mail.msg, mail.light)
            await self._relay_to_team(tx, await ops.state(tx, st.id), mail, text, parts, now,
                                      kind="reply", reopened=reopened)
        return "reopened" if reopened else "reply"

    async def _unproven_requester(self, tx: Tx, st: ops.TicketState, dept: Department | None,
                                  mail: Incoming, text: str, rating: tuple[int, str] | None,
                                  now: datetime) -> str:
        """The requester's address, but not a reply to our mail and not vouched for by our
        MTA: it may be forged. No reopen, no rating, no clock; the team sees it, marked."""
        detail = {"role": "requester", "unproven": mail.trust.value}
        if rating is not None:
            detail["rating_ignored"] = rating[0]
        await tx.add_event(st.id, "reply", now, actor=mail.sender, message=mail.message,
                           detail=detail, visibility="public")
        log.warning("requester.unproven", ticket=st.ref, sender=mail.sender,
                    trust=mail.trust.value)
        if dept is not None:
            parts = await self._parts(mail.raw, mail.msg, mail.light)
            await self._relay_to_team(tx, st, mail, text, parts, now, kind="reply",
                                      unverified=True)
        return "unverified"

    def _may_comment(self, st: ops.TicketState, sender: str) -> bool:
        """People on the ticket's Cc, agents of other roles (notify lists), and with
        comments_from = "organisation" anyone in the organisation's domains."""
        key = canonical(sender)
        if any(canonical(a) == key for a in st.cc):
            return True
        dept = self.directory.departments.get(st.department)
        if dept is not None and is_agent(dept, sender):
            return True
        if self.settings.comments_from != "organisation":
            return False
        organisation = self.settings.organisation
        return not organisation or within(domain_of(sender), organisation)

    @staticmethod
    def _unverified(proof: str | None) -> dict:
        return {} if proof else {"unverified": True}

    # --- commands -------------------------------------------------------------------------

    def _problems(self, st: ops.TicketState, dept: Department,
                  commands: tuple[Command, ...]) -> list[str]:
        """What would stop these commands, checked before any of them runs."""
        problems = []
        ended = st.status in (Status.RESOLVED, Status.CLOSED)
        for c in commands:
            if c.name == "assign":
                found, problem = self.find_agent(dept, c.arg)
                if found is None:
                    problems.append(f"#assign {c.arg}: {problem}")
            elif c.name == "transfer":
                target = self.find_department(c.arg)
                if target is None:
                    problems.append(f"#transfer {c.arg}: no such department (known: "
                                    f"{', '.join(self.directory.departments)})")
                elif target.key == st.department:
                    problems.append(f"#transfer {c.arg}: {st.ref} is already with "
                                    f"{target.name}")
            elif c.name == "reopen" and not ended:
                problems.append(f"#reopen: {st.ref} is {st.status.value}, not resolved")
            elif c.name == "resolve" and ended:
                problems.append(f"#resolve: {st.ref} is already {st.status.value}")
            elif c.name == "close" and st.status is Status.CLOSED:
                problems.append(f"#close: {st.ref} is already closed")
            elif c.name == "waiting" and ended:
                problems.append(f"#waiting: {st.ref} is {st.status.value}; #reopen it first")
        return problems

    def find_agent(self, dept: Department, who: str) -> tuple[str | None, str]:
        """The address of the department's agent meant by `who` (an address, the part
        before the @, or a first name), or None and the problem in words."""
        who = who.strip().strip("<>").lower()
        agents = [a for a in (*dept.team, dept.lead, dept.head) if a]
        if "@" in who:
            found = member_address(dept, who)
            return (found, "") if found else (None, f"not a member of {dept.name}")
        matches = [a for a in agents if a.partition("@")[0] == who]
        if not matches:
            matches = [a for a in agents
                       if (p := self.directory.person(a)) and p.name
                       and p.name.split()[0].lower() == who]
        if len(matches) == 1:
            return matches[0], ""
        if matches:
            return None, f"ambiguous ({', '.join(matches)}); give the address"
        return None, f"no member of {dept.name} is called {who!r} ({', '.join(agents)})"

    def find_department(self, name: str) -> Department | None:
        name = name.strip().lower()
        for dept in self.directory.departments.values():
            if name in (dept.key.lower(), dept.prefix.lower(), dept.name.lower()):
                return dept
        return None

    async def _run(self, tx: Tx, st: ops.TicketState, dept: Department, command: Command,
                   mail: Incoming, parsed: Parsed, parts: RelayParts, now: datetime) -> None:
        actor = mail.sender
        detail = {"command": str(command)}
        name = command.name
        if name in ("take", "assign"):
            who = actor if name == "take" else self.find_agent(dept, command.arg)[0]
            await ops.set_field(tx, st.id, "assignee", who, now)
            if st.status is Status.NEW:
                await ops.set_status(tx, st.id, Status.OPEN, now)
            await tx.add_event(st.id, "assigned", now, actor=actor,
                               detail=detail | {"assignee": who})
        elif name == "priority":
            await ops.set_field(tx, st.id, "priority", Priority(command.arg).value, now)
            await tx.add_event(st.id, "priority", now, actor=actor,
                               detail=detail | {"from": st.priority.value, "to": command.arg})
        elif name == "waiting":
            await ops.set_status(tx, st.id, Status.WAITING, now)
            await self.sla.pause(tx, st.id, now)
            await tx.add_event(st.id, "waiting", now, actor=actor, detail=detail)
        elif name == "reopen":
            await self._reopen(tx, st, now, actor=actor, why=str(command))
        elif name == "close":
            await ops.set_status(tx, st.id, Status.CLOSED, now)
            await self.sla.pause(tx, st.id, now)  # closed: clocks stop, none counts as met
            await tx.add_event(st.id, "closed", now, actor=actor, detail=detail)
        elif name == "resolve":
            await self._resolve(tx, st, dept, mail, parsed, parts, now, command.arg)
        elif name == "transfer":
            await self._transfer(tx, st, dept, command, actor, now)

    async def _reopen(self, tx: Tx, st: ops.TicketState, now: datetime, actor: str,
                      why: str) -> None:
        await ops.set_status(tx, st.id, Status.OPEN, now)
        await self.sla.resume(tx, st.id, now)  # a closed ticket's clocks were paused
        await self.sla.start(tx, st.id, Target.RESOLUTION, now)  # a new round, full budget
        await tx.add_event(st.id, "reopened", now, actor=actor,
                           detail={"from": st.status.value, "why": why})
        log.info("ticket.reopened", ticket=st.ref, by=actor)

    async def _answered(self, tx: Tx, st: ops.TicketState, actor: str, now: datetime) -> None:
        await self.clocks_answered(tx, st.id, actor, now)
        if st.status is Status.NEW:
            await ops.set_status(tx, st.id, Status.OPEN, now)

    async def clocks_answered(self, tx: Tx, ticket_id: int, actor: str,
                              now: datetime) -> None:
        """An agent answered: the response clocks that ran are met (recorded once)."""
        met = await self.sla.meet(tx, ticket_id, (Target.FIRST_RESPONSE, Target.NEXT_RESPONSE),
                                  now)
        if met:
            await tx.add_event(ticket_id, "sla_met", now, actor=actor,
                               detail={"targets": [t.value for t in met]})

    async def _resolve(self, tx: Tx, st: ops.TicketState, dept: Department, mail: Incoming,
                       parsed: Parsed, parts: RelayParts, now: datetime,
                       summary: str | None) -> None:
        """`#resolve [summary]`: what was done is the summary and the mail's text (not when
        the mail is a #note: that stays internal), else the last public answer."""
        await ops.set_status(tx, st.id, Status.RESOLVED, now)
        met = await self.sla.meet(
            tx, st.id, (Target.FIRST_RESPONSE, Target.NEXT_RESPONSE, Target.RESOLUTION), now)
        await tx.add_event(st.id, "resolved", now, actor=mail.sender,
                           detail={"command": "#resolve", "met": [t.value for t in met]})
        said = "" if parsed.note else parsed.text.strip()  # a #note's text stays internal
        done = "\n\n".join(part for part in ((summary or "").strip(), said) if part) \
            or await ops.last_public_answer(tx, st.id)
        asked = await ops.request_text(tx, st.id)
        context = self._context(st, dept) | {
            "asked": asked.strip()[:MAX_QUOTED_CHARS], "done": done[:MAX_QUOTED_CHARS],
            "time_to_resolve": span(now - st.created_at)}
        key = keyed_message_id(self.settings.keys, (st.ref,), st.requester, "rating", now)
        cc = self._cc(st, mail.sender)
        summary_mail = functools.partial(
            self._mails, st, dept, K.SUMMARY, (st.requester,), now=now,
            attachments=parts.parts, cc=cc, thread=await self._requester_thread(tx, st))
        # The rating links carry the requester's key: her copy only. The people in Cc get
        # the same summary with plain links (a rating is the requester's to give anyway).
        mail_out = summary_mail(self._rating(dept, context, key), only=(st.requester,))
        if cc:
            mail_out += summary_mail(self._rating(dept, context, ""), only=cc,
                                     first=mail_out[0].message_id)
        await self._send(tx, st.id, mail_out, "summary_sent", now, visibility="public",
                         detail={"to": [st.requester]} | ({"cc": list(cc)} if cc else {}))
        await ops.set_field(tx, st.id, "survey_at", now.timestamp(), now)
        log.info("ticket.resolved", ticket=st.ref, by=mail.sender)

    @staticmethod
    def _rating(dept: Department, context: dict, key: str) -> dict:
        """The summary's context with its rating links (carrying `key`, if any)."""
        links = rating_links(dept.address, context["ticket"]["ref"], key)
        return context | {"rating_links": links}

    async def _transfer(self, tx: Tx, st: ops.TicketState, dept: Department, command: Command,
                        actor: str, now: datetime) -> None:
        """Same ticket and number, new department: the requester's thread stays whole;
        clocks restart with the new department's policy and its team is told."""
        target = self.find_department(command.arg)
        assert target is not None  # checked by _problems
        await ops.set_field(tx, st.id, "department", target.key, now)
        await ops.set_field(tx, st.id, "assignee", None, now)
        await self.sla.meet(tx, st.id, (Target.NEXT_RESPONSE,), now)
        for clock in (Target.FIRST_RESPONSE, Target.RESOLUTION):
            await self.sla.start(tx, st.id, clock, now)
        await tx.add_event(st.id, "transferred", now, actor=actor,
                           detail={"command": str(command), "from": dept.key, "to": target.key})
        text = await ops.request_text(tx, st.id)
        await self.notify_team(tx, await ops.state(tx, st.id), text, now, actor=actor,
                               transferred_from=dept.name)
        log.info("ticket.transferred", ticket=st.ref, dept=target.key, by=actor)

    async def _rated(self, tx: Tx, st: ops.TicketState, dept: Department | None,
                     mail: Incoming, rating: int, comment: str, now: datetime) -> str:
        await ops.rate(tx, st.id, rating, comment, now)
        await tx.add_event(st.id, "rated", now, actor=mail.sender, message=mail.message,
                           detail={"rating": rating, "comment": comment[:500]},
                           visibility="internal")
        if st.rating is None and dept is not None:  # thanked once, not for a changed mind
            context = self._context(st, dept) | {"rating": rating}
            out = self._mails(st, dept, K.THANKS, (st.requester,), context, now,
                              thread=await self._requester_thread(tx, st))
            await self._send(tx, st.id, out, "thanks_sent", now, visibility="public")
        log.info("ticket.rated", ticket=st.ref, rating=rating)
        return "rated"

    # --- mail out -------------------------------------------------------------------------

    async def _relay_to_requester(self, tx: Tx, st: ops.TicketState, mail: Incoming,
                                  text: str, parts: RelayParts, now: datetime) -> None:
        dept = self.directory.departments[st.department]
        name = self._name(mail.sender, mail)
        context = self._context(st, dept) | {"text": text, "agent": {"name": name},
                                             "left_out": list(parts.left_out)}
        cc = self._cc(st, mail.sender)
        out = self._mails(st, dept, K.REPLY, (st.requester,), context, now,
                          thread=await self._requester_thread(tx, st),
                          from_name=f"{name} via {dept.name}" if name else dept.name,
                          attachments=parts.parts, cc=cc)
        await self._send(tx, st.id, out, "relayed", now, actor=mail.sender,
                         detail={"to": [st.requester]} | ({"cc": list(cc)} if cc else {}),
                         visibility="public")

    def _name(self, address: str, mail: Incoming) -> str:
        """A person's name: the directory's, else what their From: says."""
        person = self.directory.person(address)
        return (person.name if person and person.name else None) or (
            mail.msg.sender.name if mail.msg.sender else "")

    def _cc(self, st: ops.TicketState, author: str) -> tuple[str, ...]:
        """Who is copied on mail to the requester: the request's Cc, when so configured."""
        if not self.settings.keep_cc_informed:
            return ()
        return tuple(a for a in st.cc if a not in (author, st.requester))

    async def _relay_to_team(self, tx: Tx, st: ops.TicketState, mail: Incoming, text: str,
                             parts: RelayParts, now: datetime, kind: str,
                             reopened: bool = False, unverified: bool = False) -> None:
        dept = self.directory.departments[st.department]
        roles = ("assignee",) if st.assignee and kind != "note" else ("team",)
        to = tuple(a for a in self.directory.recipients(dept, roles, st.assignee)
                   if a != mail.sender)
        if not to:
            return
        relayed = 0 if is_agent(dept, mail.sender) else await ops.relays_from(
            tx, st.id, mail.sender, now - timedelta(hours=1))
        if relayed >= self.settings.relays_per_sender_per_hour:
            # A flood on one ticket (a script, a misbehaving client) is kept on the ticket
            # but stops filling the team's inboxes; the next hour relays again.
            await tx.add_event(st.id, "relay_suppressed", now, actor=mail.sender,
                               message=mail.message, visibility="internal",
                               detail={"reason": f"rate limit: {relayed} relayed in the last "
                                              "hour from this sender on this ticket"})
            log.warning("relay.suppressed", ticket=st.ref, sender=mail.sender)
            return
        author = mail.msg.sender
        context = self._context(st, dept) | {
            "text": text, "kind": kind, "reopened": reopened, "unverified": unverified,
            "author": {"name": author.name if author else "", "address": mail.sender},
            "left_out": list(parts.left_out)}
        name = author.name if author and author.name else mail.sender
        out = self._mails(st, dept, K.NOTE_TEAM if kind == "note" else K.RELAY_TEAM, to,
                          context, now, variant="unverified" if unverified else "proven",
                          thread=await self._team_thread(tx, st),
                          from_name=f"{name}{' (unverified)' * unverified} via {dept.name}",
                          attachments=parts.parts)
        await self._send(tx, st.id, out, "relayed", now, actor=mail.sender,
                         detail={"to": list(to)} | ({"unverified": True} if unverified else {}),
                         visibility="internal")

    async def _refuse(self, tx: Tx, st: ops.TicketState, dept: Department, mail: Incoming,
                      now: datetime, reason: str, reply: bool = True) -> None:
        await tx.add_event(st.id, "command_refused", now, actor=mail.sender,
                           detail={"reason": reason}, visibility="internal")
        log.warning("command.refused", ticket=st.ref, sender=mail.sender, reason=reason)
        if reply:
            await self._command_reply(tx, st, dept, mail, now, refused=reason)

    async def _command_reply(self, tx: Tx, st: ops.TicketState, dept: Department,
                             mail: Incoming, now: datetime, problems: list[str] | None = None,
                             refused: str | None = None) -> None:
        """Tell the sender why nothing happened: once per mail, within their budget."""
        await self._notice(tx, st, dept, K.COMMAND_REPLY, mail.sender, mail,
                           now, {"problems": problems or [], "help": HELP,
                                 "refused": refused is not None, "reason": refused or ""})

    async def not_kept(self, tx: Tx, ticket: Ticket, mail: Incoming, files: list[str],
                       limit: str, now: datetime) -> None:
        """Tell a person whose reply brought more attachments than [limits] allows which
        files were not kept (and so reached nobody), within their budget."""
        st = await ops.state(tx, ticket.id)
        dept = self.directory.departments.get(st.department)
        if dept is None:
            return
        try:
            await self._notice(tx, st, dept, K.NOT_KEPT, mail.sender, mail, now,
                               {"name": mail.msg.sender.name if mail.msg.sender else "",
                                "files": files, "max_attachment_size": limit},
                               event_detail={"files": files})
        except TemplateNotFound:  # a notice must never cost the reply itself
            log.warning("template.missing", template="not_kept", ticket=st.ref)

    async def _notice(self, tx: Tx, st: ops.TicketState, dept: Department, kind: K,
                      to: str, mail: Incoming, now: datetime, extra: dict,
                      event_detail: dict | None = None) -> None:
        """An automatic answer to one person's mail, threaded on it; drawn from their
        budget of automatic mail (budget.py), so a flood of forged mail cannot turn us
        into a mail bomb."""
        refusal = await self.settings.budget.refusal(tx, to, now)
        if refusal:
            await tx.add_event(st.id, f"{kind.replace('-', '_')}_suppressed", now,
                               actor=mail.sender, detail={"reason": refusal},
                               visibility="internal")
            log.info("notice.suppressed", ticket=st.ref, kind=kind, reason=refusal)
            return
        out = self._mails(st, dept, kind, (to,), self._context(st, dept) | extra, now,
                          subject=mail.msg.subject or st.subject,
                          thread=Thread(answered=mail.msg.message_id or None))
        await self._send(tx, st.id, out, kind.replace("-", "_"), now,
                         detail={"to": [to]} | (event_detail or {}), visibility="internal")

    async def _requester_thread(self, tx: Tx, st: ops.TicketState) -> Thread:
        """The requester's own Message-IDs (Threading.REQUESTER says why only those)."""
        return Thread(request=await ops.request_message_id(tx, st.id),
                      requester_last=await ops.last_from(tx, st.id, st.requester))

    async def _team_thread(self, tx: Tx, st: ops.TicketState) -> Thread:
        return Thread(request=await ops.request_message_id(tx, st.id))

    def _mails(self, st: ops.TicketState, dept: Department, kind: K, to: tuple[str, ...],
               context: dict, now: datetime, *, thread: Thread, subject: str | None = None,
               variant: str = "", from_name: str | None = None,
               attachments: tuple[bytes, ...] = (), cc: tuple[str, ...] = (),
               only: tuple[str, ...] | None = None, first: str | None = None,
               ) -> list[Outgoing]:
        """A mail about this ticket from its department, as outbound/kinds.py's table
        says for its kind: one copy per recipient, each with that person's reply key.
        `subject`: the one it answers (else the ticket's); `only` and `first`: see
        kinds.build."""
        mail = Mail(kind, from_name or dept.name, dept.address, to,
                    fields={"subject": st.subject if subject is None else subject},
                    context=context, department=dept.key, variant=variant,
                    tickets=(st.ref,), ticket_id=st.id, thread=thread, cc=cc,
                    attachments=attachments)
        return build(mail, self.renderer, self.mail.sending, now, only=only, first=first)

    async def _send(self, tx: Tx, ticket_id: int, mails: list[Outgoing], event: str,
                    now: datetime, *, actor: str | None = None, detail: dict | None = None,
                    visibility: str | None = None) -> None:
        """Queue the copies; the event names the first (the others are its twins)."""
        first = None
        for mail in mails:
            outgoing = await tx.enqueue(mail, now)
            first = first or outgoing
        await tx.add_event(ticket_id, event, now, actor=actor, outgoing=first,
                           detail=detail, visibility=visibility)

    def _context(self, st: ops.TicketState, dept: Department) -> dict:
        return ticket_context(st, dept)


def span(delta: timedelta) -> str:
    """Wall-clock time in words, to the minute: "2 days 3 hours", "45 minutes"."""
    minutes = max(0, int(delta.total_seconds() // 60))
    days, rest = divmod(minutes, 1440)
    hours, minutes = divmod(rest, 60)
    parts = [f"{n} {unit}{'s' if n != 1 else ''}"
             for n, unit in ((days, "day"), (hours, "hour"), (minutes, "minute")) if n]
    return " ".join(parts[:2]) or "less than a minute"
