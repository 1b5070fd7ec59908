"""Backpressure primitives: token bucket, concurrency limit, load shedder, circuit breaker.

Standard library only (a test asserts no web framework is imported), time injected as a
monotonic nanosecond clock, every answer a `Decision`. Semantics: ../shared/PATTERNS.md.

    request --> TokenBucket (per publisher, 429) --> ConcurrencyLimit (auction/Redis, 503)
            --> CircuitBreaker (per DSP, no-bid fallback)
    impression --> ShedQueue / LoadShedder (impression logger, 503) --> Kafka
"""

from __future__ import annotations

from spikegate.target.backpressure.adaptive import AdaptiveLimit, AIMDLimit, GradientLimit
from spikegate.target.backpressure.breaker import (
    LEGAL_TRANSITIONS,
    BreakerConfig,
    BreakerListener,
    BreakerSnapshot,
    BreakerState,
    CircuitBreaker,
    Permit,
)
from spikegate.target.backpressure.clock import NS_PER_S, Clock, FakeClock, monotonic_ns
from spikegate.target.backpressure.concurrency import ConcurrencyLimit
from spikegate.target.backpressure.decision import (
    ADMIT,
    ADMITTED,
    BREAKER_OPEN,
    BULKHEAD_FULL,
    RATE_LIMITED,
    SHED,
    Decision,
)
from spikegate.target.backpressure.registry import BucketRegistry
from spikegate.target.backpressure.shedder import (
    SHED_CODEL,
    SHED_QUEUE_FULL,
    LoadShedder,
    ShedDecision,
    ShedQueue,
)
from spikegate.target.backpressure.token_bucket import NEVER_NS, Reservation, TokenBucket

__all__ = [
    "ADMIT",
    "ADMITTED",
    "BREAKER_OPEN",
    "BULKHEAD_FULL",
    "LEGAL_TRANSITIONS",
    "NEVER_NS",
    "NS_PER_S",
    "RATE_LIMITED",
    "SHED",
    "SHED_CODEL",
    "SHED_QUEUE_FULL",
    "AIMDLimit",
    "AdaptiveLimit",
    "BreakerConfig",
    "BreakerListener",
    "BreakerSnapshot",
    "BreakerState",
    "BucketRegistry",
    "CircuitBreaker",
    "Clock",
    "ConcurrencyLimit",
    "Decision",
    "FakeClock",
    "GradientLimit",
    "LoadShedder",
    "Permit",
    "Reservation",
    "ShedDecision",
    "ShedQueue",
    "TokenBucket",
    "monotonic_ns",
]
