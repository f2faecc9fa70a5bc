"""Typed readers over parsed TOML tables that collect one clear line per problem.

Config and directory loading both read nested tables; instead of failing on the first bad
key, every reader appends "FILE: key: what is wrong" to a shared list so `mailgate check`
can print all problems at once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|d|h|m|s)")
_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


MAX_DURATION = timedelta(days=36_525)  # a timedelta overflows a little past 2.7 million years


def parse_duration(text: str) -> timedelta:
    """Parse "90s", "5m", "4h", "1d", "1h30m" into a timedelta; ValueError if malformed."""
    compact = text.replace(" ", "").lower()
    parts = _DURATION_PART.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 5m, 4h, 1d, 1h30m)")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"{text!r} is longer than 100 years; use a shorter duration")
    return timedelta(seconds=seconds)


class _Missing:
    pass


REQUIRED: Any = _Missing()


class Table:
    """One TOML table plus where it came from; readers record problems instead of raising."""

    def __init__(self, data: dict[str, Any], file: Path, prefix: str,
                 problems: list[str]) -> None:
        self.data = data
        self.file = file
        self.prefix = prefix
        self.problems = problems
        self._read: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def problem(self, name: str, message: str) -> None:
        self.problems.append(f"{self.file}: {self.key(name)}: {message}")

    def _get(self, name: str, default: Any, kind: type | tuple[type, ...], label: str) -> Any:
        self._read.add(name)
        if name not in self.data:
            if default is REQUIRED:
                self.problem(name, f"missing; set it to {label}")
                return None
            return default
        value = self.data[name]
        if isinstance(value, bool) and kind is not bool:
            self.problem(name, f"expected {label}, got {value!r}")
            return None if default is REQUIRED else default
        if not isinstance(value, kind):
            self.problem(name, f"expected {label}, got {value!r}")
            return None if default is REQUIRED else default
        return value

    def str(self, name: str, default: Any = REQUIRED) -> Any:
        return self._get(name, default, str, "a string")

    def int(self, name: str, default: Any = REQUIRED, minimum: int | None = None,
            maximum: int | None = None) -> Any:
        value = self._get(name, default, int, "an integer")
        if isinstance(value, int) and minimum is not None and value < minimum:
            self.problem(name, f"must be at least {minimum}, got {value}")
        if isinstance(value, int) and maximum is not None and value > maximum:
            self.problem(name, f"must be at most {maximum}, got {value}")
        return value

    def float(self, name: str, default: Any = REQUIRED) -> Any:
        value = self._get(name, default, (int, float), "a number")
        if value is not None and not math.isfinite(value):  # TOML has nan and inf
            self.problem(name, f"expected a finite number, got {value!r}")
            return None if default is REQUIRED else default
        return float(value) if value is not None else None

    def bool(self, name: str, default: Any = REQUIRED) -> Any:
        return self._get(name, default, bool, "true or false")

    def choice(self, name: str, choices: tuple[str, ...], default: Any = REQUIRED) -> Any:
        value = self.str(name, default)
        if value is not None and value not in choices:
            self.problem(name, f"must be one of {', '.join(choices)}; got {value!r}")
            return None if default is REQUIRED else default
        return value

    def str_list(self, name: str, default: Any = REQUIRED) -> Any:
        if isinstance(self.data.get(name), str):
            self._read.add(name)
            return [self.data[name]]
        value = self._get(name, default, list, "a list of strings")
        if value is not None and not all(isinstance(v, str) for v in value):
            self.problem(name, "every entry must be a string")
            return [v for v in value if isinstance(v, str)]
        return value

    def duration(self, name: str, default: Any = REQUIRED) -> Any:
        value = self._get(name, default, (str, int, float), 'a duration such as "30s"')
        if isinstance(value, timedelta) or value is None:
            return value
        if isinstance(value, int | float):
            if not math.isfinite(value) or abs(value) > MAX_DURATION.total_seconds():
                self.problem(name, f"expected a duration such as \"30s\", got {value!r}")
                return None if default is REQUIRED else default
            return timedelta(seconds=value)
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.problem(name, str(exc))
            return None if default is REQUIRED else default

    def table(self, name: str, required: bool = False) -> Table | None:
        value = self._get(name, REQUIRED if required else None, dict, "a table")
        if value is None:
            return None
        return Table(value, self.file, self.key(name), self.problems)

    def tables(self, name: str) -> Iterator[Table]:
        """An array of tables such as [[mailbox]]."""
        value = self._get(name, [], list, "an array of tables")
        for index, item in enumerate(value or []):
            if isinstance(item, dict):
                yield Table(item, self.file, f"{self.key(name)}[{index}]", self.problems)
            else:
                self.problem(f"{name}[{index}]", "expected a table")

    def reject_unknown(self) -> None:
        """Report keys nobody read: usually a typo the user wants to hear about."""
        for name in sorted(set(self.data) - self._read):
            self.problem(name, "unknown key (check the spelling against the README)")
