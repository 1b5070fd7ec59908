"""The run directory: the recorded history of one run, and the one place its format is defined.

    runs/<UTC timestamp>-<scenario>/
      scenario.toml      the resolved scenario (seed and every --set applied)
      meta.json          {"scenario", "seed", "t0_epoch", "started_utc", "ended_utc",
                          "spikegate_version", "argv", "status": "complete"|"interrupted"|"failed",
                          "components": {name: {"url"|"bootstrap", "pid", "log"}}}
      requests.jsonl     one RequestRow per second of load (from the Locust recorder plugin)
      samples.jsonl      one SampleRow per second (the harness sampling the target's /metrics)
      events.jsonl       one EventRow per event (phases, fault start/stop, manual actions, crashes)
      impressions.json   ImpressionAccounting: acked impression ids versus ids read back from Kafka
      target.json        the reference target's effective configuration (every default applied)
      acked/             the generator's acked impression ids, one file per Locust process (a
                         worker's ids reach the master by Locust's messaging: worker-<id>.txt)
      workers.json       master/worker runs (load.workers): {"expected": n, "bind": "host:port",
                         "workers": {id: {"host", "pid", "state": "joined"|"running"|"done"|
                         "missing", "reason", "t"}}}, written by the Locust master
      control/t0.json    master/worker runs: {"t0_epoch": f}, written by the harness once the
                         workers joined (the master starts the load from it)
      control/load.json  the live load set by hand (`spikegate load`), written by the harness,
                         read by every Locust process (locustfiles/live_rate.py); absent
                         until the first change
      logs/              one log per component (redis.log, kafka.log, dsp.log, target.log,
                          chaos.log, locust.log)
      report.json, junit.xml, summary.md, report.html    (written by the checker's reports)

Time: every row has `t`, float seconds since `t0_epoch` (meta.json), the wall-clock instant
the harness declared the run started (just before load begins). Per-second rows cover
[t, t + 1). Writers get t0 through the environment variable SPIKEGATE_T0 (epoch seconds).

RequestRow (requests.jsonl), written by locustfiles' recorder; merged across --processes and
master/worker so there is exactly one row per second:
    {"t": 12.0,
     "intended": 200,             # requests the arrival schedule called for in this second
     "sent": 198,                 # requests actually sent (sent < intended = generator shortfall)
     "outcomes": {OUTCOME: count},           # every sent request has exactly one outcome,
                                             # attributed (like intended and sent) to the
                                             # second of its INTENDED send instant; an
                                             # impression notice's intended instant is when
                                             # its won bid returned
     "decisions": {X-Spikegate-Decision value or "none": count},
     "endpoints": {"bid": {OUTCOME: count}, "impression": {OUTCOME: count}},
     "publishers": {publisher_id: {"sent": n, "admitted": n, "rate_limited": n}},  # bids only
     "hist_admitted": "<HdrHistogram base64 encoding, microseconds>" | null,
     "hist_rejected": "<same, for designed rejections>" | null,
     "admitted_p50_ms": f, "admitted_p99_ms": f, "rejected_p99_ms": f,   # convenience copies
     "max_lateness_ms": f,        # worst (actual send - intended send) in this second
     "lateness": {"sends": n, "over_ms": {"10": n}},
                                  # the arrivals whose send lateness was noted in this
                                  # second, and how many of them were sent more than B ms
                                  # late, for B in LATE_BOUNDS_MS (1, 2, 5, 10, 20, 50, 100,
                                  # 200, 500, 1000; zero counts left out);
                                  # counts, so they add across processes and workers;
                                  # absent from older run directories
     "cpu_percent": f | null,     # the generator's own CPU (max over its processes)
     "cpu_warning": bool,         # Locust's cpu_warning (> 90%) fired in this second
     "processes": n,              # processes that contributed (0 = none reported this second)
     "retry_after_invalid": {OUTCOME: n},    # designed rejections (429, 503 with a decision)
                                             # without Retry-After as integer seconds >= 1
     "names": {request name: {"outcomes": {OUTCOME: n}, "admitted_p50_ms": f | null,
                              "admitted_p99_ms": f | null}},
                                  # the user's own locustfile (load.locustfile) only, by the
                                  # name Locust reports (at most 100; the rest as "(other)");
                                  # {} for the reference target (see endpoints/publishers,
                                  # which are {} for a user's locustfile)
     "tasks": {"intended": n, "run": n, "errors": n, "unfinished": n}}
                                  # the user's locustfile, open model: arrivals of the
                                  # schedule in this second, those that ran one task of the
                                  # user class (the rest were skipped: lateness or the
                                  # max_inflight cap), tasks that raised, tasks still running
                                  # when the run ended (stopped); closed mode counts errors
                                  # only (by the second they were raised in); all 0 otherwise
With a user's locustfile every request Locust reports counts once in intended, sent and
outcomes, in the second of the arrival that made it (a request outside any arrival, e.g.
in on_start or in closed mode, in the second it started); a skipped arrival adds 1 to
intended only. Outcomes follow [outcomes] (contract.outcomes.OutcomeRules); a request the
user's code marked failed (catch_response's failure()) on an admitted status is error_5xx.
OUTCOMES and the decision header: spikegate.contract.outcomes. Designed rejections are
rate_limited, overloaded and shed; "admitted" latencies are those of ok, no_bid and accepted.

SampleRow (samples.jsonl), parsed from the target's Prometheus /metrics once a second:
    {"t": 12.0, "ok": true,               # false (and the rest absent) when the scrape failed
     "scraped": false,                    # only on rows of a service without a metrics path
                                          # (target.metrics unset): nothing was scraped, "ok"
                                          # is false, "error" is "no metrics path", and the
                                          # row carries the harness's evidence alone
     "auction_inflight": f, "auction_limit": f, "auction_limit_ceiling": f, "auction_waiting": f,
     "auction_inflight_max": f,           # in-flight peak since the sampler's previous good
                                          # scrape (from spikegate_auction_inflight_reached_total;
                                          # the target's gauge when it has no counter)
     "queue_depth": f, "queue_max_depth": f, "queue_sojourn_ms": f,
     "breakers": {dsp: "closed"|"open"|"half_open"|"forced_open"|"disabled"},
     # A user's service fills these three through its [metrics] mapping (and nothing else of
     # the above): inflight -> "auction_inflight", queue_depth -> "queue_depth" (each summed
     # over the metric's label sets), breaker_state -> "breakers" keyed by the label values
     # joined by "," in label-name order (the metric's name when it has none), read as a gauge
     # 0 closed, 1 open, 0.5 half-open, or from a `state` label whose sample is non-zero. A
     # mapped metric absent from the exposition leaves its field out (warned once: an event).
     "decisions_total": {"layer:reason": cumulative count},
     "requests_total": {"route:status:decision": cumulative count},
     "impressions": {stat: value},        # ImpressionLogger.stats() as exported
     "rejection_buckets": {layer: [[le, cumulative count], ...]},
                                          # spikegate_rejection_seconds{layer}: the server-side
                                          # cost of every 429/503, le in seconds ascending,
                                          # null = +Inf (the total); {} = exported, none yet;
                                          # absent = not exported (or an older run directory)
     "duration_buckets": {"admitted": [[le, cumulative count], ...]},
                                          # spikegate_request_duration_seconds{outcome=
                                          # admitted}, /bid and /impression summed: its own
                                          # time on admitted responses
     "permit_buckets": {"wait": [[le, n], ...], "hold": [[le, n], ...]},
                                          # the bulkhead's own time: admitted auctions' wait
                                          # for a permit and how long they held it
     "rss_bytes": f, "loop_lag_ms": f, "loop_lag_max_ms": f,
     "scrape_ms": f,
     # the harness's independent evidence, read whether or not the scrape succeeded:
     "proxy_outstanding_max": {proxy: n},  # the chaos proxy's peak of connections with a
                                          # request outstanding since the previous row
     "proxy_bytes": {proxy: {"received": n, "sent": n}},
                                          # bytes since the previous row at the proxy's
                                          # service-facing socket: received from the service
                                          # (its requests), sent back to it (answers that
                                          # reached it); the first row counts from the proxy's
                                          # creation, a re-created proxy from zero
     "proxy_connections": {proxy: {"accepted": n, "open": n}},
                                          # client connections accepted since the previous
                                          # row, and open now (the embedded chaos server only;
                                          # a real toxiproxy-server gives proxy_bytes alone)
     "broker_records": n,                 # records in the impression topic (log-end offsets,
                                          # read at the broker's own listener, not the proxy)
     "evidence_errors": [message, ...]}   # a source that could not be read this second

EventRow (events.jsonl):
    {"t": 5.0, "kind": KIND, ...details}
KINDS: run_start, run_end, phase (name, start_t, end_t), load_start, load_stop,
fault_start / fault_stop / fault_error (id, proxy, fault, params, source, reason),
load_set / load_spike_start / load_spike_end (LOAD_EVENT_KINDS: the load set by hand),
manual (action, ...), component_crash (name, returncode, log_tail; name "locust worker <id>"
for a worker the master lost mid-run: WORKER_CRASH_PREFIX), interrupted (signal),
warning (message).

The load set by hand (`spikegate load`, harness/control.py LoadControl), LOAD_EVENT_KINDS:
    load_set          {action: "set"|"stop"|"start", rate: the override from now on or null
                       (null: the scenario's shape again), previous: the override before,
                       rps_before, rps_after: the intended rate just before and after,
                       source: "cli"|"page"|"api"}
    load_spike_start  {peak, for_s, until_t, rps_before, source}: the rate is `peak` (arrivals/s)
                      in [t, until_t), then back to the rate it would have had
    load_spike_end    {peak, rps_after, reason: "expired"|"replaced"|"cleared"|"run_end"}

ImpressionAccounting (impressions.json):
    {"acked": n, "found": n, "missing": n, "missing_sample": [ids...up to 100],
     "duplicates_in_topic": n, "read_back_s": f, "complete": bool, "error": str | null}
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "ACKED_DIR",
    "EVENTS_FILE",
    "EVENT_KINDS",
    "IMPRESSIONS_FILE",
    "LATE_BOUNDS_MS",
    "LOAD_CONTROL_FILE",
    "LOAD_EVENT_KINDS",
    "LOGS_DIR",
    "META_FILE",
    "REQUESTS_FILE",
    "REQUEST_ROW_FIELDS",
    "SAMPLES_FILE",
    "SCENARIO_FILE",
    "T0_FILE",
    "TARGET_CONFIG_FILE",
    "WORKERS_FILE",
    "WORKER_CRASH_PREFIX",
    "JsonlWriter",
    "read_jsonl",
]

SCENARIO_FILE = "scenario.toml"
META_FILE = "meta.json"
REQUESTS_FILE = "requests.jsonl"
SAMPLES_FILE = "samples.jsonl"
EVENTS_FILE = "events.jsonl"
IMPRESSIONS_FILE = "impressions.json"
ACKED_DIR = "acked"
TARGET_CONFIG_FILE = "target.json"
LOGS_DIR = "logs"
LOAD_CONTROL_FILE = "control/load.json"
# master/worker runs (load.workers): the Locust master writes WORKERS_FILE (who joined, who
# went missing); the harness writes T0_FILE ({"t0_epoch": f}) once every worker joined
WORKERS_FILE = "workers.json"
T0_FILE = "control/t0.json"
# component_crash name of a Locust worker the master lost mid-run ("locust worker <id>"):
# the generator's record misses what it sent, so the run is inconclusive, never judged
WORKER_CRASH_PREFIX = "locust worker "

# RequestRow "lateness": the bounds (ms) its over_ms counts are kept for
LATE_BOUNDS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
# the keys of every RequestRow, in the order documented above
REQUEST_ROW_FIELDS = (
    "t",
    "intended",
    "sent",
    "outcomes",
    "decisions",
    "endpoints",
    "publishers",
    "hist_admitted",
    "hist_rejected",
    "admitted_p50_ms",
    "admitted_p99_ms",
    "rejected_p99_ms",
    "max_lateness_ms",
    "lateness",
    "cpu_percent",
    "cpu_warning",
    "processes",
    "retry_after_invalid",
    "names",
    "tasks",
)
LOAD_EVENT_KINDS = ("load_set", "load_spike_start", "load_spike_end")
EVENT_KINDS = (
    "run_start",
    "run_end",
    "phase",
    "load_start",
    "load_stop",
    "fault_start",
    "fault_stop",
    "fault_error",
    "manual",
    "component_crash",
    "interrupted",
    "warning",
)


class JsonlWriter:
    """Append JSON rows to a file, one per line, flushed per row (a crash loses nothing written)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8")

    def write(self, row: Mapping[str, Any]) -> None:
        self._fh.write(json.dumps(row, separators=(",", ":"), sort_keys=True) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, row) for each line; a line that is not a JSON object raises
    ValueError naming the file and line (a truncated last line of a killed run is skipped)."""
    with path.open(encoding="utf-8") as fh:
        lines = fh.readlines()
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines) and not line.endswith("\n"):
                return  # the last write of an interrupted run
            raise ValueError(f"{path}:{i}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{i}: expected a JSON object, got {type(row).__name__}")
        yield i, row
