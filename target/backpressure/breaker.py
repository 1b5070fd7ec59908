"""Circuit breaker: stop calling a dependency that fails or is slow, probe it, come back.

Semantics are resilience4j's, tightened where it leaves holes (PATTERNS.md section 4):

```
           rate >= threshold over >= minimum_calls,     first try_acquire after
           or the Nth consecutive failure                the (backoff, jitter) wait
  CLOSED  ------------------------------------>  OPEN  ------------------------->  HALF_OPEN
    ^                                             ^                                 |   |
    |                                             +--- a probe rate too high, or ---+   |
    |                                                  half_open_max_wait_s passed      |
    +-------------- all k probe results in, rates below the thresholds -----------------+

  force_open() -> FORCED_OPEN: rejects everything until reset()
  disable()    -> DISABLED: admits everything, records nothing
  reset()      -> CLOSED, from anywhere
```

The caller classifies every admitted call: `on_success(permit, duration_ns)` (slow when
duration >= `slow_call_duration_s`), `on_failure(permit, duration_ns)`, or `on_ignore(permit)`
for our own cancellation (counts neither way; a half-open probe's permit is given back).
Every transition bumps a generation number carried in each `Permit`, so a result from before
a state change counts for nothing. Single-threaded (one event loop); not thread-safe.
"""

from __future__ import annotations

import enum
import logging
import math
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from spikegate.target.backpressure.clock import NS_PER_S, Clock, monotonic_ns
from spikegate.target.backpressure.decision import ADMIT, BREAKER_OPEN, Decision

__all__ = [
    "LEGAL_TRANSITIONS",
    "BreakerConfig",
    "BreakerListener",
    "BreakerSnapshot",
    "BreakerState",
    "CircuitBreaker",
    "Permit",
]

_log = logging.getLogger(__name__)

MAX_COUNT_WINDOW = 1_000_000
MAX_TIME_WINDOW_S = 86_400

# Outcome codes stored in the windows: bit 0 = failure, bit 1 = slow.
_OK, _FAILED, _SLOW = 0, 1, 2


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


_S = BreakerState
LEGAL_TRANSITIONS: frozenset[tuple[BreakerState, BreakerState]] = frozenset(
    {(_S.CLOSED, _S.OPEN), (_S.OPEN, _S.HALF_OPEN), (_S.HALF_OPEN, _S.CLOSED)}
    | {(_S.HALF_OPEN, _S.OPEN)}
    | {(s, _S.FORCED_OPEN) for s in _S if s is not _S.FORCED_OPEN}  # force_open()
    | {(s, _S.DISABLED) for s in _S if s is not _S.DISABLED}  # disable()
    | {(s, _S.CLOSED) for s in _S if s is not _S.CLOSED}  # reset()
)
"""Every (old, new) pair a listener can ever see; the last three groups are operator actions."""

BreakerListener = Callable[[str, BreakerState, BreakerState], None]


def _check(ok: bool, field: str, allowed: str, value: object) -> None:
    if not ok:
        raise ValueError(f"BreakerConfig.{field} must be {allowed}, got {value!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """When to trip, how long to stay open, how to probe. Durations in seconds."""

    window_type: Literal["count", "time"] = "count"
    window_size: int = 20
    """Last N calls ("count") or last N seconds ("time")."""
    minimum_calls: int = 10
    failure_rate_threshold: float = 0.5
    slow_call_rate_threshold: float = 1.0
    slow_call_duration_s: float = 0.1
    consecutive_failures: int | None = None
    """If set, trip on the Nth consecutive failure instead of on window rates; any half-open
    probe failure re-opens and k successful probes close."""
    wait_open_s: float = 5.0
    backoff_multiplier: float = 2.0
    max_wait_open_s: float = 60.0
    jitter: float = 0.1
    """Each open lasts nominal x (1 - jitter x u), u uniform in [0, 1): never above nominal."""
    half_open_probes: int = 3
    half_open_max_wait_s: float = 5.0

    def __post_init__(self) -> None:
        _check(self.window_type in ("count", "time"), "window_type", '"count" or "time"',
               self.window_type)  # fmt: skip
        cap = MAX_COUNT_WINDOW if self.window_type == "count" else MAX_TIME_WINDOW_S
        w = self.window_size
        _check(_is_int(w) and 1 <= w <= cap, "window_size", f"an int in [1, {cap}]", w)
        m = self.minimum_calls
        if self.window_type == "count":
            _check(_is_int(m) and 1 <= m <= w, "minimum_calls",
                   f"an int in [1, window_size={w}] for a count window", m)  # fmt: skip
        else:
            _check(_is_int(m) and m >= 1, "minimum_calls", "an int >= 1", m)
        for name in ("failure_rate_threshold", "slow_call_rate_threshold"):
            v = getattr(self, name)
            _check(_is_num(v) and 0 < v <= 1, name, "a rate in (0, 1]", v)
        c = self.consecutive_failures
        _check(c is None or (_is_int(c) and c >= 1), "consecutive_failures",
               "None or an int >= 1", c)  # fmt: skip
        for name in ("slow_call_duration_s", "wait_open_s", "half_open_max_wait_s"):
            v = getattr(self, name)
            _check(_is_num(v) and 0 < v < math.inf, name, "a finite number of seconds > 0", v)
        b = self.backoff_multiplier
        _check(_is_num(b) and 1 <= b < math.inf, "backoff_multiplier", "a finite number >= 1", b)
        mx = self.max_wait_open_s
        _check(_is_num(mx) and self.wait_open_s <= mx < math.inf, "max_wait_open_s",
               f"a finite number >= wait_open_s={self.wait_open_s}", mx)  # fmt: skip
        _check(_is_num(self.jitter) and 0 <= self.jitter <= 1, "jitter", "in [0, 1]", self.jitter)
        p = self.half_open_probes
        _check(_is_int(p) and p >= 1, "half_open_probes", "an int >= 1", p)


class Permit:
    """The answer to `try_acquire`; hand it back to exactly one of on_success/failure/ignore.

    `generation` is -1 on a rejection (no result is expected). Closed-state admits share one
    instance per generation, so a permit is a token, not a per-call record.
    """

    __slots__ = ("admitted", "decision", "generation")

    def __init__(self, admitted: bool, decision: Decision, generation: int) -> None:
        self.admitted = admitted
        self.decision = decision
        self.generation = generation

    def __repr__(self) -> str:
        return (
            f"Permit(admitted={self.admitted}, decision={self.decision!r}, gen={self.generation})"
        )


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A read-only view for metrics: state and the current window's rates."""

    name: str
    state: BreakerState
    calls: int
    failures: int
    slow_calls: int
    failure_rate: float
    slow_call_rate: float
    consecutive_failures: int
    rejected_total: int
    opened_total: int


class _CountWindow:
    """The last `size` outcomes in a ring, with running totals: O(1) per record.

    `record` answers whether the window now says trip. A success can raise no rate, so it is
    only evaluated when it brings the window up to `min_calls`.
    """

    __slots__ = ("calls", "fail_thr", "failures", "idx", "min_calls", "ring", "size", "slow_thr",
                 "slows")  # fmt: skip

    def __init__(self, size: int, min_calls: int, fail_thr: float, slow_thr: float) -> None:
        self.size = size
        self.min_calls = min_calls
        self.fail_thr = fail_thr
        self.slow_thr = slow_thr
        self.ring = bytearray(size)
        self.clear()

    def clear(self) -> None:
        self.calls = self.failures = self.slows = self.idx = 0

    def advance(self) -> None:
        return None

    def record(self, code: int) -> bool:
        i = self.idx
        self.idx = i + 1 if i + 1 < self.size else 0
        ring = self.ring
        if self.calls == self.size:
            old = ring[i]
            if old == code:  # totals unchanged, and they were below the thresholds
                return False
            ring[i] = code
            if old:
                self.failures -= old & _FAILED
                self.slows -= old >> 1
            if not code:
                return False
        else:
            ring[i] = code
            self.calls += 1
            if not code and self.calls != self.min_calls:
                return False
        self.failures += code & _FAILED
        self.slows += code >> 1
        calls = self.calls
        # division, not multiplication: 5/10 >= 0.5 and 3/10 >= 0.3 hold exactly in floats
        return calls >= self.min_calls and (
            self.failures / calls >= self.fail_thr or self.slows / calls >= self.slow_thr
        )


class _TimeWindow:
    """The last `size` seconds in per-second buckets; a bucket is cleared when the clock
    passes it, so each second is cleared at most once: O(1) amortised per record.

    Forgetting old successes can raise a rate, so after any eviction the next record is
    evaluated whatever its outcome.
    """

    __slots__ = ("b_calls", "b_fail", "b_slow", "calls", "clock", "dirty", "fail_thr", "failures",
                 "head", "min_calls", "size", "slow_thr", "slows")  # fmt: skip

    def __init__(
        self, size: int, min_calls: int, fail_thr: float, slow_thr: float, clock: Clock
    ) -> None:
        self.size = size
        self.min_calls = min_calls
        self.fail_thr = fail_thr
        self.slow_thr = slow_thr
        self.clock = clock
        self.b_calls = [0] * size
        self.b_fail = [0] * size
        self.b_slow = [0] * size
        self.clear()

    def clear(self) -> None:
        self.calls = self.failures = self.slows = 0
        self.head = -1  # the latest second seen; -1 = nothing recorded
        self.dirty = False
        for i in range(self.size):
            self.b_calls[i] = self.b_fail[i] = self.b_slow[i] = 0

    def advance(self) -> None:
        sec = self.clock() // NS_PER_S
        head = self.head
        if sec <= head:  # same second, or the clock stepped back: keep the newest bucket
            return
        if head >= 0:
            for s in range(head + 1, min(sec, head + self.size) + 1):
                j = s % self.size
                if self.b_calls[j]:
                    self.calls -= self.b_calls[j]
                    self.failures -= self.b_fail[j]
                    self.slows -= self.b_slow[j]
                    self.b_calls[j] = self.b_fail[j] = self.b_slow[j] = 0
                    self.dirty = True
        self.head = sec

    def record(self, code: int) -> bool:
        self.advance()
        j = self.head % self.size
        self.b_calls[j] += 1
        self.calls += 1
        if code:
            f, s = code & _FAILED, code >> 1
            self.b_fail[j] += f
            self.b_slow[j] += s
            self.failures += f
            self.slows += s
        elif not self.dirty and self.calls != self.min_calls:
            return False
        self.dirty = False
        calls = self.calls
        return calls >= self.min_calls and (
            self.failures / calls >= self.fail_thr or self.slows / calls >= self.slow_thr
        )


class CircuitBreaker:
    """One breaker per dependency (per DSP). See the module docstring for the state machine.

    The open -> half-open transition is lazy: it happens on the first `try_acquire` after the
    wait, so `state` may still read OPEN for an idle breaker whose wait has passed.
    """

    __slots__ = (
        "_admit_permit", "_clock", "_consec", "_consec_limit", "_fail_thr", "_forced_permit",
        "_gen", "_half_open_deadline_ns", "_listeners", "_max_wait_ns",
        "_nominal_wait_ns", "_open_until_ns", "_opened_total", "_opens_in_row", "_probe_fail",
        "_probe_permit", "_probe_results", "_probe_slow", "_probes", "_probes_out",
        "_rejected_total", "_rng", "_slow_ns", "_slow_thr", "_state", "_window", "config",
        "name",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        *,
        clock: Clock = monotonic_ns,
        rng: random.Random | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"CircuitBreaker name must be a non-empty string, got {name!r}")
        if not isinstance(config, BreakerConfig):
            raise ValueError(f"CircuitBreaker config must be a BreakerConfig, got {config!r}")
        self.name = name
        self.config = config
        self._clock = clock
        # seeded by name by default: reproducible, yet breakers of different DSPs de-synchronise
        self._rng = rng if rng is not None else random.Random(name)
        # in consecutive-failures mode the window only feeds snapshot(): it must never trip
        min_calls = config.minimum_calls if config.consecutive_failures is None else sys.maxsize
        f, s = config.failure_rate_threshold, config.slow_call_rate_threshold
        self._window: _CountWindow | _TimeWindow = (
            _CountWindow(config.window_size, min_calls, f, s)
            if config.window_type == "count"
            else _TimeWindow(config.window_size, min_calls, f, s, clock)
        )
        self._fail_thr = config.failure_rate_threshold
        self._slow_thr = config.slow_call_rate_threshold
        self._slow_ns = round(config.slow_call_duration_s * NS_PER_S)
        self._consec_limit = config.consecutive_failures
        self._max_wait_ns = round(config.max_wait_open_s * NS_PER_S)
        self._probes = config.half_open_probes
        self._forced_permit = Permit(
            False, Decision(False, BREAKER_OPEN, config.wait_open_s), -1
        )  # no known end: hint the base wait
        self._listeners: list[BreakerListener] = []
        self._rejected_total = 0
        self._opened_total = 0
        self._opens_in_row = 0
        self._nominal_wait_ns = 0
        self._open_until_ns = 0
        self._half_open_deadline_ns = 0
        self._probe_permit = self._admit_permit = Permit(True, ADMIT, 0)
        self._probes_out = self._probe_results = self._probe_fail = self._probe_slow = 0
        self._consec = 0
        self._gen = 0
        self._state = BreakerState.CLOSED

    # --- reading ---------------------------------------------------------------------------
    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def generation(self) -> int:
        """Bumped on every state change (and on reset); permits from older ones are void."""
        return self._gen

    @property
    def open_until_ns(self) -> int:
        """When the current (or last) open period ends, on the breaker's clock."""
        return self._open_until_ns

    def snapshot(self) -> BreakerSnapshot:
        w = self._window
        w.advance()
        calls = w.calls
        return BreakerSnapshot(
            name=self.name,
            state=self._state,
            calls=calls,
            failures=w.failures,
            slow_calls=w.slows,
            failure_rate=w.failures / calls if calls else 0.0,
            slow_call_rate=w.slows / calls if calls else 0.0,
            consecutive_failures=self._consec,
            rejected_total=self._rejected_total,
            opened_total=self._opened_total,
        )

    def add_listener(self, fn: BreakerListener) -> None:
        """`fn(name, old, new)` on every transition, after the new state is fully in place."""
        self._listeners.append(fn)

    def remove_listener(self, fn: BreakerListener) -> None:
        self._listeners.remove(fn)

    # --- the call path ---------------------------------------------------------------------
    def try_acquire(self) -> Permit:
        """Admit or reject one call now. Never blocks; a rejection is BREAKER_OPEN."""
        state = self._state
        if state is BreakerState.CLOSED or state is BreakerState.DISABLED:
            return self._admit_permit
        if state is BreakerState.FORCED_OPEN:
            self._rejected_total += 1
            return self._forced_permit
        now = self._clock()
        if state is BreakerState.OPEN:
            if now < self._open_until_ns:
                return self._reject(self._open_until_ns - now)
            self._to_half_open(now)
        # HALF_OPEN
        if now >= self._half_open_deadline_ns:  # a probe got lost: do not wait forever
            self._open(now)
            return self._reject(self._open_until_ns - now)
        if self._probes_out + self._probe_results < self._probes:
            self._probes_out += 1
            return self._probe_permit
        return self._reject(self._half_open_deadline_ns - now)

    def on_success(self, permit: Permit, duration_ns: int) -> None:
        """The call completed normally (a no-bid is a success); slow if duration >= threshold."""
        if permit.generation != self._gen:
            return
        if duration_ns < 0:
            raise ValueError(f"duration_ns must be >= 0, got {duration_ns}")
        code = _SLOW if duration_ns >= self._slow_ns else _OK
        state = self._state
        if state is BreakerState.CLOSED:
            self._consec = 0
            if self._window.record(code):
                self._open(self._clock())
        elif state is BreakerState.HALF_OPEN:
            self._record_probe(code)

    def on_failure(self, permit: Permit, duration_ns: int) -> None:
        """The call failed (timeout, reset, 5xx)."""
        if permit.generation != self._gen:
            return
        if duration_ns < 0:
            raise ValueError(f"duration_ns must be >= 0, got {duration_ns}")
        code = _FAILED | (_SLOW if duration_ns >= self._slow_ns else _OK)
        state = self._state
        if state is BreakerState.CLOSED:
            self._consec += 1
            tripped = self._window.record(code)
            limit = self._consec_limit
            if tripped or (limit is not None and self._consec >= limit):
                self._open(self._clock())
        elif state is BreakerState.HALF_OPEN:
            self._record_probe(code)

    def on_ignore(self, permit: Permit) -> None:
        """We cancelled the call ourselves: count nothing; a half-open probe permit returns."""
        if (
            permit.generation == self._gen
            and self._state is BreakerState.HALF_OPEN
            and self._probes_out > 0
        ):
            self._probes_out -= 1

    # --- operator actions ------------------------------------------------------------------
    def force_open(self) -> None:
        """Reject everything until `reset()`."""
        if self._state is not BreakerState.FORCED_OPEN:
            self._transition(BreakerState.FORCED_OPEN, self._clock())

    def disable(self) -> None:
        """Admit everything and record nothing until `reset()` or `force_open()`."""
        if self._state is not BreakerState.DISABLED:
            self._transition(BreakerState.DISABLED, self._clock())

    def reset(self) -> None:
        """Back to a fresh CLOSED: empty window, no backoff, results in flight void."""
        self._opens_in_row = 0
        if self._state is BreakerState.CLOSED:
            self._gen += 1
            self._enter_admitting()
        else:
            self._transition(BreakerState.CLOSED, self._clock())

    # --- internals -------------------------------------------------------------------------
    def _reject(self, retry_after_ns: int) -> Permit:
        self._rejected_total += 1
        return Permit(False, Decision(False, BREAKER_OPEN, retry_after_ns / NS_PER_S), -1)

    def _record_probe(self, code: int) -> None:
        now = self._clock()
        if now >= self._half_open_deadline_ns:  # too late: the half-open period has expired
            self._open(now)
            return
        if self._probes_out == 0:  # more results than probes issued: a double report
            return
        self._probes_out -= 1
        self._probe_results += 1
        self._probe_fail += code & _FAILED
        self._probe_slow += code >> 1
        k = self._probes
        if self._consec_limit is not None:
            failed = self._probe_fail > 0
        else:  # the rate is over all k results, so it can be decided before they are all in
            failed = (
                self._probe_fail / k >= self._fail_thr or self._probe_slow / k >= self._slow_thr
            )
        if failed:
            self._open(now)
        elif self._probe_results >= k:
            self._opens_in_row = 0
            self._transition(BreakerState.CLOSED, now)

    def _open(self, now: int) -> None:
        if self._opens_in_row == 0:
            nominal = round(self.config.wait_open_s * NS_PER_S)
        else:
            nominal = min(
                self._max_wait_ns, round(self._nominal_wait_ns * self.config.backoff_multiplier)
            )
        self._nominal_wait_ns = nominal
        self._opens_in_row += 1
        wait = nominal - int(nominal * self.config.jitter * self._rng.random())
        self._open_until_ns = now + max(1, wait)
        self._opened_total += 1
        self._transition(BreakerState.OPEN, now)

    def _to_half_open(self, now: int) -> None:
        self._transition(BreakerState.HALF_OPEN, now)

    def _enter_admitting(self) -> None:
        self._admit_permit = Permit(True, ADMIT, self._gen)
        self._window.clear()
        self._consec = 0

    def _transition(self, new: BreakerState, now: int) -> None:
        old = self._state
        self._state = new
        self._gen += 1
        if new is BreakerState.CLOSED or new is BreakerState.DISABLED:
            self._enter_admitting()
        elif new is BreakerState.HALF_OPEN:
            self._probe_permit = Permit(True, ADMIT, self._gen)
            self._probes_out = self._probe_results = self._probe_fail = self._probe_slow = 0
            self._half_open_deadline_ns = now + round(self.config.half_open_max_wait_s * NS_PER_S)
        for fn in tuple(self._listeners):
            try:
                fn(self.name, old, new)
            except Exception:  # a broken listener must not wedge the breaker
                _log.exception("breaker %s: listener failed on %s -> %s", self.name, old, new)
