"""Working a ticket by email, decided: what a person's mail to existing tickets does.

The pipeline hands over every human mail (MailKind.REQUEST) that threads into tickets,
with the facts it read (effects.TicketFacts per ticket, the automatic mail drawn this hour);
`Conversation.decide` returns the effects, storage/apply.py writes them. Automatic mail
never gets here, so nothing here can answer an auto-reply or a bounce. Pure: no I/O.

A From: line proves nothing. What a mail may *do* depends on its proof (`Incoming.proof`):
a reply key for this ticket and this sender (replykey.py: the reply echoes the Message-ID
of mail we sent that person about the ticket; none counts when our own MTA says the From:
failed DMARC, see pipeline._proven), or a pass from our own MTA's Authentication-Results
(trust.py). In order:

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
reply key, so mail to several people goes out as one copy each (outbound/kinds.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mailgate.config.directory import Department, Directory, is_agent, member_address
from mailgate.core.addresses import canonical, domain_of, within
from mailgate.core.commands import HELP, Command, Parsed, parse_commands, parse_rating, rating_links
from mailgate.core.model import Inbound, OutgoingKind, Priority, Status
from mailgate.core.replykey import KeyRing, keyed_message_id
from mailgate.core.sla import Target
from mailgate.core.trim import trim_reply
from mailgate.core.trust import Trust, may_command
from mailgate.outbound.compose import RelayParts
from mailgate.outbound.kinds import Thread
from mailgate.tickets.budget import MailBudget
from mailgate.tickets.changes import TicketChanges
from mailgate.tickets.clocks import ClockPolicy
from mailgate.tickets.effects import (
    AddEvent,
    Drawn,
    Effect,
    Log,
    QueueMail,
    SetMessageText,
    TicketFacts,
)
from mailgate.tickets.new_request import MAX_QUOTED_CHARS
from mailgate.tickets.state import TicketState

K = OutgoingKind
HOUR = timedelta(hours=1)
# What #resolve and #transfer read besides the ticket's state (TicketFacts' texts).
NEEDS_TEXTS = frozenset({"resolve", "transfer"})


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
    """The mail being handled, as the conversation needs it."""

    msg: Inbound
    trust: Trust
    proven: frozenset[str] = frozenset()  # tickets a reply key in this mail proves
    # Tickets the sender's reply key in this mail was for, but others had seen that key
    # (core/exposure.py): it proves nothing, and the notice says why.
    exposed: frozenset[str] = frozenset()

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


@dataclass(frozen=True, slots=True)
class Replied:
    effects: list[Effect]
    kind: str  # what the mail was on the last ticket (for the log)


def needs_texts(msg: Inbound) -> bool:
    """Whether deciding about this mail may need the request's and the last answer's
    texts: only a #resolve or #transfer does, so other mail does not read them."""
    return any(c.name in NEEDS_TEXTS for c in parse_commands(trim_reply(msg.body)).commands)


def budget_recipients(mail: Incoming, tickets: list[TicketState],
                      directory: Directory) -> list[str]:
    """Whose budget of automatic mail a decision may ask about: the sender's, and the
    directory address of a member whose address the mail used without proof."""
    found = [mail.sender]
    for st in tickets:
        dept = directory.departments.get(st.department)
        member = member_address(dept, mail.sender) if dept is not None else None
        if member and member not in found:
            found.append(member)
    return found


class _Plan:
    """The effects so far, and the automatic mail they draw on."""

    def __init__(self, mail: Incoming, drawn: Drawn, budget: MailBudget, now: datetime) -> None:
        self.mail, self.budget, self.now = mail, budget, now
        self.effects: list[Effect] = []
        self.mailboxes, self.domains = dict(drawn.mailboxes), dict(drawn.domains)

    def add(self, *effects: Effect) -> None:
        self.effects.extend(effects)

    def event(self, t: TicketChanges, kind: str, *, actor: str | None = None, of_mail: bool = False,
              detail: dict | None = None, visibility: str | None = None) -> AddEvent:
        t.mail_on_it = t.mail_on_it or of_mail
        return AddEvent(t.st.id, kind, actor, of_mail, detail, visibility)

    def log(self, level: str, event: str, **fields: object) -> None:
        self.effects.append(Log(level, event, fields))

    def refusal(self, recipient: str) -> str | None:
        mailbox, domain = self.budget.keys(recipient)
        return self.budget.judge(recipient, self.mailboxes.get(mailbox, 0),
                                 self.domains.get(domain, 0) if domain else 0)

    def draw(self, recipients: tuple[str, ...]) -> None:
        """Queued mail on its recipients' budgets: one outbox row each."""
        for recipient in dict.fromkeys(recipients):
            mailbox, domain = self.budget.keys(recipient)
            self.mailboxes[mailbox] = self.mailboxes.get(mailbox, 0) + 1
            if domain is not None:
                self.domains[domain] = self.domains.get(domain, 0) + 1


class Conversation:
    def __init__(self, directory: Directory, clocks: ClockPolicy,
                 settings: ConversationSettings) -> None:
        self.directory = directory
        self.clocks = clocks
        self.settings = settings

    def decide(self, mail: Incoming, tickets: list[TicketFacts], parts: RelayParts,
               drawn: Drawn, now: datetime, dropped: list[str] | None = None,
               limit: str = "") -> Replied:
        """One human mail on its tickets; `dropped`: its attachments not kept (over
        `limit`), which its sender is told about once."""
        plan = _Plan(mail, drawn, self.settings.budget, now)
        kind = ""
        worked = [TicketChanges(facts, self.clocks, now) for facts in tickets]
        for t in worked:
            kind = self._follow_up(plan, t, parts)
            plan.add(*t.effects())
        if dropped and worked:
            self._not_kept(plan, worked[0], dropped, limit)
        return Replied(plan.effects, kind)

    def noted(self, mail: Incoming, tickets: list[TicketFacts], kind: str, reason: str,
              now: datetime) -> list[Effect]:
        """Mail that is only noted on its tickets: automatic mail (kind: its MailKind), or
        bulk-looking mail from a person ("reply"), whose answers and asks still move the
        clocks -- each only with proof of who wrote it, or a forged "Precedence: bulk"
        mail would silence an SLA."""
        plan = _Plan(mail, Drawn(), self.settings.budget, now)
        actor = mail.msg.sender.addr if mail.msg.sender else None
        for facts in tickets:
            t = TicketChanges(facts, self.clocks, now)
            plan.add(plan.event(t, kind, actor=actor, of_mail=True,
                                detail={"reason": reason} if reason else None))
            t.touch()
            if kind == "reply" and actor and mail.proof(t.st.ref,
                                                        self.settings.from_header_is_proof):
                dept = self.directory.departments.get(t.st.department)
                if dept and member_address(dept, actor):
                    self.clocks_answered(plan, t, actor)
                elif canonical(actor) == canonical(t.st.requester):
                    t.requester_wrote()
            plan.add(*t.effects())
        return plan.effects

    def _follow_up(self, plan: _Plan, t: TicketChanges, parts: RelayParts) -> str:
        mail, st = plan.mail, t.st
        dept = self.directory.departments.get(st.department)
        text = trim_reply(mail.msg.body)
        proof = mail.proof(st.ref, self.settings.from_header_is_proof)
        member = member_address(dept, mail.sender) if dept is not None else None
        if dept is not None and member is not None:
            if proof:
                return self._from_agent(plan, t, dept, parse_commands(text), parts)
            return self._unproven_member(plan, t, dept, member, text)
        return self._from_other(plan, t, dept, text, proof, parts)

    # --- who wrote ------------------------------------------------------------------------

    def _from_agent(self, plan: _Plan, t: TicketChanges, dept: Department, parsed: Parsed,
                    parts: RelayParts) -> str:
        mail, st = plan.mail, t.st
        problems = list(parsed.errors) or self._problems(st, dept, parsed.actions)
        if problems:
            plan.add(SetMessageText(parsed.text),
                     plan.event(t, "command_rejected", actor=mail.sender, of_mail=True,
                                detail={"problems": problems}, visibility="internal"))
            self._command_reply(plan, t, dept, problems=problems)
            return "rejected"
        has_content = bool(parsed.text.strip() or parts.parts)
        kind = "note" if parsed.note else "reply" if has_content else "commands"
        detail: dict = {"role": "agent"}
        if parsed.commands:
            detail["commands"] = [str(c) for c in parsed.commands]
        plan.add(SetMessageText(parsed.text),
                 plan.event(t, kind, actor=mail.sender, of_mail=True, detail=detail,
                            visibility="public" if kind == "reply" else "internal"))
        t.touch()
        if kind == "reply":
            self._answered(plan, t, mail.sender)
        for command in parsed.actions:
            self._run(plan, t, st, dept, command, parsed, parts)
        resolving = any(c.name == "resolve" for c in parsed.actions)
        if kind == "note":
            self._relay_to_team(plan, t, parsed.text, parts, kind="note")
        elif kind == "reply" and not resolving:
            self._relay_to_requester(plan, t, parsed.text, parts)
        return kind

    def _unproven_member(self, plan: _Plan, t: TicketChanges, dept: Department, member: str,
                         text: str) -> str:
        """A member's address, but nothing proves the mail is theirs: kept, internal,
        never relayed or obeyed; the member's own address is told how to act."""
        mail = plan.mail
        exposed = t.st.ref in mail.exposed
        plan.add(SetMessageText(text),
                 plan.event(t, "reply", actor=mail.sender, of_mail=True,
                            detail={"unproven": mail.trust.value} | _exposed(exposed),
                            visibility="internal"))
        plan.log("warning", "member.unproven", ticket=t.st.ref, sender=mail.sender,
                 trust=mail.trust.value, exposed_key=exposed)
        self._notice(plan, t, dept, K.UNPROVEN_NOTICE, member,
                     {"name": self._name(member, mail), "text": text[:2000],
                      "replayable": mail.trust is Trust.REPLAYABLE, "exposed": exposed})
        return "unproven"

    def _from_other(self, plan: _Plan, t: TicketChanges, dept: Department | None, text: str,
                    proof: str | None, parts: RelayParts) -> str:
        mail, st = plan.mail, t.st
        requester = canonical(mail.sender) == canonical(st.requester)
        plan.add(SetMessageText(text))
        if not requester and not self._may_comment(st, mail.sender):
            # A stranger who knows (or guessed) a ticket number: kept, reaches nobody.
            plan.add(plan.event(t, "comment", actor=mail.sender, of_mail=True,
                                detail={"role": "outside", "not_relayed": "not on the ticket"},
                                visibility="internal"))
            plan.log("info", "comment.kept", ticket=st.ref, sender=mail.sender)
            return "kept"
        parsed = parse_commands(text)
        if dept is not None and parsed.has_commands and not parsed.unknown_only:
            self._refuse(plan, t, dept, f"{mail.sender} is not a member of {dept.name}",
                         reply=proof is not None)  # a forged From: gets no mail
        rating = parse_rating(text) if requester and st.survey_at else None
        if requester and proof is None:
            return self._unproven_requester(plan, t, dept, text, rating, parts)
        if rating is not None:
            return self._rated(plan, t, dept, *rating)
        if not requester:
            # Someone else on the ticket (a colleague in Cc): a comment. It is relayed to
            # the team like a reply, but only the requester reopens, resumes a waiting
            # ticket or asks for the next response.
            plan.add(plan.event(t, "comment", actor=mail.sender, of_mail=True,
                                detail={"role": "other"} | _unverified(proof),
                                visibility="public"))
            t.touch()
            if dept is not None:
                self._relay_to_team(plan, t, text, parts, kind="comment",
                                    unverified=proof is None, state=st)
            return "comment"
        reopened = False
        if st.status in (Status.RESOLVED, Status.CLOSED):
            self._reopen(plan, t, actor=mail.sender, why="the requester replied")
            reopened = True
        elif st.status is Status.WAITING:
            t.set_status(Status.OPEN)
        plan.add(plan.event(t, "reply", actor=mail.sender, of_mail=True,
                            detail={"role": "requester"}, visibility="public"))
        t.touch()
        t.requester_wrote()
        if dept is not None:
            self._relay_to_team(plan, t, text, parts, kind="reply", reopened=reopened)
        return "reopened" if reopened else "reply"

    def _unproven_requester(self, plan: _Plan, t: TicketChanges, dept: Department | None,
                            text: str, rating: tuple[int, str] | None,
                            parts: RelayParts) -> str:
        """The requester's address, but not a reply to our mail and not vouched for by our
        MTA: it may be forged. No reopen, no rating, no clock; the team sees it, marked."""
        mail = plan.mail
        detail = {"role": "requester", "unproven": mail.trust.value} \
            | _exposed(t.st.ref in mail.exposed)
        if rating is not None:
            detail["rating_ignored"] = rating[0]
        plan.add(plan.event(t, "reply", actor=mail.sender, of_mail=True, detail=detail,
                            visibility="public"))
        plan.log("warning", "requester.unproven", ticket=t.st.ref, sender=mail.sender,
                 trust=mail.trust.value)
        if dept is not None:
            self._relay_to_team(plan, t, text, parts, kind="reply", unverified=True,
                                state=t.facts.state)
        return "unverified"

    def _may_comment(self, st: TicketState, sender: str) -> bool:
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

    # --- commands -------------------------------------------------------------------------

    def _problems(self, st: TicketState, dept: Department,
                  commands: tuple[Command, ...]) -> list[str]:
        """What would stop these commands, checked before any of them runs."""
        problems = []
        ended = st.status in (Status.RESOLVED, Status.CLOSED)
        for c in commands:
            if c.name == "assign":
                found, problem = find_agent(self.directory, dept, c.arg)
                if found is None:
                    problems.append(f"#assign {c.arg}: {problem}")
            elif c.name == "transfer":
                target = find_department(self.directory, c.arg)
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

    def _run(self, plan: _Plan, t: TicketChanges, st: TicketState, dept: Department,
             command: Command, parsed: Parsed, parts: RelayParts) -> None:
        """One command; `st` is the ticket as the mail found it."""
        actor = plan.mail.sender
        detail = {"command": str(command)}
        name = command.name
        if name in ("take", "assign"):
            who = actor if name == "take" else find_agent(self.directory, dept, command.arg)[0]
            t.set_field("assignee", who)
            if st.status is Status.NEW:
                t.set_status(Status.OPEN)
            plan.add(plan.event(t, "assigned", actor=actor, detail=detail | {"assignee": who}))
        elif name == "priority":
            t.set_field("priority", Priority(command.arg).value)
            plan.add(plan.event(t, "priority", actor=actor,
                                detail=detail | {"from": st.priority.value, "to": command.arg}))
        elif name == "waiting":
            t.set_status(Status.WAITING)
            t.pause()
            plan.add(plan.event(t, "waiting", actor=actor, detail=detail))
        elif name == "reopen":
            self._reopen(plan, t, actor=actor, why=str(command), was=st.status)
        elif name == "close":
            t.set_status(Status.CLOSED)
            t.pause()  # closed: clocks stop, none counts as met
            plan.add(plan.event(t, "closed", actor=actor, detail=detail))
        elif name == "resolve":
            self._resolve(plan, t, st, dept, parsed, parts, command.arg)
        elif name == "transfer":
            self._transfer(plan, t, dept, command)

    def _reopen(self, plan: _Plan, t: TicketChanges, actor: str, why: str,
                was: Status | None = None) -> None:
        was = was or t.st.status
        t.set_status(Status.OPEN)
        t.resume()  # a closed ticket's clocks were paused
        t.start(Target.RESOLUTION)  # a new round, full budget
        plan.add(plan.event(t, "reopened", actor=actor, detail={"from": was.value, "why": why}))
        plan.log("info", "ticket.reopened", ticket=t.st.ref, by=actor)

    def _answered(self, plan: _Plan, t: TicketChanges, actor: str) -> None:
        status = t.st.status
        self.clocks_answered(plan, t, actor)
        if status is Status.NEW:
            t.set_status(Status.OPEN)

    def clocks_answered(self, plan: _Plan, t: TicketChanges, actor: str) -> None:
        """An agent answered: the response clocks that ran are met (recorded once)."""
        met = t.meet((Target.FIRST_RESPONSE, Target.NEXT_RESPONSE))
        if met:
            plan.add(plan.event(t, "sla_met", actor=actor,
                                detail={"targets": [m.value for m in met]}))

    def _resolve(self, plan: _Plan, t: TicketChanges, st: TicketState, dept: Department,
                 parsed: Parsed, parts: RelayParts, summary: str | None) -> None:
        """`#resolve [summary]`: what was done is the summary and the mail's text (not when
        the mail is a #note: that stays internal), else the last public answer."""
        mail = plan.mail
        t.set_status(Status.RESOLVED)
        met = t.meet((Target.FIRST_RESPONSE, Target.NEXT_RESPONSE,
                                   Target.RESOLUTION))
        plan.add(plan.event(t, "resolved", actor=mail.sender,
                            detail={"command": "#resolve", "met": [m.value for m in met]}))
        said = "" if parsed.note else parsed.text.strip()  # a #note's text stays internal
        done = "\n\n".join(part for part in ((summary or "").strip(), said) if part) \
            or t.facts.last_answer
        context = {
            "asked": t.facts.request_text.strip()[:MAX_QUOTED_CHARS],
            "done": done[:MAX_QUOTED_CHARS], "time_to_resolve": span(plan.now - st.created_at)}
        key = keyed_message_id(self.settings.keys, (st.ref,), st.requester, "rating",
                               plan.now)
        cc = self._cc(st, mail.sender)
        thread = self._requester_thread(plan, t)
        # The rating links carry the requester's key: her copy only. The people in Cc get
        # the same summary with plain links (a rating is the requester's to give anyway).
        sent = plan.event(t, "summary_sent", visibility="public",
                          detail={"to": [st.requester]} | ({"cc": list(cc)} if cc else {}))
        plan.add(QueueMail(K.SUMMARY, dept.key, (st.requester,), (st,),
                           context | {"rating_links": rating_links(dept.address, st.ref, key)},
                           thread=thread, cc=cc, only=(st.requester,),
                           relay_attachments=bool(parts.parts), recorded=(sent,)))
        if cc:
            plan.add(QueueMail(K.SUMMARY, dept.key, (st.requester,), (st,),
                               context | {"rating_links": rating_links(dept.address, st.ref)},
                               thread=thread, cc=cc, only=cc, twin=True,
                               relay_attachments=bool(parts.parts)))
        t.set_field("survey_at", plan.now)
        plan.log("info", "ticket.resolved", ticket=st.ref, by=mail.sender)

    def _transfer(self, plan: _Plan, t: TicketChanges, dept: Department, command: Command) -> None:
        """Same ticket and number, new department: the requester's thread stays whole;
        clocks restart with the new department's policy and its team is told."""
        actor = plan.mail.sender
        target = find_department(self.directory, command.arg)
        assert target is not None  # checked by _problems
        t.set_field("department", target.key)
        t.set_field("assignee", None)
        t.meet((Target.NEXT_RESPONSE,))
        for clock in (Target.FIRST_RESPONSE, Target.RESOLUTION):
            t.start(clock)
        plan.add(plan.event(t, "transferred", actor=actor,
                            detail={"command": str(command), "from": dept.key,
                                    "to": target.key}))
        self._notify_team(plan, t, t.facts.request_text, actor=actor,
                          transferred_from=dept.name)
        plan.log("info", "ticket.transferred", ticket=t.st.ref, dept=target.key, by=actor)

    def _notify_team(self, plan: _Plan, t: TicketChanges, text: str, actor: str,
                     transferred_from: str) -> None:
        """Tell the new department's team about a ticket transferred to them."""
        st = t.st
        dept = self.directory.departments[st.department]
        to = self.directory.recipients(dept, ("team",), None)
        if not to:
            plan.add(plan.event(t, "team_notify_unsent", detail={
                "reason": f"{dept.key} has no team and no notify address"}))
            return
        running = t.clocks.get(Target.FIRST_RESPONSE)
        calendar = self.directory.calendar_for(dept)
        due = running.due_at(self.clocks.calendar(dept)) if running else None
        context = {"text": text[:MAX_QUOTED_CHARS], "help": HELP, "actor": actor,
                   "transferred_from": transferred_from,
                   "due_at": due.astimezone(calendar.zone) if due else None}
        plan.add(QueueMail(K.NOTIFY_TEAM, dept.key, to, (st,), context, variant="transferred",
                           thread=Thread(request=self._request_id(plan, t)),
                           recorded=(plan.event(t, "team_notified", detail={"to": list(to)},
                                                visibility="internal"),)))

    def _rated(self, plan: _Plan, t: TicketChanges, dept: Department | None, rating: int,
               comment: str) -> str:
        mail, st = plan.mail, t.st
        t.rate(rating, comment)
        plan.add(plan.event(t, "rated", actor=mail.sender, of_mail=True,
                            detail={"rating": rating, "comment": comment[:500]},
                            visibility="internal"))
        if st.rating is None and dept is not None:  # thanked once, not for a changed mind
            plan.add(QueueMail(K.THANKS, dept.key, (st.requester,), (st,), {"rating": rating},
                               thread=self._requester_thread(plan, t),
                               recorded=(plan.event(t, "thanks_sent", visibility="public"),)))
            plan.draw((st.requester,))
        plan.log("info", "ticket.rated", ticket=st.ref, rating=rating)
        return "rated"

    # --- mail out -------------------------------------------------------------------------

    def _relay_to_requester(self, plan: _Plan, t: TicketChanges, text: str,
                            parts: RelayParts) -> None:
        mail, st = plan.mail, t.st
        dept = self.directory.departments[st.department]
        name = self._name(mail.sender, mail)
        # A person's answer: not auto-submitted, so the requester's client treats it so.
        cc = self._cc(st, mail.sender)
        sent = plan.event(t, "relayed", actor=mail.sender, visibility="public",
                          detail={"to": [st.requester]} | ({"cc": list(cc)} if cc else {}))
        plan.add(QueueMail(K.REPLY, dept.key, (st.requester,), (st,),
                           {"text": text, "agent": {"name": name},
                            "left_out": list(parts.left_out)},
                           thread=self._requester_thread(plan, t), cc=cc,
                           from_name=f"{name} via {dept.name}" if name else dept.name,
                           relay_attachments=bool(parts.parts), recorded=(sent,)))

    def _relay_to_team(self, plan: _Plan, t: TicketChanges, text: str, parts: RelayParts,
                       kind: str, reopened: bool = False, unverified: bool = False,
                       state: TicketState | None = None) -> None:
        """`state`: the ticket as the relay shows it (default: as changed so far)."""
        mail = plan.mail
        st = state or t.st
        dept = self.directory.departments[st.department]
        roles = ("assignee",) if st.assignee and kind != "note" else ("team",)
        to = tuple(a for a in self.directory.recipients(dept, roles, st.assignee)
                   if a != mail.sender)
        if not to:
            return
        relayed = 0 if is_agent(dept, mail.sender) else t.facts.relays
        if relayed >= self.settings.relays_per_sender_per_hour:
            # A flood on one ticket (a script, a misbehaving client) is kept on the ticket
            # but stops filling the team's inboxes; the next hour relays again.
            plan.add(plan.event(t, "relay_suppressed", actor=mail.sender, of_mail=True,
                                visibility="internal",
                                detail={"reason": f"rate limit: {relayed} relayed in the last "
                                                  "hour from this sender on this ticket"}))
            plan.log("warning", "relay.suppressed", ticket=st.ref, sender=mail.sender)
            return
        author = mail.msg.sender
        name = author.name if author and author.name else mail.sender
        context = {"text": text, "kind": kind, "reopened": reopened, "unverified": unverified,
                   "replayable": unverified and mail.trust is Trust.REPLAYABLE,
                   "exposed": unverified and st.ref in mail.exposed,
                   "author": {"name": author.name if author else "", "address": mail.sender},
                   "left_out": list(parts.left_out)}
        sent = plan.event(t, "relayed", actor=mail.sender, visibility="internal",
                          detail={"to": list(to)} | ({"unverified": True} if unverified else {}))
        plan.add(QueueMail(K.NOTE_TEAM if kind == "note" else K.RELAY_TEAM, dept.key, to,
                           (st,), context, variant="unverified" if unverified else "proven",
                           thread=Thread(request=self._request_id(plan, t)),
                           from_name=f"{name}{' (unverified)' * unverified} via {dept.name}",
                           relay_attachments=bool(parts.parts), recorded=(sent,)))

    def _refuse(self, plan: _Plan, t: TicketChanges, dept: Department, reason: str,
                reply: bool = True) -> None:
        mail = plan.mail
        plan.add(plan.event(t, "command_refused", actor=mail.sender,
                            detail={"reason": reason}, visibility="internal"))
        plan.log("warning", "command.refused", ticket=t.st.ref, sender=mail.sender,
                 reason=reason)
        if reply:
            self._command_reply(plan, t, dept, refused=reason)

    def _command_reply(self, plan: _Plan, t: TicketChanges, dept: Department,
                       problems: list[str] | None = None, refused: str | None = None) -> None:
        """Tell the sender why nothing happened: once per mail, within their budget."""
        self._notice(plan, t, dept, K.COMMAND_REPLY, plan.mail.sender,
                     {"problems": problems or [], "help": HELP, "refused": refused is not None,
                      "reason": refused or ""})

    def _not_kept(self, plan: _Plan, t: TicketChanges, files: list[str], limit: str) -> None:
        """Tell a person whose reply brought more attachments than [limits] allows which
        files were not kept (and so reached nobody), within their budget."""
        dept = self.directory.departments.get(t.st.department)
        if dept is None:
            return
        mail = plan.mail
        self._notice(plan, t, dept, K.NOT_KEPT, mail.sender,
                     {"name": mail.msg.sender.name if mail.msg.sender else "",
                      "files": files, "max_attachment_size": limit},
                     event_detail={"files": files}, optional=True)

    def _notice(self, plan: _Plan, t: TicketChanges, dept: Department, kind: OutgoingKind,
                to: str, extra: dict, event_detail: dict | None = None,
                optional: bool = False) -> None:
        """An automatic answer to one person's mail, threaded on it; drawn from their
        budget of automatic mail (budget.py), so a flood of forged mail cannot turn us
        into a mail bomb. `optional`: a missing template costs the notice, not the mail."""
        mail = plan.mail
        event = kind.value.replace("-", "_")
        refusal = plan.refusal(to)
        if refusal:
            plan.add(plan.event(t, f"{event}_suppressed", actor=mail.sender,
                                detail={"reason": refusal}, visibility="internal"))
            plan.log("info", "notice.suppressed", ticket=t.st.ref, kind=kind.value,
                     reason=refusal)
            return
        sent = plan.event(t, event, visibility="internal",
                          detail={"to": [to]} | (event_detail or {}))
        plan.add(QueueMail(kind, dept.key, (to,), (t.st,), extra,
                           subject=mail.msg.subject or t.st.subject,
                           thread=Thread(answered=mail.msg.message_id or None),
                           optional=optional, recorded=(sent,)))
        plan.draw((to,))

    # --- threads, names, state ------------------------------------------------------------

    def _request_id(self, plan: _Plan, t: TicketChanges) -> str | None:
        """The first Message-ID of the conversation; this mail's, when the ticket had
        none before and this mail is on it now."""
        if t.facts.request_id:
            return t.facts.request_id
        return plan.mail.msg.message_id or None if t.mail_on_it else None

    def _requester_thread(self, plan: _Plan, t: TicketChanges) -> Thread:
        """Threading by the requester's own Message-IDs: ours carry reply keys, and the
        copy for one person must not carry another person's key in its References."""
        msg, last = plan.mail.msg, t.facts.requester_last
        if t.mail_on_it and msg.message_id and plan.mail.sender == t.st.requester:
            last = msg.message_id  # this mail is on the ticket: the requester's newest
        return Thread(request=self._request_id(plan, t), requester_last=last)

    def _name(self, address: str, mail: Incoming) -> str:
        """A person's name: the directory's, else what their From: says."""
        person = self.directory.person(address)
        return (person.name if person and person.name else None) or (
            mail.msg.sender.name if mail.msg.sender else "")

    def _cc(self, st: TicketState, author: str) -> tuple[str, ...]:
        """Who is copied on mail to the requester: the request's Cc, when so configured."""
        if not self.settings.keep_cc_informed:
            return ()
        return tuple(a for a in st.cc if a not in (author, st.requester))


def find_agent(directory: Directory, dept: Department, who: str) -> tuple[str | None, str]:
    """The address of the department's agent meant by `who` (an address, the part before
    the @, or a first name), or None and the problem in words."""
    who = who.strip().strip("<>").lower()
    agents = [a for a in (*dept.team, dept.lead, dept.head) if a]
    if "@" in who:
        found = member_address(dept, who)
        return (found, "") if found else (None, f"not a member of {dept.name}")
    matches = [a for a in agents if a.partition("@")[0] == who]
    if not matches:
        matches = [a for a in agents
                   if (p := directory.person(a)) and p.name
                   and p.name.split()[0].lower() == who]
    if len(matches) == 1:
        return matches[0], ""
    if matches:
        return None, f"ambiguous ({', '.join(matches)}); give the address"
    return None, f"no member of {dept.name} is called {who!r} ({', '.join(agents)})"


def find_department(directory: Directory, name: str) -> Department | None:
    name = name.strip().lower()
    for dept in directory.departments.values():
        if name in (dept.key.lower(), dept.prefix.lower(), dept.name.lower()):
            return dept
    return None


def _unverified(proof: str | None) -> dict:
    return {} if proof else {"unverified": True}


def _exposed(exposed: bool) -> dict:
    """An unproven mail's event says so when its key would have proved it, but others
    had seen that key."""
    return {"exposed_key": True} if exposed else {}


def span(delta: timedelta) -> str:
    """Wall-clock time in words, to the minute: "2 days 3 hours", "45 minutes"."""
    minutes = max(0, int(delta.total_seconds() // 60))
    days, rest = divmod(minutes, 1440)
    hours, minutes = divmod(rest, 60)
    parts = [f"{n} {unit}{'s' if n != 1 else ''}"
             for n, unit in ((days, "day"), (hours, "hour"), (minutes, "minute")) if n]
    return " ".join(parts[:2]) or "less than a minute"
