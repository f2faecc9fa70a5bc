"""The decisions about a mail, without a database: hand-built facts in, effects out.

What the workflow and pipeline tests check through SQLite -- one ticket per department,
linked; one acknowledgement within the sender's budget; a team notice unless the sender
flooded that team; follow-ups linking the old ticket; attachments not kept named; who may
answer, command, reopen, rate or only be kept; clocks met, paused, restarted -- is checked
here on the decisions themselves (tickets/new_request.py, tickets/reply.py), no I/O.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest

from mailgate.config.directory import Directory
from mailgate.core.classify import Verdict
from mailgate.core.mime.parse import parse
from mailgate.core.model import MailKind, Priority, Status, Ticket
from mailgate.core.routing import Route
from mailgate.core.sla import Clock, Target
from mailgate.core.trust import Trust
from mailgate.outbound.compose import RelayParts
from mailgate.tickets.budget import MailBudget
from mailgate.tickets.clocks import ClockPolicy
from mailgate.tickets.effects import (
    AddAttachments,
    AddEvent,
    AddReceipts,
    Drawn,
    Effect,
    Facts,
    HoldNotification,
    LinkTickets,
    NewTicket,
    OpenTicket,
    QueueMail,
    StartClocks,
    StoredFile,
    StoreMessage,
    TicketFacts,
    UpdateTicket,
    Usage,
    WriteClock,
)
from mailgate.tickets.new_request import (
    NewRequestPolicy,
    Request,
    acknowledged,
    is_stale,
    open_request,
)
from mailgate.tickets.reply import Conversation, ConversationSettings, Incoming, Replied
from mailgate.tickets.state import TicketState
from tests.factories import example_directory, mail

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # a Tuesday, 10:00 in Berlin
REQUEST = Verdict(MailKind.REQUEST)
DIRECTORY = example_directory()
TEAM_LIMIT = 5
E = TypeVar("E")


def policy(directory: Directory = DIRECTORY, **changes: object) -> NewRequestPolicy:
    base = NewRequestPolicy(directory, ClockPolicy(directory),
                            MailBudget(per_mailbox=10, per_domain=100,
                                       own_domains=frozenset({"example.com"})),
                            team_notices_per_sender_per_hour=TEAM_LIMIT)
    return replace(base, **changes)


def request(raw: bytes | None = None, departments: tuple[str, ...] = ("it",),
            verdict: Verdict = REQUEST, **changes: object) -> Request:
    routes = {d: Route(d, Priority.NORMAL, "address") for d in departments}
    made = Request(parse(raw or mail()), verdict, departments, routes, departments)
    return replace(made, **changes)


def decide(req: Request | None = None, facts: Facts | None = None,
           rules: NewRequestPolicy | None = None) -> list[Effect]:
    return open_request(req or request(), facts or Facts(), rules or policy(), NOW)


def only(effects: list[Effect], kind: type[E]) -> list[E]:
    return [e for e in effects if isinstance(e, kind)]


def events(effects: list[Effect], kind: str) -> list[AddEvent]:
    found = [e for e in effects if isinstance(e, AddEvent)]
    found += [r for q in only(effects, QueueMail) for r in q.recorded]
    return [e for e in found if e.kind == kind]


def mails(effects: list[Effect], kind: str) -> list[QueueMail]:
    return [q for q in only(effects, QueueMail) if q.kind == kind]


def test_a_new_request_opens_one_ticket_with_clocks_an_ack_and_a_team_notice() -> None:
    effects = decide()
    [store] = only(effects, StoreMessage)
    assert (store.kind, store.text) == (MailKind.REQUEST, "It only beeps.")
    [receipts] = only(effects, AddReceipts)
    assert (receipts.departments, receipts.outcome) == (("it",), "ticket")
    [ticket] = only(effects, OpenTicket)
    assert (ticket.department, ticket.prefix, ticket.subject, ticket.requester,
            ticket.priority) == ("it", "IT", "Laptop won't boot", "ann@example.com",
                                 Priority.NORMAL)
    [clocks] = only(effects, StartClocks)
    assert clocks.ticket == NewTicket(0)
    assert [row[0] for row in clocks.opening.rows] == [Target.FIRST_RESPONSE.value,
                                                       Target.RESOLUTION.value]
    # The ticket row carries the earliest level of its clocks: the scheduler's index.
    assert ticket.next_escalation_at == min(row[4] for row in clocks.opening.rows)
    [ack] = mails(effects, "ack")
    assert (ack.to, ack.about) == (("ann@example.com",), (NewTicket(0),))
    assert ack.thread.answered == "req-1@example.com"
    assert [e.kind for e in ack.recorded] == ["ack_queued"]
    [notice] = mails(effects, "notify-team")
    assert notice.to == ("alice@example.com", "bob@example.com")
    assert notice.budget == "team:it:ann@example.com"
    assert notice.thread.request == "req-1@example.com"
    assert notice.relay_attachments
    # 4 business hours from 10:00 Berlin, lunch 12:30-13:30 aside: 15:00 Berlin time.
    assert (notice.context["due_at"].hour, str(notice.context["due_at"].tzinfo)) == (
        15, "Europe/Berlin")
    assert acknowledged(effects)


def test_the_created_event_names_the_mail_and_comes_first() -> None:
    effects = decide()
    first = next(e for e in effects if isinstance(e, AddEvent))
    assert (first.kind, first.ticket, first.of_mail, first.actor) == (
        "created", NewTicket(0), True, "ann@example.com")


def test_two_departments_get_linked_tickets_and_one_acknowledgement() -> None:
    effects = decide(request(mail(cc="facilities@example.com"),
                             departments=("it", "facilities")))
    assert [t.prefix for t in only(effects, OpenTicket)] == ["IT", "FAC"]
    assert only(effects, LinkTickets) == [LinkTickets((NewTicket(0), NewTicket(1)))]
    [ack] = mails(effects, "ack")
    assert ack.about == (NewTicket(0), NewTicket(1))
    assert ack.department == "it"  # the first department answers
    assert [n.department for n in mails(effects, "notify-team")] == ["it", "facilities"]


def test_cc_keeps_people_not_us_nor_the_requester_at_most_twenty() -> None:
    people = ", ".join(f"p{i}@example.org" for i in range(25))
    raw = mail(cc=f"helpdesk@example.com, ann@example.com, {people}")
    [ticket] = only(decide(request(raw)), OpenTicket)
    assert ticket.cc == tuple(f"p{i}@example.org" for i in range(20))


def test_an_exhausted_mailbox_budget_suppresses_the_ack_not_the_ticket() -> None:
    effects = decide(facts=Facts(usage=Usage(to_mailbox=10)))
    assert only(effects, OpenTicket)
    assert not mails(effects, "ack") and not acknowledged(effects)
    [suppressed] = events(effects, "ack_suppressed")
    assert suppressed.detail == {
        "reason": "rate limit: 10 automatic mails to ann@example.com in the last hour"}


def test_the_domain_budget_limits_outside_domains_only() -> None:
    outside = request(mail(sender="Olga <olga@partner.example>"))
    crowded = Facts(usage=Usage(to_mailbox=0, to_domain=100))
    [suppressed] = events(decide(outside, crowded), "ack_suppressed")
    assert "@partner.example" in suppressed.detail["reason"]
    assert mails(decide(request(), crowded), "ack")  # example.com is the organisation's


@pytest.mark.parametrize("kind", [MailKind.BULK, MailKind.AUTO_REPLY])
def test_automatic_or_bulk_mail_is_never_acknowledged(kind: MailKind) -> None:
    effects = decide(request(verdict=Verdict(kind, "Precedence: bulk")))
    assert not mails(effects, "ack")
    [suppressed] = events(effects, "ack_suppressed")
    assert suppressed.detail == {"reason": f"{kind.value}: Precedence: bulk"}
    [created] = events(effects, "created")
    assert created.detail == {"kind": kind.value}


def test_a_sender_who_flooded_a_team_is_held_for_the_summary() -> None:
    facts = Facts(usage=Usage(notified={"it": TEAM_LIMIT, "facilities": TEAM_LIMIT - 1}))
    effects = decide(request(mail(cc="facilities@example.com"),
                             departments=("it", "facilities")), facts)
    assert only(effects, HoldNotification) == [
        HoldNotification(NewTicket(0), "it", "ann@example.com")]
    [held] = events(effects, "team_notify_held")
    assert held.visibility == "internal" and held.ticket == NewTicket(0)
    assert [n.department for n in mails(effects, "notify-team")] == ["facilities"]
    assert mails(effects, "ack")  # the requester is still told


def test_no_team_notice_when_switched_off() -> None:
    effects = decide(rules=policy(notify_team=False))
    assert not mails(effects, "notify-team")
    assert not events(effects, "team_notify_unsent")


def test_a_department_without_team_or_list_records_why_nobody_was_told() -> None:
    facilities = replace(DIRECTORY.departments["facilities"], team=(), notify=None)
    directory = Directory({**DIRECTORY.departments, "facilities": facilities},
                          DIRECTORY.sla_policies, DIRECTORY.default_department,
                          DIRECTORY.people, calendars=DIRECTORY.calendars)
    effects = decide(request(mail(to="facilities@example.com"), departments=("facilities",)),
                     rules=policy(directory))
    assert not mails(effects, "notify-team")
    [unsent] = events(effects, "team_notify_unsent")
    assert unsent.detail == {"reason": "facilities has no team and no notify address"}


def test_a_late_follow_up_links_the_old_ticket_both_ways() -> None:
    old = Ticket(7, "IT-1001", "it", "Laptop", "ann@example.com", "Ann", Status.RESOLVED,
                 Priority.HIGH, NOW - timedelta(days=30), NOW - timedelta(days=20))
    follow = {"it": Route("it", Priority.HIGH, "follow-up")}
    effects = decide(request(routes=follow, follows=(old,)))
    assert LinkTickets((7, NewTicket(0))) in only(effects, LinkTickets)
    [back] = events(effects, "followed_up")
    assert (back.ticket, back.detail, back.of_mail) == (7, {"by": NewTicket(0)}, True)
    [forward] = events(effects, "follows")
    assert (forward.ticket, forward.detail) == (NewTicket(0), {"ticket": "IT-1001"})
    [ticket] = only(effects, OpenTicket)
    assert ticket.priority is Priority.HIGH


def test_attachments_not_kept_are_recorded_and_named_in_the_ack() -> None:
    files = (StoredFile("log.txt", "text/plain", 10, "ab" * 32),
             StoredFile("disk.img", "application/octet-stream", 90_000_000, None))
    effects = decide(request(files=files))
    assert only(effects, AddAttachments) == [AddAttachments((NewTicket(0),), files)]
    [dropped] = events(effects, "attachments_dropped")
    assert dropped.detail == {"files": [["disk.img", 90_000_000]],
                              "limit": policy().max_attachment_bytes}
    [ack] = mails(effects, "ack")
    assert ack.context["dropped"] == ["disk.img"]
    assert ack.context["max_attachment_size"] == "25 MB"


def test_no_attachment_effects_for_a_plain_mail() -> None:
    effects = decide()
    assert not only(effects, AddAttachments) and not events(effects, "attachments_dropped")


def ended(status: Status, days_ago: float, survey: bool = False) -> TicketState:
    at = NOW - timedelta(days=days_ago)
    return TicketState(1, "IT-1001", "it", "Laptop", "ann@example.com", "Ann", status,
                       Priority.NORMAL, at, at, resolved_at=at,
                       survey_at=at if survey else None)


WEEK = timedelta(days=7)


@pytest.mark.parametrize(("ticket", "sender", "body", "stale"), [
    (ended(Status.RESOLVED, 8), "ann@example.com", "Broken again.", True),
    (ended(Status.RESOLVED, 6), "ann@example.com", "Broken again.", False),
    (ended(Status.OPEN, 30), "ann@example.com", "Any news?", False),
    (ended(Status.RESOLVED, 8), "alice@example.com", "Closing note.", False),  # an agent
    (ended(Status.RESOLVED, 8, survey=True), "ann@example.com", "5", False),  # a rating
])
def test_a_reply_long_after_the_resolution_is_stale(ticket: TicketState, sender: str,
                                                    body: str, stale: bool) -> None:
    msg = parse(mail("Re: [IT-1001] Laptop", sender=sender, body=body))
    assert is_stale(ticket, msg, DIRECTORY, WEEK, NOW) is stale


# --- replies: a person's mail on an existing ticket (tickets/reply.py) -------------------

SETTINGS = ConversationSettings(budget=MailBudget(per_mailbox=3, per_domain=100,
                                                  own_domains=frozenset({"example.com"})))
CONVERSATION = Conversation(DIRECTORY, ClockPolicy(DIRECTORY), SETTINGS)
CREATED = NOW - timedelta(hours=2)
NO_PARTS = RelayParts((), ())


def open_ticket(status: Status = Status.NEW, **changes: object) -> TicketState:
    made = TicketState(7, "IT-1001", "it", "Laptop won't boot", "ann@example.com",
                       "Ann Example", status, Priority.NORMAL, CREATED, CREATED)
    return replace(made, **changes)


def running(*targets: Target) -> dict[Target, Clock]:
    return {t: Clock(t, CREATED, 4 * 3600.0) for t in targets}


def on_ticket(st: TicketState | None = None, **changes: object) -> TicketFacts:
    base = TicketFacts(st or open_ticket(), running(Target.FIRST_RESPONSE, Target.RESOLUTION),
                       request_id="req-1@example.com", requester_last="req-1@example.com")
    return replace(base, **changes)


def reply(body: str, sender: str = "Alice Adams <alice@example.com>",
          proven: bool = True, facts: TicketFacts | None = None,
          drawn: Drawn | None = None, parts: RelayParts = NO_PARTS,
          dropped: list[str] | None = None) -> Replied:
    msg = parse(mail("Re: [IT-1001] Laptop won't boot", sender=sender, body=body,
                     message_id="<answer@example.com>"))
    incoming = Incoming(msg, Trust.DOMAIN, frozenset({"IT-1001"}) if proven else frozenset())
    return CONVERSATION.decide(incoming, [facts or on_ticket()], parts, drawn or Drawn(), NOW,
                               dropped, "25 MB")


def columns(done: Replied) -> dict[str, object]:
    [update] = only(done.effects, UpdateTicket) or [UpdateTicket(7, {})]
    return dict(update.columns)


def clocks(done: Replied) -> dict[Target, WriteClock]:
    return {w.clock.target: w for w in only(done.effects, WriteClock)}


def test_a_proven_agent_answer_meets_the_response_clock_and_reaches_the_requester() -> None:
    done = reply("Hold the power button for ten seconds.")
    assert done.kind == "reply"
    [answer] = events(done.effects, "reply")
    assert (answer.visibility, answer.detail, answer.of_mail) == (
        "public", {"role": "agent"}, True)
    assert {t: (w.met, w.rounds) for t, w in clocks(done).items()} == {
        Target.FIRST_RESPONSE: (True, 0)}
    [met] = events(done.effects, "sla_met")
    assert met.detail == {"targets": ["first_response"]}  # the next response was not owed
    changed = columns(done)
    assert changed["status"] is Status.OPEN  # a new ticket is open once answered
    assert changed["first_response_at"] == changed["updated_at"] == NOW
    [relay] = mails(done.effects, "reply")
    assert relay.to == ("ann@example.com",)
    assert relay.from_name == "Alice Adams via IT Service Desk"
    assert (relay.thread.request, relay.thread.requester_last) == ("req-1@example.com",) * 2
    assert relay.about[0].status is Status.OPEN  # the mail shows the ticket as answered


def test_an_answer_without_proof_is_kept_internal_and_its_member_told_how_to_act() -> None:
    done = reply("Hold the power button.", proven=False)
    assert done.kind == "unproven"
    [kept] = events(done.effects, "reply")
    assert kept.visibility == "internal"
    assert not clocks(done) and not mails(done.effects, "reply")
    [notice] = mails(done.effects, "unproven-notice")
    assert notice.to == ("alice@example.com",)
    assert notice.thread.answered == "answer@example.com"


def test_a_command_that_cannot_run_changes_nothing_and_tells_the_agent() -> None:
    done = reply("#assign nobody\n#resolve")
    assert done.kind == "rejected"
    [rejected] = events(done.effects, "command_rejected")
    assert "#assign nobody" in rejected.detail["problems"][0]
    assert not columns(done) and not clocks(done)
    assert mails(done.effects, "command-reply")


def test_notices_stop_at_the_budget_counting_those_of_this_mail() -> None:
    full = Drawn(mailboxes={"alice@example.com": 3})
    done = reply("#frobnicate", drawn=full)
    assert not mails(done.effects, "command-reply")
    [suppressed] = events(done.effects, "command_reply_suppressed")
    assert "3 automatic mails to alice@example.com" in suppressed.detail["reason"]
    # One left: the command reply takes it, the not-kept notice of the same mail is refused.
    done = reply("#frobnicate", drawn=Drawn(mailboxes={"alice@example.com": 2}),
                 dropped=["disk.img"])
    assert mails(done.effects, "command-reply") and not mails(done.effects, "not-kept")
    assert events(done.effects, "not_kept_suppressed")


def test_a_stranger_is_kept_and_reaches_nobody() -> None:
    done = reply("I know your ticket number.", sender="Mallory <mallory@evil.example>")
    assert done.kind == "kept"
    assert not only(done.effects, QueueMail)
    [kept] = events(done.effects, "comment")
    assert kept.detail == {"role": "outside", "not_relayed": "not on the ticket"}


def test_the_requester_without_proof_reaches_the_team_marked_and_moves_no_clock() -> None:
    resolved = open_ticket(Status.RESOLVED, resolved_at=NOW - timedelta(days=1))
    done = reply("Broken again.", sender="Ann Example <ann@example.com>", proven=False,
                 facts=on_ticket(resolved))
    assert done.kind == "unverified"
    assert "status" not in columns(done) and not clocks(done)
    [relay] = mails(done.effects, "relay-team")
    assert relay.variant == "unverified" and relay.to == ("alice@example.com", "bob@example.com")


def test_the_proven_requester_reopens_a_resolved_ticket_with_a_fresh_resolution_clock() -> None:
    resolved = open_ticket(Status.RESOLVED, resolved_at=NOW - timedelta(days=1))
    done = reply("Broken again.", sender="Ann Example <ann@example.com>",
                 facts=on_ticket(resolved, clocks={}, first_response_at=CREATED))
    assert done.kind == "reopened"
    changed = columns(done)
    assert (changed["status"], changed["resolved_at"], changed["closed_at"]) == (
        Status.OPEN, None, None)
    # A new round of the resolution clock, and (answered before) an answer is owed again.
    started = {t: (w.rounds, w.clock.started_at) for t, w in clocks(done).items()}
    assert started == {Target.RESOLUTION: (1, NOW), Target.NEXT_RESPONSE: (1, NOW)}
    [relay] = mails(done.effects, "relay-team")
    assert relay.context["reopened"] is True


def test_the_next_response_is_owed_once_and_not_before_the_first() -> None:
    ann = "Ann Example <ann@example.com>"
    first_pending = reply("More details.", sender=ann)
    assert Target.NEXT_RESPONSE not in clocks(first_pending)
    owed = on_ticket(open_ticket(Status.OPEN), first_response_at=CREATED,
                     clocks=running(Target.RESOLUTION, Target.NEXT_RESPONSE))
    assert not clocks(reply("And more.", sender=ann, facts=owed))


def test_a_rating_is_stored_and_thanked_for_once() -> None:
    surveyed = open_ticket(Status.RESOLVED, survey_at=NOW, resolved_at=NOW)
    ann = "Ann Example <ann@example.com>"
    done = reply("5\nquick and kind", sender=ann, facts=on_ticket(surveyed))
    assert done.kind == "rated"
    assert {k: columns(done)[k] for k in ("rating", "rating_comment", "rated_at")} == {
        "rating": 5, "rating_comment": "quick and kind", "rated_at": NOW}
    [thanks] = mails(done.effects, "thanks")
    # The thanks answers her rating: this mail is now her newest on the ticket.
    assert thanks.thread.requester_last == "answer@example.com"
    again = reply("4", sender=ann, facts=on_ticket(replace(surveyed, rating=5)))
    assert columns(again)["rating_comment"] is None  # keeps the earlier comment
    assert not mails(again.effects, "thanks")


def test_a_flood_of_relays_on_one_ticket_is_kept_not_relayed() -> None:
    done = reply("again", sender="Ann Example <ann@example.com>",
                 facts=on_ticket(relays=SETTINGS.relays_per_sender_per_hour))
    assert not mails(done.effects, "relay-team")
    assert events(done.effects, "relay_suppressed")


def test_waiting_pauses_the_clocks_and_resolve_meets_them_with_a_summary() -> None:
    waiting = reply("#waiting")
    assert (columns(waiting)["status"], columns(waiting)["paused_at"]) == (Status.WAITING, NOW)
    assert not clocks(waiting)  # paused on the ticket; the clocks themselves stay
    done = reply("#resolve\nReplaced the battery.", facts=on_ticket(
        open_ticket(Status.OPEN), last_answer="Try again.", request_text="It only beeps."))
    # The answer meets the first response, the resolution what still ran.
    [met] = events(done.effects, "sla_met")
    [resolved] = events(done.effects, "resolved")
    assert (met.detail["targets"], resolved.detail["met"]) == (["first_response"],
                                                               ["resolution"])
    [summary] = mails(done.effects, "summary")
    assert summary.context["asked"] == "It only beeps."
    assert summary.context["done"] == "Replaced the battery."
    assert not mails(done.effects, "reply")  # the summary says it
    quiet = reply("#resolve", facts=on_ticket(open_ticket(Status.OPEN), last_answer="Try again."))
    [summary] = mails(quiet.effects, "summary")
    assert summary.context["done"] == "Try again."  # nothing said: the last public answer


def test_transfer_restarts_the_clocks_by_the_new_department_and_tells_its_team() -> None:
    done = reply("#transfer facilities", facts=on_ticket(request_text="It only beeps."))
    assert (columns(done)["department"], columns(done)["assignee"]) == ("facilities", None)
    assert {t: w.rounds for t, w in clocks(done).items()} == {
        Target.FIRST_RESPONSE: 1, Target.RESOLUTION: 1}
    [notice] = mails(done.effects, "notify-team")
    assert (notice.to, notice.variant) == (("erin@example.com",), "transferred")
    assert notice.about[0].department == "facilities"
    # 4 business hours from now (10:00 Berlin, lunch aside): 15:00.
    assert notice.context["due_at"].hour == 15


def test_each_clock_is_written_once_as_the_mail_leaves_it() -> None:
    # Answered (the first response is met), then transferred: the clock starts afresh.
    moved = reply("#transfer facilities\nNot ours, sorry.")
    assert (moved.kind, clocks(moved)[Target.FIRST_RESPONSE].met) == ("reply", False)
    assert clocks(moved)[Target.FIRST_RESPONSE].rounds == 1
    # Transferred, then resolved in the same mail: the new round is met at once.
    done = reply("#transfer facilities\n#resolve")
    write = clocks(done)[Target.RESOLUTION]
    assert (write.rounds, write.met) == (1, True)


def test_the_requester_answering_a_waiting_ticket_pushes_its_clocks_back() -> None:
    waiting = on_ticket(open_ticket(Status.WAITING), paused_at=NOW - timedelta(hours=1))
    done = reply("Here is the serial number.", sender="Ann Example <ann@example.com>",
                 facts=waiting)
    assert (columns(done)["status"], columns(done)["paused_at"]) == (Status.OPEN, None)
    for write in clocks(done).values():  # one business hour waited: 10:00 to 11:00 Berlin
        assert (write.shifted, write.rounds, write.clock.paused_seconds) == (True, 0, 3600.0)
    resolution = clocks(done)[Target.RESOLUTION]
    assert resolution.due_at > (CREATED + timedelta(hours=4)).timestamp()
