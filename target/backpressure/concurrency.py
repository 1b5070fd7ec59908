"""The concurrency limit (bulkhead): at most `limit` calls in flight, a bounded wait for more.

::

    try_acquire() --- inflight < limit? --yes--> ADMIT (inflight += 1)
    acquire()     --- no, and wait budget > 0 --> FIFO waiter --+--> permit handed over by
                      budget = min(max_wait, deadline - now)    |    release(): ADMIT
                  --- no budget ----------------> BULKHEAD_FULL  +--> budget spent: BULKHEAD_FULL
    release(latency_ns) --> adaptive.on_sample --> effective limit (<= ceiling)
                        --> hand freed permits straight to the oldest waiters

A released permit goes to a waiter directly (the count never dips), so a caller arriving
between the release and the waiter's wake-up cannot barge in. Cancellation is safe in every
state: a cancelled waiter leaves the queue; a waiter cancelled just after it was handed a
permit passes the permit on; `hold()` releases on any exit, cancellation included.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from types import TracebackType

from spikegate.target.backpressure.adaptive import AdaptiveLimit
from spikegate.target.backpressure.clock import NS_PER_S, Clock, monotonic_ns
from spikegate.target.backpressure.decision import ADMIT, BULKHEAD_FULL, Decision

__all__ = ["ConcurrencyLimit"]


class ConcurrencyLimit:
    """A bulkhead with a fixed ceiling, an optional adaptive limit below it, and bounded waits."""

    __slots__ = (
        "_adaptive",
        "_ceiling",
        "_clock",
        "_inflight",
        "_limit",
        "_max_wait_ns",
        "_reject",
        "_waiters",
    )

    def __init__(
        self,
        limit: int,
        *,
        max_wait_s: float = 0.0,
        clock: Clock = monotonic_ns,
        adaptive: AdaptiveLimit | None = None,
        retry_after_s: float = 1.0,
    ) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an integer >= 1 (got {limit!r})")
        if not _finite_non_negative(max_wait_s):
            raise ValueError(f"max_wait_s must be a finite number >= 0 (got {max_wait_s!r})")
        if not _finite_non_negative(retry_after_s):
            raise ValueError(f"retry_after_s must be a finite number >= 0 (got {retry_after_s!r})")
        if adaptive is not None and adaptive.max_limit > limit:
            # An estimate allowed to roam above the ceiling would have to fall all the way
            # back before a latency rise could lower the effective limit.
            raise ValueError(
                f"adaptive.max_limit ({adaptive.max_limit}) must be <= limit ({limit}), "
                f"the fixed ceiling: build the adaptive limit with max_limit={limit}"
            )
        self._ceiling = limit
        self._adaptive = adaptive
        self._limit = limit if adaptive is None else max(1, min(limit, adaptive.limit))
        self._max_wait_ns = round(max_wait_s * NS_PER_S)
        self._clock = clock
        self._inflight = 0
        self._reject = Decision(False, BULKHEAD_FULL, float(retry_after_s))
        # Insertion-ordered, O(1) removal of a cancelled or timed-out waiter.
        self._waiters: OrderedDict[asyncio.Future[bool], None] = OrderedDict()

    @property
    def limit(self) -> int:
        """The effective limit now: the adaptive limit clamped to the ceiling, or the ceiling."""
        return self._limit

    @property
    def ceiling(self) -> int:
        """The fixed limit the effective limit never exceeds."""
        return self._ceiling

    @property
    def inflight(self) -> int:
        """Permits currently held (including ones handed to waiters not yet resumed)."""
        return self._inflight

    @property
    def waiting(self) -> int:
        """Callers queued in `acquire()` for a permit."""
        return len(self._waiters)

    @property
    def max_wait_s(self) -> float:
        return self._max_wait_ns / NS_PER_S

    def try_acquire(self) -> Decision:
        """Take a permit now, or answer BULKHEAD_FULL; never waits."""
        if self._inflight < self._limit and not self._waiters:
            self._inflight += 1
            return ADMIT
        return self._reject

    async def acquire(self, *, deadline_ns: int | None = None) -> Decision:
        """Take a permit, waiting at most min(max_wait_s, deadline_ns - now) in FIFO order.

        With no wait budget (max_wait_s = 0, or the deadline already past) a full bulkhead
        answers BULKHEAD_FULL without suspending. A free permit is granted even past the
        deadline: dropping late work is the caller's decision, not a capacity question.
        """
        if self._inflight < self._limit and not self._waiters:
            self._inflight += 1
            return ADMIT
        budget_ns = self._max_wait_ns
        if deadline_ns is not None:
            budget_ns = min(budget_ns, deadline_ns - self._clock())
        if budget_ns <= 0:
            return self._reject
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters[waiter] = None
        timer = loop.call_later(budget_ns / NS_PER_S, self._expire, waiter)
        try:
            granted = await waiter
        except BaseException:  # cancellation, or the coroutine closed while suspended
            if waiter.done() and not waiter.cancelled() and waiter.result():
                # Handed a permit in the same loop iteration as our cancellation: pass it on.
                self._release_one()
            else:
                self._waiters.pop(waiter, None)
            raise
        finally:
            timer.cancel()
        return ADMIT if granted else self._reject

    def release(self, *, latency_ns: int | None = None, dropped: bool = False) -> None:
        """Return a permit; `latency_ns` (and `dropped`) feed the adaptive limit, if any."""
        if self._inflight <= 0:
            raise RuntimeError("release() called without a held permit (inflight is 0)")
        adaptive = self._adaptive
        if adaptive is not None and (latency_ns is not None or dropped):
            new_limit = adaptive.on_sample(
                0 if latency_ns is None else latency_ns, self._inflight, dropped
            )
            self._limit = max(1, min(self._ceiling, new_limit))
        self._release_one()

    def hold(self, *, deadline_ns: int | None = None) -> _Hold:
        """`async with limit.hold() as decision:` acquire, and release on exit if admitted.

        The release carries the measured latency; an exception in the body marks the call
        dropped, and a cancellation releases without a latency sample (it says nothing about
        the downstream).
        """
        return _Hold(self, deadline_ns)

    def _release_one(self) -> None:
        self._inflight -= 1
        waiters = self._waiters
        while waiters and self._inflight < self._limit:
            waiter, _ = waiters.popitem(last=False)
            if waiter.done():  # cancelled, its task has not yet run to remove it
                continue
            self._inflight += 1
            waiter.set_result(True)

    def _expire(self, waiter: asyncio.Future[bool]) -> None:
        if not waiter.done():
            self._waiters.pop(waiter, None)
            waiter.set_result(False)

    def __repr__(self) -> str:
        return (
            f"ConcurrencyLimit(limit={self._limit}, ceiling={self._ceiling}, "
            f"inflight={self._inflight}, waiting={len(self._waiters)})"
        )


class _Hold:
    """The async context manager behind `ConcurrencyLimit.hold()`."""

    __slots__ = ("_deadline_ns", "_decision", "_limiter", "_start_ns")

    def __init__(self, limiter: ConcurrencyLimit, deadline_ns: int | None) -> None:
        self._limiter = limiter
        self._deadline_ns = deadline_ns
        self._decision: Decision | None = None
        self._start_ns = 0

    async def __aenter__(self) -> Decision:
        decision = await self._limiter.acquire(deadline_ns=self._deadline_ns)
        self._decision = decision
        if decision.admitted:
            self._start_ns = self._limiter._clock()
        return decision

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        decision, self._decision = self._decision, None
        if decision is None or not decision.admitted:
            return
        limiter = self._limiter
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            limiter.release()
        else:
            latency_ns = limiter._clock() - self._start_ns
            limiter.release(latency_ns=latency_ns, dropped=exc_type is not None)


def _finite_non_negative(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )
