"""Outstanding requests per proxy: on real loopback sockets under asyncio and uvloop, and
through the upstream dial with fake transports.

    client (asyncio streams) ──> Proxy "dep" (in this loop) ──> Upstream (holds its answers)

The proxy runs in the test's own event loop, so its count and the exposition are read
directly; every wait is a bounded loop on a condition, never a timed window.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvloop
from prometheus_client.parser import text_string_to_metric_families

from spikegate.chaos.server import metrics
from spikegate.chaos.server.connection import Connection
from spikegate.chaos.server.link import Counters
from spikegate.chaos.server.outstanding import Outstanding
from spikegate.chaos.server.proxy import Proxy, ProxyCollection
from spikegate.chaos.server.schema import ProxySpec, ToxicWrapper
from spikegate.chaos.server.toxics import LatencyToxic

pytestmark = [pytest.mark.timeout(30)]

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def run(loop: str, scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(20):
            await scenario()

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(bounded())


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for `condition` (bounded: a hang fails with `what`, never passes)."""
    for _ in range(4000):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError(f"never happened: {what}")


class Upstream:
    """A line server: answers b"pong\\n" per line, once `release` is set (or at once)."""

    def __init__(self, *, hold: bool = True, greeting: bytes = b"", split: bool = False) -> None:
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.greeting = greeting
        self.split = split
        self.arrived = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            if self.greeting:
                writer.write(self.greeting)
            while await reader.readline():
                self.arrived += 1
                await self.release.wait()
                if self.split:  # one answer in two writes: only the first ends the request
                    writer.write(b"po")
                    await writer.drain()
                    await asyncio.sleep(0)
                writer.write(b"ng\n" if self.split else b"pong\n")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()


async def proxied(upstream: Upstream) -> tuple[ProxyCollection, Proxy]:
    proxies = ProxyCollection(random.Random(1), dial_timeout_s=5.0)
    proxy = await proxies.add(ProxySpec("dep", "127.0.0.1:0", await upstream.start()))
    return proxies, proxy


_clients: list[asyncio.StreamWriter] = []  # closed after each scenario, whatever happened


async def connect(proxy: Proxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = proxy.listen.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    _clients.append(writer)
    return reader, writer


def reset_on_close(writer: asyncio.StreamWriter) -> None:
    """Make the next close an RST (SO_LINGER 0): the proxy learns at once that it is gone."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def exported(proxy: Proxy) -> tuple[float, dict[int, float]]:
    """(gauge, reached counts by level) for `proxy`, parsed from the /metrics text."""
    gauge = -1.0
    reached: dict[int, float] = {}
    text = metrics.render([proxy]).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("proxy") != proxy.name:
                continue
            if sample.name == "spikegate_proxy_outstanding":
                gauge = sample.value
            elif sample.name == "spikegate_proxy_outstanding_reached_total":
                reached[int(sample.labels["level"])] = sample.value
    return gauge, reached


def with_proxy(
    upstream: Upstream, body: Callable[[Proxy], Awaitable[None]]
) -> Callable[[], Coroutine[Any, Any, None]]:
    async def scenario() -> None:
        proxies, proxy = await proxied(upstream)
        try:
            await body(proxy)
        finally:
            proxies.close()
            upstream.close()
            while _clients:
                _clients.pop().close()
            for _ in range(20):  # let the transports finish closing before the loop ends
                await asyncio.sleep(0)

    return scenario


def test_levels_count_every_rise_to_each_level_and_nothing_else() -> None:
    counts = Outstanding()
    for step in (+1, +1, -1, +1, +1, -1, -1, -1):
        counts.rise() if step > 0 else counts.fall()
    assert counts.count == 0
    assert counts.levels() == [(1, 1), (2, 2), (3, 1)]


@pytest.mark.parametrize("loop", LOOPS)
def test_held_requests_count_one_per_connection_and_answers_bring_it_to_zero(loop: str) -> None:
    upstream, n = Upstream(), 5

    async def body(proxy: Proxy) -> None:
        assert exported(proxy) == (0.0, {})
        clients = [await connect(proxy) for _ in range(n)]
        for _, writer in clients:
            writer.write(b"ping\n")
        await until(lambda: upstream.arrived == n, "every request reached the upstream")
        assert exported(proxy) == (n, {level: 1 for level in range(1, n + 1)})

        upstream.release.set()
        for reader, _ in clients:
            assert await reader.readline() == b"pong\n"
        # the answer was written back before the client could read it: already zero
        assert exported(proxy) == (0, {level: 1 for level in range(1, n + 1)})

        for _, writer in clients:  # a second round reaches every level once more
            writer.write(b"ping\n")
        for reader, _ in clients:
            assert await reader.readline() == b"pong\n"
        assert exported(proxy) == (0, {level: 2 for level in range(1, n + 1)})
        for _, writer in clients:
            writer.close()

    run(loop, with_proxy(upstream, body))


@pytest.mark.parametrize("loop", LOOPS)
def test_an_answer_held_by_a_downstream_latency_toxic_stays_outstanding_until_written(
    loop: str,
) -> None:
    upstream = Upstream(hold=False)

    async def body(proxy: Proxy) -> None:
        toxic = ToxicWrapper("slow", "latency", "downstream", 1.0, LatencyToxic(latency=600_000))
        proxy.add_toxic(toxic)
        reader, writer = await connect(proxy)
        writer.write(b"ping\n")
        down = proxy.counters["downstream"]
        await until(lambda: down.received == 5, "the answer reached the proxy")
        assert down.sent == 0 and proxy.outstanding.count == 1  # held inside the proxy
        proxy.remove_toxic(toxic)  # releases the held chunk at once
        assert await reader.readline() == b"pong\n"
        assert exported(proxy) == (0, {1: 1})

        writer.write(b"ping\n")  # and again on the fast path, once the pump handed back
        assert await reader.readline() == b"pong\n"
        assert exported(proxy) == (0, {1: 2})
        writer.close()

    run(loop, with_proxy(upstream, body))


@pytest.mark.parametrize("loop", LOOPS)
def test_a_toxic_added_while_a_request_is_outstanding_still_ends_it_on_the_written_answer(
    loop: str,
) -> None:
    upstream = Upstream()

    async def body(proxy: Proxy) -> None:
        reader, writer = await connect(proxy)
        writer.write(b"ping\n")
        await until(lambda: upstream.arrived == 1, "the request reached the upstream")
        toxic = ToxicWrapper("slow", "latency", "downstream", 1.0, LatencyToxic(latency=600_000))
        proxy.add_toxic(toxic)
        upstream.release.set()
        down = proxy.counters["downstream"]
        await until(lambda: down.received == 5, "the answer reached the proxy")
        assert proxy.outstanding.count == 1
        proxy.remove_toxic(toxic)
        assert await reader.readline() == b"pong\n"
        assert proxy.outstanding.count == 0
        writer.close()

    run(loop, with_proxy(upstream, body))


@pytest.mark.parametrize("loop", LOOPS)
def test_closing_a_connection_clears_its_outstanding_request(loop: str) -> None:
    upstream = Upstream()

    async def body(proxy: Proxy) -> None:
        _, kept = await connect(proxy)
        _, aborted = await connect(proxy)
        kept.write(b"ping\n")
        aborted.write(b"ping\n")
        await until(lambda: upstream.arrived == 2, "both requests reached the upstream")
        assert proxy.outstanding.count == 2
        reset_on_close(aborted)  # the client goes away (RST): the proxy closes the connection
        aborted.transport.abort()
        await until(lambda: proxy.outstanding.count == 1, "the aborted connection cleared")
        assert len(proxy.connections) == 1
        proxy.drop_connections()
        assert exported(proxy) == (0, {1: 1, 2: 1})
        kept.close()

    run(loop, with_proxy(upstream, body))


@pytest.mark.parametrize("loop", LOOPS)
def test_a_half_closed_client_still_waits_until_the_upstream_ends_without_answer(
    loop: str,
) -> None:
    upstream = Upstream()

    async def body(proxy: Proxy) -> None:
        reader, writer = await connect(proxy)
        writer.write(b"ping\n")
        writer.write_eof()  # EOF is a half-close: the client still reads
        await until(lambda: upstream.arrived == 1, "the request reached the upstream")
        assert proxy.outstanding.count == 1
        for up in upstream.writers:
            up.close()  # no answer, only EOF back: the connection ends
        assert await reader.read() == b""
        await until(lambda: not proxy.connections, "the connection closed")
        assert proxy.outstanding.count == 0
        writer.close()

    run(loop, with_proxy(upstream, body))


@pytest.mark.parametrize("loop", LOOPS)
def test_unasked_bytes_and_answers_in_several_writes_never_take_it_below_zero(
    loop: str,
) -> None:
    upstream = Upstream(hold=False, greeting=b"hello\n", split=True)

    async def body(proxy: Proxy) -> None:
        reader, writer = await connect(proxy)
        assert await reader.readline() == b"hello\n"  # nobody asked: nothing to end
        assert proxy.outstanding.count == 0
        for _ in range(3):
            writer.write(b"ping\n")
            assert await reader.readline() == b"pong\n"
            assert proxy.outstanding.count == 0
        assert exported(proxy) == (0, {1: 3})
        writer.close()

    run(loop, with_proxy(upstream, body))


@pytest.mark.parametrize("loop", LOOPS)
def test_disabling_the_proxy_clears_every_outstanding_request(loop: str) -> None:
    upstream = Upstream()

    async def body(proxy: Proxy) -> None:
        clients = [await connect(proxy) for _ in range(3)]
        for _, writer in clients:
            writer.write(b"ping\n")
        await until(lambda: upstream.arrived == 3, "every request reached the upstream")
        assert proxy.outstanding.count == 3
        proxy.stop()
        assert exported(proxy) == (0, {1: 1, 2: 1, 3: 1})
        for _, writer in clients:
            writer.close()

    run(loop, with_proxy(upstream, body))


# --- the dial: reads held before the upstream answers (fake transports, no sockets) ----------
class FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class FakeOwner:
    name = "dep"
    upstream = "127.0.0.1:9"
    dial_timeout_s = 5.0

    def __init__(self) -> None:
        self.rng = random.Random(1)
        self.counters = {"upstream": Counters(), "downstream": Counters()}
        self.outstanding = Outstanding()

    def chain(self, stream: str) -> tuple[ToxicWrapper, ...]:
        return ()

    def adopt(self, conn: Connection) -> None:
        pass

    def forget(self, conn: Connection) -> None:
        pass


@pytest.mark.parametrize("dial_fails", [False, True], ids=["dialled", "dial failed"])
async def test_reads_held_during_the_dial_start_one_request_ended_by_the_written_answer(
    monkeypatch: pytest.MonkeyPatch, dial_fails: bool
) -> None:
    loop = asyncio.get_running_loop()
    dial_done = asyncio.Event()
    upstream = FakeTransport()
    upstream_side: list[Any] = []

    async def create_connection(factory: Any, host: str, port: int) -> tuple[Any, Any]:
        await dial_done.wait()
        if dial_fails:
            raise ConnectionRefusedError(111, "Connection refused")
        protocol = factory()
        protocol.connection_made(upstream)
        upstream_side.append(protocol)
        return upstream, protocol

    monkeypatch.setattr(loop, "create_connection", create_connection)
    owner = FakeOwner()
    client = Connection.protocol_factory(owner, owner.outstanding)  # type: ignore[arg-type]
    client_transport = FakeTransport()
    client.connection_made(client_transport)  # type: ignore[arg-type]
    client.data_received(b"pi")
    client.data_received(b"ng\n")
    assert owner.outstanding.count == 1  # read (and held) while the dial is pending
    dial_done.set()
    for _ in range(20):
        await asyncio.sleep(0)
    if dial_fails:
        assert owner.outstanding.count == 0 and client_transport.closing
    else:
        assert upstream.written == b"ping\n" and owner.outstanding.count == 1  # replayed once
        upstream_side[0].data_received(b"pong\n")
        assert client_transport.written == b"pong\n" and owner.outstanding.count == 0
    assert owner.outstanding.levels() == [(1, 1)]
