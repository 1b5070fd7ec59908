"""The harness's independent evidence, beside the numbers the target reports about itself.

A target's /metrics can lie (a gauge clamped to its ceiling, a queue depth that leaves out
half the queue) and the generator's own record can be wrong (an ack log that loses ids, a
schedule that forgets requests). Each figure here comes from a party the defect cannot
reach, and each verdict that reads a self-reported number compares it with one of these:

    dependency in flight   the chaos proxy: connections with a request outstanding
                           (bytes sent to the dependency, no answer written back yet),
                           peak per second per proxy             -> layer.bulkhead
    impression backlog     202s the generator received, minus records the broker holds
                           (log-end offsets read at the broker's own listener)
                                                                  -> layer.shedder
    acknowledgements       the generator's 202 count against its ack log's ids
                                                                  -> no_silent_loss
    intended arrivals      the harness's own schedule from the scenario's load section,
                           against the generator's `intended`     -> valid_run
    the generator's clock  the target's own time on admitted responses, against the
                           generator's latencies (no response can come back faster
                           than the target spent on it)             -> valid_run
    DSP calls while open   the chaos proxy's requests outstanding to a DSP while the
                           target says its breaker is open          -> layer.breaker

Every comparison has a stated tolerance (below), wide enough for what the two parties
legitimately see differently (an in-flight batch, a second's skew), narrow enough that a
defect of the kind above is far outside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from spikegate.contract.outcomes import ACCEPTED
from spikegate.harness.figures import _decode, bucket_deltas
from spikegate.harness.history import History, RequestSecond, Sample

__all__ = [
    "REDIS_PROXY",
    "Backlog",
    "Peak",
    "accepted_count",
    "impression_backlog",
    "inflight_tolerance",
    "proxy_peak",
    "queue_tolerance",
    "reported_held",
    "worst_backlog",
]

REDIS_PROXY = "redis"
# Dependency in flight: the proxy may count a request the target has just given up on (its
# timeout fired, the socket not closed yet) and the two peaks are a scrape apart.
INFLIGHT_SLACK = 2.0
INFLIGHT_SHARE = 0.10
# Impression backlog against what the target says it holds (queue + in production): allow
# this share of the cap and at least this many items. Against the cap (the queue alone),
# also allow what a logger may hold outside its queue: one batch per producer worker.
QUEUE_SHARE = 0.02
QUEUE_SLACK = 50.0


def inflight_tolerance(bound: float) -> float:
    """How far the proxy's count may exceed `bound` without a disagreement."""
    return max(INFLIGHT_SLACK, INFLIGHT_SHARE * bound)


def queue_tolerance(cap: float) -> float:
    """How far the backlog may exceed what the target says it holds."""
    return max(QUEUE_SLACK, QUEUE_SHARE * cap)


@dataclass(frozen=True, slots=True)
class Peak:
    value: float
    t: float


def proxy_peak(samples: Sequence[Sample], proxy: str) -> Peak | None:
    """The most requests `proxy` had outstanding at once (None: the proxy never reported)."""
    best: Peak | None = None
    for s in samples:
        v = s.proxy_outstanding_max.get(proxy)
        if v is not None and (best is None or v > best.value):
            best = Peak(v, s.t)
    return best


def accepted_count(rows: Sequence[RequestSecond]) -> int:
    """Impression notices the generator saw answered 202 (its own per-second counts)."""
    return sum(r.endpoints.get("impression", {}).get(ACCEPTED, 0) for r in rows)


@dataclass(frozen=True, slots=True)
class Backlog:
    """At second `t`: at least `items` impressions answered 202 were not yet in Kafka."""

    t: float
    items: float
    reported_held: float | None  # what the target's /metrics said it held then: its queue
    # plus the items its producer had taken out of the queue (in flight to Kafka)
    acked_by: int  # 202s certainly received before t (lagging by `lag_s`)
    in_kafka: float  # records the broker holds that this run produced


def impression_backlog(h: History, lost: int = 0) -> tuple[list[Backlog], float]:
    """A lower bound on the impressions held by the target at each sampled second, from
    the generator's 202s and the broker's offsets; and the lag used.

    Rows attribute a request to the second of its intended send, so a 202 of row k
    certainly arrived by k + 1 + lateness + the client's connect and read timeouts: only
    those count as acknowledged by t. Records already in the topic at the first reading
    are not this run's; `lost` (acked ids never found in Kafka, judged by no_silent_loss)
    is taken off so a loss is not also blamed on the queue. Duplicates in the topic (an
    at-least-once retry) only lower the bound.
    """
    readings = [s for s in h.samples if s.broker_records is not None]
    if not readings or not h.requests:
        return [], 0.0
    lateness = max((r.max_lateness_ms or 0.0) for r in h.requests) / 1000.0
    lag = 1.0 + lateness + 2.0 * h.scenario.load.client_timeout_s
    before = readings[0].broker_records or 0.0
    rows = sorted(h.requests, key=lambda r: r.t)
    out: list[Backlog] = []
    acked, i = 0, 0
    for s in readings:
        while i < len(rows) and rows[i].t + lag <= s.t:
            acked += accepted_count(rows[i : i + 1])
            i += 1
        in_kafka = (s.broker_records or 0.0) - before
        items = acked - in_kafka - lost
        out.append(Backlog(s.t, items, reported_held(s), acked, in_kafka))
    return out, lag


def reported_held(s: Sample) -> float | None:
    """Impressions the target says it holds: queued, being produced, waiting for replay."""
    if not s.ok or s.queue_depth is None:
        return None
    extra = (s.impressions.get(k) for k in ("inflight", "replay_pending"))
    return s.queue_depth + sum(v for v in extra if v is not None)


def worst_backlog(points: Sequence[Backlog], over: float = -math.inf) -> Backlog | None:
    """The point whose backlog exceeds its reported depth (or `over`) by the most."""
    best: Backlog | None = None
    best_gap = -math.inf
    for b in points:
        gap = b.items - (b.reported_held if b.reported_held is not None else over)
        if math.isfinite(gap) and gap > best_gap:
            best, best_gap = b, gap
    return best


# --- the generator's clock against the target's own time -----------------------------------
CLOCK_SHARE = 0.05  # of the target's slow responses the generator may time faster...
CLOCK_SLACK = 20  # ...and at least this many (a response straddling the run's edges)


def server_admitted_over(samples: Sequence[Sample]) -> dict[float, int]:
    """Admitted responses the target spent more than `le` seconds on, for each of its
    bucket edges, over the run."""
    return counts_over(samples, lambda s: s.duration_buckets, "admitted")


def counts_over(
    samples: Sequence[Sample],
    pick: Callable[[Sample], Mapping[str, tuple[tuple[float, int], ...]] | None],
    key: str,
) -> dict[float, int]:
    """Observations above each finite bucket edge of a cumulative histogram the target
    exports, over the run (differenced scrape to scrape; a restart counts afresh); the
    total under the key `math.inf`. Empty: fewer than two scrapes carry it."""
    rows = [s for s in samples if s.ok and pick(s) is not None]
    if len(rows) < 2:
        return {}
    acc = bucket_deltas(rows, pick, key)
    total = acc.get(math.inf, max(acc.values(), default=0))
    out = {le: total - n for le, n in acc.items() if math.isfinite(le)}
    out[math.inf] = total
    return out


def client_admitted_over(rows: Sequence[RequestSecond], edges: Sequence[float]) -> dict[float, int]:
    """Admitted responses the generator timed at more than each edge (seconds)."""

    counts = dict.fromkeys(edges, 0)
    for r in rows:
        h = _decode(r.hist_admitted)
        if h is None:
            continue
        for item in h.get_recorded_iterator():
            lowest_s = h.get_lowest_equivalent_value(item.value_iterated_to) / 1e6
            for le in edges:
                if lowest_s > le:
                    counts[le] += item.count_at_value_iterated_to
    return counts


@dataclass(frozen=True, slots=True)
class ClockGap:
    edge_s: float
    server_over: int
    client_over: int


def clock_gap(h: History) -> ClockGap | None:
    """The bucket edge where the target spent more than it on the most admitted responses
    the generator says came back faster: a generator whose clock starts late (after the
    headers, say) times responses faster than the target could have answered them."""
    server = {le: n for le, n in server_admitted_over(h.samples).items() if math.isfinite(le)}
    if not server:
        return None
    client = client_admitted_over(h.requests, sorted(server))
    worst: ClockGap | None = None
    for le, n in server.items():
        missing = n - client.get(le, 0)
        if missing > max(CLOCK_SLACK, CLOCK_SHARE * n) and (
            worst is None or missing > worst.server_over - worst.client_over
        ):
            worst = ClockGap(le, n, client.get(le, 0))
    return worst
