"""Adaptive concurrency limits: a limit that follows the downstream's latency.

A `ConcurrencyLimit` feeds every `release(latency_ns=...)` into `on_sample`; the answer is
the new limit, which the bulkhead then clamps to its fixed ceiling. Two strategies:

- `GradientLimit` (Netflix Gradient2 / Envoy adaptive concurrency): samples are averaged
  over a window of `window_samples`; each window yields

      gradient = clamp(tolerance x baseline_rtt / window_rtt, 0.5, 1.0)
      target   = limit x gradient + queue_size
      limit    = (1 - smoothing) x limit + smoothing x target

  where `baseline_rtt` is a long exponential average of window RTTs (`long_window`
  windows), so a latency step lowers the limit at once while slow drift is absorbed.
  A window holding a dropped call (timeout, error) multiplies the limit by 0.9 instead;
  a window whose peak in-flight stayed under half the limit may lower it but not raise it
  (too little load to learn that more would be safe).
- `AIMDLimit`: additive increase while utilised, multiplicative decrease on a drop or a
  sample over `timeout_s`.

Both always answer a limit within `[min_limit, max_limit]`.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

from spikegate.target.backpressure.clock import NS_PER_S

__all__ = ["AIMDLimit", "AdaptiveLimit", "GradientLimit"]


@runtime_checkable
class AdaptiveLimit(Protocol):
    """What a `ConcurrencyLimit` needs from an adaptive strategy."""

    @property
    def limit(self) -> int: ...

    @property
    def min_limit(self) -> int: ...

    @property
    def max_limit(self) -> int: ...

    def on_sample(self, latency_ns: int, inflight: int, dropped: bool) -> int:
        """Record one finished call; return the new limit."""
        ...


def _check_int(name: str, value: object, low: int, high: float = math.inf) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        bound = f"between {low} and {int(high)}" if high != math.inf else f">= {low}"
        raise ValueError(f"{name} must be an integer {bound} (got {value!r})")
    return value


def _check_float(name: str, value: float, low: float, high: float, *, low_open: bool) -> float:
    ok = isinstance(value, int | float) and (low < value if low_open else low <= value)
    if not (ok and value <= high):
        lo = "(" if low_open else "["
        raise ValueError(f"{name} must be a number in {lo}{low}, {high}] (got {value!r})")
    return float(value)


def _check_bounds(initial_limit: int, min_limit: int, max_limit: int) -> None:
    _check_int("min_limit", min_limit, 1)
    _check_int("max_limit", max_limit, 1)
    if min_limit > max_limit:
        raise ValueError(f"min_limit ({min_limit}) must be <= max_limit ({max_limit})")
    _check_int("initial_limit", initial_limit, min_limit, max_limit)


class GradientLimit:
    """Gradient2-style limit: lowers when window RTT rises above the long-run baseline."""

    __slots__ = (
        "_baseline_ns",
        "_estimate",
        "_long_alpha",
        "_long_window",
        "_max_inflight",
        "_max_limit",
        "_min_limit",
        "_queue_size",
        "_smoothing",
        "_tolerance",
        "_window_dropped",
        "_window_n",
        "_window_samples",
        "_window_sum_ns",
        "_windows_seen",
    )

    def __init__(
        self,
        initial_limit: int = 20,
        *,
        min_limit: int = 1,
        max_limit: int = 1000,
        tolerance: float = 1.5,
        smoothing: float = 0.2,
        window_samples: int = 10,
        long_window: int = 600,
        queue_size: int = 4,
    ) -> None:
        _check_bounds(initial_limit, min_limit, max_limit)
        self._min_limit = min_limit
        self._max_limit = max_limit
        self._estimate = float(initial_limit)
        self._tolerance = _check_float("tolerance", tolerance, 1.0, 2.0, low_open=False)
        self._smoothing = _check_float("smoothing", smoothing, 0.0, 1.0, low_open=True)
        self._window_samples = _check_int("window_samples", window_samples, 1)
        self._long_window = _check_int("long_window", long_window, 1)
        self._queue_size = _check_int("queue_size", queue_size, 0)
        self._long_alpha = 2.0 / (long_window + 1)
        self._baseline_ns = 0.0
        self._windows_seen = 0
        self._reset_window()

    @property
    def limit(self) -> int:
        return int(self._estimate)

    @property
    def min_limit(self) -> int:
        return self._min_limit

    @property
    def max_limit(self) -> int:
        return self._max_limit

    @property
    def baseline_s(self) -> float:
        """The long-run RTT the current window is compared with (0 before the first window)."""
        return self._baseline_ns / NS_PER_S

    def _reset_window(self) -> None:
        self._window_n = 0
        self._window_sum_ns = 0
        self._window_dropped = False
        self._max_inflight = 0

    def on_sample(self, latency_ns: int, inflight: int, dropped: bool) -> int:
        self._window_n += 1
        if dropped:
            # A dropped call's latency is censored (timeout, reset): it says "overloaded",
            # not how long the work takes, so it is kept out of the RTT average.
            self._window_dropped = True
        else:
            self._window_sum_ns += max(0, latency_ns)
        if inflight > self._max_inflight:
            self._max_inflight = inflight
        if self._window_n >= self._window_samples:
            self._close_window()
        return int(self._estimate)

    def _close_window(self) -> None:
        dropped = self._window_dropped
        rtt = self._window_sum_ns / self._window_n
        app_limited = self._max_inflight * 2 < self._estimate
        self._reset_window()
        if dropped:
            estimate = self._estimate * 0.9
        else:
            self._update_baseline(rtt)
            # 1 ns floors keep a fake clock that never advances from dividing by zero.
            gradient = self._tolerance * max(self._baseline_ns, 1.0) / max(rtt, 1.0)
            gradient = min(1.0, max(0.5, gradient))
            target = self._estimate * gradient + self._queue_size
            estimate = (1.0 - self._smoothing) * self._estimate + self._smoothing * target
            if app_limited and estimate > self._estimate:
                # Too few calls in flight to know whether a higher limit would be safe.
                estimate = self._estimate
        self._estimate = min(float(self._max_limit), max(float(self._min_limit), estimate))

    def _update_baseline(self, rtt: float) -> None:
        self._windows_seen += 1
        if self._windows_seen <= 10:
            # Warm-up: a plain mean, so the first windows do not weigh as much as 600.
            self._baseline_ns += (rtt - self._baseline_ns) / self._windows_seen
        else:
            self._baseline_ns += self._long_alpha * (rtt - self._baseline_ns)
        if rtt > 0 and self._baseline_ns / rtt > 2.0:
            # Latency fell far below the baseline: decay it quickly so the limit can grow.
            self._baseline_ns *= 0.95


class AIMDLimit:
    """Additive increase while utilised; multiplicative decrease on a drop or a slow call."""

    __slots__ = ("_backoff", "_estimate", "_max_limit", "_min_limit", "_timeout_ns")

    def __init__(
        self,
        initial_limit: int = 20,
        *,
        min_limit: int = 1,
        max_limit: int = 1000,
        backoff_ratio: float = 0.9,
        timeout_s: float = 1.0,
    ) -> None:
        _check_bounds(initial_limit, min_limit, max_limit)
        self._min_limit = min_limit
        self._max_limit = max_limit
        self._estimate = float(initial_limit)
        self._backoff = _check_float("backoff_ratio", backoff_ratio, 0.5, 1.0, low_open=False)
        if self._backoff == 1.0:
            raise ValueError(
                f"backoff_ratio must be a number in [0.5, 1.0) (got {backoff_ratio!r})"
            )
        timeout = _check_float("timeout_s", timeout_s, 0.0, math.inf, low_open=True)
        if not math.isfinite(timeout):
            raise ValueError(f"timeout_s must be a finite number > 0 (got {timeout_s!r})")
        self._timeout_ns = round(timeout * NS_PER_S)

    @property
    def limit(self) -> int:
        return int(self._estimate)

    @property
    def min_limit(self) -> int:
        return self._min_limit

    @property
    def max_limit(self) -> int:
        return self._max_limit

    def on_sample(self, latency_ns: int, inflight: int, dropped: bool) -> int:
        if dropped or latency_ns > self._timeout_ns:
            estimate = self._estimate * self._backoff
        elif inflight * 2 >= self._estimate:
            estimate = self._estimate + 1.0
        else:
            return int(self._estimate)
        self._estimate = min(float(self._max_limit), max(float(self._min_limit), estimate))
        return int(self._estimate)
