"""The data path's fast/slow switching and byte accounting, on fake transports (no sockets).

A link installs the destination's ``write`` as its source's ``forward`` while no toxic is
active, and ``Link.feed`` while one is; these tests drive both switches with chunks in flight
and check that nothing is lost, reordered or miscounted.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from spikegate.chaos.server.connection import Connection, _Side
from spikegate.chaos.server.link import Counters, Link
from spikegate.chaos.server.schema import ToxicWrapper
from spikegate.chaos.server.toxics import LimitDataToxic, NoopToxic

pytestmark = [pytest.mark.timeout(10)]


class FakeTransport:
    """Records what the link writes and how it steers reading."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.eof = False
        self.paused = False
        self.closing = False
        self.pauses = 0

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def data(self) -> bytes:
        return b"".join(self.written)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        self.paused = False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


class FakeConn:
    def __init__(self) -> None:
        self.closed: list[bool] = []
        self.finished = 0

    def close(self, reset: bool = False) -> None:
        self.closed.append(reset)

    def link_finished(self) -> None:
        self.finished += 1


def wrapper(toxic: Any, name: str = "t", stream: str = "upstream") -> ToxicWrapper:
    return ToxicWrapper(name=name, type="noop", stream=stream, toxicity=1.0, toxic=toxic)


def make_link(
    *chain: ToxicWrapper, counters: Counters | None = None
) -> tuple[_Side, Link, FakeTransport, Counters]:
    """A source side wired to a link as Connection wires it; reads go through the side."""
    conn = FakeConn()
    side = _Side(conn, "upstream")  # type: ignore[arg-type]
    source, dest = FakeTransport(), FakeTransport()
    side.connection_made(source)  # type: ignore[arg-type]
    counters = Counters() if counters is None else counters
    link = Link(conn, side, source, dest, counters, random.Random(1), tuple(chain))  # type: ignore[arg-type]
    side.counters = counters
    side.out = link
    return side, link, dest, counters


async def settle() -> None:
    """Let the pump run until it has nothing left to do (no real sleeping)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_without_toxics_reads_go_straight_to_the_destination_and_are_counted():
    side, link, dest, counters = make_link()
    assert link.direct and side.forward == dest.write
    side.data_received(b"abc")
    side.data_received(b"de")
    assert dest.written == [b"abc", b"de"]  # synchronously: no task switch on the fast path
    assert (counters.received, counters.sent) == (5, 5)


async def test_adding_then_removing_a_toxic_mid_stream_loses_and_reorders_nothing():
    side, link, dest, counters = make_link()
    noop = wrapper(NoopToxic())
    expected = bytearray()
    for i in range(5):
        expected += b"%03d" % i
        side.data_received(b"%03d" % i)
    link.rechain((noop,))
    assert not link.direct and side.forward == link.feed
    for i in range(5, 10):  # queued: the pump has not run yet
        expected += b"%03d" % i
        side.data_received(b"%03d" % i)
    link.rechain((), removed=noop)
    for i in range(10, 15):  # still queued behind the backlog, never written past it
        expected += b"%03d" % i
        side.data_received(b"%03d" % i)
    assert dest.data() == expected[:15]
    await settle()
    assert link.direct and side.forward == dest.write  # back on the fast path once drained
    for i in range(15, 20):
        expected += b"%03d" % i
        side.data_received(b"%03d" % i)
    assert dest.data() == expected
    assert (counters.received, counters.sent) == (60, 60)


async def test_bytes_a_toxic_drops_count_as_received_but_not_sent():
    side, link, dest, counters = make_link(wrapper(LimitDataToxic(bytes=100)))
    side.data_received(b"x" * 150)
    await settle()
    assert dest.data() == b"x" * 100
    assert (counters.received, counters.sent) == (150, 100)
    assert link.conn.closed == [False]  # type: ignore[attr-defined]  # closed, not reset


async def test_a_read_after_the_link_shut_down_is_counted_received_and_never_written():
    side, link, dest, counters = make_link()
    side.data_received(b"ab")
    link.shutdown()
    side.data_received(b"late")
    assert dest.written == [b"ab"]
    assert (counters.received, counters.sent) == (6, 2)


async def test_counters_of_several_links_add_up_across_fast_and_slow_paths():
    counters = Counters()  # one per proxy and direction, shared by its connections
    fast_side, _, fast_dest, _ = make_link(counters=counters)
    slow_side, _, slow_dest, _ = make_link(wrapper(LimitDataToxic(bytes=1)), counters=counters)
    fast_side.data_received(b"1234")
    slow_side.data_received(b"56")
    await settle()
    assert fast_dest.data() == b"1234" and slow_dest.data() == b"5"
    assert (counters.received, counters.sent) == (6, 5)


# --- the connection: reads before the upstream dial completes ---------------------------------


class FakeOwner:
    name = "p"
    upstream = "127.0.0.1:9"
    dial_timeout_s = 5.0

    def __init__(self, upstream_chain: tuple[ToxicWrapper, ...] = ()) -> None:
        self.rng = random.Random(1)
        self.counters = {"upstream": Counters(), "downstream": Counters()}
        self.chains = {"upstream": upstream_chain, "downstream": ()}
        self.conns: set[Connection] = set()

    def chain(self, stream: str) -> tuple[ToxicWrapper, ...]:
        return self.chains[stream]

    def adopt(self, conn: Connection) -> None:
        self.conns.add(conn)

    def forget(self, conn: Connection) -> None:
        self.conns.discard(conn)


async def _accept_with_slow_dial(
    monkeypatch: pytest.MonkeyPatch, owner: FakeOwner
) -> tuple[_Side, FakeTransport, FakeTransport, asyncio.Event]:
    """A client side accepted by a connection whose dial waits for the returned event."""
    loop = asyncio.get_running_loop()
    dial_done = asyncio.Event()
    upstream = FakeTransport()

    async def create_connection(factory: Any, host: str, port: int) -> tuple[Any, Any]:
        await dial_done.wait()
        protocol = factory()
        protocol.connection_made(upstream)
        return upstream, protocol

    monkeypatch.setattr(loop, "create_connection", create_connection)
    client = Connection.protocol_factory(owner)  # type: ignore[arg-type]
    client_transport = FakeTransport()
    client.connection_made(client_transport)  # type: ignore[arg-type]
    return client, client_transport, upstream, dial_done


@pytest.mark.parametrize("with_toxic", [False, True], ids=["fast path", "through a toxic"])
async def test_reads_before_the_dial_are_held_then_replayed_in_order_and_counted_once(
    monkeypatch: pytest.MonkeyPatch, with_toxic: bool
):
    owner = FakeOwner((wrapper(NoopToxic()),) if with_toxic else ())
    client, client_transport, upstream, dial_done = await _accept_with_slow_dial(monkeypatch, owner)
    client.data_received(b"first ")
    client.data_received(b"second")
    assert client_transport.paused and upstream.written == []
    assert owner.counters["upstream"].received == 0  # not counted until they are replayed
    dial_done.set()
    await settle()
    assert upstream.data() == b"first second"
    assert not client_transport.paused
    client.data_received(b" third")
    await settle()
    assert upstream.data() == b"first second third"
    counters = owner.counters["upstream"]
    assert (counters.received, counters.sent) == (18, 18)
