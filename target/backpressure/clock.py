"""Injected time: every primitive reads a monotonic clock in integer nanoseconds.

Tests pass a `FakeClock`; production passes nothing and gets `time.monotonic_ns`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]
"""A zero-argument callable returning monotonic time in integer nanoseconds."""

NS_PER_S = 1_000_000_000

monotonic_ns: Clock = time.monotonic_ns


class FakeClock:
    """A manual clock for tests: `advance(seconds)` moves it; calling it reads it."""

    __slots__ = ("now_ns",)

    def __init__(self, start_ns: int = 1_000 * NS_PER_S) -> None:
        self.now_ns = start_ns

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, seconds: float) -> None:
        self.now_ns += round(seconds * NS_PER_S)

    def advance_ns(self, ns: int) -> None:
        self.now_ns += ns
