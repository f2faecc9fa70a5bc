"""Database errors by what they mean to the caller, whichever engine raised them.

Code outside mailgate/storage/ catches these tuples, never an engine's exception classes:
`except errors.TEMPORARY as exc:` for a failure that retrying later can cure, `except
errors.STORE_ERRORS:` for any database error at all (a best-effort read such as a status
line).

They start with SQLite's, and an engine whose driver is imported only when it is used adds
its own with register() when its module is imported (PostgreSQL: psycopg, which a daemon on
SQLite never imports). So always name them through this module, `from mailgate.storage
import errors as store_errors` and `except store_errors.TEMPORARY:`: the except clause
reads the tuple when an exception arrives, after the engine registered its classes, where
`from mailgate.storage.errors import TEMPORARY` would keep the tuple as it was when that
module was imported (tests/test_style.py refuses it).
"""

from __future__ import annotations

import sqlite3

# Locked, busy, disk full, an I/O error, the connection lost: the same work may succeed
# later, so the caller retries it (a batch, a worker's round) instead of quarantining mail.
TEMPORARY: tuple[type[BaseException], ...] = (sqlite3.OperationalError,)

# Any error the database raised: TEMPORARY ones, and constraint, schema and data errors.
STORE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error,)


def register(temporary: tuple[type[BaseException], ...],
             any_error: tuple[type[BaseException], ...]) -> None:
    """An engine's classes: `temporary` join TEMPORARY, `any_error` (the driver's base
    classes) STORE_ERRORS. Registering a class twice adds it once."""
    global TEMPORARY, STORE_ERRORS
    TEMPORARY += tuple(c for c in dict.fromkeys(temporary) if c not in TEMPORARY)
    STORE_ERRORS += tuple(c for c in dict.fromkeys(any_error) if c not in STORE_ERRORS)
