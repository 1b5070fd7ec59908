"""LoadShedder and ShedQueue: depth cap, threshold, CoDel, goodput plateau (fake time only)."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikegate.target.backpressure.clock import NS_PER_S, FakeClock
from spikegate.target.backpressure.decision import ADMIT, SHED
from spikegate.target.backpressure.shedder import (
    SHED_CODEL,
    SHED_QUEUE_FULL,
    LoadShedder,
    ShedDecision,
    ShedQueue,
)


def make_queue(
    max_depth: int = 1000, *, clock: FakeClock | None = None, **kwargs: object
) -> tuple[ShedQueue[int], FakeClock]:
    clock = clock or FakeClock()
    shedder = LoadShedder(max_depth, clock=clock, **kwargs)  # type: ignore[arg-type]
    return ShedQueue(shedder), clock


class Sim:
    """Fake-time single-server queue: Poisson-free, evenly spaced arrivals and services.

    A worker takes the head item the moment it is free (that is the dequeue, as in the
    impression logger's workers) and is busy for 1/capacity seconds per item.
    """

    def __init__(self, queue: ShedQueue[int], clock: FakeClock, capacity: float) -> None:
        self.q = queue
        self.clock = clock
        self.service_ns = round(NS_PER_S / capacity)
        self.worker_free_at = clock()
        self.next_arrival = clock()
        self.offered = 0
        self.admitted = 0
        self.served = 0
        self.sojourns_ns: list[int] = []
        self.decisions: list[tuple[int, object]] = []
        self.seq = 0

    def run(self, arrival_rate: float, duration_s: float) -> None:
        """Run for `duration_s` of fake time with arrivals at `arrival_rate` items/s."""
        end = self.clock() + round(duration_s * NS_PER_S)
        gap = round(NS_PER_S / arrival_rate) if arrival_rate > 0 else None
        if gap is not None:
            self.next_arrival = max(self.next_arrival, self.clock())
        while True:
            t_arr = self.next_arrival if gap is not None else math.inf
            t_srv = self.worker_free_at if self.q.depth else math.inf
            t = min(t_arr, t_srv)
            if t >= end:
                break
            self.clock.now_ns = max(self.clock.now_ns, int(t))
            if t_srv <= t_arr:
                self.q.get_nowait()
                self.sojourns_ns.append(round(self.q.last_sojourn_s * NS_PER_S))
                self.served += 1
                self.worker_free_at = self.clock() + self.service_ns
            else:
                self.offered += 1
                self.seq += 1
                d = self.q.offer(self.seq)
                self.decisions.append((self.clock(), d))
                if d.admitted:
                    self.admitted += 1
                    if self.q.depth == 1 and self.worker_free_at < self.clock():
                        self.worker_free_at = self.clock()
                assert gap is not None
                self.next_arrival += gap
        self.clock.now_ns = end
        if self.worker_free_at < end:
            # an idle worker cannot bank service time
            self.worker_free_at = end


# -- the cap and the depth threshold ---------------------------------------------------------


def test_at_the_cap_the_answer_is_shed_at_once_and_nothing_is_enqueued() -> None:
    q, _ = make_queue(3)
    assert [q.offer(i) for i in range(3)] == [ADMIT, ADMIT, ADMIT]
    d = q.offer(99)
    assert not d.admitted and d.reason == SHED
    assert isinstance(d, ShedDecision) and d.detail == d.cause == SHED_QUEUE_FULL
    assert q.shedder.last_cause == SHED_QUEUE_FULL
    assert d.retry_after_s > 0
    assert q.depth == 3
    assert q.drain_nowait() == [0, 1, 2]


def test_threshold_sheds_when_the_queue_would_exceed_it_even_below_max_depth() -> None:
    q, _ = make_queue(100, threshold=5)
    results = [q.offer(i).admitted for i in range(8)]
    assert results == [True] * 5 + [False] * 3
    assert q.shedder.shed_counts == {SHED_QUEUE_FULL: 3, SHED_CODEL: 0}


def test_shed_at_the_cap_costs_well_under_2ms_p99() -> None:
    """Rejection at the cap is cheap (wall-clock per call, loose bound for a busy box)."""
    q, _ = make_queue(10)
    for i in range(10):
        q.offer(i)
    costs = []
    for i in range(2000):
        t0 = time.perf_counter_ns()
        q.offer(i)
        costs.append(time.perf_counter_ns() - t0)
    costs.sort()
    assert costs[int(len(costs) * 0.99)] < 2_000_000


@settings(max_examples=200, deadline=None)
@given(
    max_depth=st.integers(1, 20),
    threshold=st.one_of(st.none(), st.integers(1, 20)),
    codel=st.booleans(),
    ops=st.lists(
        st.one_of(
            st.just(("offer", 0)),
            st.just(("get", 0)),
            st.tuples(st.just("advance"), st.integers(0, 50_000_000)),
        ),
        max_size=300,
    ),
)
def test_queue_never_exceeds_its_cap_and_stays_fifo(
    max_depth: int, threshold: int | None, codel: bool, ops: list[tuple[str, int]]
) -> None:
    """Random offer/get/advance sequences: depth <= cap (and <= threshold), FIFO, no loss."""
    if threshold is not None and threshold > max_depth:
        threshold = max_depth
    q, clock = make_queue(max_depth, threshold=threshold, codel=codel)
    cap = max_depth if threshold is None else threshold
    admitted: list[int] = []
    got: list[int] = []
    for n, (op, arg) in enumerate(ops):
        if op == "offer":
            d = q.offer(n)
            if d.admitted:
                admitted.append(n)
            else:
                assert d.reason == SHED and d.retry_after_s > 0
        elif op == "get":
            if q.depth:
                got.append(q.get_nowait())
            else:
                with pytest.raises(asyncio.QueueEmpty):
                    q.get_nowait()
        else:
            clock.advance_ns(arg)
        assert 0 <= q.depth <= cap <= q.max_depth
    assert got + q.drain_nowait() == admitted


# -- CoDel -----------------------------------------------------------------------------------


def test_short_bursts_that_drain_within_the_interval_shed_nothing_in_codel_mode() -> None:
    q, clock = make_queue(10_000, codel=True)
    sim = Sim(q, clock, capacity=10_000)
    for _ in range(20):  # 20 bursts of 300 items (30 ms of work), one every 200 ms
        for _ in range(300):
            sim.seq += 1
            assert q.offer(sim.seq).admitted
        sim.worker_free_at = max(sim.worker_free_at, clock())
        sim.run(arrival_rate=0, duration_s=0.2)
        assert q.depth == 0
    assert q.shedder.shed_counts == {SHED_QUEUE_FULL: 0, SHED_CODEL: 0}
    assert not q.shedding


def test_a_standing_queue_triggers_codel_shedding_and_bounds_sojourn() -> None:
    q, clock = make_queue(10_000, codel=True)
    sim = Sim(q, clock, capacity=1_000)
    sim.run(arrival_rate=1_500, duration_s=3.0)
    assert q.shedding
    assert q.shedder.shed_counts[SHED_CODEL] > 0
    assert q.shedder.shed_counts[SHED_QUEUE_FULL] == 0
    # once shedding, an admitted item waits about 2 x target, not the 10,000-deep queue
    late = sim.sojourns_ns[len(sim.sojourns_ns) // 2 :]
    assert max(late) < 0.025 * NS_PER_S
    shed = [d for _, d in sim.decisions if not d.admitted]  # type: ignore[attr-defined]
    assert all(isinstance(d, ShedDecision) and d.cause == SHED_CODEL for d in shed)
    assert all(d.retry_after_s > 0 for d in shed)


def test_a_stalled_consumer_counts_as_a_standing_queue() -> None:
    """Nothing dequeued for a whole interval while items wait: CoDel sheds new work."""
    q, clock = make_queue(10_000, codel=True)
    for i in range(5):
        assert q.offer(i).admitted
    clock.advance(0.25)
    d = q.offer(99)
    assert not d.admitted and isinstance(d, ShedDecision) and d.cause == SHED_CODEL
    assert q.shedding


def test_a_consumer_that_stalls_after_a_fast_dequeue_is_still_detected() -> None:
    """Quick dequeues, then silence for several intervals: the earlier samples do not mask it."""
    q, clock = make_queue(10_000, codel=True)
    clock.advance(0.5)  # idle: no calls at all
    for i in range(30):
        assert q.offer(i).admitted
    clock.advance(0.001)
    for _ in range(10):
        q.get_nowait()  # a worker takes a batch with ~1 ms sojourn, then hangs
    clock.advance(0.35)
    d = q.offer(99)
    assert isinstance(d, ShedDecision) and d.cause == SHED_CODEL
    assert q.shedding


@pytest.mark.parametrize("codel", [True, False], ids=["codel", "threshold"])
@pytest.mark.parametrize("overload", [2, 10])
def test_accepted_throughput_stays_at_least_90_percent_of_capacity(
    overload: int, codel: bool
) -> None:
    capacity = 1_000
    kwargs: dict[str, object] = {"codel": True} if codel else {"threshold": 50}
    q, clock = make_queue(10_000, **kwargs)
    sim = Sim(q, clock, capacity=capacity)
    sim.run(arrival_rate=capacity * overload, duration_s=5.0)
    assert sim.served >= 0.9 * capacity * 5.0
    assert sim.admitted >= 0.9 * capacity * 5.0
    assert sim.admitted <= capacity * 5.0 + q.depth + 1
    assert sim.offered - sim.admitted > (overload - 1) * capacity * 5.0 * 0.9


def test_dequeue_rate_estimate_tracks_the_service_rate_under_overload() -> None:
    q, clock = make_queue(10_000, codel=True)
    sim = Sim(q, clock, capacity=2_000)
    sim.run(arrival_rate=5_000, duration_s=2.0)
    rate = q.shedder.dequeue_rate
    assert rate is not None and 0.9 * 2_000 <= rate <= 1.1 * 2_000


@pytest.mark.parametrize("overload", [2, 10])
def test_shedding_stops_within_one_interval_plus_drain_time_after_overload(
    overload: int,
) -> None:
    capacity, interval_s = 1_000, 0.1
    q, clock = make_queue(10_000, codel=True, interval_s=interval_s)
    sim = Sim(q, clock, capacity=capacity)
    sim.run(arrival_rate=capacity * overload, duration_s=2.0)
    assert q.shedding
    ended = clock()
    drain_s = q.depth / (capacity - capacity * 0.5)
    step = 0.005
    stopped_at = None
    for _ in range(200):
        sim.run(arrival_rate=capacity * 0.5, duration_s=step)
        if not q.shedding:
            stopped_at = clock()
            break
    assert stopped_at is not None
    took = (stopped_at - ended) / NS_PER_S
    assert took <= interval_s + drain_s + 2 * step
    # and after that, nothing more is shed at half capacity
    before = dict(q.shedder.shed_counts)
    sim.run(arrival_rate=capacity * 0.5, duration_s=1.0)
    assert q.shedder.shed_counts == before


def test_without_codel_a_standing_queue_below_the_threshold_is_never_shed() -> None:
    q, clock = make_queue(10_000)
    sim = Sim(q, clock, capacity=1_000)
    sim.run(arrival_rate=1_200, duration_s=2.0)
    assert sim.admitted == sim.offered
    assert not q.shedding


def test_retry_after_reflects_the_drain_time_at_the_measured_rate() -> None:
    q, clock = make_queue(500)
    sim = Sim(q, clock, capacity=100)
    sim.run(arrival_rate=400, duration_s=6.0)
    assert q.depth == 500
    d = q.offer(-1)
    # one item must drain at ~100/s: clamped up to one interval
    assert d.retry_after_s == pytest.approx(0.1, rel=0.2)
    assert d.retry_after_header == "1"


def test_retry_after_is_positive_when_no_rate_is_known_yet() -> None:
    q, _ = make_queue(1)
    q.offer(1)
    d = q.offer(2)
    assert d.retry_after_s == 1.0 and isinstance(d, ShedDecision)


def test_shedder_used_directly_counts_sheds_by_cause() -> None:
    clock = FakeClock()
    s = LoadShedder(10, threshold=4, codel=True, clock=clock)
    assert s.admit(3) is ADMIT
    assert s.last_cause is None
    d = s.admit(4)
    assert isinstance(d, ShedDecision) and d.cause == SHED_QUEUE_FULL
    s.on_dequeue(int(0.05 * NS_PER_S))
    clock.advance(0.11)
    d = s.admit(3)
    assert isinstance(d, ShedDecision) and d.cause == SHED_CODEL == s.last_cause
    assert s.shed_counts == {SHED_QUEUE_FULL: 1, SHED_CODEL: 1}
    assert s.admit(0) is ADMIT  # an empty queue always admits


# -- async get -------------------------------------------------------------------------------


async def test_get_waits_for_an_offer_and_returns_items_in_order() -> None:
    q, clock = make_queue(10)
    task = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    assert not task.done()
    q.offer(1)
    q.offer(2)
    clock.advance(0.003)
    assert await task == 1
    assert q.last_sojourn_s == pytest.approx(0.003)
    assert await q.get() == 2


async def test_a_woken_getter_that_is_cancelled_passes_the_item_to_the_next() -> None:
    q, _ = make_queue(10)
    first = asyncio.ensure_future(q.get())
    second = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    q.offer(7)  # wakes `first` ...
    first.cancel()  # ... which is cancelled before it runs
    assert await asyncio.wait_for(second, 1.0) == 7
    assert first.cancelled()
    assert q.depth == 0


def test_head_age_and_drain_report_the_queue_state() -> None:
    q, clock = make_queue(10)
    assert q.head_age_s == 0.0
    q.offer(1)
    clock.advance(0.5)
    q.offer(2)
    assert q.head_age_s == pytest.approx(0.5)
    assert len(q) == 2
    assert q.drain_nowait() == [1, 2]
    assert q.depth == 0 and q.drain_nowait() == []


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"max_depth": 0}, "max_depth must be an integer >= 1"),
        ({"max_depth": -5}, "max_depth"),
        ({"max_depth": 2.5}, "max_depth"),
        ({"max_depth": True}, "max_depth"),
        (
            {"max_depth": 10, "threshold": 0},
            "threshold must be None or an integer in [1, max_depth=10]",
        ),
        ({"max_depth": 10, "threshold": 11}, "threshold"),
        ({"max_depth": 10, "target_s": 0}, "target_s must be in (0, interval_s=0.1)"),
        ({"max_depth": 10, "target_s": -1.0}, "target_s"),
        ({"max_depth": 10, "target_s": 0.1}, "target_s"),
        ({"max_depth": 10, "target_s": float("nan")}, "target_s"),
        ({"max_depth": 10, "interval_s": 0}, "interval_s must be in (0, 3600]"),
        ({"max_depth": 10, "interval_s": float("inf")}, "interval_s"),
    ],
)
def test_bad_parameters_raise_value_error_naming_the_parameter_and_range(
    kwargs: dict[str, object], needle: str
) -> None:
    with pytest.raises(ValueError) as err:
        LoadShedder(**kwargs)  # type: ignore[arg-type]
    assert needle in str(err.value)


def test_shed_queue_requires_a_load_shedder() -> None:
    with pytest.raises(ValueError, match="shedder must be a LoadShedder"):
        ShedQueue(42)  # type: ignore[arg-type]
