"""One accepted client and its dialled upstream: two sockets, two links.

    client ──> [_Side client] ── upstream link ───> [_Side upstream] ──> upstream server
    client <── [_Side client] <─ downstream link ── [_Side upstream] <── upstream server

The upstream is dialled per client, concurrently, with a timeout; until it answers the client
socket is not read. A failed dial closes the client (it reads EOF). EOF is forwarded as a
half-close; the connection closes when both directions ended, when either socket fails, or
when a toxic or the API closes it.

A connection is *outstanding* (counted in the proxy's ``Outstanding``, see outstanding.py)
from a read on the client socket while it is not, until the downstream link writes the first
bytes back to the client socket or the connection closes. The client side checks one flag per
read; the answer is caught by arming the downstream link's next write, not by a check per
upstream read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
from collections.abc import Callable
from typing import Protocol, cast

from .link import Counters, Link
from .outstanding import Outstanding
from .schema import ToxicWrapper

log = logging.getLogger("chaos.server")

CLOSE_GRACE_S = 5.0  # a peer that never reads cannot keep a closed connection's buffer alive
_WRITE_HIGH = 1024 * 1024


class Owner(Protocol):
    """What a connection needs from its proxy."""

    name: str
    upstream: str
    rng: random.Random
    dial_timeout_s: float
    counters: dict[str, Counters]

    def chain(self, stream: str) -> tuple[ToxicWrapper, ...]: ...

    def adopt(self, conn: Connection) -> None: ...

    def forget(self, conn: Connection) -> None: ...


class _Side(asyncio.Protocol):
    """One socket of a connection; forwards its events to the links.

    Until the upstream dial completes, reads are held (``forward`` is ``_hold``, counted
    nowhere); the link then installs its fast or slow path as ``forward``, the held reads are
    replayed through it and counted as they pass.
    """

    __slots__ = (
        "conn", "counters", "early", "early_eof", "forward", "into", "lost", "out", "role",
        "transport",
    )  # fmt: skip

    def __init__(self, conn: Connection, role: str) -> None:
        self.conn = conn
        self.role = role
        self.transport: asyncio.Transport | None = None
        self.forward: Callable[[bytes], None] = self._hold
        self.counters = Counters()  # a throwaway until the link exists: held reads count later
        self.out: Link | None = None  # the link this socket feeds
        self.into: Link | None = None  # the link writing to this socket
        self.lost = False
        self.early: list[bytes] = []  # read before the links existed
        self.early_eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement it
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=_WRITE_HIGH)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        # The hot path: no branch; ``forward`` is the destination's write on the fast path.
        self.forward(data)
        self.counters.received += len(data)

    def _hold(self, data: bytes) -> None:
        # uvloop starts reading right after connection_made: keep it for the link
        self.early.append(data)
        if self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        if self.out is not None:
            self.out.feed_eof()
        else:
            self.early_eof = True
        return True  # keep the socket open for the other direction (half-close)

    def pause_writing(self) -> None:
        if self.into is not None:
            self.into.set_dest_blocked(True)

    def resume_writing(self) -> None:
        if self.into is not None:
            self.into.set_dest_blocked(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.conn.close()


class _ClientSide(_Side):
    """The client's socket: a read while no request is outstanding starts one."""

    __slots__ = ("waiting",)

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn, "client")
        self.waiting = False  # a request is outstanding: the client waits for an answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.conn.accepted(self)

    def data_received(self, data: bytes) -> None:
        if not self.waiting:
            self.conn.request_started()
        self.forward(data)
        self.counters.received += len(data)


class Connection:
    def __init__(self, owner: Owner, outstanding: Outstanding | None = None) -> None:
        self.owner = owner
        # the proxy's count of outstanding requests; without one, a count of its own
        self.outstanding = Outstanding() if outstanding is None else outstanding
        self.client: _ClientSide | None = None
        self.upstream: _Side | None = None
        self.links: dict[str, Link] = {}
        self._down: Link | None = None  # the link writing answers to the client
        self._ended = self._request_ended  # bound once: armed once per request
        self.closed = False
        self._dial: asyncio.Task[None] | None = None

    @classmethod
    def protocol_factory(cls, owner: Owner, outstanding: Outstanding | None = None) -> _Side:
        return _ClientSide(cls(owner, outstanding))

    def accepted(self, side: _ClientSide) -> None:
        self.client = side
        self.owner.adopt(self)
        self._dial = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        host, _, port = self.owner.upstream.rpartition(":")
        host = host.strip("[]")
        loop = asyncio.get_running_loop()
        try:
            transport, side = await asyncio.wait_for(
                loop.create_connection(lambda: _Side(self, "upstream"), host, int(port)),
                self.owner.dial_timeout_s,
            )
        except (OSError, TimeoutError, ValueError) as exc:
            log.warning("proxy %s: dial %s failed: %s", self.owner.name, self.owner.upstream, exc)
            self.close()
            return
        self.upstream = side
        if self.closed:
            transport.close()
            return
        client = self.client
        assert client is not None and client.transport is not None
        assert side.transport is not None
        owner = self.owner
        up = Link(
            self, client, client.transport, side.transport, owner.counters["upstream"],
            owner.rng, owner.chain("upstream"),
        )  # fmt: skip
        down = Link(
            self, side, side.transport, client.transport, owner.counters["downstream"],
            owner.rng, owner.chain("downstream"),
        )  # fmt: skip
        self.links = {"upstream": up, "downstream": down}
        self._down = down
        if client.waiting:  # held reads started a request: catch the answer's first write
            down.notify_next_write(self._ended)
        for sock_side, out, into in ((client, up, down), (side, down, up)):
            sock_side.out, sock_side.into = out, into
            sock_side.counters = out.counters
            for data in sock_side.early:
                sock_side.data_received(data)
            if sock_side.early_eof:
                out.feed_eof()
            if sock_side.early and not self.closed and sock_side.transport is not None:
                sock_side.transport.resume_reading()
            sock_side.early = []

    def rechain(
        self,
        stream: str,
        removed: ToxicWrapper | None = None,
        updated: ToxicWrapper | None = None,
        reroll: bool = False,
    ) -> None:
        link = self.links.get(stream)
        if link is not None:
            link.rechain(self.owner.chain(stream), removed, updated, reroll)

    def request_started(self) -> None:
        """The client sent bytes while nothing was outstanding: it now waits for an answer."""
        client = self.client
        if self.closed or client is None:
            return
        client.waiting = True
        self.outstanding.rise()
        if self._down is not None:
            self._down.notify_next_write(self._ended)

    def _request_ended(self) -> None:
        """The first bytes of an answer were written to the client socket, or it closed."""
        client = self.client
        if client is not None and client.waiting:
            client.waiting = False
            self.outstanding.fall()

    def link_finished(self) -> None:
        if self.links and all(link.finished for link in self.links.values()):
            self.close()

    def close(self, reset: bool = False) -> None:
        """Close both sockets (flushing what was written), or reset them (RST, no flush)."""
        if self.closed:
            return
        self.closed = True
        self._request_ended()  # a closed connection has nothing outstanding
        for link in self.links.values():
            link.shutdown()
        loop = asyncio.get_running_loop()
        for side in (self.client, self.upstream):
            if side is None or side.transport is None or side.lost:
                continue
            if reset:
                _reset(side.transport)
            else:
                side.transport.close()
                loop.call_later(CLOSE_GRACE_S, _abort_if_open, side)
        self.owner.forget(self)


def _reset(transport: asyncio.Transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _abort_if_open(side: _Side) -> None:
    if not side.lost and side.transport is not None:
        side.transport.abort()
