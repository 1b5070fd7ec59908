"""The sampler: the target's Prometheus /metrics, scraped once a second into samples.jsonl.

    tick k (t0 + k s) --GET /metrics--> parse_metrics(text) --> SampleRow {"t": k, "ok": true, ...}
                        \\-- failure ----------------------------> {"t": k, "ok": false, "error"}

One row per second whatever happens: a scrape that fails or times out still yields a row
(ok: false), so gaps in the history are visible rather than silent. A tick missed because
the machine stalled is written late with its own `t`, never skipped. `parse_metrics` is a
pure function of the exposition text (unit-tested on text, not on a server).

`auction_inflight_max` is the sampler's own in-flight peak since its previous good scrape,
derived from the target's monotonic `spikegate_auction_inflight_reached_total{level}` (see
target/metrics.py): another scraper of the same /metrics, a scrape that comes late and one
that fails in between take nothing from it. A target without that counter keeps its own
`spikegate_auction_inflight_max` gauge as the value.

Beside the target's own numbers each row carries the harness's independent evidence: every
`evidence` source (a callable returning SampleRow fields, e.g. the chaos proxy's outstanding
requests per dependency, the broker's log-end offsets) is read once per tick whether or not
the target's scrape succeeded; a source that fails adds its message to `evidence_errors`
and takes nothing else from the row.

A user's service is read through its scenario's [metrics] `mapping` (harness/mapped_metrics.py:
its own metric names for in-flight requests, queue depth and breaker states); a mapped metric
missing from its exposition is warned about once and its field left out. A service without a
metrics path (`metrics_url` None) still gets one row per tick, carrying the evidence:
`{"t": k, "ok": false, "scraped": false, "error": "no metrics path", ...evidence}`.
"""

from __future__ import annotations

import contextlib
import http.client
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

from spikegate.harness.mapped_metrics import check_mapping, parse_mapped

__all__ = [
    "NO_METRICS_PATH",
    "SCRAPE_TIMEOUT_S",
    "Evidence",
    "Sampler",
    "parse_metrics",
    "scrape",
]

SCRAPE_TIMEOUT_S = 0.8
NO_METRICS_PATH = "no metrics path"  # the error of every row of a service without /metrics
_PREFIX = "spikegate_"
_LEVELS = {
    "spikegate_auction_inflight": "auction_inflight",
    "spikegate_auction_inflight_max": "auction_inflight_max",
    "spikegate_auction_limit": "auction_limit",
    "spikegate_auction_limit_ceiling": "auction_limit_ceiling",
    "spikegate_auction_waiting": "auction_waiting",
    "spikegate_impressions_queue_depth": "queue_depth",
    "spikegate_impressions_queue_max_depth": "queue_max_depth",
    "spikegate_process_rss_bytes": "rss_bytes",
}
_MS = {
    "spikegate_impressions_last_sojourn_s": "queue_sojourn_ms",
    "spikegate_event_loop_lag_seconds": "loop_lag_ms",
    "spikegate_event_loop_lag_max_seconds": "loop_lag_max_ms",
}
_IMPRESSIONS = "spikegate_impressions_"
_REACHED = "spikegate_auction_inflight_reached_total"
# The server-side cost of every 429/503, by layer: its cumulative buckets are kept each
# second so that the checker can difference any window of the run.
_REJECTION = "spikegate_rejection_seconds"
# The target's own time on every admitted response (all routes): the generator's clock must
# not show admitted responses faster than the target spent on them.
_DURATION = "spikegate_request_duration_seconds"
_LOAD_ROUTES = ("/bid", "/impression")
# The bulkhead's own time: how long admitted auctions waited for a permit, how long held it.
_PERMIT = {
    "spikegate_auction_permit_wait_seconds_bucket": "wait",
    "spikegate_auction_permit_hold_seconds_bucket": "hold",
}  # what the generator sends (not /metrics, /readyz)


def _finite(value: float) -> float | None:
    """JSON has no infinity (an unbounded queue's max depth): None stands for it."""
    return value if math.isfinite(value) else None


def parse_metrics(text: str) -> dict[str, Any]:
    """The SampleRow fields (without t/ok/scrape_ms) found in a Prometheus exposition.

    Fields whose metrics are absent are left out (a user's own service has none of ours).
    Raises ValueError when the text is not a Prometheus exposition.
    """
    return _parse(text)[0]


def _parse(text: str) -> tuple[dict[str, Any], dict[int, float] | None]:
    """parse_metrics, plus the in-flight `reached` counts by level (None when not exported)."""
    row: dict[str, Any] = {}
    reached: dict[int, float] | None = None
    breakers: dict[str, str] = {}
    decisions: dict[str, float] = {}
    requests: dict[str, float] = {}
    impressions: dict[str, float | None] = {}
    rejections: dict[str, list[tuple[float, float]]] | None = None
    durations: dict[float, float] | None = None
    permits: dict[str, list[tuple[float, float]]] = {}
    for family in text_string_to_metric_families(text):
        if family.name == _DURATION and durations is None:
            durations = {}
        if family.name == _REJECTION and rejections is None:
            rejections = {}  # exported before any rejection: present but empty
        if family.name in (_REACHED, _REACHED.removesuffix("_total")) and reached is None:
            reached = {}  # exported before any auction: present but empty
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, float(sample.value)
            if not name.startswith(_PREFIX):
                continue
            if name in _LEVELS:
                row[_LEVELS[name]] = _finite(value)
            if name in _MS:
                row[_MS[name]] = value * 1000.0
            if name.startswith(_IMPRESSIONS):
                impressions[name[len(_IMPRESSIONS) :]] = _finite(value)
            elif name == "spikegate_breaker_state" and value == 1.0:
                breakers[labels.get("dsp", "?")] = labels.get("state", "?")
            elif name == "spikegate_decisions_total":
                decisions[f"{labels.get('layer', '')}:{labels.get('reason', '')}"] = value
            elif name == "spikegate_requests_total":
                key = f"{labels.get('route', '')}:{labels.get('status', '')}:"
                requests[key + labels.get("decision", "")] = value
            elif name == _REACHED and reached is not None:
                with contextlib.suppress(KeyError, ValueError):
                    reached[int(labels["level"])] = value
            elif (
                name == _DURATION + "_bucket"
                and durations is not None
                and labels.get("outcome") == "admitted"
                and labels.get("route") in _LOAD_ROUTES
                and "le" in labels
            ):
                le = float(labels["le"])
                durations[le] = durations.get(le, 0.0) + value  # both routes summed
            elif name in _PERMIT and "le" in labels:
                permits.setdefault(_PERMIT[name], []).append((float(labels["le"]), value))
            elif name == _REJECTION + "_bucket" and rejections is not None and "le" in labels:
                le = float(labels["le"])  # "+Inf" parses to inf, written as null
                rejections.setdefault(labels.get("layer", "?"), []).append((le, value))
    if breakers:
        row["breakers"] = dict(sorted(breakers.items()))
    if decisions:
        row["decisions_total"] = decisions
    if requests:
        row["requests_total"] = requests
    if impressions:
        row["impressions"] = impressions
    if rejections is not None:
        row["rejection_buckets"] = {
            layer: [[_finite(le), int(count)] for le, count in sorted(buckets)]
            for layer, buckets in sorted(rejections.items())
        }
    if permits:
        row["permit_buckets"] = {
            kind: [[_finite(le), int(n)] for le, n in sorted(pairs)]
            for kind, pairs in sorted(permits.items())
        }
    if durations is not None:
        row["duration_buckets"] = {
            "admitted": [[_finite(le), int(n)] for le, n in sorted(durations.items())]
        }
    return row, reached


def _own_peak(
    row: dict[str, Any],
    reached: dict[int, float],
    before: tuple[float, dict[int, float]] | None,
) -> float | None:
    """The in-flight peak since the `before` scrape (its level and counts): the level then,
    every level whose count rose, the level now. None without a `before` to difference."""
    if before is None:
        return None
    level_then, counts_then = before
    if any(n < counts_then.get(level, 0.0) for level, n in reached.items()) or any(
        level not in reached for level in counts_then
    ):
        level_then, counts_then = 0.0, {}  # the counters restarted: a new target process
    rose = (float(level) for level, n in reached.items() if n > counts_then.get(level, 0.0))
    return max(level_then, row.get("auction_inflight") or 0.0, *rose)


def scrape(url: str, timeout_s: float = SCRAPE_TIMEOUT_S) -> tuple[int, str]:
    """GET `url` (http only); return (status, body). Raises OSError on I/O failure."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"metrics url must look like http://HOST:PORT/metrics (got {url!r})")
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout_s)
    try:
        conn.request("GET", parts.path or "/metrics")
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", errors="replace")
    except http.client.HTTPException as exc:
        raise OSError(f"bad HTTP response: {exc}") from exc
    finally:
        conn.close()


Fetch = Callable[[str], tuple[int, str]]
# One independent source of evidence: SampleRow fields, read once per tick (bounded in time).
Evidence = Callable[[], dict[str, Any]]


class Sampler:
    """Scrape `metrics_url` at t0 + k seconds in a thread; hand each row to `on_row`.

    `on_warning(message)` is called once if the service has no /metrics (404) or does not
    speak Prometheus, so the history records why every row is ok: false; and once for each
    mapped metric that is absent or unreadable. `metrics_url` None: no scrape, evidence only.
    """

    def __init__(
        self,
        metrics_url: str | None,
        *,
        on_row: Callable[[dict[str, Any]], None],
        on_warning: Callable[[str], None] = lambda _m: None,
        fetch: Fetch = scrape,
        clock: Callable[[], float] = time.monotonic,
        interval_s: float = 1.0,
        evidence: Sequence[Evidence] = (),
        mapping: Mapping[str, str] | None = None,
    ) -> None:
        if not 0 < interval_s <= 60:
            raise ValueError(f"interval_s must be in (0, 60] seconds (got {interval_s!r})")
        self.metrics_url = metrics_url
        self.mapping = check_mapping(mapping or {})
        self._on_row = on_row
        self._evidence = tuple(evidence)
        self._on_warning = on_warning
        self._fetch = fetch
        self._clock = clock
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned: set[str] = set()
        self.latest: dict[str, Any] | None = None
        # (auction_inflight, reached counts) of the last good scrape, to difference against.
        self._inflight_before: tuple[float, dict[int, float]] | None = None
        self.rows = 0
        self.failures = 0

    def sample(self, t: float) -> dict[str, Any]:
        """One scrape, as the SampleRow for second `t` (never raises for a failed scrape)."""
        row = self._no_scrape(t) if self.metrics_url is None else self._scrape(t, self.metrics_url)
        for source in self._evidence:
            try:
                row.update(source())
            except Exception as exc:
                row.setdefault("evidence_errors", []).append(str(exc) or type(exc).__name__)
        self.rows += 1
        if row["ok"]:
            self.latest = row
        return row

    @staticmethod
    def _no_scrape(t: float) -> dict[str, Any]:
        return {"t": t, "ok": False, "scraped": False, "error": NO_METRICS_PATH}

    def _scrape(self, t: float, url: str) -> dict[str, Any]:
        started = self._clock()
        row: dict[str, Any]
        try:
            status, body = self._fetch(url)
            if status != 200:
                if status == 404:
                    self._warn_once("http", f"{url} answered 404: the service has no /metrics")
                raise OSError(f"HTTP {status}")
            try:
                fields, reached = _parse(body)
                if self.mapping:
                    mapped, problems = parse_mapped(body, self.mapping)
                    fields.update(mapped)
                    for key, problem in problems.items():
                        self._warn_once(key, f"{url}: {problem}")
            except ValueError as exc:
                self._warn_once("http", f"{url} is not a Prometheus exposition: {exc}")
                raise OSError("not a Prometheus exposition") from exc
            if reached is not None:
                peak = _own_peak(fields, reached, self._inflight_before)
                if peak is not None:
                    fields["auction_inflight_max"] = max(
                        peak, fields.get("auction_inflight_max") or 0.0
                    )
                self._inflight_before = (fields.get("auction_inflight") or 0.0, reached)
            row = {"t": t, "ok": True, **fields}
        except (OSError, ValueError) as exc:
            self.failures += 1
            row = {"t": t, "ok": False, "error": str(exc) or type(exc).__name__}
        row["scrape_ms"] = round((self._clock() - started) * 1000.0, 3)
        return row

    def _warn_once(self, about: str, message: str) -> None:
        if about not in self._warned:
            self._warned.add(about)
            self._on_warning(message)

    def run(self, start_monotonic: float) -> None:
        """Blocking loop: one row per tick from `start_monotonic` until stop()."""
        k = 0
        while not self._stop.is_set():
            due = start_monotonic + k * self.interval_s
            wait = due - self._clock()
            if wait > 0 and self._stop.wait(wait):
                return
            self._on_row(self.sample(round(k * self.interval_s, 6)))
            k += 1

    def start(self, start_monotonic: float) -> None:
        self._thread = threading.Thread(
            target=self.run, args=(start_monotonic,), name="sampler", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
