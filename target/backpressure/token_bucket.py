"""Token bucket: the edge rate limit, with golang.org/x/time/rate semantics.

    tokens(t) = min(burst, tokens(last) + (t - last) * rate)      refilled lazily

`allow(n)` takes n tokens now or changes nothing; `reserve(n)` may go into debt and says how
long to wait; `wait(n)` sleeps that long (or fails at once if the wait would pass the
deadline) and gives the tokens back when cancelled.

Arithmetic is exact. Every finite float rate is a rational p/q, so the bucket counts in
integer *units* (`_unit` units = one token) chosen so that one nanosecond refills a whole
number of units (`_per_ns`). No rounding happens anywhere, so the refill over any interval
is exact to the nanosecond after days of uptime: nothing drifts. Changing the rate only ever
refines the unit (lcm of old and new), so converting the stored tokens is exact too. An
unlimited bucket has unit 0: tokens cost nothing, so the hot path needs no extra branch.

Cancelling a reservation before its time to act gives back all n tokens (capped at the
burst). x/time/rate also withholds tokens "used" by later reservations; that is not needed
for the bound, since a later reservation keeps its own debt and its own time to act.

Time never runs backwards here: `_last` only moves forward, so a clock stepping back refills
nothing (and stepping forward again refills only time not yet credited).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

from spikegate.target.backpressure.clock import NS_PER_S, Clock, monotonic_ns
from spikegate.target.backpressure.decision import ADMIT, RATE_LIMITED, Decision

Sleep = Callable[[float], Awaitable[Any]]

NEVER_NS = 2**63 - 1
"""`Reservation.delay_ns` of a reservation that can never succeed (n > burst, or rate 0)."""


def check_rate(rate: float, name: str = "rate") -> float:
    """Validate a rate in tokens/s: a real number >= 0 (math.inf = unlimited)."""
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        raise ValueError(
            f"{name} must be a number of tokens/s >= 0 (math.inf for unlimited), got {rate!r}"
        )
    try:
        value = float(rate)
    except OverflowError:
        value = math.inf
    if math.isnan(value) or value < 0:
        raise ValueError(
            f"{name} must be a number of tokens/s >= 0 (math.inf for unlimited), got {rate!r}"
        )
    return value


def check_burst(burst: int, name: str = "burst") -> int:
    """Validate a burst: an integer number of tokens >= 0."""
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 0:
        raise ValueError(f"{name} must be an integer number of tokens >= 0, got {burst!r}")
    return burst


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer number of tokens >= 1, got {n!r}")


def _check_deadline(deadline_ns: int | None) -> None:
    if deadline_ns is not None and (
        isinstance(deadline_ns, bool) or not isinstance(deadline_ns, int)
    ):
        raise ValueError(
            "deadline_ns must be None or an absolute clock reading in integer nanoseconds, "
            f"got {deadline_ns!r}"
        )


def _units_for(rate: float) -> int:
    """The smallest unit count per token that makes one nanosecond refill whole units."""
    num, den = rate.as_integer_ratio()
    per_s = den * NS_PER_S
    return per_s // math.gcd(num, per_s)


def wait_after_s(wait_ns: int) -> float:
    """A `take` wait in seconds, as a Decision's `retry_after_s` (`NEVER_NS` -> math.inf; a
    finite wait may be longer still, at a rate near 0)."""
    return math.inf if wait_ns == NEVER_NS else wait_ns / NS_PER_S


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class Reservation:
    """The answer of `TokenBucket.reserve`: act after `delay_ns` if `ok`, or `cancel()`.

    A failed reservation changed nothing; its `delay_ns` is the wait it would have needed
    (`NEVER_NS` if it can never succeed). Cancelling before the reservation's time to act
    gives its tokens back (up to the burst); cancelling later, or twice, does nothing.
    """

    __slots__ = ("_act_ns", "_bucket", "_n", "delay_ns", "ok")

    def __init__(self, bucket: TokenBucket, n: int, ok: bool, delay_ns: int, act_ns: int) -> None:
        self._bucket = bucket
        self._n = n  # tokens to give back on cancel; 0 once cancelled or if nothing was taken
        self.ok = ok
        self.delay_ns = delay_ns
        self._act_ns = act_ns

    @property
    def delay_s(self) -> float:
        """`delay_ns` in seconds; math.inf for a reservation that can never succeed."""
        if not self.ok and self.delay_ns >= NEVER_NS:
            return math.inf
        return self.delay_ns / NS_PER_S

    def cancel(self) -> None:
        """Give the reserved tokens back, unless the time to act has already passed."""
        n, self._n = self._n, 0
        if n:
            self._bucket._give_back(n, self._act_ns)

    def __repr__(self) -> str:
        return f"Reservation(ok={self.ok}, delay_ns={self.delay_ns})"


class TokenBucket:
    """A token bucket of `rate` tokens/s holding at most `burst` tokens; starts full.

    `rate` may be math.inf (admits everything, even with burst 0) or 0 (admits `burst`
    tokens once, then nothing). Time comes from `clock` (monotonic integer nanoseconds).
    """

    __slots__ = (
        "_burst",
        "_cap",
        "_clock",
        "_inf",
        "_last",
        "_per_ns",
        "_rate",
        "_tokens",
        "_unit",
    )

    def __init__(self, rate: float, burst: int, *, clock: Clock = monotonic_ns) -> None:
        self._rate = check_rate(rate)
        self._burst = check_burst(burst)
        if not callable(clock):
            raise ValueError(f"clock must be a zero-argument callable returning ns, got {clock!r}")
        self._clock = clock
        self._inf = False
        self._unit = self._per_ns = self._cap = self._tokens = 0
        if math.isinf(self._rate):
            self._set_unlimited()
        else:
            self._unit = _units_for(self._rate)
            self._per_ns = self._per_ns_for(self._rate)
            self._cap = self._tokens = self._burst * self._unit
        self._last = clock()

    # --- properties --------------------------------------------------------------------------

    @property
    def rate(self) -> float:
        """Refill rate in tokens per second (math.inf = unlimited)."""
        return self._rate

    @property
    def burst(self) -> int:
        """Capacity in tokens: the most that can be admitted at one instant."""
        return self._burst

    # --- the hot path ------------------------------------------------------------------------

    def allow(self, n: int = 1) -> bool:
        """Take `n` tokens now if they are there; a refusal changes nothing."""
        # An unlimited bucket has _unit == 0, so tokens cost nothing and no branch is needed.
        if n == 1:
            cost = self._unit
        else:
            _check_n(n)
            cost = n * self._unit
        now = self._clock()
        last = self._last
        if now > last:
            tokens = self._tokens + (now - last) * self._per_ns
            if tokens > self._cap:
                tokens = self._cap
            if tokens < cost:
                return False
            self._tokens = tokens - cost
            self._last = now
            return True
        tokens = self._tokens
        if tokens < cost:
            return False
        self._tokens = tokens - cost
        return True

    def take(self, n: int = 1) -> int:
        """Take `n` tokens now: 0 if taken, else the nanoseconds until they would be there
        (`NEVER_NS`: never) and nothing changes. `decide` without building a Decision, for
        the edge's lean path (lean_http), where a rejection's cost is counted in objects."""
        if n == 1:
            cost = self._unit
        else:
            _check_n(n)
            cost = n * self._unit
        now = self._clock()
        at = self._last
        tokens = self._tokens
        if now > at:
            tokens += (now - at) * self._per_ns
            if tokens > self._cap:
                tokens = self._cap
            at = now
        if tokens >= cost:
            self._tokens = tokens - cost
            self._last = at
            return 0
        if cost > self._cap or not self._per_ns:
            return NEVER_NS
        return at - now + _ceil_div(cost - tokens, self._per_ns)

    def decide(self, n: int = 1) -> Decision:
        """`ADMIT`, or RATE_LIMITED with `retry_after_s` = time until `n` tokens (inf: never)."""
        wait_ns = self.take(n)
        if not wait_ns:
            return ADMIT
        return Decision(False, RATE_LIMITED, wait_after_s(wait_ns))

    # --- reservations ------------------------------------------------------------------------

    def reserve(self, n: int = 1, *, deadline_ns: int | None = None) -> Reservation:
        """Take `n` tokens, going into debt if needed; `ok` only if n <= burst and the wait
        ends by `deadline_ns` (absolute clock ns; None = no deadline). A failure changes nothing.
        """
        _check_n(n)
        _check_deadline(deadline_ns)
        now = self._clock()
        if self._inf:
            return Reservation(self, 0, True, 0, now)
        cost = n * self._unit
        if cost > self._cap:
            return Reservation(self, 0, False, NEVER_NS, now)
        at, tokens = self._refilled(now)
        tokens -= cost
        if tokens >= 0:
            act_ns = at
        elif self._per_ns:
            act_ns = at + _ceil_div(-tokens, self._per_ns)
        else:
            return Reservation(self, 0, False, NEVER_NS, now)
        if deadline_ns is not None and act_ns > deadline_ns:
            return Reservation(self, 0, False, min(act_ns - now, NEVER_NS), now)
        self._tokens = tokens
        self._last = at
        return Reservation(self, n, True, act_ns - now, act_ns)

    async def wait(
        self, n: int = 1, *, deadline_ns: int | None = None, sleep: Sleep = asyncio.sleep
    ) -> bool:
        """Wait until `n` tokens are ours. False at once, without sleeping, if n > burst or the
        wait would end after `deadline_ns`; if the wait is cancelled, the tokens go back.
        """
        if self.allow(n):  # fast path: tokens on hand, nothing to wait for or to undo
            return True
        reservation = self.reserve(n, deadline_ns=deadline_ns)
        if not reservation.ok:
            return False
        if reservation.delay_ns > 0:
            try:
                await sleep(reservation.delay_ns / NS_PER_S)
            except BaseException:
                reservation.cancel()
                raise
        return True

    def _give_back(self, n: int, act_ns: int) -> None:
        if self._inf:
            return
        now = self._clock()
        if now > act_ns:
            return  # the reservation has acted; its tokens were spent
        at, tokens = self._refilled(now)
        self._tokens = min(self._cap, tokens + n * self._unit)
        self._last = at

    # --- reconfiguration ---------------------------------------------------------------------

    def set_rate(self, rate: float) -> None:
        """Change the rate: tokens accrue at the old rate up to now, then at the new one."""
        rate = check_rate(rate)
        self._advance()
        if math.isinf(rate):
            self._set_unlimited()
        elif self._inf:
            self._inf = False
            self._unit = _units_for(rate)
            self._cap = self._tokens = self._burst * self._unit  # unlimited was always full
            self._per_ns = self._per_ns_for(rate)
        else:
            unit = math.lcm(self._unit, _units_for(rate))
            scale = unit // self._unit
            self._tokens *= scale
            self._cap = self._burst * unit
            self._unit = unit
            self._per_ns = self._per_ns_for(rate)
        self._rate = rate

    def set_burst(self, burst: int) -> None:
        """Change the capacity after accruing up to now; raising it grants no tokens."""
        burst = check_burst(burst)
        self._advance()
        self._burst = burst
        self._cap = burst * self._unit
        if self._tokens > self._cap:
            self._tokens = self._cap

    # --- inspection --------------------------------------------------------------------------

    def tokens(self) -> float:
        """Tokens available now (negative while reservations are in debt; math.inf if unlimited)."""
        if self._inf:
            return math.inf
        return self._refilled(self._clock())[1] / self._unit

    def time_to_full_ns(self) -> int | None:
        """Nanoseconds until the bucket is full again (0 if full now, None if never)."""
        if self._inf:
            return 0
        now = self._clock()
        at, tokens = self._refilled(now)
        missing = self._cap - tokens
        if missing <= 0:
            return 0
        if not self._per_ns:
            return None
        return at - now + _ceil_div(missing, self._per_ns)

    def is_full(self) -> bool:
        """True if the bucket holds `burst` tokens: replacing it by a fresh one loses nothing."""
        return self.time_to_full_ns() == 0

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self._rate!r}, burst={self._burst}, tokens={self.tokens():.6g})"

    # --- internals ---------------------------------------------------------------------------

    def _per_ns_for(self, rate: float) -> int:
        num, den = rate.as_integer_ratio()
        return num * self._unit // (den * NS_PER_S)

    def _refilled(self, now: int) -> tuple[int, int]:
        """(time the state is valid at, tokens in units then); never moves time backwards."""
        last = self._last
        if now <= last:
            return last, self._tokens
        tokens = self._tokens + (now - last) * self._per_ns
        return now, tokens if tokens < self._cap else self._cap

    def _advance(self) -> None:
        self._last, self._tokens = self._refilled(self._clock())

    def _set_unlimited(self) -> None:
        # Tokens cost nothing (unit 0), so allow() admits everything without a branch.
        self._inf = True
        self._unit = self._per_ns = self._cap = self._tokens = 0
