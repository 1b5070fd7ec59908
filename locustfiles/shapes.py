"""Load shapes as pure functions of time, and the arrival schedule they imply.

    LoadParams (the scenario's [load] section)  ->  Shape.rate_at(t)       intended rps at t
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

import math
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

__all__ = [
    "ARRIVALS",
    "DEMO_LOAD",
    "MODES",
    "SHAPES",
    "ArrivalSchedule",
    "LoadParams",
    "Shape",
    "Step",
    "intended_per_second",
    "make_shape",
]

SHAPES = ("steady", "step", "flash_crowd", "hot_publisher", "sawtooth", "ramp_to_knee")
ARRIVALS = ("uniform", "poisson")
MODES = ("open", "closed")
MAX_RPS = 1_000_000.0
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


@dataclass(frozen=True)
class Step:
    at_s: float
    rps: float


def _num(raw: Any, name: str, lo: float, hi: float, *, lo_open: bool = False) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError(f"load.{name} must be a number, got {raw!r}")
    value = float(raw)
    low_bad = value <= lo if lo_open else value < lo
    if math.isnan(value) or low_bad or value > hi:
        left = "(" if lo_open else "["
        raise ValueError(f"load.{name} must be in {left}{lo:g}, {hi:g}], got {raw!r}")
    return value


def _int(raw: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        else:
            raise ValueError(f"load.{name} must be an integer, got {raw!r}")
    if not lo <= raw <= hi:
        raise ValueError(f"load.{name} must be in [{lo}, {hi}], got {raw}")
    return int(raw)


def _choice(raw: Any, name: str, allowed: tuple[str, ...]) -> str:
    if raw not in allowed:
        raise ValueError(f"load.{name} must be one of {', '.join(allowed)}, got {raw!r}")
    return str(raw)


@dataclass(frozen=True)
class LoadParams:
    """The [load] section as the generator reads it (SPIKEGATE_LOAD); validated on creation.

    `arrivals` ("uniform" | "poisson") and `mode` ("open" | "closed") are generator-only
    extras: "closed" is the benchmark's max-rate mode (each user sends back to back, one
    request in flight, intended = sent); scenarios use the open model."""

    shape: str = "steady"
    duration_s: float = 30.0
    warmup_s: float = 5.0
    base_rps: float = 50.0
    peak_rps: float = 0.0
    spike_at_s: float = 0.0
    spike_for_s: float = 0.0
    steps: tuple[Step, ...] = ()
    period_s: float = 10.0
    publishers: int = 4
    hot_publisher: str = "pub-1"
    hot_share: float = 0.8
    impression_rate: float = 0.5
    tmax_ms: int = 150
    client_timeout_s: float = 2.0
    max_inflight: int = 2000
    processes: int = 1
    arrivals: str = "uniform"
    mode: str = "open"

    def __post_init__(self) -> None:
        _choice(self.shape, "shape", SHAPES)
        _choice(self.arrivals, "arrivals", ARRIVALS)
        _choice(self.mode, "mode", MODES)
        _num(self.duration_s, "duration_s", 0, 86_400, lo_open=True)
        _num(self.warmup_s, "warmup_s", 0, self.duration_s)
        if self.warmup_s >= self.duration_s:
            raise ValueError(
                f"load.warmup_s ({self.warmup_s:g}) must be less than load.duration_s "
                f"({self.duration_s:g})"
            )
        _num(self.base_rps, "base_rps", 0, MAX_RPS)
        _num(self.peak_rps, "peak_rps", 0, MAX_RPS)
        _num(self.spike_at_s, "spike_at_s", 0, 86_400)
        _num(self.spike_for_s, "spike_for_s", 0, 86_400)
        _num(self.period_s, "period_s", 0, 86_400, lo_open=True)
        _int(self.publishers, "publishers", 1, 1000)
        _num(self.hot_share, "hot_share", 0, 1)
        _num(self.impression_rate, "impression_rate", 0, 1)
        _int(self.tmax_ms, "tmax_ms", 1, 60_000)
        _num(self.client_timeout_s, "client_timeout_s", 0, 120, lo_open=True)
        _int(self.max_inflight, "max_inflight", 1, 100_000)
        _int(self.processes, "processes", 1, 64)
        if self.hot_publisher not in self.publisher_ids():
            raise ValueError(
                f"load.hot_publisher must be one of pub-1..pub-{self.publishers}, "
                f"got {self.hot_publisher!r}"
            )
        self._check_steps()
        self._check_shape()

    def _check_steps(self) -> None:
        last = -1.0
        for i, step in enumerate(self.steps):
            _num(step.at_s, f"steps[{i}].at_s", 0, self.duration_s)
            _num(step.rps, f"steps[{i}].rps", 0, MAX_RPS)
            if step.at_s <= last:
                raise ValueError(f"load.steps[{i}].at_s must be greater than the previous step's")
            last = step.at_s

    def _check_shape(self) -> None:
        if self.shape == "step" and not self.steps:
            raise ValueError("load.steps must list at least one {at_s, rps} for shape 'step'")
        if self.shape in ("flash_crowd", "hot_publisher"):
            if self.spike_for_s <= 0:
                raise ValueError(f"load.spike_for_s must be > 0 for shape {self.shape!r}")
            if self.spike_at_s + self.spike_for_s > self.duration_s:
                raise ValueError(
                    "load.spike_at_s + load.spike_for_s must end within load.duration_s "
                    f"({self.spike_at_s:g} + {self.spike_for_s:g} > {self.duration_s:g})"
                )
        if self.shape in ("flash_crowd", "hot_publisher", "sawtooth", "ramp_to_knee") and (
            self.peak_rps <= self.base_rps
        ):
            raise ValueError(
                f"load.peak_rps ({self.peak_rps:g}) must exceed load.base_rps "
                f"({self.base_rps:g}) for shape {self.shape!r}"
            )

    def publisher_ids(self) -> list[str]:
        return [f"pub-{i}" for i in range(1, self.publishers + 1)]

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], **override: Any) -> LoadParams:
        """Build from a JSON-like mapping (SPIKEGATE_LOAD); keys this generator does not
        use are ignored (the scenario model validates the section as a whole)."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"the load section must be an object, got {type(raw).__name__}")
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {k: v for k, v in raw.items() if k in known}
        kwargs.update(override)
        steps = kwargs.get("steps", ())
        if not isinstance(steps, list | tuple):
            raise ValueError(f"load.steps must be a list of {{at_s, rps}}, got {steps!r}")
        parsed: list[Step] = []
        for i, s in enumerate(steps):
            if isinstance(s, Step):
                parsed.append(s)
            elif isinstance(s, Mapping) and set(s) >= {"at_s", "rps"}:
                parsed.append(Step(at_s=s["at_s"], rps=s["rps"]))
            else:
                raise ValueError(f"load.steps[{i}] must be an object {{at_s, rps}}, got {s!r}")
        kwargs["steps"] = tuple(parsed)
        return cls(**kwargs)


@dataclass(frozen=True)
class Shape:
    """A named load shape over `params`: the intended arrival rate and hot share at t."""

    params: LoadParams
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
    "steady": Steady,
    "step": StepShape,
    "flash_crowd": FlashCrowd,
    "hot_publisher": HotPublisher,
    "sawtooth": Sawtooth,
    "ramp_to_knee": RampToKnee,
}


def make_shape(params: LoadParams, name: str | None = None) -> Shape:
    """The shape `name` (default: params.shape) over `params`."""
    name = params.shape if name is None else name
    if name not in _SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {name!r}")
    if name != params.shape:
        params = LoadParams.from_mapping({**params.__dict__, "shape": name})
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
        self.arrivals = _choice(
            shape.params.arrivals if arrivals is None else arrivals, "arrivals", ARRIVALS
        )
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


def intended_per_second(schedule: ArrivalSchedule) -> dict[int, int]:
    """Arrivals per whole second (floor of the instant) of `schedule`."""
    out: dict[int, int] = {}
    for at in schedule:
        sec = int(at)
        out[sec] = out.get(sec, 0) + 1
    return out
