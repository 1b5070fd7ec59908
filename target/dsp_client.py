"""The DSP fan-out: every partner asked in parallel, each behind its own circuit breaker.

    fan_out(request, deadline)
      for each DSP: breaker.try_acquire() --open--> skipped at once (counts as no-bid)
                          | admitted
                          v
                    POST <dsp>/bid  (tmax = what is left)   -- all in parallel --
      wait until every call is done or the deadline passes; late calls are cancelled

Classification (PATTERNS.md section 4): 204, or 200 with an empty seatbid, is a success (a
no-bid is an answer); a timeout (no answer by the deadline), a reset or a 5xx/429 is a
failure; our own cancellation (the client went away) counts neither way (`on_ignore`).
A call is slow when it took at least `breaker.slow_call_duration_s`; a DSP that does not
answer within its share of the deadline is cancelled and counts as a failure.

The HTTP client is a small keep-alive HTTP/1.1 pool per DSP over asyncio protocols, with
httptools (uvicorn[standard]'s parser) reading the answers. Three calls per auction made
aiohttp's client the largest CPU cost of a /bid (~0.25 ms per call against ~0.05 ms here,
tests/bench/dsp_client.py); the fan-out needs one method, POST, and no client features.
A connection whose call was cancelled or failed is closed, never reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

from target.backpressure.breaker import CircuitBreaker, Permit
from target.backpressure.clock import NS_PER_S, Clock, monotonic_ns
from target.config import BreakerSection, DspClientConfig, DspConfig

# Outcome kinds of one call.
_SUCCESS, _FAILURE, _IGNORE = 0, 1, 2

_CallResult = tuple[int, "list[DspBid]", int]


@dataclass(frozen=True, slots=True)
class DspBid:
    """One usable bid: the DSP (seat), the bid object as received, its price."""

    dsp: str
    bid: dict[str, Any]
    price: float


@dataclass(slots=True)
class FanOutResult:
    bids: list[DspBid] = field(default_factory=list)
    asked: int = 0
    """DSPs actually called (breaker admitted)."""
    skipped_open: int = 0
    """DSPs skipped because their breaker was open."""
    failed: int = 0
    timed_out: int = 0

    @property
    def all_open(self) -> bool:
        """Every DSP was skipped by its breaker: the fallback answered, nobody was asked."""
        return self.asked == 0 and self.skipped_open > 0


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one request at a time, answered as (status, body)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._status = 0
        self._body: list[bytes] = []
        self._framed = False  # Content-Length or chunked: the body does not end at EOF
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0

    def exchange(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        """Send one request; the future resolves to (status, body) or fails on a reset."""
        if self._transport is None or self.closed or self._waiter is not None:
            raise ConnectionResetError("connection not usable")
        waiter = self._waiter = self._loop.create_future()
        self.reusable = False
        self._transport.write(data)
        return waiter

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ValueError(f"malformed HTTP response: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and self._status and not self._framed:
            self._resolve()  # a body delimited by the end of the connection
        else:
            self._fail(ConnectionResetError("the DSP closed the connection"))

    # -- httptools callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        self._status = 0
        self._body = []
        self._framed = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._framed = True
        self.reusable = self._parser.should_keep_alive()
        if self._waiter is None:  # an answer nobody asked for: the stream is out of step
            self.close()
            return
        self._resolve()

    def _resolve(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, b"".join(self._body)))

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


class _HostPool:
    """Keep-alive connections to one DSP: at most `limit` open, idle ones reused LIFO and
    dropped after `keepalive_s`; callers over the limit wait for a released connection."""

    def __init__(self, url: str, limit: int, keepalive_s: float) -> None:
        parts = urlsplit(url)
        if parts.hostname is None:
            raise ValueError(f"DSP url {url!r} has no host")
        https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if https else 80)
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if https else None
        path = parts.path.rstrip("/") + "/bid"
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode("latin-1")
        self._limit = limit
        self._keepalive_s = keepalive_s
        self._idle: list[_Connection] = []
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    async def acquire(self) -> _Connection:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed and now - conn.idle_since < self._keepalive_s:
                    return conn
                conn.close()
                self._open -= 1
            if self._open < self._limit:
                break
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.cancelled():
                    with contextlib.suppress(ValueError):  # _wake may have dropped it
                        self._waiters.remove(waiter)
                else:
                    self._wake()  # woken for a slot it no longer wants: pass the slot on
                raise
        self._open += 1
        try:
            _, conn = await loop.create_connection(
                lambda: _Connection(loop), self._host, self._port, ssl=self._ssl
            )
        except BaseException:
            self._open -= 1
            self._wake()
            raise
        return conn

    def release(self, conn: _Connection, *, reuse: bool) -> None:
        if reuse and not conn.closed and not self._closed:
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.append(conn)
        else:
            conn.close()
            self._open -= 1
        self._wake()

    def close(self) -> None:
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._open -= len(self._idle)
        self._idle.clear()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class _Dsp:
    __slots__ = ("breaker", "name", "pool", "url")

    def __init__(self, name: str, url: str, breaker: CircuitBreaker) -> None:
        self.name = name
        self.url = url  # base URL; bids go to <url>/bid
        self.breaker = breaker
        self.pool: _HostPool | None = None


class DspClient:
    """Owns one connection pool and one breaker per DSP."""

    def __init__(
        self,
        dsps: Sequence[DspConfig],
        breaker: BreakerSection,
        client: DspClientConfig | None = None,
        *,
        clock: Clock = monotonic_ns,
        rng: random.Random | None = None,
    ) -> None:
        self._client_config = client or DspClientConfig()
        self._clock = clock
        self._breakers_on = breaker.enabled
        cfg = breaker.to_breaker_config()
        rng = rng or random.Random(0)
        self._dsps: list[_Dsp] = []
        for d in dsps:
            b = CircuitBreaker(d.name, cfg, clock=clock, rng=random.Random(rng.random()))
            if not breaker.enabled:
                b.disable()
            self._dsps.append(_Dsp(d.name, d.url, b))

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        return {d.name: d.breaker for d in self._dsps}

    async def start(self) -> None:
        cfg = self._client_config
        for dsp in self._dsps:
            dsp.pool = _HostPool(dsp.url, cfg.pool_per_host, cfg.keepalive_s)

    async def close(self) -> None:
        for dsp in self._dsps:
            if dsp.pool is not None:
                dsp.pool.close()
                dsp.pool = None

    async def fan_out(self, request: dict[str, Any], deadline_ns: int) -> FanOutResult:
        """Ask every DSP whose breaker admits; return the bids that came back in time."""
        result = FanOutResult()
        started_ns = self._clock()
        remaining_ns = deadline_ns - started_ns
        if remaining_ns <= 0 or not self._dsps:
            return result
        body = json.dumps({**request, "tmax": max(1, remaining_ns // 1_000_000)}).encode()
        tail = b"%d\r\n\r\n%b" % (len(body), body)
        calls: dict[asyncio.Task[_CallResult], tuple[_Dsp, Permit | None]] = {}
        for dsp in self._dsps:
            permit: Permit | None = None
            if self._breakers_on:
                permit = dsp.breaker.try_acquire()
                if not permit.admitted:
                    result.skipped_open += 1
                    continue
            task = asyncio.create_task(self._call(dsp, tail))
            calls[task] = (dsp, permit)
        result.asked = len(calls)
        if not calls:
            return result
        try:
            done, pending = await asyncio.wait(calls, timeout=remaining_ns / NS_PER_S)
        except asyncio.CancelledError:
            # Our own cancellation (client gone, server stopping): nobody's fault.
            for task, (dsp, permit) in calls.items():
                task.cancel()
                if permit is not None:
                    dsp.breaker.on_ignore(permit)
            raise
        for task in pending:
            task.cancel()
            dsp, permit = calls[task]
            result.timed_out += 1
            if permit is not None:
                dsp.breaker.on_failure(permit, self._clock() - started_ns)
        for task in done:
            dsp, permit = calls[task]
            kind, bids, duration_ns = task.result()
            if kind == _SUCCESS:
                result.bids.extend(bids)
                if permit is not None:
                    dsp.breaker.on_success(permit, duration_ns)
            elif kind == _FAILURE:
                result.failed += 1
                if permit is not None:
                    dsp.breaker.on_failure(permit, duration_ns)
            elif permit is not None:
                dsp.breaker.on_ignore(permit)
        return result

    async def _call(self, dsp: _Dsp, tail: bytes) -> _CallResult:
        """One bid request; never raises except CancelledError."""
        pool = dsp.pool
        assert pool is not None, "DspClient.start() was not awaited"
        started = self._clock()
        conn: _Connection | None = None
        try:
            conn = await pool.acquire()
            status, payload = await conn.exchange(pool.head + tail)
            if status == 204:
                return _SUCCESS, [], self._clock() - started
            if status >= 500 or status == 429:
                return _FAILURE, [], self._clock() - started
            if status != 200:
                # 4xx: we sent something it refused; says nothing about its health.
                return _IGNORE, [], self._clock() - started
            bids = _parse_bids(dsp.name, payload)
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return _FAILURE, [], self._clock() - started
        finally:
            if conn is not None:
                pool.release(conn, reuse=conn.reusable)
        return _SUCCESS, bids, self._clock() - started


def _parse_bids(dsp: str, payload: bytes) -> list[DspBid]:
    """Bids from a 200 body; a malformed body raises ValueError/TypeError/KeyError."""
    if not payload:
        return []
    data = json.loads(payload)
    out: list[DspBid] = []
    for seat in data.get("seatbid") or ():
        for bid in seat.get("bid") or ():
            price = float(bid["price"])
            if price > 0 and price == price and price != float("inf"):
                out.append(DspBid(dsp, bid, price))
    return out
