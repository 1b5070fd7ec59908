"""The recorded history of one run, loaded from its run directory into frozen values.

    run dir (spikegate/contract/rundir.py format) --load_history()--> History
        scenario.toml     -> Scenario (validated; phases derived or taken from events)
        meta.json         -> meta (status, t0, mode "session": a hand-made session, whose
                             phases and load come from its events, harness/session.py)
        requests.jsonl    -> RequestSecond per second (sorted by t)
        samples.jsonl     -> Sample per second
        events.jsonl      -> Event per event; fault windows from fault_start/fault_stop
        impressions.json  -> ImpressionAccounting (absent: None)

A directory that cannot be judged at all (missing, unreadable, corrupted, wrong types)
raises UsageError (exit 2) naming the file, the line and the field. Data that are merely few
load fine: the checker turns them into inconclusive verdicts (exit 3).
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spikegate.contract.outcomes import ADMITTED_OUTCOMES, DESIGNED_REJECTIONS
from spikegate.contract.rundir import (
    EVENTS_FILE,
    IMPRESSIONS_FILE,
    LATE_BOUNDS_MS,
    META_FILE,
    REQUESTS_FILE,
    SAMPLES_FILE,
    SCENARIO_FILE,
    TARGET_CONFIG_FILE,
    read_jsonl,
)
from spikegate.harness import session
from spikegate.harness.errors import ScenarioError, UsageError
from spikegate.harness.scenario import Phase, Scenario, load_scenario
from spikegate.harness.target_facts import resolve_target_config

__all__ = [
    "Event",
    "FaultWindow",
    "History",
    "ImpressionAccounting",
    "RequestSecond",
    "Sample",
    "derive_fault_windows",
    "derive_phases",
    "derive_session_phases",
    "events_from_rows",
    "load_history",
]

_PHASE_NAMES = ("warmup", "baseline", "stress", "recovery", "post")
_NUMBERED = re.compile(r"^(stress|recovery|post)-([2-9]|[1-9][0-9]+)$")  # a session's n-th window
_HIST = re.compile(r"^HIST[A-Za-z0-9+/=\s]*$")


@dataclass(frozen=True, slots=True)
class RequestSecond:
    """One second of load as the generator saw it; counts attributed to the second sent."""

    t: float
    intended: int
    sent: int
    outcomes: Mapping[str, int]
    admitted: int  # ok + no_bid + accepted
    rejected: int  # designed rejections: rate_limited + overloaded + shed
    failures: int  # everything else (5xx without decision, 4xx, timeouts, conn errors, ...)
    decisions: Mapping[str, int] = field(default_factory=dict)
    publishers: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    endpoints: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    hist_admitted: str | None = None
    hist_rejected: str | None = None
    admitted_p99_ms: float | None = None
    rejected_p99_ms: float | None = None
    cpu_percent: float | None = None
    max_lateness_ms: float | None = None
    # the row's "lateness": arrivals whose send lateness was noted (None: a row without the
    # field, an older recorder or a user's own one) and, per bound of LATE_BOUNDS_MS (ms),
    # how many of them were sent later than it (bounds with no late send left out)
    late_sends: int | None = None
    late_over_ms: Mapping[int, int] = field(default_factory=dict)
    # designed rejections without Retry-After as integer seconds >= 1, by outcome
    retry_after_invalid: Mapping[str, int] = field(default_factory=dict)
    line: int = 0

    @property
    def total(self) -> int:
        """Terminal outcomes recorded (equals `sent` in a sound history)."""
        return self.admitted + self.rejected + self.failures


@dataclass(frozen=True, slots=True)
class Sample:
    """One scrape of the target's /metrics (ok False: the scrape failed, levels are None;
    scraped False: the service has no metrics path, the row carries only the evidence)."""

    t: float
    ok: bool
    scraped: bool = True
    auction_inflight: float | None = None
    auction_inflight_max: float | None = None  # in-flight peak since the previous sample
    auction_limit: float | None = None
    auction_limit_ceiling: float | None = None
    queue_depth: float | None = None
    queue_max_depth: float | None = None
    queue_sojourn_ms: float | None = None
    rss_bytes: float | None = None
    loop_lag_ms: float | None = None
    breakers: Mapping[str, str] = field(default_factory=dict)
    decisions_total: Mapping[str, float] = field(default_factory=dict)
    impressions: Mapping[str, float | None] = field(default_factory=dict)
    # layer -> ((le, cumulative count), ...) ascending, le = inf last; None: not recorded
    rejection_buckets: Mapping[str, tuple[tuple[float, int], ...]] | None = None
    # The harness's independent evidence (absent in older run directories):
    # the target's own time on admitted responses: {"admitted": ((le, cumulative), ...)}
    duration_buckets: Mapping[str, tuple[tuple[float, int], ...]] | None = None
    # the bulkhead's own time: {"wait": ..., "hold": ...} as ((le, cumulative), ...)
    permit_buckets: Mapping[str, tuple[tuple[float, int], ...]] | None = None
    proxy_outstanding_max: Mapping[str, float] = field(default_factory=dict)  # proxy -> peak
    # proxy -> {"received": bytes from the service, "sent": bytes back to it} since the
    # previous row, at the proxy's service-facing socket
    proxy_bytes: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    # proxy -> {"accepted": connections since the previous row, "open": open now}
    proxy_connections: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    broker_records: float | None = None  # records in the impression topic, read at the broker
    line: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    t: float
    kind: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """A disturbance on one proxy (scheduled or manual), [start_s, end_s)."""

    proxy: str
    fault: str
    start_s: float
    end_s: float
    source: str = "scenario"
    id: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ImpressionAccounting:
    acked: int
    found: int
    missing: int
    missing_sample: Sequence[str] = ()
    duplicates_in_topic: int = 0
    complete: bool = True
    error: str | None = None


@dataclass(frozen=True, slots=True)
class History:
    """Everything the checker judges; build with `load_history` or `History.build`."""

    scenario: Scenario
    meta: Mapping[str, Any]
    requests: Sequence[RequestSecond]
    samples: Sequence[Sample]
    events: Sequence[Event]
    impressions: ImpressionAccounting | None
    phases: Sequence[Phase]
    faults: Sequence[FaultWindow]
    run_dir: Path | None = None
    notes: Sequence[str] = ()
    # the reference target's effective configuration (target.json); None for a user's service
    target_config: Mapping[str, Any] | None = None
    _req_t: Sequence[float] = field(default=(), repr=False, compare=False)
    _smp_t: Sequence[float] = field(default=(), repr=False, compare=False)

    @classmethod
    def build(
        cls,
        scenario: Scenario,
        *,
        requests: Iterable[RequestSecond] = (),
        samples: Iterable[Sample] = (),
        events: Iterable[Event] = (),
        impressions: ImpressionAccounting | None = None,
        meta: Mapping[str, Any] | None = None,
        run_dir: Path | None = None,
        notes: Sequence[str] = (),
        target_config: Mapping[str, Any] | None = None,
    ) -> History:
        """A History with rows sorted by time; phases and fault windows from the events
        when they record them, else derived from the scenario."""
        reqs = tuple(sorted(requests, key=lambda r: r.t))
        smps = tuple(sorted(samples, key=lambda s: s.t))
        evs = tuple(sorted(events, key=lambda e: e.t))
        meta = dict(meta or {"status": "complete"})
        all_notes = tuple(notes)
        if session.is_session(meta):  # a hand-made session: phases from what happened
            end = session.session_end(meta, [r.t for r in reqs], evs)
            faults = derive_fault_windows(None, evs, end_s=end)
            phases = derive_session_phases(scenario, evs, faults, end)
            steps = session.load_timeline(scenario.load.base_rps, evs, end)
            ran = session.session_scenario(scenario, steps, end)
            if ran is None:
                all_notes += (
                    "the session's load timeline is not a valid scenario (shorter than its "
                    "warmup?): the generator is held to the scenario's own [load]",
                )
            scenario = ran or scenario
        else:
            phases = derive_phases(scenario, evs)
            faults = derive_fault_windows(scenario, evs)
        return cls(
            scenario=scenario,
            meta=meta,
            requests=reqs,
            samples=smps,
            events=evs,
            impressions=impressions,
            phases=phases,
            faults=faults,
            run_dir=run_dir,
            notes=all_notes,
            target_config=(
                target_config if target_config is not None else resolve_target_config(scenario)
            ),
            _req_t=tuple(r.t for r in reqs),
            _smp_t=tuple(s.t for s in smps),
        )

    # --- windows --------------------------------------------------------------------------
    def phase(self, name: str) -> Phase | None:
        for p in self.phases:
            if p.name == name:
                return p
        return None

    def requests_in(self, start_s: float, end_s: float) -> Sequence[RequestSecond]:
        """Rows whose second starts in [start_s, end_s)."""
        lo = bisect.bisect_left(self._req_t, start_s)
        hi = bisect.bisect_left(self._req_t, end_s)
        return self.requests[lo:hi]

    def samples_in(self, start_s: float, end_s: float) -> Sequence[Sample]:
        lo = bisect.bisect_left(self._smp_t, start_s)
        hi = bisect.bisect_left(self._smp_t, end_s)
        return self.samples[lo:hi]

    @property
    def end_s(self) -> float:
        """The end of the recorded run (the scenario's duration, or the last row if later)."""
        last = max(self._req_t[-1] + 1 if self._req_t else 0.0, self.scenario.load.duration_s)
        return last

    @property
    def reference(self) -> bool:
        """The reference ad server: its internals (config, layers, metrics) are known."""
        return self.scenario.target.kind == "reference"

    @property
    def external(self) -> bool:
        """A user's own service (kind "command" or "external"): a black box."""
        return not self.reference


# --- derived structure ----------------------------------------------------------------------
def derive_phases(scenario: Scenario | None, events: Sequence[Event]) -> tuple[Phase, ...]:
    """The phases the run recorded (`phase` events), else the scenario's; () without both.
    Recorded names may be numbered (stress-2, recovery-2, post-2: a later stress window)."""
    recorded: dict[str, Phase] = {}
    for e in events:
        if e.kind != "phase":
            continue
        name, start, end = e.data.get("name"), e.data.get("start_t"), e.data.get("end_t")
        if _phase_name(name) and _is_num(start) and _is_num(end):
            s, t = float(start), float(end)  # type: ignore[arg-type]
            if t >= s:
                recorded[str(name)] = Phase(name, s, t)  # type: ignore[arg-type]
    if recorded:
        return tuple(sorted(recorded.values(), key=lambda p: p.start_s))
    return tuple(scenario.phase_list()) if scenario is not None else ()


def derive_session_phases(
    scenario: Scenario, events: Sequence[Event], faults: Sequence[FaultWindow], end_s: float
) -> tuple[Phase, ...]:
    """A hand-made session's phases, from its faults and load changes (harness/session.py):
    stress, recovery, post for the first disturbance, stress-2, recovery-2, post-2, ..."""
    found = session.disturbances(
        scenario.load.base_rps,
        events,
        [(w.start_s, w.end_s, f"{w.fault} on {w.proxy}") for w in faults],
        end_s,
    )
    return session.session_phases(scenario.load.warmup_s, scenario.phases.recovery_s, found, end_s)


def _phase_name(name: object) -> bool:
    return isinstance(name, str) and (name in _PHASE_NAMES or bool(_NUMBERED.match(name)))


def derive_fault_windows(
    scenario: Scenario | None, events: Sequence[Event], *, end_s: float | None = None
) -> tuple[FaultWindow, ...]:
    """Fault windows from the fault_start/fault_stop events (manual faults included); a
    fault that never stopped lasts to the end of the run (`end_s`, default the scenario's
    duration). Without any fault event, the scenario's timeline."""
    starts: dict[str, Event] = {}
    windows: list[FaultWindow] = []
    end_of_run = end_s if end_s is not None else scenario.load.duration_s if scenario else 0.0
    for e in events:
        key = str(e.data.get("id", f"{e.data.get('proxy')}/{e.data.get('fault')}"))
        if e.kind == "fault_start":
            starts[key] = e
        elif e.kind == "fault_stop" and key in starts:
            s = starts.pop(key)
            windows.append(_window(s, e.t))
    for s in starts.values():  # never stopped: it lasted to the end of the run
        windows.append(_window(s, max(end_of_run, s.t)))
    if windows or any(e.kind.startswith("fault_") for e in events) or scenario is None:
        return tuple(sorted(windows, key=lambda w: (w.start_s, w.proxy)))
    out = []
    for i, spec in enumerate(scenario.fault_specs()):
        proxy, _ = spec.resolve()  # the proxy a shorthand such as redis_latency implies
        end = spec.at_s + spec.duration_s
        out.append(
            FaultWindow(proxy, spec.fault, spec.at_s, end, id=f"s{i}", params=dict(spec.params))
        )
    return tuple(out)


def _window(start: Event, end_t: float) -> FaultWindow:
    params = start.data.get("params")
    return FaultWindow(
        proxy=str(start.data.get("proxy", "?")),
        fault=str(start.data.get("fault", "?")),
        start_s=start.t,
        end_s=end_t,
        source=str(start.data.get("source", "scenario")),
        id=str(start.data.get("id", "")),
        params=dict(params) if isinstance(params, dict) else {},
    )


def events_from_rows(
    rows: Iterable[tuple[int, Mapping[str, Any]]], file: str
) -> tuple[list[Event], list[str]]:
    """Events from (line, row) pairs, leniently: a malformed row is skipped and noted."""
    events: list[Event] = []
    notes: list[str] = []
    for line, row in rows:
        try:
            events.append(parse_event_row(row, _Where(file, line)))
        except UsageError as exc:
            notes.append(f"skipped {exc.message}")
    return sorted(events, key=lambda e: e.t), notes


# --- loading --------------------------------------------------------------------------------
def _is_num(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _bucket(pair: object) -> tuple[float, int] | None:
    """`[le, count]` -> (le, count), le null -> inf; None when malformed."""
    if not isinstance(pair, list) or len(pair) != 2:
        return None
    le, n = pair
    if not (le is None or _is_num(le)) or not _is_num(n) or n < 0 or n != int(n):
        return None
    return (math.inf if le is None else float(le), int(n))


class _Where:
    """Where a value came from, for error messages: `requests.jsonl:12`."""

    __slots__ = ("file", "line")

    def __init__(self, file: str, line: int) -> None:
        self.file, self.line = file, line

    def fail(self, what: str) -> UsageError:
        return UsageError(
            f"{self.file}:{self.line}: {what}",
            hint="the run directory is corrupted; re-run the scenario or fix the line",
        )

    def num(self, row: Mapping[str, Any], key: str, *, required: bool = False) -> float | None:
        v = row.get(key)
        if v is None:
            if required:
                raise self.fail(f"field {key!r} is missing (a number is required)")
            return None
        if not _is_num(v):
            raise self.fail(f"field {key!r} must be a finite number, got {v!r}")
        return float(v)

    def count(self, row: Mapping[str, Any], key: str, *, required: bool = False) -> int:
        v = self.num(row, key, required=required)
        if v is None:
            return 0
        if v < 0 or v != int(v):
            raise self.fail(f"field {key!r} must be a whole count >= 0, got {row.get(key)!r}")
        return int(v)

    def counts(self, row: Mapping[str, Any], key: str) -> dict[str, int]:
        v = row.get(key)
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise self.fail(f"field {key!r} must be an object of counts, got {v!r}")
        return {str(k): self.count(v, k) for k in v}

    def lateness(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """RequestSecond's late_sends / late_over_ms from the row's "lateness" (absent: {})."""
        v = row.get("lateness")
        if v is None:
            return {}
        form = '{"sends": n, "over_ms": {"<bound ms>": n}}'
        if not isinstance(v, dict) or not isinstance(v.get("over_ms", {}), dict):
            raise self.fail(f"field 'lateness' must be {form}, got {v!r}")
        over = self.counts(v, "over_ms")
        bad = [k for k in over if not k.isdigit() or int(k) not in LATE_BOUNDS_MS]
        if bad:
            raise self.fail(
                f"field 'lateness'.over_ms: {bad[0]!r} is not one of the bounds "
                f"{', '.join(map(str, LATE_BOUNDS_MS))} (ms)"
            )
        return {
            "late_sends": self.count(v, "sends"),
            "late_over_ms": {int(k): n for k, n in over.items()},
        }

    def nested(self, row: Mapping[str, Any], key: str) -> dict[str, dict[str, int]]:
        v = row.get(key)
        if v is None:
            return {}
        if not isinstance(v, dict) or not all(isinstance(x, dict) for x in v.values()):
            raise self.fail(f"field {key!r} must map names to objects of counts, got {v!r}")
        return {str(k): self.counts(v, k) for k in v}

    def buckets(
        self, row: Mapping[str, Any], key: str
    ) -> dict[str, tuple[tuple[float, int], ...]] | None:
        """`{layer: [[le, cumulative count], ...]}` (le null = +Inf) -> sorted tuples."""
        v = row.get(key)
        if v is None:
            return None
        form = "an object mapping layers to [[le, cumulative count], ...] (le null for +Inf)"
        if not isinstance(v, dict):
            raise self.fail(f"field {key!r} must be {form}, got {v!r}")
        out: dict[str, tuple[tuple[float, int], ...]] = {}
        for layer, pairs in v.items():
            if not isinstance(pairs, list):
                raise self.fail(f"field {key!r}.{layer} must be {form}, got {pairs!r}")
            parsed: list[tuple[float, int]] = []
            for pair in pairs:
                bucket = _bucket(pair)
                if bucket is None:
                    raise self.fail(
                        f"field {key!r}.{layer}: {pair!r} is not [le, count] "
                        f"(le a number or null, count a whole number >= 0)"
                    )
                parsed.append(bucket)
            out[str(layer)] = tuple(sorted(parsed))
        return out

    def hist(self, row: Mapping[str, Any], key: str) -> str | None:
        v = row.get(key)
        if v is None or v == "":
            return None
        if not isinstance(v, str) or not _HIST.match(v):
            raise self.fail(f"field {key!r} must be an HdrHistogram base64 encoding or null")
        return v


def parse_request_row(row: Mapping[str, Any], where: _Where) -> RequestSecond:
    t = where.num(row, "t", required=True)
    assert t is not None
    outcomes = where.counts(row, "outcomes")
    admitted = sum(n for k, n in outcomes.items() if k in ADMITTED_OUTCOMES)
    rejected = sum(n for k, n in outcomes.items() if k in DESIGNED_REJECTIONS)
    failures = sum(outcomes.values()) - admitted - rejected
    return RequestSecond(
        t=t,
        intended=where.count(row, "intended"),
        sent=where.count(row, "sent", required=True),
        outcomes=outcomes,
        admitted=admitted,
        rejected=rejected,
        failures=failures,
        decisions=where.counts(row, "decisions"),
        publishers=where.nested(row, "publishers"),
        endpoints=where.nested(row, "endpoints"),
        hist_admitted=where.hist(row, "hist_admitted"),
        hist_rejected=where.hist(row, "hist_rejected"),
        admitted_p99_ms=where.num(row, "admitted_p99_ms"),
        rejected_p99_ms=where.num(row, "rejected_p99_ms"),
        cpu_percent=where.num(row, "cpu_percent"),
        max_lateness_ms=where.num(row, "max_lateness_ms"),
        **where.lateness(row),
        retry_after_invalid=where.counts(row, "retry_after_invalid"),
        line=where.line,
    )


def parse_sample_row(row: Mapping[str, Any], where: _Where) -> Sample:
    t = where.num(row, "t", required=True)
    assert t is not None
    ok, scraped = row.get("ok", True), row.get("scraped", True)
    for key, flag in (("ok", ok), ("scraped", scraped)):
        if not isinstance(flag, bool):
            raise where.fail(f"field {key!r} must be true or false, got {flag!r}")
    breakers = row.get("breakers") or {}
    if not isinstance(breakers, dict) or not all(isinstance(s, str) for s in breakers.values()):
        raise where.fail(f"field 'breakers' must map DSP names to states, got {breakers!r}")
    decisions = row.get("decisions_total") or {}
    impressions = row.get("impressions") or {}
    outstanding = row.get("proxy_outstanding_max") or {}
    for key, value in (
        ("decisions_total", decisions),
        ("impressions", impressions),
        ("proxy_outstanding_max", outstanding),
    ):
        if not isinstance(value, dict) or not all(v is None or _is_num(v) for v in value.values()):
            raise where.fail(f"field {key!r} must map names to numbers, got {value!r}")
    return Sample(
        t=t,
        ok=ok,
        scraped=scraped,
        auction_inflight=where.num(row, "auction_inflight"),
        auction_inflight_max=where.num(row, "auction_inflight_max"),
        auction_limit=where.num(row, "auction_limit"),
        auction_limit_ceiling=where.num(row, "auction_limit_ceiling"),
        queue_depth=where.num(row, "queue_depth"),
        queue_max_depth=where.num(row, "queue_max_depth"),
        queue_sojourn_ms=where.num(row, "queue_sojourn_ms"),
        rss_bytes=where.num(row, "rss_bytes"),
        loop_lag_ms=where.num(row, "loop_lag_ms"),
        breakers={str(k): str(v) for k, v in breakers.items()},
        decisions_total={str(k): float(v) for k, v in decisions.items() if v is not None},
        impressions={str(k): (None if v is None else float(v)) for k, v in impressions.items()},
        rejection_buckets=where.buckets(row, "rejection_buckets"),
        duration_buckets=where.buckets(row, "duration_buckets"),
        permit_buckets=where.buckets(row, "permit_buckets"),
        proxy_outstanding_max={str(k): float(v) for k, v in outstanding.items() if v is not None},
        broker_records=where.num(row, "broker_records"),
        proxy_bytes=where.nested(row, "proxy_bytes"),
        proxy_connections=where.nested(row, "proxy_connections"),
        line=where.line,
    )


def parse_event_row(row: Mapping[str, Any], where: _Where) -> Event:
    t = where.num(row, "t", required=True)
    assert t is not None
    kind = row.get("kind")
    if not isinstance(kind, str) or not kind:
        raise where.fail(f"field 'kind' must be a non-empty string, got {kind!r}")
    return Event(t, kind, {k: v for k, v in row.items() if k not in ("t", "kind")})


def parse_impressions(data: Any, where: _Where) -> ImpressionAccounting:
    if not isinstance(data, dict):
        raise where.fail(f"expected a JSON object, got {type(data).__name__}")
    sample = data.get("missing_sample") or []
    if not isinstance(sample, list):
        raise where.fail(f"field 'missing_sample' must be a list of ids, got {sample!r}")
    complete = data.get("complete", True)
    error = data.get("error")
    return ImpressionAccounting(
        acked=where.count(data, "acked", required=True),
        found=where.count(data, "found"),
        missing=where.count(data, "missing", required=True),
        missing_sample=tuple(str(s) for s in sample),
        duplicates_in_topic=where.count(data, "duplicates_in_topic"),
        complete=bool(complete),
        error=None if error is None else str(error),
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{path}:{exc.lineno}: not valid JSON ({exc.msg})",
            hint="the run directory is corrupted; re-run the scenario",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot be read ({exc})") from None


def _rows(path: Path, parse: Any) -> list[Any]:
    out = []
    try:
        for line, row in read_jsonl(path):
            out.append(parse(row, _Where(str(path), line)))
    except ValueError as exc:  # read_jsonl's message names the file and the line
        raise UsageError(str(exc), hint="the run directory is corrupted") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot be read ({exc})") from None
    return out


def load_history(run_dir: Path | str) -> History:
    """Load a run directory; UsageError (exit 2) naming the file and line if it cannot be."""
    d = Path(run_dir)
    if not d.is_dir():
        raise UsageError(
            f"{d} is not a run directory (it does not exist or is not a directory)",
            hint="pass a directory written by `spikegate run`, e.g. runs/<timestamp>-<name>",
        )
    required = (SCENARIO_FILE, META_FILE, REQUESTS_FILE, SAMPLES_FILE)
    missing = [f for f in required if not (d / f).is_file()]
    if missing:
        raise UsageError(
            f"{d} is not a complete run directory: missing {', '.join(missing)}",
            hint="a run that stopped before load began has nothing to judge; re-run it",
        )
    try:
        scenario = load_scenario(d / SCENARIO_FILE)
    except ScenarioError as exc:  # its message names the file and line already
        raise UsageError(exc.message, hint=exc.hint) from None
    meta = _read_json(d / META_FILE)
    if not isinstance(meta, dict):
        raise UsageError(f"{d / META_FILE}: expected a JSON object, got {type(meta).__name__}")
    notes: list[str] = []
    status = meta.get("status", "complete")
    if status != "complete":
        notes.append(f"the run's status is {status!r} (meta.json), not 'complete'")
    requests = _rows(d / REQUESTS_FILE, parse_request_row)
    samples = _rows(d / SAMPLES_FILE, parse_sample_row)
    events: list[Event] = []
    if (d / EVENTS_FILE).is_file():
        events = _rows(d / EVENTS_FILE, parse_event_row)
    else:
        notes.append(f"{EVENTS_FILE} is missing: phases and faults come from the scenario")
    impressions = None
    if (d / IMPRESSIONS_FILE).is_file():
        impressions = parse_impressions(
            _read_json(d / IMPRESSIONS_FILE), _Where(str(d / IMPRESSIONS_FILE), 1)
        )
    target_config = None
    if (d / TARGET_CONFIG_FILE).is_file():
        target_config = _read_json(d / TARGET_CONFIG_FILE)
        if not isinstance(target_config, dict):
            raise UsageError(f"{d / TARGET_CONFIG_FILE}: expected a JSON object")
    return History.build(
        scenario,
        target_config=target_config,
        requests=requests,
        samples=samples,
        events=events,
        impressions=impressions,
        meta=meta,
        run_dir=d,
        notes=notes,
    )
