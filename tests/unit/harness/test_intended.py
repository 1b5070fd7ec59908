"""The harness's own schedule of intended arrivals (harness/intended.py).

Hand computations per shape, then a cross-check against the generator's own shape code
(spikegate.locustfiles.shapes imports no locust, so a test may run it): the per-second
arrivals of its ArrivalSchedule against expected_arrivals, for shipped scenarios and for the
shapes no shipped scenario uses, with one and several processes, uniform and Poisson.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from spikegate.contract.load import SHAPES, LoadSection
from spikegate.harness.intended import (
    ScheduleCount,
    comparable,
    compare_rows,
    cumulative_arrivals,
    expected_arrivals,
    expected_per_second,
    rate_at,
    recorded_bid_intended,
    schedule_tolerance,
)
from spikegate.harness.scenario import load_scenario
from spikegate.locustfiles.shapes import ArrivalSchedule, intended_per_second, make_shape

REPO = Path(__file__).resolve().parents[3]
SCENARIOS = sorted((REPO / "scenarios").glob("*.toml"))


def load(**kw: Any) -> LoadSection:
    return LoadSection.model_validate(kw)


# One load per shape, with its hand-computed integrals: {(start, end): arrivals}.
HAND: dict[str, tuple[LoadSection, dict[tuple[float, float], float]]] = {
    "steady": (
        load(shape="steady", duration_s=30.0, base_rps=50.0),
        # whole run; clipped before 0 and after the end; a fractional window
        {(0, 30): 1500, (-5, 2): 100, (29, 40): 50, (2.5, 3.25): 37.5},
    ),
    "step": (
        load(
            shape="step",
            duration_s=30.0,
            base_rps=50.0,
            steps=[{"at_s": 10.0, "rps": 100.0}, {"at_s": 20.0, "rps": 150.0}],
        ),
        # 10 x 50 + 10 x 100 + 10 x 150; 5 x 50 + 5 x 100; inside the last step
        {(0, 30): 3000, (5, 15): 750, (22, 24): 300, (10, 10): 0},
    ),
    "flash_crowd": (
        load(
            shape="flash_crowd",
            duration_s=60.0,
            base_rps=100.0,
            peak_rps=800.0,
            spike_at_s=20.0,
            spike_for_s=15.0,
        ),
        # 45 x 100 + 15 x 800; the spike's end: 5 x 800 + 5 x 100; its second 19 and 20
        {(0, 60): 16500, (30, 40): 4500, (19, 20): 100, (20, 21): 800},
    ),
    "hot_publisher": (
        load(
            shape="hot_publisher",
            duration_s=50.0,
            base_rps=120.0,
            peak_rps=600.0,
            spike_at_s=15.0,
            spike_for_s=15.0,
        ),
        # 35 x 120 + 15 x 600 (the hot share moves publishers, not the rate)
        {(0, 50): 13200, (10, 20): 5 * 120 + 5 * 600},
    ),
    "sawtooth": (
        load(
            shape="sawtooth",
            duration_s=30.0,
            warmup_s=5.0,
            base_rps=50.0,
            peak_rps=150.0,
            period_s=10.0,
        ),
        # teeth start at 5, 15, 25. Warmup 5 x 50; two whole teeth averaging 100; half a
        # tooth 50 -> 100 averaging 75. [10, 20): 100 -> 150 (625), 50 -> 100 (375).
        # Across a drop, [14, 16): 140 -> 150 (145), then 50 -> 60 (55).
        {(0, 30): 250 + 2000 + 375, (5, 10): 375, (10, 20): 625 + 375, (14, 16): 145 + 55},
    ),
    "ramp_to_knee": (
        load(
            shape="ramp_to_knee",
            duration_s=25.0,
            warmup_s=5.0,
            base_rps=50.0,
            peak_rps=250.0,
        ),
        # warmup 5 x 50; 20 s ramp 50 -> 250 averaging 150; the last 10 s: 150 -> 250
        {(0, 25): 250 + 3000, (15, 25): 2000, (0, 5): 250},
    ),
}


def test_every_shape_of_the_contract_has_a_hand_computation() -> None:
    assert set(HAND) == set(SHAPES)


@pytest.mark.parametrize("shape", SHAPES)
def test_integral_matches_the_hand_computation(shape: str) -> None:
    params, cases = HAND[shape]
    for (start, end), want in cases.items():
        assert expected_arrivals(params, start, end) == pytest.approx(want, abs=1e-9), (
            shape,
            start,
            end,
        )


@pytest.mark.parametrize("shape", SHAPES)
def test_integral_matches_a_fine_numerical_integration_of_the_rate(shape: str) -> None:
    params, _ = HAND[shape]
    step = 0.001
    n = round(params.duration_s / step)
    numeric = sum(rate_at(params, (i + 0.5) * step) for i in range(n)) * step
    assert cumulative_arrivals(params, params.duration_s) == pytest.approx(numeric, rel=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_rate_is_the_generators_rate(shape: str) -> None:
    params, _ = HAND[shape]
    theirs = make_shape(params)
    d = params.duration_s
    for i in range(-20, int(d * 20) + 40):
        t = i / 20.0 + 0.013
        assert rate_at(params, t) == pytest.approx(theirs.rate_at(t), abs=1e-9), t
    assert rate_at(params, d) == 0.0 and rate_at(params, -0.001) == 0.0


def test_an_empty_or_reversed_window_expects_nothing() -> None:
    params = HAND["steady"][0]
    assert expected_arrivals(params, 5, 5) == 0.0
    assert expected_arrivals(params, 6, 5) == 0.0
    assert expected_arrivals(params, 40, 50) == 0.0


def test_expected_per_second_covers_the_run_seconds_in_the_window() -> None:
    params = HAND["flash_crowd"][0]
    per = expected_per_second(params, -3, 100)
    assert sorted(per) == list(range(60))
    assert per[19] == 100 and per[20] == 800 and per[34] == 800 and per[35] == 100
    assert sum(per.values()) == pytest.approx(16500)
    assert sorted(expected_per_second(params, 10.5, 12.2)) == [10, 11, 12]


# --- the cross-check against the generator's own schedule ---------------------------------
def generator_per_second(
    params: LoadSection, *, seed: int, count: int, arrivals: str | None = None
) -> dict[int, int]:
    """intended per second as the generator's processes 0..count-1 together schedule it."""
    total: dict[int, int] = {}
    shape = make_shape(params)
    for index in range(count):
        schedule = ArrivalSchedule(shape, seed=seed, index=index, count=count, arrivals=arrivals)
        for sec, n in intended_per_second(schedule).items():
            total[sec] = total.get(sec, 0) + n
    return total


EXTRA_LOADS = {
    "sawtooth": load(
        shape="sawtooth",
        duration_s=40.0,
        warmup_s=5.0,
        base_rps=40.0,
        peak_rps=340.0,
        period_s=7.5,  # teeth that drop off the whole second
    ),
    "ramp_to_knee": load(
        shape="ramp_to_knee", duration_s=30.0, warmup_s=4.0, base_rps=20.0, peak_rps=777.0
    ),
    "step": load(
        shape="step",
        duration_s=30.0,
        warmup_s=3.0,
        base_rps=33.3,
        steps=[{"at_s": 8.0, "rps": 250.0}, {"at_s": 17.5, "rps": 90.5}],
    ),
}


def cross_check_loads() -> list[tuple[str, LoadSection, int]]:
    out = []
    for path in SCENARIOS:
        sc = load_scenario(path)
        out.append((path.stem, sc.load, sc.seed))
    out.extend((name, params, 7) for name, params in EXTRA_LOADS.items())
    return out


CROSS = cross_check_loads()


def test_the_cross_check_covers_every_shape() -> None:
    assert {params.shape for _, params, _ in CROSS} == set(SHAPES)
    assert len(SCENARIOS) >= 3


@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize(("name", "params", "seed"), CROSS, ids=[c[0] for c in CROSS])
def test_uniform_seconds_match_the_generator_within_one(
    name: str, params: LoadSection, seed: int, count: int
) -> None:
    theirs = generator_per_second(params, seed=seed, count=count, arrivals="uniform")
    mine = expected_per_second(params, 0, params.duration_s)
    uniform = params.model_copy(update={"arrivals": "uniform"})
    assert set(theirs) <= set(mine)
    worst = max(abs(theirs.get(s, 0) - e) for s, e in mine.items())
    assert worst <= 1.0 + 1e-6, (name, worst)
    assert worst <= schedule_tolerance(max(mine.values()), uniform)
    # and over the whole run, the totals agree to one arrival
    assert abs(sum(theirs.values()) - sum(mine.values())) <= 1.0 + 1e-6


@pytest.mark.parametrize("count", [1, 2])
@pytest.mark.parametrize(("name", "params", "seed"), CROSS, ids=[c[0] for c in CROSS])
def test_poisson_windows_match_the_generator_within_the_tolerance(
    name: str, params: LoadSection, seed: int, count: int
) -> None:
    poisson = params.model_copy(update={"arrivals": "poisson"})
    theirs = generator_per_second(poisson, seed=seed, count=count, arrivals="poisson")
    d = params.duration_s
    windows = [(0.0, d), (params.warmup_s, d), *((float(a), a + 5.0) for a in range(0, int(d), 5))]
    for start, end in windows:
        expected = expected_arrivals(poisson, start, end)
        got = sum(n for s, n in theirs.items() if start <= s and s + 1 <= end)
        assert abs(got - expected) <= schedule_tolerance(expected, poisson), (
            name,
            start,
            end,
            got,
            expected,
        )


# --- tolerance -----------------------------------------------------------------------------
def test_poisson_tolerance_is_five_standard_deviations_with_a_floor() -> None:
    assert schedule_tolerance(0.0) == 5.0
    assert schedule_tolerance(1.0) == 5.0
    assert schedule_tolerance(100.0) == pytest.approx(50.0)
    assert schedule_tolerance(10_000.0) == pytest.approx(500.0)
    assert schedule_tolerance(-3.0) == 5.0
    poisson = load(arrivals="poisson", base_rps=100.0)
    assert schedule_tolerance(400.0, poisson) == pytest.approx(100.0)


def test_uniform_tolerance_is_tight() -> None:
    uniform = load(base_rps=100.0)
    assert uniform.arrivals == "uniform"
    assert schedule_tolerance(10_000.0, uniform) == pytest.approx(2.1)
    spiky = HAND["flash_crowd"][0]
    assert schedule_tolerance(0.0, spiky) == pytest.approx(2.8)


def test_closed_mode_is_not_comparable() -> None:
    assert comparable(load()) is None
    reason = comparable(load(mode="closed"))
    assert reason is not None and "closed" in reason


# --- the generator's figure and the comparison ---------------------------------------------
def row(t: float, intended: int, impressions: dict[str, int] | None = None) -> dict[str, Any]:
    return {
        "t": t,
        "intended": intended,
        "sent": intended,
        "endpoints": {"bid": {"ok": 1}, "impression": dict(impressions or {})},
    }


def test_recorded_bid_intended_takes_out_the_impression_notices_sent() -> None:
    assert recorded_bid_intended(row(3.0, 130, {"accepted": 25, "timeout": 3, "shed": 2})) == 100
    assert recorded_bid_intended(row(3.0, 100)) == 100
    assert recorded_bid_intended({"t": 1.0, "intended": 7}) == 7
    assert recorded_bid_intended({"t": 1.0, "intended": 7, "endpoints": {}}) == 7


def test_compare_rows_uses_only_whole_seconds_that_have_a_row() -> None:
    params = HAND["flash_crowd"][0]  # 100 rps, 800 in [20, 35)
    rows = [row(float(s), 100 if s < 20 else 800, {"accepted": 10}) for s in range(15, 25)]
    del rows[7]  # second 22 is missing (e.g. a recorder that lost a row)
    got = compare_rows(params, rows, 15.5, 24.0)
    # seconds 16..23 without 22: 4 x 100 + 3 x 800 expected; recorded 10 fewer each
    assert got.seconds == 7
    assert got.expected == pytest.approx(4 * 90 + 3 * 790 + 7 * 10)
    assert got.recorded == 4 * 90 + 3 * 790
    assert got.shortfall == pytest.approx(70.0)
    assert got.tolerance == pytest.approx(2.8)
    assert not got.within


def test_a_generator_that_drops_timeouts_from_intended_is_caught() -> None:
    """The defect this check exists for: a 3% under-report of intended bids over a phase."""
    params = load(duration_s=40.0, base_rps=500.0)
    honest = [row(float(s), 500 + 40, {"accepted": 40}) for s in range(40)]
    defect = [row(float(s), 485 + 40, {"accepted": 40}) for s in range(40)]
    assert compare_rows(params, honest, 5, 40).within
    bad = compare_rows(params, defect, 5, 40)
    assert isinstance(bad, ScheduleCount)
    assert bad.shortfall == pytest.approx(35 * 15) and not bad.within
    poisson = params.model_copy(update={"arrivals": "poisson"})
    bad_poisson = compare_rows(poisson, defect, 5, 40)  # 17500 expected: allows 661
    assert bad_poisson.tolerance == pytest.approx(5 * math.sqrt(17500))
    assert bad_poisson.within  # 3% over a 35 s phase at 500 rps hides in Poisson noise
    assert not compare_rows(poisson, [row(float(s), 440) for s in range(40)], 5, 40).within


def test_the_module_imports_neither_locust_nor_locustfiles() -> None:
    code = (
        "import sys, spikegate.harness.intended; "
        "bad = [m for m in sys.modules if m.startswith(('locust', 'spikegate.locustfiles', "
        "'gevent'))]; print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
