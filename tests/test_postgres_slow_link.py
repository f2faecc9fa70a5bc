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
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from mailgate.storage.postgres.engine import PgConnection
from tests.postgres import PostgresServer


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                pause: float) -> None:
    try:
        while chunk := await reader.read(32 * 1024):
            writer.write(chunk)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def slow_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A URL of a fresh database reached through a proxy that forwards what the client
    writes at ~6 MB/s, through a small receive buffer; the server's answers go at once."""
    url = urlsplit(postgres_server.create_database())
    pumps: list[asyncio.Task] = []

    async def forward(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(url.hostname, url.port)
        pumps.append(asyncio.create_task(_pump(client_r, server_w, 0.005)))
        pumps.append(asyncio.create_task(_pump(server_r, client_w, 0)))

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    listener.bind(("127.0.0.1", 0))
    proxy = await asyncio.start_server(forward, sock=listener)
    netloc = f"{url.username}@127.0.0.1:{listener.getsockname()[1]}"
    yield urlunsplit(url._replace(netloc=netloc))
    proxy.close()
    for pump in pumps:
        pump.cancel()
    await asyncio.gather(*pumps, return_exceptions=True)


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
