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
class Route:
    department: str
    priority: Priority
    rule: str  # the rule's name, or "address" / "mailbox" / "default"


def routes_for(msg: Inbound, origin: Origin, directory: Directory) -> list[Route]:
    """The routes of a new message, see the module docstring; [] when none."""
    recipients = (*origin.envelope_recipients, *msg.recipients())
    for rule in directory.rules:
        if rule_matches(rule, msg, recipients, directory):
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
                 directory: Directory) -> bool:
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
    if rule.subject and not _search(rule, rule.subject, msg.subject[:MAX_SUBJECT_CHARS]):
        return False
    for name, pattern in rule.headers:
        value = msg.headers.get(name)  # a header rule needs the header to be there
        if value is None or not _search(rule, pattern, value[:MAX_HEADER_CHARS]):
            return False
    return not (rule.body and not _search(rule, rule.body, msg.body[:MAX_BODY_CHARS]))


def _search(rule: Rule, pattern: regex.Pattern[str], text: str) -> bool:
    # concurrent=False: keep the GIL. regex releases it for every search of a str by
    # default; a bounded search takes microseconds, but getting the GIL back from the IMAP
    # or SMTP thread can take a whole switch interval (5 ms), several times per message.
    try:
        return pattern.search(text, timeout=SEARCH_TIMEOUT, concurrent=False) is not None
    except TimeoutError:
        log.warning("rule.timeout", rule=rule.name, pattern=pattern.pattern[:200],
                    chars=len(text))
        return False


def _addressed(addr: str, wanted: tuple[str, ...]) -> bool:
    """help+it@ matches a rule for help+it@ (exactly) and a rule for help@ (its base)."""
    addr = addr.lower()
    return addr in wanted or strip_plus(addr) in wanted


def _sent_by(sender: str, wanted: tuple[str, ...]) -> bool:
    if not sender:
        return False
    domain = "@" + sender.rpartition("@")[2]
    return sender in wanted or strip_plus(sender) in wanted or domain in wanted
