"""What a database server says about the connection mailgate has to it (for check --connect)."""

from __future__ import annotations

from mailgate.storage.store import Store


async def connection_tls(store: Store) -> tuple[bool, str] | None:
    """(TLS in use, protocol version) of this PostgreSQL session, or None where the server
    keeps no such record (pg_stat_ssl is PostgreSQL's view of its own sessions)."""
    row = await store.fetch_one("SELECT ssl, version FROM pg_stat_ssl "
                                "WHERE pid = pg_backend_pid()")
    return (bool(row[0]), str(row[1] or "")) if row else None
