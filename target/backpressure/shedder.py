"""Load shedding for a work queue: a depth threshold, CoDel on sojourn time, a hard depth cap.

The seed's rule is the depth threshold: when the worker queue is too deep, answer SHED at
once, before acknowledging and before touching the downstream (Kafka). CoDel mode (RFC 8289,
as folly's Codel uses it for admission) adds a latency signal:

    offer --> admit(depth) --[SHED: queue_full | codel]--> 503 + Retry-After
                  | ADMIT
                  v
             [ queue ] --> get() --> on_dequeue(sojourn) --> worker --> Kafka
                                          |
                      min sojourn per interval > target ?  --> shedding on / off

- Every `interval_s` (100 ms) the minimum sojourn of the items dequeued in that interval is
  compared with `target_s` (5 ms). Above it, the queue is standing (not a burst that drains
  by itself) and the shedder enters shedding; at or below it, shedding stops. A whole
  interval in which nothing was dequeued while the queue held items counts with the head
  item's age, a lower bound of its sojourn (a stalled worker must not hide the standing
  queue). Intervals are closed lazily by the next call; a silent stretch is never merged
  into the samples of the interval before it.
- While shedding, new work is shed when its expected sojourn exceeds 2 x target (10 ms).
- `max_depth` is a hard memory cap in every mode; `threshold` (optional) is the seed's
  depth rule. Both shed with the sub-reason "queue_full"; CoDel sheds with "codel".

Expected-sojourn estimator: a new item waits behind `depth` items served at the dequeue
rate, so expected = depth / rate. The rate is measured per interval as dequeues divided by
the time the queue was non-empty in that interval (while items wait, every worker is busy,
so this is the service rate, not the arrival rate); only intervals in which the queue was
non-empty at least half the time give a sample, and samples are smoothed with an
exponentially weighted mean (weight 1/2). With no rate known yet, a non-empty queue counts
as too slow. A queue that holds items but dequeues nothing in an interval gives a sample of
0, so a stalled consumer drives the estimate down and shedding tightens.

Every SHED is a `ShedDecision`: a `Decision` with reason SHED, `retry_after_s > 0` (the time
the queue needs to drain at the measured rate, clamped to [interval, 60 s]; 1 s while the rate
is unknown) and the sub-reason in `detail` (alias `cause`: "queue_full" or "codel"); it is
also `last_cause` right after the call, and per-cause counts are in `shed_counts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from typing import Generic, TypeVar

from spikegate.target.backpressure.clock import NS_PER_S, Clock, monotonic_ns
from spikegate.target.backpressure.decision import ADMIT, SHED, Decision

__all__ = [
    "SHED_CODEL",
    "SHED_QUEUE_FULL",
    "LoadShedder",
    "ShedDecision",
    "ShedQueue",
]

SHED_QUEUE_FULL = "queue_full"
"""Sub-reason: the depth threshold or the hard cap `max_depth` was reached."""
SHED_CODEL = "codel"
"""Sub-reason: a standing queue, and this item's expected sojourn exceeds 2 x target."""

_MAX_RETRY_AFTER_S = 60.0
_UNKNOWN_RATE_RETRY_AFTER_S = 1.0

T = TypeVar("T")


class ShedDecision(Decision):
    """A SHED `Decision` whose `cause` (its `detail`) says which rule shed, for counters."""

    __slots__ = ()

    @property
    def cause(self) -> str:
        return self.detail


class LoadShedder:
    """Admission policy for a bounded work queue (see the module docstring).

    `admit(depth)` is asked before enqueueing with the current depth; `on_dequeue(sojourn_ns)`
    is told each dequeue's time in queue. `ShedQueue` does both for you.
    """

    __slots__ = (
        "_busy_ns",
        "_clock",
        "_codel",
        "_count",
        "_depth",
        "_interval_end",
        "_interval_min",
        "_interval_ns",
        "_interval_start",
        "_last_dequeue",
        "_nonempty_since",
        "_rate",
        "_shedding",
        "_slough_ns",
        "_target_ns",
        "_threshold",
        "last_cause",
        "max_depth",
        "shed_counts",
    )

    def __init__(
        self,
        max_depth: int,
        *,
        threshold: int | None = None,
        codel: bool = False,
        target_s: float = 0.005,
        interval_s: float = 0.1,
        clock: Clock = monotonic_ns,
    ) -> None:
        if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 1:
            raise ValueError(f"max_depth must be an integer >= 1, got {max_depth!r}")
        if threshold is not None and (
            isinstance(threshold, bool)
            or not isinstance(threshold, int)
            or not 1 <= threshold <= max_depth
        ):
            raise ValueError(
                f"threshold must be None or an integer in [1, max_depth={max_depth}], "
                f"got {threshold!r}"
            )
        if not (isinstance(interval_s, int | float) and math.isfinite(interval_s)) or not (
            0 < interval_s <= 3600
        ):
            raise ValueError(f"interval_s must be in (0, 3600] seconds, got {interval_s!r}")
        if not (isinstance(target_s, int | float) and math.isfinite(target_s)) or not (
            0 < target_s < interval_s
        ):
            raise ValueError(
                f"target_s must be in (0, interval_s={interval_s}) seconds, got {target_s!r}"
            )
        self.max_depth = max_depth
        self._threshold = max_depth if threshold is None else threshold
        self._codel = bool(codel)
        self._target_ns = round(target_s * NS_PER_S)
        self._slough_ns = 2 * self._target_ns
        self._interval_ns = max(1, round(interval_s * NS_PER_S))
        self._clock = clock
        now = clock()
        self._interval_start = now
        self._interval_end = now + self._interval_ns
        self._interval_min: int | None = None
        self._count = 0
        self._busy_ns = 0
        self._last_dequeue = now
        self._depth = 0
        self._nonempty_since: int | None = None
        self._rate: float | None = None
        self._shedding = False
        self.shed_counts: dict[str, int] = {SHED_QUEUE_FULL: 0, SHED_CODEL: 0}
        self.last_cause: str | None = None  # sub-reason of the latest SHED

    # -- properties -------------------------------------------------------------------------

    @property
    def threshold(self) -> int:
        """Depth at which the depth rule sheds (`max_depth` when no threshold was given)."""
        return self._threshold

    @property
    def codel(self) -> bool:
        return self._codel

    @property
    def shedding(self) -> bool:
        """True while CoDel has seen a standing queue (always False without CoDel)."""
        self._roll(self._clock())
        return self._shedding

    @property
    def dequeue_rate(self) -> float | None:
        """The estimated service rate in items/s, None until measured."""
        return self._rate

    # -- the two calls on the hot path ------------------------------------------------------

    def admit(self, depth: int) -> Decision:
        """Whether one more item may join a queue that holds `depth` items now."""
        now = self._clock()
        if now >= self._interval_end:
            self._roll(now)
        limit = self._threshold
        if depth >= limit:
            return self._shed(SHED_QUEUE_FULL, depth, limit - 1, now)
        if self._shedding and depth > 0:
            rate = self._rate
            # expected sojourn = depth / rate > 2 x target  <=>  depth > rate x 2 x target
            allowed = 0 if not rate else int(rate * self._slough_ns / NS_PER_S)
            if depth > allowed:
                return self._shed(SHED_CODEL, depth, allowed, now)
        self._set_depth(depth + 1, now)
        return ADMIT

    def on_dequeue(self, sojourn_ns: int, *, depth: int | None = None) -> None:
        """Record one dequeue that waited `sojourn_ns`; `depth` = items left, if known."""
        now = self._clock()
        if now >= self._interval_end:
            self._roll(now)
        if self._interval_min is None or sojourn_ns < self._interval_min:
            self._interval_min = sojourn_ns
        self._count += 1
        self._last_dequeue = now
        self._set_depth(max(0, self._depth - 1) if depth is None else depth, now)

    def observe_depth(self, depth: int) -> None:
        """Tell the shedder the depth changed outside admit/on_dequeue (e.g. a drain)."""
        self._set_depth(depth, self._clock())

    # -- internals --------------------------------------------------------------------------

    def _shed(self, cause: str, depth: int, allowed: int, now: int) -> ShedDecision:
        self.shed_counts[cause] += 1
        self.last_cause = cause
        self._depth = depth  # keeps the busy-time accounting right for callers of admit()
        if self._nonempty_since is None and depth > 0:
            self._nonempty_since = now
        return ShedDecision(False, SHED, self._retry_after_s(depth - allowed), cause)

    def _retry_after_s(self, excess: int) -> float:
        rate = self._rate
        if not rate:
            return _UNKNOWN_RATE_RETRY_AFTER_S
        drain_s = max(1, excess) / rate
        return min(_MAX_RETRY_AFTER_S, max(self._interval_ns / NS_PER_S, drain_s))

    def _set_depth(self, depth: int, now: int) -> None:
        if depth > 0:
            if self._nonempty_since is None:
                self._nonempty_since = now
        elif self._nonempty_since is not None:
            self._busy_ns += now - max(self._nonempty_since, self._interval_start)
            self._nonempty_since = None
        self._depth = depth

    def _roll(self, now: int) -> None:
        """Close the interval [start, now) if it is over: update shedding and the rate."""
        if now < self._interval_end:
            return
        start = self._interval_start
        length = now - start
        busy = self._busy_ns
        since = self._nonempty_since
        if since is not None:
            busy += now - max(since, start)
        minimum = self._interval_min
        # Samples all precede interval_end (every call rolls first). If no dequeue happened
        # for a whole interval since, judge by the head item instead: it has waited at least
        # since the queue became non-empty or since the last dequeue, whichever is later.
        if minimum is None or now - self._interval_end >= self._interval_ns:
            minimum = None if since is None else now - max(since, self._last_dequeue)
        if self._codel:
            self._shedding = minimum is not None and minimum > self._target_ns
        if busy * 2 >= length and busy > 0:
            sample = self._count * NS_PER_S / busy
            self._rate = sample if self._rate is None else (self._rate + sample) / 2
        self._interval_start = now
        self._interval_end = now + self._interval_ns
        self._interval_min = None
        self._count = 0
        self._busy_ns = 0


class ShedQueue(Generic[T]):
    """A bounded FIFO (collections.deque + asyncio) that asks its `LoadShedder` on offer.

    `offer` enqueues only when admitted and stamps the enqueue time from the shedder's clock;
    `get`/`get_nowait` report each item's sojourn back to the shedder. The depth never
    exceeds `max_depth`. Single event loop, not thread-safe (like asyncio.Queue).
    """

    __slots__ = ("_clock", "_getters", "_items", "_last_sojourn_ns", "shedder")

    def __init__(self, shedder: LoadShedder) -> None:
        if not isinstance(shedder, LoadShedder):
            raise ValueError(f"shedder must be a LoadShedder, got {type(shedder).__name__}")
        self.shedder = shedder
        self._clock = shedder._clock
        self._items: deque[tuple[int, T]] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._last_sojourn_ns = 0

    @property
    def depth(self) -> int:
        return len(self._items)

    @property
    def max_depth(self) -> int:
        return self.shedder.max_depth

    @property
    def shedding(self) -> bool:
        return self.shedder.shedding

    @property
    def last_sojourn_s(self) -> float:
        """Time in queue of the most recently dequeued item, in seconds."""
        return self._last_sojourn_ns / NS_PER_S

    @property
    def head_age_s(self) -> float:
        """How long the oldest queued item has waited so far (0 when empty)."""
        if not self._items:
            return 0.0
        return (self._clock() - self._items[0][0]) / NS_PER_S

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, item: T) -> Decision:
        """Enqueue `item` if the shedder admits it; the answer says which."""
        decision = self.shedder.admit(len(self._items))
        if decision.admitted:
            self._items.append((self._clock(), item))
            self._wake_one()
        return decision

    def get_nowait(self) -> T:
        """The oldest item; raises asyncio.QueueEmpty when there is none."""
        if not self._items:
            raise asyncio.QueueEmpty
        return self._pop()

    async def get(self) -> T:
        """The oldest item, waiting for one if the queue is empty (cancellation-safe)."""
        while not self._items:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except BaseException:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._getters.remove(waiter)
                if self._items and not waiter.cancelled():
                    # We were woken and then cancelled: hand the wake-up to the next getter.
                    self._wake_one()
                raise
        return self._pop()

    def drain_nowait(self) -> list[T]:
        """Remove and return every queued item, oldest first (for flush and spool)."""
        items = [item for _, item in self._items]
        self._items.clear()
        self.shedder.observe_depth(0)
        return items

    def _pop(self) -> T:
        stamp, item = self._items.popleft()
        sojourn = self._clock() - stamp
        self._last_sojourn_ns = sojourn
        self.shedder.on_dequeue(sojourn, depth=len(self._items))
        return item

    def _wake_one(self) -> None:
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
