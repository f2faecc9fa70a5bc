"""The read step of a mail's processing: what a decision needs, in as few queries as can be.

`stored` answers "is this mail stored, for whom, how much automatic mail went to its
sender this hour, and have others seen its reply keys" in one query; `threaded` finds the
tickets a mail continues, by subject tag, by Message-ID and (for automatic mail) by the
Message-IDs quoted inside, with their state, in another. Portable SQL: UNION ALL of typed
columns, no SQLite-only functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailgate.core.model import OutgoingKind
from mailgate.core.sla import Clock, Target
from mailgate.storage.store import Tx, from_ts, maybe_ts, ts
from mailgate.storage.ticketops import STATE_COLUMNS, state_from_row
from mailgate.tickets.effects import Drawn, TicketFacts, Usage
from mailgate.tickets.state import TicketState

HOUR = timedelta(hours=1)
MAX_IDS = 60  # Message-IDs looked up per mail: References can be long, and is sender-made


# The messages row, its fingerprint, the departments that received it, the automatic mail
# drawn, and which of the reply keys asked about have been exposed.
Stored = tuple[int | None, str | None, frozenset[str], Usage, frozenset[str]]


@dataclass(frozen=True, slots=True)
class Asks:
    """What stored() is asked about one mail: its key, and with `budget` (the sender's
    mailbox and limited domain) and `flood` ((department, team budget) pairs) the
    automatic mail drawn on them in the last hour, with `tokens` which of its reply keys
    (replykey.Key.identity) are in exposed_keys."""

    dedupe_key: str
    budget: tuple[str, str | None] | None = None
    flood: tuple[tuple[str, str], ...] = ()
    tokens: tuple[str, ...] = ()


async def stored(tx: Tx, dedupe_key: str, budget: tuple[str, str | None] | None = None,
                 flood: Sequence[tuple[str, str]] = (),
                 now: datetime | None = None, tokens: Sequence[str] = ()) -> Stored:
    """The messages row and fingerprint stored under this key, the departments that
    received it, (with `budget`: the sender's mailbox and limited domain, and `flood`:
    (department, budget name) pairs) the automatic mail drawn on them in the last hour,
    and which of `tokens` (reply keys) have been exposed.

    On a shared engine the key is locked first, until the transaction ends: the same
    message processed by another node now is waited for, then seen. Answered without a
    query when read ahead for the mail's group (read_ahead), and still so."""
    if tx.ahead is not None:
        known = tx.ahead.answer(tx, Asks(dedupe_key, budget, tuple(flood), tuple(tokens)))
        if known is not None:
            return known
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
    if tokens:
        parts.append(f"SELECT 'exposed', NULL, token FROM exposed_keys "
                     f"WHERE token IN ({_marks(tokens)})")
        args += list(tokens)
    rows = await tx.fetch_all(" UNION ALL ".join(parts), args)
    message = fingerprint = None
    received, counts, notified, exposed = set(), {"mailbox": 0, "domain": 0}, {}, set()
    for what, n, name in rows:
        if what == "message":
            message, fingerprint = n, name
        elif what == "receipt":
            received.add(name)
        elif what == "notified":
            notified[name] = int(n)
        elif what == "exposed":
            exposed.add(name)
        else:
            counts[what] = int(n)
    return (message, fingerprint, frozenset(received),
            Usage(counts["mailbox"], counts["domain"], notified), frozenset(exposed))


@dataclass(frozen=True, slots=True)
class Ahead:
    """stored()'s answers for a group of mail, read before the group's first message in
    one query (read_ahead) instead of one per message.

    An answer holds while the transaction has not written what it counts (Tx records
    it): a key whose message or receipts were stored since, or a budget or domain that
    mail queued since draws on, is read again by stored() itself, as is anything not
    read ahead. Each key's answer is given once. The hour counted starts where the
    group's started, a few milliseconds before the message's own: at most a little more
    mail is counted against a budget, never less."""

    messages: dict[str, tuple[int, str]]  # dedupe key -> (messages row, fingerprint)
    received: dict[str, frozenset[str]]  # dedupe key -> departments that received it
    keys: frozenset[str]  # every key read (those absent above: never stored)
    mailboxes: dict[str, int]  # budget -> automatic mails queued this hour
    domains: dict[str, int]  # budget_domain -> the same
    notified: dict[str, int]  # team budget -> tickets notified about this hour
    tokens: frozenset[str]  # every reply key read
    exposed: frozenset[str]  # those of them in exposed_keys
    given: set[str]

    def answer(self, tx: Tx, asks: Asks) -> Stored | None:
        key = asks.dedupe_key
        if key not in self.keys or key in self.given or key in tx.written_keys:
            return None
        mailbox, domain = asks.budget if asks.budget is not None else (None, None)
        if (_stale(mailbox, self.mailboxes, tx.queued_budgets)
                or _stale(domain, self.domains, tx.queued_domains)
                or any(_stale(name, self.notified, tx.queued_budgets)
                       for _, name in asks.flood)
                or not self.tokens.issuperset(asks.tokens)
                or not tx.exposed_tokens.isdisjoint(asks.tokens)):
            return None
        self.given.add(key)
        message, fingerprint = self.messages.get(key, (None, None))
        usage = Usage(self.mailboxes[mailbox] if mailbox is not None else 0,
                      self.domains[domain] if domain is not None else 0,
                      {department: self.notified[name] for department, name in asks.flood})
        return (message, fingerprint, self.received.get(key, frozenset()), usage,
                self.exposed.intersection(asks.tokens))


def _stale(name: str | None, counted: dict[str, int], queued: set[str]) -> bool:
    """A budget's count read ahead cannot stand: not read, or drawn on since."""
    return name is not None and (name not in counted or name in queued)


READ_AHEAD_MAX = 200  # mails per query: a few hundred values per IN list at most


async def read_ahead(tx: Tx, asks: Sequence[Asks], now: datetime) -> None:
    """Read stored()'s answers for these mails at once (see Ahead), their keys locked
    first on a shared engine (in one order, so two nodes cannot deadlock over them)."""
    asks = list(asks)[:READ_AHEAD_MAX]
    keys = sorted({a.dedupe_key for a in asks})
    if not keys:
        return
    if tx.engine is not None and tx.engine.shared:
        await tx.engine.lock_keys(tx.conn, keys)
    mailboxes = sorted({a.budget[0] for a in asks if a.budget is not None})
    domains = sorted({a.budget[1] for a in asks if a.budget is not None and a.budget[1]})
    teams = sorted({name for a in asks for _, name in a.flood})
    tokens = sorted({token for a in asks for token in a.tokens})
    since = ts(now - HOUR)
    parts = [f"SELECT 'message' AS what, dedupe_key AS name, id AS n, fingerprint AS fp "
             f"FROM messages WHERE dedupe_key IN ({_marks(keys)})",
             f"SELECT 'receipt', dedupe_key, NULL, department FROM receipts "
             f"WHERE dedupe_key IN ({_marks(keys)})"]
    args: list = [*keys, *keys]
    for what, column, names, count in (("mailbox", "budget", mailboxes, "COUNT(*)"),
                                        ("domain", "budget_domain", domains, "COUNT(*)"),
                                        ("notified", "budget", teams,
                                         "COUNT(DISTINCT ticket)")):
        if names:
            parts.append(f"SELECT '{what}', {column}, {count}, NULL FROM outbox "
                         f"WHERE {column} IN ({_marks(names)}) AND created_at >= ? "
                         f"GROUP BY {column}")
            args += [*names, since]
    if tokens:
        parts.append(f"SELECT 'exposed', token, NULL, NULL FROM exposed_keys "
                     f"WHERE token IN ({_marks(tokens)})")
        args += tokens
    rows = await tx.fetch_all(" UNION ALL ".join(parts), args)
    found: dict[str, dict[str, int]] = {"mailbox": dict.fromkeys(mailboxes, 0),
                                        "domain": dict.fromkeys(domains, 0),
                                        "notified": dict.fromkeys(teams, 0)}
    messages: dict[str, tuple[int, str]] = {}
    received: dict[str, set[str]] = {}
    exposed: set[str] = set()
    for what, name, n, fp in rows:
        if what == "message":
            messages[name] = (n, fp)
        elif what == "receipt":
            received.setdefault(name, set()).add(fp)
        elif what == "exposed":
            exposed.add(name)
        else:
            found[what][name] = int(n)
    tx.ahead = Ahead(messages, {k: frozenset(v) for k, v in received.items()},
                     frozenset(keys), found["mailbox"], found["domain"], found["notified"],
                     frozenset(tokens), frozenset(exposed), set())


def _marks(values: Iterable[object]) -> str:
    return ", ".join("?" for _ in values)


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
