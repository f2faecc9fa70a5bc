"""People from an HR export: CSV in, a people TOML file (the directory's people_file) out.

Parsing and rendering are pure; the only I/O is `import_people`, which reads the CSV and
replaces the output atomically (temp file + os.replace) and only when nothing is wrong, so
a bad nightly export never leaves mailgate with a half-written or invalid directory.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailgate.config.directory import Person, load_directory, manager_cycles, people_file_of
from mailgate.config.settings import read_toml
from mailgate.core.addresses import clean_address
from mailgate.errors import ConfigError

COLUMNS = ("email", "name", "department", "manager", "role")
MAX_CELL_CHARS = 500
HEADER_COMMENT = ("# Written by `mailgate directory import`; the next import replaces this "
                  "file,\n# so change the HR export (or directory.toml), not this file.\n")


@dataclass(frozen=True, slots=True)
class Row:
    line: int  # where the record starts in the CSV, for messages
    person: Person


# --- parsing ------------------------------------------------------------------------------

def parse_people_csv(text: str, source: str,
                     dropped: set[str] | None = None) -> tuple[list[Row], list[str]]:
    """Rows and problems ("SOURCE:LINE: what is wrong"); header names are case-insensitive,
    unknown columns are ignored, blank lines skipped. `dropped` collects the (valid)
    addresses of rows left out for a problem, so others naming them as manager are not
    reported a second time."""
    problems: list[str] = []
    reader = csv.reader(io.StringIO(text, newline=""), _dialect(text))
    try:
        header = [h.strip().lower() for h in next(reader, [])]
    except csv.Error as exc:
        return [], [f"{source}:1: unreadable header row: {exc}"]
    if "email" not in header:
        found = ", ".join(repr(h) for h in header) or "nothing"
        return [], [f"{source}:1: no email column in the header row (found {found}); the "
                    f"first row must name the columns: {', '.join(COLUMNS)}"]
    columns = {name: header.index(name) for name in COLUMNS if name in header}
    rows: dict[str, Row] = {}
    for line, record in _records(reader, reader.line_num + 1, source, problems):
        row = _row(line, record, columns, f"{source}:{line}", problems)
        if row is None and dropped is not None and "email" in columns:
            email = record[columns["email"]].strip().lower() \
                if columns["email"] < len(record) else ""
            if email and clean_address(email) == email:
                dropped.add(email)
        if row is not None and row.person.email in rows:
            problems.append(f"{source}:{line}: email: {row.person.email} is already on line "
                            f"{rows[row.person.email].line}")
        elif row is not None:
            rows[row.person.email] = row
    return list(rows.values()), problems


def _dialect(text: str) -> type[csv.Dialect]:
    """Comma-separated, or semicolons as spreadsheets write in much of Europe."""
    first = text.split("\n", 1)[0]
    return _Semicolon if first.count(";") > first.count(",") else _Comma


class _Comma(csv.excel):
    # Not lenient: an unbalanced quote would otherwise swallow every later row into one
    # cell, and people would silently vanish from the directory.
    strict = True


class _Semicolon(_Comma):
    delimiter = ";"


def _records(reader: Any, line: int, source: str,
             problems: list[str]) -> Iterator[tuple[int, list[str]]]:
    """(starting line, cells) per non-blank record of a csv reader; a quoted cell may span
    lines, so the start is where the previous record ended, plus one."""
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problems.append(f"{source}:{line}: unreadable row: {exc}")
            return
        if any(cell.strip() for cell in record):
            yield line, record
        line = reader.line_num + 1


def _row(line: int, record: list[str], columns: Mapping[str, int], where: str,
         problems: list[str]) -> Row | None:
    cells = {name: record[i].strip() if i < len(record) else "" for name, i in columns.items()}
    bad = [f"{where}: {name}: longer than {MAX_CELL_CHARS} characters"
           for name, value in cells.items() if len(value) > MAX_CELL_CHARS]
    email, manager = cells["email"].lower(), cells.get("manager", "").lower()
    if not email:
        bad.append(f"{where}: email: empty; every row needs the person's address")
    elif clean_address(email) != email:
        bad.append(f"{where}: email: not an email address: {email!r}")
    if manager and clean_address(manager) != manager:
        bad.append(f"{where}: manager: not an email address: {manager!r}")
    problems.extend(bad)
    if bad:
        return None
    return Row(line, Person(email=email, name=cells.get("name", ""),
                            department=cells.get("department") or None,
                            manager=manager or None, role=cells.get("role", "")))


def check_against(rows: list[Row], source: str, departments: Collection[str],
                  others: Mapping[str, str | None],
                  dropped: Collection[str] = ()) -> list[str]:
    """Problems of the rows with the rest of the directory: departments that do not exist,
    managers who are not people, people also written by hand (others: email -> manager of
    the [[person]] tables in directory.toml), and manager cycles."""
    problems: list[str] = []
    managers = dict(others) | {r.person.email: r.person.manager for r in rows}
    line_of = {r.person.email: r.line for r in rows}
    for row in rows:
        person, where = row.person, f"{source}:{row.line}"
        if person.email in others:
            problems.append(f"{where}: email: {person.email} is also a [[person]] in "
                            "directory.toml; keep each person in one place")
        if person.department and person.department not in departments:
            problems.append(f"{where}: department: unknown department {person.department!r} "
                            f"(known: {', '.join(sorted(departments))})")
        if person.manager and person.manager not in managers \
                and person.manager not in dropped:
            problems.append(f"{where}: manager: {person.manager} is not a person")
    for cycle in manager_cycles(managers):
        if cycle[0] in line_of:
            problems.append(f"{source}:{line_of[cycle[0]]}: manager: manager chain is a "
                            f"cycle: {' -> '.join(cycle)}")
    return problems


# --- rendering ----------------------------------------------------------------------------

def people_toml(people: list[Person]) -> str:
    """The [[person]] tables; every value is a TOML basic string, escaped, so no cell can
    end its string and start keys or tables of its own."""
    blocks = [HEADER_COMMENT]
    for person in people:
        lines = ["[[person]]"]
        for key in COLUMNS:
            value = getattr(person, key)
            if value:
                lines.append(f"{key} = {toml_string(value)}")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def toml_string(value: str) -> str:
    """A TOML basic string: quotes, backslashes and every control character escaped."""
    out = []
    for char in value:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        elif 0xD800 <= ord(char) <= 0xDFFF:  # a lone surrogate cannot be written as UTF-8
            out.append("\uFFFD")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


# --- writing ------------------------------------------------------------------------------

def write_atomically(path: Path, text: str,
                     check: Callable[[Path], list[str]] | None = None) -> list[str]:
    """Write text to path via a temp file in the same folder and os.replace, so readers see
    the old file or the new one, never a part. check(temp) may veto with problems; then the
    old file stays and the problems are returned."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        problems = check(temp) if check else []
        if problems:
            return [line.replace(str(temp), f"{path} (as imported)") for line in problems]
        temp.chmod(0o644)  # mkstemp makes 0600; mailgate may run as another user
        os.replace(temp, path)
        _fsync_folder(path.parent)
        return []
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (a crash right after could otherwise undo it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the data itself is synced
    finally:
        os.close(fd)


# --- the command --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Imported:
    path: Path
    people: int


def import_people(csv_path: Path, output: Path | None, directory: Path | None,
                  progress: Callable[[str], None] | None = None) -> Imported:
    """Read csv_path, check it (against the directory when one is given) and write the
    people file: output, else the directory's people_file. ConfigError lists every problem;
    then nothing is written. progress, when given, hears each step ("checking 3124
    people (2/4)") for a terminal's progress line."""
    say = progress or (lambda text: None)
    target = output or (people_file_of(directory) if directory else None)
    if target is None:
        where = f"{directory}: people_file" if directory else "--output"
        raise ConfigError([f"{where}: no people file to write; set people_file = "
                           '"people.toml" in directory.toml or pass --output PATH'])
    say(f"reading {csv_path.name} (1/4)")
    dropped: set[str] = set()
    rows, problems = parse_people_csv(_read_csv(csv_path), str(csv_path), dropped)
    say(f"checking {len(rows)} people (2/4)")
    if directory is not None:  # the well-formed rows too, so one run shows every problem
        departments, others = _outline(directory)
        problems = _by_line(problems + check_against(rows, str(csv_path), departments,
                                                     others, dropped))
    if problems:
        raise ConfigError(problems)
    check = _trial_load(directory) if directory and _same(target, people_file_of(directory)) \
        else None
    say(f"writing {target.name} and loading the directory with it (3/4)" if check
        else f"writing {target.name} (3/4)")
    problems = write_atomically(target, people_toml([r.person for r in rows]), check)
    if problems:
        raise ConfigError(problems)
    say(f"done: {len(rows)} people (4/4)")
    return Imported(target, len(rows))


def _by_line(problems: list[str]) -> list[str]:
    """"FILE:LINE: ..." lines in line order (stable for lines without a number)."""
    def line(text: str) -> int:
        number = text.split(":", 2)[1] if text.count(":") >= 2 else ""
        return int(number) if number.isdigit() else 0
    return sorted(problems, key=line)


def _read_csv(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        return data.decode("utf-8-sig")  # spreadsheets like to start with a BOM
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start}); export the CSV as "
                           "UTF-8"]) from None


def _outline(directory: Path) -> tuple[set[str], dict[str, str | None]]:
    """Department keys and hand-written people (email -> manager) of directory.toml, read
    leniently: its full validation is the trial load."""
    data = read_toml(directory)
    departments = {d["key"] for d in data.get("department", []) if isinstance(d, dict)
                   and isinstance(d.get("key"), str)}
    people = {str(p["email"]).lower(): _lower_or_none(p.get("manager"))
              for p in data.get("person", []) if isinstance(p, dict) and "email" in p}
    return departments, people


def _lower_or_none(value: object) -> str | None:
    return value.lower() if isinstance(value, str) and value else None


def _trial_load(directory: Path) -> Callable[[Path], list[str]]:
    """A check that loads the whole directory with the candidate file as its people: a
    lead or head missing from the new export would otherwise break the next start."""
    def check(candidate: Path) -> list[str]:
        try:
            load_directory(directory, people_file=candidate)
        except ConfigError as exc:
            return exc.problems
        return []

    return check


def _same(a: Path, b: Path | None) -> bool:
    return b is not None and a.resolve() == b.resolve()
