"""Load config + directory + templates together and cross-check them.

Problems stop the start (ConfigError, one line each); warnings (Setup.warnings) are
printed by `mailgate check` and logged by `mailgate run`: a listener reachable from
other machines, a password file others can read, a rule regex that can backtrack.
"""

from __future__ import annotations

import ipaddress
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import regex

from mailgate.config.directory import Directory, load_directory
from mailgate.config.settings import (
    OLD_AUTO_MAIL_KEY,
    Config,
    SecretsMode,
    load_config,
    read_toml,
)
from mailgate.errors import ConfigError

if TYPE_CHECKING:  # imported where templates are loaded: jinja2 costs a command ~50 ms
    from mailgate.core.render import Renderer

T = TypeVar("T")


@dataclass(frozen=True)
class Setup:
    config: Config
    directory: Directory
    renderer: Renderer  # the template snapshot that was checked: the one to use
    warnings: tuple[str, ...] = ()  # worth fixing, not worth refusing to start


def load_setup(path: Path, secrets: SecretsMode = "read") -> Setup:
    """Everything the daemon needs, or ConfigError with one line per problem.

    A broken mailgate.toml does not hide the directory's problems: `mailgate check` shows
    both files' at once whenever the directory can still be found.
    """
    try:
        config = guarded(path, lambda: load_config(path, secrets))
    except ConfigError as exc:
        raise ConfigError(exc.problems + _other_problems(path, exc.problems)) from None
    directory = _load_directory(config.directory_path, path)
    problems = _setup_problems(config, directory)
    from mailgate.core.render import Renderer

    renderer = Renderer(config.templates_dir)
    problems += renderer.check()
    if problems:
        raise ConfigError(problems)
    return Setup(config, directory, renderer, tuple(warnings(config, directory)))


def _setup_problems(config: Config, directory: Directory) -> list[str]:
    return [
        f"{config.path}: mailbox[{i}].department: unknown department {box.department!r} "
        f"(known: {', '.join(directory.departments)})"
        for i, box in enumerate(config.mailboxes) if box.department not in directory.departments
    ]


def _other_problems(path: Path, found: list[str]) -> list[str]:
    """When mailgate.toml has problems (a password this shell cannot read, say), the
    problems of everything else, so that one `check` shows them all: the config read
    without its secrets, the directory, the mailboxes' departments and the templates."""
    try:
        config = guarded(path, lambda: load_config(path, "none"))
    except ConfigError:
        return _directory_problems(path)  # the file itself is broken: its directory only
    try:
        directory = _load_directory(config.directory_path, path)
    except ConfigError as exc:
        more = exc.problems
    else:
        more = _setup_problems(config, directory)
    from mailgate.core.render import Renderer

    more += Renderer(config.templates_dir).check()
    return [line for line in more if line not in found]


def directory_path(path: Path) -> Path:
    """Where mailgate.toml says directory.toml is, reading nothing else: `mailgate route`
    and `mailgate directory import` need no passwords, mailboxes or templates."""
    table = read_toml(path).get("directory")
    value = table.get("path") if isinstance(table, dict) else None
    name = Path(value if isinstance(value, str) and value else "directory.toml")
    return name if name.is_absolute() else (path.parent / name).resolve()


def load_directory_of(path: Path) -> Directory:
    """The directory a mailgate.toml names, validated on its own."""
    return _load_directory(directory_path(path), path)


def _directory_problems(path: Path) -> list[str]:
    try:
        _load_directory(directory_path(path), path)
    except ConfigError as exc:
        # An unreadable mailgate.toml is reported once, by load_config, not again here.
        return [line for line in exc.problems if not line.startswith(f"{path}: ")]
    return []


# --- no traceback, whatever the files hold ------------------------------------------------

def guarded(path: Path, load: Callable[[], T]) -> T:
    """load(), with anything it did not foresee turned into one line naming the file:
    `mailgate check` and `mailgate run` report a bad file, they do not crash on it."""
    try:
        return load()
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError([f"{path}: cannot be loaded: {type(exc).__name__}: {exc}"]) from None


def _load_directory(path: Path, named_by: Path) -> Directory:
    """The directory file; a missing one is named with the key that points at it (the fix
    is in mailgate.toml, not on the command line)."""
    try:
        return guarded(path, lambda: load_directory(path))
    except ConfigError as exc:
        missing = f"{path}: file not found (pass --config PATH)"
        config = named_by.resolve()
        problems = [f"{path}: file not found: set [directory] path in {config} to the "
                    f"directory file (relative paths are relative to {config.parent})"
                    if line == missing else line for line in exc.problems]
        # A pattern the regex engine rejects with ValueError rather than regex.error
        # ("(?V1)" against the V0 flag) escapes directory.py's check: name its key here.
        raise ConfigError(_rule_pattern_problems(path) or problems) from None


def _rule_pattern_problems(path: Path) -> list[str]:
    try:
        rules = read_toml(path).get("rule")
    except ConfigError:
        return []
    found = []
    for index, rule in enumerate(rules if isinstance(rules, list) else []):
        for key, text in _rule_patterns(rule):
            try:
                regex.compile(text, regex.IGNORECASE | regex.V0)
            except Exception as exc:
                found.append(f"{path}: rule[{index}].{key}: invalid regular expression "
                             f"{text!r}: {exc}")
    return found


def _rule_patterns(rule: object) -> list[tuple[str, str]]:
    if not isinstance(rule, dict):
        return []
    found = [(key, rule[key]) for key in ("subject", "body") if isinstance(rule.get(key), str)]
    headers = rule.get("header")
    if isinstance(headers, dict):
        found += [(f"header.{k}", v) for k, v in headers.items() if isinstance(v, str)]
    return found


# --- warnings -----------------------------------------------------------------------------

def warnings(config: Config, directory: Directory) -> list[str]:
    return [*_listener_warnings(config), *_password_file_warnings(config),
            *_rule_warnings(config.directory_path, directory), *_trust_warnings(config),
            *_old_limit_warnings(config)]


def _old_limit_warnings(config: Config) -> list[str]:
    """[limits] acks_per_sender_per_hour, the old key of auto_mail_per_recipient_per_hour:
    by its name it bounds acknowledgements, but it sets the limit of every automatic mail
    to one mailbox; and beside the new key it is ignored. Neither happens silently."""
    limits = read_toml(config.path).get("limits")
    if not isinstance(limits, dict) or OLD_AUTO_MAIL_KEY not in limits:
        return []
    where = f"{config.path}: limits.{OLD_AUTO_MAIL_KEY}"
    value = config.limits.auto_mail_per_recipient_per_hour
    if "auto_mail_per_recipient_per_hour" in limits:
        return [f"{where}: ignored, auto_mail_per_recipient_per_hour = {value} is set too; "
                f"remove the old key"]
    return [f"{where}: the old name of auto_mail_per_recipient_per_hour: it limits not only "
            f"acknowledgements but every automatic mail (command replies and refusals, "
            f"notices, thanks) to {value} an hour per mailbox; rename it"]


def _trust_warnings(config: Config) -> list[str]:
    if not config.security.from_header_is_proof:
        return []
    return [f"{config.path}: security.from_header_is_proof: a From: line in "
            f"{', '.join(sorted(config.security.trusted_domains)) or 'any domain'} is "
            f"believed without a reply key or your MTA's pass: anyone who gets mail to you "
            f"with such a From: can act as that person; remove it unless your MTA rejects "
            f"forged internal senders"]


def _listener_warnings(config: Config) -> list[str]:
    found = []
    if config.listener and not is_loopback(config.listener.host):
        found.append(f"{config.path}: intake.smtp.listen: {config.listener.host} listens "
                     f"beyond this machine: anyone who reaches port {config.listener.port} "
                     f"can hand mailgate mail; keep it on 127.0.0.1 behind your MTA, or "
                     f"firewall it")
    if config.listener and config.listener.port == 0:
        found.append(f"{config.path}: intake.smtp.listen: port 0 takes a different free "
                     f"port at each start, which your MTA cannot know; set a fixed port")
    if config.metrics and not is_loopback(config.metrics.host):
        found.append(f"{config.path}: metrics.listen: {config.metrics.host} listens beyond "
                     f"this machine and the endpoint has no authentication; keep it on "
                     f"127.0.0.1, or firewall it")
    return found


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any address
        return False


def _password_file_warnings(config: Config) -> list[str]:
    """password_file settings whose file the group or others may read (or write)."""
    data = read_toml(config.path)
    tables = [("smtp", data.get("smtp"))] + [
        (f"mailbox[{i}]", t) for i, t in enumerate(data.get("mailbox") or [])]
    found = []
    for name, table in tables:
        value = table.get("password_file") if isinstance(table, dict) else None
        if not isinstance(value, str) or not value:
            continue
        path = (config.path.parent / value).resolve()  # as load_config reads it
        try:
            mode = path.stat().st_mode
        except OSError:  # unreadable files are load_config's problem, not a warning
            continue
        if stat.S_ISREG(mode) and mode & 0o077:
            found.append(f"{config.path}: {name}.password_file: {path} is readable by "
                         f"{_who(mode)} (mode {stat.S_IMODE(mode):04o}); run chmod 600 {path}")
    return found


def _who(mode: int) -> str:
    group, others = mode & 0o070, mode & 0o007
    return "group and others" if group and others else "others" if others else "its group"


def _rule_warnings(path: Path, directory: Directory) -> list[str]:
    found = []
    for rule in directory.rules:
        where = rule.name if rule.name.startswith("rule[") else f"rule {rule.name!r}"
        patterns = [("subject", rule.subject), ("body", rule.body),
                    *((f"header.{name}", p) for name, p in rule.headers)]
        for key, pattern in patterns:
            if pattern is not None and nested_repetition(pattern.pattern):
                found.append(f"{path}: {where}.{key}: {pattern.pattern!r} repeats a group "
                             f"that itself repeats, like (a+)+, which a hostile mail can "
                             f"make take exponential time; mailgate gives up such a search, "
                             f"so the rule may silently not match: write it without the "
                             f"nesting")
    return found


def nested_repetition(pattern: str) -> bool:
    """Whether a group repeated without bound holds an unbounded repetition itself --
    (a+)+, (\\w+\\s?)*, (x*y){2,} -- the shape of catastrophic backtracking. A cheap look
    at the text: it finds the common case, not every slow pattern ((a|aa)+ passes), and
    bounded counts such as (\\d{1,3}\\.){3} are fine."""
    inner: list[bool] = []  # per open group: something inside it repeats without bound
    closed_repeats = False  # the group that just closed held such a repetition
    i = 0
    while i < len(pattern):
        length, unbounded = _quantifier_at(pattern, i)
        if length:
            if unbounded and closed_repeats:
                return True
            if unbounded and inner:
                inner[-1] = True
            i += length
            i += pattern[i:i + 1] in ("?", "+")  # lazy or possessive form, not another one
            closed_repeats = False
            continue
        closed_repeats = False
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if char == "[":
            i = _class_end(pattern, i)
            continue
        if char == "(":
            inner.append(False)
        elif char == ")" and inner:
            closed_repeats = inner.pop()
            if inner and closed_repeats:
                inner[-1] = True
        i += 1
    return False


_COUNT = regex.compile(r"\{(\d*)(,?)(\d*)\}")


def _quantifier_at(pattern: str, i: int) -> tuple[int, bool]:
    """(length, unbounded) of a quantifier at i: *, + and {n,} are unbounded; ?, {n} and
    {n,m} are not. (0, False) where there is none ("(?" opens a group, it repeats nothing)."""
    char = pattern[i]
    if char in "*+?":
        return (0, False) if i and pattern[i - 1] == "(" else (1, char != "?")
    found = _COUNT.match(pattern, i) if char == "{" else None
    if found is None or not (found.group(1) or found.group(3)):
        return 0, False
    return len(found.group()), bool(found.group(2)) and not found.group(3)


def _class_end(pattern: str, i: int) -> int:
    """The index after the character class that opens at i ("[]x]" and "[^]x]" included)."""
    j = i + 1
    if pattern[j:j + 1] == "^":
        j += 1
    if pattern[j:j + 1] == "]":
        j += 1
    while j < len(pattern) and pattern[j] != "]":
        j += 2 if pattern[j] == "\\" else 1
    return j + 1
