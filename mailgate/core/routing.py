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

from collections.abc import Sequence
from dataclasses import dataclass

import regex

from mailgate.config.directory import Directory, Rule
from mailgate.core.addresses import strip_plus
from mailgate.core.model import Inbound, Origin, Priority
from mailgate.core.rulesearch import Search, Searched, field_text, found_in_time
from mailgate.service.log import get_logger

log = get_logger("mailgate.core.routing")


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


def envelope_departments(directory: Directory, recipients: Sequence[str]) -> tuple[str, ...]:
    """The departments whose addresses are among a pushed mail's envelope recipients (RCPT
    TO): the mailboxes it was received for, as a mailbox watcher's department is."""
    return tuple(dict.fromkeys(
        d.key for d in map(directory.department_for_address, recipients) if d))


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


def _patterns(rule: Rule) -> list[tuple[regex.Pattern[str], str]]:
    """The rule's searches in the order they are tried: subject, headers, body last."""
    found = [(rule.subject, "subject")] if rule.subject else []
    found += [(pattern, f"header:{name}") for name, pattern in rule.headers]
    return found + ([(rule.body, "body")] if rule.body else [])


def _matches(rule: Rule, pattern: regex.Pattern[str], field: str, text: str,
             searched: Searched) -> bool:
    key = Search(pattern.pattern, pattern.flags, field)
    result = searched[key] if key in searched else found_in_time(pattern, text)
    if result is None:
        log.warning("rule.timeout", rule=rule.name, pattern=pattern.pattern[:200],
                    chars=len(text))
    return bool(result)


def _addressed(addr: str, wanted: tuple[str, ...]) -> bool:
    """help+it@ matches a rule for help+it@ (exactly) and a rule for help@ (its base)."""
    addr = addr.lower()
    return addr in wanted or strip_plus(addr) in wanted


def _sent_by(sender: str, wanted: tuple[str, ...]) -> bool:
    if not sender:
        return False
    domain = "@" + sender.rpartition("@")[2]
    return sender in wanted or strip_plus(sender) in wanted or domain in wanted
