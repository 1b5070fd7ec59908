"""Per-publisher token buckets, bounded in number, evicted only when eviction loses nothing.

A bucket that is full (idle for burst/rate seconds, or longer while in debt) is exactly a
fresh bucket, so forgetting it and creating a new one on the next request changes no answer.
A bucket that is not full remembers spending; evicting it would hand its publisher a fresh
burst and break the bound `admitted <= burst + rate * t`. So:

    known key                -> its bucket (moved to the recent end)
    new key, room left       -> a fresh, full bucket
    new key, registry full   -> sweep up to SWEEP buckets from the least recent end:
                                evict the full ones, rotate the others to the recent end
                                (a CLOCK sweep: every bucket is looked at in turn)
        something evicted    -> a fresh, full bucket
        nothing evictable    -> refuse (RATE_LIMITED, retry when the first swept bucket fills)

Refusing a new key when every tracked bucket still remembers spending is the only choice that
never admits more than the bound allows: a publisher's requests are either counted by its own
bucket or refused. Known publishers are never affected by the refusal, so a flood of new keys
cannot take capacity from a publisher already tracked. With rate 0 buckets never refill, so
once `max_keys` publishers have spent tokens every new publisher is refused.
"""

from __future__ import annotations

from collections import OrderedDict
from itertools import islice

from spikegate.target.backpressure.clock import Clock, monotonic_ns
from spikegate.target.backpressure.decision import ADMIT, RATE_LIMITED, Decision
from spikegate.target.backpressure.token_bucket import (
    NEVER_NS,
    TokenBucket,
    check_burst,
    check_rate,
    wait_after_s,
)

SWEEP = 16
"""How many least-recent buckets one insertion into a full registry looks at."""


class BucketRegistry:
    """One `TokenBucket(rate, burst)` per key, at most `max_keys` of them, evicted losslessly."""

    __slots__ = ("_buckets", "_burst", "_clock", "_max_keys", "_rate", "evictions", "refusals")

    def __init__(
        self, rate: float, burst: int, *, max_keys: int = 10_000, clock: Clock = monotonic_ns
    ) -> None:
        self._rate = check_rate(rate)
        self._burst = check_burst(burst)
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ValueError(f"max_keys must be an integer >= 1, got {max_keys!r}")
        if not callable(clock):
            raise ValueError(f"clock must be a zero-argument callable returning ns, got {clock!r}")
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.evictions = 0
        """Buckets evicted because they were full (each eviction lost nothing)."""
        self.refusals = 0
        """New keys refused because the registry was full and nothing was evictable."""

    @property
    def rate(self) -> float:
        """Rate of every bucket, tokens/s."""
        return self._rate

    @property
    def burst(self) -> int:
        """Burst of every bucket, tokens."""
        return self._burst

    @property
    def max_keys(self) -> int:
        """The most buckets ever held at once."""
        return self._max_keys

    def decide(self, key: str, n: int = 1) -> Decision:
        """The decision of `key`'s bucket for `n` tokens; RATE_LIMITED for a new key that
        cannot be tracked (see the module docstring)."""
        wait_ns = self.take(key, n)
        if not wait_ns:
            return ADMIT
        return Decision(False, RATE_LIMITED, wait_after_s(wait_ns))

    def take(self, key: str, n: int = 1) -> int:
        """`decide` as `TokenBucket.take` answers: 0 if `key`'s bucket gave `n` tokens, else
        the nanoseconds to wait (`NEVER_NS`: never), a refused new key included."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            self._buckets.move_to_end(key)
            return bucket.take(n)
        wait_ns = self._make_room()
        if wait_ns:
            self.refusals += 1
            return wait_ns if wait_ns > 0 else NEVER_NS
        return self._add(key).take(n)

    def get(self, key: str) -> TokenBucket:
        """`key`'s bucket, created full if new. When the registry is full and nothing is
        evictable, an untracked bucket that admits nothing (rate 0, burst 0).

        Ask again for each request: a bucket held across awaits may be evicted (once full)
        and replaced, and the two would then count separately.
        """
        bucket = self._buckets.get(key)
        if bucket is not None:
            self._buckets.move_to_end(key)
            return bucket
        if self._make_room():
            self.refusals += 1
            return TokenBucket(0.0, 0, clock=self._clock)
        return self._add(key)

    def evict_idle(self) -> int:
        """Evict every full bucket now (a full sweep, O(keys)); returns how many went."""
        full = [key for key, bucket in self._buckets.items() if bucket.is_full()]
        for key in full:
            del self._buckets[key]
        self.evictions += len(full)
        return len(full)

    def set_rate(self, rate: float) -> None:
        """Change the rate of every bucket, current and future (see `TokenBucket.set_rate`)."""
        self._rate = check_rate(rate)
        for bucket in self._buckets.values():
            bucket.set_rate(self._rate)

    def set_burst(self, burst: int) -> None:
        """Change the burst of every bucket, current and future (see `TokenBucket.set_burst`)."""
        self._burst = check_burst(burst)
        for bucket in self._buckets.values():
            bucket.set_burst(self._burst)

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets

    def _add(self, key: str) -> TokenBucket:
        bucket = TokenBucket(self._rate, self._burst, clock=self._clock)
        self._buckets[key] = bucket
        return bucket

    def _make_room(self) -> int:
        """0 if a new bucket fits; else ns until the first swept bucket is full (-1 = never)."""
        buckets = self._buckets
        if len(buckets) < self._max_keys:
            return 0
        soonest = -1
        evicted = 0
        for key in list(islice(buckets, SWEEP)):
            wait_ns = buckets[key].time_to_full_ns()
            if wait_ns == 0:
                del buckets[key]
                evicted += 1
                continue
            buckets.move_to_end(key)
            if wait_ns is not None and (soonest < 0 or wait_ns < soonest):
                soonest = wait_ns
        if evicted:
            self.evictions += evicted
            return 0
        return soonest
