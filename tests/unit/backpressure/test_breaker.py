"""Circuit breaker: every property of PATTERNS.md section 4, on a fake clock and a seeded rng."""

from __future__ import annotations

import itertools
import math
import random
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from spikegate.target.backpressure.breaker import (
    LEGAL_TRANSITIONS,
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    Permit,
)
from spikegate.target.backpressure.clock import NS_PER_S, FakeClock
from spikegate.target.backpressure.decision import BREAKER_OPEN

CLOSED = BreakerState.CLOSED
OPEN = BreakerState.OPEN
HALF_OPEN = BreakerState.HALF_OPEN
FORCED_OPEN = BreakerState.FORCED_OPEN
DISABLED = BreakerState.DISABLED

MS = 1_000_000
FAST_NS = 1 * MS

BASE: dict[str, Any] = dict(
    window_type="count",
    window_size=10,
    minimum_calls=10,
    failure_rate_threshold=0.5,
    slow_call_rate_threshold=1.0,
    slow_call_duration_s=0.080,
    wait_open_s=10.0,
    backoff_multiplier=2.0,
    max_wait_open_s=80.0,
    jitter=0.0,
    half_open_probes=3,
    half_open_max_wait_s=5.0,
)


class Rig:
    """A breaker on a fake clock that records every (old, new) transition."""

    def __init__(self, name: str = "dsp-a", seed: int = 7, **overrides: Any) -> None:
        self.clock = FakeClock()
        self.config = BreakerConfig(**{**BASE, **overrides})
        self.cb = CircuitBreaker(name, self.config, clock=self.clock, rng=random.Random(seed))
        self.seen: list[tuple[BreakerState, BreakerState]] = []
        self.cb.add_listener(lambda _n, old, new: self.seen.append((old, new)))

    def ok(self, duration_ns: int = FAST_NS) -> None:
        p = self.cb.try_acquire()
        assert p.admitted
        self.cb.on_success(p, duration_ns)

    def fail(self, duration_ns: int = FAST_NS) -> None:
        p = self.cb.try_acquire()
        assert p.admitted
        self.cb.on_failure(p, duration_ns)

    def trip(self) -> None:
        for _ in range(self.config.window_size):
            if self.cb.state is OPEN:
                break
            self.fail()
        assert self.cb.state is OPEN

    def to_half_open(self) -> None:
        """Trip (if closed), wait out the open period, and return with the breaker half-open."""
        if self.cb.state is CLOSED:
            self.trip()
        self.clock.now_ns = self.cb.open_until_ns
        assert self.cb.state is OPEN

    def open_wait_s(self) -> float:
        """The length of the open period that just started (the first reject's retry_after)."""
        p = self.cb.try_acquire()
        assert not p.admitted
        return p.decision.retry_after_s


# --- tripping: count window -----------------------------------------------------------------
def test_nine_failures_do_not_trip_below_minimum_calls() -> None:
    r = Rig()
    for _ in range(9):
        r.fail()
    assert r.cb.state is CLOSED
    assert r.seen == []


@pytest.mark.parametrize(
    "first_nine, tenth",
    [
        (["f"] * 9, "s"),  # 9 of 10 failed: the tenth (a success) completes the window
        (["s"] * 5 + ["f"] * 4, "f"),  # exactly 5 of 10
        (["f", "s"] * 4 + ["f"], "s"),  # 5 of 10, interleaved
    ],
)
def test_tenth_call_with_five_or_more_failures_trips_exactly_then(
    first_nine: list[str], tenth: str
) -> None:
    r = Rig()
    for o in first_nine:
        r.ok() if o == "s" else r.fail()
    assert r.cb.state is CLOSED and r.seen == []
    r.ok() if tenth == "s" else r.fail()
    assert r.cb.state is OPEN
    assert r.seen == [(CLOSED, OPEN)]


def test_tenth_call_with_only_four_failures_does_not_trip() -> None:
    r = Rig()
    for _ in range(4):
        r.fail()
    for _ in range(6):
        r.ok()
    assert r.cb.state is CLOSED
    snap = r.cb.snapshot()
    assert (snap.calls, snap.failures, snap.failure_rate) == (10, 4, 0.4)


def test_count_window_slides_oldest_call_out() -> None:
    """With 4 failures in the window, a new failure trips only if the call it evicts succeeded."""
    r = Rig()
    for o in "ffffssssss":  # oldest first: evicting an f keeps it at 4/10
        r.ok() if o == "s" else r.fail()
    r.fail()  # evicts f: f f f s s s s s s f = 4/10
    assert r.cb.state is CLOSED
    r.fail()  # evicts f: 4/10 again
    r.fail()
    r.fail()  # evicts the last original f: s s s s s s f f f f = 4/10
    assert r.cb.state is CLOSED
    r.fail()  # evicts s: 5/10
    assert r.cb.state is OPEN


def test_failures_that_slide_out_of_the_count_window_are_forgotten() -> None:
    r = Rig()
    for o in "ffffssssss" + "ssss" + "ffff":  # the first four failures slide out: 4/10 again
        r.ok() if o == "s" else r.fail()
    assert r.cb.state is CLOSED
    assert r.cb.snapshot().failures == 4
    r.fail()  # 5/10
    assert r.cb.state is OPEN


def test_slow_calls_that_slide_out_of_the_count_window_are_forgotten() -> None:
    r = Rig(slow_call_rate_threshold=0.5)
    for _ in range(4):
        r.fail(150 * MS)  # slow failures: count toward both rates
    for _ in range(10):
        r.ok()
    assert r.cb.snapshot().slow_calls == 0
    for _ in range(4):
        r.ok(150 * MS)
    assert r.cb.state is CLOSED
    r.ok(150 * MS)
    assert r.cb.state is OPEN


# --- tripping: slow calls -------------------------------------------------------------------
def test_dsp_answering_in_150ms_trips_on_slow_calls_alone() -> None:
    """A DSP answering 200 in 150 ms, against an 80 ms slow threshold, trips with no failure."""
    r = Rig(slow_call_rate_threshold=0.5)
    for _ in range(9):
        r.ok(150 * MS)
    assert r.cb.state is CLOSED
    r.ok(150 * MS)
    assert r.cb.state is OPEN
    assert r.cb.snapshot().failures == 0


def test_calls_just_under_the_slow_threshold_never_trip() -> None:
    r = Rig(slow_call_rate_threshold=0.5)
    for _ in range(100):
        r.ok(80 * MS - 1)
    assert r.cb.state is CLOSED
    r2 = Rig(slow_call_rate_threshold=0.5)
    for _ in range(10):
        r2.ok(80 * MS)  # duration == threshold counts as slow
    assert r2.cb.state is OPEN


def test_slow_failures_count_toward_both_rates() -> None:
    r = Rig(failure_rate_threshold=1.0, slow_call_rate_threshold=0.5)
    for _ in range(5):
        r.fail(150 * MS)
    for _ in range(4):
        r.ok()
    assert r.cb.state is CLOSED
    r.ok()
    assert r.cb.state is OPEN


# --- open -----------------------------------------------------------------------------------
def test_open_rejects_everything_with_the_remaining_wait() -> None:
    r = Rig()
    r.trip()
    permits = [r.cb.try_acquire() for _ in range(1000)]
    assert sum(p.admitted for p in permits) == 0
    assert {p.decision.reason for p in permits} == {BREAKER_OPEN}
    assert permits[0].decision.retry_after_s == pytest.approx(10.0)
    r.clock.advance(3.25)
    p = r.cb.try_acquire()
    assert not p.admitted
    assert p.decision.retry_after_s == pytest.approx(6.75)
    assert p.decision.retry_after_header == "7"
    assert r.cb.snapshot().rejected_total == 1001


def test_open_moves_to_half_open_lazily_on_the_first_acquire_after_the_wait() -> None:
    r = Rig()
    r.trip()
    r.clock.advance(10.0)
    r.clock.advance_ns(-1)
    assert not r.cb.try_acquire().admitted
    r.clock.advance_ns(1)
    assert r.cb.state is OPEN  # nothing has asked yet
    assert r.cb.try_acquire().admitted
    assert r.cb.state is HALF_OPEN
    assert r.seen == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]


def test_open_reject_is_cheap() -> None:
    """The no-bid fallback (an open breaker's reject) costs well under 100 us (loose bound).

    The best of five batches: a busy machine can stall one batch, never make the code slower;
    code that is slow (or blocks) is slow in every batch.
    """
    r = Rig()
    r.trip()
    n = 1_000
    batches = []
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            r.cb.try_acquire()
        batches.append((time.perf_counter_ns() - t0) / n)
    assert min(batches) < 100_000, batches


# --- half-open ------------------------------------------------------------------------------
def test_half_open_admits_exactly_k_probes_and_rejects_probe_k_plus_1() -> None:
    r = Rig(half_open_probes=3)
    r.to_half_open()
    permits = [r.cb.try_acquire() for _ in range(50)]
    assert [p.admitted for p in permits[:4]] == [True, True, True, False]
    assert sum(p.admitted for p in permits) == 3
    assert r.cb.state is HALF_OPEN
    rejected = permits[3].decision
    assert rejected.reason == BREAKER_OPEN
    assert rejected.retry_after_s == pytest.approx(5.0)  # until the half-open period must end


def test_successful_probes_close_the_breaker_with_an_empty_window() -> None:
    r = Rig(half_open_probes=3)
    r.to_half_open()
    probes = [r.cb.try_acquire() for _ in range(3)]
    r.cb.on_success(probes[0], FAST_NS)
    r.cb.on_success(probes[1], FAST_NS)
    assert r.cb.state is HALF_OPEN  # closes only once all k results are in
    r.cb.on_success(probes[2], FAST_NS)
    assert r.cb.state is CLOSED
    assert r.seen == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    for _ in range(9):
        r.fail()
    assert r.cb.state is CLOSED  # the window started afresh: minimum_calls again


def test_probe_failure_rate_over_the_k_results_reopens() -> None:
    r = Rig(half_open_probes=4)
    r.to_half_open()
    probes = [r.cb.try_acquire() for _ in range(4)]
    r.cb.on_failure(probes[0], FAST_NS)
    assert r.cb.state is HALF_OPEN  # 1/4 < 50%: can still close
    r.cb.on_failure(probes[1], FAST_NS)
    assert r.cb.state is OPEN  # 2/4 >= 50% whatever the last two say
    assert r.seen[-1] == (HALF_OPEN, OPEN)
    r.cb.on_success(probes[2], FAST_NS)  # late probes of the failed half-open period: void
    r.cb.on_success(probes[3], FAST_NS)
    assert r.cb.state is OPEN


def test_one_failed_probe_of_four_still_closes_at_fifty_percent_threshold() -> None:
    r = Rig(half_open_probes=4)
    r.to_half_open()
    probes = [r.cb.try_acquire() for _ in range(4)]
    r.cb.on_failure(probes[0], FAST_NS)
    for p in probes[1:]:
        r.cb.on_success(p, FAST_NS)
    assert r.cb.state is CLOSED


def test_slow_probes_reopen() -> None:
    r = Rig(half_open_probes=2, slow_call_rate_threshold=0.5)
    r.to_half_open()
    probes = [r.cb.try_acquire() for _ in range(2)]
    r.cb.on_success(probes[0], 150 * MS)
    assert r.cb.state is OPEN


def test_cancelled_probe_gives_its_permit_back_and_counts_nothing() -> None:
    r = Rig(half_open_probes=2)
    r.to_half_open()
    a, b = r.cb.try_acquire(), r.cb.try_acquire()
    assert a.admitted and b.admitted
    assert not r.cb.try_acquire().admitted
    r.cb.on_ignore(a)
    c = r.cb.try_acquire()
    assert c.admitted
    assert not r.cb.try_acquire().admitted
    r.cb.on_success(b, FAST_NS)
    assert r.cb.state is HALF_OPEN  # the ignored probe is not a result: 1 of 2
    r.cb.on_success(c, FAST_NS)
    assert r.cb.state is CLOSED


def test_duplicate_reports_cannot_exceed_the_probes_issued() -> None:
    r = Rig(half_open_probes=3)
    r.to_half_open()
    p = r.cb.try_acquire()
    for _ in range(5):
        r.cb.on_success(p, FAST_NS)
    assert r.cb.state is HALF_OPEN  # one probe out, so one result counted
    r.cb.on_ignore(p)  # nothing outstanding: no extra permit appears
    assert sum(r.cb.try_acquire().admitted for _ in range(10)) == 2


def test_half_open_max_wait_reopens_when_a_probe_is_lost() -> None:
    r = Rig(half_open_probes=2, half_open_max_wait_s=5.0)
    r.to_half_open()
    lost, back = r.cb.try_acquire(), r.cb.try_acquire()
    r.cb.on_success(back, FAST_NS)
    r.clock.advance(4.999)
    assert not r.cb.try_acquire().admitted
    assert r.cb.state is HALF_OPEN
    r.clock.advance(0.001)
    p = r.cb.try_acquire()
    assert not p.admitted
    assert r.cb.state is OPEN
    assert r.seen[-1] == (HALF_OPEN, OPEN)
    assert p.decision.retry_after_s == pytest.approx(20.0)  # a re-open: backoff doubled
    r.cb.on_success(lost, FAST_NS)  # the lost probe turns up: too late, counts nothing
    assert r.cb.state is OPEN


def test_probe_result_after_the_half_open_deadline_reopens_instead_of_closing() -> None:
    r = Rig(half_open_probes=1)
    r.to_half_open()
    p = r.cb.try_acquire()
    r.clock.advance(5.0)
    r.cb.on_success(p, FAST_NS)
    assert r.cb.state is OPEN


# --- generations ----------------------------------------------------------------------------
def test_results_from_before_a_state_change_are_ignored() -> None:
    r = Rig(half_open_probes=1)
    stale = [r.cb.try_acquire() for _ in range(10)]
    r.trip()
    gen_open = r.cb.generation
    for p in stale:
        r.cb.on_failure(p, FAST_NS)
    assert r.cb.generation == gen_open
    r.to_half_open()
    probe = r.cb.try_acquire()
    for p in stale[:5]:  # closed-state permits must not pose as probe results, either way
        r.cb.on_failure(p, FAST_NS)
    assert r.cb.state is HALF_OPEN
    r.cb.on_success(stale[5], FAST_NS)
    assert r.cb.state is HALF_OPEN
    r.cb.on_success(probe, FAST_NS)
    assert r.cb.state is CLOSED
    for p in stale:  # nor count in the new closed period
        r.cb.on_failure(p, FAST_NS)
        r.cb.on_success(p, FAST_NS)
    assert r.cb.state is CLOSED
    assert r.cb.snapshot().calls == 0


def test_rejected_permits_carry_no_generation_and_their_results_count_nothing() -> None:
    r = Rig()
    r.trip()
    rejected = r.cb.try_acquire()
    assert rejected.generation == -1
    r.to_half_open()
    r.cb.on_success(rejected, FAST_NS)
    r.cb.on_ignore(rejected)
    assert sum(r.cb.try_acquire().admitted for _ in range(5)) == 3


def test_every_transition_bumps_the_generation() -> None:
    r = Rig(half_open_probes=1)
    gens = [r.cb.generation]
    r.cb.add_listener(lambda *_: gens.append(r.cb.generation))
    r.trip()
    r.to_half_open()
    r.ok()
    assert len(gens) == 4
    assert gens == sorted(set(gens))


# --- backoff and jitter ---------------------------------------------------------------------
def _reopen_via_failed_probe(r: Rig) -> float:
    r.to_half_open()
    r.fail()
    assert r.cb.state is OPEN
    return r.open_wait_s()


def test_backoff_doubles_on_each_reopen_is_capped_and_resets_after_a_close() -> None:
    r = Rig(half_open_probes=1, wait_open_s=10.0, backoff_multiplier=2.0, max_wait_open_s=80.0)
    r.trip()
    waits = [r.open_wait_s()]
    for _ in range(5):
        waits.append(_reopen_via_failed_probe(r))
    assert waits == pytest.approx([10.0, 20.0, 40.0, 80.0, 80.0, 80.0])
    r.to_half_open()
    r.ok()
    assert r.cb.state is CLOSED
    r.trip()
    assert r.open_wait_s() == pytest.approx(10.0)


def test_jitter_stays_within_bounds_and_varies() -> None:
    r = Rig(half_open_probes=1, jitter=0.5, wait_open_s=10.0, max_wait_open_s=40.0)
    r.trip()
    waits = [r.open_wait_s()]
    for _ in range(30):
        waits.append(_reopen_via_failed_probe(r))
    nominal = [10.0, 20.0] + [40.0] * 29
    for w, n in zip(waits, nominal, strict=True):
        assert n * 0.5 <= w <= n
    assert len({round(w, 6) for w in waits[2:]}) > 20  # jitter actually applied


def test_same_seed_gives_the_same_waits() -> None:
    def waits(seed: int) -> list[float]:
        r = Rig(seed=seed, half_open_probes=1, jitter=0.3)
        r.trip()
        return [r.open_wait_s()] + [_reopen_via_failed_probe(r) for _ in range(5)]

    assert waits(1) == waits(1)
    assert waits(1) != waits(2)


# --- independence ---------------------------------------------------------------------------
def test_two_breakers_are_independent() -> None:
    clock = FakeClock()
    cfg = BreakerConfig(**BASE)
    a = CircuitBreaker("dsp-a", cfg, clock=clock)
    b = CircuitBreaker("dsp-b", cfg, clock=clock)
    for _ in range(4):
        p = b.try_acquire()
        b.on_failure(p, FAST_NS)
    for _ in range(10):
        p = a.try_acquire()
        a.on_failure(p, FAST_NS)
    assert a.state is OPEN
    assert b.state is CLOSED
    assert sum(b.try_acquire().admitted for _ in range(100)) == 100
    snap = b.snapshot()
    assert (snap.calls, snap.failures) == (4, 4)


# --- time window ----------------------------------------------------------------------------
def test_time_window_forgets_buckets_older_than_the_window() -> None:
    r = Rig(window_type="time", window_size=10, minimum_calls=5)
    for _ in range(4):
        r.fail()
    r.clock.advance(10.0)  # those four are now outside the last 10 seconds
    for _ in range(4):
        r.fail()
    assert r.cb.state is CLOSED
    assert r.cb.snapshot().calls == 4


def test_time_window_trips_on_failures_spread_within_the_window() -> None:
    r = Rig(window_type="time", window_size=10, minimum_calls=5)
    for _ in range(4):
        r.fail()
        r.clock.advance(2.0)
    assert r.cb.state is CLOSED
    r.clock.advance(1.0)  # t = 9 s: all four are still in the window
    r.fail()
    assert r.cb.state is OPEN


def test_time_window_forgetting_old_successes_can_trip_on_the_next_call() -> None:
    r = Rig(window_type="time", window_size=10, minimum_calls=5)
    for _ in range(10):
        r.ok()
    r.clock.advance(1.0)
    for _ in range(5):
        r.fail()
    assert r.cb.state is CLOSED  # 5 / 15
    r.clock.advance(9.0)  # the ten successes leave the window; the five failures stay
    r.ok()
    assert r.cb.state is OPEN  # 5 / 6


def test_time_window_long_idle_clears_everything() -> None:
    r = Rig(window_type="time", window_size=60, minimum_calls=1, failure_rate_threshold=1.0)
    for _ in range(3):
        r.ok()
    r.clock.advance(3600.0)
    assert r.cb.snapshot().calls == 0
    r.fail()
    assert r.cb.state is OPEN  # 1 / 1: nothing of the hour-old successes remains


# --- consecutive-failures mode --------------------------------------------------------------
def test_consecutive_mode_trips_on_the_nth_consecutive_failure() -> None:
    r = Rig(consecutive_failures=5)
    for _ in range(4):
        r.fail()
    r.ok()  # breaks the run
    for _ in range(4):
        r.fail()
    assert r.cb.state is CLOSED  # 8 of 9 failed, but never 5 in a row
    r.fail()
    assert r.cb.state is OPEN
    assert r.seen == [(CLOSED, OPEN)]


def test_consecutive_mode_ignores_window_rates() -> None:
    r = Rig(consecutive_failures=3, slow_call_rate_threshold=0.1)
    for _ in range(40):
        r.fail()
        r.fail()
        r.ok(150 * MS)
    assert r.cb.state is CLOSED


def test_consecutive_mode_half_open_reopens_on_any_probe_failure() -> None:
    r = Rig(consecutive_failures=2, half_open_probes=3)
    r.to_half_open()
    r.ok()
    r.fail()
    assert r.cb.state is OPEN
    r.to_half_open()
    for _ in range(3):
        r.ok()
    assert r.cb.state is CLOSED


# --- forced open, disabled, reset -----------------------------------------------------------
def test_forced_open_rejects_everything_until_reset() -> None:
    r = Rig()
    r.cb.force_open()
    assert r.cb.state is FORCED_OPEN
    r.clock.advance(1e6)
    permits = [r.cb.try_acquire() for _ in range(100)]
    assert sum(p.admitted for p in permits) == 0
    assert permits[0].decision.reason == BREAKER_OPEN
    assert math.isfinite(permits[0].decision.retry_after_s)
    r.cb.reset()
    assert r.cb.state is CLOSED
    assert r.cb.try_acquire().admitted
    assert r.seen == [(CLOSED, FORCED_OPEN), (FORCED_OPEN, CLOSED)]


def test_disabled_admits_everything_and_records_nothing() -> None:
    r = Rig()
    r.cb.disable()
    for _ in range(1000):
        r.fail(150 * MS)
    assert r.cb.state is DISABLED
    assert r.cb.snapshot().calls == 0
    r.cb.reset()
    for _ in range(9):
        r.fail()
    assert r.cb.state is CLOSED


def test_reset_voids_permits_in_flight_and_forgets_the_backoff() -> None:
    r = Rig()
    stale = [r.cb.try_acquire() for _ in range(10)]
    r.cb.reset()
    for p in stale:
        r.cb.on_failure(p, FAST_NS)
    assert r.cb.state is CLOSED
    assert r.seen == []  # already closed: no transition to report
    r.to_half_open()
    r.fail()  # re-open with backoff
    r.cb.reset()
    r.trip()
    assert r.open_wait_s() == pytest.approx(10.0)


def test_a_failing_listener_does_not_wedge_the_breaker(caplog: pytest.LogCaptureFixture) -> None:
    r = Rig()

    def boom(*_: object) -> None:
        raise RuntimeError("listener bug")

    r.cb.add_listener(boom)
    r.trip()
    assert r.cb.state is OPEN
    assert r.seen == [(CLOSED, OPEN)]
    assert "listener failed" in caplog.text


def test_closed_state_admits_share_one_permit_per_generation() -> None:
    """The closed fast path allocates nothing per call."""
    r = Rig()
    first = r.cb.try_acquire()
    assert r.cb.try_acquire() is first
    r.cb.reset()
    assert r.cb.try_acquire() is not first


# --- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("window_type", "sliding", '"count" or "time"'),
        ("window_size", 0, "[1, "),
        ("window_size", 2.5, "an int"),
        ("minimum_calls", 11, "[1, window_size=10]"),
        ("minimum_calls", 0, "[1, window_size=10]"),
        ("failure_rate_threshold", 0.0, "(0, 1]"),
        ("failure_rate_threshold", 1.5, "(0, 1]"),
        ("failure_rate_threshold", math.nan, "(0, 1]"),
        ("slow_call_rate_threshold", -0.1, "(0, 1]"),
        ("slow_call_duration_s", 0.0, "> 0"),
        ("consecutive_failures", 0, ">= 1"),
        ("wait_open_s", -1.0, "> 0"),
        ("wait_open_s", math.inf, "finite"),
        ("backoff_multiplier", 0.5, ">= 1"),
        ("max_wait_open_s", 5.0, ">= wait_open_s=10.0"),
        ("jitter", 1.5, "[0, 1]"),
        ("half_open_probes", 0, ">= 1"),
        ("half_open_max_wait_s", 0.0, "> 0"),
    ],
)
def test_bad_config_raises_value_error_naming_field_and_range(
    field: str, value: object, allowed: str
) -> None:
    with pytest.raises(ValueError, match=rf"BreakerConfig\.{field} must be") as info:
        BreakerConfig(**{**BASE, field: value})
    assert allowed in str(info.value)


def test_time_window_minimum_calls_may_exceed_window_seconds() -> None:
    cfg = BreakerConfig(**{**BASE, "window_type": "time", "window_size": 5, "minimum_calls": 50})
    assert cfg.minimum_calls == 50


def test_bad_breaker_arguments_raise_value_error() -> None:
    with pytest.raises(ValueError, match="name"):
        CircuitBreaker("", BreakerConfig())
    r = Rig()
    p = r.cb.try_acquire()
    with pytest.raises(ValueError, match="duration_ns must be >= 0"):
        r.cb.on_success(p, -1)
    with pytest.raises(ValueError, match="duration_ns must be >= 0"):
        r.cb.on_failure(p, -5)


def test_default_config_is_valid() -> None:
    cb = CircuitBreaker("dsp", BreakerConfig())
    assert cb.state is CLOSED


# --- the window against a naive reference ----------------------------------------------------
OUTCOMES = st.sampled_from(["ok", "slow", "fail", "slowfail"])


def _reference_trip_index(events: list[tuple[float, str]], cfg: BreakerConfig) -> int | None:
    """The index of the call that trips, recomputing the window from scratch each time."""
    history: list[tuple[int, str]] = []  # (second, outcome)
    now_ns = FakeClock().now_ns
    for i, (dt, outcome) in enumerate(events):
        now_ns += round(dt * NS_PER_S)
        history.append((now_ns // NS_PER_S, outcome))
        if cfg.window_type == "count":
            window = [o for _, o in history[-cfg.window_size :]]
        else:
            sec = now_ns // NS_PER_S
            window = [o for s, o in history if s > sec - cfg.window_size]
        n = len(window)
        fails = sum("fail" in o for o in window)
        slows = sum("slow" in o for o in window)
        if n >= cfg.minimum_calls and (
            fails / n >= cfg.failure_rate_threshold or slows / n >= cfg.slow_call_rate_threshold
        ):
            return i
    return None


@settings(max_examples=300, deadline=None)
@given(
    window_type=st.sampled_from(["count", "time"]),
    size=st.integers(1, 12),
    min_frac=st.floats(0.01, 1.0),
    f=st.sampled_from([0.1, 0.25, 0.3, 0.5, 0.7, 1.0]),
    s=st.sampled_from([0.2, 0.5, 1.0]),
    events=st.lists(st.tuples(st.sampled_from([0.0, 0.0, 0.3, 1.0, 4.0]), OUTCOMES), max_size=60),
)
def test_window_trips_exactly_when_a_naive_recount_says_so(
    window_type: str,
    size: int,
    min_frac: float,
    f: float,
    s: float,
    events: list[tuple[float, str]],
) -> None:
    min_calls = max(1, math.ceil(min_frac * size))
    r = Rig(
        window_type=window_type,
        window_size=size,
        minimum_calls=min_calls,
        failure_rate_threshold=f,
        slow_call_rate_threshold=s,
    )
    expected = _reference_trip_index(events, r.config)
    tripped_at = None
    for i, (dt, outcome) in enumerate(events):
        r.clock.advance(dt)
        duration = 150 * MS if "slow" in outcome else FAST_NS
        r.fail(duration) if "fail" in outcome else r.ok(duration)
        if r.cb.state is OPEN:
            tripped_at = i
            break
    assert tripped_at == expected


# --- the state machine under any sequence -----------------------------------------------------
AUTOMATIC = frozenset({(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED), (HALF_OPEN, OPEN)})


class BreakerMachine(RuleBasedStateMachine):
    """Any interleaving of acquire / success / failure / ignore / time / operator actions."""

    @initialize(
        window_type=st.sampled_from(["count", "time"]),
        consecutive=st.sampled_from([None, 2]),
        probes=st.integers(1, 3),
        seed=st.integers(0, 2**16),
    )
    def setup(self, window_type: str, consecutive: int | None, probes: int, seed: int) -> None:
        self.rig = Rig(
            seed=seed,
            window_type=window_type,
            window_size=4,
            minimum_calls=2,
            consecutive_failures=consecutive,
            half_open_probes=probes,
            wait_open_s=1.0,
            max_wait_open_s=4.0,
            jitter=0.5,
            half_open_max_wait_s=2.0,
        )
        self.cb = self.rig.cb
        self.outstanding: list[Permit] = []
        self.mark = 0  # index into rig.seen where the current rule's transitions start
        self.half_open_gen = -1
        self.admitted_this_half_open = 0

    def _begin(self) -> None:
        self.mark = len(self.rig.seen)

    def _check_automatic(self) -> None:
        for t in self.rig.seen[self.mark :]:
            assert t in AUTOMATIC, t

    @rule()
    def acquire(self) -> None:
        self._begin()
        before = self.cb.state
        p = self.cb.try_acquire()
        if before is FORCED_OPEN:
            assert not p.admitted
        if before is DISABLED or before is CLOSED:
            assert p.admitted
        if p.admitted:
            self.outstanding.append(p)
            if self.cb.state is HALF_OPEN:
                if self.cb.generation != self.half_open_gen:
                    self.half_open_gen = self.cb.generation
                    self.admitted_this_half_open = 0
                self.admitted_this_half_open += 1
        else:
            assert p.decision.reason == BREAKER_OPEN
            assert p.decision.retry_after_s >= 0
        self._check_automatic()

    @precondition(lambda self: self.outstanding)
    @rule(i=st.integers(0, 50), kind=st.sampled_from(["ok", "slow", "fail", "ignore"]))
    def report(self, i: int, kind: str) -> None:
        self._begin()
        p = self.outstanding.pop(i % len(self.outstanding))
        if kind == "ignore":
            self.cb.on_ignore(p)
            if p.generation == self.half_open_gen and self.cb.generation == p.generation:
                self.admitted_this_half_open -= 1
        elif kind == "fail":
            self.cb.on_failure(p, FAST_NS)
        else:
            self.cb.on_success(p, 150 * MS if kind == "slow" else FAST_NS)
        self._check_automatic()

    @rule(seconds=st.sampled_from([0.001, 0.5, 1.0, 2.5, 10.0]))
    def advance(self, seconds: float) -> None:
        self.rig.clock.advance(seconds)

    @rule(action=st.sampled_from(["force_open", "disable", "reset"]))
    def operator(self, action: str) -> None:
        self._begin()
        getattr(self.cb, action)()
        target = {"force_open": FORCED_OPEN, "disable": DISABLED, "reset": CLOSED}[action]
        assert self.cb.state is target
        assert all(new is target for _, new in self.rig.seen[self.mark :])
        assert len(self.rig.seen) - self.mark <= 1

    @invariant()
    def transitions_are_legal_and_chained(self) -> None:
        seen = self.rig.seen
        for t in seen:
            assert t in LEGAL_TRANSITIONS
            assert t[0] is not t[1]
        for (_, new), (old, _) in itertools.pairwise(seen):
            assert new is old
        if seen:
            assert seen[-1][1] is self.cb.state

    @invariant()
    def half_open_never_has_more_than_k_probes_out(self) -> None:
        if self.cb.state is HALF_OPEN and self.cb.generation == self.half_open_gen:
            assert 0 <= self.admitted_this_half_open <= self.rig.config.half_open_probes


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
