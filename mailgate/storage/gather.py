"""The read step of a mail's processing: what a decision needs, in as few queries as can be.

`usage` answers "is this mail stored, for whom, and how much automatic mail went to its
sender this hour" in one query; `threaded` finds the tickets a mail continues, by subject
tag, by Message-ID and (for automatic mail) by the Message-IDs quoted inside, with their
state, in another. Portable SQL: UNION ALL of typed columns, no SQLite-only functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from mailgate.storage.store import Tx, ts
from mailgate.storage.ticketops import STATE_COLUMNS, state_from_row
from mailgate.tickets.effects import Usage
from mailgate.tickets.state import TicketState

HOUR = timedelta(hours=1)
MAX_IDS = 60  # Message-IDs looked up per mail: References can be long, and is sender-made


async def stored(tx: Tx, dedupe_key: str, budget: tuple[str, str | None] | None = None,
                 flood: Sequence[tuple[str, str]] = (),
                 now: datetime | None = None) -> tuple[int | None, str | None,
                                                        frozenset[str], Usage]:
    """The messages row and fingerprint stored under this key, the departments that
    received it, and (with `budget`: the sender's mailbox and limited domain, and `flood`:
    (department, budget name) pairs) the automatic mail drawn on them in the last hour.

    On a shared engine the key is locked first, until the transaction ends (as Tx.seen
    does): the same message processed by another node now is waited for, then seen."""
    if tx.engine is not None and tx.engine.shared:
        await tx.engine.lock_key(tx.conn, dedupe_key)
    parts = ["SELECT 'message' AS what, id AS n, fingerprint AS name FROM messages "
             "WHERE dedupe_key = ?",
             "SELECT 'receipt', NULL, department FROM receipts WHERE dedupe_key = ?"]
    args: list = [dedupe_key, dedupe_key]
    if budget is not None or flood:
        assert now is not None
        since = ts(now - HOUR)
        mailbox, domain = budget if budget is not None else (None, None)
        if mailbox is not None:
            parts.append("SELECT 'mailbox', COUNT(*), NULL FROM outbox "
                         "WHERE budget = ? AND created_at >= ?")
            args += [mailbox, since]
        if domain is not None:
            parts.append("SELECT 'domain', COUNT(*), NULL FROM outbox "
                         "WHERE budget_domain = ? AND created_at >= ?")
            args += [domain, since]
        for department, name in flood:
            parts.append("SELECT 'notified', COUNT(DISTINCT ticket), CAST(? AS TEXT) "
                         "FROM outbox WHERE budget = ? AND created_at >= ?")
            args += [department, name, since]
    rows = await tx.fetch_all(" UNION ALL ".join(parts), args)
    message = fingerprint = None
    received, counts, notified = set(), {"mailbox": 0, "domain": 0}, {}
    for what, n, name in rows:
        if what == "message":
            message, fingerprint = n, name
        elif what == "receipt":
            received.add(name)
        elif what == "notified":
            notified[name] = int(n)
        else:
            counts[what] = int(n)
    return (message, fingerprint, frozenset(received),
            Usage(counts["mailbox"], counts["domain"], notified))


def _by_message_ids(via: int, count: int) -> str:
    """Tickets whose conversation holds one of `count` Message-IDs, ours or theirs."""
    marks = ",".join("?" * count)
    return f"""SELECT {via} AS via, e.ticket AS found FROM messages m
                   JOIN events e ON e.message = m.id WHERE m.message_id IN ({marks})
               UNION SELECT {via}, e.ticket FROM outbox o
                   JOIN events e ON e.outgoing = o.id WHERE o.message_id IN ({marks})
               UNION SELECT {via}, o.ticket FROM outbox o  -- escalation mail has no event
                   WHERE o.message_id IN ({marks}) AND o.draft IS NOT NULL"""


async def threaded(tx: Tx, refs: Sequence[str], message_ids: Sequence[str],
                   embedded_ids: Sequence[str] = ()) -> tuple[TicketState, ...]:
    """The tickets a mail continues, oldest first: those its subject tags name; else those
    its In-Reply-To/References name; else those the Message-IDs inside it name (pass
    `embedded_ids` only for automatic mail: forwarded mail carries such parts too)."""
    message_ids, embedded_ids = list(message_ids)[:MAX_IDS], list(embedded_ids)[:MAX_IDS]
    sources, args = [], []
    if refs:
        sources.append(f"SELECT 1 AS via, id AS found FROM tickets "
                       f"WHERE ref IN ({','.join('?' * len(refs))})")
        args += list(refs)
    for via, ids in ((2, message_ids), (3, embedded_ids)):
        if ids:
            sources.append(_by_message_ids(via, len(ids)))
            args += ids * 3
    if not sources:
        return ()
    rows = await tx.fetch_all(
        f"""SELECT f.via, {STATE_COLUMNS} FROM ({' UNION '.join(sources)}) f
            JOIN tickets ON tickets.id = f.found ORDER BY f.via, tickets.id""", args)
    if not rows:
        return ()
    first = rows[0][0]
    return tuple(state_from_row(row[1:]) for row in rows if row[0] == first)
