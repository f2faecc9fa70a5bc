"""The routing rules' regex searches on a message's fields, bounded in size and time.
Pure: text in, found or not out.

A module of its own, without the directory or logging, because the reading process
(intake/read.py) does these searches ahead of the event loop and imports only what
reading mail needs. routing.py decides with their results.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import regex

from mailgate.core.model import Inbound

# Mail is hostile: a rule like a.*b.*c backtracks for seconds on crafted text. Every search
# looks at a bounded prefix and is stopped after SEARCH_TIMEOUT; a stopped search counts as
# no match (logged by routing.py), so one slow rule costs at most that much per message.
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
# search ran out of time. A search not in it is done on the event loop (routing.py).
Searched = Mapping[Search, bool | None]


def search_ahead(msg: Inbound, searches: tuple[Search, ...]) -> dict[Search, bool | None]:
    """Do SEARCHES on MSG (in a reading process, where no other thread wants the GIL)."""
    done: dict[Search, bool | None] = {}
    for search in searches:
        text = field_text(msg, search.field)
        if text is not None:
            done[search] = found_in_time(_compiled(search.pattern, search.flags), text)
    return done


@lru_cache(maxsize=1024)
def _compiled(pattern: str, flags: int) -> regex.Pattern[str]:
    """A rule's pattern, compiled once per process: a look-up in regex's own cache (5 us)
    costs more than the search itself, for every search of every mail."""
    return regex.compile(pattern, flags)


def field_text(msg: Inbound, field: str) -> str | None:
    """The bounded text of MSG a search on FIELD reads; None for a header it lacks."""
    if field == "subject":
        return msg.subject[:MAX_SUBJECT_CHARS]
    if field == "body":
        return msg.body[:MAX_BODY_CHARS]
    value = msg.headers.get(field.removeprefix("header:"))
    return None if value is None else value[:MAX_HEADER_CHARS]


def found_in_time(pattern: regex.Pattern[str], text: str) -> bool | None:
    """Whether PATTERN is found in TEXT; None when the search ran out of time.

    The timeout makes regex give up the GIL and wait to get it back: on the event loop's
    thread, with the IMAP and SMTP threads busy, about 0.25 ms per search where the search
    itself takes 20 us. So mail fetched over IMAP is searched ahead in its reading process
    (search_ahead), and only pushed mail is searched on the loop. concurrent=False: regex
    would otherwise release the GIL for every search of a str as well."""
    try:
        return pattern.search(text, timeout=SEARCH_TIMEOUT, concurrent=False) is not None
    except TimeoutError:
        return None
