"""Benchmark: per-decision cost of each backpressure primitive against the library a user
would otherwise pick, measured in the same run.

    .venv/bin/python tests/bench/primitives.py [--repeats 7] [--ops 200000]

Prints JSON: for each pair, the median ns/op over the repeats for ours and theirs, and
ours/theirs (ratio < 1 means ours is faster). Each pair measures the same logical operation
on its fast path (an admitted decision), in the same style (sync vs sync, async vs async).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from spikegate.target.backpressure.breaker import BreakerConfig, CircuitBreaker
from spikegate.target.backpressure.concurrency import ConcurrencyLimit
from spikegate.target.backpressure.token_bucket import TokenBucket

HUGE_RATE = 1e12  # every call admitted: we measure the decision, not the rejection path


def _time_sync(fn: Callable[[int], None], ops: int) -> float:
    t0 = time.perf_counter_ns()
    fn(ops)
    return (time.perf_counter_ns() - t0) / ops


def _time_async(fn: Callable[[int], Awaitable[None]], ops: int) -> float:
    async def go() -> float:
        t0 = time.perf_counter_ns()
        await fn(ops)
        return (time.perf_counter_ns() - t0) / ops

    return asyncio.run(go())


# --- token bucket ---------------------------------------------------------------------------
def ours_bucket_allow(ops: int) -> None:
    allow = TokenBucket(HUGE_RATE, 1_000_000).allow
    for _ in range(ops):
        allow()


def limits_moving_window_hit(ops: int) -> None:
    from limits import RateLimitItemPerSecond
    from limits.storage import MemoryStorage
    from limits.strategies import MovingWindowRateLimiter

    limiter = MovingWindowRateLimiter(MemoryStorage())
    item = RateLimitItemPerSecond(10**9)
    hit = limiter.hit
    for _ in range(ops):
        hit(item, "publisher")


async def ours_bucket_wait(ops: int) -> None:
    wait = TokenBucket(HUGE_RATE, 1_000_000).wait
    for _ in range(ops):
        await wait()


async def aiolimiter_acquire(ops: int) -> None:
    from aiolimiter import AsyncLimiter

    acquire = AsyncLimiter(10**12, 1).acquire
    for _ in range(ops):
        await acquire()


# --- concurrency limit ----------------------------------------------------------------------
async def ours_limit_acquire_release(ops: int) -> None:
    limit = ConcurrencyLimit(100)
    acquire, release = limit.acquire, limit.release
    for _ in range(ops):
        await acquire()
        release()


async def semaphore_acquire_release(ops: int) -> None:
    sem = asyncio.Semaphore(100)
    acquire, release = sem.acquire, sem.release
    for _ in range(ops):
        await acquire()
        release()


# --- circuit breaker ------------------------------------------------------------------------
def _breaker() -> CircuitBreaker:
    return CircuitBreaker("bench", BreakerConfig())


def _noop() -> None:
    return None


async def _anoop() -> None:
    return None


def ours_breaker_allow_record(ops: int) -> None:
    cb = _breaker()
    try_acquire, on_success = cb.try_acquire, cb.on_success
    for _ in range(ops):
        permit = try_acquire()
        _noop()
        on_success(permit, 1_000)


def pybreaker_call(ops: int) -> None:
    import pybreaker

    call = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60).call
    for _ in range(ops):
        call(_noop)


async def ours_breaker_allow_record_async(ops: int) -> None:
    cb = _breaker()
    try_acquire, on_success = cb.try_acquire, cb.on_success
    for _ in range(ops):
        permit = try_acquire()
        await _anoop()
        on_success(permit, 1_000)


async def aiobreaker_call_async(ops: int) -> None:
    import aiobreaker

    call_async = aiobreaker.CircuitBreaker(fail_max=5).call_async
    for _ in range(ops):
        await call_async(_anoop)


PAIRS: list[tuple[str, str, Callable[..., object], str, Callable[..., object], bool]] = [
    ("token_bucket", "TokenBucket.allow", ours_bucket_allow,
     "limits.MovingWindowRateLimiter.hit (memory)", limits_moving_window_hit, False),
    ("token_bucket_async", "TokenBucket.wait", ours_bucket_wait,
     "aiolimiter.AsyncLimiter.acquire", aiolimiter_acquire, True),
    ("concurrency_limit", "ConcurrencyLimit.acquire+release", ours_limit_acquire_release,
     "asyncio.Semaphore.acquire+release", semaphore_acquire_release, True),
    ("circuit_breaker", "CircuitBreaker.try_acquire+on_success", ours_breaker_allow_record,
     "pybreaker.CircuitBreaker.call", pybreaker_call, False),
    ("circuit_breaker_async", "CircuitBreaker.try_acquire+await+on_success",
     ours_breaker_allow_record_async, "aiobreaker.CircuitBreaker.call_async",
     aiobreaker_call_async, True),
]  # fmt: skip


def measure(fn: Callable[..., object], is_async: bool, ops: int) -> float:
    if is_async:
        return _time_async(fn, ops)  # type: ignore[arg-type]
    return _time_sync(fn, ops)  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--ops", type=int, default=100_000)
    args = parser.parse_args()
    results = []
    for key, ours_name, ours, theirs_name, theirs, is_async in PAIRS:
        # a short warm-up of each, then interleave repeats so drift hits both sides alike
        measure(ours, is_async, args.ops // 10)
        measure(theirs, is_async, args.ops // 10)
        ours_ns: list[float] = []
        theirs_ns: list[float] = []
        for _ in range(args.repeats):
            ours_ns.append(measure(ours, is_async, args.ops))
            theirs_ns.append(measure(theirs, is_async, args.ops))
        o, t = statistics.median(ours_ns), statistics.median(theirs_ns)
        results.append(
            {
                "pair": key,
                "ours": ours_name,
                "theirs": theirs_name,
                "ours_ns_per_op_median": round(o, 1),
                "theirs_ns_per_op_median": round(t, 1),
                "ratio": round(o / t, 3),
                "ours_ns_per_op_all": [round(x, 1) for x in ours_ns],
                "theirs_ns_per_op_all": [round(x, 1) for x in theirs_ns],
            }
        )
        print(
            f"{key}: ours {o:.0f} ns/op, theirs {t:.0f} ns/op, ratio {o / t:.3f}", file=sys.stderr
        )
    print(
        json.dumps(
            {
                "benchmark": "primitives",
                "python": platform.python_version(),
                "repeats": args.repeats,
                "ops_per_repeat": args.ops,
                "pairs": results,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
