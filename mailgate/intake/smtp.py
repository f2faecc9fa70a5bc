"""Push intake: an aiosmtpd SMTP or LMTP listener for MTAs that deliver to mailgate.

The reply to DATA is sent only after the message and its effects are committed, so a 250
means "stored": if storing fails the MTA hears 451 and keeps the message to retry.

Line format never bounces a request: commands and DATA may end their lines in CRLF or a
bare LF (the end-of-data dot too, as Postfix and Exim accept), DATA lines may be of any
length (only max_message_size counts) and command lines up to READ_LIMIT bytes.

Bounded under abuse (DESIGN.md, invariant 10):

- connections: at most `max_connections` in all and `max_connections_per_client` from one
  address; one more hears `421 4.3.2` and is closed, so the MTA retries later. A client
  silent for `idle_timeout` hears `421 4.4.2` and is closed.
- accept errors (out of file descriptors): logged at most once a second with a count,
  never a traceback per failed accept().
- memory: DATA above SPOOL_AT bytes goes to a file under <state>/spool as it arrives
  instead of a list of lines; at most LARGE_AT_ONCE such messages are read back and
  processed at a time, the others' senders wait (within their own SMTP timeout). The
  spool file is removed in every path: stored, refused, failed, disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import resource
import secrets
import socket
import tempfile
import time
import weakref
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP, Envelope, Session, syntax

from mailgate.config.directory import Directory
from mailgate.config.settings import ListenerConfig
from mailgate.core.addresses import clean_address
from mailgate.core.model import Origin
from mailgate.core.routing import envelope_departments
from mailgate.service import metrics
from mailgate.service.log import get_logger
from mailgate.storage.store import Store

if TYPE_CHECKING:
    from mailgate.service.current import Current

log = get_logger("mailgate.smtp")
SPOOL_AT = 1024 * 1024  # DATA beyond this many bytes is written to disk while it arrives
# Spooled messages read back and processed at the same time. One: processing is CPU
# under one GIL, so two at once were no faster (bench/bigmail.py: 169 s either way)
# but peaked 66 MB higher (the parser holds ~7x a message's size while it works).
LARGE_AT_ONCE = 1
# While a message is stored the client waits for our answer; that is not idleness.
# Postfix waits 600 s for the answer to the final dot (smtp_data_done_timeout).
PROCESSING_TIMEOUT = 600.0
# DATA is read in pieces of up to this size; aiosmtpd's 1001 would cost one await per
# line of a 50 MB message. It is also the longest command line taken (RFC 5321 says 512,
# but a 5xx for a long MAIL FROM would bounce a real request): far above any real one.
READ_LIMIT = 64 * 1024
REFUSED = b"421 4.3.2 too many connections, try again later\r\n"
IDLE = b"421 4.4.2 idle for too long, closing connection\r\n"
# This process's spool files start with it; others' are left over from a crash.
_SPOOL_TOKEN = secrets.token_hex(6)
_ACCEPT_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class PushHandler:
    def __init__(self, store: Store, current: Current, on_commit: Callable[[], None],
                 large_at_once: int = LARGE_AT_ONCE) -> None:
        self.store = store
        self.current = current  # read once per command or transaction, never kept
        self.on_commit = on_commit
        # Shared by every listener this handler serves, so a reload keeps the bound.
        self.large = asyncio.Semaphore(large_at_once)

    @property
    def spool_dir(self) -> Path:
        assert self.store.state_dir is not None  # the daemon opens its store with one
        return self.store.state_dir / "spool"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        addr = clean_address(address)
        # A department's or a rule's address, or a default.
        if not self.current.snapshot.directory.accepts(addr):
            return f"550 5.1.1 <{address}>: no department here has this address"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        spool = getattr(envelope, "spool", None)
        if spool is None:  # small: received in memory, the fast path
            raw = envelope.original_content or b""
            if isinstance(raw, str):
                raw = raw.encode("utf-8", "surrogateescape")
            return await self._store(server, envelope, raw)
        async with self.large:  # a waiting sender just waits for its answer
            try:
                raw = await asyncio.to_thread(spool.read_bytes)
            except OSError as exc:
                return self._failed(server, envelope, exc)
            return await self._store(server, envelope, raw)

    async def _store(self, server: SMTP, envelope: Envelope, raw: bytes) -> str:
        try:
            async with self.store.transaction() as tx:
                # Inside the transaction: a reload swaps the snapshot only between
                # transactions, so the origin and the processing see the same setup.
                snapshot = self.current.snapshot
                origin = self._origin(snapshot.directory, envelope)
                outcome = await snapshot.pipeline.handle(tx, raw, origin)
        except Exception as exc:
            return self._failed(server, envelope, exc)
        self.on_commit()
        metrics.METRICS.message_in("smtp", outcome.action)
        detail = " ".join(outcome.tickets) or outcome.action
        return self._reply(server, envelope, f"250 2.0.0 OK {detail}")

    def _failed(self, server: SMTP, envelope: Envelope, exc: Exception) -> str:
        log.error("smtp.store_failed", error=f"{type(exc).__name__}: {exc}")
        return self._reply(server, envelope, "451 4.3.0 cannot store the message now; "
                                             "try again later")

    @staticmethod
    def _origin(directory: Directory, envelope: Envelope) -> Origin:
        recipients = tuple(a for a in (clean_address(r) for r in envelope.rcpt_tos) if a)
        return Origin(source="smtp", departments=envelope_departments(directory, recipients),
                      envelope_sender=_reverse_path(envelope.mail_from),
                      envelope_recipients=recipients)

    @staticmethod
    def _reply(server: SMTP, envelope: Envelope, line: str) -> str:
        # LMTP answers DATA once per recipient; we store once for all of them.
        if getattr(server, "speaks_lmtp", False):
            return "\r\n".join([line] * max(1, len(envelope.rcpt_tos)))
        return line


def _reverse_path(mail_from: str | None) -> str:
    """MAIL FROM's address; "" for the null reverse-path, which aiosmtpd hands over as
    "<>" (the email package's addr_spec of an empty angle-addr)."""
    return "" if not mail_from or mail_from == "<>" else mail_from


# --- logging a storm calmly -----------------------------------------------------------

class Throttled:
    """Log an event at most once per `interval` seconds; the ones held back are counted
    and reported with the next line, or on their own when the storm is over."""

    def __init__(self, event: str, interval: float = 1.0) -> None:
        self.event = event
        self.interval = interval
        self.last = -float("inf")
        self.held = 0
        self.fields: dict[str, Any] = {}
        self._flush: asyncio.TimerHandle | None = None

    def __call__(self, **fields: Any) -> None:
        self.fields = fields
        now = time.monotonic()
        if now - self.last >= self.interval:
            self._emit(now)
            return
        self.held += 1
        if self._flush is None:
            delay = self.last + self.interval - now
            self._flush = asyncio.get_running_loop().call_later(delay, self._emit_held)

    def _emit_held(self) -> None:
        self._flush = None
        if self.held:
            self._emit(time.monotonic())

    def _emit(self, now: float) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        log.warning(self.event, suppressed=self.held, **self.fields)
        self.held, self.last = 0, now


class _CalmListeningSocket(socket.socket):
    """A listening socket that fails accept() with a resource error once per round.

    CPython before the fix of cpython#151615 goes on calling accept() after EMFILE in the
    same round (up to the backlog, 100 times) and schedules one retry for each failure;
    every retry does the same, so the retries multiply by the second (measured: 50 failed
    accepts in the first second, 7,600 thirty seconds later). After the first resource
    error, the rest of the round hears "nothing to accept", which is what the fix does.
    """

    __slots__ = ()  # the same layout as socket.socket, so __class__ can be swapped

    def accept(self) -> tuple[socket.socket, Any]:
        if self in _FAILED_THIS_ROUND:
            raise BlockingIOError(errno.EAGAIN, "out of resources; asyncio retries later")
        try:
            return super().accept()
        except OSError as exc:
            if exc.errno in _ACCEPT_ERRNOS:
                _FAILED_THIS_ROUND.add(self)
                asyncio.get_running_loop().call_soon(_FAILED_THIS_ROUND.discard, self)
            raise


_FAILED_THIS_ROUND: weakref.WeakSet[socket.socket] = weakref.WeakSet()


def calm_accept_rounds(server: asyncio.Server) -> None:
    for wrapper in server.sockets:
        raw = getattr(wrapper, "_sock", None)  # asyncio's TransportSocket keeps it there
        if type(raw) is socket.socket:
            raw.__class__ = _CalmListeningSocket


def calm_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """asyncio reports every failed accept() (EMFILE: out of file descriptors) through
    the loop's exception handler with a traceback -- on Linux the listening socket stays
    readable, so that is a storm of tracebacks. Count them instead, one line a second;
    every other report goes where it went before."""
    previous = loop.get_exception_handler()
    if getattr(previous, "calms_accept_errors", False):
        return  # a reload starts the listener again on the same loop
    throttle = Throttled("smtp.accept_failed")

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _ACCEPT_ERRNOS \
                and "accept" in str(context.get("message", "")):
            throttle(error=str(exc), hint="out of file descriptors: raise LimitNOFILE= or "
                                          "lower [intake.smtp] max_connections")
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handler.calms_accept_errors = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)


# --- connection limits ----------------------------------------------------------------

class ConnectionLimits:
    """Open connections of one listener, in all and per client address."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.open: Counter[str] = Counter()
        self.refusals = Throttled("smtp.connection_refused")

    def admit(self, client: str) -> bool:
        if sum(self.open.values()) >= self.total or self.open[client] >= self.per_client:
            self.refusals(client=client, open=sum(self.open.values()),
                          from_client=self.open[client])
            return False
        self.open[client] += 1
        return True

    def release(self, client: str) -> None:
        self.open[client] -= 1
        if self.open[client] <= 0:
            del self.open[client]


# --- spooling DATA ---------------------------------------------------------------------

class Spool:
    """One message's DATA as it arrives: in memory up to `memory_limit` bytes, then
    appended to a file in `folder` (written from a worker thread, a MB at a time)."""

    def __init__(self, folder: Path, memory_limit: int) -> None:
        self.folder = folder
        self.memory_limit = memory_limit
        self.buffer = bytearray()
        self.path: Path | None = None
        self._file: IO[bytes] | None = None

    async def write(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > self.memory_limit:
            await self._flush()

    async def finish(self) -> bytes | Path:
        """The whole message: bytes if it stayed small, else the closed file's path."""
        if self._file is None:
            return bytes(self.buffer)
        await self._flush()
        self._file.close()
        return self.path  # type: ignore[return-value]

    async def _flush(self) -> None:
        if self._file is None:
            self._file, self.path = await asyncio.to_thread(self._open)
        data, self.buffer = self.buffer, bytearray()
        await asyncio.to_thread(self._file.write, data)

    def _open(self) -> tuple[IO[bytes], Path]:
        fd, name = tempfile.mkstemp(prefix=f"{_SPOOL_TOKEN}.", suffix=".eml", dir=self.folder)
        return os.fdopen(fd, "wb"), Path(name)

    def discard(self) -> None:
        self.buffer = bytearray()
        if self._file is not None:
            self._file.close()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def prepare_spool(folder: Path) -> None:
    """Create <state>/spool (0700) and remove what a crashed process left there: its
    senders never heard 250, so their MTAs deliver those messages again."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in folder.glob("*.eml"):
        if not stale.name.startswith(f"{_SPOOL_TOKEN}."):
            with contextlib.suppress(OSError):
                stale.unlink()


class SpooledEnvelope(Envelope):
    def __init__(self) -> None:
        super().__init__()
        self.spool: Path | None = None  # DATA on disk instead of original_content


# --- the protocol ----------------------------------------------------------------------

class MailgateSMTP(SMTP):
    """aiosmtpd's SMTP with connection limits, a 421 on idle timeout, a DATA command
    that keeps at most SPOOL_AT bytes of a message in memory, and LMTP on the same port.

    `protocol` "auto": the greeting decides -- LHLO makes it an LMTP session (one answer
    per recipient after DATA), EHLO or HELO an SMTP one. "smtp" or "lmtp" take only their
    own greeting and answer the other with 421 (temporary: the MTA keeps the mail and
    retries, where aiosmtpd's 500 "not recognized" made it bounce the mail)."""

    line_length_limit = READ_LIMIT  # the stream reader's limit; see READ_LIMIT

    def __init__(self, handler: PushHandler, *, limits: ConnectionLimits, spool_dir: Path,
                 spool_at: int, protocol: str = "auto", **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.protocol = protocol
        self.speaks_lmtp = protocol == "lmtp"  # until the greeting says
        self.limits = limits
        self.spool_dir = spool_dir
        self.spool_at = spool_at
        self.client: str | None = None  # set once admitted
        self.refused = False
        self.receiving = False  # inside DATA: any bytes arriving count as activity
        # aiosmtpd's limits live in a dict shared by every instance; EHLO adds to it.
        self.command_size_limit = READ_LIMIT
        self.command_size_limits = defaultdict(lambda: READ_LIMIT)

    def _create_envelope(self) -> Envelope:
        return SpooledEnvelope()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.client is None and not self.refused:  # not the STARTTLS re-entry
            peer = transport.get_extra_info("peername")
            client = str(peer[0]) if isinstance(peer, tuple) else str(peer)
            if not self.limits.admit(client):
                self.refused = True
                transport.write(REFUSED)  # type: ignore[attr-defined]
                transport.close()
                return
            self.client = client
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.refused:
            return  # aiosmtpd never saw this connection
        if self.client is not None:
            self.limits.release(self.client)
            self.client = None
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        if self.receiving:  # a slow sender that keeps sending is not idle
            self._reset_timeout()
        super().data_received(data)

    def _timeout_cb(self) -> None:
        if self.transport is not None:
            self.transport.write(IDLE)  # type: ignore[attr-defined]
        super()._timeout_cb()

    @syntax("LHLO hostname")
    async def smtp_LHLO(self, arg: str) -> None:
        if await self._refused_greeting("lmtp", "LHLO"):
            return
        self.speaks_lmtp = True
        await super().smtp_EHLO(arg)

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, arg: str) -> None:
        if await self._refused_greeting("smtp", "EHLO"):
            return
        self.speaks_lmtp = False
        await super().smtp_EHLO(arg)

    @syntax("HELO hostname")
    async def smtp_HELO(self, arg: str) -> None:
        if await self._refused_greeting("smtp", "HELO"):
            return
        self.speaks_lmtp = False
        await super().smtp_HELO(arg)

    async def _refused_greeting(self, kind: str, command: str) -> bool:
        if self.protocol in ("auto", kind):
            return False
        log.warning("smtp.wrong_protocol", client=self.client, command=command,
                    protocol=self.protocol, hint='set [intake.smtp] protocol = "auto", or '
                    f"make the MTA's transport {self.protocol}:")
        await self.push(f"421 4.3.5 {command}: this listener speaks {self.protocol.upper()} "
                        f"only; try again later")
        if self.transport is not None:
            self.transport.close()
        return True

    async def smtp_DATA(self, arg: str) -> None:
        # As aiosmtpd's smtp_DATA up to the 354; the data itself is read in pieces.
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        spool = Spool(self.spool_dir, self.spool_at)
        try:
            self.receiving = True
            fits = await self._receive(spool)
            self.receiving = False
            if not fits:
                too_big = f"552 5.3.4 message larger than {self.data_size_limit} bytes"
                await self.push(PushHandler._reply(self, self.envelope, too_big))
                self._set_post_data_state()
                return
            await self._deliver(await spool.finish())
        finally:
            spool.discard()

    async def _receive(self, spool: Spool) -> bool:
        """Read DATA up to the lone dot into `spool`; False if it was over the size limit
        (then the rest is read and dropped, and nothing is kept).

        Line ends may be CRLF or a bare LF, the end marker too (".\\n" on a line of its
        own ends DATA, as Postfix and Exim accept); lines may be of any length (only the
        message size counts). Only a line that starts with a dot needs a look: the data
        between such lines is read in pieces of up to READ_LIMIT bytes."""
        limit = self.data_size_limit
        size, fits = 0, True

        async def keep(data: bytes) -> None:
            nonlocal size, fits
            size += len(data)
            if fits and limit and size > limit:
                fits = False
                spool.discard()
            if fits and data:
                await spool.write(data)

        line_start = True  # DATA starts at the beginning of a line
        while True:
            if line_start:
                first = await self._reader.readexactly(1)
                line_start = first == b"\n"  # an empty line
                if first != b".":
                    await keep(first)
                    continue
                after = await self._dot_line()
                if after is None:
                    return fits
                await keep(after)  # the stuffed dot is dropped (RFC 5321 4.5.2)
                continue
            try:
                piece = await self._reader.readuntil(b"\n.")
            except asyncio.LimitOverrunError as exc:
                piece = await self._reader.read(exc.consumed)
                line_start = piece.endswith(b"\n")
                await keep(piece)
                continue
            await keep(piece[:-1])
            after = await self._dot_line()
            if after is None:
                return fits
            await keep(after)

    async def _dot_line(self) -> bytes | None:
        """After a dot that starts a line: None if it is the end marker (".\\r\\n" or
        ".\\n"), else the bytes read after the dot, which are data."""
        following = await self._reader.readexactly(1)
        if following == b"\n":
            return None
        if following != b"\r":
            return following
        following += await self._reader.readexactly(1)
        return None if following == b"\r\n" else following

    async def _deliver(self, content: bytes | Path) -> None:
        assert isinstance(self.envelope, SpooledEnvelope)
        if isinstance(content, Path):
            self.envelope.spool = content
        else:
            self.envelope.content = self.envelope.original_content = content
        self._reset_timeout(PROCESSING_TIMEOUT)
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        if self.transport is not None:
            self._reset_timeout()
        await self.push(status)


# --- starting it ------------------------------------------------------------------------

async def start_listener(config: ListenerConfig, handler: PushHandler) -> asyncio.Server:
    limits = ConnectionLimits(config.max_connections, config.max_connections_per_client)
    spool_dir = handler.spool_dir
    await asyncio.to_thread(prepare_spool, spool_dir)
    loop = asyncio.get_running_loop()
    calm_accept_errors(loop)

    def factory() -> SMTP:
        return MailgateSMTP(handler, limits=limits, spool_dir=spool_dir, spool_at=SPOOL_AT,
                            protocol=config.protocol, data_size_limit=config.max_message_size,
                            enable_SMTPUTF8=True, ident="mailgate", hostname="mailgate",
                            timeout=config.idle_timeout)

    server = await loop.create_server(factory, config.host, config.port)
    calm_accept_rounds(server)
    log.info("smtp.listening", host=config.host, port=_port(server), protocol=config.protocol,
             max_connections=config.max_connections,
             max_connections_per_client=config.max_connections_per_client,
             idle_timeout=config.idle_timeout)
    _warn_if_few_descriptors(config.max_connections)
    return server


def _warn_if_few_descriptors(connections: int) -> None:
    """Each connection is a file descriptor; SQLite, IMAP and the spool need some too."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < connections + 100:
        log.warning("smtp.few_descriptors", limit_nofile=soft, max_connections=connections,
                    hint="raise LimitNOFILE= (the unit sets 8192) or lower max_connections")


def _port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1]) if server.sockets else 0
