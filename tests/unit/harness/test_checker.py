"""Checker tests as data tables: synthetic per-second histories, each verdict passing and
failing, and the edge cases (empty phases, too few samples, recovery in time or not)."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram

from spikegate.harness.checker import check, percentile_ms, server_rejections
from spikegate.harness.history import Event, History, ImpressionAccounting, RequestSecond, Sample
from spikegate.harness.scenario import Scenario, parse_scenario
from spikegate.harness.thresholds import thresholds_from_checks
from spikegate.harness.verdicts import CheckResult, Verdict

# --- builders -------------------------------------------------------------------------------
# Phases of STORM: warmup [0,5) baseline [5,20) stress [20,35) recovery [35,45) post [45,60)
STORM: dict[str, Any] = {
    "name": "storm",
    "target": {
        "publisher_rate_per_s": 150,
        "publisher_burst": 40,
        "config": {"auction": {"limit": 12}, "impressions": {"max_depth": 400}},
    },
    "load": {
        "shape": "flash_crowd",
        "duration_s": 60,
        "warmup_s": 5,
        "base_rps": 100,
        "peak_rps": 300,
        "spike_at_s": 20,
        "spike_for_s": 15,
        "publishers": 4,
    },
    "faults": [
        {"at_s": 20, "for_s": 15, "fault": "dsp_latency", "proxy": "dsp-1",
         "params": {"latency_ms": 250}},
        {"at_s": 22, "for_s": 10, "fault": "redis_latency", "params": {"latency_ms": 15}},
        {"at_s": 24, "for_s": 8, "fault": "kafka_stall"},
    ],
    "phases": {"recovery_s": 10},
    "checks": {"slo": "p99 < 150ms"},
}  # fmt: skip


def scenario(base: Mapping[str, Any] = STORM, **sections: Any) -> Scenario:
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse_scenario(data, source="test")


@functools.cache
def hist(latency_ms: float, n: int = 100) -> str:
    """An HDR encoding (microseconds) of `n` responses, every percentile `latency_ms`."""
    h = HdrHistogram(1, 60_000_000, 3)
    h.record_value(max(1, round(latency_ms * 1000)), n)
    return h.encode().decode()


def sec(
    t: float,
    *,
    ok: int = 100,
    rejected: Mapping[str, int] | None = None,
    failed: Mapping[str, int] | None = None,
    sent: int | None = None,
    intended: int | None = None,
    p99: float = 20.0,
    rej_p99: float = 3.0,
    cpu: float = 30.0,
    decisions: Mapping[str, int] | None = None,
    publishers: Mapping[str, Mapping[str, int]] | None = None,
) -> RequestSecond:
    outcomes = {"ok": ok, **(rejected or {}), **(failed or {})}
    total = sum(outcomes.values())
    rej = sum((rejected or {}).values())
    fail = sum((failed or {}).values())
    if publishers is None:  # four publishers, evenly
        publishers = {
            f"pub-{i}": {"sent": total // 4, "admitted": ok // 4, "rate_limited": 0}
            for i in range(1, 5)
        }
    return RequestSecond(
        t=float(t),
        intended=total if intended is None else intended,
        sent=total if sent is None else sent,
        outcomes=outcomes,
        admitted=ok,
        rejected=rej,
        failures=fail,
        decisions=dict(decisions or {}),
        publishers=publishers,
        hist_admitted=hist(p99, ok) if ok else None,
        hist_rejected=hist(rej_p99, rej) if rej else None,
        admitted_p99_ms=p99 if ok else None,
        rejected_p99_ms=rej_p99 if rej else None,
        cpu_percent=cpu,
    )


def healthy_rows(duration: int = 60) -> list[RequestSecond]:
    """Baseline 100 ok/s at 20 ms; stress 300/s with 100 fast designed rejections."""
    out = []
    for t in range(duration):
        if 20 <= t < 35:
            out.append(
                sec(
                    t,
                    ok=200,
                    p99=60.0,
                    rejected={"rate_limited": 40, "overloaded": 40, "shed": 20},
                    decisions={"rate_limited": 40, "bulkhead_full": 40, "shed": 20},
                )
            )
        else:
            out.append(sec(t))
    return out


def sample(t: float, **over: Any) -> Sample:
    fields: dict[str, Any] = dict(
        t=float(t), ok=True, auction_inflight=8.0, auction_limit=12.0,
        auction_limit_ceiling=12.0, queue_depth=10.0, queue_max_depth=400.0,
        rss_bytes=100e6, breakers={"dsp-1": "closed", "dsp-2": "closed", "dsp-3": "closed"},
    )  # fmt: skip
    fields.update(over)
    return Sample(**fields)


def healthy_samples(duration: int = 60) -> list[Sample]:
    out = []
    for t in range(duration):
        state = "open" if 21 <= t < 35 else "half_open" if t == 35 else "closed"
        out.append(sample(t, breakers={"dsp-1": state, "dsp-2": "closed", "dsp-3": "closed"}))
    return out


def history(
    sc: Scenario | None = None,
    rows: Iterable[RequestSecond] | None = None,
    samples: Iterable[Sample] | None = None,
    impressions: ImpressionAccounting | None = None,
    **kw: Any,
) -> History:
    rows = healthy_rows() if rows is None else list(rows)
    if impressions is None:  # every 202 acked and found
        n = sum(r.outcomes.get("accepted", 0) for r in rows)
        impressions = ImpressionAccounting(acked=n, found=n, missing=0)
    return History.build(
        sc or scenario(),
        requests=rows,
        samples=healthy_samples() if samples is None else samples,
        impressions=impressions,
        **kw,
    )


def between(rows: Iterable[Any], t0: float, t1: float, make: Callable[[Any], Any]) -> list[Any]:
    """Replace the rows/samples with t in [t0, t1) by make(row)."""
    return [make(r) if t0 <= r.t < t1 else r for r in rows]


def verdict(result: CheckResult, name: str, phase: str | None = None) -> Verdict:
    found = [v for v in result.verdicts if v.name == name and (phase is None or v.phase == phase)]
    assert len(found) == 1, f"{name}/{phase}: {[(v.name, v.phase) for v in result.verdicts]}"
    return found[0]


# --- the healthy run passes everything ------------------------------------------------------
def test_healthy_storm_passes_every_verdict() -> None:
    result = check(history())
    bad = [(v.name, v.phase, v.status, v.message) for v in result.verdicts if v.status != "pass"]
    assert bad == []
    names = {v.name for v in result.verdicts}
    assert names >= {
        "valid_run", "steady_state", "no_unexpected_errors", "graceful_degradation",
        "bounded_resources", "time_to_detect", "time_to_recover", "no_silent_loss",
        "layer.edge", "layer.bulkhead", "layer.shedder", "layer.breaker",
    }  # fmt: skip
    assert result.exit_code == 0


def test_every_verdict_carries_evidence_and_is_json_serialisable() -> None:
    import json

    result = check(history())
    json.dumps(result.to_json())
    assert all(v.evidence and v.message for v in result.verdicts)


# --- each verdict fails on a realistic bad history -----------------------------------------
def _slow_baseline(h: dict[str, Any]) -> None:
    h["rows"] = between(healthy_rows(), 5, 20, lambda r: sec(r.t, p99=300.0))


def _erroring_post(h: dict[str, Any]) -> None:
    h["rows"] = between(healthy_rows(), 45, 60, lambda r: sec(r.t, ok=95, failed={"error_5xx": 5}))


def _stress_timeouts(h: dict[str, Any]) -> None:
    h["rows"] = between(
        healthy_rows(), 20, 35,
        lambda r: sec(r.t, ok=200, p99=60, rejected={"rate_limited": 60},
                      failed={"timeout": 30, "conn_error": 10}),
    )  # fmt: skip


def _collapse(h: dict[str, Any]) -> None:
    h["rows"] = between(
        healthy_rows(), 20, 35,
        lambda r: sec(r.t, ok=20, p99=60, rejected={"overloaded": 280},
                      decisions={"bulkhead_full": 280}),
    )  # fmt: skip


def _slow_admitted(h: dict[str, Any]) -> None:
    h["rows"] = between(
        healthy_rows(),
        20,
        35,
        lambda r: sec(r.t, ok=200, p99=900.0, rejected={"rate_limited": 100}),
    )


def _slow_rejections(h: dict[str, Any]) -> None:
    h["rows"] = between(
        healthy_rows(), 20, 35,
        lambda r: sec(r.t, ok=200, p99=60, rejected={"overloaded": 100}, rej_p99=400.0,
                      decisions={"bulkhead_full": 100}),
    )  # fmt: skip


def _slow_sheds(h: dict[str, Any]) -> None:
    h["rows"] = between(
        healthy_rows(), 24, 32,
        lambda r: sec(r.t, ok=200, p99=60, rejected={"shed": 100}, rej_p99=300.0,
                      decisions={"shed": 100}),
    )  # fmt: skip


def _inflight_over(h: dict[str, Any]) -> None:
    h["samples"] = between(
        healthy_samples(), 25, 30, lambda s: dataclasses.replace(s, auction_inflight=80.0)
    )


def _inflight_peak_over(h: dict[str, Any]) -> None:  # crossed between two scrapes
    h["samples"] = between(
        healthy_samples(), 25, 26, lambda s: dataclasses.replace(s, auction_inflight_max=13.0)
    )


def _queue_over(h: dict[str, Any]) -> None:
    h["samples"] = between(
        healthy_samples(), 25, 60, lambda s: dataclasses.replace(s, queue_depth=5000.0)
    )


def _rss_grows(h: dict[str, Any]) -> None:
    h["samples"] = between(
        healthy_samples(), 30, 60, lambda s: dataclasses.replace(s, rss_bytes=700e6)
    )


def _late_detection(h: dict[str, Any]) -> None:
    slow = [sec(t, ok=300, p99=400.0) for t in range(20, 31)]
    h["rows"] = between(healthy_rows(), 20, 31, lambda r: slow[int(r.t) - 20])
    h["samples"] = between(healthy_samples(), 0, 60, lambda s: dataclasses.replace(
        s, breakers={"dsp-1": "open" if 31 <= s.t < 35 else "closed"}))  # fmt: skip


def _never_protects(h: dict[str, Any]) -> None:
    h["rows"] = between(healthy_rows(), 20, 35, lambda r: sec(r.t, ok=300, p99=400.0))
    h["samples"] = [dataclasses.replace(s, breakers={"dsp-1": "closed"}) for s in healthy_samples()]


def _slow_recovery(h: dict[str, Any]) -> None:  # breach lasts 20 s after the stress ends
    h["rows"] = between(healthy_rows(), 35, 55, lambda r: sec(r.t, p99=400.0))


def _no_recovery(h: dict[str, Any]) -> None:
    h["rows"] = between(healthy_rows(), 35, 60, lambda r: sec(r.t, p99=400.0))


def _outcomes_missing(h: dict[str, Any]) -> None:
    h["rows"] = between(healthy_rows(), 40, 41, lambda r: dataclasses.replace(r, sent=r.sent + 7))


def _impressions_lost(h: dict[str, Any]) -> None:
    h["impressions"] = ImpressionAccounting(
        acked=500, found=497, missing=3, missing_sample=("a", "b", "c")
    )


def _edge_bound_broken(h: dict[str, Any]) -> None:  # pub-1 admitted 400/s > 150/s + 40
    pubs = {"pub-1": {"sent": 400, "admitted": 400, "rate_limited": 0}}
    h["rows"] = between(
        healthy_rows(), 20, 35,
        lambda r: dataclasses.replace(r, publishers=pubs),
    )  # fmt: skip


def _shared_bucket(sent: int) -> Callable[[dict[str, Any]], None]:
    """The edge keyed by the wrong field: the four publishers share one 150/s bucket, so
    each gets a quarter of it through, whether it asked for less than its own rate (75/s)
    or more (200/s). Nothing is admitted above any publisher's bound."""

    def mutate(h: dict[str, Any]) -> None:
        through = 150 // 4
        pubs = {
            f"pub-{i}": {"sent": sent, "admitted": through, "rate_limited": sent - through}
            for i in range(1, 5)
        }
        h["rows"] = between(
            healthy_rows(), 20, 35,
            lambda r: sec(r.t, ok=4 * through, p99=60, publishers=pubs,
                          rejected={"rate_limited": 4 * (sent - through)},
                          decisions={"rate_limited": 4 * (sent - through)}),
        )  # fmt: skip

    return mutate


def _bucket_too_small(h: dict[str, Any]) -> None:
    """Each publisher's own bucket refills at 100/s instead of its 150/s (a unit slip)."""
    pubs = {f"pub-{i}": {"sent": 200, "admitted": 100, "rate_limited": 100} for i in range(1, 5)}
    h["rows"] = between(
        healthy_rows(), 20, 35,
        lambda r: sec(r.t, ok=400, p99=60, rejected={"rate_limited": 400},
                      decisions={"rate_limited": 400}, publishers=pubs),
    )  # fmt: skip


def _bulkhead_off(h: dict[str, Any]) -> None:  # no limit: inflight follows the load
    h["sc"] = scenario(target={**STORM["target"], "config": {"auction": {"enabled": False}}})
    h["samples"] = between(
        healthy_samples(), 0, 60,
        lambda s: dataclasses.replace(s, auction_inflight=80.0 if 22 <= s.t < 32 else 8.0,
                                      auction_limit=None, auction_limit_ceiling=None),
    )  # fmt: skip


def _bulkhead_off_unexported() -> History:
    sc = scenario(target={**STORM["target"], "config": {"auction": {"enabled": False}}})
    samples = [
        dataclasses.replace(
            s, auction_inflight=None, auction_limit=None, auction_limit_ceiling=None
        )
        for s in healthy_samples()
    ]
    return history(sc=sc, samples=samples)


def _breaker_never_opens(h: dict[str, Any]) -> None:
    h["samples"] = [
        dataclasses.replace(s, breakers={"dsp-1": "disabled"}) for s in healthy_samples()
    ]


def _breaker_never_closes(h: dict[str, Any]) -> None:
    h["samples"] = between(
        healthy_samples(), 21, 60, lambda s: dataclasses.replace(s, breakers={"dsp-1": "open"})
    )


def _late_after_hard_fault(h: dict[str, Any]) -> None:
    """A shedder that acts only once its queue is nearly full: the SLO holds, but after
    the broker stalls at t=24 nothing protective happens until t=31."""
    h["rows"] = between(
        healthy_rows(), 20, 35,
        lambda r: sec(r.t, ok=300, p99=40.0) if r.t < 31
        else sec(r.t, ok=250, p99=40.0, rejected={"shed": 50}, decisions={"shed": 50}),
    )  # fmt: skip
    h["samples"] = [dataclasses.replace(s, breakers={"dsp-1": "closed"}) for s in healthy_samples()]


def _rate_limits_at_base_load(h: dict[str, Any]) -> None:
    """An edge keyed by the wrong field (one bucket for every publisher) cuts 5% of the
    base load."""
    h["rows"] = between(
        healthy_rows(), 5, 20,
        lambda r: sec(r.t, ok=95, rejected={"rate_limited": 5}, decisions={"rate_limited": 5}),
    )  # fmt: skip


def _sheds_after_the_storm(h: dict[str, Any]) -> None:
    """A shedder whose state never resets after the stall keeps shedding at base load."""
    h["rows"] = between(
        healthy_rows(), 45, 60,
        lambda r: sec(r.t, ok=90, rejected={"shed": 10}, decisions={"shed": 10}),
    )  # fmt: skip


def _relapse_latency(h: dict[str, Any]) -> None:
    """A breaker that closes, then reopens and flaps: slow again from t=50 to 53."""
    h["rows"] = between(healthy_rows(), 50, 53, lambda r: sec(r.t, p99=400.0))


def _relapse_one_dead_second(h: dict[str, Any]) -> None:
    """A worker restart (a leak, an OOM kill) long after recovery: one second of resets."""
    h["rows"] = between(
        healthy_rows(), 52, 53, lambda r: sec(r.t, ok=0, failed={"conn_error": 100})
    )


FAILING: list[tuple[str, Callable[[dict[str, Any]], None], str, str, str]] = [
    # (case, mutation, verdict, phase, a word the message must contain)
    ("slow baseline", _slow_baseline, "steady_state", "baseline", "p99"),
    ("errors after the storm", _erroring_post, "steady_state", "post", "error ratio"),
    ("timeouts and resets", _stress_timeouts, "no_unexpected_errors", "stress", "timeout"),
    ("goodput collapses", _collapse, "graceful_degradation", "stress", "goodput"),
    ("admitted latency explodes", _slow_admitted, "graceful_degradation", "stress", "admitted p99"),
    ("slow rejections", _slow_rejections, "graceful_degradation", "stress", "not fast"),
    ("inflight over the limit", _inflight_over, "bounded_resources", "run", "inflight"),
    ("inflight peak over the limit", _inflight_peak_over, "bounded_resources", "run", "13"),
    ("queue over its cap", _queue_over, "bounded_resources", "run", "queue depth"),
    ("memory grows", _rss_grows, "bounded_resources", "run", "RSS"),
    ("protection engages late", _late_detection, "time_to_detect", "stress", "11 s"),
    ("protection never engages", _never_protects, "time_to_detect", "stress", "did not engage"),
    ("protection late after a hard fault", _late_after_hard_fault, "time_to_detect", "stress",
     "7 s after protection was needed at t=24s"),
    ("rate-limits at base load", _rate_limits_at_base_load, "steady_state", "baseline",
     "designed rejections 5.00%"),
    ("sheds after the storm", _sheds_after_the_storm, "steady_state", "post", "shed=150"),
    ("relapses after recovery", _relapse_latency, "time_to_recover", "recovery", "t=50s"),
    ("one dead second after recovery", _relapse_one_dead_second, "time_to_recover", "recovery",
     "worst second t=52s"),
    ("recovers after the budget", _slow_recovery, "time_to_recover", "recovery", "20.0 s"),
    ("never recovers", _no_recovery, "time_to_recover", "recovery", "never recovered"),
    ("a request without an outcome", _outcomes_missing, "no_silent_loss", "run", "t=40"),
    ("an acked impression lost", _impressions_lost, "no_silent_loss", "run", "3 of 500"),
    ("publisher above its bucket", _edge_bound_broken, "layer.edge", "stress", "pub-1"),
    ("shared bucket, publishers under their rate", _shared_bucket(75), "layer.edge", "stress",
     "short of"),
    ("shared bucket, publishers over their rate", _shared_bucket(200), "layer.edge", "stress",
     "a bucket shared or too small"),
    ("bucket refilling too slowly", _bucket_too_small, "layer.edge", "stress", "short of"),
    ("no concurrency limit", _bulkhead_off, "layer.bulkhead", "stress", "limit switched off"),
    ("inflight above the ceiling", _inflight_over, "layer.bulkhead", "stress", "exceeded"),
    ("inflight peak above the ceiling", _inflight_peak_over, "layer.bulkhead", "stress", "13"),
    ("queue above the cap", _queue_over, "layer.shedder", "stress", "cap"),
    ("breaker never opens", _breaker_never_opens, "layer.breaker", "stress", "never opened"),
    ("breaker never closes", _breaker_never_closes, "layer.breaker", "stress", "still open"),
    ("slow bulkhead 503s", _slow_rejections, "layer.bulkhead", "stress", "bulkhead_full answered"),
    ("slow sheds", _slow_sheds, "layer.shedder", "stress", "sheds answered"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "mutate", "name", "phase", "word"), FAILING, ids=[f[0] for f in FAILING]
)
def test_verdict_fails_on_bad_history(
    case: str, mutate: Callable[[dict[str, Any]], None], name: str, phase: str, word: str
) -> None:
    parts: dict[str, Any] = {}
    mutate(parts)
    result = check(history(**parts))
    v = verdict(result, name, phase)
    assert v.status == "fail", v.message
    assert word in v.message
    assert result.exit_code == 1


# --- detection and recovery figures ---------------------------------------------------------
def test_breach_that_recovers_in_time_passes_with_its_figure() -> None:
    rows = between(healthy_rows(), 35, 41, lambda r: sec(r.t, p99=400.0))
    v = verdict(check(history(rows=rows)), "time_to_recover")
    assert v.status == "pass"
    assert v.evidence["ttr_s"] == 6.0
    assert v.evidence["recovered_at_s"] == 41.0


def test_one_healthy_second_inside_a_breach_is_not_recovery() -> None:
    rows = between(healthy_rows(), 35, 50, lambda r: sec(r.t, p99=400.0) if r.t != 38 else r)
    v = verdict(check(history(rows=rows)), "time_to_recover")
    assert v.evidence["recovered_at_s"] == 50.0


def test_a_gap_in_the_rows_restarts_the_hold_count() -> None:
    rows = between(healthy_rows(), 35, 40, lambda r: sec(r.t, p99=400.0))
    rows = [r for r in rows if r.t != 42]  # seconds 40, 41 healthy, 42 missing, 43.. healthy
    v = verdict(check(history(rows=rows)), "time_to_recover")
    assert v.evidence["recovered_at_s"] == 43.0


def test_recovery_needs_goodput_not_only_fast_rejections() -> None:
    rows = between(healthy_rows(), 35, 60, lambda r: sec(r.t, ok=5, rejected={"shed": 95}))
    assert verdict(check(history(rows=rows)), "time_to_recover").status == "fail"


def test_detection_time_counts_from_each_need() -> None:
    """The storm's spike and DSP fault draw protection at once (t=20), the Redis latency
    too (t=22), and Kafka stalls at t=24 (a hard fault): each need is met at once."""
    v = verdict(check(history()), "time_to_detect")
    assert v.status == "pass", v.message
    assert (v.evidence["need_s"], v.evidence["detect_s"]) == (20.0, 0.0)
    needs = [(n["at_s"], n["detect_s"]) for n in v.evidence["needs"]]
    assert needs == [(20.0, 0.0), (22.0, 0.0), (24.0, 0.0)]
    assert "hard fault" in v.evidence["needs"][-1]["why"]


# Redis slows at 12 (the SLO holds), then goes down at 22: phases warmup [0,5) baseline
# [5,12) stress [12,30) recovery [30,42) post [42,50).
OUTAGE: dict[str, Any] = {
    "name": "outage",
    "load": {"shape": "steady", "duration_s": 50, "warmup_s": 5, "base_rps": 100,
             "publishers": 4},
    "faults": [
        {"at_s": 12, "for_s": 8, "fault": "redis_latency", "params": {"latency_ms": 40}},
        {"at_s": 22, "for_s": 8, "fault": "redis_down"},
    ],
    "phases": {"recovery_s": 12},
    "checks": {"slo": "p99 < 150ms", "goodput_floor": ">= 30%"},
}  # fmt: skip


def _outage_rows(slow_at: float | None = None) -> list[RequestSecond]:
    """Healthy: 60 ms under the latency fault, fast 503s (redis_unavailable) while down."""
    out = []
    for t in range(50):
        if 12 <= t < 20:
            out.append(sec(t, p99=400.0 if t == slow_at else 60.0))
        elif 22 <= t < 30:
            out.append(sec(t, ok=40, rejected={"overloaded": 60},
                           decisions={"redis_unavailable": 60}))  # fmt: skip
        else:
            out.append(sec(t))
    return out


def _outage(rows: list[RequestSecond]) -> History:
    closed = [sample(t, breakers={"dsp-1": "closed"}) for t in range(50)]
    return history(sc=scenario(OUTAGE), rows=rows, samples=closed)


def _late_outage_rows() -> list[RequestSecond]:
    rows = between(_outage_rows(), 13, 17, lambda r: sec(
        r.t, ok=80, p99=400.0 if r.t == 13 else 60.0, rejected={"overloaded": 20},
        decisions={"bulkhead_full": 20}))  # fmt: skip
    return between(rows, 22, 29, lambda r: sec(r.t, p99=400.0))


DETECT: list[tuple[str, list[RequestSecond], str, float | None, float | None, str]] = [
    # (case, rows, status, need_s, detect_s, a word of the message)
    ("latency absorbed, protection when Redis goes down", _outage_rows(), "pass", 22.0, 0.0,
     "t=22s"),
    # A Redis client without a timeout: the latency breaks the SLO at 15 and nothing
    # protects until the outage: 10 s late, counted from the latency fault's onset.
    ("latency hurts, nothing protects", _outage_rows(slow_at=15), "fail", 12.0, 10.0,
     "redis_latency on redis began; over the SLO at t=15s"),
    # A bulkhead that never rejects: while Redis is down auctions hang and time out.
    ("outage with no protective decision", between(_outage_rows(), 22, 30,
     lambda r: sec(r.t, ok=0, failed={"timeout": 100})), "fail", 22.0, None, "did not engage"),
    ("never needed", between(_outage_rows(), 22, 30, lambda r: sec(r.t)), "pass", None, None,
     "no protection needed"),
    # A Redis client that retries for 7 s before it calls Redis unavailable: the bulkhead
    # met the latency at once (t=13), which hid the outage's late answer from a verdict
    # that measured only from the start of stress.
    ("a later need met late", _late_outage_rows(), "fail", 12.0, 1.0,
     "7 s after protection was needed at t=22s (redis_down on redis began (a hard fault))"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "rows", "status", "need", "detect", "word"), DETECT,
                         ids=[d[0] for d in DETECT])  # fmt: skip
def test_detection_is_measured_from_the_first_second_of_need(
    case: str,
    rows: list[RequestSecond],
    status: str,
    need: float | None,
    detect: float | None,
    word: str,
) -> None:
    h = _outage(rows)
    if case == "never needed":  # a latency fault alone: nothing hard, nothing broken
        closed = [sample(t, breakers={"dsp-1": "closed"}) for t in range(50)]
        h = history(sc=scenario(OUTAGE, faults=OUTAGE["faults"][:1]), rows=rows, samples=closed)
    v = verdict(check(h), "time_to_detect")
    assert (v.status, v.evidence["need_s"], v.evidence.get("detect_s")) == (status, need, detect)
    assert word in v.message, v.message
    assert v.evidence["stress_start_s"] == 12.0


# A service that admits nothing where it should is a failed run, not an unmeasured one.
DEAD: list[tuple[str, Scenario, RequestSecond]] = [
    ("connection refused", scenario(), sec(0, ok=0, failed={"conn_error": 100})),
    ("every answer a bare 5xx", scenario(), sec(0, ok=0, failed={"error_5xx": 100})),
    ("no stress phase, all refused", scenario(faults=[], load={"shape": "steady"}),
     sec(0, ok=0, failed={"conn_error": 100})),
    ("every answer a designed 503", scenario(faults=[], load={"shape": "steady"}),
     sec(0, ok=0, rejected={"overloaded": 100}, decisions={"bulkhead_full": 100})),
]  # fmt: skip


@pytest.mark.parametrize(("case", "sc", "row"), DEAD, ids=[d[0] for d in DEAD])
def test_a_service_that_admits_nothing_fails(case: str, sc: Scenario, row: RequestSecond) -> None:
    rows = [dataclasses.replace(row, t=float(t)) for t in range(60)]
    result = check(history(sc=sc, rows=rows))
    assert result.exit_code == 1
    v = verdict(result, "steady_state", "baseline")
    assert v.status == "fail" and "100.00%" in v.message, v.message
    if sc.stress_window() is not None:
        g = verdict(result, "graceful_degradation")
        assert g.status == "fail" and "goodput 0/s" in g.message, g.message


def test_one_noisy_second_after_recovery_is_not_a_relapse() -> None:
    """A second whose p99 is 160 ms from 2 slow requests of 100 (a GC pause) is noise:
    the merged `hold` window stays within the SLO."""
    h = HdrHistogram(1, 60_000_000, 3)
    h.record_value(20_000, 98)
    h.record_value(160_000, 2)
    noisy = h.encode().decode()
    rows = between(healthy_rows(), 50, 51, lambda r: dataclasses.replace(
        r, hist_admitted=noisy, admitted_p99_ms=160.0))  # fmt: skip
    v = verdict(check(history(rows=rows)), "time_to_recover")
    assert v.status == "pass", v.message
    assert "relapse_at_s" not in v.evidence


def test_a_relapse_is_named_with_its_window() -> None:
    parts: dict[str, Any] = {}
    _relapse_latency(parts)
    v = verdict(check(history(**parts)), "time_to_recover")
    assert v.evidence["recovered_at_s"] == 35.0
    assert v.evidence["relapse_window"] == [48.0, 51.0]  # the first window that breaks
    assert (v.evidence["relapse_at_s"], v.evidence["relapse_worst_s"]) == (50.0, 50.0)
    assert v.message.startswith("relapsed at t=50s after recovering at t=35s"), v.message


def test_no_protection_needed_when_the_slo_held_passes() -> None:
    rows = between(healthy_rows(), 20, 35, lambda r: sec(r.t, ok=300, p99=40.0))
    samples = [dataclasses.replace(s, breakers={"dsp-1": "closed"}) for s in healthy_samples()]
    v = verdict(check(history(rows=rows, samples=samples)), "time_to_detect")
    assert (v.status, "not needed" in v.message or "no protective" in v.message) == ("pass", True)


def test_stress_latency_bound_scales_with_baseline() -> None:
    """Admitted p99 up to latency_factor x baseline p99 passes even above the SLO."""
    rows = between(healthy_rows(), 5, 20, lambda r: sec(r.t, p99=100.0))
    rows = between(rows, 20, 35, lambda r: sec(r.t, ok=200, p99=280.0, rejected={"shed": 100}))
    v = verdict(check(history(rows=rows)), "graceful_degradation")
    assert v.status == "pass", v.message
    assert v.evidence["admitted_bound"].startswith("p99 < 300")  # 3 x the baseline p99


def test_slow_seconds_right_after_an_onset_are_left_to_time_to_detect() -> None:
    """A breaker needs a few slow calls as evidence: the first `settle` after the stress
    start and after each fault start is not judged for latency; later seconds are."""
    at_onsets = between(healthy_rows(), 20, 21, lambda r: sec(r.t, ok=200, p99=900.0))
    at_onsets = between(at_onsets, 22, 23, lambda r: sec(r.t, ok=200, p99=900.0))  # redis fault
    v = verdict(check(history(rows=at_onsets)), "graceful_degradation")
    assert v.status == "pass", v.message
    assert [20.0, 21.0] in v.evidence["latency_excludes"]
    later = between(healthy_rows(), 21, 22, lambda r: sec(r.t, ok=200, p99=900.0))
    v = verdict(check(history(rows=later)), "graceful_degradation")
    assert v.status == "fail" and "admitted p99" in v.message
    longer = thresholds_from_checks({"settle": "within 2s"})
    assert verdict(check(history(rows=later), longer), "graceful_degradation").status == "pass"


def test_goodput_capacity_is_the_declared_one_when_set() -> None:
    th = thresholds_from_checks({"capacity_rps": 1000})
    v = verdict(check(history(), th), "graceful_degradation")
    assert v.evidence["capacity_source"] == "declared capacity_rps"
    assert v.evidence["capacity_rps"] == 300.0  # min(offered, declared)
    assert v.status == "fail"  # 200 admitted/s of 300 offered = 67% < 80%


# --- inconclusive, never pass ---------------------------------------------------------------
def _with_impressions(r: RequestSecond) -> RequestSecond:
    return dataclasses.replace(r, outcomes={"ok": 50, "accepted": 50})


INCONCLUSIVE_CASES: list[tuple[str, Callable[[], History], str, str]] = [
    ("empty baseline", lambda: history(rows=[r for r in healthy_rows() if not 5 <= r.t < 20]),
     "valid_run", "baseline"),
    ("two seconds of post", lambda: history(rows=[r for r in healthy_rows() if r.t < 47]),
     "valid_run", "post"),
    ("generator shortfall", lambda: history(rows=between(healthy_rows(), 20, 35,
        lambda r: dataclasses.replace(r, intended=r.sent * 2))), "valid_run", "stress"),
    ("generator CPU-starved", lambda: history(rows=between(healthy_rows(), 5, 20,
        lambda r: dataclasses.replace(r, cpu_percent=99.0))), "valid_run", "baseline"),
    ("too few admitted for a p99", lambda: history(rows=between(healthy_rows(), 5, 20,
        lambda r: sec(r.t, ok=2))), "steady_state", "baseline"),
    ("interrupted run", lambda: history(meta={"status": "interrupted"}), "valid_run", "run"),
    ("a component crashed",
     lambda: history(events=[Event(30.0, "component_crash", {"name": "redis"})]),
     "valid_run", "run"),
    ("no samples", lambda: history(samples=[Sample(float(t), ok=False) for t in range(60)]),
     "bounded_resources", "run"),
    ("impressions.json missing", lambda: History.build(
        scenario(), requests=between(healthy_rows(), 5, 6, _with_impressions),
        samples=healthy_samples()), "no_silent_loss", "run"),
    ("read-back incomplete", lambda: history(
        rows=[_with_impressions(r) if r.t == 3 else r for r in healthy_rows()],
        impressions=ImpressionAccounting(acked=50, found=49, missing=0, complete=False,
                                         error="timeout")), "no_silent_loss", "run"),
    ("limit off, inflight not exported", _bulkhead_off_unexported, "layer.bulkhead", "stress"),
    ("nothing after the disturbance", lambda: history(rows=[r for r in healthy_rows() if r.t < 36]),
     "time_to_recover", "recovery"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "make", "name", "phase"), INCONCLUSIVE_CASES,
                         ids=[c[0] for c in INCONCLUSIVE_CASES])  # fmt: skip
def test_too_little_data_is_inconclusive(
    case: str, make: Callable[[], History], name: str, phase: str
) -> None:
    result = check(make())
    assert verdict(result, name, phase).status == "inconclusive"
    assert result.status in ("inconclusive", "fail")
    assert result.exit_code != 0


def test_empty_history_is_inconclusive_not_pass() -> None:
    result = check(History.build(scenario()))
    assert result.status == "inconclusive"
    assert result.exit_code == 3


# --- scope: which verdicts exist ------------------------------------------------------------
def test_external_target_gets_its_layers_and_resources_skipped_never_passed() -> None:
    """A user's service (more in test_blackbox_verdicts.py): without [metrics] nothing of
    its internals is judged, so those verdicts are skipped with a reason, not passed."""
    data = {**STORM, "target": {"kind": "external", "url": "http://127.0.0.1:9"}, "faults": []}
    result = check(
        history(sc=scenario(data), samples=[Sample(float(t), ok=False) for t in range(60)])
    )
    layers = {v.name: v.status for v in result.verdicts if v.name.startswith("layer.")}
    assert layers == dict.fromkeys(
        ("layer.edge", "layer.bulkhead", "layer.shedder", "layer.breaker"), "skipped"
    )
    assert verdict(result, "bounded_resources").status == "skipped"
    assert result.exit_code == 0


def test_layers_not_exercised_are_skipped() -> None:
    sc = scenario(faults=[])
    rows = between(healthy_rows(), 20, 35, lambda r: sec(r.t, ok=300, p99=40.0))
    result = check(history(sc=sc, rows=rows))
    assert not [v for v in result.verdicts if v.name.startswith("layer.")]


def test_checks_layers_false_skips_layer_verdicts() -> None:
    th = thresholds_from_checks({"layers": False})
    assert not [v for v in check(history(), th).verdicts if v.name.startswith("layer.")]


HOT = {
    **STORM,
    "name": "hot",
    "faults": [],
    "target": {"publisher_rate_per_s": 100, "publisher_burst": 30},
    "load": {**STORM["load"], "shape": "hot_publisher", "hot_publisher": "pub-1"},
}


def _hot_rows(others_admitted: int) -> list[RequestSecond]:
    def spike(r: RequestSecond) -> RequestSecond:
        pubs = {"pub-1": {"sent": 240, "admitted": 100, "rate_limited": 140}}
        for p in ("pub-2", "pub-3", "pub-4"):
            pubs[p] = {"sent": 20, "admitted": others_admitted, "rate_limited": 0}
        ok = 100 + 3 * others_admitted
        over = 300 - 140 - ok
        return sec(r.t, ok=ok, p99=30.0, rejected={"rate_limited": 140, "overloaded": over},
                   publishers=pubs, decisions={"bulkhead_full": over})  # fmt: skip

    return between(healthy_rows(), 20, 35, spike)


def test_hot_publisher_isolated_passes_starved_fails() -> None:
    good = verdict(check(history(sc=scenario(HOT), rows=_hot_rows(20))), "layer.edge")
    bad = verdict(check(history(sc=scenario(HOT), rows=_hot_rows(5))), "layer.edge")
    assert good.status == "pass", good.message
    assert bad.status == "fail"
    assert "starved" in bad.message and "pub-" in bad.message


def test_tightened_threshold_turns_pass_into_fail() -> None:
    h = history()
    assert verdict(check(h), "steady_state", "baseline").status == "pass"
    strict = thresholds_from_checks({"slo": "p99 < 10ms"})
    assert verdict(check(h, strict), "steady_state", "baseline").status == "fail"


def test_check_is_pure() -> None:
    h = history()
    assert check(h).to_json() == check(h).to_json()


# --- numbers --------------------------------------------------------------------------------
def test_percentile_merges_histograms_across_seconds() -> None:
    rows = [sec(0, ok=100, p99=10.0), sec(1, ok=100, p99=200.0)]
    p50, n, exact = percentile_ms(rows, "admitted", 50.0)
    p99, _, _ = percentile_ms(rows, "admitted", 99.0)
    assert n == 200 and exact
    assert p50 == pytest.approx(10.0, rel=0.01)
    assert p99 == pytest.approx(200.0, rel=0.01)


def test_percentile_without_histograms_uses_the_copies_conservatively() -> None:
    rows = [dataclasses.replace(sec(0, p99=10.0), hist_admitted=None),
            dataclasses.replace(sec(1, p99=90.0), hist_admitted=None)]  # fmt: skip
    value, _, exact = percentile_ms(rows, "admitted", 99.0)
    assert (value, exact) == (90.0, False)


def test_an_hour_long_history_judges_its_baseline_steady() -> None:
    """3600 rows and samples (how fast: tests/bench/checker.py)."""
    sc = scenario(load={**STORM["load"], "duration_s": 3600, "spike_at_s": 1800, "spike_for_s": 60},
                  faults=[])  # fmt: skip
    rows = [sec(t, ok=100 + t % 7, p99=20.0 + t % 5) for t in range(3600)]
    samples = [sample(t) for t in range(3600)]
    h = History.build(sc, requests=rows, samples=samples,
                      impressions=ImpressionAccounting(acked=1, found=1, missing=0))  # fmt: skip
    result = check(h)
    assert verdict(result, "steady_state", "baseline").status == "pass"


# --- rejection speed judged server-side (spikegate_rejection_seconds{layer}) ----------------
EDGES = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, math.inf)
Costs = Mapping[str, Sequence[tuple[int, float]]]  # layer -> [(rejections per second, cost s)]


def served(costs: Costs, samples: Iterable[Sample] | None = None, t0: float = 20,
           t1: float = 35) -> list[Sample]:  # fmt: skip
    """Samples whose cumulative rejection histogram grows by `costs` each second in [t0, t1)
    (a sample at t has counted the seconds before t, as a scrape at t does)."""
    out = []
    for s in healthy_samples() if samples is None else samples:
        secs = max(0.0, min(s.t, t1) - t0)
        buckets = {
            layer: tuple((le, int(sum(n * secs for n, cost in mix if cost <= le))) for le in EDGES)
            for layer, mix in costs.items()
        }
        out.append(dataclasses.replace(s, rejection_buckets=buckets))
    return out


def _pure(kind: str, rej_ms: float) -> list[RequestSecond]:
    """Stress seconds whose rejections are all `kind`, answered in `rej_ms` client-side."""
    outcome = {"bulkhead_full": "overloaded", "shed": "shed", "rate_limited": "rate_limited"}
    t0, t1 = (24, 32) if kind == "shed" else (20, 35)
    n = {"bulkhead_full": 40, "shed": 20, "rate_limited": 40}[kind]  # as served(FAST) times
    return between(healthy_rows(), t0, t1, lambda r: sec(
        r.t, ok=300 - n, p99=60, rejected={outcome[kind]: n}, rej_p99=rej_ms,
        decisions={kind: n}))  # fmt: skip


def _client_slow(kind: str) -> list[RequestSecond]:
    return _pure(kind, 400.0 if kind == "bulkhead_full" else 300.0)


FAST = {"auction": [(40, 0.0004)], "impressions": [(20, 0.0003)], "edge": [(40, 0.0002)]}

SERVER_SIDE: list[tuple[str, str, Costs, str, str]] = [
    # (case, verdict, server costs, status, a word the message must contain)
    ("fast 503s both sides", "layer.bulkhead", FAST, "pass", "<= 0.5 ms"),
    ("fast sheds both sides", "layer.shedder", FAST, "pass", "<= 0.5 ms"),
    ("fast 429s both sides", "layer.edge", FAST, "pass", "<= 0.5 ms"),
    ("bulkhead_full costs 20 ms server-side", "layer.bulkhead",
     {**FAST, "auction": [(40, 0.02)]}, "fail", "p99 <= 25 ms server-side"),
    ("sheds cost 8 ms server-side", "layer.shedder",
     {**FAST, "impressions": [(20, 0.008)]}, "fail", "above p99 < 5ms"),
    ("429s cost 8 ms server-side", "layer.edge",
     {**FAST, "edge": [(40, 0.008)]}, "fail", "429s answered in p99 <= 10 ms server-side"),
    ("sheds above the last bucket edge", "layer.shedder",
     {**FAST, "impressions": [(20, 0.3)]}, "fail", "p99 > 100 ms"),
    ("a bucket edge equal to the < bound is within it", "layer.shedder",
     {**FAST, "impressions": [(20, 0.004)]}, "pass", "p99 <= 5 ms"),
    ("bulkhead_full within its designed wait (5 ms + max_wait 5 ms)", "layer.bulkhead",
     {**FAST, "auction": [(40, 0.007)]}, "pass", "p99 <= 10 ms"),
    ("1% slow sheds: the p99 is still fast", "layer.shedder",
     {**FAST, "impressions": [(99, 0.0003), (1, 0.05)]}, "pass", "p99 <= 0.5 ms"),
    ("2% slow sheds: the p99 is slow", "layer.shedder",
     {**FAST, "impressions": [(98, 0.0003), (2, 0.05)]}, "fail", "p99 <= 100 ms"),
    ("2% slow 429s: the p99 is slow", "layer.edge",
     {**FAST, "edge": [(98, 0.0003), (2, 0.05)]}, "fail", "p99 <= 100 ms"),
]  # fmt: skip

_KIND = {"layer.bulkhead": "bulkhead_full", "layer.shedder": "shed", "layer.edge": "rate_limited"}


@pytest.mark.parametrize(("case", "name", "costs", "status", "word"), SERVER_SIDE,
                         ids=[c[0] for c in SERVER_SIDE])  # fmt: skip
def test_rejection_speed_is_judged_server_side(
    case: str, name: str, costs: Costs, status: str, word: str
) -> None:
    """Client-side rejected latencies are fast (0.4 ms) in every case: the target's own
    histogram decides."""
    v = verdict(check(history(rows=_pure(_KIND[name], 0.4), samples=served(costs))), name)
    assert v.status == status, v.message
    assert word in v.message
    assert v.evidence["reject_latency_judged_on"] == "client and server"
    assert "upper bound" in v.evidence["server_estimate"]
    assert v.evidence["rejected_latency_ms"] == pytest.approx(0.4, abs=0.01)


def _stalled_once(at: float) -> list[Sample]:
    """Fast bulkhead_full 503s, plus 10 answered in 50 ms in the second before `at`."""
    fast, slow = served(FAST), served({"auction": [(10, 0.05)]}, t0=at - 1, t1=at)
    out = []
    for f, s in zip(fast, slow, strict=True):
        assert f.rejection_buckets is not None and s.rejection_buckets is not None
        merged = dict(f.rejection_buckets)
        merged["auction"] = tuple(
            (le, n + m) for (le, n), (_, m) in zip(f.rejection_buckets["auction"],
                                                   s.rejection_buckets["auction"], strict=True)
        )  # fmt: skip
        out.append(dataclasses.replace(f, rejection_buckets=merged))
    return out


@pytest.mark.parametrize(("at", "status"), [(21.0, "pass"), (28.0, "fail")])
def test_a_stall_in_an_onsets_first_second_is_not_the_rejection_paths_cost(
    at: float, status: str
) -> None:
    """The spike's first second stalls every timer of a 2-core machine once: ten slow 503s
    there are left out (settle), the same ten in the middle of stress fail the bound."""
    samples = _stalled_once(at)
    v = verdict(check(history(rows=_pure("bulkhead_full", 0.4), samples=samples)),
                "layer.bulkhead")  # fmt: skip
    assert v.status == status, v.message


# Each a tarpit or a lying histogram: (case, verdict, client ms, server costs, status, word)
TARPITS: list[tuple[str, str, float, Costs | None, str, str]] = [
    ("healthy 429s: 0.6 ms client, 0.2 ms server", "layer.edge", 0.6, FAST, "pass",
     "p90 0.6 ms client-side"),
    ("tarpit: 429s delayed 20 ms, both sides see it", "layer.edge", 20.4,
     {**FAST, "edge": [(40, 0.0202)]}, "fail", "p99 <= 25 ms server-side"),
    ("tarpit the histogram hides: 429s 20 ms client-side, 0.2 ms server-side", "layer.edge",
     20.4, FAST, "fail", "429s answered in p90 20.4 ms client-side, above p90 < 10ms"),
    ("tarpit in an older run dir (no server histogram)", "layer.edge", 20.4, None, "fail",
     "client-side"),
    ("sheds that lie: 25 ms client-side, 0.3 ms server-side", "layer.shedder", 25.0, FAST,
     "fail", "sheds answered in p90 25.0 ms client-side"),
    ("bulkhead_full 12 ms client-side: within 10 ms + its 5 ms designed wait", "layer.bulkhead",
     12.0, FAST, "pass", "p90 12.0 ms client-side"),
    ("bulkhead_full 20 ms client-side: beyond its designed wait", "layer.bulkhead", 20.0, FAST,
     "fail", "above p90 < 15ms (p90 < 10ms + 5 ms designed wait)"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "name", "client_ms", "costs", "status", "word"), TARPITS,
                         ids=[c[0] for c in TARPITS])  # fmt: skip
def test_every_rejection_is_judged_for_speed_on_both_sides(
    case: str, name: str, client_ms: float, costs: Costs | None, status: str, word: str
) -> None:
    samples = None if costs is None else served(costs)
    result = check(history(rows=_pure(_KIND[name], client_ms), samples=samples))
    v = verdict(result, name)
    assert v.status == status, v.message
    assert word in v.message, v.message
    if status == "fail":
        assert result.exit_code == 1


def test_client_side_speed_reads_a_percentile_that_generator_noise_leaves_alone() -> None:
    """A healthy run has the odd slow second client-side (a generator or loop hiccup):
    5% of the 429s at 45 ms do not fail p90 < 10ms; 15% do."""

    def mixed(slow: int) -> Callable[[RequestSecond], RequestSecond]:
        h = HdrHistogram(1, 60_000_000, 3)
        h.record_value(500, 100 - slow)
        h.record_value(45_000, slow)
        enc = h.encode().decode()
        return lambda r: dataclasses.replace(
            sec(r.t, ok=200, p99=60, rejected={"rate_limited": 100},
                decisions={"rate_limited": 100}),
            hist_rejected=enc)  # fmt: skip

    for slow, status in ((5, "pass"), (15, "fail")):
        rows = between(healthy_rows(), 20, 35, mixed(slow))
        timed = served({**FAST, "edge": [(100, 0.0002)]})  # the 100 429s a second, timed
        v = verdict(check(history(rows=rows, samples=timed)), "layer.edge")
        assert v.status == status, (slow, v.message)


def test_seconds_mixing_rejection_kinds_are_not_read_client_side() -> None:
    """Healthy rows mix 429s, 503s and sheds each second: no layer has a client figure."""
    for name in ("layer.edge", "layer.bulkhead", "layer.shedder"):
        v = verdict(check(history(samples=served(FAST))), name)
        assert v.status == "pass", v.message
        assert v.evidence["reject_latency_judged_on"] == "server"
        assert v.evidence["client_seconds"] == 0


def test_server_side_evidence_names_layer_window_count_and_bound() -> None:
    v = verdict(check(history(samples=served(FAST))), "layer.bulkhead")
    ev = v.evidence
    # 15 s of 40 less the first second after each onset (20, 22, 24 s: settle)
    assert (ev["server_layer"], ev["server_window"], ev["server_rejected"]) == (
        "auction", [5.0, 59.0], 480)  # fmt: skip
    assert ev["server_latency_ms"] == 0.5
    assert ev["server_bound"] == "p99 < 10ms (p99 < 5ms + 5 ms designed wait)"
    shed = verdict(check(history(samples=served(FAST))), "layer.shedder").evidence
    assert (shed["server_layer"], shed["server_bound"]) == ("impressions", "p99 < 5ms")


def test_bulkhead_without_a_designed_wait_gets_the_plain_bound() -> None:
    auction = {"limit": 12, "max_wait_ms": 0}
    sc = scenario(target={**STORM["target"], "config": {"auction": auction}})
    samples = served({"auction": [(40, 0.007)]})
    v = verdict(check(history(sc=sc, samples=samples)), "layer.bulkhead")
    assert v.status == "fail" and "above p99 < 5ms" in v.message


def test_tightened_server_reject_turns_pass_into_fail() -> None:
    h = history(samples=served({**FAST, "impressions": [(20, 0.0015)]}))
    assert verdict(check(h), "layer.shedder").status == "pass"
    strict = thresholds_from_checks({"server_reject": "p99 < 1ms"})
    assert verdict(check(h, strict), "layer.shedder").status == "fail"


def test_rejections_during_warmup_are_not_judged() -> None:
    rows = [dataclasses.replace(r, decisions={}) for r in healthy_rows()]  # no sheds after
    v = verdict(check(history(rows=rows, samples=served({"impressions": [(50, 0.5)]}, t0=0,
                                                       t1=5))), "layer.shedder")  # fmt: skip
    assert v.status == "pass", v.message
    assert v.evidence["server_rejected"] == 0


@pytest.mark.parametrize("kind", ["bulkhead_full", "shed"])
def test_without_server_data_the_client_side_figure_decides(kind: str) -> None:
    """Old run directories and external targets: rejection_buckets is None everywhere."""
    name = "layer.bulkhead" if kind == "bulkhead_full" else "layer.shedder"
    v = verdict(check(history(rows=_client_slow(kind))), name)
    assert v.status == "fail" and "client-side" in v.message
    assert v.evidence["reject_latency_judged_on"] == "client"
    assert "server_rejected" not in v.evidence
    fast = verdict(check(history(rows=_pure(kind, 0.5))), name)
    assert fast.status == "pass" and fast.evidence["reject_latency_judged_on"] == "client"


def test_one_sample_with_buckets_is_not_server_side_data() -> None:
    one = [s if s.t == 30 else dataclasses.replace(s, rejection_buckets=None) for s in served(FAST)]
    v = verdict(check(history(rows=_client_slow("shed"), samples=one)), "layer.shedder")
    assert v.evidence["reject_latency_judged_on"].startswith("client") and v.status == "fail"


# server_rejections on its own: differencing, restarts, failed scrapes
def _bk(**layers: Sequence[int]) -> dict[str, tuple[tuple[float, int], ...]]:
    return {k: tuple(zip((0.001, 0.01, math.inf), v, strict=True)) for k, v in layers.items()}


SERVER_ROWS: list[tuple[str, list[Sample], tuple[int, float | None] | None]] = [
    ("last minus first", [Sample(0.0, True, rejection_buckets=_bk(a=(50, 50, 50))),
                          Sample(1.0, True, rejection_buckets=_bk(a=(60, 80, 80))),
                          Sample(2.0, True, rejection_buckets=_bk(a=(148, 150, 150)))],
     (100, 10.0)),  # 98 of 100 under 1 ms: the p99 is in the 10 ms bucket
    ("a target restart counts from zero",
     [Sample(0.0, True, rejection_buckets=_bk(a=(0, 0, 0))),
      Sample(1.0, True, rejection_buckets=_bk(a=(100, 100, 100))),
      Sample(2.0, True, rejection_buckets={}),
      Sample(3.0, True, rejection_buckets=_bk(a=(0, 0, 2)))], (102, math.inf)),
    ("failed and unrecorded scrapes are skipped",
     [Sample(0.0, True, rejection_buckets=_bk(a=(0, 0, 0))), Sample(1.0, False),
      Sample(2.0, True), Sample(3.0, True, rejection_buckets=_bk(a=(100, 100, 100)))],
     (100, 1.0)),
    ("no rejections in the window", [Sample(0.0, True, rejection_buckets={}),
                                     Sample(1.0, True, rejection_buckets=_bk(b=(5, 5, 5)))],
     (0, None)),
    ("a single scrape is no data", [Sample(0.0, True, rejection_buckets=_bk(a=(5, 5, 5)))], None),
]  # fmt: skip


@pytest.mark.parametrize(("case", "samples", "expected"), SERVER_ROWS,
                         ids=[c[0] for c in SERVER_ROWS])  # fmt: skip
def test_server_rejections_difference_cumulative_buckets(
    case: str, samples: list[Sample], expected: tuple[int, float | None] | None
) -> None:
    got = server_rejections(samples, "a", 99.0)
    assert (None if got is None else (got.count, got.p_ms)) == expected


# --- fairness both ways: the edge bounds admissions from below, in every shape -------------
def _pubs_each(sent: int, through: int) -> Callable[[RequestSecond], RequestSecond]:
    pubs = {
        f"pub-{i}": {"sent": sent, "admitted": through, "rate_limited": sent - through}
        for i in range(1, 5)
    }
    limited = 4 * (sent - through)
    return lambda r: sec(
        r.t, ok=4 * through, p99=60, publishers=pubs,
        rejected={"rate_limited": limited} if limited else None,
        decisions={"rate_limited": limited} if limited else None,
    )  # fmt: skip


FAIRNESS: list[tuple[str, int, int, str]] = [
    # (case: each of 4 publishers at rate 150/s, burst 40 during the stress, sent, through)
    ("under its rate, a stray 429 a second", 75, 74, "pass"),
    ("over its rate, its own bucket lets its rate through", 200, 150, "pass"),
    ("under its rate, a few 429s a second (within burst + 1 s)", 75, 65, "pass"),
    ("under its rate, cut to half (a shared bucket)", 75, 37, "fail"),
    ("over its rate, a quarter of its rate through (a shared bucket)", 200, 37, "fail"),
]


@pytest.mark.parametrize(("case", "sent", "through", "status"), FAIRNESS,
                         ids=[c[0] for c in FAIRNESS])  # fmt: skip
def test_each_publisher_gets_what_its_own_bucket_owes_it(
    case: str, sent: int, through: int, status: str
) -> None:
    """Shape flash_crowd (not hot_publisher): the floor holds for every shape."""
    rows = between(healthy_rows(), 20, 35, _pubs_each(sent, through))
    v = verdict(check(history(rows=rows)), "layer.edge")  # fairness only: no server timing
    assert v.status == status, v.message
    floor = v.evidence["floors"]["pub-2"]
    assert floor["slack"] == 190.0  # burst 40 + one second at 150/s
    if status == "fail":
        assert "pub-1" in v.message and "short of" in v.message


def test_a_publisher_whose_burst_was_rejected_then_went_idle_is_owed_no_more() -> None:
    """500 sent in one second, 190 through (burst + rate), then silence: nothing owed."""
    pubs = {"pub-1": {"sent": 500, "admitted": 190, "rate_limited": 310}}
    quiet = {"pub-1": {"sent": 0, "admitted": 0, "rate_limited": 0}}
    rows = [
        dataclasses.replace(r, publishers=pubs if r.t == 20 else quiet if r.t > 20 else
                            r.publishers)
        for r in healthy_rows()
    ]  # fmt: skip
    v = verdict(check(history(rows=rows, samples=served(FAST))), "layer.edge")
    assert v.status == "pass", v.message


# --- the generator's send lateness (valid_run) ----------------------------------------------
def _late(sends: int, over_ms: Mapping[int, int]) -> Callable[[RequestSecond], RequestSecond]:
    """Rows whose generator noted `sends` arrivals, `over_ms[b]` of them later than b ms."""
    return lambda r: dataclasses.replace(r, late_sends=sends, late_over_ms=dict(over_ms))


def _lateness_history(stress_over: Mapping[int, int], **checks: Any) -> History:
    """Every second's bids noted (100/s; 200/s in stress, beside 100 impression notices,
    whose lateness is not noted): a little over 1 ms late, stress lateness as given."""
    rows = between(healthy_rows(), 0, 60, _late(100, {1: 2}))
    return history(rows=between(rows, 20, 35, _late(200, stress_over)))


def _judged(h: History, **checks: Any) -> CheckResult:
    return check(h, thresholds_from_checks({"slo": "p99 < 150ms", **checks}))


def test_a_generator_that_sends_everything_but_late_is_inconclusive_naming_the_phase() -> None:
    """A CPU-starved generator keeps sent == intended but sends 5% of the spike's arrivals
    over 10 ms late: its own delay would be judged as the service's stress latency."""
    result = check(_lateness_history({1: 80, 2: 50, 5: 30, 10: 10, 20: 3}))
    v = verdict(result, "valid_run", "stress")
    assert v.status == "inconclusive"
    assert "stress" in v.message and "5.00%" in v.message and "10 ms" in v.message
    assert "add --processes or workers, or lower the rate" in v.message
    assert v.evidence["late_share"] == 0.05 and v.evidence["held"] == 1.0
    assert v.evidence["lateness_sends"] == 15 * 200 and v.evidence["lateness_p99_at_most_ms"] == 50
    assert verdict(result, "valid_run", "baseline").status == "pass"
    assert result.exit_code == 3


def test_a_generator_with_half_a_percent_late_holds_its_rate() -> None:
    """0.5% of sends over 10 ms (1 in 200 each second) is within a 10 ms p99."""
    v = verdict(check(_lateness_history({1: 40, 2: 20, 5: 4, 10: 1})), "valid_run", "stress")
    assert v.status == "pass", v.message
    assert v.evidence["late_share"] == 0.005
    assert v.evidence["lateness_p99_at_most_ms"] == 10


def test_a_lateness_bound_between_the_counted_ones_is_read_at_the_one_below() -> None:
    """15 ms is not counted: it is read at 10 ms, overstating lateness, never understating
    it (2% over 10 ms, none over 20 ms: the p99 may be over 15 ms, so not held)."""
    h = _lateness_history({1: 30, 10: 4})
    v = verdict(_judged(h, generator_lateness_p99_ms=15), "valid_run", "stress")
    assert v.status == "inconclusive"
    assert "read at the 10 ms bound below it" in v.message
    assert v.evidence["lateness_read_at_ms"] == 10 and v.evidence["lateness_p99_bound_ms"] == 15


def test_a_tightened_lateness_bound_turns_pass_into_inconclusive() -> None:
    h = _lateness_history({1: 40, 2: 20, 5: 4, 10: 1})
    assert verdict(check(h), "valid_run", "stress").status == "pass"
    v = verdict(_judged(h, generator_lateness_p99_ms=2), "valid_run", "stress")
    assert v.status == "inconclusive" and "more than 2 ms late" in v.message


def test_rows_without_lateness_counts_skip_the_part_and_say_so() -> None:
    """An older run directory or a user's recorder: judged as before, never failed."""
    result = check(history())
    for phase in ("baseline", "stress", "recovery", "post"):
        v = verdict(result, "valid_run", phase)
        assert v.status == "pass"
        assert "no send-lateness counts" in v.evidence["lateness"]
        assert "late_share" not in v.evidence


def test_a_recorder_that_noted_no_send_skips_the_part_and_says_so() -> None:
    rows = between(healthy_rows(), 0, 60, _late(0, {}))
    v = verdict(check(history(rows=rows)), "valid_run", "stress")
    assert v.status == "pass" and "noted the lateness of no send" in v.evidence["lateness"]
