"""PostgreSQL through psycopg 3: the engine for several mailgate nodes on one database.

Each process keeps one writer connection (its transactions serialised by the Store's
lock, as on SQLite) and one reader connection in autocommit mode, so `read_committed`
sees exactly what other transactions -- of this node or another -- have committed.
Statements arrive written for SQLite and pass through dialect.translate(); results come
back as SQLite's would: tuples, JSON as text, whole numbers as int (see _SqliteLikeNumbers).

Why psycopg 3 and not asyncpg: its `%s` parameters are typed by PostgreSQL from context,
as SQLite's loose typing lets mailgate's statements assume (asyncpg rejects an int where
it inferred text); it honours every libpq connection option in the URL (sslmode,
sslrootcert, target_session_attrs for a standby pair); and it has a synchronous API for
the attachment blobs, which are written from worker threads (blobs.py).
"""

from __future__ import annotations

import asyncio
import re
import select
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import generators
from psycopg.adapt import Loader
from psycopg.pq import TransactionStatus
from psycopg.types.string import TextLoader

from mailgate.storage import errors
from mailgate.storage.engine import answered
from mailgate.storage.postgres.blobs import BlobStore
from mailgate.storage.postgres.dialect import one_insert, translate, translate_many
from mailgate.storage.postgres.link import link_options
from mailgate.storage.postgres.schema import MIGRATIONS

# pg_advisory_xact_lock's first key: which kind of lock the second key names.
MIGRATION_LOCK = 7_106_001  # one migrating node at a time
MESSAGE_KEY_LOCK = 7_106_002  # one node at a time per message key (gather.stored)
OUTBOX_LOCK = 7_106_003  # one node at a time per outbox row (claim_outgoing)

# psycopg's errors by what they mean to mailgate's callers (storage/errors.py), known from
# the moment this engine can raise them. Cured by trying again, on a fresh connection (the
# engine reconnects before the next transaction): OperationalError covers a lost
# connection, an administrator's shutdown (AdminShutdown is one) and a database that
# cannot be reached; a serialization failure or a deadlock one of two nodes is chosen to
# lose; a standby that is read-only after a failover; a lock not granted in time.
errors.register(
    temporary=(psycopg.OperationalError, psycopg.errors.SerializationFailure,
               psycopg.errors.DeadlockDetected, psycopg.errors.ReadOnlySqlTransaction,
               psycopg.errors.LockNotAvailable),
    any_error=(psycopg.Error,))

# Rows some node holds (this one included) are left out before LIMIT, so a node is never
# handed only rows it cannot lock; pg_locks lists every session's advisory locks
# (two-key form: classid = first key, objid = second, objsubid = 2).
_CLAIM = """
    SELECT id, pg_try_advisory_lock(?1, CAST(id % 2000000000 AS INTEGER)) FROM (
        SELECT id FROM outbox WHERE status = 'queued' AND next_attempt <= ?2
            AND CAST(id % 2000000000 AS BIGINT) NOT IN (
                SELECT CAST(objid AS BIGINT) FROM pg_locks WHERE locktype = 'advisory'
                AND classid = CAST(?1 AS OID) AND objsubid = 2)
        ORDER BY next_attempt, id LIMIT ?3 FOR UPDATE SKIP LOCKED) AS due"""
PASSWORD_IN_QUERY = re.compile(r"(?i)((?:^|&)password=)[^&]*")
_UNLOCK = """SELECT pg_advisory_unlock(?, CAST(id % 2000000000 AS INTEGER))
             FROM unnest(CAST(? AS BIGINT[])) AS id"""


def mask(url: str) -> str:
    """The URL without a password, for messages and logs: libpq takes one both as
    user:password@ and as ?password=, so both are hidden."""
    parts = urlsplit(url)
    in_query = PASSWORD_IN_QUERY.search(parts.query) is not None
    if in_query:
        parts = parts._replace(query=PASSWORD_IN_QUERY.sub(r"\1***", parts.query))
    if parts.password is None:
        return urlunsplit(parts) if in_query else url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class _SqliteLikeNumbers(Loader):
    """numeric as SQLite answers it: SUM over BIGINT is numeric in PostgreSQL."""

    def load(self, data: Any) -> int | float:
        value = Decimal(bytes(data).decode())
        return int(value) if value == value.to_integral_value() else float(value)


# The parts of psycopg's cursor that _BufferingCursor runs itself (psycopg 3.2 and 3.3).
_CURSOR_STEPS = ("_start_query", "_convert_query", "_maybe_prepare_gen")


class _BufferingCursor(psycopg.AsyncCursor):
    """psycopg's cursor, except that in pipeline mode a statement is only written to
    libpq's output buffer, not sent to the server on its own.

    psycopg writes each pipelined statement to the socket as it is executed: one send()
    per statement, the server woken for each. Measured on the 2-core bench machine
    (loopback), a statement sent so cost ~85 us of this process's CPU and ~130 us of
    wall time; left in the buffer, ~45 and ~55. Here statements wait in the buffer
    until something needs an answer -- a sync, which every statement whose rows are
    wanted ends with (PgConnection._execute, defer), and the pipeline's end -- and then
    leave together. Results and errors come back in the order the statements were
    written, as before, so an error is still raised before its savepoint's RELEASE.

    This reaches into psycopg's pipeline (its command queue): where that is not as
    expected (another psycopg version), the statement takes psycopg's own way."""

    def _execute_gen(self, query: Any, params: Any = None, *, prepare: bool | None = None,
                     binary: bool | None = None) -> Generator[Any, Any, None]:
        commands = getattr(self._conn._pipeline, "command_queue", None)
        if commands is None or not _BUFFERING:
            return (yield from super()._execute_gen(query, params, prepare=prepare,
                                                    binary=binary))
        yield from self._start_query(query)
        pgq = self._convert_query(query, params)
        yield from self._maybe_prepare_gen(pgq, prepare=prepare, binary=binary)
        while commands:  # into libpq's buffer, in order: the next sync sends them all
            commands.popleft()()
        self._last_query = query
        yield from self._conn._prepared.maintain_gen(self._conn)


_BUFFERING = all(hasattr(_BufferingCursor, step) for step in _CURSOR_STEPS)

# The parts of psycopg's pipeline that _sync() runs itself (psycopg 3.2 and 3.3).
_PIPELINE_STEPS = ("_enqueue_sync", "_communicate_gen", "_fetch_gen")
_DRAINING = all(hasattr(psycopg.AsyncPipeline, step) for step in _PIPELINE_STEPS)


def _sync_drained(pipe: psycopg.AsyncPipeline) -> Generator[Any, Any, None]:
    """psycopg's pipeline sync, with everything written sent before waiting for answers.

    psycopg's own stops writing when it has handed the sync to libpq, even if libpq could
    not send it all yet (the socket full: a statement of megabytes, a bytea attachment),
    and then waits for answers; the server, missing the rest, waits too, for ever
    (psycopg issue #685 was the pipeline's exit; a sync's is the same)."""
    pipe._enqueue_sync()
    yield from pipe._communicate_gen()
    yield from generators.send(pipe.pgconn)  # until libpq's buffer is empty
    yield from pipe._fetch_gen(flush=False)


class PgCursor:
    """A finished statement's rows, as aiosqlite's cursor hands them out."""

    def __init__(self, rows: list[tuple], rowcount: int, lastrowid: int | None) -> None:
        self._rows = rows
        self._next = 0
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    async def fetchone(self) -> tuple | None:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    async def fetchall(self) -> list[tuple]:
        rest, self._next = self._rows[self._next:], len(self._rows)
        return rest


class _Pending:
    """conn.execute(...)'s result: awaited, or used as `async with ... as cur`."""

    def __init__(self, work: Awaitable[PgCursor]) -> None:
        self._work = work

    def __await__(self) -> Generator[Any, None, PgCursor]:
        return self._work.__await__()

    async def __aenter__(self) -> PgCursor:
        return await self._work

    async def __aexit__(self, *exc: object) -> None:
        return None


class PgConnection:
    """One psycopg connection with the part of aiosqlite's API mailgate's SQL uses.

    Inside pipeline() (engine.Pipelining) a statement sent with send() or executemany()
    goes out at once but is not waited for: its result (and any error) comes back with
    the next statement whose rows are needed, or when the pipeline ends. A message's
    dozen statements then cost a few round trips to the server instead of a dozen.

    psycopg's pipeline is the whole connection's state, not one task's: a statement from
    another task (a mailbox watcher asking for its position while another's batch is
    open) let in halfway would be queued in it -- or, as it ends, sent and never read.
    So while a pipeline is open, every other task's statement on this connection waits
    until it ends (a message's worth of milliseconds). The task that opened it must not
    wait, inside it, for another task that uses this connection."""

    def __init__(self, url: str, password: str | None, read_only: bool = False,
                 renew_between_transactions: bool = False) -> None:
        self.url = url
        self.password = password
        self.read_only = read_only
        # A connection whose session holds nothing beyond a transaction (no session
        # locks) is opened anew by the first statement that finds it lost outside one.
        self.renew_between_transactions = renew_between_transactions
        self._transaction_open = False  # a BEGIN went through, its COMMIT/ROLLBACK not yet
        self._said_goodbye = False  # the server ended this session (_on_notice)
        self.raw: psycopg.AsyncConnection | None = None
        self._connecting = asyncio.Lock()  # two readers at once open one connection
        self._pipe: psycopg.AsyncPipeline | None = None
        self._pipe_owner: asyncio.Task | None = None  # the task whose pipeline is open
        self._pipe_closed = asyncio.Event()
        self._pipe_closed.set()

    async def connect(self) -> None:
        extra = {"password": self.password} if self.password else {}
        extra.update(link_options(self.url))
        raw = await psycopg.AsyncConnection.connect(self.url, autocommit=True,
                                                    application_name="mailgate",
                                                    cursor_factory=_BufferingCursor, **extra)
        raw.adapters.register_loader("numeric", _SqliteLikeNumbers)
        for kind in ("json", "jsonb"):  # SQLite's JSON is text: callers json.loads it
            raw.adapters.register_loader(kind, TextLoader)
        await raw.execute("SET TIME ZONE 'UTC'")
        if self.read_only:
            await raw.execute("SET default_transaction_read_only = on")
        self._said_goodbye = False
        raw.add_notice_handler(self._on_notice)
        self.raw = raw

    @property
    def lost(self) -> bool:
        return self.raw is None or self.raw.closed or self.raw.broken

    @property
    def in_transaction(self) -> bool:
        return (self.raw is not None
                and self.raw.info.transaction_status != TransactionStatus.IDLE)

    def stale(self) -> bool:
        """Lost, or closed by the server while idle: a restart, a failover, an admin's
        pg_terminate_backend end every session with a message and a hang-up that wait
        unread in the socket. Read now, they let the next statement go to a new
        connection instead of failing on the dead one (and a lease round, a release at a
        clean stop, the first batch after a restart, with it)."""
        return self.lost or self._hung_up()

    def _hung_up(self) -> bool:
        raw = self.raw
        if (raw is None or self._pipe is not None
                or raw.info.transaction_status != TransactionStatus.IDLE):
            return False  # busy: an answer may be on its way, its statement will see
        try:
            # poll, not select: a daemon with many SMTP clients has descriptors past 1024
            waiting = select.poll()
            waiting.register(raw.pgconn.socket, select.POLLIN)
            if not waiting.poll(0):
                return False
            raw.pgconn.consume_input()  # the hang-up marks the connection bad
            raw.pgconn.is_busy()  # parses what came: an idle FATAL goes to _on_notice
        except psycopg.OperationalError:  # no socket, or reading it failed
            return True
        except OSError:  # cannot tell: the statement will find out
            return False
        return raw.closed or self._said_goodbye

    def _on_notice(self, notice: psycopg.errors.Diagnostic) -> None:
        """libpq hands an error that arrives while idle to the notice handlers: the FATAL
        a session ends with, which may come a moment before the hang-up itself."""
        if notice.severity_nonlocalized in ("FATAL", "PANIC"):
            self._said_goodbye = True

    async def reconnect_if_lost(self) -> None:
        async with self._connecting:
            if self.stale():
                if self.raw is not None:
                    await self.raw.close()
                await self.connect()

    def execute(self, sql: str, parameters: Sequence | Mapping = ()) -> _Pending:
        return _Pending(self._execute(sql, parameters))

    async def _my_turn(self) -> None:
        """Wait while another task's pipeline is open (see the class)."""
        while self._pipe_owner is not None and self._pipe_owner is not asyncio.current_task():
            await self._pipe_closed.wait()

    async def _execute(self, sql: str, parameters: Sequence | Mapping) -> PgCursor:
        await self._my_turn()
        done = translate(sql)
        verb = done.sql.lstrip()[:8].upper()
        if verb.startswith("ROLLBACK") and self.lost:
            # The server ended the transaction with the session. Raising here would hide
            # the error that made the caller roll back behind "the connection is closed".
            self._transaction_open = False
            return PgCursor([], 0, None)
        await self._renew_if_lost()
        raw = self._raw()
        try:
            async with raw.cursor() as cur:
                await cur.execute(done.sql, done.arguments(parameters))
                if self._pipe is not None:  # this one's rows are wanted: wait for them
                    await self._sync()
                rows = [tuple(r) for r in await cur.fetchall()] if cur.description else []
                rowcount = cur.rowcount  # a closed cursor no longer knows it
        finally:
            if verb.startswith(("COMMIT", "ROLLBACK")):  # over, whether it worked or not
                self._transaction_open = False
        if verb.startswith("BEGIN"):
            self._transaction_open = True
        if done.returns_id:
            return PgCursor([], rowcount, int(rows[0][0]) if rows else None)
        return PgCursor(rows, rowcount, None)

    async def _renew_if_lost(self) -> None:
        """A lost connection (the server restarted, a failover) opened anew before a
        statement outside any transaction: a read between transactions -- a mailbox's
        position, the outbox summary -- must not fail for ever on a connection that no
        transaction happens to renew. Inside a transaction it is never renewed: the rest
        of the transaction would run without its beginning (the caller rolls back and
        retries it whole)."""
        if (self.renew_between_transactions and not self._transaction_open
                and self._pipe is None and self.stale()):
            await self.reconnect_if_lost()

    async def execute_fetchall(self, sql: str,
                               parameters: Sequence | Mapping = ()) -> list[tuple]:
        return await (await self._execute(sql, parameters)).fetchall()

    async def execute_fetchall_binary(self, sql: str,
                                      parameters: Sequence | Mapping = ()) -> list[tuple]:
        """execute_fetchall, the rows in binary form (engine.BinaryRows)."""
        await self._my_turn()
        done = translate(sql)
        await self._renew_if_lost()
        async with self._raw().cursor(binary=True) as cur:
            await cur.execute(done.sql, done.arguments(parameters))
            if self._pipe is not None:
                await self._sync()
            return await cur.fetchall()

    async def executemany(self, sql: str, parameters: Iterable[Sequence | Mapping]) -> None:
        await self._my_turn()
        rows = list(parameters)
        one = one_insert(sql, rows)
        if one is None and not rows:
            return
        text, values = one or translate_many(sql, rows)
        await self._renew_if_lost()
        async with self._raw().cursor() as cur:
            if one is not None or len(values) == 1:  # one statement, atomic as one
                await cur.execute(text, values if one else values[0])
            else:
                await cur.executemany(text, values)

    @asynccontextmanager
    async def pipeline(self) -> AsyncIterator[None]:
        """Until the block ends, send() and executemany() do not wait (see the class);
        leaving it waits for everything sent and raises the first error among them."""
        await self._my_turn()
        self._pipe_owner = asyncio.current_task()
        self._pipe_closed.clear()
        try:
            async with self._raw().pipeline() as pipe:
                self._pipe = pipe
                try:
                    yield
                finally:
                    self._pipe = None
        finally:
            self._pipe_owner = None
            self._pipe_closed.set()

    async def send(self, sql: str, parameters: Sequence | Mapping = ()) -> None:
        """A statement whose result is not needed: inside pipeline() it goes out without
        waiting, elsewhere it runs as execute() does."""
        if self._pipe is None or self._pipe_owner is not asyncio.current_task():
            await self._execute(sql, parameters)
            return
        done = translate(sql)
        await self._raw().execute(done.sql, done.arguments(parameters))

    async def defer(self, sql: str,
                    parameters: Sequence | Mapping = ()) -> Callable[[], Awaitable[list[tuple]]]:
        """A statement whose rows are needed, but not yet: inside this task's pipeline it
        goes out now, and asking for its rows waits only if they did not come back with
        an earlier wait's. Elsewhere it runs now, as execute_fetchall() does."""
        if self._pipe is None or self._pipe_owner is not asyncio.current_task():
            return answered(await self.execute_fetchall(sql, parameters))
        done = translate(sql)
        cur = self._raw().cursor()
        await cur.execute(done.sql, done.arguments(parameters))

        async def rows() -> list[tuple]:
            if cur.pgresult is None and self._pipe is not None:
                await self._sync()
            return [tuple(r) for r in await cur.fetchall()] if cur.description else []
        return rows

    async def _sync(self) -> None:
        """Send what this task's pipeline holds and take in every answer (_sync_drained)."""
        pipe = self._pipe
        assert pipe is not None
        if not _DRAINING:
            await pipe.sync()
            return
        raw = self._raw()
        async with raw.lock:  # as psycopg's own sync() holds it
            await raw.wait(_sync_drained(pipe))

    async def drop_pending(self) -> None:
        """Inside pipeline(), after a failure: wait for what was sent, ignoring its errors
        (the caller is rolling it back), so the connection takes statements again."""
        if self._pipe is not None:
            try:
                await self._sync()
            except psycopg.Error:
                if self.lost:
                    raise

    async def run_script(self, script: str) -> None:
        """PostgreSQL's own SQL (migrations), several statements, no parameters."""
        await self._my_turn()
        await self._raw().execute(script.encode())

    async def commit(self) -> None:
        """Autocommit outside explicit transactions, as aiosqlite's isolation_level=None."""

    async def close(self) -> None:
        if self.raw is not None:
            await self.raw.close()

    def _raw(self) -> psycopg.AsyncConnection:
        if self.raw is None:
            raise psycopg.OperationalError("the connection is not open")
        return self.raw


class PostgresEngine:
    name = "postgresql"
    shared = True
    begin = "BEGIN ISOLATION LEVEL READ COMMITTED"

    def __init__(self, url: str, password: str | None) -> None:
        self.url = url
        self.password = password
        # The writer's locks end with its transactions, so it may renew itself; the claims
        # connection's session locks are the claims: only claim_outgoing() renews it.
        self.conn = PgConnection(url, password, renew_between_transactions=True)
        self._reader = PgConnection(url, password, read_only=True)
        self.blobs = BlobStore(url, password)  # connects when first used
        self._claims = PgConnection(url, password)  # holds the outbox rows being sent
        self._held: set[int] = set()

    @classmethod
    async def open(cls, url: str, password: str | None = None) -> PostgresEngine:
        engine = cls(url, password)
        await engine.conn.connect()
        return engine

    def describe(self) -> str:
        return mask(self.url)

    async def close(self) -> None:
        self.blobs.close()
        await self._claims.close()  # lets go of every outbox row held
        await self._reader.close()
        await self.conn.close()

    async def reader(self) -> PgConnection:
        await self._reader.reconnect_if_lost()
        return self._reader

    async def ready(self) -> None:
        """A connection lost (database restarted, standby promoted) is opened anew before
        the next transaction; the one that was cut off failed and is retried by its
        caller (errors.TEMPORARY)."""
        await self.conn.reconnect_if_lost()

    async def lock_key(self, conn: PgConnection, key: str) -> None:
        """Sent, not waited for (in a pipeline): the query after it waits for the lock."""
        await conn.send("SELECT pg_advisory_xact_lock(?, hashtext(?))",
                        (MESSAGE_KEY_LOCK, key))

    async def lock_keys(self, conn: PgConnection, keys: Sequence[str]) -> None:
        """lock_key for several keys in one statement, waited for, in the order of their
        lock numbers: two nodes locking overlapping groups take them in the same order."""
        await conn.execute(
            "SELECT COUNT(pg_advisory_xact_lock(?, number)) FROM ("
            "SELECT DISTINCT hashtext(key) AS number FROM unnest(CAST(? AS TEXT[])) AS key "
            "ORDER BY number) AS numbers", (MESSAGE_KEY_LOCK, list(keys)))

    def attachments(self, state_dir: Path | None) -> BlobStore:
        return self.blobs

    async def claim_outgoing(self, columns: str, now: float, limit: int,
                             keep: set[int]) -> list[tuple]:
        """Due outbox rows no other node holds, each held by this process until its next
        round (or, in `keep`, longer): a session-level advisory lock per row, taken on a
        connection of its own.

        Candidates are picked with FOR UPDATE SKIP LOCKED, so two nodes claiming at the
        same instant take different rows without waiting; the advisory lock then carries
        the claim beyond that statement, for as long as the SMTP delivery takes, without
        a transaction held open meanwhile (its row locks would block the row's own
        bookkeeping on the writer connection). The rows are read again after locking, so
        one that another node settled in between is let go. A node that dies loses its
        connection and with it every claim: its unsent rows go out from another node (or
        itself restarted) at once."""
        if self._claims.stale():
            await self._claims.reconnect_if_lost()
            self._held = set()  # the old session's locks died with it
        conn = self._claims
        release = self._held - keep
        if release:
            await conn.execute(_UNLOCK, (OUTBOX_LOCK, sorted(release)))
        self._held -= release
        candidates = await conn.execute_fetchall(_CLAIM, (OUTBOX_LOCK, now, limit))
        locked = [int(row[0]) for row in candidates if row[1]]
        if not locked:
            return []
        # Counted as held from here: if what follows fails on a session that lives on
        # (a cancelled read), the next claim still lets them go.
        self._held |= set(locked)
        rows = await conn.execute_fetchall(
            f"SELECT {columns} FROM outbox WHERE id = ANY(CAST(? AS BIGINT[])) "
            "AND status = 'queued' AND next_attempt <= ? ORDER BY next_attempt, id",
            (locked, now))
        still = {int(row[0]) for row in rows}
        settled = [i for i in locked if i not in still]
        if settled:
            await conn.execute(_UNLOCK, (OUTBOX_LOCK, settled))
            self._held -= set(settled)
        return rows

    async def on_claims_connection(self, sql: str, rows: list[Sequence]) -> None:
        """Run `sql` once per row on the claims connection, as one transaction of its own:
        settling claimed rows must not wait behind the writer connection's open intake
        batch. One row (a node marks each mail before its next send) is one statement,
        its own transaction in autocommit: one round trip, not BEGIN, it and COMMIT."""
        if self._claims.stale():
            await self._claims.reconnect_if_lost()
            self._held = set()
        if len(rows) == 1:
            await self._claims.execute(sql, rows[0])
            return
        async with self._claims._raw().transaction():
            await self._claims.executemany(sql, rows)

    async def columns(self, table: str) -> set[str]:
        rows = await self.conn.execute_fetchall(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ?", (table,))
        return {r[0] for r in rows}

    async def schema_version(self) -> int:
        [(table,)] = await self.conn.execute_fetchall(
            "SELECT to_regclass('schema_version') IS NOT NULL")
        if not table:
            return 0
        row = await self.conn.execute_fetchall("SELECT version FROM schema_version")
        return int(row[0][0]) if row else 0

    async def migrate(self) -> int:
        """Apply pending migrations, each in one transaction with its version bump; nodes
        starting together take turns (an advisory lock), the later ones find it done.

        A database already at this version -- every start but the first after an upgrade
        -- costs two short queries, not six round trips per migration: versions only go up,
        and a version bump commits with its migration, so nothing can be left to do."""
        await self.ready()
        if await self.schema_version() == len(MIGRATIONS):
            return 0
        applied = 0
        for number in range(1, len(MIGRATIONS) + 1):
            await self.conn.execute("BEGIN")
            try:
                await self.conn.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
                await self.conn.run_script(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                version = await self.schema_version()
                if version > len(MIGRATIONS):
                    raise RuntimeError(
                        f"{self.describe()}: database schema {version} is newer than this "
                        f"mailgate ({len(MIGRATIONS)}); upgrade mailgate")
                if version < number:
                    await self.conn.run_script(MIGRATIONS[number - 1])
                    await self.conn.execute("DELETE FROM schema_version")
                    await self.conn.execute("INSERT INTO schema_version VALUES (?)", (number,))
                    applied += 1
            except psycopg.Error as exc:
                await self.conn.execute("ROLLBACK")
                raise RuntimeError(
                    f"{self.describe()}: migration {number} failed: {exc}") from exc
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
            await self.conn.execute("COMMIT")
        return applied
