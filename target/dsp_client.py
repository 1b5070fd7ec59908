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

aiohttp was measured against httpx on this path (tests/bench/dsp_client.py) and kept.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from spikegate.target.backpressure.breaker import CircuitBreaker, Permit
from spikegate.target.backpressure.clock import NS_PER_S, Clock, monotonic_ns
from spikegate.target.config import BreakerSection, DspClientConfig, DspConfig

_JSON_HEADERS = {"Content-Type": "application/json"}

# Outcome kinds of one call.
_SUCCESS, _FAILURE, _IGNORE = 0, 1, 2


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


class _Dsp:
    __slots__ = ("breaker", "name", "url")

    def __init__(self, name: str, url: str, breaker: CircuitBreaker) -> None:
        self.name = name
        self.url = url.rstrip("/") + "/bid"
        self.breaker = breaker


class DspClient:
    """Owns the HTTP session (pool sized for the fan-out) and one breaker per DSP."""

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
        self._session: aiohttp.ClientSession | None = None

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        return {d.name: d.breaker for d in self._dsps}

    async def start(self) -> None:
        per_host = self._client_config.pool_per_host
        connector = aiohttp.TCPConnector(
            limit=per_host * max(1, len(self._dsps)),
            limit_per_host=per_host,
            keepalive_timeout=self._client_config.keepalive_s,
        )
        # No client-side timeout: every call is bounded by the request's own deadline.
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fan_out(self, request: dict[str, Any], deadline_ns: int) -> FanOutResult:
        """Ask every DSP whose breaker admits; return the bids that came back in time."""
        result = FanOutResult()
        started_ns = self._clock()
        remaining_ns = deadline_ns - started_ns
        if remaining_ns <= 0 or not self._dsps:
            return result
        body = json.dumps({**request, "tmax": max(1, remaining_ns // 1_000_000)}).encode()
        calls: dict[asyncio.Task[tuple[int, list[DspBid], int]], tuple[_Dsp, Permit | None]] = {}
        for dsp in self._dsps:
            permit: Permit | None = None
            if self._breakers_on:
                permit = dsp.breaker.try_acquire()
                if not permit.admitted:
                    result.skipped_open += 1
                    continue
            task = asyncio.create_task(self._call(dsp, body))
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

    async def _call(self, dsp: _Dsp, body: bytes) -> tuple[int, list[DspBid], int]:
        """One bid request; never raises except CancelledError."""
        assert self._session is not None, "DspClient.start() was not awaited"
        started = self._clock()
        try:
            async with self._session.post(dsp.url, data=body, headers=_JSON_HEADERS) as resp:
                status = resp.status
                if status == 204:
                    return _SUCCESS, [], self._clock() - started
                if status >= 500 or status == 429:
                    return _FAILURE, [], self._clock() - started
                if status != 200:
                    # 4xx: we sent something it refused; says nothing about its health.
                    return _IGNORE, [], self._clock() - started
                payload = await resp.read()
            bids = _parse_bids(dsp.name, payload)
        except (aiohttp.ClientError, OSError, ValueError, TypeError, KeyError):
            return _FAILURE, [], self._clock() - started
        return _SUCCESS, bids, self._clock() - started


def _parse_bids(dsp: str, payload: bytes) -> list[DspBid]:
    """Bids from a 200 body; a malformed body raises ValueError/TypeError/KeyError."""
    if not payload:
        return []
    data = json.loads(payload)
    if not isinstance(data, dict):
        raise ValueError("a bid response must be a JSON object")
    out: list[DspBid] = []
    for seat in data.get("seatbid") or ():
        if not isinstance(seat, dict):
            raise ValueError("a seatbid entry must be a JSON object")
        for bid in seat.get("bid") or ():
            price = float(bid["price"])
            if price > 0 and price == price and price != float("inf"):
                out.append(DspBid(dsp, bid, price))
    return out
