"""The Store: mailgate's SQL statements over either engine (engine.py; sqlite/, postgres/).

One connection, one writer per process: transactions are serialised by an asyncio lock, and
each message inside a batch runs in its own SAVEPOINT so one bad message never rolls back
its neighbours. After COMMIT returns, the data is durable (SQLite synchronous=FULL, or
PostgreSQL's commit), which is what lets the SMTP listener answer 250 and the IMAP position
move forward. Statements are written once with SQLite's `?` placeholders; the PostgreSQL
engine translates them (postgres/dialect.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mailgate.core.model import Inbound, MailKind, Origin, Outgoing, Priority, Status, Ticket
from mailgate.storage.attachments import Attachments, AttachmentStore
from mailgate.storage.engine import Connection, Cursor, Engine, Pipelining, answered
from mailgate.storage.packing import pack
from mailgate.storage.sqlite.engine import SqliteEngine

if TYPE_CHECKING:
    from mailgate.storage.gather import Ahead

FIRST_TICKET_NUMBER = 1001
TICKET_COLUMNS = ("id, ref, department, subject, requester, requester_name, status, priority, "
                  "created_at, updated_at")
TICKET_FIELDS = len(TICKET_COLUMNS.split(","))  # how many of a row's first values they are


def ticket_columns(alias: str) -> str:
    """TICKET_COLUMNS for a query that names the tickets table `alias`."""
    return ", ".join(f"{alias}.{c.strip()}" for c in TICKET_COLUMNS.split(","))


def ts(moment: datetime) -> float:
    return moment.timestamp()


def from_ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def maybe_ts(value: float | None) -> datetime | None:
    """from_ts for a column that may be NULL."""
    return from_ts(value) if value is not None else None


def ticket_from_row(row: Sequence) -> Ticket:
    return Ticket(
        id=row[0], ref=row[1], department=row[2], subject=row[3], requester=row[4],
        requester_name=row[5], status=Status(row[6]), priority=Priority(row[7]),
        created_at=from_ts(row[8]), updated_at=from_ts(row[9]),
    )


Later = Callable[[], Awaitable[list]]  # a statement's rows, when awaited (Tx.fetch_later)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    message_id: str
    kind: str
    ticket: int | None
    mail_from: str
    recipients: tuple[str, ...]
    raw: bytes
    attempts: int
    created_at: float = 0.0  # when it was queued (Unix seconds): ack latency metric
    draft: str | None = None  # set: raw is written just before sending (Outbox.write_draft)
    copy_of: str | None = None  # another recipient's copy: the first copy's Message-ID


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    id: int
    at: datetime
    source: str
    reason: str
    sender: str
    subject: str
    status: str
    size: int


class Store:
    """The database, whichever engine holds it (engine.py): transactions, and the reads
    and writes outside message processing.

    Transactions are serialised inside one process by an asyncio lock (one writer
    connection). On PostgreSQL several processes write at once; there each transaction
    runs at READ COMMITTED and correctness under concurrency rests on the database's row
    locks, not on retrying serialization failures:
    - ticket numbers: the counters upsert locks its row until commit, so two nodes never
      draw the same number (INSERT ... ON CONFLICT DO UPDATE is atomic);
    - message keys: gather.stored() first takes a transaction-scoped advisory lock on the key,
      so a second node with the same message waits for the first to commit and then sees
      it stored (the duplicate path), instead of failing on the unique constraint;
    - outbox rows: claim_outgoing() takes due rows with FOR UPDATE SKIP LOCKED and holds
      each with a session lock until it is settled, so two daemons never send one row
      twice, and a daemon that dies lets go of its rows at once
      (PostgresEngine.claim_outgoing).
    READ COMMITTED was chosen over SERIALIZABLE because every contended write above is one
    statement on one row (or one key lock): nothing needs a whole-transaction retry, and a
    batch of mail is never re-run for a conflict a lock would have queued.
    """

    def __init__(self, engine: Engine, state_dir: Path | None = None) -> None:
        self.engine = engine
        self.state_dir = state_dir  # local files: the SMTP spool; attachments on SQLite
        self._write_lock = asyncio.Lock()

    @property
    def conn(self) -> Connection:
        return self.engine.conn

    @property
    def path(self) -> Path:
        """The SQLite file (only that engine has one)."""
        path = getattr(self.engine, "path", None)
        if path is None:
            raise AttributeError(f"a {self.engine.name} store has no database file")
        return path

    @classmethod
    async def open(cls, target: Path | str, migrate: bool = True, *,
                   password: str | None = None, state_dir: Path | None = None) -> Store:
        """`target`: an SQLite file (the embedded default) or a postgresql:// URL."""
        engine = await open_engine(target, password)
        if state_dir is None and isinstance(engine, SqliteEngine):
            state_dir = engine.path.parent
        store = cls(engine, state_dir)
        try:
            if migrate:
                await store.migrate()
        except BaseException:
            await engine.close()
            raise
        return store

    async def close(self) -> None:
        await self.engine.close()

    def describe(self) -> str:
        """The database for messages and logs: a path, or a URL without its password."""
        return self.engine.describe()

    def attachments(self) -> Attachments | None:
        """Where attachment files are kept: <state>/attachments, or the database."""
        return self.engine.attachments(self.state_dir)

    async def read_committed(self, sql: str, args: Iterable = ()) -> list:
        """Rows as committed, on a second connection. The sender reads through here: on
        the writer connection it would also see the rows of a transaction still open (an
        intake batch, a scheduler tick), and could send mail that a rollback then
        un-queues -- and whose id the next insert reuses."""
        return list(await (await self.reader()).execute_fetchall(sql, tuple(args)))

    async def reader(self) -> Connection:
        """The read-only second connection: also for the daemon's long reads (metrics,
        status), which on the writer connection would wait for intake and make it wait
        in turn."""
        return await self.engine.reader()

    async def fetch_one(self, sql: str, args: Iterable = ()) -> tuple | None:
        """One row, on the writer connection (it sees this process's open transaction)."""
        return next(iter(await self.fetch_all(sql, args)), None)

    async def fetch_all(self, sql: str, args: Iterable = ()) -> list:
        if not self._write_lock.locked():  # between transactions: a lost link is renewed
            await self.engine.ready()
        return list(await self.conn.execute_fetchall(sql, tuple(args)))

    async def schema_version(self) -> int:
        return await self.engine.schema_version()

    async def migrate(self) -> int:
        """Apply pending migrations, each atomically with its version bump."""
        return await self.engine.migrate()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._write_lock:
            await self.engine.ready()
            await self.conn.execute(self.engine.begin)
            try:
                yield Tx(self.conn, self.state_dir, self.engine)
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
            try:
                await self.conn.execute("COMMIT")
            except BaseException:
                # SQLite may keep the transaction open when COMMIT fails (a full disk,
                # SQLITE_BUSY): left so, every next BEGIN would fail, and a later COMMIT
                # would write this failed work after all.
                if self.conn.in_transaction:
                    await self.conn.execute("ROLLBACK")
                raise

    # --- reads (CLI, status, sender) ---------------------------------------------------

    async def ticket(self, ref: str) -> Ticket | None:
        async with self.conn.execute(
                f"SELECT {TICKET_COLUMNS} FROM tickets WHERE ref = ?", (ref.upper(),)) as cur:
            row = await cur.fetchone()
        return ticket_from_row(row) if row else None

    async def linked_refs(self, ticket_id: int) -> list[str]:
        sql = ("SELECT t.ref FROM ticket_links l JOIN tickets t ON t.id = l.other "
               "WHERE l.ticket = ? ORDER BY t.id")
        async with self.conn.execute(sql, (ticket_id,)) as cur:
            return [r[0] for r in await cur.fetchall()]

    async def copies_of(self, message_ids: Sequence[str]) -> dict[str, list[str]]:
        """The further recipients of each mail that went out as one copy per person."""
        found: dict[str, list[str]] = {}
        for start in range(0, len(message_ids), 500):
            chunk = message_ids[start:start + 500]
            async with self.conn.execute(
                f"SELECT copy_of, recipients FROM outbox WHERE copy_of IN "
                f"({','.join('?' * len(chunk))}) ORDER BY id", chunk) as cur:
                rows = await cur.fetchall()
            for first, recipients in rows:
                found.setdefault(first, []).extend(json.loads(recipients))
        return found

    async def mailbox_position(self, name: str) -> tuple[int | None, int] | None:
        async with self.conn.execute(
                "SELECT uidvalidity, last_uid FROM mailboxes WHERE name = ?", (name,)) as cur:
            row = await cur.fetchone()
        return (row[0], row[1]) if row else None

    async def due_outgoing(self, now: datetime, limit: int = 100) -> list[OutboxRow]:
        sql = f"""SELECT {_OUTBOX_ROW} FROM outbox
                  WHERE status = 'queued' AND next_attempt <= ?
                  ORDER BY next_attempt, id LIMIT ?"""
        return [_outbox_row(r) for r in await self.read_committed(sql, (ts(now), limit))]

    async def claim_outgoing(self, now: datetime, limit: int = 100,
                             keep: Iterable[int] = ()) -> list[OutboxRow]:
        """The due mail this process is to send now, oldest first. The one sender of a
        process calls it for each round: every row it claimed before is settled by then
        (sent, retried later, failed) or, in `keep`, sent and waiting for mark_sent.

        SQLite has one daemon per file: the due rows as committed (due_outgoing). On a
        shared engine several daemons drain one outbox, and each row goes to one of them
        (see PostgresEngine.claim_outgoing); rows kept are not handed out again."""
        if not self.engine.shared:
            return await self.due_outgoing(now, limit)
        rows = await self.engine.claim_outgoing(_OUTBOX_ROW, ts(now), limit, set(keep))
        return [_outbox_row(r) for r in rows]

    async def next_outgoing_at(self) -> datetime | None:
        [row] = await self.read_committed(
            "SELECT MIN(next_attempt) FROM outbox WHERE status = 'queued'")
        return from_ts(row[0]) if row[0] is not None else None

    async def outbox_summary(self) -> dict[str, int]:
        async with self.conn.execute(
                "SELECT status, COUNT(*) FROM outbox GROUP BY status") as cur:
            return {r[0]: r[1] for r in await cur.fetchall()}

    async def quarantined(self, status: str = "held", limit: int = 200) -> list[QuarantineEntry]:
        sql = """SELECT id, at, source, reason, sender, subject, status, length(raw)
                 FROM quarantine WHERE status = ? ORDER BY id LIMIT ?"""
        async with self.conn.execute(sql, (status, limit)) as cur:
            return [QuarantineEntry(r[0], from_ts(r[1]), *r[2:]) for r in await cur.fetchall()]

    async def mailbox_states(self) -> list[dict]:
        sql = """SELECT name, state, state_at, last_error, last_message_at, last_uid,
                        uidvalidity FROM mailboxes ORDER BY name"""
        async with self.conn.execute(sql) as cur:
            rows = await cur.fetchall()
        keys = ("name", "state", "state_at", "last_error", "last_message_at", "last_uid",
                "uidvalidity")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    async def oldest_queued_at(self) -> datetime | None:
        async with self.conn.execute(
                "SELECT MIN(created_at) FROM outbox WHERE status = 'queued'") as cur:
            row = await cur.fetchone()
        return from_ts(row[0]) if row and row[0] is not None else None

    async def quarantine_count(self) -> int:
        [row] = await self.read_committed(
            "SELECT COUNT(*) FROM quarantine WHERE status = 'held'")
        return int(row[0])

    async def queued_count(self) -> int:
        """Outbox depth; answered from the partial index, cheap enough to ask every few s."""
        [row] = await self.read_committed("SELECT COUNT(*) FROM outbox WHERE status = 'queued'")
        return int(row[0])

    # --- writes outside message processing ---------------------------------------------

    async def record_mailbox_state(self, name: str, state: str, error: str | None,
                                   now: datetime) -> None:
        """What `mailgate status` shows: connected/idle/polling/reconnecting and why."""
        async with self.transaction() as tx:
            await tx.execute(
                """INSERT INTO mailboxes (name, updated_at, state, state_at, last_error)
                   VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (name) DO UPDATE SET state = excluded.state,
                       state_at = excluded.state_at, last_error = excluded.last_error""",
                (name, ts(now), state, ts(now), error))

    def write_busy(self) -> bool:
        """True while a transaction holds (or waits for) the single writer slot."""
        return self._write_lock.locked()

    @asynccontextmanager
    async def between_transactions(self) -> AsyncIterator[None]:
        """Hold the writer slot without opening a transaction: inside, none is open.

        The daemon swaps its setup and stops intake tasks in here, so every transaction
        runs wholly with one setup and none is cut off halfway.
        """
        async with self._write_lock:
            yield

    async def mark_sent(self, outbox_ids: set[int], now: datetime) -> None:
        rows = [(ts(now), outbox_id) for outbox_id in sorted(outbox_ids)]
        if self.engine.shared:
            # On the connection that holds the claims, committed by itself: a node marks
            # each mail before its next send (outbound/outbox.py), and on the writer
            # connection every mark waited for the intake batch in progress. The ids the
            # lanes sent meanwhile in one statement: one round trip, one commit.
            ids = sorted(outbox_ids)
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                await self.engine.on_claims_connection(
                    _MARK_SENT_IN.format(", ".join("?" * len(chunk))), [(ts(now), *chunk)])
            return
        async with self.transaction():
            await self.conn.executemany(_MARK_SENT, rows)

    async def mark_retry(self, outbox_id: int, next_attempt: datetime, error: str,
                         count: bool = True) -> None:
        """Try again at next_attempt; `count`: this was a delivery attempt."""
        async with self.transaction() as tx:
            await tx.execute("UPDATE outbox SET attempts = attempts + ?, next_attempt = ?, "
                             "last_error = ? WHERE id = ?",
                             (int(count), ts(next_attempt), error[:500], outbox_id))

    async def mark_failed(self, row: OutboxRow, error: str, now: datetime) -> None:
        """A permanent failure: kept on the outbox row and recorded on the ticket."""
        async with self.transaction() as tx:
            await tx.execute("UPDATE outbox SET status = 'failed', attempts = attempts + 1, "
                             "last_error = ? WHERE id = ?", (error[:500], row.id))
            for ticket_id in await tx.tickets_of_outgoing(row.id, row.ticket):
                await tx.add_event(ticket_id, "delivery_failed", now, outgoing=row.id,
                                   detail={"error": error[:500], "to": list(row.recipients)})


_MARK_SENT_IN = ("UPDATE outbox SET status = 'sent', sent_at = ?, attempts = attempts + 1, "
                 "last_error = NULL WHERE id IN ({}) AND status = 'queued'")
_MARK_SENT = _MARK_SENT_IN.format("?")


class Tx:
    """Statements that must run inside Store.transaction()."""

    def __init__(self, conn: Connection, state_dir: Path | None = None,
                 engine: Engine | None = None) -> None:
        self.conn = conn
        self.state_dir = state_dir  # local files (SMTP spool; attachments on SQLite)
        self.engine = engine
        self._savepoints = 0  # how many are open: the next one's name
        # PostgreSQL: a message's statements whose results are not needed go out
        # without waiting (see savepoint).
        self._pipelining = conn if isinstance(conn, Pipelining) else None
        # What this transaction wrote that a read done ahead (gather.read_ahead) counts:
        # the keys of messages stored or received, the budgets (outbox.budget) and
        # domains (outbox.budget_domain) of mail queued, and the reply keys burnt. Never
        # emptied: a write undone with its savepoint still makes the answer read ahead
        # stale, to be safe.
        self.written_keys: set[str] = set()
        self.queued_budgets: set[str] = set()
        self.queued_domains: set[str] = set()
        self.exposed_tokens: set[str] = set()  # reply keys burnt (exposed_keys rows)
        self.ahead: Ahead | None = None  # a group's facts, when read ahead

    @property
    def attachments(self) -> Attachments | None:
        """Where this transaction's attachment files go (None: not kept)."""
        if self.engine is None:
            return AttachmentStore.of(self.state_dir) if self.state_dir else None
        return self.engine.attachments(self.state_dir)

    async def execute(self, sql: str, args: Iterable = ()) -> Cursor:
        return await self.conn.execute(sql, tuple(args))

    async def send(self, sql: str, args: Iterable = ()) -> None:
        """A statement whose result is not needed. Inside a savepoint on PostgreSQL it is
        not waited for: an error in it is raised by a later statement of the savepoint,
        or at its end (Pipelining); elsewhere it runs as execute() does."""
        if self._pipelining is not None:
            await self._pipelining.send(sql, tuple(args))
        else:
            await self.conn.execute(sql, tuple(args))

    # execute_fetchall is one trip to the database thread instead of three.
    async def fetch_one(self, sql: str, args: Iterable = ()) -> tuple | None:
        rows = await self.conn.execute_fetchall(sql, tuple(args))
        return next(iter(rows), None)

    async def fetch_all(self, sql: str, args: Iterable = ()) -> list:
        return list(await self.conn.execute_fetchall(sql, tuple(args)))

    async def fetch_later(self, sql: str, args: Iterable = ()) -> Later:
        """fetch_all in two steps: the statement now, its rows when the result is awaited.
        Inside a savepoint on PostgreSQL, statements asked for this way travel together
        and their rows come back with one wait (Pipelining.defer); elsewhere it runs now."""
        if self._pipelining is not None:
            return await self._pipelining.defer(sql, tuple(args))
        return answered(await self.fetch_all(sql, args))

    @property
    def networked(self) -> bool:
        """Each statement is a round trip to a server (PostgreSQL), not a call into a
        library (SQLite): reading a group's facts ahead in one statement pays here."""
        return self._pipelining is not None

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """The block's statements, undone together if it raises. Named by depth: the
        same few names each time, so PostgreSQL prepares them once."""
        self._savepoints += 1
        name = f"sp{self._savepoints}"
        try:
            if self._pipelining is None:
                await self.conn.execute(f"SAVEPOINT {name}")
                try:
                    yield
                except BaseException:
                    await self._roll_back_to(name)
                    raise
                await self.conn.execute(f"RELEASE {name}")
            else:
                async with self._pipelined(name):
                    yield
        finally:
            self._savepoints -= 1

    @asynccontextmanager
    async def _pipelined(self, name: str) -> AsyncIterator[None]:
        """savepoint() on a Pipelining connection: SAVEPOINT, the statements that need no
        answer and RELEASE travel with those that do, and the pipeline's end waits for
        them all -- inside the block, so an error in any of them undoes the savepoint
        and is raised here, for this message, never for the next one."""
        assert self._pipelining is not None
        try:
            async with self._pipelining.pipeline():
                await self._pipelining.send(f"SAVEPOINT {name}")
                try:
                    yield
                except BaseException:
                    await self._pipelining.drop_pending()
                    raise
                await self._pipelining.send(f"RELEASE {name}")
        except BaseException:
            await self._roll_back_to(name)
            raise

    async def _roll_back_to(self, name: str) -> None:
        await self.conn.execute(f"ROLLBACK TO {name}")
        await self.conn.execute(f"RELEASE {name}")

    # --- dedupe ---------------------------------------------------------------------

    async def record_redelivery(self, message: int, now: datetime) -> int:
        """The stored message arrived once more; returns how often it has arrived."""
        row = await self.fetch_one(
            "UPDATE messages SET deliveries = deliveries + 1, last_delivered_at = ? "
            "WHERE id = ? RETURNING deliveries", (ts(now), message))
        return int(row[0]) if row else 0

    async def add_receipts(self, dedupe_key: str, departments: Iterable[str], message: int,
                           outcome: str) -> None:
        self.written_keys.add(dedupe_key)
        await self.conn.executemany(
            "INSERT OR IGNORE INTO receipts (dedupe_key, department, message, outcome) "
            "VALUES (?, ?, ?, ?)", [(dedupe_key, d, message, outcome) for d in departments])

    async def store_message(self, msg: Inbound, fingerprint: str, kind: MailKind, raw: bytes,
                            source: str, now: datetime, trust: str = "", *,
                            stored: int | None = None, text: str | None = None,
                            packed: bytes | None = None) -> int:
        """Insert the message once: `stored` is its row if an earlier copy (for another
        department) has one (see gather.stored). `text` is what the conversation shows of it;
        `packed` the raw bytes compressed already (off the event loop, for large mail)."""
        row = await self.store_message_later(msg, fingerprint, kind, raw, source, now, trust,
                                             stored=stored, text=text, packed=packed)
        return await row()

    async def store_message_later(self, msg: Inbound, fingerprint: str, kind: MailKind,
                                  raw: bytes, source: str, now: datetime, trust: str = "", *,
                                  stored: int | None = None, text: str | None = None,
                                  packed: bytes | None = None,
                                  ) -> Callable[[], Awaitable[int]]:
        """store_message, its row's id when the result is awaited (see fetch_later)."""
        if stored is not None:
            return answered(stored)
        self.written_keys.add(msg.dedupe_key)
        recipients = [a.addr for a in (*msg.to, *msg.cc)][:1000]
        later = await self.fetch_later(
            """INSERT INTO messages (dedupe_key, message_id, fingerprint, kind, sender,
                   sender_name, recipients, subject, sent_date, body, attachments, defects,
                   size, source, received_at, raw, sender_trust, text)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
            (msg.dedupe_key, msg.message_id, fingerprint, kind.value,
             msg.sender.addr if msg.sender else "", msg.sender.name if msg.sender else "",
             json.dumps(recipients), msg.subject, msg.date.isoformat() if msg.date else None,
             msg.body, json.dumps([[a.filename, a.content_type, a.size]
                                   for a in msg.attachments]),
             json.dumps(list(msg.defects)), msg.size, source, ts(now),
             packed if packed is not None else pack(raw), trust, text))

        async def inserted() -> int:
            return int((await later())[0][0])
        return inserted

    # --- tickets and events ---------------------------------------------------------

    async def create_ticket(self, department: str, prefix: str, subject: str, requester: str,
                            requester_name: str, priority: Priority, now: datetime, *,
                            cc: Sequence[str] = (), next_escalation_at: float | None = None,
                            ) -> Ticket:
        values = (department, subject, requester, requester_name, Status.NEW.value,
                  priority.value, ts(now), ts(now), json.dumps(list(cc)) if cc else None,
                  next_escalation_at)
        if self.engine is not None and self.engine.name == "postgresql":
            # The number drawn and the ticket inserted in one statement: one round trip.
            row = await self.fetch_one(
                _DRAW_AND_OPEN, (prefix, FIRST_TICKET_NUMBER + 1, prefix, *values))
            assert row is not None  # the counter's upsert always returns its row
            ticket_id, number = int(row[0]), int(row[1])
        else:
            row = await self.fetch_one(_DRAW, (prefix, FIRST_TICKET_NUMBER + 1))
            number = int(row[0]) if row else FIRST_TICKET_NUMBER
            cur = await self.execute(_OPEN, (f"{prefix}-{number}", number, *values))
            ticket_id = int(cur.lastrowid or 0)
        return Ticket(ticket_id, f"{prefix}-{number}", department, subject, requester,
                      requester_name, Status.NEW, priority, now, now)

    async def add_event(self, ticket_id: int, kind: str, now: datetime, *,
                        actor: str | None = None, message: int | None = None,
                        outgoing: int | None = None, detail: dict | None = None,
                        visibility: str | None = None) -> None:
        """visibility: public | internal for the conversation's events, else None."""
        await self.execute(
            "INSERT INTO events (ticket, at, kind, actor, message, outgoing, detail, "
            "visibility) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (ticket_id, ts(now), kind, actor, message, outgoing,
             json.dumps(detail) if detail else None, visibility))

    async def tickets_of_outgoing(self, outbox_id: int, primary: int | None) -> list[int]:
        rows = await self.fetch_all("SELECT DISTINCT ticket FROM events WHERE outgoing = ?",
                               (outbox_id,))
        found = [r[0] for r in rows]
        return found or ([primary] if primary else [])

    # --- outbox -----------------------------------------------------------------------

    async def enqueue(self, mail: Outgoing, now: datetime) -> int:
        self._drawn_on([mail])
        cur = await self.execute(
            f"INSERT INTO outbox ({_OUTBOX_INSERT}) VALUES ({_OUTBOX_MARKS})",
            _outbox_values(mail, now))
        return int(cur.lastrowid or 0)

    async def enqueue_many(self, mails: list[Outgoing], now: datetime) -> None:
        self._drawn_on(mails)
        await self.conn.executemany(
            f"INSERT INTO outbox ({_OUTBOX_INSERT}) VALUES ({_OUTBOX_MARKS})",
            [_outbox_values(m, now) for m in mails])

    def _drawn_on(self, mails: Iterable[Outgoing]) -> None:
        for mail in mails:
            if mail.budget is not None:
                self.queued_budgets.add(mail.budget)
            if mail.budget_domain is not None:
                self.queued_domains.add(mail.budget_domain)

    async def add_events(self, events: list[tuple[int, str, dict, str | None]],
                         now: datetime) -> None:
        """(ticket, kind, detail, Message-ID of the outgoing mail or None) per event."""
        await self.conn.executemany(
            """INSERT INTO events (ticket, at, kind, detail, outgoing)
               VALUES (?, ?, ?, ?, (SELECT id FROM outbox WHERE message_id = ?))""",
            [(ticket, ts(now), kind, json.dumps(detail), message_id)
             for ticket, kind, detail, message_id in events])

    async def pending_holds(self) -> list[tuple[str, str, float]]:
        """(department, sender, last summary's time or 0) per flood with tickets waiting."""
        rows = await self.fetch_all(
            """SELECT h.department, h.sender,
                      coalesce((SELECT max(o.created_at) FROM held_notifications s
                                JOIN outbox o ON o.id = s.summary
                                WHERE s.department = h.department AND s.sender = h.sender), 0)
               FROM held_notifications h WHERE h.summary IS NULL
               GROUP BY h.department, h.sender""")
        return [(r[0], r[1], float(r[2])) for r in rows]

    async def held_tickets(self, department: str, sender: str) -> list[tuple[int, str, str]]:
        """(ticket id, ref, subject) of the held notifications not summarised yet."""
        rows = await self.fetch_all(
            "SELECT t.id, t.ref, t.subject FROM held_notifications h "
            "JOIN tickets t ON t.id = h.ticket "
            "WHERE h.department = ? AND h.sender = ? AND h.summary IS NULL ORDER BY h.ticket",
            (department, sender))
        return [(r[0], r[1], r[2]) for r in rows]

    async def mark_summarised(self, tickets: list[int], outgoing: int | None) -> None:
        """Held notifications named in a summary (its outbox row), or dropped (None)."""
        if outgoing is None:
            await self.conn.executemany("DELETE FROM held_notifications WHERE ticket = ?",
                                        [(t,) for t in tickets])
            return
        await self.conn.executemany(
            "UPDATE held_notifications SET summary = ? WHERE ticket = ?",
            [(outgoing, t) for t in tickets])

    # --- intake positions and quarantine ------------------------------------------------

    async def set_mailbox_position(self, name: str, uidvalidity: int, last_uid: int,
                                   now: datetime) -> None:
        await self.execute(
            """INSERT INTO mailboxes (name, uidvalidity, last_uid, updated_at, last_message_at)
               VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (name) DO UPDATE SET uidvalidity = excluded.uidvalidity,
                   last_uid = excluded.last_uid, updated_at = excluded.updated_at,
                   last_message_at = excluded.last_message_at""",
            (name, uidvalidity, last_uid, ts(now), ts(now)))

    async def quarantine(self, raw: bytes, origin: Origin, reason: str, msg: Inbound | None,
                         now: datetime) -> int:
        """Keep the raw bytes, the reason and the envelope a retry needs (pushed mail's:
        its MAIL FROM made it automatic mail, its RCPT TO routed it); the same message
        quarantined twice is one row, and an envelope once known stays known."""
        from mailgate.core.mime.parse import fingerprint  # not for `tickets` and `show`

        key = f"{msg.dedupe_key}#{fingerprint(msg)}" if msg else None
        sender = msg.sender.addr if msg and msg.sender else ""
        subject = msg.subject if msg else ""
        recipients = json.dumps(list(origin.envelope_recipients)) \
            if origin.envelope_sender is not None else None
        row = await self.fetch_one(
            """INSERT INTO quarantine (at, source, reason, dedupe_key, sender, subject, raw,
                                       envelope_sender, envelope_recipients)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (dedupe_key) DO UPDATE SET reason = excluded.reason,
                   at = excluded.at, status = 'held',
                   envelope_sender = COALESCE(excluded.envelope_sender,
                                              quarantine.envelope_sender),
                   envelope_recipients = COALESCE(excluded.envelope_recipients,
                                                  quarantine.envelope_recipients)
               RETURNING id""",
            (ts(now), origin.source, reason[:1000], key, sender, subject[:500], raw,
             origin.envelope_sender, recipients))
        return int(row[0]) if row else 0


# A ticket's number: the first of its prefix, or the next (one round trip either way).
_DRAW = ("INSERT INTO counters (prefix, next_number) VALUES (?, ?) "
         "ON CONFLICT (prefix) DO UPDATE SET next_number = counters.next_number + 1 "
         "RETURNING next_number - 1")
_TICKET_VALUES = ("department, subject, requester, requester_name, status, priority, "
                  "created_at, updated_at, cc, next_escalation_at")
_TICKET_MARKS = ", ".join("?" * len(_TICKET_VALUES.split(",")))
_OPEN = f"INSERT INTO tickets (ref, number, {_TICKET_VALUES}) VALUES (?, ?, {_TICKET_MARKS})"
# PostgreSQL: both in one statement (a data-modifying WITH runs once, however often read).
_DRAW_AND_OPEN = (
    f"WITH drawn AS ({_DRAW} AS number) "
    f"INSERT INTO tickets (ref, number, {_TICKET_VALUES}) "
    "VALUES (CAST(? AS TEXT) || '-' || CAST((SELECT number FROM drawn) AS TEXT), "
    f"(SELECT number FROM drawn), {_TICKET_MARKS}) RETURNING id, number")


_OUTBOX_ROW = ("id, message_id, kind, ticket, mail_from, recipients, raw, attempts, created_at, "
               "draft, copy_of")


def _outbox_row(r: Sequence) -> OutboxRow:
    return OutboxRow(r[0], r[1], r[2], r[3], r[4], tuple(json.loads(r[5])), r[6], r[7],
                     r[8], r[9], r[10])


_OUTBOX_INSERT = ("message_id, kind, ticket, mail_from, recipients, raw, draft, budget, "
                  "budget_domain, copy_of, next_attempt, created_at")
_OUTBOX_MARKS = ", ".join("?" * len(_OUTBOX_INSERT.split(",")))


def _outbox_values(mail: Outgoing, now: datetime) -> tuple:
    return (mail.message_id, mail.kind, mail.ticket_id, mail.mail_from,
            json.dumps(list(mail.recipients)), mail.raw, mail.draft, mail.budget,
            mail.budget_domain, mail.copy_of, ts(now), ts(now))


async def open_engine(target: Path | str, password: str | None = None) -> Engine:
    """The engine for an SQLite file or a postgresql:// URL."""
    if isinstance(target, str) and target.startswith(("postgresql://", "postgres://")):
        from mailgate.storage.postgres.engine import PostgresEngine  # the optional extra
        return await PostgresEngine.open(target, password)
    return await SqliteEngine.open(Path(target))
