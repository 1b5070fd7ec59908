"""ConcurrencyLimit: ceiling never exceeded, bounded FIFO waits, cancellation-safe permits."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Coroutine
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikegate.target.backpressure.adaptive import GradientLimit
from spikegate.target.backpressure.clock import FakeClock
from spikegate.target.backpressure.concurrency import ConcurrencyLimit
from spikegate.target.backpressure.decision import ADMIT, BULKHEAD_FULL, Decision

MS = 1_000_000
LONG_WAIT_S = 60.0  # a wait that never expires within a test: waits end by hand-off only


def run_without_suspending(coro: Coroutine[Any, Any, Decision]) -> Decision:
    """Drive `coro` one step; fail if it suspends (i.e. would have awaited anything)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("acquire() suspended instead of answering at once")


async def spin(n: int = 5) -> None:
    """Let ready tasks run without real time passing."""
    for _ in range(n):
        await asyncio.sleep(0)


class RecordingLimit:
    """An AdaptiveLimit that records samples and answers a scripted limit."""

    def __init__(self, limit: int, min_limit: int = 1, max_limit: int = 1000) -> None:
        self.limit = limit
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.samples: list[tuple[int, int, bool]] = []

    def on_sample(self, latency_ns: int, inflight: int, dropped: bool) -> int:
        self.samples.append((latency_ns, inflight, dropped))
        return self.limit


# --- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "4", None])
def test_limit_below_one_or_not_an_integer_is_rejected_naming_limit(limit: object) -> None:
    with pytest.raises(ValueError, match=r"limit must be an integer >= 1"):
        ConcurrencyLimit(limit)  # type: ignore[arg-type]


@pytest.mark.parametrize("max_wait_s", [-0.001, math.nan, math.inf, "1", None])
def test_negative_nan_or_infinite_max_wait_is_rejected_naming_max_wait(max_wait_s: object) -> None:
    with pytest.raises(ValueError, match=r"max_wait_s must be a finite number >= 0"):
        ConcurrencyLimit(4, max_wait_s=max_wait_s)  # type: ignore[arg-type]


@pytest.mark.parametrize("retry_after_s", [-1.0, math.nan, math.inf])
def test_bad_retry_after_is_rejected_naming_retry_after(retry_after_s: float) -> None:
    with pytest.raises(ValueError, match=r"retry_after_s must be a finite number >= 0"):
        ConcurrencyLimit(4, retry_after_s=retry_after_s)


def test_adaptive_max_limit_above_the_ceiling_is_rejected_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"adaptive.max_limit \(16\) must be <= limit \(4\)"):
        ConcurrencyLimit(4, adaptive=GradientLimit(8, min_limit=2, max_limit=16))
    assert ConcurrencyLimit(4, adaptive=GradientLimit(4, max_limit=4)).limit == 4


def test_release_without_a_permit_raises_instead_of_inflating_capacity() -> None:
    cl = ConcurrencyLimit(2)
    with pytest.raises(RuntimeError, match="without a held permit"):
        cl.release()
    assert cl.inflight == 0
    assert [cl.try_acquire().admitted for _ in range(3)] == [True, True, False]


# --- immediate decisions ---------------------------------------------------------------


def test_try_acquire_admits_exactly_limit_then_answers_bulkhead_full() -> None:
    cl = ConcurrencyLimit(3, retry_after_s=2.0)
    answers = [cl.try_acquire() for _ in range(5)]
    assert answers[:3] == [ADMIT] * 3
    assert answers[3:] == [Decision(False, BULKHEAD_FULL, 2.0)] * 2
    assert answers[3].retry_after_header == "2"
    assert cl.inflight == 3
    cl.release()
    assert cl.try_acquire() is ADMIT
    assert cl.try_acquire().reason == BULKHEAD_FULL


def test_acquire_with_a_free_permit_admits_without_suspending() -> None:
    cl = ConcurrencyLimit(1)
    assert run_without_suspending(cl.acquire()) is ADMIT
    assert cl.inflight == 1


def test_max_wait_zero_rejects_at_once_without_suspending_or_queueing() -> None:
    cl = ConcurrencyLimit(1, max_wait_s=0.0)
    assert cl.try_acquire().admitted
    decision = run_without_suspending(cl.acquire())
    assert decision.reason == BULKHEAD_FULL
    assert not decision.admitted
    assert cl.waiting == 0
    assert cl.inflight == 1


def test_deadline_already_past_rejects_at_once_even_with_a_long_max_wait() -> None:
    clock = FakeClock()
    cl = ConcurrencyLimit(1, max_wait_s=LONG_WAIT_S, clock=clock)
    assert cl.try_acquire().admitted
    for deadline in (clock() - MS, clock()):
        decision = run_without_suspending(cl.acquire(deadline_ns=deadline))
        assert decision.reason == BULKHEAD_FULL
    assert cl.waiting == 0


def test_max_wait_zero_rejection_is_fast() -> None:
    """With max_wait = 0, a rejection costs far less than 1 ms (p99 over 2,000 calls)."""
    cl = ConcurrencyLimit(1)
    cl.try_acquire()
    costs = []
    for _ in range(2_000):
        t0 = time.perf_counter_ns()
        coro = cl.acquire()
        with contextlib.suppress(StopIteration):
            coro.send(None)
        costs.append(time.perf_counter_ns() - t0)
    costs.sort()
    assert costs[int(len(costs) * 0.99)] < 1 * MS


# --- waiting ---------------------------------------------------------------------------


async def test_release_hands_permits_to_waiters_in_fifo_order_without_time_passing() -> None:
    clock = FakeClock()
    cl = ConcurrencyLimit(1, max_wait_s=LONG_WAIT_S, clock=clock)
    assert cl.try_acquire().admitted
    order: list[int] = []

    async def caller(i: int) -> None:
        decision = await cl.acquire()
        assert decision is ADMIT
        order.append(i)

    tasks = [asyncio.create_task(caller(i)) for i in range(4)]
    await spin()
    assert cl.waiting == 4
    for expected in range(4):
        cl.release()
        await spin()
        assert order == list(range(expected + 1))
        assert cl.inflight == 1
    await asyncio.gather(*tasks)
    assert cl.waiting == 0


async def test_a_released_permit_cannot_be_taken_by_a_newcomer_ahead_of_a_waiter() -> None:
    cl = ConcurrencyLimit(1, max_wait_s=LONG_WAIT_S)
    cl.try_acquire()
    waiter = asyncio.create_task(cl.acquire())
    await spin()
    cl.release()
    assert cl.try_acquire().reason == BULKHEAD_FULL  # the waiter owns it though not yet run
    assert await waiter is ADMIT
    assert cl.inflight == 1


async def test_waiting_times_out_as_bulkhead_full_and_leaves_the_queue() -> None:
    cl = ConcurrencyLimit(1, max_wait_s=0.001)
    cl.try_acquire()
    decision = await asyncio.wait_for(cl.acquire(), timeout=5)
    assert decision.reason == BULKHEAD_FULL
    assert cl.waiting == 0
    cl.release()
    assert cl.inflight == 0


async def _real_wait(cl: ConcurrencyLimit, **kwargs: Any) -> tuple[Decision, float, int]:
    """Wait in `cl` on the real clock: (decision, seconds waited, how many were still
    waiting when a reference timer set 5 ms after the wait's own bound fired).

    The reference timer is set after the wait's, for 25 ms: asyncio fires due timers in
    deadline order, so on a stalled machine the wait's timer still fires first. The bound
    (w + 5 ms) is thus checked in the event loop's own order, not against a wall clock that
    a busy machine can stretch.
    """
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    task = asyncio.create_task(cl.acquire(**kwargs))
    await spin()  # it is waiting now, its own timer set
    assert cl.waiting == 1
    reference: asyncio.Future[int] = loop.create_future()
    loop.call_later(0.025, lambda: reference.set_result(cl.waiting))
    decision = await task
    elapsed = time.perf_counter() - t0
    return decision, elapsed, await reference


@pytest.mark.timeout(10)
async def test_max_wait_bounds_the_wait_in_real_time() -> None:
    """With max_wait = 20 ms, the wait ends after 20 ms and before a timer of 25 ms."""
    cl = ConcurrencyLimit(1, max_wait_s=0.020)
    cl.try_acquire()
    decision, elapsed, waiting_at_25ms = await _real_wait(cl)
    assert decision.reason == BULKHEAD_FULL
    assert elapsed >= 0.015  # a timer never fires early (slack for clock granularity)
    assert waiting_at_25ms == 0


@pytest.mark.timeout(10)
async def test_the_callers_deadline_bounds_the_wait_below_max_wait() -> None:
    """A deadline 20 ms away ends a wait whose max_wait is 60 s after about 20 ms."""
    cl = ConcurrencyLimit(1, max_wait_s=LONG_WAIT_S)
    cl.try_acquire()
    decision, elapsed, waiting_at_25ms = await _real_wait(
        cl, deadline_ns=time.monotonic_ns() + 20 * MS
    )
    assert decision.reason == BULKHEAD_FULL
    assert elapsed >= 0.015
    assert waiting_at_25ms == 0
    assert cl.waiting == 0


# --- cancellation ----------------------------------------------------------------------


async def test_a_waiter_cancelled_while_waiting_leaves_no_trace() -> None:
    cl = ConcurrencyLimit(1, max_wait_s=LONG_WAIT_S)
    cl.try_acquire()
    first = asyncio.create_task(cl.acquire())
    second = asyncio.create_task(cl.acquire())
    await spin()
    first.cancel()
    await spin()
    assert first.cancelled()
    assert cl.waiting == 1
    cl.release()
    assert await second is ADMIT
    assert (cl.inflight, cl.waiting) == (1, 0)


async def test_a_waiter_cancelled_just_after_being_handed_a_permit_passes_it_on() -> None:
    cl = ConcurrencyLimit(1, max_wait_s=LONG_WAIT_S)
    cl.try_acquire()
    first = asyncio.create_task(cl.acquire())
    second = asyncio.create_task(cl.acquire())
    await spin()
    cl.release()  # hands the permit to `first`...
    first.cancel()  # ...which is cancelled before it can run
    await spin()
    assert first.cancelled()
    assert second.done() and second.result() is ADMIT
    assert (cl.inflight, cl.waiting) == (1, 0)


async def test_a_cancelled_last_waiter_returns_the_handed_permit() -> None:
    cl = ConcurrencyLimit(1, max_wait_s=LONG_WAIT_S)
    cl.try_acquire()
    only = asyncio.create_task(cl.acquire())
    await spin()
    cl.release()
    only.cancel()
    await spin()
    assert only.cancelled()
    assert (cl.inflight, cl.waiting) == (0, 0)
    assert cl.try_acquire() is ADMIT


async def test_hold_releases_when_cancelled_while_holding() -> None:
    cl = ConcurrencyLimit(1, max_wait_s=LONG_WAIT_S)
    inside = asyncio.Event()

    async def holder() -> None:
        async with cl.hold() as decision:
            assert decision.admitted
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(holder())
    await inside.wait()
    assert cl.inflight == 1
    task.cancel()
    await spin()
    assert task.cancelled()
    assert cl.inflight == 0


async def test_hold_that_is_rejected_releases_nothing() -> None:
    cl = ConcurrencyLimit(1)
    cl.try_acquire()
    async with cl.hold() as decision:
        assert decision.reason == BULKHEAD_FULL
    assert cl.inflight == 1


# --- the ceiling under load ------------------------------------------------------------


async def test_ten_times_limit_concurrent_callers_never_exceed_the_limit() -> None:
    limit = 8
    cl = ConcurrencyLimit(limit, max_wait_s=LONG_WAIT_S)
    rng = random.Random(7)
    peak = 0
    admitted = 0

    async def caller() -> None:
        nonlocal peak, admitted
        async with cl.hold() as decision:
            assert decision.admitted
            admitted += 1
            for _ in range(rng.randint(0, 4)):
                peak = max(peak, cl.inflight)
                await asyncio.sleep(0)
            peak = max(peak, cl.inflight)

    await asyncio.wait_for(asyncio.gather(*(caller() for _ in range(10 * limit))), timeout=30)
    assert admitted == 10 * limit
    assert peak == limit  # reached, never exceeded
    assert (cl.inflight, cl.waiting) == (0, 0)


# Operations for the interleaving model: (kind, index) pairs.
_OPS = st.lists(
    st.tuples(st.sampled_from(["start", "finish", "cancel", "spin"]), st.integers(0, 30)),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(1, 4), max_wait_zero=st.booleans(), ops=_OPS)
def test_inflight_never_exceeds_limit_over_any_interleaving(
    limit: int, max_wait_zero: bool, ops: list[tuple[str, int]]
) -> None:
    """Any order of arrivals, completions, cancellations and loop steps keeps the invariants."""
    asyncio.run(_interleave(limit, 0.0 if max_wait_zero else LONG_WAIT_S, ops))


async def _interleave(limit: int, max_wait_s: float, ops: list[tuple[str, int]]) -> None:
    cl = ConcurrencyLimit(limit, max_wait_s=max_wait_s)
    holding: set[int] = set()
    gates: list[asyncio.Event] = []
    tasks: list[asyncio.Task[None]] = []

    async def caller(i: int) -> None:
        async with cl.hold() as decision:
            if decision.admitted:
                holding.add(i)
                try:
                    await gates[i].wait()
                finally:
                    holding.discard(i)

    def check() -> None:
        assert cl.inflight <= limit
        assert len(holding) <= cl.inflight
        if cl.inflight < limit:
            assert cl.waiting == 0  # a free permit with a queued waiter would be a stuck waiter

    for kind, index in ops:
        if kind == "start":
            gates.append(asyncio.Event())
            tasks.append(asyncio.create_task(caller(len(tasks))))
        elif tasks and kind == "finish":
            gates[index % len(tasks)].set()
        elif tasks and kind == "cancel":
            tasks[index % len(tasks)].cancel()
        else:
            await asyncio.sleep(0)
        check()
    for gate in gates:
        gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=10)
    assert (cl.inflight, cl.waiting) == (0, 0)


async def test_ten_thousand_trials_of_random_cancellation_leak_no_permit_or_waiter() -> None:
    """Random cancellation while waiting, just after hand-off and while holding, seeded."""
    rng = random.Random(20240601)
    for _ in range(10_000):
        limit = rng.randint(1, 3)
        cl = ConcurrencyLimit(limit, max_wait_s=LONG_WAIT_S)
        n = rng.randint(1, 6)
        gates = [asyncio.Event() for _ in range(n)]
        peak = 0

        async def caller(i: int, cl: ConcurrencyLimit = cl, gates: list[asyncio.Event] = gates):
            nonlocal peak
            async with cl.hold() as decision:
                assert decision.admitted
                peak = max(peak, cl.inflight)
                await gates[i].wait()

        tasks = [asyncio.create_task(caller(i)) for i in range(n)]
        for _ in range(rng.randint(0, 8)):
            action = rng.random()
            if action < 0.35:
                rng.choice(tasks).cancel()
            elif action < 0.7:
                rng.choice(gates).set()
            else:
                await asyncio.sleep(0)
        for gate in gates:
            gate.set()
        # A stuck waiter (60 s max wait) would hit this bound instead of finishing.
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=10)
        assert all(t.done() for t in tasks)
        assert (cl.inflight, cl.waiting) == (0, 0), cl
        assert peak <= limit


# --- adaptive limit through the bulkhead -----------------------------------------------


async def test_hold_feeds_measured_latency_and_drops_to_the_adaptive_limit() -> None:
    clock = FakeClock()
    adaptive = RecordingLimit(4, max_limit=4)
    cl = ConcurrencyLimit(4, clock=clock, adaptive=adaptive)
    async with cl.hold():
        clock.advance(0.005)
    with pytest.raises(KeyError):
        async with cl.hold():
            clock.advance(0.002)
            raise KeyError("downstream failed")
    assert adaptive.samples == [(5 * MS, 1, False), (2 * MS, 1, True)]
    assert cl.inflight == 0


async def test_hold_cancelled_while_holding_gives_no_latency_sample() -> None:
    adaptive = RecordingLimit(4, max_limit=4)
    cl = ConcurrencyLimit(4, adaptive=adaptive)
    inside = asyncio.Event()

    async def holder() -> None:
        async with cl.hold():
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(holder())
    await inside.wait()
    task.cancel()
    await spin()
    assert adaptive.samples == []
    assert cl.inflight == 0


def test_effective_limit_follows_the_adaptive_limit_but_never_exceeds_the_ceiling() -> None:
    adaptive = RecordingLimit(2, max_limit=5)  # a misbehaving strategy may answer more
    cl = ConcurrencyLimit(5, adaptive=adaptive)
    assert (cl.limit, cl.ceiling) == (2, 5)
    assert [cl.try_acquire().admitted for _ in range(3)] == [True, True, False]
    adaptive.limit = 500
    cl.release(latency_ns=MS)
    assert cl.limit == 5
    assert sum(cl.try_acquire().admitted for _ in range(10)) == 4
    assert cl.inflight == 5


async def test_a_raised_adaptive_limit_wakes_extra_waiters() -> None:
    adaptive = RecordingLimit(1, max_limit=4)
    cl = ConcurrencyLimit(4, max_wait_s=LONG_WAIT_S, adaptive=adaptive)
    cl.try_acquire()
    waiters = [asyncio.create_task(cl.acquire()) for _ in range(3)]
    await spin()
    adaptive.limit = 3
    cl.release(latency_ns=MS)
    await spin()
    assert [w.done() for w in waiters] == [True, True, True]
    assert cl.inflight == 3


def test_a_lowered_adaptive_limit_stops_admitting_until_inflight_falls_below_it() -> None:
    adaptive = RecordingLimit(4, max_limit=4)
    cl = ConcurrencyLimit(4, adaptive=adaptive)
    for _ in range(4):
        cl.try_acquire()
    adaptive.limit = 2
    cl.release(latency_ns=MS)
    assert (cl.limit, cl.inflight) == (2, 3)
    assert cl.try_acquire().reason == BULKHEAD_FULL
    cl.release()
    assert cl.try_acquire().reason == BULKHEAD_FULL
    cl.release()
    assert cl.try_acquire() is ADMIT


def test_a_step_in_latency_through_release_lowers_the_limit() -> None:
    """1 ms -> 5 ms fed via release() lowers the effective limit within a few windows."""
    adaptive = GradientLimit(50, min_limit=5, max_limit=50, window_samples=10)
    cl = ConcurrencyLimit(50, adaptive=adaptive)

    def run_windows(windows: int, latency_ns: int) -> None:
        for _ in range(windows * 10):
            while cl.try_acquire().admitted:
                pass
            cl.release(latency_ns=latency_ns)

    run_windows(30, 1 * MS)
    assert cl.limit == 50  # busy at the ceiling, healthy latency: stays there
    run_windows(3, 5 * MS)
    assert cl.limit < 50
    run_windows(20, 5 * MS)
    assert 5 <= cl.limit <= 25
    assert cl.inflight <= 50
