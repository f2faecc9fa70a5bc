"""The read step of a mail's processing: what a decision needs, in as few queries as can be.

`usage` answers "is this mail stored, for whom, and how much automatic mail went to its
sender this hour" in one query; `threaded` finds the tickets a mail continues, by subject
tag, by Message-ID and (for automatic mail) by the Message-IDs quoted inside, with their
state, in another. Portable SQL: UNION ALL of typed columns, no SQLite-only functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from mailgate.core.model import OutgoingKind
from mailgate.core.sla import Clock, Target
from mailgate.storage.store import Tx, from_ts, maybe_ts, ts
from mailgate.storage.ticketops import STATE_COLUMNS, state_from_row
from mailgate.tickets.effects import Drawn, TicketFacts, Usage
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

    On a shared engine the key is locked first, until the transaction ends: the same
    message processed by another node now is waited for, then seen."""
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
    # `message_id != ''` repeats the partial index's condition: without it SQLite cannot
    # use messages_message_id and scans every message (seconds per reply at a million).
    return f"""SELECT {via} AS via, e.ticket AS found FROM messages m
                   JOIN events e ON e.message = m.id
                   WHERE m.message_id IN ({marks}) AND m.message_id != ''
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
    # On a shared engine the tickets are locked until the transaction ends, in id order:
    # a decision reads them as another node's mail left them, not as they were before it
    # (READ COMMITTED: a mail resolving the ticket on one node, the requester's reply on
    # the other would otherwise leave it resolved, her reply reopening nothing).
    lock = " FOR UPDATE OF tickets" if tx.engine is not None and tx.engine.shared else ""
    rows = await tx.fetch_all(
        f"""SELECT f.via, {STATE_COLUMNS} FROM ({' UNION '.join(sources)}) f
            JOIN tickets ON tickets.id = f.found ORDER BY f.via, tickets.id{lock}""", args)
    if not rows:
        return ()
    first = rows[0][0]
    return tuple(state_from_row(row[1:]) for row in rows if row[0] == first)


_TICKET_FACTS = """SELECT t.paused_at, t.first_response_at,
    (SELECT m.message_id FROM events e JOIN messages m ON m.id = e.message
     WHERE e.ticket = t.id AND m.message_id != '' ORDER BY e.id LIMIT 1),
    (SELECT m.message_id FROM events e JOIN messages m ON m.id = e.message
     WHERE e.ticket = t.id AND m.sender = t.requester AND m.message_id != ''
     ORDER BY e.id DESC LIMIT 1),
    (SELECT COUNT(*) FROM events e JOIN outbox o ON o.id = e.outgoing
     WHERE e.ticket = t.id AND e.kind = 'relayed' AND e.actor = ? AND e.at >= ?
     AND o.kind = ?)"""
_TEXTS = """,
    (SELECT coalesce(m.text, m.body) FROM events e JOIN messages m ON m.id = e.message
     WHERE e.ticket = t.id ORDER BY e.id LIMIT 1),
    (SELECT coalesce(m.text, m.body) FROM events e JOIN messages m ON m.id = e.message
     WHERE e.ticket = t.id AND e.kind = 'reply' AND e.visibility = 'public'
     AND json_extract(e.detail, '$.role') = 'agent' AND coalesce(m.text, m.body) != ''
     ORDER BY e.id DESC LIMIT 1)"""
_CLOCKS = """SELECT target, started_at, seconds, paused_seconds, fired FROM sla_clocks
             WHERE ticket = ? AND met_at IS NULL"""


async def ticket_facts(tx: Tx, ticket: TicketState, sender: str, now: datetime,
                       texts: bool = False) -> TicketFacts:
    """A ticket as a reply to it needs it (effects.TicketFacts), in two queries: its
    thread, the sender's relays this hour (and with `texts`, the request's and the last
    answer's text), then its running clocks."""
    sql = f"{_TICKET_FACTS}{_TEXTS if texts else ''} FROM tickets t WHERE t.id = ?"
    facts = await tx.fetch_later(sql, (sender, ts(now - HOUR), OutgoingKind.RELAY_TEAM.value,
                                       ticket.id))
    running = await tx.fetch_later(_CLOCKS, (ticket.id,))  # both in one round trip
    row = next(iter(await facts()), None)
    assert row is not None, f"ticket {ticket.ref} vanished inside its transaction"
    clocks = await running()
    running = {Target(r[0]): Clock(Target(r[0]), from_ts(r[1]), r[2], r[3], r[4])
               for r in clocks}
    return TicketFacts(ticket, running, maybe_ts(row[0]), maybe_ts(row[1]), row[2], row[3],
                       int(row[4]), *((row[5] or "", row[6] or "") if texts else ()))


async def drawn(tx: Tx, keys: Sequence[tuple[str, str | None]], now: datetime) -> Drawn:
    """Automatic mail queued in the last hour to these (mailbox, domain) budgets."""
    parts, args, since = [], [], ts(now - HOUR)
    for mailbox, domain in dict.fromkeys(keys):
        parts.append("SELECT 'mailbox' AS what, CAST(? AS TEXT) AS name, COUNT(*) AS n "
                     "FROM outbox WHERE budget = ? AND created_at >= ?")
        args += [mailbox, mailbox, since]
        if domain is not None:
            parts.append("SELECT 'domain', CAST(? AS TEXT), COUNT(*) FROM outbox "
                         "WHERE budget_domain = ? AND created_at >= ?")
            args += [domain, domain, since]
    if not parts:
        return Drawn()
    rows = await tx.fetch_all(" UNION ALL ".join(parts), args)
    found: dict[str, dict[str, int]] = {"mailbox": {}, "domain": {}}
    for what, name, n in rows:
        found[what][name] = int(n)
    return Drawn(found["mailbox"], found["domain"])
