"""BucketRegistry: isolated per-publisher buckets, bounded, evicted only losslessly."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikegate.target.backpressure.clock import NS_PER_S, FakeClock
from spikegate.target.backpressure.decision import RATE_LIMITED
from spikegate.target.backpressure.registry import SWEEP, BucketRegistry
from spikegate.target.backpressure.token_bucket import TokenBucket

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def drain(registry: BucketRegistry, key: str) -> int:
    taken = 0
    while registry.decide(key).admitted:
        taken += 1
    return taken


def test_publisher_at_10x_its_rate_does_not_change_another_publishers_admits() -> None:
    """B's admits over 5 s of A flooding at 10x the rate equal B's admits when A is silent."""

    def run(with_a: bool) -> tuple[list[bool], int]:
        clock = FakeClock()
        registry = BucketRegistry(100, 20, max_keys=10, clock=clock)
        b_answers = []
        a_admitted = 0
        for tick in range(5_000):  # 1 ms ticks for 5 s
            if with_a:
                for _ in range(1):  # A: 1000/s = 10x its 100/s rate
                    a_admitted += registry.decide("A").admitted
            if tick % 3 == 0:  # B: ~333/s, itself over its rate
                b_answers.append(registry.decide("B").admitted)
            clock.advance_ns(1_000_000)
        return b_answers, a_admitted

    alone, _ = run(with_a=False)
    beside_a, a_admitted = run(with_a=True)
    assert beside_a == alone
    assert sum(alone) == 20 + 499  # B is limited by its own bucket: b + r*t
    assert a_admitted == 20 + 499  # and A by its own


def test_same_key_gets_the_same_bucket_and_new_keys_start_full() -> None:
    registry = BucketRegistry(5, 3, clock=FakeClock())
    bucket = registry.get("pub-1")
    assert registry.get("pub-1") is bucket
    assert (bucket.rate, bucket.burst, bucket.tokens()) == (5, 3, 3)
    assert drain(registry, "pub-1") == 3
    assert drain(registry, "pub-2") == 3
    assert len(registry) == 2
    assert "pub-1" in registry and "pub-3" not in registry


def test_refused_decision_is_rate_limited_with_retry_after() -> None:
    clock = FakeClock()
    registry = BucketRegistry(2, 1, clock=clock)
    assert registry.decide("p").admitted
    refused = registry.decide("p")
    assert (refused.admitted, refused.reason, refused.retry_after_s) == (False, RATE_LIMITED, 0.5)
    clock.advance(refused.retry_after_s)
    assert registry.decide("p").admitted


def test_full_buckets_are_evicted_to_make_room_and_eviction_loses_nothing() -> None:
    clock = FakeClock()
    registry = BucketRegistry(10, 5, max_keys=2, clock=clock)
    assert drain(registry, "a") == 5
    assert drain(registry, "b") == 5
    clock.advance(0.5)  # both refilled to exactly 5: full, so forgettable
    assert drain(registry, "c") == 5
    assert registry.evictions == 2  # the sweep takes every full bucket it passes
    assert len(registry) == 1
    # An evicted publisher comes back to exactly what it would have had: a full bucket.
    assert drain(registry, "a") == 5
    assert not registry.decide("b").admitted  # c and a both spent: no room, no fresh burst


def test_registry_full_of_spending_publishers_refuses_new_keys_and_keeps_known_ones() -> None:
    """With no bucket evictable, a new key is refused (never a fresh burst), known keys are
    untouched, and the new key is admitted once a bucket is full again."""
    clock = FakeClock()
    registry = BucketRegistry(10, 5, max_keys=2, clock=clock)
    drain(registry, "a")
    drain(registry, "b")
    clock.advance(0.2)  # 2 tokens each, not full
    refused = registry.decide("c")
    assert (refused.admitted, refused.reason) == (False, RATE_LIMITED)
    assert refused.retry_after_s == pytest.approx(0.3)
    assert registry.refusals == 1
    assert "c" not in registry and len(registry) == 2
    assert drain(registry, "a") == 2  # known publishers keep exactly their own tokens
    clock.advance(0.5)
    assert registry.decide("c").admitted
    assert "c" in registry and len(registry) <= 2


def test_get_on_a_saturated_registry_returns_an_untracked_bucket_that_admits_nothing() -> None:
    clock = FakeClock()
    registry = BucketRegistry(10, 5, max_keys=1, clock=clock)
    drain(registry, "a")
    refusing = registry.get("b")
    assert not refusing.allow()
    assert not refusing.reserve(1).ok
    assert "b" not in registry
    assert registry.refusals == 1


def test_zero_rate_registry_refuses_new_keys_forever_once_saturated() -> None:
    clock = FakeClock()
    registry = BucketRegistry(0, 2, max_keys=2, clock=clock)
    drain(registry, "a")
    drain(registry, "b")
    clock.advance(10**6)
    assert registry.decide("c").retry_after_s == math.inf
    assert drain(registry, "a") == 0


def test_unlimited_registry_never_refuses() -> None:
    registry = BucketRegistry(math.inf, 0, max_keys=3, clock=FakeClock())
    assert all(registry.decide(f"k{i}").admitted for i in range(100))
    assert len(registry) <= 3


def test_sweep_finds_a_full_bucket_behind_three_sweeps_of_spenders() -> None:
    """A full bucket queued behind 3 sweeps' worth of non-full ones is evicted on the 4th
    insertion (each sweep rotates what it looked at), and only it is evicted."""
    clock = FakeClock()
    max_keys = 3 * SWEEP + 1
    registry = BucketRegistry(1, 2, max_keys=max_keys, clock=clock)
    registry.decide("idle")  # 1 token left
    for i in range(3 * SWEEP):
        drain(registry, f"busy{i}")  # 0 tokens left
    registry.get("idle")  # most recent now, without spending
    clock.advance(1)  # idle: 2 tokens, full; busy: 1 token each
    refusals = [registry.decide(f"new{i}") for i in range(3)]
    assert [d.admitted for d in refusals] == [False, False, False]
    assert all(d.retry_after_s == 1.0 for d in refusals)
    assert "idle" in registry
    assert registry.decide("new3").admitted
    assert "idle" not in registry
    assert registry.evictions == 1
    assert all(f"busy{i}" in registry for i in range(3 * SWEEP))


def test_evict_idle_removes_exactly_the_full_buckets() -> None:
    clock = FakeClock()
    registry = BucketRegistry(10, 4, clock=clock)
    registry.decide("spent-a-little")
    drain(registry, "spent-all")
    registry.get("untouched")
    clock.advance(0.1)  # spent-a-little: 3 + 1 = full; spent-all: 1
    assert registry.evict_idle() == 2
    assert "spent-all" in registry
    assert len(registry) == 1
    assert registry.evictions == 2


@SETTINGS
@given(
    max_keys=st.integers(1, 4),
    rate=st.sampled_from([0.0, 0.5, 1 / 3, 4.0]),
    burst=st.integers(1, 3),
    ops=st.lists(
        st.tuples(st.sampled_from("abcdef"), st.integers(1, 3), st.integers(0, 2 * NS_PER_S)),
        max_size=120,
    ),
)
def test_bounded_registry_answers_as_an_unbounded_one_and_never_exceeds_its_bound(
    max_keys: int, rate: float, burst: int, ops: list[tuple[str, int, int]]
) -> None:
    """Eviction is lossless: every request the bounded registry does not refuse for lack of
    room gets the same answer an unbounded registry gives; it holds at most max_keys
    buckets; and every key's admits stay within b + r*t (+1)."""
    clock = FakeClock()
    start = clock()
    bounded = BucketRegistry(rate, burst, max_keys=max_keys, clock=clock)
    reference: dict[str, TokenBucket] = {}
    admitted: dict[str, int] = {}
    for key, n, gap_ns in ops:
        clock.advance_ns(gap_ns)
        refusals = bounded.refusals
        decision = bounded.decide(key, n)
        assert len(bounded) <= max_keys
        if bounded.refusals > refusals:
            assert not decision.admitted and key not in bounded
            continue  # the unbounded registry never saw this request either
        expected = reference.setdefault(key, TokenBucket(rate, burst, clock=clock)).allow(n)
        assert decision.admitted == expected
        if decision.admitted:
            admitted[key] = admitted.get(key, 0) + n
            elapsed = Fraction(clock() - start, NS_PER_S)
            assert admitted[key] <= burst + Fraction(rate) * elapsed + 1


def test_set_rate_and_set_burst_apply_to_current_and_future_buckets() -> None:
    clock = FakeClock()
    registry = BucketRegistry(1, 2, clock=clock)
    drain(registry, "old")
    clock.advance(1)  # 1 token at the old rate
    registry.set_rate(10)
    registry.set_burst(4)
    assert (registry.rate, registry.burst) == (10, 4)
    clock.advance(0.2)  # + 2 at the new rate
    assert drain(registry, "old") == 3
    assert drain(registry, "new") == 4
    assert registry.get("new").rate == 10


def test_properties_report_configuration() -> None:
    registry = BucketRegistry(2.5, 7, max_keys=9, clock=FakeClock())
    assert (registry.rate, registry.burst, registry.max_keys, len(registry)) == (2.5, 7, 9, 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": -1.0}, r"rate must be .*>= 0"),
        ({"rate": math.nan}, r"rate must be .*>= 0"),
        ({"burst": -1}, r"burst must be an integer .*>= 0"),
        ({"burst": 2.5}, r"burst must be an integer .*>= 0"),
        ({"max_keys": 0}, r"max_keys must be an integer >= 1"),
        ({"max_keys": 1.5}, r"max_keys must be an integer >= 1"),
        ({"max_keys": True}, r"max_keys must be an integer >= 1"),
        ({"clock": "now"}, r"clock must be"),
    ],
)
def test_bad_configuration_raises_value_error_naming_the_parameter(
    kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"rate": 1.0, "burst": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        BucketRegistry(**args)  # type: ignore[arg-type]


def test_bad_n_and_bad_reconfiguration_raise_value_errors() -> None:
    registry = BucketRegistry(1, 1, clock=FakeClock())
    with pytest.raises(ValueError, match=r"n must be an integer .*>= 1"):
        registry.decide("p", 0)
    with pytest.raises(ValueError, match=r"rate must be .*>= 0"):
        registry.set_rate(-2)
    with pytest.raises(ValueError, match=r"burst must be an integer .*>= 0"):
        registry.set_burst(-2)
    assert (registry.rate, registry.burst) == (1, 1)
