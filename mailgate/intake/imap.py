"""One task per mailbox: UID tracking, IDLE or polling, reconnect with backoff.

imapclient is blocking, so each mailbox owns one worker thread that alone touches its
connection; the event loop only awaits. The mailbox position (UIDVALIDITY + last UID)
moves forward in the same transaction that stores a batch, so a crash re-reads at most
that batch and the dedupe key turns the re-read into a no-op. The mailbox itself is not
modified unless `after` asks for a flag or a move, and only after the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import random
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from imapclient import IMAPClient, SocketTimeout
from imapclient.exceptions import IMAPClientError

from mailgate.config.settings import MailboxConfig
from mailgate.connect import diagnose
from mailgate.connect.diagnose import Diagnosis, Endpoint, FolderMissing, StartTlsMissing
from mailgate.connect.tls import TlsSettings, client_context
from mailgate.core.model import Origin
from mailgate.intake.pipeline import Clock
from mailgate.intake.read import Read
from mailgate.intake.reading import Reader
from mailgate.service import metrics
from mailgate.service.log import get_logger
from mailgate.storage import errors as store_errors
from mailgate.storage.attachments import AttachmentStore
from mailgate.storage.store import Store

if TYPE_CHECKING:
    from mailgate.service.current import Current

log = get_logger("mailgate.imap")
IDLE_RENEW = 600.0  # re-issue IDLE well inside the 29 minutes RFC 2177 allows
IDLE_SLICE = 1.0  # idle_check granularity: how fast a stop request is noticed
MAX_BACKOFF = 300.0
NETWORK_ERRORS = (OSError, IMAPClientError, ssl.SSLError, EOFError)
# A FETCH brings whole messages into memory: a batch of 50 mails of 50 MB would be 2.5 GB.
# Messages are fetched in groups of at most this many bytes (RFC822.SIZE), a larger one
# alone; each group commits with the mailbox position, as a batch does. Two groups are in
# memory at a time: the one processed and the next one, fetched meanwhile.
FETCH_BYTES = 8 * 1024 * 1024


@dataclass
class MailboxState:
    """What `mailgate status` shows about a mailbox; updated by its watcher."""

    name: str
    connected: bool = False
    # idle | polling | reconnecting (a network problem) | error (needs someone: a refused
    # login or certificate, a missing folder, an OAuth2 failure)
    mode: str = "starting"
    last_message_at: float | None = None
    last_error: str | None = None
    reconnects: int = 0
    processed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


Fetched = tuple[dict[int, bytes], dict[int, Read]]  # a group's mail by UID, and as read


class ConnectionDropped(ConnectionError):
    pass


class Reporter(Protocol):
    """Told about failures and recoveries (the alert mail, mailgate/alerts.py)."""

    async def failing(self, mailbox: str, where: str, found: Diagnosis) -> None: ...

    async def recovered(self, mailbox: str, where: str) -> None: ...


class MailboxWatcher:
    def __init__(self, config: MailboxConfig, store: Store, current: Current,
                 on_commit: Callable[[], None], clock: Clock,
                 reporter: Reporter | None = None, reader: Reader | None = None) -> None:
        # This mailbox's own settings: a reload that changes them starts a new watcher.
        self.config = config
        self.reporter = reporter
        self.store = store
        self.current = current  # the rest, read once per transaction
        self.on_commit = on_commit
        self.clock = clock
        self.reader = reader or Reader(0)  # reads fetched mail in another process
        self.origin = Origin(source=f"imap:{config.name}", departments=(config.department,))
        self.state = MailboxState(config.name)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"imap-{config.name}")
        self._client: IMAPClient | None = None
        self._stop = threading.Event()
        self._idle = False
        self._uidvalidity = 0
        self._suspect = False  # the server complained while we idled: check the folder
        self._database_failures = 0  # in a row, since the last poll that went through

    # --- the forever loop -----------------------------------------------------------

    async def run(self) -> None:
        failures = 0
        try:
            while True:
                try:
                    await self.connect()
                    failures = 0
                    await self._report(None)
                    await self.watch()
                except NETWORK_ERRORS as exc:
                    failures += 1
                    await self._after_failure(exc, failures)
                except store_errors.TEMPORARY as exc:  # disk full, database locked or away
                    # Counted apart: the IMAP login succeeds every time, and the database
                    # must not be asked again every second while it restarts.
                    self._database_failures += 1
                    await self._after_failure(exc, self._database_failures, Diagnosis(
                        diagnose.DATABASE, f"database {self.store.describe()}: {exc}"))
                except Exception as exc:  # a bug must not silence the mailbox for good
                    log.exception("imap.unexpected", mailbox=self.config.name)
                    failures += 1
                    await self._after_failure(exc, failures)
        finally:
            self._stop.set()
            await self._in_thread(self._logout)
            self._executor.shutdown(wait=False)

    async def _after_failure(self, exc: BaseException, failures: int,
                             found: Diagnosis | None = None) -> None:
        delay = min(MAX_BACKOFF, 2.0 ** min(failures, 9)) * random.uniform(0.5, 1.0)
        self.state.connected = False
        self.state.reconnects += 1
        metrics.METRICS.imap_reconnect(self.config.name)
        found = found or self.diagnose(exc)
        await self._set_mode("error" if found.needs_admin else "reconnecting", found.text)
        log.warning("imap.error", mailbox=self.config.name, kind=found.kind,
                    error=found.text, retry_in=round(delay, 1))
        await self._report(found)
        await self._in_thread(self._logout)
        await asyncio.sleep(delay)

    async def _report(self, found: Diagnosis | None) -> None:
        """Tell the reporter; its trouble (a full disk) must never stop this mailbox."""
        if self.reporter is None:
            return
        cfg = self.config
        where = f"{cfg.username} at {cfg.host}:{cfg.port}, folder {cfg.folder}"
        try:
            if found is None:
                await self.reporter.recovered(cfg.name, where)
            else:
                await self.reporter.failing(cfg.name, where, found)
        except Exception as exc:
            log.error("imap.report_failed", mailbox=cfg.name, error=repr(exc))

    def diagnose(self, exc: BaseException) -> Diagnosis:
        """The failure in words, naming the setting to change (see diagnose.py)."""
        return diagnose.explain(exc, endpoint_of(self.config))

    async def watch(self) -> None:
        """Process what is new, then wait for more: IDLE when offered, else poll."""
        while True:
            await self.poll_once()
            self._database_failures = 0
            if self._idle:
                await self._set_mode("idle")
                # poll_interval bounds IDLE too: servers do miss changes (Dovecot's Maildir
                # checks compare mtimes in whole seconds), so we look ourselves now and then.
                limit = min(IDLE_RENEW, self.config.poll_interval.total_seconds())
                await self._in_thread(self._idle_wait, limit)
            else:
                await self._set_mode("polling")
                await asyncio.sleep(self.config.poll_interval.total_seconds())

    async def _set_mode(self, mode: str, error: str | None = None) -> None:
        """Remember the mode for `mailgate status`; written only when it changes."""
        if (mode, error) == (self.state.mode, self.state.last_error):
            return
        self.state.mode, self.state.last_error = mode, error
        metrics.METRICS.mailbox_state(self.config.name, mode)
        try:
            await self.store.record_mailbox_state(self.config.name, mode, error, self.clock())
        except store_errors.STORE_ERRORS as exc:  # status is best effort; intake must go on
            log.warning("imap.state_not_saved", mailbox=self.config.name, error=str(exc))

    # --- one round: connect, then fetch and process everything new --------------------

    async def connect(self) -> None:
        await self._in_thread(self._connect)
        self.state.connected = True
        log.info("imap.connected", mailbox=self.config.name, host=self.config.host,
                 folder=self.config.folder, idle=self._idle)

    async def poll_once(self) -> int:
        """Fetch and process every message after the stored position; return the count.

        The next group is fetched (in this mailbox's thread) while one is processed (on
        the event loop): the server's and the network's time hides behind ours."""
        uidvalidity, last_uid = await self._position()
        uids = await self._in_thread(self._new_uids, last_uid)
        groups = self._groups(uids)
        group = await anext(groups, None)
        ahead = self._fetch_soon(group)
        done = 0
        try:
            while group is not None and ahead is not None:
                fetched, reads = await ahead
                following = await anext(groups, None)
                ahead = self._fetch_soon(following)
                await self._process(uidvalidity, group, fetched, reads)
                done += len(group)
                del fetched, reads  # at most two groups' messages in memory at a time
                group = following
        finally:
            _forget(ahead)
            await groups.aclose()
        return done

    async def _groups(self, uids: list[int]) -> AsyncIterator[list[int]]:
        """The new messages in groups to fetch: batches of batch_size, split by size."""
        for start in range(0, len(uids), self.config.batch_size):
            batch = uids[start:start + self.config.batch_size]
            sizes = await self._in_thread(self._sizes, batch)
            for group in by_size(batch, sizes, FETCH_BYTES):
                yield group

    def _fetch_soon(self, group: list[int] | None) -> asyncio.Future[Fetched] | None:
        if group is None:
            return None
        return asyncio.ensure_future(self._fetch_and_read(group))

    async def _fetch_and_read(self, group: list[int]) -> Fetched:
        fetched = await self._in_thread(self._fetch, group)
        asked = self.current.snapshot.pipeline.reading
        return fetched, await self.reader.read(fetched, asked, self._attachment_dir())

    def _attachment_dir(self) -> str | None:
        """Where the reading process may store attachments ahead: a SQLite store's
        directory. PostgreSQL keeps them in the database, which it must not touch."""
        files = self.store.attachments()
        return str(files.root) if isinstance(files, AttachmentStore) else None

    async def _position(self) -> tuple[int, int]:
        uidvalidity = self._uidvalidity
        stored = await self.store.mailbox_position(self.config.name)
        if stored is None or stored[0] is None:  # never read this mailbox before
            return uidvalidity, 0
        if stored[0] != uidvalidity:
            # The folder was recreated: UIDs mean something else now. Re-read it all;
            # the dedupe key keeps known messages from becoming tickets twice.
            log.warning("imap.uidvalidity_changed", mailbox=self.config.name,
                        old=stored[0], new=uidvalidity)
            return uidvalidity, 0
        return uidvalidity, stored[1]

    async def _process(self, uidvalidity: int, batch: list[int], fetched: dict[int, bytes],
                       reads: dict[int, Read]) -> None:
        outcomes = []
        async with self.store.transaction() as tx:
            # Inside the transaction: a reload swaps the snapshot only between them.
            pipeline = self.current.snapshot.pipeline
            if tx.networked:  # on SQLite a statement is a call: reading ahead only adds
                # work (each mail routed twice: 0.1-0.3 ms of CPU per message, in-process)
                await pipeline.read_ahead(
                    tx, [reads.get(uid) for uid in batch if uid in fetched], self.origin)
            for uid in batch:
                raw = fetched.get(uid)
                if raw is None:  # expunged between SEARCH and FETCH: nothing to lose
                    continue
                outcome = await pipeline.handle(tx, raw, self.origin, reads.get(uid))
                outcomes.append(outcome.action)
                log.debug("imap.message", mailbox=self.config.name, uid=uid,
                          action=outcome.action, tickets=outcome.tickets)
            await tx.set_mailbox_position(self.config.name, uidvalidity, batch[-1],
                                          self.clock())
        for action in outcomes:  # committed: a rolled-back batch is read and counted again
            metrics.METRICS.message_in(self.config.name, action)
        self.state.processed += len(fetched)
        self.state.last_message_at = time.time()
        self.on_commit()
        if self.config.after != "keep":
            await self._in_thread(self._mark_processed, [u for u in batch if u in fetched])

    # --- blocking IMAP calls, run in this mailbox's own thread -----------------------

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _connect(self) -> None:
        cfg = self.config
        if cfg.tls != "none" and not cfg.tls_verify:
            log.warning("imap.tls_unverified", mailbox=cfg.name, host=cfg.host,
                        note="tls_verify = false: any certificate is accepted")
        client = open_client(cfg)
        try:
            self._login(client)
            self._idle = cfg.idle and client.has_capability("IDLE")
            self._client = client
            # Selected once per connection: re-selecting every round costs a server-side
            # resync. A recreated folder ends the session, and the next one sees the change.
            self._uidvalidity = self._select()
        except BaseException:
            self._client = None
            _close_quietly(client)
            raise

    def _login(self, client: IMAPClient) -> None:
        login(client, self.config)

    def _select(self) -> int:
        client = self._require()
        readonly = self.config.after == "keep"
        info = select(client, self.config.folder, readonly)
        client._imap.untagged_responses.pop("UIDVALIDITY", None)  # seen; only changes count
        return int(info[b"UIDVALIDITY"])

    def _new_uids(self, last_uid: int) -> list[int]:
        client = self._require()
        # Any EXISTS from now on may announce mail this SEARCH does not see yet; _idle_wait
        # looks for one before it starts waiting (imaplib files them in untagged_responses).
        _forget_announcements(client)
        # "n:*" always matches the highest UID, even when it is below n: filter.
        uids = client.search(["UID", f"{last_uid + 1}:*"])
        self._check_still_valid(client)
        return sorted(u for u in uids if u > last_uid)

    def _sizes(self, uids: list[int]) -> dict[int, int]:
        response = self._require().fetch(uids, ["RFC822.SIZE"])
        return {uid: int(data.get(b"RFC822.SIZE", 0)) for uid, data in response.items()}

    def _fetch(self, uids: list[int]) -> dict[int, bytes]:
        # BODY.PEEK leaves \Seen alone: people reading the shared inbox still see new mail.
        response = self._require().fetch(uids, ["BODY.PEEK[]"])
        return {uid: data[b"BODY[]"] for uid, data in response.items() if b"BODY[]" in data}

    def _check_still_valid(self, client: IMAPClient) -> None:
        """Reconnect when the folder we selected is gone or was recreated.

        Dovecot keeps a session on a deleted folder alive with a stale view and untagged
        "NO" lines; a folder recreated meanwhile has a new UIDVALIDITY. STATUS tells.
        """
        untagged = client._imap.untagged_responses
        announced = untagged.pop("UIDVALIDITY", None)
        complaints = untagged.pop("NO", None)
        if not (announced or complaints or self._suspect):
            return
        self._suspect = False
        status = client.folder_status(self.config.folder, [b"UIDVALIDITY"])
        if int(status[b"UIDVALIDITY"]) != self._uidvalidity:
            raise ConnectionDropped("the folder was recreated (UIDVALIDITY changed)")

    def _mark_processed(self, uids: list[int]) -> None:
        if not uids:
            return
        client = self._require()
        if self.config.after == "flag":
            client.add_flags(uids, [self.config.flag.encode()])
        elif self.config.after == "move" and self.config.move_to:
            client.move(uids, self.config.move_to)

    def _idle_wait(self, limit: float) -> None:
        """Block until the server reports a change, `limit` passes, or stop() is called."""
        client = self._require()
        # New mail announced while (or after) the last SEARCH ran: look again at once.
        if _forget_announcements(client):
            return
        client.idle()
        # Announced between the last command and "+ idling": imaplib filed it away.
        if _forget_announcements(client):
            client.idle_done()
            return
        deadline = time.monotonic() + limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            responses = client.idle_check(timeout=IDLE_SLICE)
            self._suspect = self._suspect or any(r[0] in (b"NO", b"BYE") for r in responses)
            if any(_is_change(r) for r in responses):
                break
            if not responses and time.monotonic() - started < IDLE_SLICE / 2:
                # imapclient returns [] at once when the server closed the socket.
                raise ConnectionDropped("server closed the connection during IDLE")
        client.idle_done()

    def _require(self) -> IMAPClient:
        if self._client is None:
            raise ConnectionDropped("not connected")
        return self._client

    def _logout(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.logout()
            _close_quietly(client)

    def stop(self) -> None:
        """Ask a running IDLE wait to return soon (called from the event loop)."""
        self._stop.set()


def endpoint_of(cfg: MailboxConfig) -> Endpoint:
    return Endpoint(what=f"mailbox {cfg.name!r}", table=f"[[mailbox]] {cfg.name!r}",
                    host=cfg.host, port=cfg.port, tls=cfg.tls, timeout=cfg.timeout,
                    username=cfg.username, ca_file=cfg.ca_file, folder=cfg.folder,
                    oauth=cfg.oauth.provider if cfg.oauth else None)


def open_client(cfg: MailboxConfig) -> IMAPClient:
    """Connected, with TLS as configured, not logged in. STARTTLS is required when
    configured: a server that does not offer it is an error, never a plain-text login."""
    context = client_context(TlsSettings(cfg.ca_file, cfg.tls_verify)) \
        if cfg.tls != "none" else None
    client = IMAPClient(cfg.host, port=cfg.port, ssl=cfg.tls == "implicit",
                        ssl_context=context,
                        timeout=SocketTimeout(connect=min(cfg.timeout, 30.0), read=cfg.timeout))
    try:
        if cfg.tls == "starttls":
            # imaplib would raise too, but with a message that reads like a bug.
            if not client.has_capability("STARTTLS"):
                raise StartTlsMissing(f"{cfg.host}:{cfg.port} does not offer STARTTLS")
            client.starttls(context)
    except BaseException:
        _close_quietly(client)
        raise
    return client


def login(client: IMAPClient, cfg: MailboxConfig) -> None:
    """Log in with the configured password, or an OAuth2 token (XOAUTH2/OAUTHBEARER)."""
    if cfg.oauth is not None:
        from mailgate.connect.oauth import sasl
        from mailgate.connect.oauth.sources import source_for

        source = source_for(cfg.oauth, cfg.username)
        sasl.imap_login(client, cfg.oauth_mechanism, cfg.username, source, cfg.host, cfg.port)
        return
    assert cfg.password is not None  # load_config requires one without oauth
    client.login(cfg.username, cfg.password.reveal())


def select(client: IMAPClient, folder: str, readonly: bool) -> dict:
    """SELECT folder; a refusal is FolderMissing (in words), not a bare NO."""
    try:
        return client.select_folder(folder, readonly=readonly)
    except IMAPClientError as exc:
        if isinstance(exc, imaplib.IMAP4.abort):  # the connection broke: not the folder
            raise
        raise FolderMissing(folder, diagnose.server_text(exc)) from None


def by_size(uids: list[int], sizes: dict[int, int], limit: int) -> list[list[int]]:
    """Consecutive groups of `uids` of at most `limit` bytes together; a message larger
    than `limit` is a group of its own. In order: the position moves forward per group."""
    groups: list[list[int]] = []
    total = limit + 1  # start a new group with the first message
    for uid in uids:
        size = sizes.get(uid, 0)
        if total + size > limit:
            groups.append([])
            total = 0
        groups[-1].append(uid)
        total += size
    return groups


def _forget_announcements(client: IMAPClient) -> bool:
    """Drop the EXISTS/RECENT lines imaplib collected; True if there were any.

    imaplib keeps untagged responses in a dict that idle_check never reads, so an
    announcement that arrives with another command's reply would otherwise go unnoticed.
    """
    untagged = client._imap.untagged_responses
    found = [untagged.pop(name, None) for name in ("EXISTS", "RECENT")]
    return any(found)


def _forget(ahead: asyncio.Future | None) -> None:
    """A fetch started ahead that nobody will read: stop waiting for it, and take its
    failure (the round's own error is what counts) so asyncio does not report it."""
    if ahead is None:
        return
    if not ahead.done():
        ahead.cancel()
    elif not ahead.cancelled():
        ahead.exception()


def _is_change(response: tuple) -> bool:
    return len(response) >= 2 and response[1] in (b"EXISTS", b"RECENT")


def _close_quietly(client: IMAPClient) -> None:
    with contextlib.suppress(Exception):
        client.shutdown()
