"""SQL written for SQLite, as PostgreSQL (psycopg) reads it: the one place that knows the
difference.

mailgate's statements are written once, with SQLite's `?` placeholders (also `?NNN` and
`:name`). This module walks a statement token by token -- string literals, quoted names and
comments are copied untouched, so a `?` or `:x` inside '...' stays text -- and rewrites:

- placeholders to psycopg's (`%s`, `%(name)s`); a numbered `?1` used twice becomes two
  `%s` with its argument repeated (see Translated.arguments);
- every other `%` to `%%` (psycopg reads `%` as the start of a placeholder everywhere);
- `INSERT OR IGNORE INTO ...` to `INSERT INTO ... ON CONFLICT DO NOTHING`;
- SQLite's function names that PostgreSQL spells differently (group_concat, char);
- LIKE to ILIKE (SQLite's LIKE ignores ASCII case, PostgreSQL's does not);
- an INSERT into a table with an `id` identity column and no RETURNING gets
  `RETURNING id`, so the cursor can answer `lastrowid` as SQLite's does;
- executemany of a plain `INSERT ... VALUES (...)` becomes one INSERT with a list of
  values per row (one_insert): one statement for the server and for psycopg, not one
  per row.

Anything else that differs (json_extract) is a function the PostgreSQL schema defines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

# Tables whose primary key is `id` (GENERATED ... AS IDENTITY on PostgreSQL).
ID_TABLES = frozenset({"tickets", "messages", "outbox", "events", "quarantine", "attachments"})

_TOKEN = re.compile(r"""
    (?P<string>'(?:[^']|'')*')
  | (?P<quoted>"(?:[^"]|"")*")
  | (?P<line_comment>--[^\n]*)
  | (?P<block_comment>/\*.*?\*/)
  | (?P<numbered>\?\d+)
  | (?P<positional>\?)
  | (?P<cast>::)
  | (?P<named>:[A-Za-z_]\w*)
  | (?P<percent>%)
  | (?P<word>[A-Za-z_]\w*)
  | (?P<space>\s+)
  | (?P<other>.)
""", re.VERBOSE | re.DOTALL)

_RENAMED_FUNCTIONS = {"group_concat": "string_agg", "char": "chr",
                      "json_object": "json_build_object"}
# Functions whose PostgreSQL result is json: cast to text, as SQLite's JSON is text.
_AS_TEXT = frozenset({"json_object"})


@dataclass(frozen=True, slots=True)
class Translated:
    sql: str
    # Positional statements: for each %s, the index of the caller's argument it takes
    # (None: the arguments go through as they are). Named statements take a mapping.
    order: tuple[int, ...] | None
    returns_id: bool  # RETURNING id was added for lastrowid
    # Where in `sql` the one list of values of an INSERT that one_insert may repeat lies
    # (start, end); None for any other statement.
    values: tuple[int, int] | None = None

    def arguments(self, args: Sequence | Mapping) -> Sequence | Mapping:
        if isinstance(args, Mapping):
            return {key: _storable(value) for key, value in args.items()}
        values = tuple(args) if self.order is None else tuple(args[i] for i in self.order)
        return tuple(_storable(value) for value in values)


def _storable(value: object) -> object:
    """PostgreSQL's TEXT cannot hold NUL, which SQLite stores: such a character from mail
    becomes U+FFFD instead of failing the statement (bad input is data, not a crash)."""
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


class TranslationError(ValueError):
    """A statement this translator cannot carry over faithfully."""


@lru_cache(maxsize=2048)
def translate(sql: str) -> Translated:
    tokens = [(m.lastgroup or "other", m.group()) for m in _TOKEN.finditer(sql)]
    out: list[str] = []
    order: list[int] = []
    numbered = named = positional = False
    depth = 0
    close_as_text: list[int] = []  # depths at which a json result's call closes
    values = _ValuesList()
    for index, (kind, text) in enumerate(tokens):
        values.see(kind, text, depth, len(out))
        if kind == "other" and text in "()":
            depth += 1 if text == "(" else -1
            out.append(text)
            if text == ")" and depth == 0:
                values.closed(len(out))
            if text == ")" and close_as_text and close_as_text[-1] == depth:
                close_as_text.pop()
                out.append("::text")
        elif kind == "word" and text.lower() in _AS_TEXT and _next_is_paren(tokens, index):
            close_as_text.append(depth)
            out.append(_word(text, tokens, index))
        elif kind == "positional":
            positional = True
            order.append(len(order))
            out.append("%s")
        elif kind == "numbered":
            numbered = True
            order.append(int(text[1:]) - 1)
            out.append("%s")
        elif kind == "named":
            named = True
            out.append(f"%({text[1:]})s")
        elif kind == "percent":
            out.append("%%")
        elif kind in ("string", "quoted", "block_comment", "line_comment"):
            out.append(text.replace("%", "%%"))
        elif kind == "word":
            out.append(_word(text, tokens, index))
        else:
            out.append(text)
    if (positional and numbered) or (named and (positional or numbered)):
        raise TranslationError(f"mixed placeholder styles in: {sql[:200]}")
    words = [text.upper() for kind, text in tokens if kind == "word"]
    text = "".join(out)
    if words[:3] == ["INSERT", "OR", "IGNORE"]:
        text = _drop_or_ignore(text) + " ON CONFLICT DO NOTHING"
    returns_id = _needs_returning_id(words)
    if returns_id:
        text = text.rstrip().rstrip(";") + " RETURNING id"
    span = None
    if not named and values.repeatable(tokens, words, len(order)):
        assert values.start is not None and values.end is not None
        joined = "".join(out)
        start = len("".join(out[:values.start]))
        if words[:3] == ["INSERT", "OR", "IGNORE"]:  # shortened before the list
            start -= len(joined) - len(_drop_or_ignore(joined))
        span = (start, start + len("".join(out[values.start:values.end])))
    return Translated(text, tuple(order) if numbered else None, returns_id, span)


class _ValuesList:
    """Finds the list of values of an INSERT, for one_insert: the parenthesis after a
    top-level VALUES, which must be the only list, hold every placeholder, and be
    followed by no other; the table must not be read in the statement (a row inserted
    by the same statement would be invisible to it, not to the next row's)."""

    def __init__(self) -> None:
        self.after_values = False
        self.start: int | None = None  # index in the output of its "("
        self.end: int | None = None  # index just after its ")"
        self.placeholders = 0  # inside it
        self.lists = 0

    def see(self, kind: str, text: str, depth: int, at: int) -> None:
        if kind == "word" and depth == 0:
            self.after_values = text.upper() == "VALUES"
        elif kind == "other" and text == "(" and depth == 0 and self.after_values:
            self.lists += 1
            self.start, self.after_values = at, False
        elif kind == "other" and text == "," and depth == 0 and self.end is not None:
            self.lists += 1  # "VALUES (...), (...)": already several
        elif kind in ("positional", "numbered") and self.start is not None and self.end is None:
            self.placeholders += 1

    def closed(self, at: int) -> None:
        if self.start is not None and self.end is None:
            self.end = at

    def repeatable(self, tokens: list[tuple[str, str]], words: list[str],
                   placeholders: int) -> bool:
        if words[:2] == ["INSERT", "OR"]:
            words = ["INSERT", *words[3:]]
        if (words[:2] != ["INSERT", "INTO"] or self.lists != 1 or self.end is None
                or self.placeholders != placeholders or "UPDATE" in words
                or "RETURNING" in words):
            return False
        names = [text.strip('"').lower() for kind, text in tokens if kind in ("word", "quoted")]
        table = names[names.index("into") + 1]
        return names.count(table) == 1


def translate_many(sql: str, rows: Iterable[Sequence | Mapping]) -> tuple[str, list]:
    """executemany's statement and its rows, arguments reordered where needed."""
    done = translate(sql)
    text = done.sql.removesuffix(" RETURNING id") if done.returns_id else done.sql
    return text, [done.arguments(row) for row in rows]


MAX_ROWS_PER_INSERT = 100  # beyond, rows go one statement each (large copies: memory)


def one_insert(sql: str, rows: Sequence[Sequence | Mapping]) -> tuple[str, tuple] | None:
    """executemany's rows of a plain `INSERT ... VALUES (...)` as one statement with a
    list of values per row, and its arguments; None for any other statement, for named
    placeholders, or for one row or more than MAX_ROWS_PER_INSERT."""
    done = translate(sql)
    if (done.values is None or not 1 < len(rows) <= MAX_ROWS_PER_INSERT
            or isinstance(rows[0], Mapping)):
        return None
    start, end = done.values
    text = done.sql.removesuffix(" RETURNING id") if done.returns_id else done.sql
    text = text[:start] + ", ".join([text[start:end]] * len(rows)) + text[end:]
    return text, tuple(value for row in rows for value in done.arguments(row))


def _word(text: str, tokens: list[tuple[str, str]], index: int) -> str:
    lowered = text.lower()
    if lowered == "like":
        return "ILIKE"
    if lowered in _RENAMED_FUNCTIONS and _next_is_paren(tokens, index):
        return _RENAMED_FUNCTIONS[lowered]
    return text


def _next_is_paren(tokens: list[tuple[str, str]], index: int) -> bool:
    for kind, text in tokens[index + 1:]:
        if kind != "space":
            return text == "("
    return False


def _drop_or_ignore(text: str) -> str:
    """INSERT OR IGNORE INTO -> INSERT INTO (the statement starts with those words)."""
    match = re.match(r"\s*INSERT\s+OR\s+IGNORE\s+", text, re.IGNORECASE)
    assert match is not None  # the caller saw these three words first
    return "INSERT " + text[match.end():]


def _needs_returning_id(words: list[str]) -> bool:
    return (words[:2] == ["INSERT", "INTO"] and len(words) > 2
            and words[2].lower() in ID_TABLES and "RETURNING" not in words)
