"""The pure load shapes and the arrival schedule (locustfiles/shapes.py, no locust import)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikegate.locustfiles.shapes import (
    DEMO_LOAD,
    SHAPES,
    ArrivalSchedule,
    LoadSection,
    Step,
    intended_per_second,
    load_params,
    make_shape,
)


def params(**kw: Any) -> LoadSection:
    base: dict[str, Any] = {"duration_s": 30, "warmup_s": 2, "base_rps": 100}
    base.update(kw)
    return load_params(base)


FLASH = {"shape": "flash_crowd", "peak_rps": 800, "spike_at_s": 10, "spike_for_s": 5}


# --- rate functions at key instants ---------------------------------------------------------


def test_steady_is_base_rps_during_the_run_and_zero_outside() -> None:
    s = make_shape(params())
    assert [s.rate_at(t) for t in (-0.1, 0, 1, 29.99, 30, 31)] == [0, 100, 100, 100, 0, 0]


def test_flash_crowd_jumps_and_drops_in_one_step() -> None:
    s = make_shape(params(**FLASH))
    assert s.rate_at(9.999) == 100
    assert s.rate_at(10.0) == 800
    assert s.rate_at(14.999) == 800
    assert s.rate_at(15.0) == 100


def test_flash_crowd_schedule_has_peak_seconds_exactly_in_the_spike_window() -> None:
    counts = intended_per_second(ArrivalSchedule(make_shape(params(**FLASH))))
    assert [counts[s] for s in range(8, 17)] == [100, 100, 800, 800, 800, 800, 800, 100, 100]


def test_step_follows_the_latest_step_and_starts_at_base() -> None:
    s = make_shape(params(shape="step", steps=[{"at_s": 5, "rps": 200}, {"at_s": 10, "rps": 50}]))
    assert [s.rate_at(t) for t in (0, 4.99, 5, 9.99, 10, 29)] == [100, 100, 200, 200, 50, 50]


def test_hot_publisher_share_is_set_only_inside_the_spike() -> None:
    s = make_shape(params(**{**FLASH, "shape": "hot_publisher", "hot_share": 0.7}))
    assert s.name == "hot_publisher"
    assert (s.hot_share_at(9.9), s.hot_share_at(10), s.hot_share_at(14.9), s.hot_share_at(15)) == (
        0,
        0.7,
        0.7,
        0,
    )
    assert s.rate_at(12) == 800


def test_sawtooth_ramps_each_period_and_drops_back() -> None:
    s = make_shape(params(shape="sawtooth", peak_rps=300, period_s=4, warmup_s=2))
    assert s.rate_at(1) == 100  # warmup at base
    assert s.rate_at(2) == 100
    assert s.rate_at(4) == pytest.approx(200)
    assert s.rate_at(5.999) == pytest.approx(300, abs=0.2)
    assert s.rate_at(6) == 100


def test_ramp_to_knee_rises_linearly_from_warmup_to_the_end() -> None:
    s = make_shape(params(shape="ramp_to_knee", peak_rps=700, warmup_s=2, duration_s=32))
    assert s.rate_at(1) == 100
    assert s.rate_at(2) == 100
    assert s.rate_at(17) == pytest.approx(400)
    assert s.rate_at(31.99) == pytest.approx(700, abs=1)


# --- the arrival schedule ---------------------------------------------------------------------


def test_uniform_schedule_sends_exactly_the_rate_every_second() -> None:
    counts = intended_per_second(ArrivalSchedule(make_shape(params(base_rps=37))))
    assert set(counts) == set(range(30))
    assert set(counts.values()) == {37}


def test_uniform_schedule_is_evenly_spaced() -> None:
    times = list(itertools.islice(ArrivalSchedule(make_shape(params(base_rps=10))), 20))
    gaps = {round(b - a, 6) for a, b in itertools.pairwise(times)}
    assert gaps == {0.1}


def test_poisson_schedule_is_deterministic_per_seed_and_differs_between_seeds() -> None:
    shape = make_shape(params(arrivals="poisson"))
    a = list(ArrivalSchedule(shape, seed=5))
    b = list(ArrivalSchedule(shape, seed=5))
    c = list(ArrivalSchedule(shape, seed=6))
    assert a == b
    assert a != c
    assert abs(len(a) - 3000) < 5 * 3000**0.5  # mean rate within 5 sd


def test_uniform_schedule_is_the_same_for_any_seed() -> None:
    shape = make_shape(params(**FLASH))
    assert list(ArrivalSchedule(shape, seed=1)) == list(ArrivalSchedule(shape, seed=2))


@pytest.mark.parametrize("arrivals", ["uniform", "poisson"])
def test_schedule_instants_increase_and_stay_within_the_run(arrivals: str) -> None:
    times = list(ArrivalSchedule(make_shape(params(arrivals=arrivals, **FLASH)), seed=3))
    assert times == sorted(times)
    assert times[0] >= 0 and times[-1] < 30


def test_process_shares_add_up_to_the_single_process_schedule() -> None:
    shape = make_shape(params(**FLASH))
    whole = intended_per_second(ArrivalSchedule(shape))
    parts = [intended_per_second(ArrivalSchedule(shape, index=i, count=3)) for i in range(3)]
    assert {s: sum(p.get(s, 0) for p in parts) for s in whole} == whole


def test_schedule_skips_arrivals_before_start_without_shifting_the_rest() -> None:
    shape = make_shape(params())
    full = [t for t in ArrivalSchedule(shape) if t >= 3.25]
    assert list(ArrivalSchedule(shape, start_s=3.25)) == full


def test_schedule_with_a_zero_rate_stretch_sends_nothing_there() -> None:
    shape = make_shape(params(shape="step", steps=[{"at_s": 5, "rps": 0}, {"at_s": 10, "rps": 20}]))
    counts = intended_per_second(ArrivalSchedule(shape))
    assert [counts.get(s, 0) for s in range(4, 11)] == [100, 0, 0, 0, 0, 0, 20]


@settings(max_examples=40, deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=2000),
    count=st.integers(min_value=1, max_value=4),
)
def test_uniform_total_matches_the_integral_of_the_rate(rate: float, count: int) -> None:
    shape = make_shape(params(duration_s=5, warmup_s=0, base_rps=rate))
    total = sum(len(list(ArrivalSchedule(shape, index=i, count=count))) for i in range(count))
    assert abs(total - rate * 5) <= count


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"shape": "spiky"}, "load.shape: Input should be 'steady'"),
        ({"duration_s": 0}, "load.duration_s: Input should be greater than 0"),
        ({"warmup_s": 40}, "load.warmup_s"),
        ({"base_rps": -1}, "load.base_rps: Input should be greater than or equal to 0"),
        ({"base_rps": "fast"}, "load.base_rps: Input should be a valid number"),
        ({"base_rps": "20"}, "load.base_rps: Input should be a valid number"),
        ({"base_rps": True}, "load.base_rps: Input should be a valid number"),
        ({"publishers": 0}, "load.publishers: Input should be greater than or equal to 1"),
        ({"publishers": 2.5}, "load.publishers: Input should be a valid integer"),
        ({"hot_publisher": "pub-9"}, "load.hot_publisher: 'pub-9' is not one of pub-1..pub-4"),
        ({"hot_share": 1.5}, "load.hot_share: Input should be less than or equal to 1"),
        ({"impression_rate": -0.1}, "load.impression_rate: Input should be greater"),
        ({"tmax_ms": 0}, "load.tmax_ms: Input should be greater than or equal to 1"),
        ({"client_timeout_s": 0}, "load.client_timeout_s: Input should be greater than 0"),
        ({"max_inflight": 0}, "load.max_inflight: Input should be greater than or equal to 1"),
        ({"processes": 65}, "load.processes: Input should be less than or equal to 64"),
        ({"arrivals": "bursty"}, "load.arrivals: Input should be 'uniform' or 'poisson'"),
        ({"mode": "half"}, "load.mode: Input should be 'open' or 'closed'"),
        ({"shape": "step"}, "load.steps: load.steps must list at least one"),
        ({"steps": [{"at_s": 5, "rps": 1}, {"at_s": 5, "rps": 2}]}, "load.steps.1.at_s: must be"),
        ({"steps": [{"at_s": 5}]}, "load.steps.0.rps: Field required"),
        ({"steps": [{"at_s": 5, "rps": -2}]}, "load.steps.0.rps: Input should be greater"),
        ({**FLASH, "spike_for_s": 0}, "load.spike_for_s: load.spike_for_s must be > 0"),
        ({**FLASH, "spike_at_s": 28}, "must end within load.duration_s"),
        ({**FLASH, "peak_rps": 50}, "load.peak_rps: load.peak_rps (50.0) must exceed"),
        ({"shape": "sawtooth", "period_s": 0}, "load.period_s: Input should be greater than 0"),
    ],
)
def test_bad_params_are_rejected_naming_the_field(kw: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError) as err:
        params(**kw)
    assert needle in str(err.value)


def test_unknown_keys_of_the_load_section_are_ignored() -> None:
    p = load_params({"base_rps": 10, "something_new": 1})
    assert p.base_rps == 10


def test_params_accept_the_scenario_models_load_env_json() -> None:
    p = load_params({"shape": "step", "steps": [{"at_s": 1.0, "rps": 5.0}], "duration_s": 10.0})
    assert p.steps == [Step(at_s=1.0, rps=5.0)]


def test_schedule_rejects_a_process_index_outside_the_count() -> None:
    with pytest.raises(ValueError, match=r"index must be in \[0, 1\]"):
        ArrivalSchedule(make_shape(params()), index=2, count=2)


@pytest.mark.parametrize("shape", SHAPES)
def test_the_default_load_without_env_is_valid_for_every_shape(shape: str) -> None:
    p = load_params(DEMO_LOAD, shape=shape)
    assert make_shape(p).rate_at(15) > 0
