"""Which departments own a new request, at which priority, and why. Pure: a message plus
the directory in, routes out.

Order of decision:
1. [[rule]] tables, in file order: the first rule whose matchers all match decides alone
   (one department, the rule's priority).
2. No rule matched: every department the message was addressed to (envelope recipients,
   then To/Cc/Delivered-To in header order; rule "address"), then the departments of the
   mailbox it came through (rule "mailbox"), all at normal priority.
3. Nothing at all: default_department (rule "default"), or no route: the pipeline then
   quarantines the message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import regex

from mailgate.config.directory import Directory, Rule
from mailgate.core.addresses import strip_plus
from mailgate.core.model import Inbound, Origin, Priority
from mailgate.service.log import get_logger

log = get_logger("mailgate.core.routing")

# Mail is hostile: a rule like a.*b.*c backtracks for seconds on crafted text. Every search
# looks at a bounded prefix and is stopped after SEARCH_TIMEOUT; a stopped search counts as
# no match (logged), so one slow rule costs at most that much per message.
SEARCH_TIMEOUT = 0.05  # seconds
MAX_SUBJECT_CHARS = 1000
MAX_BODY_CHARS = 10_000
MAX_HEADER_CHARS = 1000


@dataclass(frozen=True, slots=True)
class Search:
    """One regex search a rule can ask of a message: a pattern on one field of it."""

    pattern: str
    flags: int
    field: str  # "subject", "body" or "header:<lower-case name>"


# Searches done ahead, in a reading process (intake/read.py): True/False, or None when the
# search ran out of time. A search not in it is done here.
Searched = Mapping[Search, bool | None]


@dataclass(frozen=True, slots=True)
class Route:
    department: str
    priority: Priority
    rule: str  # the rule's name, or "address" / "mailbox" / "default"


def routes_for(msg: Inbound, origin: Origin, directory: Directory,
               searched: Searched | None = None) -> list[Route]:
    """The routes of a new message, see the module docstring; [] when none."""
    recipients = (*origin.envelope_recipients, *msg.recipients())
    for rule in directory.rules:
        if rule_matches(rule, msg, recipients, directory, searched or {}):
            return [Route(rule.department, rule.priority, rule.name)]
    routes: dict[str, Route] = {}
    for addr in recipients:
        dept = directory.department_for_address(addr)
        if dept and dept.key not in routes:
            routes[dept.key] = Route(dept.key, Priority.NORMAL, "address")
    for key in origin.departments:
        if key in directory.departments and key not in routes:
            routes[key] = Route(key, Priority.NORMAL, "mailbox")
    if not routes and directory.default_department:
        return [Route(directory.default_department, Priority.NORMAL, "default")]
    return list(routes.values())


def departments_for(msg: Inbound, origin: Origin, directory: Directory) -> list[str]:
    """Department keys of routes_for, in order.

    A message to it-help with facilities in Cc belongs to both; the mailbox (or SMTP
    envelope recipient) it was received through always counts, which covers Bcc.
    """
    return [route.department for route in routes_for(msg, origin, directory)]


def rule_matches(rule: Rule, msg: Inbound, recipients: tuple[str, ...],
                 directory: Directory, searched: Searched | None = None) -> bool:
    """Whether every matcher the rule gives matches; cheap ones first, the body last."""
    sender = msg.sender.addr if msg.sender else ""
    if rule.to and not any(_addressed(addr, rule.to) for addr in recipients):
        return False
    if rule.senders and not _sent_by(sender, rule.senders):
        return False
    if rule.from_department:
        person = directory.person(sender) if sender else None
        if person is None or person.department != rule.from_department:
            return False
    for pattern, field in _patterns(rule):
        text = field_text(msg, field)  # a header rule needs the header to be there
        if text is None or not _matches(rule, pattern, field, text, searched or {}):
            return False
    return True


def searches_of(directory: Directory) -> tuple[Search, ...]:
    """Every search the rules can ask of a message, for a reading process to do ahead."""
    found = (Search(pattern.pattern, pattern.flags, field)
             for rule in directory.rules for pattern, field in _patterns(rule))
    return tuple(dict.fromkeys(found))


def search_ahead(msg: Inbound, searches: tuple[Search, ...]) -> dict[Search, bool | None]:
    """Do SEARCHES on MSG (in a reading process, where no other thread wants the GIL)."""
    done: dict[Search, bool | None] = {}
    for search in searches:
        text = field_text(msg, search.field)
        if text is not None:
            done[search] = _search(regex.compile(search.pattern, search.flags), text)
    return done


def field_text(msg: Inbound, field: str) -> str | None:
    """The bounded text of MSG a search on FIELD reads; None for a header it lacks."""
    if field == "subject":
        return msg.subject[:MAX_SUBJECT_CHARS]
    if field == "body":
        return msg.body[:MAX_BODY_CHARS]
    value = msg.headers.get(field.removeprefix("header:"))
    return None if value is None else value[:MAX_HEADER_CHARS]


def _patterns(rule: Rule) -> list[tuple[regex.Pattern[str], str]]:
    """The rule's searches in the order they are tried: subject, headers, body last."""
    found = [(rule.subject, "subject")] if rule.subject else []
    found += [(pattern, f"header:{name}") for name, pattern in rule.headers]
    return found + ([(rule.body, "body")] if rule.body else [])


def _matches(rule: Rule, pattern: regex.Pattern[str], field: str, text: str,
             searched: Searched) -> bool:
    key = Search(pattern.pattern, pattern.flags, field)
    result = searched[key] if key in searched else _search(pattern, text)
    if result is None:
        log.warning("rule.timeout", rule=rule.name, pattern=pattern.pattern[:200],
                    chars=len(text))
    return bool(result)


def _search(pattern: regex.Pattern[str], text: str) -> bool | None:
    """Whether PATTERN is found in TEXT; None when the search ran out of time.

    The timeout makes regex give up the GIL and wait to get it back: on the event loop's
    thread, with the IMAP and SMTP threads busy, about 0.25 ms per search where the search
    itself takes 20 us. So mail fetched over IMAP is searched ahead in its reading process
    (search_ahead), and only pushed mail is searched here. concurrent=False: regex would
    otherwise release the GIL for every search of a str as well."""
    try:
        return pattern.search(text, timeout=SEARCH_TIMEOUT, concurrent=False) is not None
    except TimeoutError:
        return None


def _addressed(addr: str, wanted: tuple[str, ...]) -> bool:
    """help+it@ matches a rule for help+it@ (exactly) and a rule for help@ (its base)."""
    addr = addr.lower()
    return addr in wanted or strip_plus(addr) in wanted


def _sent_by(sender: str, wanted: tuple[str, ...]) -> bool:
    if not sender:
        return False
    domain = "@" + sender.rpartition("@")[2]
    return sender in wanted or strip_plus(sender) in wanted or domain in wanted
