"""TokenBucket: the properties of PATTERNS.md section 1, on a fake clock (nothing sleeps)."""

from __future__ import annotations

import asyncio
import math
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikegate.target.backpressure.clock import NS_PER_S, FakeClock
from spikegate.target.backpressure.decision import ADMITTED, RATE_LIMITED
from spikegate.target.backpressure.token_bucket import NEVER_NS, Reservation, TokenBucket

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Rates chosen to stress the arithmetic: non-dyadic (0.1, 1/3), tiny, huge, zero, unlimited.
RATES = st.sampled_from([0.0, 1e-10, 0.1, 1 / 3, 1.0, 3.0, 7.5, 1000.0, 123456.789, math.inf])
BURSTS = st.integers(min_value=0, max_value=20)


class Model:
    """x/time/rate as a formula, in exact rationals: the reference the bucket must match.

    Only a successful take or a reconfiguration commits time; a refusal changes nothing.
    """

    def __init__(self, rate: float, burst: int, now: int) -> None:
        self.rate: Fraction | None = None if math.isinf(rate) else Fraction(rate)
        self.burst = burst
        self.tokens = Fraction(burst)
        self.last = now

    def peek(self, now: int) -> tuple[int, Fraction]:
        if self.rate is None:
            return max(self.last, now), Fraction(self.burst)
        if now <= self.last:
            return self.last, self.tokens
        accrued = self.tokens + self.rate * Fraction(now - self.last, NS_PER_S)
        return now, min(Fraction(self.burst), accrued)

    def advance(self, now: int) -> None:
        self.last, self.tokens = self.peek(now)

    def allow(self, now: int, n: int) -> bool:
        if self.rate is None:
            return True
        last, tokens = self.peek(now)
        if tokens < n:
            return False
        self.last, self.tokens = last, tokens - n
        return True

    def set_rate(self, now: int, rate: float) -> None:
        self.advance(now)
        self.rate = None if math.isinf(rate) else Fraction(rate)

    def set_burst(self, now: int, burst: int) -> None:
        self.advance(now)
        self.burst = burst
        self.tokens = min(self.tokens, Fraction(burst))


def drain(bucket: TokenBucket) -> int:
    """Take every whole token available now; returns how many were taken."""
    taken = 0
    while bucket.allow():
        taken += 1
    return taken


def state(bucket: TokenBucket) -> tuple[object, ...]:
    return tuple(getattr(bucket, name) for name in TokenBucket.__slots__)


# --- the acceptance properties --------------------------------------------------------------


def test_1000_simultaneous_requests_at_r1000_b100_admit_exactly_100() -> None:
    bucket = TokenBucket(1000, 100, clock=FakeClock())
    assert sum(bucket.allow() for _ in range(1000)) == 100


def test_10s_overload_admits_burst_plus_rate_times_t() -> None:
    """Calls every 0.1 ms for 10 s at r=1000, b=100 admit b + r*T = 10100, within the bar."""
    clock = FakeClock()
    bucket = TokenBucket(1000, 100, clock=clock)
    admitted = 0
    for _ in range(100_001):  # t = 0, 0.1 ms, ..., 10 s inclusive
        admitted += bucket.allow()
        clock.advance_ns(100_000)
    assert 0.999 * 10_100 <= admitted <= 10_101
    assert admitted == 10_100  # exact arithmetic: not approximately, exactly


@SETTINGS
@given(
    rate=RATES,
    burst=BURSTS,
    calls=st.lists(
        st.tuples(st.integers(0, 3 * NS_PER_S), st.integers(1, 5)), min_size=1, max_size=80
    ),
)
def test_admitted_tokens_never_exceed_burst_plus_rate_times_t(
    rate: float, burst: int, calls: list[tuple[int, int]]
) -> None:
    """For any call sizes and spacing, tokens admitted in [0, t] <= b + r*t (+1 slack)."""
    clock = FakeClock()
    start = clock()
    bucket = TokenBucket(rate, burst, clock=clock)
    admitted = 0
    for gap_ns, n in calls:
        clock.advance_ns(gap_ns)
        if bucket.allow(n):
            admitted += n
        if not math.isinf(rate):
            assert admitted <= burst + Fraction(rate) * Fraction(clock() - start, NS_PER_S) + 1


@SETTINGS
@given(
    rate=st.sampled_from([0.0, 1e-10, 0.1, 1 / 3, 1.0, 7.5, 1000.0]),
    burst=st.integers(1, 10),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["allow", "reserve", "reserve_by", "cancel"]),
            st.integers(1, 5),
            st.integers(0, NS_PER_S),
        ),
        max_size=60,
    ),
)
def test_reservations_and_cancels_never_let_more_than_burst_plus_rate_t_act(
    rate: float, burst: int, ops: list[tuple[str, int, int]]
) -> None:
    """Tokens that act by t (admitted now, or reserved with time to act <= t and not
    cancelled before it) never exceed b + r*t (+1), whatever is reserved and cancelled."""
    clock = FakeClock()
    start = clock()
    bucket = TokenBucket(rate, burst, clock=clock)
    taken_now = 0
    held: list[tuple[int, int, Reservation]] = []  # (time to act, n, reservation)
    cancelled_at: dict[int, int] = {}
    for op, n, gap_ns in ops:
        clock.advance_ns(gap_ns)
        now = clock()
        if op == "allow":
            taken_now += n if bucket.allow(n) else 0
        elif op in ("reserve", "reserve_by"):
            deadline = now + gap_ns if op == "reserve_by" else None
            reservation = bucket.reserve(n, deadline_ns=deadline)
            if reservation.ok:
                held.append((now + reservation.delay_ns, n, reservation))
        elif held:
            reservation = held[n % len(held)][2]
            reservation.cancel()
            cancelled_at.setdefault(id(reservation), now)
        acted = taken_now + sum(
            k
            for act_ns, k, r in held
            if act_ns <= now and cancelled_at.get(id(r), act_ns + 1) > act_ns
        )
        assert acted <= burst + Fraction(rate) * Fraction(now - start, NS_PER_S) + 1


@SETTINGS
@given(
    rate=RATES,
    burst=BURSTS,
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("allow"), st.integers(1, 4)),
            st.tuples(st.just("advance"), st.integers(-NS_PER_S, 2 * NS_PER_S)),
            st.tuples(st.just("rate"), RATES),
            st.tuples(st.just("burst"), BURSTS),
        ),
        max_size=60,
    ),
)
def test_matches_exact_rational_model_for_any_sequence(
    rate: float, burst: int, ops: list[tuple[str, float]]
) -> None:
    """Every answer equals the x/time/rate formula evaluated in exact fractions (no drift,
    clock steps back refill nothing, set_rate/set_burst accrue at the old rate first)."""
    clock = FakeClock()
    bucket = TokenBucket(rate, burst, clock=clock)
    model = Model(rate, burst, clock())
    for op, arg in ops:
        if op == "allow":
            assert bucket.allow(int(arg)) == model.allow(clock(), int(arg))
        elif op == "advance":
            clock.advance_ns(int(arg))
        elif op == "rate":
            bucket.set_rate(arg)
            model.set_rate(clock(), arg)
        else:
            bucket.set_burst(int(arg))
            model.set_burst(clock(), int(arg))
        if model.rate is not None:
            assert bucket.tokens() == float(model.peek(clock())[1])


def test_no_drift_at_nanosecond_resolution_after_a_long_uptime() -> None:
    """At r=3/s with a clock reading ~1e16 ns, token k is refused 1 ns before
    ceil(k/3 s) and admitted exactly then, for 30,000 consecutive tokens."""
    start = 10**16
    clock = FakeClock(start)
    bucket = TokenBucket(3, 2, clock=clock)  # burst 2: the cap never clips the fractions
    assert bucket.allow(2)
    for k in range(1, 30_001):
        due = start + -(-k * NS_PER_S // 3)
        clock.now_ns = due - 1
        assert not bucket.allow(), k
        clock.now_ns = due
        assert bucket.allow(), k


def test_non_dyadic_rate_admits_exactly_floor_of_burst_plus_rate_t_over_a_long_run() -> None:
    """r=0.1/s polled every 2.3 s for 115,000 s admits exactly floor(b + r*T)."""
    clock = FakeClock()
    start = clock()
    bucket = TokenBucket(0.1, 2, clock=clock)
    admitted = 0
    for _ in range(50_000):
        admitted += bucket.allow()
        last_poll = clock()
        clock.advance_ns(2_300_000_000)
    assert admitted == math.floor(2 + Fraction(0.1) * Fraction(last_poll - start, NS_PER_S))


@SETTINGS
@given(rate=st.sampled_from([0.1, 1 / 3, 1.0, 7.5, 1000.0, 123456.789]), burst=st.integers(1, 50))
def test_drained_bucket_is_full_again_after_burst_over_rate(rate: float, burst: int) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate, burst, clock=clock)
    assert drain(bucket) == burst
    refill_ns = math.ceil(Fraction(burst) / Fraction(rate) * NS_PER_S)
    clock.advance_ns(refill_ns - 1)
    assert not bucket.is_full()
    assert not bucket.allow(burst)
    clock.advance_ns(1)
    assert bucket.is_full()
    assert bucket.time_to_full_ns() == 0
    assert bucket.allow(burst)


@SETTINGS
@given(
    rate=st.sampled_from([0.1, 1 / 3, 1.0, 7.5, 1000.0]),
    burst=st.integers(1, 20),
    n=st.integers(1, 20),
)
def test_client_waiting_retry_after_is_admitted(rate: float, burst: int, n: int) -> None:
    """After a RATE_LIMITED decision, waiting retry_after_s (or the header's whole seconds)
    admits the same request; 1 ns less does not."""
    if n > burst:
        n = burst
    clock = FakeClock()
    bucket = TokenBucket(rate, burst, clock=clock)
    drain(bucket)
    decision = bucket.decide(n)
    assert not decision.admitted
    assert decision.reason == RATE_LIMITED
    assert 0 < decision.retry_after_s < math.inf
    wait_ns = round(decision.retry_after_s * NS_PER_S)
    clock.advance_ns(wait_ns - 1)
    assert not bucket.decide(n).admitted
    clock.advance_ns(1)
    assert bucket.decide(n).admitted

    header_bucket = TokenBucket(rate, burst, clock=clock)
    drain(header_bucket)
    refused = header_bucket.decide(n)
    clock.advance(int(refused.retry_after_header))
    assert header_bucket.decide(n).reason == ADMITTED


def test_decide_admits_with_the_shared_admit_decision_and_spends_tokens() -> None:
    bucket = TokenBucket(10, 2, clock=FakeClock())
    assert bucket.decide().admitted
    assert bucket.decide().admitted
    refused = bucket.decide()
    assert (refused.admitted, refused.reason) == (False, RATE_LIMITED)
    assert refused.retry_after_s == pytest.approx(0.1)


def test_retry_after_is_infinite_when_n_exceeds_burst_or_rate_is_zero() -> None:
    clock = FakeClock()
    assert TokenBucket(10, 3, clock=clock).decide(4).retry_after_s == math.inf
    zero = TokenBucket(0, 1, clock=clock)
    assert zero.decide().admitted
    assert zero.decide().retry_after_s == math.inf


@SETTINGS
@given(
    rate=RATES,
    burst=BURSTS,
    steps=st.lists(st.tuples(st.integers(0, NS_PER_S), st.integers(1, 25)), max_size=40),
)
def test_take_gives_the_exact_wait_until_n_tokens(
    rate: float, burst: int, steps: list[tuple[int, int]]
) -> None:
    """`take` (the edge's lean path; `decide` is built on it): 0 and the tokens spent exactly
    when the exact model admits, else the nanoseconds until n tokens, rounded up (NEVER_NS
    when they never come), and nothing changes."""
    clock = FakeClock()
    bucket, model = TokenBucket(rate, burst, clock=clock), Model(rate, burst, clock())
    for gap, n in steps:
        clock.advance_ns(gap)
        now = clock()
        last, tokens = model.peek(now)
        wait_ns = bucket.take(n)
        if model.allow(now, n):
            assert wait_ns == 0
            continue
        if n > burst or not model.rate:
            assert wait_ns == NEVER_NS
        else:
            assert model.rate is not None
            exact = Fraction(n - tokens) / model.rate * NS_PER_S
            assert wait_ns == last - now + math.ceil(exact)
        decision = bucket.decide(n)
        assert not decision.admitted
        assert decision.retry_after_s == (math.inf if wait_ns == NEVER_NS else wait_ns / NS_PER_S)


# --- a refusal changes nothing --------------------------------------------------------------


def test_rejected_calls_leave_the_state_untouched() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2, 3, clock=clock)
    drain(bucket)
    clock.advance(0.3)  # 0.6 tokens accrued but not yet credited
    before = state(bucket)
    assert not bucket.allow()
    assert not bucket.allow(4)
    assert not bucket.decide(2).admitted
    assert not bucket.reserve(1, deadline_ns=clock()).ok
    assert not bucket.reserve(4).ok
    assert state(bucket) == before


@SETTINGS
@given(
    gaps=st.lists(st.integers(0, NS_PER_S // 2), min_size=1, max_size=40),
    extra=st.lists(st.booleans(), min_size=40, max_size=40),
)
def test_interleaved_rejected_calls_do_not_change_later_answers(
    gaps: list[int], extra: list[bool]
) -> None:
    """A bucket hammered by extra calls that get refused answers every shared call the same
    as one that never saw them (refusals neither spend nor lose fractional tokens)."""
    clock = FakeClock()
    quiet = TokenBucket(3, 2, clock=clock)
    busy = TokenBucket(3, 2, clock=clock)
    for gap, poke in zip(gaps, extra, strict=False):
        clock.advance_ns(gap)
        if poke and busy.tokens() < 1:
            assert not busy.allow()  # refused, must change nothing
            clock.advance_ns(-(gap // 2))  # even with the clock stepping back in between
            assert not busy.allow()
            clock.advance_ns(gap // 2)
        assert quiet.allow() == busy.allow()


def test_clock_stepping_backwards_refills_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 5, clock=clock)
    drain(bucket)
    clock.advance(-5)
    assert bucket.tokens() == 0
    assert not bucket.allow()
    clock.advance(5)  # back where we were: the 5 s were already credited (as nothing)
    assert bucket.tokens() == 0
    assert not bucket.allow()
    clock.advance(0.1)
    assert bucket.tokens() == pytest.approx(1)
    assert bucket.allow()
    assert not bucket.allow()


# --- reserve / wait / cancel ----------------------------------------------------------------


def test_reserve_goes_into_debt_and_reports_the_delay() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 5, clock=clock)
    first = bucket.reserve(5)
    assert (first.ok, first.delay_ns) == (True, 0)
    second = bucket.reserve(3)
    assert second.ok
    assert second.delay_ns == 300_000_000  # 3 tokens at 10/s
    assert second.delay_s == pytest.approx(0.3)
    assert bucket.tokens() == -3
    assert not bucket.allow()  # debt is paid before anyone else is admitted
    clock.advance(0.3)
    assert bucket.tokens() == 0
    clock.advance(0.1)
    assert bucket.allow()


def test_cancelled_reservation_restores_its_tokens() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 10, clock=clock)
    held = bucket.reserve(6)
    assert bucket.tokens() == 4
    held.cancel()
    assert bucket.tokens() == 10
    held.cancel()  # twice gives back nothing more
    assert bucket.tokens() == 10
    assert bucket.allow(10)


def test_cancelling_a_reservation_in_debt_before_it_acts_restores_its_tokens() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 4, clock=clock)
    drain(bucket)
    waiting = bucket.reserve(4)
    assert waiting.delay_ns == 400_000_000
    clock.advance(0.2)
    waiting.cancel()
    assert bucket.tokens() == pytest.approx(2)  # 0.2 s of refill, the debt of 4 forgiven


def test_cancelling_after_the_time_to_act_restores_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 4, clock=clock)
    drain(bucket)
    acted = bucket.reserve(2)
    clock.advance(0.2 + 1e-9)
    acted.cancel()
    assert bucket.tokens() == pytest.approx(1e-8)


def test_cancel_never_restores_beyond_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 4, clock=clock)
    held = bucket.reserve(4)
    bucket.set_burst(2)
    held.cancel()
    assert bucket.tokens() == 2


def test_reserve_with_deadline_succeeds_exactly_at_the_deadline_and_fails_1ns_before() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 1, clock=clock)
    drain(bucket)
    due = clock() + 100_000_000
    too_soon = bucket.reserve(1, deadline_ns=due - 1)
    assert not too_soon.ok
    assert too_soon.delay_ns == 100_000_000  # the wait it would have needed
    assert bucket.tokens() == 0
    on_time = bucket.reserve(1, deadline_ns=due)
    assert on_time.ok
    assert on_time.delay_ns == 100_000_000


def test_reserve_fails_for_n_above_burst_and_past_deadlines() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 3, clock=clock)
    too_big = bucket.reserve(4)
    assert (too_big.ok, too_big.delay_ns, too_big.delay_s) == (False, NEVER_NS, math.inf)
    too_big.cancel()  # harmless
    assert bucket.tokens() == 3
    assert not bucket.reserve(1, deadline_ns=clock() - 1).ok  # expired deadline: dropped
    assert bucket.reserve(1, deadline_ns=clock()).ok


async def test_wait_fails_at_once_without_sleeping_when_the_delay_passes_the_deadline() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 2, clock=clock)
    drain(bucket)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    assert not await bucket.wait(1, deadline_ns=clock() + 99_999_999, sleep=sleep)
    assert not await bucket.wait(3, sleep=sleep)  # n > burst
    assert slept == []
    assert bucket.tokens() == 0


async def test_wait_sleeps_the_reserved_delay_then_succeeds() -> None:
    clock = FakeClock()
    bucket = TokenBucket(4, 2, clock=clock)
    drain(bucket)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    assert await bucket.wait(2, deadline_ns=clock() + NS_PER_S, sleep=sleep)
    assert slept == [0.5]
    assert await bucket.wait(sleep=sleep) and slept == [0.5, 0.25]


async def test_wait_with_tokens_available_does_not_sleep() -> None:
    async def sleep(seconds: float) -> None:
        raise AssertionError("must not sleep")

    assert await TokenBucket(1, 1, clock=FakeClock()).wait(sleep=sleep)


@pytest.mark.timeout(10)
async def test_cancelled_wait_gives_its_tokens_back() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 5, clock=clock)
    drain(bucket)
    sleeping = asyncio.Event()

    async def sleep(seconds: float) -> None:
        sleeping.set()
        await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(bucket.wait(5, sleep=sleep))
    await sleeping.wait()
    assert bucket.tokens() == -5
    clock.advance(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert bucket.tokens() == pytest.approx(1)  # only the 0.1 s of refill


# --- set_rate / set_burst -------------------------------------------------------------------


def test_set_rate_accrues_at_the_old_rate_up_to_now_then_switches() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1, 10, clock=clock)
    drain(bucket)
    clock.advance(2)
    bucket.set_rate(100)
    assert bucket.rate == 100
    assert bucket.tokens() == 2  # 2 s at 1/s, not at 100/s
    clock.advance(0.05)
    assert bucket.tokens() == 7
    bucket.set_rate(0.5)
    clock.advance(2)
    assert bucket.tokens() == 8


def test_set_rate_between_non_dyadic_rates_keeps_fractions_of_tokens() -> None:
    """Tokens accrued at 1/3 and 0.1 per second carry over exactly into a 7.7/s phase: the
    next token is due at the exact nanosecond the rational arithmetic says."""
    clock = FakeClock()
    bucket = TokenBucket(1 / 3, 5, clock=clock)
    drain(bucket)
    clock.advance(1)
    bucket.set_rate(0.1)
    clock.advance(2)
    bucket.set_rate(7.7)
    missing = 1 - Fraction(1 / 3) - 2 * Fraction(0.1)
    due_ns = math.ceil(missing / Fraction(7.7) * NS_PER_S)
    clock.advance_ns(due_ns - 1)
    assert not bucket.allow()
    clock.advance_ns(1)
    assert bucket.allow()


def test_set_burst_accrues_first_lowering_clamps_raising_grants_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1, 4, clock=clock)
    drain(bucket)
    clock.advance(3)
    bucket.set_burst(2)
    assert bucket.burst == 2
    assert bucket.tokens() == 2
    bucket.set_burst(10)
    assert bucket.tokens() == 2
    clock.advance(20)
    assert bucket.tokens() == 10


def test_switching_from_unlimited_to_finite_starts_full() -> None:
    clock = FakeClock()
    bucket = TokenBucket(math.inf, 3, clock=clock)
    assert all(bucket.allow() for _ in range(100))
    bucket.set_rate(1)
    assert drain(bucket) == 3
    bucket.set_rate(math.inf)
    assert bucket.allow(1000)
    assert bucket.tokens() == math.inf


# --- edge values ----------------------------------------------------------------------------


def test_infinite_rate_admits_everything_even_with_burst_zero() -> None:
    clock = FakeClock()
    bucket = TokenBucket(math.inf, 0, clock=clock)
    assert all(bucket.allow() for _ in range(10_000))
    assert bucket.allow(10**9)
    assert bucket.decide(5).admitted
    reservation = bucket.reserve(50)
    assert (reservation.ok, reservation.delay_ns) == (True, 0)
    assert bucket.is_full()


def test_zero_rate_admits_exactly_burst_then_nothing_ever() -> None:
    clock = FakeClock()
    bucket = TokenBucket(0, 7, clock=clock)
    assert drain(bucket) == 7
    clock.advance(10**9)
    assert not bucket.allow()
    assert not bucket.reserve(1).ok
    assert bucket.time_to_full_ns() is None


def test_tiny_rate_admits_one_then_nothing_without_overflow() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1e-10, 1, clock=clock)
    assert bucket.allow()
    clock.advance(10**9)  # 31 years: 0.1 token
    assert not bucket.allow()
    refused = bucket.decide()
    assert refused.retry_after_s == pytest.approx(9e9)
    waiting = bucket.reserve(1)
    assert waiting.ok and waiting.delay_ns == pytest.approx(9e18, rel=1e-9)
    assert not bucket.reserve(1, deadline_ns=clock() + NS_PER_S).ok


def test_huge_rate_and_burst_keep_exact_counts() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1e12, 10**6, clock=clock)
    assert bucket.allow(10**6)
    clock.advance_ns(1)
    assert bucket.allow(1000)
    assert not bucket.allow()


def test_properties_report_configuration() -> None:
    bucket = TokenBucket(2.5, 4, clock=FakeClock())
    assert (bucket.rate, bucket.burst, bucket.tokens()) == (2.5, 4, 4.0)
    assert "TokenBucket(rate=2.5, burst=4" in repr(bucket)


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [-1, -0.001, math.nan, -math.inf, "10", None, True])
def test_bad_rate_raises_value_error_naming_rate_and_range(rate: object) -> None:
    with pytest.raises(ValueError, match=r"rate must be .*>= 0"):
        TokenBucket(rate, 1)  # type: ignore[arg-type]
    bucket = TokenBucket(1, 1)
    with pytest.raises(ValueError, match=r"rate must be .*>= 0"):
        bucket.set_rate(rate)  # type: ignore[arg-type]
    assert bucket.rate == 1


@pytest.mark.parametrize("burst", [-1, 1.5, "3", None, True])
def test_bad_burst_raises_value_error_naming_burst_and_range(burst: object) -> None:
    with pytest.raises(ValueError, match=r"burst must be an integer .*>= 0"):
        TokenBucket(1, burst)  # type: ignore[arg-type]
    bucket = TokenBucket(1, 1)
    with pytest.raises(ValueError, match=r"burst must be an integer .*>= 0"):
        bucket.set_burst(burst)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [0, -1, 2.5, "1", None])
async def test_bad_n_raises_value_error_naming_n_and_range(n: object) -> None:
    bucket = TokenBucket(1, 5, clock=FakeClock())
    for call in (bucket.allow, bucket.decide, bucket.reserve):
        with pytest.raises(ValueError, match=r"n must be an integer .*>= 1"):
            call(n)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"n must be an integer .*>= 1"):
        await bucket.wait(n)  # type: ignore[arg-type]
    assert bucket.tokens() == 5


def test_bad_deadline_and_clock_raise_value_errors_naming_them() -> None:
    bucket = TokenBucket(1, 5, clock=FakeClock())
    with pytest.raises(ValueError, match=r"deadline_ns must be None or .* integer nanoseconds"):
        bucket.reserve(1, deadline_ns=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="clock must be"):
        TokenBucket(1, 1, clock=5)  # type: ignore[arg-type]
