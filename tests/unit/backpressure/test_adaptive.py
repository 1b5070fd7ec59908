"""Adaptive limits: lower on rising latency, recover, and always stay within [min, max]."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikegate.target.backpressure.adaptive import AdaptiveLimit, AIMDLimit, GradientLimit
from spikegate.target.backpressure.clock import FakeClock
from spikegate.target.backpressure.concurrency import ConcurrencyLimit

MS = 1_000_000


def feed(limit: AdaptiveLimit, windows: int, latency_ns: int, *, window: int = 10) -> None:
    """Feed `windows` full windows of samples taken at full utilisation."""
    for _ in range(windows * window):
        limit.on_sample(latency_ns, limit.limit, False)


# --- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [GradientLimit, AIMDLimit])
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_limit": 0}, r"min_limit must be an integer >= 1"),
        ({"max_limit": 0}, r"max_limit must be an integer >= 1"),
        ({"min_limit": 10, "max_limit": 5}, r"min_limit \(10\) must be <= max_limit \(5\)"),
        ({"initial_limit": 0}, r"initial_limit must be an integer between 1 and 1000"),
        ({"initial_limit": 2000}, r"initial_limit must be an integer between 1 and 1000"),
        ({"initial_limit": 2.5}, r"initial_limit must be an integer"),
    ],
)
def test_bad_bounds_are_rejected_naming_the_parameter(
    cls: type[GradientLimit] | type[AIMDLimit], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tolerance": 0.9}, r"tolerance must be a number in \[1.0, 2.0\]"),
        ({"tolerance": 2.5}, r"tolerance must be a number in \[1.0, 2.0\]"),
        ({"tolerance": math.nan}, r"tolerance must be a number in \[1.0, 2.0\]"),
        ({"smoothing": 0.0}, r"smoothing must be a number in \(0.0, 1.0\]"),
        ({"smoothing": 1.5}, r"smoothing must be a number in \(0.0, 1.0\]"),
        ({"window_samples": 0}, r"window_samples must be an integer >= 1"),
        ({"long_window": 0}, r"long_window must be an integer >= 1"),
        ({"queue_size": -1}, r"queue_size must be an integer >= 0"),
    ],
)
def test_bad_gradient_parameters_are_rejected_naming_the_parameter(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        GradientLimit(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backoff_ratio": 0.4}, r"backoff_ratio must be a number in \[0.5, 1.0"),
        ({"backoff_ratio": 1.0}, r"backoff_ratio must be a number in \[0.5, 1.0\)"),
        ({"backoff_ratio": math.nan}, r"backoff_ratio must be a number in \[0.5, 1.0"),
        ({"timeout_s": 0.0}, r"timeout_s must be a number in \(0.0, inf\]"),
        ({"timeout_s": math.inf}, r"timeout_s must be a finite number > 0"),
    ],
)
def test_bad_aimd_parameters_are_rejected_naming_the_parameter(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        AIMDLimit(**kwargs)  # type: ignore[arg-type]


def test_both_strategies_satisfy_the_adaptive_limit_protocol() -> None:
    assert isinstance(GradientLimit(), AdaptiveLimit)
    assert isinstance(AIMDLimit(), AdaptiveLimit)


# --- GradientLimit ---------------------------------------------------------------------


def test_gradient_steady_latency_at_full_use_grows_to_max_and_holds() -> None:
    limit = GradientLimit(20, max_limit=60, window_samples=10)
    feed(limit, 200, 1 * MS)
    assert limit.limit == 60
    assert limit.baseline_s == pytest.approx(0.001)


def test_gradient_changes_only_when_a_window_closes() -> None:
    limit = GradientLimit(50, max_limit=50, window_samples=10)
    feed(limit, 20, 1 * MS)
    for _ in range(9):
        assert limit.on_sample(50 * MS, 50, False) == 50
    assert limit.on_sample(50 * MS, 50, False) < 50


def test_gradient_latency_step_1ms_to_5ms_lowers_the_limit_within_a_few_windows() -> None:
    limit = GradientLimit(100, min_limit=5, max_limit=100, window_samples=10)
    feed(limit, 50, 1 * MS)
    assert limit.limit == 100
    history = []
    for _ in range(10):
        feed(limit, 1, 5 * MS)
        history.append(limit.limit)
    assert history[0] < 100  # the first window after the step already lowers it
    assert history[2] <= 80
    assert history == sorted(history, reverse=True)
    assert history[-1] <= 50


def test_gradient_recovers_when_latency_returns_to_normal() -> None:
    limit = GradientLimit(100, min_limit=5, max_limit=100, window_samples=10)
    feed(limit, 50, 1 * MS)
    feed(limit, 20, 5 * MS)
    lowered = limit.limit
    feed(limit, 200, 1 * MS)
    assert lowered < 40
    assert limit.limit == 100


def test_gradient_latency_within_tolerance_does_not_lower_the_limit() -> None:
    limit = GradientLimit(50, max_limit=50, tolerance=1.5, window_samples=10)
    feed(limit, 50, 1 * MS)
    feed(limit, 20, 1_400_000)  # 1.4 ms < 1.5 x 1 ms
    assert limit.limit == 50


def test_gradient_never_falls_below_min_limit_under_sustained_slowness() -> None:
    limit = GradientLimit(100, min_limit=7, max_limit=100, window_samples=5)
    feed(limit, 10, 1 * MS, window=5)
    for latency in (5 * MS, 50 * MS, 5_000 * MS):
        feed(limit, 200, latency, window=5)
        assert limit.limit >= 7
    # The long-run baseline absorbs a permanent shift, but it is slow: still far below max.
    assert limit.limit < 50


def test_gradient_a_window_with_a_dropped_call_backs_off() -> None:
    limit = GradientLimit(50, max_limit=50, window_samples=10)
    feed(limit, 20, 1 * MS)
    for _ in range(9):
        limit.on_sample(1 * MS, 50, False)
    assert limit.on_sample(0, 50, True) == 45


def test_gradient_app_limited_windows_do_not_raise_the_limit() -> None:
    limit = GradientLimit(40, max_limit=100, window_samples=10)
    for _ in range(500):
        limit.on_sample(1 * MS, 3, False)  # only 3 in flight against a limit of 40
    assert limit.limit == 40


def test_gradient_app_limited_windows_may_still_lower_the_limit() -> None:
    limit = GradientLimit(40, max_limit=100, window_samples=10)
    for _ in range(200):
        limit.on_sample(1 * MS, 3, False)
    for _ in range(50):
        limit.on_sample(10 * MS, 3, False)
    assert limit.limit < 40


def test_gradient_zero_latency_from_a_still_fake_clock_is_harmless() -> None:
    limit = GradientLimit(20, max_limit=40, window_samples=10)
    feed(limit, 100, 0)
    assert limit.limit == 40


# --- AIMDLimit -------------------------------------------------------------------------


def test_aimd_adds_one_per_utilised_sample_and_backs_off_on_drop_or_timeout() -> None:
    limit = AIMDLimit(10, max_limit=100, backoff_ratio=0.5, timeout_s=0.1)
    assert limit.on_sample(1 * MS, 10, False) == 11
    assert limit.on_sample(1 * MS, 10, False) == 12
    assert limit.on_sample(1 * MS, 1, False) == 12  # not utilised: no growth
    assert limit.on_sample(1 * MS, 12, True) == 6
    assert limit.on_sample(200 * MS, 6, False) == 3


# --- bounds for any sample sequence ----------------------------------------------------

_SAMPLES = st.lists(
    st.tuples(
        st.integers(-10 * MS, 10_000 * MS),  # latency, including a clock gone backwards
        st.integers(0, 5_000),  # inflight
        st.booleans(),  # dropped
    ),
    max_size=400,
)


@settings(max_examples=200, deadline=None)
@given(
    bounds=st.tuples(st.integers(1, 50), st.integers(0, 200), st.integers(0, 200)),
    window=st.integers(1, 20),
    tolerance=st.floats(1.0, 2.0),
    samples=_SAMPLES,
)
def test_gradient_limit_stays_within_min_and_max_for_any_samples(
    bounds: tuple[int, int, int],
    window: int,
    tolerance: float,
    samples: list[tuple[int, int, bool]],
) -> None:
    low, span, start = bounds
    high = low + span
    limit = GradientLimit(
        low + start % (span + 1),
        min_limit=low,
        max_limit=high,
        tolerance=tolerance,
        window_samples=window,
    )
    for latency, inflight, dropped in samples:
        answer = limit.on_sample(latency, inflight, dropped)
        assert answer == limit.limit
        assert low <= answer <= high


@settings(max_examples=200, deadline=None)
@given(low=st.integers(1, 20), span=st.integers(0, 100), samples=_SAMPLES)
def test_aimd_limit_stays_within_min_and_max_for_any_samples(
    low: int, span: int, samples: list[tuple[int, int, bool]]
) -> None:
    limit = AIMDLimit(low, min_limit=low, max_limit=low + span)
    for latency, inflight, dropped in samples:
        answer = limit.on_sample(latency, inflight, dropped)
        assert answer == limit.limit
        assert low <= answer <= low + span


@settings(max_examples=100, deadline=None)
@given(
    ceiling=st.integers(1, 40),
    latencies=st.lists(st.tuples(st.integers(0, 100 * MS), st.booleans()), max_size=300),
)
def test_bulkhead_limit_stays_within_min_and_ceiling_when_fed_through_release(
    ceiling: int, latencies: list[tuple[int, bool]]
) -> None:
    clock = FakeClock()
    adaptive = GradientLimit(ceiling, min_limit=1, max_limit=ceiling, window_samples=5)
    cl = ConcurrencyLimit(ceiling, clock=clock, adaptive=adaptive)
    for latency, dropped in latencies:
        while cl.try_acquire().admitted:
            pass
        assert cl.inflight <= ceiling
        cl.release(latency_ns=latency, dropped=dropped)
        assert 1 <= cl.limit <= ceiling
