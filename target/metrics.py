"""Metrics: every decision counted, every live level readable, on a per-app registry.

Hot-path series (requests, decisions, latencies) are prometheus-client counters and
histograms updated by the edge (batched: `Metrics.observe` queues, every scrape folds the queue
in first, so /metrics is exact). Levels that already live in the primitives
(inflight, limit, breaker state, impression queue depth and sojourn, Kafka delivery counts,
RSS, event-loop lag) are read only at scrape time by `LevelsCollector`, so they cost the
request path nothing.

Names (all prefixed `spikegate_`):
    requests_total{route,status,decision}        decisions_total{layer,reason}
    request_duration_seconds{route,outcome}      rejection_seconds{layer}  (429/503 cost)
    auction_inflight / auction_limit / auction_limit_ceiling / auction_waiting
    auction_inflight_max (peak since the previous scrape)
    auction_inflight_reached_total{level} (the peak for any number of scrapers, see below)
    breaker_state{dsp,state} (1 = current)       breaker_state_code{dsp} (0 closed .. 4 disabled)
    impressions_<stat> (one gauge per ImpressionLogger.stats() key)
    event_loop_lag_seconds / event_loop_lag_max_seconds   process_rss_bytes

The in-flight peak has no time window, so no scrape is ever too late for it:
- `auction_inflight_max` is the most auctions holding Redis work at once since the previous
  scrape of /metrics (since start for the first), never below `auction_inflight`; every
  scrape resets it. One mark for all scrapers: a second scraper (a user's Prometheus beside
  the harness) sees only the peak since the other's latest scrape.
- `auction_inflight_reached_total{level="k"}` counts auctions that started Redis work with k
  in flight (themselves included); it only grows. Between two of its own scrapes a reader's
  peak is max(auction_inflight at the earlier one, every k whose count rose, the level now):
  exact for each reader however many there are, and a failed scrape loses nothing. The
  harness sampler reads it this way.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol

import psutil
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from spikegate.contract import outcomes
from spikegate.target.backpressure.breaker import BreakerState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Which layer a decision belongs to (metric label); unknown reasons count under "app".
LAYER_OF: dict[str, str] = {
    outcomes.UNAUTHORIZED: "edge",
    outcomes.FORBIDDEN: "edge",
    outcomes.RATE_LIMITED: "edge",
    outcomes.BULKHEAD_FULL: "auction",
    outcomes.REDIS_UNAVAILABLE: "redis",
    "frequency_capped": "redis",
    "budget_exhausted": "redis",
    outcomes.BREAKER_OPEN_FALLBACK: "dsp",
    outcomes.NO_BID: "dsp",
    outcomes.DEADLINE_EXCEEDED: "auction",
    outcomes.SHED: "impressions",
    outcomes.INVALID: "validation",
}

_BREAKER_CODES: dict[BreakerState, int] = {
    BreakerState.CLOSED: 0,
    BreakerState.OPEN: 1,
    BreakerState.HALF_OPEN: 2,
    BreakerState.FORCED_OPEN: 3,
    BreakerState.DISABLED: 4,
}

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.15,
    0.2,  # fine around the auction deadlines (tmax 150-250 ms): the checker holds the
    0.25,  # target to its deadline from these
    0.3,
    0.4,
    0.5,
    1.0,
    2.5,
)
# Fine buckets: the acceptance bar for a rejection is p99 <= 2 ms.
_REJECTION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.01,
    0.025,
    0.1,
)
FLUSH_AT = 64
"""A batch is folded once it holds this many observations: bounded memory without a scrape,
and the request that folds them holds the loop for ~64 x 4 us at most."""


class LimitView(Protocol):
    @property
    def limit(self) -> int: ...
    @property
    def ceiling(self) -> int: ...
    @property
    def inflight(self) -> int: ...
    @property
    def waiting(self) -> int: ...


class PeakView(Protocol):
    """One read of the in-flight peak (target.auction.InflightPeak); reading resets `peak`."""

    @property
    def peak(self) -> int: ...
    @property
    def reached(self) -> Sequence[int]: ...


class BreakerView(Protocol):
    @property
    def state(self) -> BreakerState: ...


_METRIC_NAME = re.compile(r"[^a-zA-Z0-9_]")


class PermitView(Protocol):
    """Bucket counts (ns edges PERMIT_EDGES_NS, one more bucket above the last edge)."""

    @property
    def wait(self) -> Sequence[int]: ...
    @property
    def hold(self) -> Sequence[int]: ...


def _permit_families(view: PermitView) -> Iterator[Metric]:
    from spikegate.target.auction import PERMIT_EDGES_NS  # the edges live with the counts

    docs = {
        "wait": "time an admitted auction waited for its bulkhead permit",
        "hold": "time an auction held its bulkhead permit (its Redis work)",
    }
    for kind, counts in (("wait", view.wait), ("hold", view.hold)):
        cumulative, total = [], 0
        for edge_ns, n in zip((*PERMIT_EDGES_NS, None), counts, strict=True):
            total += n
            le = "+Inf" if edge_ns is None else repr(edge_ns / 1e9)
            cumulative.append((le, float(total)))
        yield HistogramMetricFamily(
            f"spikegate_auction_permit_{kind}_seconds", docs[kind], buckets=cumulative,
            sum_value=0.0,
        )  # fmt: skip


class LevelsCollector(Collector):
    """Reads live levels from the runtime's objects at scrape time."""

    def __init__(
        self,
        *,
        limit: Callable[[], LimitView | None],
        breakers: Callable[[], Mapping[str, BreakerView]],
        impression_stats: Callable[[], Mapping[str, float] | None],
        loop_lag: Callable[[], tuple[float, float]],
        inflight_peak: Callable[[], PeakView] | None = None,
        permits: Callable[[], PermitView] | None = None,
    ) -> None:
        self._limit = limit
        self._permits = permits
        self._inflight_peak = inflight_peak
        self._breakers = breakers
        self._impression_stats = impression_stats
        self._loop_lag = loop_lag
        self._process = psutil.Process()

    def collect(self) -> Iterator[Metric]:
        lim = self._limit()
        if lim is not None:
            levels: tuple[tuple[str, float, str], ...] = (
                ("auction_inflight", lim.inflight, "auctions holding a Redis permit"),
                ("auction_limit", lim.limit, "current effective concurrency limit"),
                ("auction_limit_ceiling", lim.ceiling, "fixed ceiling of the limit"),
                ("auction_waiting", lim.waiting, "auctions waiting for a permit"),
            )
            for name, value, doc in levels:
                yield GaugeMetricFamily(f"spikegate_{name}", doc, value=float(value))
            if self._inflight_peak is not None:
                # Read after `lim.inflight` in the same synchronous collect: consistent.
                reading = self._inflight_peak()
                yield GaugeMetricFamily(
                    "spikegate_auction_inflight_max",
                    "most auctions holding Redis work at once since the previous scrape of "
                    "/metrics by anyone (reset by every scrape, never below auction_inflight); "
                    "with several scrapers use auction_inflight_reached_total",
                    value=float(reading.peak),
                )
                reached = CounterMetricFamily(
                    "spikegate_auction_inflight_reached",
                    "auctions that started Redis work with `level` in flight, themselves "
                    "included; a scraper's own peak since its previous scrape is the highest "
                    "level whose count rose, or auction_inflight then, or now",
                    labels=["level"],
                )
                for level, count in enumerate(reading.reached):
                    if count:
                        reached.add_metric([str(level)], float(count))
                yield reached
            if self._permits is not None:
                yield from _permit_families(self._permits())
        state = GaugeMetricFamily(
            "spikegate_breaker_state", "1 for the current state", labels=["dsp", "state"]
        )
        code = GaugeMetricFamily(
            "spikegate_breaker_state_code",
            "0 closed, 1 open, 2 half_open, 3 forced_open, 4 disabled",
            labels=["dsp"],
        )
        for dsp, breaker in self._breakers().items():
            current = breaker.state
            for s in BreakerState:
                state.add_metric([dsp, s.name.lower()], 1.0 if s is current else 0.0)
            code.add_metric([dsp], float(_BREAKER_CODES[current]))
        yield state
        yield code
        stats = self._impression_stats()
        if stats is not None:
            for key, value in sorted(stats.items()):
                name = "spikegate_impressions_" + _METRIC_NAME.sub("_", key)
                yield GaugeMetricFamily(name, f"ImpressionLogger.stats()[{key!r}]", float(value))
        last, worst = self._loop_lag()
        yield GaugeMetricFamily(
            "spikegate_event_loop_lag_seconds", "last timer drift of the event loop", last
        )
        yield GaugeMetricFamily(
            "spikegate_event_loop_lag_max_seconds", "worst timer drift in the last second", worst
        )
        yield GaugeMetricFamily(
            "spikegate_process_rss_bytes",
            "resident set size of the target",
            float(self._process.memory_info().rss),
        )


class Metrics:
    """The per-app registry and the hot-path series; never the global registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "spikegate_requests",
            "HTTP responses by route, status and decision",
            ["route", "status", "decision"],
            registry=self.registry,
        )
        self._decisions = Counter(
            "spikegate_decisions",
            "decisions by layer and reason",
            ["layer", "reason"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "spikegate_request_duration_seconds",
            "server-side response time by route and outcome (admitted/rejected)",
            ["route", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._rejection = Histogram(
            "spikegate_rejection_seconds",
            "server-side cost of a designed rejection (429/503), by layer",
            ["layer"],
            buckets=_REJECTION_BUCKETS,
            registry=self.registry,
        )
        # Observations not yet folded into the series, one batch per (route, status,
        # decision) with its bound series (label lookup is the expensive part of an update):
        # a request appends its elapsed seconds to its batch, and `flush` (every render, and
        # whenever a batch holds FLUSH_AT) applies them in one warm loop. One request's six
        # locked prometheus updates cost several times more on a cold cache, which is every
        # request at a few hundred per second (a rejection's cost, issue 14).
        self._batches: dict[tuple[str, int, str], list[float]] = {}
        self._recorders: list[tuple[Callable[[float], None], list[float]]] = []

    def batch(self, route: str, status: int, decision: str) -> list[float]:
        """The batch of (route, status, decision): the same list for the life of the app.
        A caller may keep it and append elapsed seconds itself, calling `flush` once it holds
        `FLUSH_AT` (what `observe` does); lean_http does so for the edge's rejections."""
        key = (route, status, decision)
        batch = self._batches.get(key)
        if batch is None:
            batch = self._batches[key] = []
            self._recorders.append((self._bind(route, status, decision), batch))
        return batch

    def observe(self, route: str, status: int, decision: str, elapsed_s: float) -> None:
        batch = self._batches.get((route, status, decision))
        if batch is None:
            batch = self.batch(route, status, decision)
        batch.append(elapsed_s)
        if len(batch) >= FLUSH_AT:
            self.flush()

    def pending(self) -> int:
        """Observations not yet folded into the series."""
        return sum(len(batch) for batch in self._batches.values())

    def flush(self) -> None:
        """Fold every pending observation into the series (exact; `render` calls it)."""
        for record, batch in self._recorders:
            if batch:
                for elapsed_s in batch:
                    record(elapsed_s)
                batch.clear()

    def _bind(self, route: str, status: int, decision: str) -> Callable[[float], None]:
        layer = LAYER_OF.get(decision, "app")
        requests = self._requests.labels(route, str(status), decision)
        decisions = self._decisions.labels(layer, decision)
        rejected = status in (429, 503)
        duration = self._duration.labels(route, "rejected" if status >= 400 else "admitted")
        rejection = self._rejection.labels(layer) if rejected else None

        def record(elapsed_s: float) -> None:
            requests.inc()
            decisions.inc()
            duration.observe(elapsed_s)
            if rejection is not None:
                rejection.observe(elapsed_s)

        return record

    def render(self) -> bytes:
        self.flush()
        return generate_latest(self.registry)


class LoopLagMonitor:
    """Measures event-loop lag as timer drift: sleep `interval_s`, see how late we woke."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.last_s = 0.0
        self.max_s = 0.0
        self._window_max = 0.0
        self._window_start = 0.0
        self._task: asyncio.Task[None] | None = None

    def snapshot(self) -> tuple[float, float]:
        return self.last_s, max(self.max_s, self._window_max)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        self._window_start = time.monotonic()
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.interval_s)
            now = time.monotonic()
            self.last_s = max(0.0, now - before - self.interval_s)
            self._window_max = max(self._window_max, self.last_s)
            if now - self._window_start >= 1.0:
                self.max_s, self._window_max, self._window_start = self._window_max, 0.0, now
