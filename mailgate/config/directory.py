"""The directory: departments, people, routing rules, SLA policies and business calendars.
Lookups only, no I/O beyond loading the files.

Loading never stops at the first mistake: every reader appends "FILE: key: problem" to one
list (see settings.Table) and load_directory raises a single ConfigError with all of them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import regex

from mailgate.config.readers import Table, parse_duration
from mailgate.config.settings import read_toml
from mailgate.core.addresses import canonical, clean_address, fold_case, strip_plus
from mailgate.core.businesstime import BusinessCalendar, HolidayLookup, calendar_from_table
from mailgate.core.headernames import LOOP_HEADERS, ROUTING_HEADERS
from mailgate.core.model import Priority
from mailgate.errors import ConfigError

PREFIX_PATTERN = re.compile(r"[A-Z][A-Z0-9]{0,9}")
DEFAULT_FIRST_RESPONSE = {Priority.HIGH: "1h", Priority.NORMAL: "4h", Priority.LOW: "1d"}
DEFAULT_RESOLUTION = {Priority.HIGH: "8h", Priority.NORMAL: "3d", Priority.LOW: "10d"}
PRIORITIES = tuple(p.value for p in Priority)

# Who can be told about an SLA warning, breach or re-escalation (Directory.recipients).
ROLES = ("assignee", "team", "notify", "lead", "head", "head_manager")
NOTIFY_LEVELS = {
    "warning": ("assignee", "team"),
    "breach": ("assignee", "lead", "head"),
    "re_escalation": ("head", "head_manager"),
}
# Route.rule names the rule that decided; these names mean "no rule" and stay unambiguous.
RESERVED_RULE_NAMES = ("address", "mailbox", "default")
RULE_MATCHERS = ("to", "from", "from_department", "subject", "body", "header")
# Headers the parser keeps in Inbound.headers: the only ones a rule can look at.
RULE_HEADERS = frozenset((*LOOP_HEADERS, *ROUTING_HEADERS, "content-type", "report-type"))


@dataclass(frozen=True)
class EscalationNotify:
    """Roles (see ROLES) told at each escalation level."""

    warning: tuple[str, ...] = NOTIFY_LEVELS["warning"]
    breach: tuple[str, ...] = NOTIFY_LEVELS["breach"]
    re_escalation: tuple[str, ...] = NOTIFY_LEVELS["re_escalation"]


@dataclass(frozen=True)
class SlaPolicy:
    name: str
    first_response: dict[Priority, timedelta]
    resolution: dict[Priority, timedelta]
    warn_at: tuple[float, ...] = (0.75, 0.9)
    # After a requester's reply, the next agent answer is due within this (only the
    # priorities listed have a target).
    next_response: dict[Priority, timedelta] = field(default_factory=dict)
    re_escalate_every: timedelta | None = None  # business time between re-escalations
    notify: EscalationNotify = field(default_factory=EscalationNotify)


@dataclass(frozen=True)
class Department:
    key: str
    name: str
    addresses: tuple[str, ...]  # lower-case; the first one is the department's reply address
    prefix: str  # ticket prefix, e.g. "IT"
    team: tuple[str, ...] = ()
    lead: str | None = None
    head: str | None = None
    notify: str | None = None
    calendar: str | None = None
    sla: str | None = None

    @property
    def address(self) -> str:
        return self.addresses[0]


@dataclass(frozen=True, slots=True)
class Person:
    email: str  # lower-case
    name: str = ""
    department: str | None = None
    manager: str | None = None  # lower-case email of another person
    role: str = ""  # free text, e.g. "agent"


@dataclass(frozen=True)
class Rule:
    """One [[rule]]: every matcher given must match; routing.py does the matching."""

    name: str
    department: str
    priority: Priority = Priority.NORMAL
    to: tuple[str, ...] = ()  # recipient addresses, lower-case
    senders: tuple[str, ...] = ()  # "from": addresses or "@domain", lower-case
    from_department: str | None = None
    subject: regex.Pattern[str] | None = None
    body: regex.Pattern[str] | None = None
    headers: tuple[tuple[str, regex.Pattern[str]], ...] = ()  # (lower-case name, pattern)


@dataclass(frozen=True)
class Directory:
    departments: dict[str, Department]
    sla_policies: dict[str, SlaPolicy] = field(default_factory=dict)
    default_department: str | None = None
    people: dict[str, Person] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    calendars: dict[str, BusinessCalendar] = field(default_factory=dict)
    people_file: Path | None = None  # where `mailgate directory import` writes
    _by_address: dict[str, str] = field(default_factory=dict, repr=False)
    _by_prefix: dict[str, str] = field(default_factory=dict, repr=False)
    _rule_addresses: set[str] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        for dept in self.departments.values():
            self._by_prefix[dept.prefix] = dept.key
            for addr in dept.addresses:
                self._by_address[addr] = dept.key
        for rule in self.rules:
            self._rule_addresses.update(rule.to)

    def department_for_address(self, addr: str) -> Department | None:
        """Department owning addr; plus-addressing (it-help+laptop@) counts as it-help@."""
        addr = fold_case(addr)
        key = self._by_address.get(addr) or self._by_address.get(strip_plus(addr))
        return self.departments.get(key) if key else None

    def department_for_prefix(self, prefix: str) -> Department | None:
        key = self._by_prefix.get(prefix.upper())
        return self.departments.get(key) if key else None

    def own_addresses(self) -> frozenset[str]:
        return frozenset(self._by_address)

    def is_own(self, addr: str) -> bool:
        """Whether addr is one of mailgate's own: a department's address or one a rule
        routes by, plus tag and ASCII case aside (default_department does not make every
        address ours)."""
        addr = fold_case(addr)
        return (self.department_for_address(addr) is not None
                or addr in self._rule_addresses or strip_plus(addr) in self._rule_addresses)

    def accepts(self, addr: str) -> bool:
        """Whether mail for addr is ours to take (the SMTP listener's RCPT check): a
        department's address, an address a rule routes by, or anything at all when a
        default_department catches the rest."""
        return self.default_department is not None or self.is_own(addr)

    def person(self, addr: str) -> Person | None:
        addr = fold_case(addr)
        return self.people.get(addr) or self.people.get(strip_plus(addr))

    def sla_for(self, dept: Department) -> SlaPolicy:
        if dept.sla and dept.sla in self.sla_policies:
            return self.sla_policies[dept.sla]
        return DEFAULT_SLA

    def calendar_for(self, dept: Department) -> BusinessCalendar:
        """The department's business calendar; a department without one works 24x7."""
        if dept.calendar and dept.calendar in self.calendars:
            return self.calendars[dept.calendar]
        return ALWAYS

    def recipients(self, dept: Department, roles: Sequence[str],
                   assignee: str | None) -> tuple[str, ...]:
        """Addresses for roles (see ROLES), in order, without duplicates; a role nobody
        fills (no lead, no assignee yet) is skipped."""
        found: dict[str, None] = {}
        for role in roles:
            found.update(dict.fromkeys(fold_case(a) for a in self._filled_by(dept, role, assignee)
                                       if a))
        return tuple(found)

    def _filled_by(self, dept: Department, role: str,
                   assignee: str | None) -> Sequence[str | None]:
        if role == "assignee":
            return (assignee,)
        if role == "team":
            return dept.team or (dept.notify,)  # a team without members is its list address
        if role in ("notify", "lead", "head"):
            return (getattr(dept, role),)
        if role == "head_manager":
            head = self.person(dept.head) if dept.head else None
            return (head.manager if head else None,)
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")


def is_agent(dept: Department, addr: str) -> bool:
    """Someone who answers for the department: a team member, its lead, head or notify list."""
    addr = fold_case(addr)
    return addr in dept.team or addr in (dept.lead, dept.head, dept.notify)


def member_address(dept: Department, addr: str) -> str | None:
    """The directory's spelling of the team member, lead or head who wrote from `addr`
    (plus tag and case aside), or None. A notify list is not a member: a list that
    rewrites From: would hand every poster a member's authority."""
    key = canonical(addr)
    return next((a for a in (*dept.team, dept.lead, dept.head) if a and canonical(a) == key),
                None)


def _default_sla() -> SlaPolicy:
    return SlaPolicy(
        name="default",
        first_response={p: parse_duration(v) for p, v in DEFAULT_FIRST_RESPONSE.items()},
        resolution={p: parse_duration(v) for p, v in DEFAULT_RESOLUTION.items()},
    )


DEFAULT_SLA = _default_sla()
ALWAYS = BusinessCalendar.always()


# --- loading ------------------------------------------------------------------------------

def load_directory(path: Path, *, people_file: Path | None = None,
                   holiday_lookup: HolidayLookup | None = None) -> Directory:
    """Read and validate directory.toml; raise ConfigError listing every problem.

    people_file replaces the file named by directory.toml's people_file: the importer
    checks a candidate file this way before it replaces the real one. holiday_lookup is
    passed to the calendars (tests use it to avoid the `holidays` package).
    """
    problems: list[str] = []
    root = Table(read_toml(path), path, "", problems)
    policies = _sla_policies(root)
    departments = [_department(t) for t in root.tables("department")]
    by_key = _check_departments(root, departments, policies)
    default = root.str("default_department", None)
    if default is not None and default not in by_key:
        root.problem("default_department", f"unknown department {default!r}")
    named = _people_path(root)
    people = _people(root, people_file or named)
    _check_people(root, departments, people)
    rules = _rules(root, by_key, bool(people) or named is not None)
    calendars = _calendars(root, holiday_lookup)
    _check_calendars(root, departments, calendars)
    root.reject_unknown()
    if problems:
        raise ConfigError(problems)
    return Directory(departments=by_key, sla_policies=policies, default_department=default,
                     people={p.email: p for p, _ in people}, rules=rules, calendars=calendars,
                     people_file=named)


def people_file_of(path: Path) -> Path | None:
    """The people_file a directory.toml names, without validating anything else: the
    importer must work even while the people it is about to replace are wrong."""
    value = read_toml(path).get("people_file")
    return path.parent / value if isinstance(value, str) and value else None


def _department(t: Table) -> Department:
    key = t.str("key") or ""
    addresses = tuple(fold_case(a.strip()) for a in t.str_list("addresses", []) or [])
    if not addresses:
        t.problem("addresses", "missing; list at least one address, e.g. ['it-help@example.com']")
    for addr in addresses:
        if "@" not in addr or any(c in addr for c in " \r\n<>,"):
            t.problem("addresses", f"not an email address: {addr!r}")
    prefix = t.str("prefix", key.upper()) or ""
    if not PREFIX_PATTERN.fullmatch(prefix):
        t.problem("prefix", f"must be 1-10 capital letters/digits starting with a letter, "
                  f"got {prefix!r}")
    dept = Department(
        key=key, name=t.str("name", key), addresses=addresses or ("invalid@invalid",),
        prefix=prefix, team=tuple(fold_case(a) for a in t.str_list("team", []) or []),
        lead=_lower(t.str("lead", None)), head=_lower(t.str("head", None)),
        notify=_lower(t.str("notify", None)), calendar=t.str("calendar", None),
        sla=t.str("sla", None),
    )
    t.reject_unknown()
    return dept


def _lower(value: str | None) -> str | None:
    return fold_case(value) if value else value


def _check_departments(root: Table, departments: list[Department],
                       policies: dict[str, SlaPolicy]) -> dict[str, Department]:
    by_key: dict[str, Department] = {}
    owners: dict[str, str] = {}
    prefixes: dict[str, str] = {}
    if not departments:
        root.problem("department", "no [[department]] defined; mailgate needs at least one")
    for index, dept in enumerate(departments):
        where = f"department[{index}]"
        if dept.key in by_key:
            root.problem(f"{where}.key", f"duplicate department key {dept.key!r}")
        by_key[dept.key] = dept
        if dept.prefix in prefixes:
            root.problem(f"{where}.prefix", f"prefix {dept.prefix!r} is already used by "
                         f"department {prefixes[dept.prefix]!r}")
        prefixes[dept.prefix] = dept.key
        for addr in dept.addresses:
            if addr in owners:
                root.problem(f"{where}.addresses", f"{addr} is already an address of "
                             f"department {owners[addr]!r}")
            owners[addr] = dept.key
        if dept.sla and dept.sla not in policies:
            root.problem(f"{where}.sla",
                         f"unknown SLA policy {dept.sla!r}; define [sla.{dept.sla}]")
    return by_key


def _is_address(value: str) -> bool:
    return clean_address(value) == value


# --- people -------------------------------------------------------------------------------

def _people_path(root: Table) -> Path | None:
    name = root.str("people_file", None)
    return root.file.parent / name if name else None  # an absolute name stays absolute


def _people(root: Table, people_path: Path | None) -> list[tuple[Person, Table]]:
    """Every [[person]] with the table it came from (directory.toml or the people_file),
    so later checks can name the right file and key."""
    found = [(_person(t), t) for t in root.tables("person")]
    if people_path is None:
        return found
    if not people_path.is_file():
        root.problem("people_file", f"{people_path}: file not found; create it with "
                     "`mailgate directory import people.csv`")
        return found
    try:
        data = read_toml(people_path)
    except ConfigError as exc:
        root.problems.extend(exc.problems)
        return found
    table = Table(data, people_path, "", root.problems)
    found += [(_person(t), t) for t in table.tables("person")]
    table.reject_unknown()
    return found


def _person(t: Table) -> Person:
    email = fold_case((t.str("email") or "").strip())
    if email and not _is_address(email):
        t.problem("email", f"not an email address: {email!r}")
    manager = _lower(t.str("manager", None))
    if manager and not _is_address(manager):
        t.problem("manager", f"not an email address: {manager!r}")
    person = Person(email=email, name=t.str("name", ""), department=t.str("department", None),
                    manager=manager or None, role=t.str("role", ""))
    t.reject_unknown()
    return person


def _check_people(root: Table, departments: list[Department],
                  people: list[tuple[Person, Table]]) -> None:
    known: dict[str, Table] = {}
    dept_keys = {d.key for d in departments}
    emails = {p.email for p, _ in people}
    for person, t in people:
        if not person.email:
            continue  # reported as missing already
        if person.email in known:
            other = known[person.email]
            t.problem("email", f"duplicate person {person.email!r} "
                      f"(first at {other.file}: {other.prefix})")
        known.setdefault(person.email, t)
        if person.department is not None and person.department not in dept_keys:
            t.problem("department", f"unknown department {person.department!r} "
                      f"(known: {', '.join(sorted(dept_keys))})")
        if person.manager and person.manager not in emails:
            t.problem("manager", f"{person.manager} is not a person; add a [[person]] "
                      "for them or fix the address")
    managers = {p.email: p.manager for p, _ in people if p.email}
    for cycle in manager_cycles(managers):
        known[cycle[0]].problem("manager", "manager chain is a cycle: " + " -> ".join(cycle))
    if people:  # small setups list no people at all; then addresses are just addresses
        _check_members(root, departments, emails)


def _check_members(root: Table, departments: list[Department], emails: set[str]) -> None:
    for index, dept in enumerate(departments):
        for role, addresses in (("team", dept.team), ("lead", (dept.lead,)),
                                ("head", (dept.head,))):
            for addr in addresses:
                if addr and addr not in emails:
                    root.problem(f"department[{index}].{role}", f"{addr} is not a person; "
                                 "add a [[person]] for them (or import people)")


def manager_cycles(managers: Mapping[str, str | None]) -> list[list[str]]:
    """Each cycle in the manager relation once, as a chain from its first member reached
    (in mapping order) back to that member: ["a", "b", "a"]."""
    state: dict[str, bool] = {}  # True: on the chain being walked; False: done
    cycles: list[list[str]] = []
    for start in managers:
        chain: list[str] = []
        node: str | None = start
        while node is not None and node in managers and node not in state:
            state[node] = True
            chain.append(node)
            node = managers[node]
        if node is not None and state.get(node):
            cycles.append([*chain[chain.index(node):], node])
        state.update(dict.fromkeys(chain, False))
    return cycles


# --- routing rules ------------------------------------------------------------------------

def _rules(root: Table, departments: Mapping[str, Department],
           have_people: bool) -> tuple[Rule, ...]:
    rules: list[Rule] = []
    names: dict[str, str] = {}
    for t in root.tables("rule"):
        rule = _rule(t, departments, have_people)
        if rule.name in names:
            t.problem("name", f"duplicate rule name {rule.name!r} (also {names[rule.name]})")
        names.setdefault(rule.name, t.prefix)
        rules.append(rule)
    return tuple(rules)


def _rule(t: Table, departments: Mapping[str, Department], have_people: bool) -> Rule:
    if not any(key in t.data for key in RULE_MATCHERS):
        t.problems.append(f"{t.file}: {t.prefix}: no matcher ({', '.join(RULE_MATCHERS)}); "
                          "a rule without one takes every message: use default_department")
    name = t.str("name", t.prefix)
    if name in RESERVED_RULE_NAMES:
        t.problem("name", f"{name!r} is reserved (it reports routing without a rule)")
    department = t.str("department")
    if department is not None and department not in departments:
        t.problem("department", f"unknown department {department!r}")
    rule = Rule(
        name=name or t.prefix, department=department or "",
        priority=Priority(t.choice("priority", PRIORITIES, Priority.NORMAL.value)),
        to=_rule_addresses(t, "to", domains=False),
        senders=_rule_addresses(t, "from", domains=True),
        from_department=_from_department(t, departments, have_people),
        subject=_regex(t, "subject"), body=_regex(t, "body"), headers=_header_patterns(t),
    )
    t.reject_unknown()
    return rule


def _rule_addresses(t: Table, key: str, domains: bool) -> tuple[str, ...]:
    values = tuple(fold_case(v.strip()) for v in t.str_list(key, []) or [])
    for value in values:
        if domains and value.startswith("@") and _is_address("x" + value):
            continue
        if not _is_address(value):
            hint = " or @domain" if domains else ""
            t.problem(key, f"not an email address{hint}: {value!r}")
    return values


def _from_department(t: Table, departments: Mapping[str, Department],
                     have_people: bool) -> str | None:
    key = t.str("from_department", None)
    if key is None:
        return None
    if key not in departments:
        t.problem("from_department", f"unknown department {key!r}")
    elif not have_people:
        t.problem("from_department", "needs [[person]] entries (or people_file): the "
                  "sender's department comes from the people list")
    return key


def _regex(t: Table, key: str) -> regex.Pattern[str] | None:
    text = t.str(key, None)
    return None if text is None else _compile(t, key, text)


def _compile(t: Table, key: str, text: str) -> regex.Pattern[str] | None:
    """Case-insensitive pattern, or None with a problem recorded. The `regex` engine can
    stop a search after a time limit (routing.py), which Python's `re` cannot."""
    try:
        return regex.compile(text, regex.IGNORECASE | regex.V0)
    except (regex.error, ValueError) as exc:  # (?V1) is a ValueError, not regex.error
        t.problem(key, f"invalid regular expression {text!r}: {exc}")
        return None


def _header_patterns(t: Table) -> tuple[tuple[str, regex.Pattern[str]], ...]:
    table = t.table("header")
    if table is None:
        return ()
    found = []
    for name in list(table.data):
        if name.lower() not in RULE_HEADERS:
            table.problem(name, "mailgate does not keep this header, so no rule can see it; "
                          f"usable: {', '.join(sorted(RULE_HEADERS))}")
        value = table.str(name)
        pattern = _compile(table, name, value) if value is not None else None
        if pattern is not None:
            found.append((name.lower(), pattern))
    return tuple(found)


# --- calendars ----------------------------------------------------------------------------

def _calendars(root: Table, holiday_lookup: HolidayLookup | None) -> dict[str, BusinessCalendar]:
    table = root.table("calendar")
    if table is None:
        return {}
    calendars = {}
    for name in list(table.data):
        sub = table.table(name)
        if sub is None:
            continue
        try:
            calendars[name] = calendar_from_table(name, sub.data, holiday_lookup)
        except ConfigError as exc:
            root.problems.extend(_calendar_problem(root.file, name, line) for line in exc.problems)
    return calendars


def _calendar_problem(file: Path, name: str, line: str) -> str:
    """businesstime says "calendar.NAME: KEY: problem"; make it "FILE: calendar.NAME.KEY:
    problem" like every other line."""
    head = f"calendar.{name}: "
    if line.startswith(head):
        line = f"calendar.{name}.{line.removeprefix(head)}"
    return f"{file}: {line}"


def _check_calendars(root: Table, departments: list[Department],
                     calendars: Mapping[str, BusinessCalendar]) -> None:
    tables = root.data.get("calendar")
    defined = set(tables) if isinstance(tables, dict) else set()
    for index, dept in enumerate(departments):
        # A calendar defined but broken has its own problem lines already.
        if dept.calendar and dept.calendar not in calendars and dept.calendar not in defined:
            root.problem(f"department[{index}].calendar", f"unknown calendar "
                         f"{dept.calendar!r}; define [calendar.{dept.calendar}]")


# --- SLA policies -------------------------------------------------------------------------

def _sla_policies(root: Table) -> dict[str, SlaPolicy]:
    sla = root.table("sla")
    if sla is None:
        return {}
    policies = {}
    for name in list(sla.data):
        t = sla.table(name)
        if t is not None:
            policies[name] = SlaPolicy(
                name=name,
                first_response=_targets(t, "first_response", DEFAULT_FIRST_RESPONSE),
                resolution=_targets(t, "resolution", DEFAULT_RESOLUTION),
                warn_at=_warn_at(t),
                next_response=_targets(t, "next_response", {}),
                re_escalate_every=_positive_duration(t, "re_escalate_every"),
                notify=_notify(t),
            )
            t.reject_unknown()
    return policies


def _targets(t: Table, name: str, defaults: dict[Priority, str]) -> dict[Priority, timedelta]:
    table = t.table(name)
    targets = {p: parse_duration(v) for p, v in defaults.items()}
    if table is None:
        return targets
    for priority in Priority:
        value = table.duration(priority.value, targets.get(priority))
        if value is not None:
            targets[priority] = value
    table.reject_unknown()
    return targets


def _positive_duration(t: Table, name: str) -> timedelta | None:
    value = t.duration(name, None)
    if value is not None and value <= timedelta(0):
        t.problem(name, "must be longer than zero")
        return None
    return value


def _warn_at(t: Table) -> tuple[float, ...]:
    values = t._get("warn_at", [0.75, 0.9], list, "a list of fractions such as [0.75, 0.9]")
    good = tuple(float(v) for v in values if isinstance(v, int | float) and 0 < v < 1)
    if len(good) != len(values):
        t.problem("warn_at", "every entry must be a fraction between 0 and 1")
    return tuple(sorted(good))


def _notify(t: Table) -> EscalationNotify:
    table = t.table("notify")
    if table is None:
        return EscalationNotify()
    levels = {level: _roles(table, level, default) for level, default in NOTIFY_LEVELS.items()}
    table.reject_unknown()
    return EscalationNotify(**levels)


def _roles(t: Table, level: str, default: tuple[str, ...]) -> tuple[str, ...]:
    roles = tuple(t.str_list(level, list(default)) or ())
    for role in roles:
        if role not in ROLES:
            t.problem(level, f"unknown role {role!r}; use {', '.join(ROLES)}")
    return tuple(r for r in roles if r in ROLES)
