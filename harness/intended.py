"""The harness's own schedule of intended arrivals, from the scenario's [load] section.

    LoadSection --expected_arrivals(load, a, b)--> arrivals the shape calls for in [a, b)
                --schedule_tolerance(expected, load)--> allowance for the arrival process
    requests.jsonl rows --recorded_bid_intended(row)--> the generator's figure to compare

Independent of locustfiles on purpose: a generator or recorder defect (e.g. one that drops
timed-out requests from intended, sent and outcomes alike) cannot also bend this count.
The rates below restate the semantics of the shapes in SHAPES (spikegate/contract/load.py;
the generator's code is locustfiles/shapes.py) as closed-form cumulative counts. Time is
run seconds since t0 (meta.json t0_epoch, as every row's `t`); every shape is 0 rps
outside [0, duration_s) and runs at base_rps during warmup:

    steady         base_rps
    step           base_rps, then the rps of the latest step with at_s <= t
    flash_crowd    peak_rps in [spike_at_s, spike_at_s + spike_for_s), base_rps outside
    hot_publisher  the same rate as flash_crowd (the hot share only moves publishers)
    sawtooth       from warmup_s: each period_s ramps linearly base -> peak, then drops back
    ramp_to_knee   from warmup_s to duration_s: one linear ramp base -> peak

What `intended` in a row counts (locustfiles/adserver.py, recorder.py): every scheduled bid
arrival, sent or not (in the second of its intended instant), PLUS every impression notice
the generator decided to send after a won bid (in the second its bid returned), sent or not.
Impressions are not scheduled (they follow wins and impression_rate), so the schedule
predicts bids only. Rows carry per-endpoint outcomes, not per-endpoint intended; every
impression notice that was sent has exactly one outcome in endpoints["impression"], so

    recorded_bid_intended(row) = intended - sum(endpoints["impression"].values())
                               = bid arrivals intended + impression notices NOT sent

(a notice is not sent only when max_inflight requests are already in flight). The figure can
exceed the bid schedule by that impression shortfall, never fall below it: a generator that
under-reports bids shows up as recorded < expected - tolerance.

The randomness allowed for (schedule_tolerance):
- "poisson" arrivals: the count in a window is Poisson with mean = expected (the processes'
  independent streams superpose to one Poisson process), standard deviation sqrt(expected).
  Five of them: a sound generator is flagged with probability about 6e-7 per comparison under
  the normal approximation; the floor of 5 arrivals covers small windows, where the Poisson
  tail is heavier than the normal one (mean 1: P(N >= 6) = 6e-4). Compare phase totals, not
  single seconds: a 10 s window at 100 rps allows 5 x sqrt(1000) = 158 (16%), at 1000 rps
  500 (5%).
- "uniform" arrivals: deterministic. Process i of n sends when its share of the cumulative
  count, L(t)/n, reaches k + (i + 1/2)/n, i.e. when L(t) reaches n k + i + 1/2: together,
  one arrival each time L crosses j + 1/2, the one-process grid. A window [a, b) then holds
  L(b) - L(a) rounded up or down: within 1. Allowed: 2 (float rounding at a threshold on a
  window edge) plus what the generator's 1 ms midpoint integration can smear a rate jump
  that is not on a millisecond by: 0.001 s x the largest rate.

Not comparable (comparable() says why): mode "closed" (intended = sent, back to back: no
schedule), and seconds the generator did not run (before its load start: a late Locust
skips, never bursts; after an interrupt: no rows). Only seconds that have a row are compared.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from spikegate.contract.load import SHAPES, SPIKY, LoadSection

__all__ = [
    "ScheduleCount",
    "comparable",
    "compare_rows",
    "cumulative_arrivals",
    "expected_arrivals",
    "expected_per_second",
    "rate_at",
    "recorded_bid_intended",
    "schedule_tolerance",
]

POISSON_SIGMAS = 5.0
POISSON_FLOOR = 5.0
UNIFORM_SLACK = 2.0
GENERATOR_STEP_S = 0.001  # the generator integrates the rate on 1 ms steps (midpoint rule)


# --- the rate and its integral ------------------------------------------------------------
def rate_at(load: LoadSection, t: float) -> float:
    """Intended bid arrivals per second at run second t (0 outside [0, duration_s))."""
    if t < 0 or t >= load.duration_s:
        return 0.0
    base, peak, warmup = load.base_rps, load.peak_rps, load.warmup_s
    shape = load.shape
    if shape == "steady":
        return base
    if shape == "step":
        current = base
        for step in load.steps:
            if step.at_s > t:
                break
            current = step.rps
        return current
    if shape in SPIKY:
        return peak if load.spike_at_s <= t < load.spike_at_s + load.spike_for_s else base
    if shape == "sawtooth":
        if t < warmup:
            return base
        return base + (peak - base) * (((t - warmup) % load.period_s) / load.period_s)
    if shape == "ramp_to_knee":
        if t < warmup:
            return base
        return base + (peak - base) * (t - warmup) / (load.duration_s - warmup)
    raise ValueError(f"unknown shape {shape!r} (one of {', '.join(SHAPES)})")


def cumulative_arrivals(load: LoadSection, t: float) -> float:
    """The integral of rate_at from 0 to t: arrivals intended in [0, t)."""
    t = min(max(t, 0.0), load.duration_s)
    base, peak, warmup = load.base_rps, load.peak_rps, load.warmup_s
    shape = load.shape
    if shape == "steady":
        return base * t
    if shape == "step":
        total, since, current = 0.0, 0.0, base
        for step in load.steps:
            if step.at_s >= t:
                break
            total += current * (step.at_s - since)
            since, current = step.at_s, step.rps
        return total + current * (t - since)
    if shape in SPIKY:
        lo, hi = load.spike_at_s, load.spike_at_s + load.spike_for_s
        inside = max(0.0, min(t, hi) - lo)
        return base * t + (peak - base) * inside
    if shape == "sawtooth":
        ramp = max(0.0, t - warmup)
        period = load.period_s
        whole = math.floor(ramp / period)
        part = ramp - whole * period
        # each whole period adds (peak - base) * period / 2; a part p adds (peak-base) p^2/2P
        return base * t + (peak - base) * (whole * period / 2.0 + part * part / (2.0 * period))
    if shape == "ramp_to_knee":
        ramp = max(0.0, t - warmup)
        span = load.duration_s - warmup
        return base * t + (peak - base) * ramp * ramp / (2.0 * span)
    raise ValueError(f"unknown shape {shape!r} (one of {', '.join(SHAPES)})")


def expected_arrivals(load: LoadSection, start_s: float, end_s: float) -> float:
    """Bid arrivals the schedule calls for in [start_s, end_s) (run seconds; 0 if empty)."""
    if end_s <= start_s:
        return 0.0
    return max(0.0, cumulative_arrivals(load, end_s) - cumulative_arrivals(load, start_s))


def expected_per_second(load: LoadSection, start_s: float, end_s: float) -> dict[int, float]:
    """{second: expected arrivals in [second, second + 1)} for the whole seconds overlapping
    [start_s, end_s) (clipped to the run), as the rows of requests.jsonl are keyed."""
    lo = max(0, math.floor(start_s))
    hi = min(math.ceil(end_s), math.ceil(load.duration_s))
    return {s: expected_arrivals(load, s, s + 1.0) for s in range(lo, hi)}


# --- tolerance ----------------------------------------------------------------------------
def _peak_rate(load: LoadSection) -> float:
    return max(load.base_rps, load.peak_rps, *(s.rps for s in load.steps))


def schedule_tolerance(expected: float, load: LoadSection | None = None) -> float:
    """How far a sound generator's count may stray from `expected` (see the module doc).

    Without `load`, or for Poisson arrivals: max(5, 5 x sqrt(expected)). For uniform
    arrivals (the default of LoadSection): 2 + 0.001 s x the largest rate of the shape."""
    if load is not None and load.arrivals == "uniform":
        return UNIFORM_SLACK + GENERATOR_STEP_S * _peak_rate(load)
    return max(POISSON_FLOOR, POISSON_SIGMAS * math.sqrt(max(0.0, expected)))


def comparable(load: LoadSection) -> str | None:
    """Why the generator's intended counts cannot be held to the schedule; None if they can."""
    if load.mode == "closed":
        return "load.mode is 'closed': intended = sent, requests back to back, no schedule"
    return None


# --- the generator's figure ---------------------------------------------------------------
def recorded_bid_intended(row: Mapping[str, Any]) -> int:
    """A requests.jsonl row's intended bid arrivals (plus impression notices not sent):
    intended - impression notices with an outcome."""
    endpoints = row.get("endpoints") or {}
    impressions = endpoints.get("impression") or {}
    return int(row.get("intended") or 0) - sum(int(n) for n in impressions.values())


@dataclass(frozen=True)
class ScheduleCount:
    """The generator's intended bids against the harness's schedule over some seconds."""

    expected: float  # the schedule's arrivals over exactly the compared seconds
    recorded: int  # sum of recorded_bid_intended over those rows
    tolerance: float
    seconds: int  # rows compared (whole seconds inside the window)

    @property
    def shortfall(self) -> float:
        """expected - recorded (> tolerance: the generator under-reports)."""
        return self.expected - self.recorded

    @property
    def within(self) -> bool:
        """recorded within tolerance of expected, on both sides."""
        return abs(self.shortfall) <= self.tolerance


def compare_rows(
    load: LoadSection, rows: Iterable[Mapping[str, Any]], start_s: float, end_s: float
) -> ScheduleCount:
    """The rows whose whole second [t, t + 1) lies in [start_s, end_s), against the
    schedule over those same seconds (a missing row takes its second out of both)."""
    expected = 0.0
    recorded = 0
    seconds = 0
    for row in rows:
        t = float(row["t"])
        if t < start_s or t + 1.0 > end_s:
            continue
        expected += expected_arrivals(load, t, t + 1.0)
        recorded += recorded_bid_intended(row)
        seconds += 1
    return ScheduleCount(expected, recorded, schedule_tolerance(expected, load), seconds)
