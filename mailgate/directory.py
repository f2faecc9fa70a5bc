"""The directory: departments, their addresses and SLA policies. Lookups only, no I/O
beyond loading the file."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from mailgate.config import read_toml
from mailgate.errors import ConfigError
from mailgate.model import Priority
from mailgate.settings import Table

PREFIX_PATTERN = re.compile(r"[A-Z][A-Z0-9]{0,9}")
DEFAULT_FIRST_RESPONSE = {Priority.HIGH: "1h", Priority.NORMAL: "4h", Priority.LOW: "1d"}
DEFAULT_RESOLUTION = {Priority.HIGH: "8h", Priority.NORMAL: "3d", Priority.LOW: "10d"}


@dataclass(frozen=True)
class SlaPolicy:
    name: str
    first_response: dict[Priority, timedelta]
    resolution: dict[Priority, timedelta]
    warn_at: tuple[float, ...] = (0.75, 0.9)


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


@dataclass(frozen=True)
class Directory:
    departments: dict[str, Department]
    sla_policies: dict[str, SlaPolicy] = field(default_factory=dict)
    default_department: str | None = None
    _by_address: dict[str, str] = field(default_factory=dict, repr=False)
    _by_prefix: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for dept in self.departments.values():
            self._by_prefix[dept.prefix] = dept.key
            for addr in dept.addresses:
                self._by_address[addr] = dept.key

    def department_for_address(self, addr: str) -> Department | None:
        """Department owning addr; plus-addressing (it-help+laptop@) counts as it-help@."""
        addr = addr.lower()
        key = self._by_address.get(addr) or self._by_address.get(strip_plus(addr))
        return self.departments.get(key) if key else None

    def department_for_prefix(self, prefix: str) -> Department | None:
        key = self._by_prefix.get(prefix.upper())
        return self.departments.get(key) if key else None

    def own_addresses(self) -> frozenset[str]:
        return frozenset(self._by_address)

    def sla_for(self, dept: Department) -> SlaPolicy:
        if dept.sla and dept.sla in self.sla_policies:
            return self.sla_policies[dept.sla]
        return DEFAULT_SLA


def strip_plus(addr: str) -> str:
    local, at, domain = addr.partition("@")
    return f"{local.split('+', 1)[0]}{at}{domain}"


def _default_sla() -> SlaPolicy:
    from mailgate.settings import parse_duration

    return SlaPolicy(
        name="default",
        first_response={p: parse_duration(v) for p, v in DEFAULT_FIRST_RESPONSE.items()},
        resolution={p: parse_duration(v) for p, v in DEFAULT_RESOLUTION.items()},
    )


DEFAULT_SLA = _default_sla()


def load_directory(path: Path) -> Directory:
    """Read and validate directory.toml; raise ConfigError listing every problem."""
    problems: list[str] = []
    root = Table(read_toml(path), path, "", problems)
    policies = _sla_policies(root)
    departments = [_department(t) for t in root.tables("department")]
    root.table("calendar")  # business calendars are read by the SLA module
    default = root.str("default_department", None)
    by_key = _check_departments(root, departments, policies)
    if default is not None and default not in by_key:
        root.problem("default_department", f"unknown department {default!r}")
    root.reject_unknown()
    if problems:
        raise ConfigError(problems)
    return Directory(departments=by_key, sla_policies=policies, default_department=default)


def _department(t: Table) -> Department:
    key = t.str("key") or ""
    addresses = tuple(a.strip().lower() for a in t.str_list("addresses", []) or [])
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
        prefix=prefix, team=tuple(a.lower() for a in t.str_list("team", []) or []),
        lead=_lower(t.str("lead", None)), head=_lower(t.str("head", None)),
        notify=_lower(t.str("notify", None)), calendar=t.str("calendar", None),
        sla=t.str("sla", None),
    )
    t.reject_unknown()
    return dept


def _lower(value: str | None) -> str | None:
    return value.lower() if value else value


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
            )
            t.reject_unknown()
    return policies


def _targets(t: Table, name: str, defaults: dict[Priority, str]) -> dict[Priority, timedelta]:
    from mailgate.settings import parse_duration

    table = t.table(name)
    targets = {p: parse_duration(v) for p, v in defaults.items()}
    if table is None:
        return targets
    for priority in Priority:
        targets[priority] = table.duration(priority.value, targets[priority])
    table.reject_unknown()
    return targets


def _warn_at(t: Table) -> tuple[float, ...]:
    values = t._get("warn_at", [0.75, 0.9], list, "a list of fractions such as [0.75, 0.9]")
    good = tuple(float(v) for v in values if isinstance(v, int | float) and 0 < v < 1)
    if len(good) != len(values):
        t.problem("warn_at", "every entry must be a fraction between 0 and 1")
    return tuple(sorted(good))
