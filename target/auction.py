"""The auction: Redis work behind a concurrency limit, then the DSP fan-out, then the winner.

    deadline = arrival + tmax - margin
      |
      v
    ConcurrencyLimit.acquire(deadline) --none within min(max_wait, left)--> 503 bulkhead_full
      |  permit held only around Redis
      v
    Redis (one Lua script, atomic): frequency cap per user, pacing and budget per publisher
      |  timeout = min(redis_timeout, what is left) --slow/down--> 503 (or 204) redis_unavailable
      |  capped / paced / out of budget                 --------> 204 no_bid
      v
    DSP fan-out with what is left (dsp_client.py) --all breakers open--> 204 breaker_open_fallback
      |
      v
    highest bid at or above its impression's floor --> 200 bid response, or 204 no_bid

Nothing here waits past the deadline: every await is bounded by it.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from spikegate.contract.outcomes import (
    BREAKER_OPEN_FALLBACK,
    DEADLINE_EXCEEDED,
    NO_BID,
    REDIS_UNAVAILABLE,
)
from spikegate.target.backpressure.adaptive import GradientLimit
from spikegate.target.backpressure.clock import NS_PER_S, Clock, monotonic_ns
from spikegate.target.backpressure.concurrency import ConcurrencyLimit
from spikegate.target.backpressure.decision import ADMITTED, BULKHEAD_FULL, Decision
from spikegate.target.config import AuctionConfig
from spikegate.target.dsp_client import DspBid, DspClient
from spikegate.target.models import BidRequest, bid_response

# Returns 0 = go, 1 = frequency capped, 2 = paced, 3 = out of budget. Checks first, then
# counts, so a refused auction consumes nothing.
_RESERVE_LUA = """
local cap = tonumber(ARGV[1])
local pacing = tonumber(ARGV[3])
local budget = tonumber(ARGV[4])
local cost = tonumber(ARGV[5])
local seen = tonumber(redis.call('GET', KEYS[1]) or '0')
if seen >= cap then return 1 end
local paced = tonumber(redis.call('GET', KEYS[2]) or '0')
if paced >= pacing then return 2 end
local spent = tonumber(redis.call('GET', KEYS[3]) or '0')
if spent + cost > budget then return 3 end
if redis.call('INCR', KEYS[1]) == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if redis.call('INCR', KEYS[2]) == 1 then redis.call('EXPIRE', KEYS[2], 2) end
redis.call('INCRBY', KEYS[3], cost)
return 0
"""
_GO, _CAPPED, _PACED, _BROKE = 0, 1, 2, 3
NO_BID_REASONS = {_CAPPED: "frequency_capped", _PACED: "paced", _BROKE: "budget_exhausted"}


@dataclass(frozen=True, slots=True)
class AuctionOutcome:
    """What the route answers: status, decision header, JSON body (or None), Retry-After."""

    status: int
    decision: str
    body: dict[str, Any] | None = None
    retry_after_s: float | None = None
    detail: str = ""


def make_redis(url: str, cfg: AuctionConfig) -> aioredis.Redis:
    """A client that fails fast: no retries (the deadline is the budget), bounded pool."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=cfg.redis_max_connections,
        timeout=cfg.redis_timeout_ms / 1000,
        socket_connect_timeout=cfg.redis_timeout_ms / 1000,
        retry=Retry(NoBackoff(), 0),
        retry_on_error=[],
    )
    return aioredis.Redis(connection_pool=pool)


def make_limit(cfg: AuctionConfig) -> ConcurrencyLimit | None:
    if not cfg.enabled:
        return None
    adaptive = (
        GradientLimit(
            cfg.limit, min_limit=min(cfg.adaptive_min_limit, cfg.limit), max_limit=cfg.limit
        )
        if cfg.adaptive
        else None
    )
    return ConcurrencyLimit(cfg.limit, max_wait_s=cfg.max_wait_ms / 1000, adaptive=adaptive)


class UnlimitedView:
    """The metrics' view of a switched-off limit: real in-flight count, configured bound."""

    __slots__ = ("ceiling", "inflight")
    waiting = 0

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.inflight = 0

    @property
    def limit(self) -> int:
        return self.ceiling


class InflightPeak(NamedTuple):
    """One read of a `PeakLevel`."""

    peak: int
    """Highest level since the previous read (since start for the first), never below now."""
    reached: tuple[int, ...]
    """reached[k]: how many times work started with k in flight (itself included), since
    start. Monotonic, so any number of readers can difference their own two reads."""


# Edges (ns) of the permit wait/hold histograms: fine where the designed bounds lie (the
# bulkhead's max_wait of a few ms, the Redis timeout of tens), coarse beyond.
PERMIT_EDGES_NS = tuple(
    round(ms * 1_000_000) for ms in (0.5, 1, 2.5, 5, 10, 25, 50, 75, 100, 150, 250, 500, 1000)
)


class PermitTimes:
    """How long auctions waited for a bulkhead permit and how long they held one, as
    cumulative-ready bucket counts (ns edges, the last bucket = above every edge). The
    bulkhead's promise is in these: no wait beyond max_wait, no hold beyond the Redis work."""

    __slots__ = ("hold", "wait")

    def __init__(self) -> None:
        self.wait = [0] * (len(PERMIT_EDGES_NS) + 1)
        self.hold = [0] * (len(PERMIT_EDGES_NS) + 1)

    @staticmethod
    def _add(counts: list[int], ns: int) -> None:
        counts[bisect.bisect_left(PERMIT_EDGES_NS, ns)] += 1

    def waited(self, ns: int) -> None:
        self._add(self.wait, ns)

    def held(self, ns: int) -> None:
        self._add(self.hold, ns)


class PeakLevel:
    """The in-flight high-water mark, kept until it is read: no clock, no window.

    `note(level)` runs where work starts, with the level it made. `read(level_now)` returns
    two views of the peak:

    - `peak`: the highest level noted since the previous read, never below `level_now`; the
      read resets it to `level_now`. However late the read, the peak is there. It is one
      mark for all readers: with two scrapers, each sees the peak since the other's scrape.
    - `reached`: per level, how many starts saw it (a monotonic counter). A reader that keeps
      its previous read gets its own exact peak: the highest level whose count rose, or the
      level at its previous read if higher. Safe for any number of readers, and a failed
      read loses nothing (the next one differences against the last good one).

    Noted and read on one thread (the event loop's): no locks.
    """

    __slots__ = ("_pending", "_reached")

    def __init__(self) -> None:
        self._pending = 0
        self._reached: list[int] = [0]

    def note(self, level: int) -> None:
        if level < 1:
            return
        if level > self._pending:
            self._pending = level
        reached = self._reached
        if level >= len(reached):
            reached.extend([0] * (level + 1 - len(reached)))
        reached[level] += 1

    def read(self, level_now: int) -> InflightPeak:
        peak = max(self._pending, level_now)
        self._pending = level_now
        return InflightPeak(peak, tuple(self._reached))


class Auction:
    """One auction per /bid; holds the limit, the Redis client and the DSP client."""

    def __init__(
        self,
        cfg: AuctionConfig,
        redis: aioredis.Redis,
        dsps: DspClient,
        *,
        limit: ConcurrencyLimit | None = None,
        clock: Clock = monotonic_ns,
    ) -> None:
        self.cfg = cfg
        self.redis = redis
        self.dsps = dsps
        self.limit = limit
        # With the limit switched off (ablation) the metrics still see Redis work in flight,
        # against the configured, unenforced limit: that is what the limit would have bounded.
        self.unlimited = UnlimitedView(cfg.limit) if limit is None else None
        self.permits = PermitTimes()
        self.peak = PeakLevel()
        self._clock = clock
        self._reserve = redis.register_script(_RESERVE_LUA)
        self.last_redis_error = ""
        self._redis_timeout_ns = round(cfg.redis_timeout_ms / 1000 * NS_PER_S)
        self._redis_failure = AuctionOutcome(
            cfg.redis_failure_status,
            REDIS_UNAVAILABLE,
            retry_after_s=1.0 if cfg.redis_failure_status == 503 else None,
            detail="frequency cap / budget store is slow or down",
        )

    async def warm_up(self, timeout_s: float = 2.0) -> bool:
        """Load the script and open `warm_connections` before traffic, so the first burst
        does not pay for connection setup. False if Redis is not there (the server still
        starts; requests then answer redis_unavailable)."""
        pool = self.redis.connection_pool
        conns: list[Any] = []
        try:
            async with asyncio.timeout(timeout_s):
                await self.redis.script_load(_RESERVE_LUA)
                n = min(self.cfg.warm_connections, self.cfg.redis_max_connections)
                acquire: Callable[[], Awaitable[Any]] = pool.get_connection
                conns = list(await asyncio.gather(*(acquire() for _ in range(n))))
        except (TimeoutError, RedisError, OSError):
            return False
        finally:
            for conn in conns:
                await pool.release(conn)
        return True

    def inflight_peak(self) -> InflightPeak:
        """Read the in-flight peak of Redis work (limit on or off): see `PeakLevel`. The
        metrics scrape calls this; any other call resets the since-last-read `peak` too."""
        view = self.limit if self.limit is not None else self.unlimited
        return self.peak.read(view.inflight if view is not None else 0)

    def deadline_ns(self, arrival_ns: int, tmax_ms: int | None) -> int:
        tmax = min(tmax_ms or self.cfg.default_tmax_ms, self.cfg.max_tmax_ms)
        return arrival_ns + round((tmax - self.cfg.deadline_margin_ms) * 1_000_000)

    async def run(self, req: BidRequest, publisher_id: str, deadline_ns: int) -> AuctionOutcome:
        if self.limit is None:
            view = self.unlimited
            assert view is not None
            view.inflight += 1
            self.peak.note(view.inflight)
            try:
                verdict = await self._redis_work(req, publisher_id, deadline_ns)
            finally:
                view.inflight -= 1
        else:
            asked = self._clock()
            permit = await self.limit.acquire(deadline_ns=deadline_ns)
            if not permit.admitted:
                return _bulkhead(permit)
            self.permits.waited(self._clock() - asked)
            self.peak.note(self.limit.inflight)
            started = self._clock()
            verdict = -1
            try:
                verdict = await self._redis_work(req, publisher_id, deadline_ns)
            finally:
                self.limit.release(latency_ns=self._clock() - started, dropped=verdict < 0)
                self.permits.held(self._clock() - started)
        if verdict < 0:
            return self._redis_failure if verdict == -1 else _deadline()
        if verdict != _GO:
            return AuctionOutcome(204, NO_BID, detail=NO_BID_REASONS[verdict])
        return await self._bid(req, deadline_ns)

    async def _redis_work(self, req: BidRequest, publisher_id: str, deadline_ns: int) -> int:
        """The Lua verdict, -1 when Redis failed or was too slow, -2 when no time was left."""
        left_ns = deadline_ns - self._clock()
        if left_ns <= 0:
            return -2
        cost = sum(round(imp.bidfloor * 1_000_000) for imp in req.imp)
        keys = (
            f"fc:{req.user.id}",
            f"pace:{publisher_id}:{int(time.time())}",
            f"spend:{publisher_id}",
        )
        # A separate task, abandoned at the timeout: redis-py may await its own cleanup
        # (closing the connection, bounded only by its socket timeouts) after a cancel, and
        # that must never hold the request past its deadline.
        call = asyncio.ensure_future(self._evalsha(keys, cost))
        try:
            done, _ = await asyncio.wait(
                (call,), timeout=min(self._redis_timeout_ns, left_ns) / NS_PER_S
            )
        except asyncio.CancelledError:
            _abandon(call)
            raise
        if not done:
            _abandon(call)
            return -1
        try:
            verdict = call.result()
        except (RedisError, OSError) as exc:
            self.last_redis_error = repr(exc)
            return -1
        return int(verdict)

    async def _evalsha(self, keys: tuple[str, str, str], cost: int) -> Any:
        """One EVALSHA round trip through redis-py's Script (which reloads a lost script)."""
        cfg = self.cfg
        args = (cfg.frequency_cap, cfg.frequency_window_s, cfg.pacing_per_s, cfg.budget_micros)
        return await self._reserve(keys=list(keys), args=[*args, cost])

    async def _bid(self, req: BidRequest, deadline_ns: int) -> AuctionOutcome:
        if self._clock() >= deadline_ns:
            return _deadline()
        request = {
            "id": req.id,
            "imp": [{"id": imp.id, "bidfloor": imp.bidfloor} for imp in req.imp],
            "site": {"publisher": {"id": req.site.publisher.id}},
            "user": {"id": req.user.id},
        }
        fan = await self.dsps.fan_out(request, deadline_ns)
        winner = choose_winner(req, fan.bids)
        if winner is not None:
            return AuctionOutcome(200, ADMITTED, bid_response(req.id, winner.dsp, winner.bid))
        if fan.all_open:
            return AuctionOutcome(204, BREAKER_OPEN_FALLBACK, detail="every DSP breaker is open")
        return AuctionOutcome(204, NO_BID)


def choose_winner(req: BidRequest, bids: list[DspBid]) -> DspBid | None:
    """The highest bid for a known impression at or above that impression's floor."""
    floors = {imp.id: imp.bidfloor for imp in req.imp}
    best: DspBid | None = None
    for b in bids:
        floor = floors.get(str(b.bid.get("impid")))
        if floor is None or b.price < floor:
            continue
        if best is None or b.price > best.price:
            best = b
    return best


def _abandon(call: asyncio.Future[Any]) -> None:
    call.cancel()
    call.add_done_callback(_consume)


def _consume(call: asyncio.Future[Any]) -> None:
    if not call.cancelled():
        call.exception()  # retrieved: no "exception was never retrieved" noise


def _bulkhead(decision: Decision) -> AuctionOutcome:
    return AuctionOutcome(
        503,
        BULKHEAD_FULL,
        retry_after_s=decision.retry_after_s,
        detail="auction concurrency limit reached",
    )


def _deadline() -> AuctionOutcome:
    return AuctionOutcome(204, DEADLINE_EXCEEDED, detail="tmax passed before the auction ran")
