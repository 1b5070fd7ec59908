"""Backpressure primitives: token bucket, concurrency limit, load shedder, circuit breaker.

Standard library only (a test asserts no web framework is imported), time injected as a
monotonic nanosecond clock, every answer a `Decision`. Semantics: ../shared/PATTERNS.md.
"""

from __future__ import annotations

from target.backpressure.clock import NS_PER_S, Clock, FakeClock, monotonic_ns
from target.backpressure.decision import (
    ADMIT,
    ADMITTED,
    BREAKER_OPEN,
    BULKHEAD_FULL,
    RATE_LIMITED,
    SHED,
    Decision,
)

__all__ = [
    "ADMIT",
    "ADMITTED",
    "BREAKER_OPEN",
    "BULKHEAD_FULL",
    "NS_PER_S",
    "RATE_LIMITED",
    "SHED",
    "Clock",
    "Decision",
    "FakeClock",
    "monotonic_ns",
]
