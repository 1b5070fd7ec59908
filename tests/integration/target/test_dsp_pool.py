"""The fan-out's keep-alive pool against a tiny HTTP server on 127.0.0.1: the per-host limit
holds, connections are reused, a cancelled waiter gives its slot back, and a connection the
server closed while idle is replaced, not used."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from target.dsp_client import _HostPool

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

ANSWER = b"HTTP/1.1 204 No Content\r\n\r\n"


class Server:
    """Answers every request with a 204 after `delay_s`; counts connections."""

    def __init__(self) -> None:
        self.accepted = 0
        self.open = 0
        self.max_open = 0
        self.delay_s = 0.0
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                await asyncio.sleep(self.delay_s)
                writer.write(ANSWER)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[Server, str]]:
    srv = Server()
    server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield srv, f"http://127.0.0.1:{port}"
    finally:
        for w in srv.writers:
            w.close()
        server.close()
        await server.wait_closed()


async def _post(pool: _HostPool) -> int:
    conn = await pool.acquire()
    reuse = False
    try:
        status, _ = await conn.exchange(pool.head + b"2\r\n\r\n{}")
        reuse = conn.reusable
        return status
    finally:
        pool.release(conn, reuse=reuse)


async def test_per_host_limit_holds_and_connections_are_reused() -> None:
    async with serving() as (srv, url):
        srv.delay_s = 0.01
        pool = _HostPool(url, limit=2, keepalive_s=30)
        statuses = await asyncio.gather(*(_post(pool) for _ in range(10)))
        pool.close()
    assert statuses == [204] * 10
    assert srv.max_open <= 2
    assert srv.accepted == 2


async def test_cancelled_waiter_gives_its_slot_back() -> None:
    async with serving() as (srv, url):
        srv.delay_s = 0.2
        pool = _HostPool(url, limit=1, keepalive_s=30)
        holder = asyncio.create_task(_post(pool))
        await asyncio.sleep(0.05)
        waiter = asyncio.create_task(_post(pool))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        srv.delay_s = 0.0
        assert await holder == 204
        assert await asyncio.wait_for(_post(pool), 5) == 204
        pool.close()


async def test_connection_closed_by_the_server_while_idle_is_replaced() -> None:
    async with serving() as (srv, url):
        pool = _HostPool(url, limit=4, keepalive_s=30)
        assert await _post(pool) == 204
        for w in srv.writers:
            w.close()
        await asyncio.sleep(0.1)  # the FIN reaches the idle connection
        assert await _post(pool) == 204
        pool.close()
    assert srv.accepted == 2


async def test_idle_connection_past_keepalive_is_not_reused() -> None:
    async with serving() as (srv, url):
        pool = _HostPool(url, limit=4, keepalive_s=0.05)
        assert await _post(pool) == 204
        await asyncio.sleep(0.1)
        assert await _post(pool) == 204
        pool.close()
    assert srv.accepted == 2
