"""The mutant catalog of `spikegate mutate`: small, plausible defects the gate must catch.

Each mutant is a few exact text edits to the package source (paths relative to the installed
`spikegate` package: target/..., locustfiles/...). Every `old` text must occur exactly once
in the current source, so a mutant that drifts from the code fails its unit test by name
instead of silently mutating nothing. The harness is never mutated: it judges.

Classes (what kind of lie or harm the defect is):

    unfair edge       the token bucket admits too little or too much for one publisher
    slow rejection    a designed rejection (429/503) costs time it should not
    capacity          a bound is exceeded or held longer than designed
    lost acks         a 202 was answered for an impression that never reaches Kafka
    failure path      a dependency failure is handled wrongly
    breaker           the DSP circuit breaker trips wrongly or never recovers
    lying metrics     /metrics says something the target did not do
    lying recorder    the load generator records something the target did not answer
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["CATALOG", "FAILURE_PATHS", "GATE_SCENARIO", "Edit", "Mutant", "by_id"]

GATE_SCENARIO = "perfect-storm"
"""The scenario of `make gate`: every mutant that names no other scenario runs on it."""
FAILURE_PATHS = "failure-paths"
"""The second gate scenario: Kafka refused and reset, the queue at its cap (depth-only
shedding), dsp-1 faulted twice, Redis down. A defect on those paths needs it."""


@dataclass(frozen=True, slots=True)
class Edit:
    """Replace `old` (which must occur exactly once) with `new` in `file`."""

    file: str  # relative to the package root: "target/edge.py"
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Mutant:
    id: str
    description: str
    klass: str
    expect: tuple[str, ...]  # the verdicts expected to own (catch) it
    edits: tuple[Edit, ...]
    scenario: str = GATE_SCENARIO
    fallback: str | None = None  # used (and marked) while `scenario` is not shipped yet


def _m(
    id: str,
    description: str,
    klass: str,
    expect: tuple[str, ...],
    *edits: Edit,
    scenario: str = GATE_SCENARIO,
    fallback: str | None = None,
) -> Mutant:
    return Mutant(id, description, klass, expect, edits, scenario, fallback)


_TB = "target/backpressure/token_bucket.py"
_CL = "target/backpressure/concurrency.py"
_SH = "target/backpressure/shedder.py"
_BR = "target/backpressure/breaker.py"

CATALOG: tuple[Mutant, ...] = (
    # --- edge: token bucket per publisher -----------------------------------------------------
    _m(
        "edge-reject-spends",
        "a refused request still spends what refilled: a bursty publisher never saves a token",
        "unfair edge",
        ("layer.edge",),
        Edit(
            _TB,
            "        if tokens >= cost:\n"
            "            self._tokens = tokens - cost\n"
            "            self._last = at\n"
            "            return 0\n",
            "        self._tokens = max(0, tokens - cost)\n"
            "        self._last = at\n"
            "        if tokens >= cost:\n"
            "            return 0\n",
        ),
    ),
    _m(
        "edge-refill-us",
        "take() refills per microsecond elapsed at the per-nanosecond rate: 1000x too slow",
        "unfair edge",
        ("layer.edge",),
        Edit(
            _TB,
            "            tokens += (now - at) * self._per_ns\n",
            "            tokens += (now - at) // 1000 * self._per_ns\n",
        ),
    ),
    _m(
        "edge-retry-after-zero",
        "Retry-After truncated instead of rounded up: a sub-second wait answers 'Retry-After: 0'",
        "slow rejection",
        ("layer.edge", "graceful_degradation"),
        Edit(
            "target/edge.py",
            "max(1, math.ceil(decision.retry_after_s))",
            "int(decision.retry_after_s)",
        ),
    ),
    # --- auction: concurrency limit around Redis --------------------------------------------
    _m(
        "bulkhead-off-by-one",
        "acquire() compares with <= : one auction more than the limit holds Redis work",
        "capacity",
        ("layer.bulkhead", "bounded_resources"),
        Edit(
            _CL,
            "        if self._inflight < self._limit and not self._waiters:\n"
            "            self._inflight += 1\n"
            "            return ADMIT\n"
            "        budget_ns",
            "        if self._inflight <= self._limit and not self._waiters:\n"
            "            self._inflight += 1\n"
            "            return ADMIT\n"
            "        budget_ns",
        ),
    ),
    _m(
        "bulkhead-wait-to-deadline",
        "max_wait ignored when the request has a deadline: a full bulkhead waits out tmax",
        "slow rejection",
        ("layer.bulkhead", "graceful_degradation"),
        Edit(
            _CL,
            "        budget_ns = self._max_wait_ns\n"
            "        if deadline_ns is not None:\n"
            "            budget_ns = min(budget_ns, deadline_ns - self._clock())\n",
            "        budget_ns = self._max_wait_ns\n"
            "        if deadline_ns is not None:\n"
            "            budget_ns = deadline_ns - self._clock()\n",
        ),
    ),
    _m(
        "bulkhead-holds-fanout",
        "the Redis permit is held through the DSP fan-out: a slow DSP fills the bulkhead",
        "capacity",
        ("layer.bulkhead", "graceful_degradation"),
        Edit(
            "target/auction.py",
            "                verdict = await self._redis_work(req, publisher_id, deadline_ns)\n"
            "            finally:\n"
            "                self.limit.release(",
            "                verdict = await self._redis_work(req, publisher_id, deadline_ns)\n"
            "                if verdict == _GO:\n"
            "                    return await self._bid(req, deadline_ns)\n"
            "            finally:\n"
            "                self.limit.release(",
        ),
    ),
    _m(
        "redis-fail-open",
        "a Redis error counts as 'go': auctions run uncapped and unpaced while Redis is down",
        "failure path",
        ("graceful_degradation", "steady_state"),
        Edit(
            "target/auction.py",
            "            self.last_redis_error = repr(exc)\n            return -1\n",
            "            self.last_redis_error = repr(exc)\n            return _GO\n",
        ),
        scenario=FAILURE_PATHS,
        fallback=GATE_SCENARIO,
    ),
    # --- DSP fan-out and the breaker --------------------------------------------------------
    _m(
        "dsp-timeout-ms",
        "the fan-out's wait converts the remaining nanoseconds with 1e6: waits 1000x the tmax",
        "slow rejection",
        ("graceful_degradation", "layer.breaker"),
        Edit(
            "target/dsp_client.py",
            "timeout=remaining_ns / NS_PER_S)",
            "timeout=remaining_ns / 1_000_000)",
        ),
    ),
    _m(
        "dsp-timeout-ignored",
        "a DSP call that ran past the deadline is reported as our own cancellation, not a failure",
        "breaker",
        ("layer.breaker", "graceful_degradation"),
        Edit(
            "target/dsp_client.py",
            "                dsp.breaker.on_failure(permit, self._clock() - started_ns)\n",
            "                dsp.breaker.on_ignore(permit)\n",
        ),
    ),
    _m(
        "breaker-slow-unit",
        "slow_call_duration_s converted with the ms factor (1e6): every call over 80 us is slow",
        "breaker",
        ("steady_state", "layer.breaker", "graceful_degradation"),
        Edit(
            _BR,
            "self._slow_ns = round(config.slow_call_duration_s * NS_PER_S)",
            "self._slow_ns = round(config.slow_call_duration_s * 1_000_000)",
        ),
    ),
    _m(
        "breaker-half-open-flood",
        "half-open counts finished probes only: every call is a probe until the first returns",
        "breaker",
        ("layer.breaker", "graceful_degradation"),
        Edit(
            _BR,
            "        if self._probes_out + self._probe_results < self._probes:\n",
            "        if self._probe_results < self._probes:\n",
        ),
    ),
    _m(
        "breaker-wait-ms",
        "wait_open_s read as milliseconds and scaled again: an open breaker stays open ~17 min",
        "breaker",
        ("time_to_recover", "steady_state", "layer.breaker"),
        Edit(
            _BR,
            "nominal = round(self.config.wait_open_s * NS_PER_S)",
            "nominal = round(self.config.wait_open_s * 1000 * NS_PER_S)",
        ),
        scenario=FAILURE_PATHS,
        fallback=GATE_SCENARIO,
    ),
    # --- impression logger: shedding queue in front of Kafka --------------------------------
    _m(
        "shed-off-by-one",
        "the depth cap compares with > : the queue holds one item more than max_depth",
        "capacity",
        ("layer.shedder", "bounded_resources"),
        Edit(_SH, "        if depth >= limit:\n", "        if depth > limit:\n"),
        scenario=FAILURE_PATHS,
        fallback=GATE_SCENARIO,
    ),
    _m(
        "shed-codel-inverted",
        "CoDel enters shedding when the minimum sojourn is BELOW target: sheds while healthy",
        "capacity",
        ("steady_state", "layer.shedder", "graceful_degradation"),
        Edit(
            _SH,
            "minimum is not None and minimum > self._target_ns",
            "minimum is not None and minimum < self._target_ns",
        ),
    ),
    _m(
        "queue-headroom-phantom-ack",
        "a 'headroom' guard near the cap returns the admit without enqueueing: 202, then nothing",
        "lost acks",
        ("no_silent_loss",),
        Edit(
            _SH,
            "        if decision.admitted:\n"
            "            self._items.append((self._clock(), item))\n",
            "        if decision.admitted:\n"
            "            if len(self._items) >= self.max_depth - 10:  # keep headroom for drains\n"
            "                return decision\n"
            "            self._items.append((self._clock(), item))\n",
        ),
        scenario=FAILURE_PATHS,
        fallback=GATE_SCENARIO,
    ),
    _m(
        "logger-retry-cap",
        "delivery retries a failed batch once, then drops it (already acked): an outage longer "
        "than two produce timeouts loses it",
        "lost acks",
        ("no_silent_loss",),
        Edit(
            "target/impressions.py",
            "        attempt = 0\n        while pending:\n",
            "        attempt = 0\n        while pending and attempt < 2:\n",
        ),
        scenario=FAILURE_PATHS,
        fallback=GATE_SCENARIO,
    ),
    # --- /metrics ---------------------------------------------------------------------------
    _m(
        "metrics-peak-before-permit",
        "the in-flight peak is noted with the level before this auction's permit: one too low",
        "lying metrics",
        ("layer.bulkhead", "bounded_resources"),
        Edit(
            "target/auction.py",
            "            self.peak.note(self.limit.inflight)\n",
            "            self.peak.note(self.limit.inflight - 1)\n",
        ),
    ),
    _m(
        "metrics-queue-from-counters",
        "queue depth computed as accepted - delivered: counts the batches Kafka has in flight",
        "lying metrics",
        ("bounded_resources", "layer.shedder"),
        Edit(
            "target/impressions.py",
            '            "queue_depth": float(q.depth),\n',
            '            "queue_depth": float(counts["accepted"] - counts["delivered"]),\n',
        ),
        scenario=FAILURE_PATHS,
        fallback=GATE_SCENARIO,
    ),
    _m(
        "metrics-429-untimed",
        "the rejection-cost histogram observes 503s only: the edge's 429 cost is never measured",
        "lying metrics",
        ("layer.edge",),
        Edit("target/metrics.py", "rejected = status in (429, 503)", "rejected = status == 503"),
    ),
    # --- the Locust recorder / generator ----------------------------------------------------
    _m(
        "recorder-ack-on-shed",
        "the generator records an impression as acked on any designed answer, a 503 shed too",
        "lying recorder",
        ("no_silent_loss",),
        Edit(
            "locustfiles/adserver.py",
            "        if outcome == _ACCEPTED:\n            rt.acked.append(impression_id)\n",
            "        if outcome in _SUCCESS:\n            rt.acked.append(impression_id)\n",
        ),
    ),
    _m(
        "recorder-clock-after-send",
        "latency is timed from when the answer arrived, not from the send",
        "lying recorder",
        ("valid_run",),  # the target's own durations against the generator's clock
        Edit(
            "locustfiles/adserver.py",
            "            content = resp.content\n",
            "            start = perf_counter()\n            content = resp.content\n",
        ),
    ),
    _m(
        "recorder-reject-latency-mixed",
        "rejections' latencies go into the admitted histogram: fast 429s dilute admitted p99",
        "lying recorder",
        ("graceful_degradation", "layer.edge"),
        Edit(
            "locustfiles/recorder.py",
            "                pub[2] += 1\n            lat = self.lat_rejected\n",
            "                pub[2] += 1\n            lat = self.lat_admitted\n",
        ),
    ),
)

_BY_ID: Mapping[str, Mutant] = {m.id: m for m in CATALOG}


def by_id(mutant_id: str) -> Mutant | None:
    return _BY_ID.get(mutant_id)
