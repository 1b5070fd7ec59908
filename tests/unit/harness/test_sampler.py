"""The sampler: /metrics text -> SampleRow fields, one row per tick even when scrapes fail."""

from __future__ import annotations

import http.server
import json
import math
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from spikegate.harness.sampler import NO_METRICS_PATH, Sampler, parse_metrics
from spikegate.target.auction import PermitTimes
from spikegate.target.backpressure.breaker import BreakerState
from spikegate.target.metrics import LevelsCollector, Metrics


def _exposition(*, max_depth: float = 400.0) -> str:
    """Real exposition text from the target's own registry (no server)."""
    metrics = Metrics()
    metrics.observe("/metrics", 200, "admitted", 0.008)  # a scrape: not the generator's
    metrics.observe("/bid", 200, "admitted", 0.004)
    metrics.observe("/bid", 200, "admitted", 0.006)
    metrics.observe("/bid", 429, "rate_limited", 0.0002)
    metrics.observe("/impression", 503, "shed", 0.0001)
    limit = SimpleNamespace(limit=12, ceiling=16, inflight=7, waiting=2)
    breakers = {
        "dsp-1": SimpleNamespace(state=BreakerState.OPEN),
        "dsp-2": SimpleNamespace(state=BreakerState.CLOSED),
    }
    stats = {"queue_depth": 5.0, "queue_max_depth": max_depth, "last_sojourn_s": 0.012}
    permits = PermitTimes()
    permits.waited(300_000)  # 0.3 ms
    permits.held(20_000_000)  # 20 ms
    permits.held(120_000_000)  # 120 ms
    metrics.registry.register(
        LevelsCollector(
            limit=lambda: limit,  # type: ignore[arg-type,return-value]
            breakers=lambda: breakers,  # type: ignore[arg-type,return-value]
            impression_stats=lambda: stats,
            loop_lag=lambda: (0.001, 0.003),
            inflight_peak=lambda: SimpleNamespace(peak=9, reached=(0, 4, 0, 2)),
            permits=lambda: permits,
        )
    )
    return metrics.render().decode()


def test_parse_metrics_maps_every_level_of_the_target() -> None:
    row = parse_metrics(_exposition())
    assert row["auction_inflight"] == 7.0
    assert row["auction_inflight_max"] == 9.0
    assert row["auction_limit"] == 12.0
    assert row["auction_limit_ceiling"] == 16.0
    assert row["auction_waiting"] == 2.0
    assert row["queue_depth"] == 5.0
    assert row["queue_max_depth"] == 400.0
    assert row["queue_sojourn_ms"] == pytest.approx(12.0)
    assert row["loop_lag_ms"] == pytest.approx(1.0)
    assert row["loop_lag_max_ms"] == pytest.approx(3.0)
    assert row["rss_bytes"] > 0
    assert row["breakers"] == {"dsp-1": "open", "dsp-2": "closed"}
    assert row["impressions"]["queue_depth"] == 5.0


def test_parse_metrics_keeps_cumulative_counters_by_label() -> None:
    row = parse_metrics(_exposition())
    assert row["requests_total"]["/bid:200:admitted"] == 2.0
    assert row["requests_total"]["/bid:429:rate_limited"] == 1.0
    assert row["decisions_total"]["edge:rate_limited"] == 1.0
    assert row["decisions_total"]["impressions:shed"] == 1.0
    assert not any(k.endswith("_created") for k in row["requests_total"])


def test_unbounded_queue_cap_becomes_null_not_infinity() -> None:
    """JSON has no infinity: an unbounded queue (shedding off) has max depth None."""
    row = parse_metrics(_exposition(max_depth=math.inf))
    assert row["queue_max_depth"] is None


def test_foreign_metrics_give_an_empty_row() -> None:
    """A user's own service exposes none of ours: nothing is invented."""
    assert parse_metrics("# TYPE http_requests counter\nhttp_requests_total 3\n") == {}


def test_garbage_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_metrics("this is { not prometheus\n")


# A literal exposition as the target writes it (two layers, a _created series, +Inf last).
REJECTION_TEXT = """\
# HELP spikegate_rejection_seconds server-side cost of a designed rejection (429/503), by layer
# TYPE spikegate_rejection_seconds histogram
spikegate_rejection_seconds_bucket{layer="auction",le="0.001"} 3.0
spikegate_rejection_seconds_bucket{layer="auction",le="0.005"} 7.0
spikegate_rejection_seconds_bucket{layer="auction",le="0.01"} 9.0
spikegate_rejection_seconds_bucket{layer="auction",le="+Inf"} 10.0
spikegate_rejection_seconds_count{layer="auction"} 10.0
spikegate_rejection_seconds_sum{layer="auction"} 0.2
spikegate_rejection_seconds_bucket{layer="impressions",le="0.001"} 40.0
spikegate_rejection_seconds_bucket{layer="impressions",le="0.005"} 41.0
spikegate_rejection_seconds_bucket{layer="impressions",le="0.01"} 41.0
spikegate_rejection_seconds_bucket{layer="impressions",le="+Inf"} 41.0
spikegate_rejection_seconds_count{layer="impressions"} 41.0
spikegate_rejection_seconds_sum{layer="impressions"} 0.02
spikegate_rejection_seconds_created{layer="auction"} 1.7e9
"""

REJECTION_CASES: list[tuple[str, str, dict[str, list[list[Any]]] | None]] = [
    ("two layers, +Inf as null", REJECTION_TEXT, {
        "auction": [[0.001, 3], [0.005, 7], [0.01, 9], [None, 10]],
        "impressions": [[0.001, 40], [0.005, 41], [0.01, 41], [None, 41]],
    }),
    ("exported before any rejection: present, empty",
     "# HELP spikegate_rejection_seconds x\n# TYPE spikegate_rejection_seconds histogram\n", {}),
    ("a service without the histogram: absent",
     "# TYPE http_requests counter\nhttp_requests_total 3\n", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "text", "expected"), REJECTION_CASES, ids=[c[0] for c in REJECTION_CASES]
)
def test_rejection_histogram_becomes_cumulative_buckets_per_layer(
    case: str, text: str, expected: dict[str, list[list[Any]]] | None
) -> None:
    row = parse_metrics(text)
    assert row.get("rejection_buckets") == expected


def test_target_registry_rejections_land_in_their_layer_buckets() -> None:
    """The target's own registry: a 429 counts under edge, a shed under impressions, and
    admitted responses nowhere; the row is JSON (no infinity)."""
    buckets = parse_metrics(_exposition())["rejection_buckets"]
    assert set(buckets) == {"edge", "impressions"}
    edge = dict((le, n) for le, n in buckets["edge"])
    assert edge[0.0001] == 0 and edge[0.00025] == 1 and edge[None] == 1
    assert dict((le, n) for le, n in buckets["impressions"])[0.0001] == 1
    les = [le for le, _ in buckets["edge"]]
    assert les[-1] is None and les[:-1] == sorted(les[:-1])
    json.dumps(buckets, allow_nan=False)


class _FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _sampler(fetch: Any, rows: list[dict[str, Any]], warnings: list[str]) -> Sampler:
    return Sampler(
        "http://127.0.0.1:1/metrics",
        on_row=rows.append,
        on_warning=warnings.append,
        fetch=fetch,
        clock=_FakeClock(),
    )


def _inflight_text(level: int, gauge: int, reached: dict[int, int]) -> str:
    lines = [
        f"spikegate_auction_inflight {level}.0",
        f"spikegate_auction_inflight_max {gauge}.0",
        "# HELP spikegate_auction_inflight_reached x",
        "# TYPE spikegate_auction_inflight_reached counter",
    ]
    lines += [
        f'spikegate_auction_inflight_reached_total{{level="{k}"}} {n}.0' for k, n in reached.items()
    ]
    return "\n".join(lines) + "\n"


def test_the_peak_comes_from_the_counter_however_others_scrape_or_scrapes_fail() -> None:
    """Each row's auction_inflight_max is the peak since the sampler's previous good scrape:
    the highest level whose count rose, or the level then, or now; never the target's
    reset-on-read gauge alone (another scraper may have taken it)."""
    texts = iter(
        [
            (200, _inflight_text(2, 2, {1: 5, 2: 3})),  # first scrape: the gauge (2)
            (200, _inflight_text(0, 0, {1: 6, 2: 4, 3: 1, 4: 1})),  # 4 reached in between
            (503, ""),  # a failed scrape in between takes nothing
            (200, _inflight_text(3, 0, {1: 7, 2: 5, 3: 2, 4: 1})),  # 3 reached, 4 did not
            (200, _inflight_text(3, 0, {1: 7, 2: 5, 3: 2, 4: 1})),  # no start: the level held
            (200, _inflight_text(0, 0, {1: 7, 2: 5, 3: 2, 4: 1})),  # 3 at the previous scrape
            (200, _inflight_text(0, 0, {1: 1})),  # counters restarted: a new target process
        ]
    )
    sampler = _sampler(lambda _u: next(texts), [], [])
    peaks = [sampler.sample(float(t)).get("auction_inflight_max") for t in range(7)]
    assert peaks == [2.0, 4.0, None, 3.0, 3.0, 3.0, 1.0]


def test_a_target_without_the_counter_keeps_its_gauge() -> None:
    text = "spikegate_auction_inflight 1.0\nspikegate_auction_inflight_max 5.0\n"
    sampler = _sampler(lambda _u: (200, text), [], [])
    assert [sampler.sample(float(t))["auction_inflight_max"] for t in range(2)] == [5.0, 5.0]


def test_failed_scrape_still_yields_a_row_marked_not_ok() -> None:
    def refused(_url: str) -> tuple[int, str]:
        raise ConnectionRefusedError("refused")

    rows: list[dict[str, Any]] = []
    sampler = _sampler(refused, rows, [])
    row = sampler.sample(3.0)
    assert row["t"] == 3.0 and row["ok"] is False and "refused" in row["error"]
    assert "auction_inflight" not in row
    assert sampler.failures == 1 and sampler.latest is None


def test_missing_metrics_endpoint_warns_once() -> None:
    warnings: list[str] = []
    sampler = _sampler(lambda _u: (404, "not found"), [], warnings)
    rows = [sampler.sample(float(t)) for t in range(3)]
    assert [r["ok"] for r in rows] == [False, False, False]
    assert len(warnings) == 1 and "no /metrics" in warnings[0]


def test_good_scrape_becomes_latest_with_scrape_time() -> None:
    text = _exposition()
    sampler = _sampler(lambda _u: (200, text), [], [])
    row = sampler.sample(1.0)
    assert row["ok"] is True and row["auction_limit"] == 12.0
    assert row["scrape_ms"] >= 0
    assert sampler.latest is row


def test_run_writes_one_row_per_tick_with_consecutive_seconds() -> None:
    """A stalled loop (clock far past the due ticks) catches up instead of skipping seconds."""
    clock = _FakeClock()
    rows: list[dict[str, Any]] = []
    sampler = Sampler(
        "http://127.0.0.1:1/metrics",
        on_row=lambda r: (rows.append(r), len(rows) >= 5 and sampler.stop()),
        fetch=lambda _u: (503, ""),
        clock=clock,
    )
    clock.now = 110.0  # 10 s late: every tick is already due, no real waiting
    sampler.run(start_monotonic=100.0)
    assert [r["t"] for r in rows] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_interval_is_validated() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        Sampler("http://127.0.0.1:1/metrics", on_row=lambda _r: None, interval_s=0)


def test_independent_evidence_is_read_every_tick_even_when_the_scrape_fails() -> None:
    """The harness's own sources join each row whatever the target does; a source that
    fails is named in evidence_errors and the rest of the row stands."""
    calls = {"n": 0}

    def broker() -> dict[str, Any]:
        calls["n"] += 1
        return {"broker_records": 10 * calls["n"]}

    def proxy() -> dict[str, Any]:
        raise OSError("chaos server refused")

    ok = iter([(200, "spikegate_auction_inflight 3.0\n")])

    def fetch(_url: str) -> tuple[int, str]:
        try:
            return next(ok)
        except StopIteration:
            raise ConnectionRefusedError("refused") from None

    sampler = Sampler(
        "http://127.0.0.1:1/metrics", on_row=lambda _r: None, fetch=fetch,
        clock=_FakeClock(), evidence=[broker, proxy],
    )  # fmt: skip
    good, bad = sampler.sample(0.0), sampler.sample(1.0)
    assert good["ok"] is True and good["auction_inflight"] == 3.0
    assert good["broker_records"] == 10 and bad["broker_records"] == 20
    assert bad["ok"] is False
    assert good["evidence_errors"] == ["chaos server refused"] == bad["evidence_errors"]


def test_the_targets_time_on_admitted_responses_is_kept_as_buckets() -> None:
    """spikegate_request_duration_seconds{outcome=admitted}, /bid and /impression summed:
    two admitted bids (4 and 6 ms); rejections and /metrics scrapes are not in it."""
    admitted = dict(
        (le, n) for le, n in parse_metrics(_exposition())["duration_buckets"]["admitted"]
    )
    assert admitted[0.002] == 0 and admitted[0.005] == 1 and admitted[0.01] == 2
    assert admitted[None] == 2
    json.dumps(admitted, allow_nan=False)


def test_the_bulkhead_permit_histograms_are_kept_as_buckets() -> None:
    """spikegate_auction_permit_{wait,hold}_seconds: cumulative, JSON-safe."""
    permits = parse_metrics(_exposition())["permit_buckets"]
    wait, hold = dict(map(tuple, permits["wait"])), dict(map(tuple, permits["hold"]))
    assert wait[0.0005] == 1 and wait[None] == 1
    assert hold[0.01] == 0 and hold[0.025] == 1 and hold[0.1] == 1 and hold[0.15] == 2
    json.dumps(permits, allow_nan=False)


# --- a user's service: its own metric names through [metrics] ---------------------------------
class _Service(http.server.ThreadingHTTPServer):
    """A user's service on 127.0.0.1:0 whose /metrics is whatever `text` is now."""

    text = ""
    scrapes = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Service

    def do_GET(self) -> None:
        if self.path != "/metrics":
            self.send_error(404)
            return
        self.server.scrapes += 1
        body = self.server.text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def service() -> Iterator[_Service]:
    server = _Service(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


USER_METRICS = """# TYPE app_inflight gauge
app_inflight{handler="checkout"} 5
app_inflight{handler="search"} 2
# TYPE app_backlog gauge
app_backlog 30
# TYPE app_breaker gauge
app_breaker{upstream="db"} 1
app_breaker{upstream="payments"} 0.5
"""
MAPPING = {"inflight": "app_inflight", "queue_depth": "app_backlog", "breaker_state": "app_breaker"}


@pytest.mark.timeout(20)
def test_a_users_service_is_read_through_its_mapping(service: _Service) -> None:
    service.text = USER_METRICS
    warnings: list[str] = []
    url = f"http://127.0.0.1:{service.server_address[1]}/metrics"
    sampler = Sampler(url, on_row=lambda _r: None, on_warning=warnings.append, mapping=MAPPING)
    row = sampler.sample(0.0)
    assert row["ok"] is True and service.scrapes == 1
    assert row["auction_inflight"] == 7.0 and row["queue_depth"] == 30.0
    assert row["breakers"] == {"db": "open", "payments": "half_open"}
    assert warnings == []
    json.dumps(row, allow_nan=False)


@pytest.mark.timeout(20)
def test_a_mapped_metric_missing_is_warned_once_and_read_once_it_appears(
    service: _Service,
) -> None:
    service.text = "# TYPE app_inflight gauge\napp_inflight 1\n"
    warnings: list[str] = []
    url = f"http://127.0.0.1:{service.server_address[1]}/metrics"
    sampler = Sampler(url, on_row=lambda _r: None, on_warning=warnings.append, mapping=MAPPING)
    rows = [sampler.sample(0.0), sampler.sample(1.0)]
    assert all(r["ok"] and r["auction_inflight"] == 1.0 for r in rows)
    assert not any("queue_depth" in r or "breakers" in r for r in rows)
    assert len(warnings) == 2  # app_backlog and app_breaker, once each over two scrapes
    assert any("'app_backlog'" in w for w in warnings) and any(
        "'app_breaker'" in w for w in warnings
    )
    service.text = USER_METRICS
    assert sampler.sample(2.0)["queue_depth"] == 30.0 and len(warnings) == 2


def test_without_a_mapping_a_users_metric_names_are_not_read() -> None:
    sampler = _sampler(lambda _u: (200, USER_METRICS), [], [])
    row = sampler.sample(0.0)
    assert row["ok"] is True and set(row) == {"t", "ok", "scrape_ms"}


def test_a_mapping_key_we_do_not_read_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="unknown key 'queue'"):
        Sampler("http://127.0.0.1:1/metrics", on_row=lambda _r: None, mapping={"queue": "q"})


def test_a_service_without_a_metrics_path_still_gets_a_row_per_tick_with_the_evidence() -> None:
    """No scrape at all: ok false, scraped false, the evidence read every tick."""
    fetched: list[str] = []
    clock = _FakeClock()
    rows: list[dict[str, Any]] = []
    sampler = Sampler(
        None,
        on_row=lambda r: (rows.append(r), len(rows) >= 3 and sampler.stop()),
        fetch=lambda u: (fetched.append(u), (200, ""))[1],
        clock=clock,
        evidence=[lambda: {"proxy_bytes": {"db": {"received": 1, "sent": 2}}}],
    )
    clock.now = 110.0
    sampler.run(start_monotonic=100.0)
    assert fetched == []
    assert rows == [
        {"t": float(t), "ok": False, "scraped": False, "error": NO_METRICS_PATH,
         "proxy_bytes": {"db": {"received": 1, "sent": 2}}}
        for t in range(3)
    ]  # fmt: skip
    assert sampler.failures == 0 and sampler.latest is None
