"""PostgreSQL behind a slow link: a pipelined statement larger than the socket's buffers
(a big attachment is a bytea row) must reach the server whole before anyone waits for its
answer. psycopg's pipeline can stop writing with bytes still in libpq's buffer and then wait
for a reply the server cannot send (psycopg issue #685 was the exit's case; a sync's is
the same). On a fast loopback this happened rarely (it hung a CI run once); here a proxy
that forwards the client's bytes slowly makes it happen every time."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from mailgate.storage.postgres.engine import PgConnection
from mailgate.storage.postgres.link import LINK_DEFAULTS
from tests.postgres import PostgresServer


class Proxy:
    """A loopback TCP proxy in front of the test's PostgreSQL. The client's bytes go on after
    `pause` seconds per 32 KB, through a small receive buffer; the server's go at once.
    silence() makes the connections open now stop reading and forwarding, without closing:
    a server whose host lost power, from which nothing comes back, not even a reset."""

    def __init__(self, host: str, port: int, pause: float) -> None:
        self.host, self.port, self.pause = host, port, pause
        self.pumps: list[asyncio.Task] = []
        self.open: list[asyncio.StreamReader] = []
        self.silenced: set[asyncio.StreamReader] = set()

    async def start(self) -> int:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        listener.bind(("127.0.0.1", 0))
        self.server = await asyncio.start_server(self._forward, sock=listener)
        return int(listener.getsockname()[1])

    def silence(self) -> None:
        self.silenced.update(self.open)

    async def _forward(self, client_r: asyncio.StreamReader,
                       client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(self.host, self.port)
        self.open += [client_r, server_r]
        self.pumps.append(asyncio.create_task(self._pump(client_r, server_w, self.pause)))
        self.pumps.append(asyncio.create_task(self._pump(server_r, client_w, 0)))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    pause: float) -> None:
        try:
            while chunk := await reader.read(32 * 1024):
                if reader in self.silenced:
                    await asyncio.Event().wait()  # read no more, close nothing
                writer.write(chunk)
                await writer.drain()
                if pause:
                    await asyncio.sleep(pause)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        self.server.close()
        for pump in self.pumps:
            pump.cancel()
        await asyncio.gather(*self.pumps, return_exceptions=True)


async def _proxied(postgres_server: PostgresServer, pause: float,
                   ) -> AsyncIterator[tuple[str, Proxy]]:
    url = urlsplit(postgres_server.create_database())
    proxy = Proxy(str(url.hostname), int(url.port or 5432), pause)
    port = await proxy.start()
    yield urlunsplit(url._replace(netloc=f"{url.username}@127.0.0.1:{port}")), proxy
    await proxy.stop()


@pytest.fixture
async def slow_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh database's URL, through a proxy that forwards the client's bytes at about
    6 MB/s."""
    async for url, _proxy in _proxied(postgres_server, 0.005):
        yield url


@pytest.fixture
async def proxied(postgres_server: PostgresServer) -> AsyncIterator[tuple[str, Proxy]]:
    async for pair in _proxied(postgres_server, 0):
        yield pair


async def test_a_pipelined_statement_larger_than_the_link_buffers_is_answered(
        slow_url: str) -> None:
    conn = PgConnection(slow_url, None)
    await conn.connect()
    try:
        await conn.execute_fetchall("CREATE TABLE files (data bytea)")
        data = os.urandom(8 * 1024 * 1024)
        # asyncio.timeout, not wait_for: the pipeline is this task's own (PgConnection).
        async with asyncio.timeout(30), conn.pipeline():
            await conn.send("INSERT INTO files VALUES (?)", (data,))
            # Its rows are wanted: a sync, then a wait for the answers.
            assert await conn.execute_fetchall("SELECT length(data) FROM files") == [
                (len(data),)]
            await conn.send("INSERT INTO files VALUES (?)", (data,))
        # The pipeline's end waited for the second one.
        assert await conn.execute_fetchall("SELECT count(*) FROM files") == [(2,)]
    finally:
        await conn.close()


async def test_a_connection_is_asked_to_notice_a_silent_server_unless_the_url_says(
        proxied: tuple[str, Proxy]) -> None:
    url, _proxy = proxied
    conn = PgConnection(url + "?keepalives_idle=7", None)
    await conn.connect()
    try:
        assert conn.raw is not None
        used = {o.keyword.decode(): (o.val or b"").decode() for o in conn.raw.pgconn.info}
    finally:
        await conn.close()
    assert used["keepalives_idle"] == "7"  # the URL's
    for name in ("keepalives_interval", "keepalives_count", "tcp_user_timeout",
                 "connect_timeout"):
        assert used[name] == LINK_DEFAULTS[name], name


async def test_a_statement_to_a_server_gone_silent_fails_instead_of_waiting_for_ever(
        proxied: tuple[str, Proxy], monkeypatch: pytest.MonkeyPatch) -> None:
    """The host lost power mid-statement: no answer, no reset. The statement fails as a
    lost connection (which callers retry on a new one) once the server has taken none of
    the data for tcp_user_timeout -- shortened here from its minute."""
    monkeypatch.setitem(LINK_DEFAULTS, "tcp_user_timeout", "1500")
    url, proxy = proxied
    conn = PgConnection(url, None)
    await conn.connect()
    try:
        await conn.execute_fetchall("CREATE TABLE files (data bytea)")
        proxy.silence()
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            async with asyncio.timeout(60):
                await conn.execute_fetchall("INSERT INTO files VALUES (?)",
                                            (os.urandom(16 * 1024 * 1024),))
        assert time.monotonic() - started < 30
        assert conn.lost
        await conn.reconnect_if_lost()  # a new connection, through the proxy, works
        assert await conn.execute_fetchall("SELECT count(*) FROM files") == [(0,)]
    finally:
        await conn.close()


def test_pgconnect_timeout_in_the_environment_is_the_admins_choice(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mailgate.storage.postgres.link import link_options

    url = "postgresql://mailgate@db.example.com/mailgate?keepalives_count=9"
    assert link_options(url) == {k: v for k, v in LINK_DEFAULTS.items()
                                 if k != "keepalives_count"}
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "3")
    assert "connect_timeout" not in link_options(url)
