"""Load shapes as pure functions of time, and the arrival schedule they imply.

    LoadSection (the [load] section, contract)   ->  Shape.rate_at(t)       intended rps at t
                                                    Shape.hot_share_at(t)  hot publisher's share
    Shape + seed + (process index, count)       ->  ArrivalSchedule        intended send instants

Time `t` is seconds since the run's t0 (SPIKEGATE_T0). Every shape is 0 rps outside
[0, duration_s) and runs at base_rps during warmup. The shapes:

    steady         base_rps throughout
    step           base_rps, then the rps of the latest step whose at_s <= t
    flash_crowd    peak_rps in [spike_at_s, spike_at_s + spike_for_s), base_rps outside:
                   the jump and the drop are instantaneous
    hot_publisher  like flash_crowd; during the spike `hot_share` of all requests carry the
                   hot publisher (the others share the rest), outside it publishers are uniform
    sawtooth       from warmup_s to the end: each period_s ramps linearly base -> peak, then
                   drops back to base at once
    ramp_to_knee   from warmup_s to the end: one linear ramp base -> peak (to find the knee)

Arrivals: the time-rescaling construction. With the cumulative rate L(t) = integral of
rate_at from 0 to t, arrival k happens when L(t) crosses threshold k:
  - "uniform" (the default): thresholds k + phase, i.e. constant spacing 1/rate; every
    second gets round(rate) arrivals, so intended counts are exact and the seed is unused;
  - "poisson": thresholds are sums of Exp(1) draws from `random.Random(seed, index, count)`,
    i.e. a (non-homogeneous) Poisson process, deterministic per seed.
With `count` processes, process `index` follows rate/count with phase (index + 0.5)/count
(uniform: together they form exactly the single-process schedule) or its own Poisson
stream (the superposition of independent Poisson processes is Poisson at the full rate).
L(t) is integrated with the midpoint rule on 1 ms steps, exact for the piecewise-constant
and linear pieces above (up to float rounding, and jumps inside a millisecond).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import ValidationError

from spikegate.contract.load import ARRIVALS, SHAPES, LoadSection, Step
from spikegate.locustfiles.live_rate import HORIZON_S, LiveLoad, live_arrivals

__all__ = [
    "DEMO_LOAD",
    "ArrivalSchedule",
    "LoadSection",
    "Shape",
    "Step",
    "intended_per_second",
    "load_params",
    "make_shape",
]

STEP_S = 0.001
# The [load] section without SPIKEGATE_LOAD (plain `locust -f adserver.py,shape_<any>.py`):
# 30 s that every shape can run; the spike, or the steps, from 10 s to 20 s.
DEMO_LOAD: dict[str, Any] = {
    "duration_s": 30.0,
    "warmup_s": 5.0,
    "base_rps": 50.0,
    "peak_rps": 200.0,
    "spike_at_s": 10.0,
    "spike_for_s": 10.0,
    "steps": [{"at_s": 10.0, "rps": 100.0}, {"at_s": 20.0, "rps": 150.0}],
}


def load_params(raw: Mapping[str, Any], **override: Any) -> LoadSection:
    """The [load] section from a JSON-like mapping (SPIKEGATE_LOAD), validated by the one
    model the harness validated the scenario with. Keys this generator does not know (a
    newer harness) are ignored; errors name the field (`load.steps.1.at_s: ...`)."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"the load section must be an object, got {type(raw).__name__}")
    known = LoadSection.model_fields
    data = {k: v for k, v in raw.items() if k in known}
    data.update(override)
    try:
        return LoadSection.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"load.{where}: {first['msg'].removeprefix('Value error, ')}") from None


@dataclass(frozen=True)
class Shape:
    """A named load shape over `params`: the intended arrival rate and hot share at t."""

    params: LoadSection
    name: ClassVar[str] = "steady"
    _rate: Callable[[float], float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rate", self._rate_fn())

    def _rate_fn(self) -> Callable[[float], float]:
        base = self.params.base_rps
        return lambda t: base

    def rate_at(self, t: float) -> float:
        """Intended requests per second at t seconds since t0 (0 outside the run)."""
        if t < 0 or t >= self.params.duration_s:
            return 0.0
        return self._rate(t)

    def hot_share_at(self, t: float) -> float:
        """Share of requests that carry the hot publisher at t (0 = publishers uniform)."""
        return 0.0

    def peak_rate(self) -> float:
        return max(self.params.base_rps, self.params.peak_rps, *(s.rps for s in self.params.steps))


class Steady(Shape):
    name = "steady"


class StepShape(Shape):
    name = "step"

    def _rate_fn(self) -> Callable[[float], float]:
        p = self.params

        def rate(t: float) -> float:
            current = p.base_rps
            for step in p.steps:
                if step.at_s > t:
                    break
                current = step.rps
            return current

        return rate


class FlashCrowd(Shape):
    name = "flash_crowd"

    def in_spike(self, t: float) -> bool:
        p = self.params
        return p.spike_at_s <= t < p.spike_at_s + p.spike_for_s

    def _rate_fn(self) -> Callable[[float], float]:
        p = self.params
        return lambda t: p.peak_rps if self.in_spike(t) else p.base_rps


class HotPublisher(FlashCrowd):
    name = "hot_publisher"

    def hot_share_at(self, t: float) -> float:
        return self.params.hot_share if self.in_spike(t) and self.rate_at(t) > 0 else 0.0


class Sawtooth(Shape):
    name = "sawtooth"

    def _rate_fn(self) -> Callable[[float], float]:
        p = self.params

        def rate(t: float) -> float:
            if t < p.warmup_s:
                return p.base_rps
            phase = ((t - p.warmup_s) % p.period_s) / p.period_s
            return p.base_rps + (p.peak_rps - p.base_rps) * phase

        return rate


class RampToKnee(Shape):
    name = "ramp_to_knee"

    def _rate_fn(self) -> Callable[[float], float]:
        p = self.params
        span = p.duration_s - p.warmup_s

        def rate(t: float) -> float:
            if t < p.warmup_s:
                return p.base_rps
            return p.base_rps + (p.peak_rps - p.base_rps) * (t - p.warmup_s) / span

        return rate


_SHAPES: dict[str, type[Shape]] = {
    cls.name: cls for cls in (Steady, StepShape, FlashCrowd, HotPublisher, Sawtooth, RampToKnee)
}
assert set(_SHAPES) == set(SHAPES), "a shape of the contract has no class here"


def make_shape(params: LoadSection, name: str | None = None) -> Shape:
    """The shape `name` (default: params.shape) over `params`."""
    name = params.shape if name is None else name
    if name not in _SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {name!r}")
    if name != params.shape:
        params = load_params(params.model_dump(), shape=name)
    return _SHAPES[name](params)


class ArrivalSchedule:
    """The intended send instants (seconds since t0) of process `index` of `count`.

    Iterating yields instants in increasing order within [start_s, end_s) (end_s defaults
    to the run's duration). Arrivals before start_s are skipped, not shifted: a generator
    that starts late keeps the same grid of instants."""

    def __init__(
        self,
        shape: Shape,
        *,
        seed: int = 0,
        index: int = 0,
        count: int = 1,
        start_s: float = 0.0,
        end_s: float | None = None,
        arrivals: str | None = None,
        step_s: float = STEP_S,
    ) -> None:
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        if not 0 <= index < count:
            raise ValueError(f"index must be in [0, {count - 1}], got {index}")
        if not step_s > 0:
            raise ValueError(f"step_s must be > 0, got {step_s}")
        self.shape = shape
        self.seed = seed
        self.index = index
        self.count = count
        self.start_s = start_s
        self.end_s = shape.params.duration_s if end_s is None else min(end_s, 86_400.0)
        self.arrivals = shape.params.arrivals if arrivals is None else arrivals
        if self.arrivals not in ARRIVALS:
            raise ValueError(f"arrivals must be one of {', '.join(ARRIVALS)}, got {arrivals!r}")
        self.step_s = step_s

    def _thresholds(self) -> Iterator[float]:
        if self.arrivals == "uniform":
            k = (self.index + 0.5) / self.count
            while True:
                yield k
                k += 1.0
        rng = random.Random(f"spikegate:{self.seed}:{self.index}:{self.count}")
        acc = 0.0
        while True:
            acc += rng.expovariate(1.0)
            yield acc

    def __iter__(self) -> Iterator[float]:
        rate_at, share = self.shape.rate_at, 1.0 / self.count
        step, end, start = self.step_s, self.end_s, self.start_s
        thresholds = self._thresholds()
        nxt = next(thresholds)
        cum = 0.0
        k = 0
        t = 0.0
        while t < end:
            t1 = min((k + 1) * step, end)
            r = rate_at((t + t1) * 0.5) * share
            c1 = cum + r * (t1 - t)
            while nxt <= c1 and r > 0:
                at = t + (nxt - cum) / r
                if at >= start:
                    yield min(at, t1)
                nxt = next(thresholds)
            cum, t, k = c1, t1, k + 1

    def live(
        self,
        live: LiveLoad,
        *,
        now: Callable[[], float],
        sleep: Callable[[float], object],
        stop: Callable[[], bool] = lambda: False,
        horizon_s: float = HORIZON_S,
    ) -> Iterator[float]:
        """The same instants while `live` holds no document; a live rate replaces the
        shape's from the instant it is read (live_rate.live_arrivals). `now()` is seconds
        since t0; the iterator sleeps through `sleep` while it is ahead of the clock."""
        return live_arrivals(
            self._thresholds(),
            self.shape.rate_at,
            live,
            share=1.0 / self.count,
            start_s=self.start_s,
            end_s=self.end_s,
            now=now,
            sleep=sleep,
            stop=stop,
            step_s=self.step_s,
            horizon_s=horizon_s,
        )


def intended_per_second(schedule: ArrivalSchedule) -> dict[int, int]:
    """Arrivals per whole second (floor of the instant) of `schedule`."""
    out: dict[int, int] = {}
    for at in schedule:
        sec = int(at)
        out[sec] = out.get(sec, 0) + 1
    return out
