"""Database errors by what they mean to the caller, whichever engine raised them.

Code outside mailgate/storage/ catches these tuples, never an engine's exception classes:
`except TEMPORARY as exc:` for a failure that retrying later can cure, `except
STORE_ERRORS:` for any database error at all (a best-effort read such as a status line).

Each engine adds its own classes here: the PostgreSQL engine adds psycopg's (its
OperationalError -- connection lost, locked, disk full -- to TEMPORARY, and its Error to
STORE_ERRORS).
"""

from __future__ import annotations

import sqlite3

# Locked, busy, disk full, an I/O error, the connection lost: the same work may succeed
# later, so the caller retries it (a batch, a worker's round) instead of quarantining mail.
TEMPORARY: tuple[type[BaseException], ...] = (sqlite3.OperationalError,)

# Any error the database raised: TEMPORARY ones, and constraint, schema and data errors.
STORE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error,)
