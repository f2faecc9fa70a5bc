"""Database errors by what they mean to the caller, whichever engine raised them.

Code outside mailgate/storage/ catches these tuples, never an engine's exception classes:
`except TEMPORARY as exc:` for a failure that retrying later can cure, `except
STORE_ERRORS:` for any database error at all (a best-effort read such as a status line).

Each engine adds its own classes here. PostgreSQL's (psycopg, when the `postgresql` extra
is installed): OperationalError covers a lost connection, an administrator's shutdown
(AdminShutdown is one) and a database that cannot be reached; a serialization failure or a
deadlock one of two nodes is chosen to lose; a standby that is read-only after a failover
-- all cured by trying again, on a fresh connection (the engine reconnects before the next
transaction).
"""

from __future__ import annotations

import sqlite3

# Locked, busy, disk full, an I/O error, the connection lost: the same work may succeed
# later, so the caller retries it (a batch, a worker's round) instead of quarantining mail.
TEMPORARY: tuple[type[BaseException], ...] = (sqlite3.OperationalError,)

# Any error the database raised: TEMPORARY ones, and constraint, schema and data errors.
STORE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error,)

try:
    import psycopg
except ImportError:  # SQLite only: the postgresql extra is not installed
    pass
else:
    TEMPORARY += (psycopg.OperationalError, psycopg.errors.SerializationFailure,
                  psycopg.errors.DeadlockDetected, psycopg.errors.ReadOnlySqlTransaction,
                  psycopg.errors.LockNotAvailable)
    STORE_ERRORS += (psycopg.Error,)
