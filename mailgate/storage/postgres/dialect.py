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
  `RETURNING id`, so the cursor can answer `lastrowid` as SQLite's does.

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
    for index, (kind, text) in enumerate(tokens):
        if kind == "other" and text in "()":
            depth += 1 if text == "(" else -1
            out.append(text)
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
    return Translated(text, tuple(order) if numbered else None, returns_id)


def translate_many(sql: str, rows: Iterable[Sequence | Mapping]) -> tuple[str, list]:
    """executemany's statement and its rows, arguments reordered where needed."""
    done = translate(sql)
    text = done.sql.removesuffix(" RETURNING id") if done.returns_id else done.sql
    return text, [done.arguments(row) for row in rows]


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
