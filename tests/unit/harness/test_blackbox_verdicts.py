"""A user's own service judged as a black box: what cannot be judged is skipped with its
reason (never passed, never deciding the run), what can is judged from the outside, and
each verdict catches a realistic defect of such a service."""

from __future__ import annotations

import dataclasses
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from spikegate.harness.blackbox_verdicts import BREAKER_NO_FAULT, EDGE_SKIPPED, RSS_SKIPPED
from spikegate.harness.checkcmd import check_run, compare_runs
from spikegate.harness.checker import check
from spikegate.harness.history import History, RequestSecond, Sample
from spikegate.harness.run_verdicts import CLOCK_SKIPPED, KAFKA_SKIPPED
from spikegate.harness.scenario import Scenario
from spikegate.harness.verdicts import CheckResult, Verdict
from tests.unit.harness.test_checker import STORM, between, scenario, sec, verdict
from tests.unit.harness.test_history import SMOKE, write_run

# Phases as STORM's: warmup [0,5) baseline [5,20) stress [20,35) recovery [35,45) post [45,60)
BOX: dict[str, Any] = {
    **STORM,
    "name": "box",
    "target": {"kind": "command", "command": ["python", "app.py", "--port", "{port}"],
               "metrics": "/metrics"},
    "dependencies": [{"name": "db", "upstream": "127.0.0.1:5432"}],
    "faults": [{"at_s": 22, "for_s": 10, "fault": "latency", "proxy": "db",
                "params": {"latency_ms": 100}}],
}  # fmt: skip
LAYERS = ("layer.edge", "layer.bulkhead", "layer.shedder", "layer.breaker")


def box(**sections: Any) -> Scenario:
    return scenario(BOX, **sections)


def box_rows(rej_ms: float = 3.0, rejected: str = "overloaded") -> list[RequestSecond]:
    """Baseline 100 ok/s at 20 ms; stress 300/s of which 100 are designed rejections (503s
    by default, no decision header: the service's own [outcomes])."""
    return [
        sec(t, ok=200, p99=60.0, rejected={rejected: 100}, rej_p99=rej_ms,
            decisions={"none": 300}, publishers={})
        if 20 <= t < 35 else sec(t, decisions={"none": 100}, publishers={})
        for t in range(60)
    ]  # fmt: skip


def box_samples(**fields: Any) -> list[Sample]:
    """One sample a second of what the sampler kept from the service's /metrics."""
    return [Sample(float(t), ok=True, **fields) for t in range(60)]


def judge(
    sc: Scenario | None = None,
    rows: Iterable[RequestSecond] | None = None,
    samples: Iterable[Sample] | None = None,
) -> CheckResult:
    return check(
        History.build(
            sc or box(),
            requests=box_rows() if rows is None else rows,
            samples=box_samples() if samples is None else samples,
        )
    )


def statuses(result: CheckResult) -> dict[tuple[str, str], str]:
    return {(v.name, v.phase): v.status for v in result.verdicts}


# --- a healthy black box --------------------------------------------------------------------
def test_a_healthy_black_box_passes_with_what_it_cannot_show_skipped() -> None:
    result = judge()
    assert result.exit_code == 0 and result.status == "pass"
    skipped = {v.name: v.message for v in result.verdicts if v.status == "skipped"}
    assert set(skipped) == {"bounded_resources", *LAYERS}
    assert skipped["layer.edge"] == EDGE_SKIPPED
    assert "no [metrics] inflight mapping" in skipped["layer.bulkhead"]
    assert "no [metrics] queue_depth mapping" in skipped["layer.shedder"]
    assert "no [metrics] breaker_state mapping" in skipped["layer.breaker"]
    assert RSS_SKIPPED in skipped["bounded_resources"]
    assert not [v for v in result.verdicts if v.status == "inconclusive"]
    judged = {v.name for v in result.verdicts if v.status == "pass"}
    assert judged == {
        "valid_run", "steady_state", "no_unexpected_errors", "graceful_degradation",
        "time_to_detect", "time_to_recover", "no_silent_loss",
    }  # fmt: skip
    assert result.counts() == {"pass": 12, "fail": 0, "inconclusive": 0, "skipped": 5}


def test_no_silent_loss_passes_on_the_accounting_with_the_kafka_part_skipped() -> None:
    v = verdict(judge(), "no_silent_loss")
    assert v.status == "pass"
    assert "every sent request has one outcome" in v.message and KAFKA_SKIPPED in v.message
    assert v.evidence["kafka_read_back"] == KAFKA_SKIPPED


def test_valid_run_says_the_clock_check_is_left_out_without_a_duration_histogram() -> None:
    assert verdict(judge(), "valid_run", "run").evidence["clock_check"] == CLOCK_SKIPPED


def test_the_detection_is_the_designed_rejections_the_client_saw() -> None:
    v = verdict(judge(), "time_to_detect")
    assert v.status == "pass" and v.evidence["detect_s"] == 0.0
    assert "designed rejections {'overloaded': 100}" in v.message


def test_an_external_service_is_judged_the_same_way() -> None:
    ext = scenario({**BOX, "target": {"kind": "external", "url": "http://127.0.0.1:9"},
                    "dependencies": [{"name": "db", "upstream": "127.0.0.1:5432",
                                      "listen": "127.0.0.1:15432"}]})  # fmt: skip
    assert statuses(judge(ext)) == statuses(judge())


def test_a_command_service_is_not_held_to_the_reference_targets_limits() -> None:
    """Its 100 in flight and 20000 queued mean nothing against the reference target's
    default auction limit (64) and queue cap (10000): its limits are its own."""
    result = judge(samples=box_samples(auction_inflight=100.0, queue_depth=20_000.0))
    assert verdict(result, "bounded_resources").status == "skipped"
    assert verdict(result, "layer.bulkhead").status == "skipped"
    assert result.exit_code == 0


# --- each verdict catches a defect of a black box -------------------------------------------
def test_slow_503s_fail_graceful_degradation_on_client_side_rejection_speed() -> None:
    """A service that queues a request before refusing it: its 503s take 40 ms, within the
    generic fast_reject (p99 < 75 ms) but not what a rejection costs (client_reject)."""
    v = verdict(judge(rows=box_rows(rej_ms=40.0)), "graceful_degradation")
    assert v.status == "fail"
    assert "designed rejections answered in p90 40.0 ms client-side, above p90 < 10ms" in (
        v.message
    )
    assert v.evidence["client_rejected"] == 13 * 100  # the settle after 20 s and 22 s aside
    assert verdict(judge(), "graceful_degradation").evidence["client_reject_latency_ms"] == 3.0


def test_the_reference_target_keeps_rejection_speed_in_its_layers() -> None:
    """The same slow rejections do not fail the reference target's graceful_degradation:
    its layers time them, per kind, on both sides (test_checker.py)."""
    ref = check(History.build(scenario(), requests=box_rows(rej_ms=40.0)))
    v = verdict(ref, "graceful_degradation")
    assert "client_reject" not in v.evidence and "client-side" not in v.message


def test_timeouts_under_a_fault_fail_no_unexpected_errors() -> None:
    """A service that waits on a slow dependency until the client gives up."""
    rows = between(box_rows(), 22, 32, lambda r: sec(
        r.t, ok=200, p99=60.0, rejected={"overloaded": 60}, failed={"timeout": 40},
        publishers={}))  # fmt: skip
    v = verdict(judge(rows=rows), "no_unexpected_errors")
    assert v.status == "fail" and v.evidence["by_class"] == {"timeout": 400}
    assert "fast designed rejections (statuses 429, 503, [outcomes] rejected)" in v.message


def test_no_designed_rejections_while_overloaded_fails_time_to_detect() -> None:
    """A service with no protection: overloaded, it answers everything, slowly."""
    rows = between(box_rows(), 20, 35, lambda r: sec(r.t, ok=300, p99=400.0, publishers={}))
    v = verdict(judge(rows=rows), "time_to_detect")
    assert v.status == "fail" and "no protective decision (429/503" in v.message


def test_a_service_that_stays_slow_after_the_fault_fails_time_to_recover() -> None:
    rows = between(box_rows(), 35, 60, lambda r: sec(r.t, p99=400.0, publishers={}))
    assert verdict(judge(rows=rows), "time_to_recover").status == "fail"


def test_a_recorder_that_loses_outcomes_fails_no_silent_loss() -> None:
    rows = between(box_rows(), 40, 41, lambda r: dataclasses.replace(r, sent=r.sent + 7))
    v = verdict(judge(rows=rows), "no_silent_loss")
    assert v.status == "fail" and "without exactly one outcome" in v.message


def test_with_no_request_recorded_no_silent_loss_has_nothing_to_judge() -> None:
    result = judge(rows=[])
    assert verdict(result, "no_silent_loss").status == "skipped"
    assert result.status == "inconclusive"  # valid_run: no load was recorded


def test_a_generator_that_drops_requests_from_its_own_record_fails_valid_run() -> None:
    """The harness's schedule holds for a black box too: a stress that recorded 200 of the
    300 intended arrivals a second is missing requests from the generator's own count."""
    rows = between(box_rows(), 20, 35, lambda r: sec(
        r.t, ok=150, p99=60.0, rejected={"overloaded": 50}, publishers={}))  # fmt: skip
    v = verdict(judge(rows=rows), "valid_run", "stress")
    assert v.status == "fail" and "schedule calls for 4500" in v.message


# --- bounded_resources and layer.bulkhead: [metrics] inflight -------------------------------
INFLIGHT = {"inflight": "http_inflight"}


def _inflight(peak: float, at: tuple[int, int] = (24, 30), base: float = 10.0) -> list[Sample]:
    return [
        Sample(float(t), ok=True, auction_inflight=peak if at[0] <= t < at[1] else base)
        for t in range(60)
    ]


def test_a_mapped_in_flight_above_its_bound_fails_bulkhead_and_bounded_resources() -> None:
    """A concurrency limit that does not hold: 40 requests in flight, the limit is 32."""
    sc = box(metrics=INFLIGHT, checks={"inflight_max": 32})
    result = judge(sc, samples=_inflight(40.0))
    for name in ("layer.bulkhead", "bounded_resources"):
        v = verdict(result, name)
        assert v.status == "fail", name
        assert "in-flight (http_inflight) reached 40 at t=24s > checks.inflight_max 32" in (
            v.message
        )
    ok = judge(sc, samples=_inflight(32.0))
    assert verdict(ok, "layer.bulkhead").status == "pass"
    assert verdict(ok, "bounded_resources").status == "pass"
    assert ok.exit_code == 0


def test_an_unmapped_in_flight_is_skipped_not_passed() -> None:
    v = verdict(judge(box(checks={"inflight_max": 32}), samples=_inflight(40.0)), "layer.bulkhead")
    assert v.status == "skipped"
    assert v.message == (
        "no [metrics] inflight mapping: map your service's in-flight gauge to judge it"
    )


def test_a_mapped_in_flight_without_a_bound_is_skipped_naming_the_bound() -> None:
    result = judge(box(metrics=INFLIGHT), samples=_inflight(40.0))
    v = verdict(result, "layer.bulkhead")
    assert v.status == "skipped" and "no checks.inflight_max" in v.message
    assert "its peak was 40 at t=24s" in v.message
    assert result.exit_code == 0


def test_a_mapped_metric_the_service_does_not_export_is_inconclusive() -> None:
    """A typo in the mapping: the harness could not measure what the scenario asked."""
    result = judge(box(metrics=INFLIGHT, checks={"inflight_max": 32}))
    v = verdict(result, "layer.bulkhead")
    assert v.status == "inconclusive"
    assert "'http_inflight' was in none of the 60 successful scrapes of /metrics" in v.message
    assert verdict(result, "bounded_resources").status == "inconclusive"
    assert result.exit_code == 3


def test_slow_503s_at_the_limit_fail_layer_bulkhead() -> None:
    """At its limit the service should refuse at once; this one waits 40 ms for a slot."""
    sc = box(metrics=INFLIGHT, checks={"inflight_max": 32})
    v = verdict(judge(sc, rows=box_rows(rej_ms=40.0), samples=_inflight(32.0, (20, 36))),
                "layer.bulkhead")  # fmt: skip
    assert v.status == "fail"
    assert "designed 503s at the limit answered in p90 40.0 ms client-side" in v.message
    # below the limit the same 503s are not the bulkhead's
    v = verdict(judge(sc, rows=box_rows(rej_ms=40.0), samples=_inflight(20.0, (20, 36))),
                "layer.bulkhead")  # fmt: skip
    assert "no second of designed 503s at the limit to time" in v.message


def test_429s_at_the_limit_are_not_timed_as_the_bulkheads_503s() -> None:
    sc = box(metrics=INFLIGHT, checks={"inflight_max": 32})
    v = verdict(
        judge(sc, rows=box_rows(rej_ms=40.0, rejected="rate_limited"),
              samples=_inflight(32.0, (20, 36))), "layer.bulkhead")  # fmt: skip
    assert v.status == "pass" and v.evidence["busy_seconds"] == []


# --- bounded_resources and layer.shedder: [metrics] queue_depth ------------------------------
QUEUE = {"queue_depth": "work_queue"}


def _queue(depth: float, at: tuple[int, int] = (22, 32)) -> list[Sample]:
    return [
        Sample(float(t), ok=True, queue_depth=depth if at[0] <= t < at[1] else 0.0)
        for t in range(60)
    ]


def test_a_queue_past_its_cap_fails_layer_shedder() -> None:
    """A shedder that lets its queue grow to 900 with a cap of 500."""
    sc = box(metrics=QUEUE, checks={"queue_max": 500})
    v = verdict(judge(sc, samples=_queue(900.0)), "layer.shedder")
    assert v.status == "fail" and "queue depth (work_queue) reached 900" in v.message
    assert verdict(judge(sc, samples=_queue(400.0)), "layer.shedder").status == "pass"


def test_sheds_answered_slowly_while_the_queue_held_work_fail_layer_shedder() -> None:
    sc = box(metrics=QUEUE, checks={"queue_max": 500})
    rows = box_rows(rej_ms=40.0, rejected="shed")
    v = verdict(judge(sc, rows=rows, samples=_queue(100.0, (20, 36))), "layer.shedder")
    assert v.status == "fail"
    assert "designed 503s while the queue held work answered in p90 40.0 ms" in v.message


# --- layer.breaker: [metrics] breaker_state -------------------------------------------------
BREAKER = {"breaker_state": "cb_state"}


def _breakers(state_at: Any) -> list[Sample]:
    return [Sample(float(t), ok=True, breakers={"db": state_at(t)}) for t in range(60)]


def _opens_and_closes(t: int) -> str:
    return "open" if 23 <= t < 32 else "half_open" if t == 32 else "closed"


BREAKER_CASES: list[tuple[str, Any, dict[str, Any], str, str]] = [
    ("opens in the fault and closes after it", _opens_and_closes, {}, "pass",
     "db opened at t=23s in the fault on db [22, 32) s, closed at t=33s"),
    ("never opens", lambda t: "closed", {}, "fail",
     "no breaker opened during any fault on a dependency (db [22, 32) s); states seen: closed"),
    ("stuck open after the fault", lambda t: "open" if t >= 23 else "closed", {}, "fail",
     "breaker db opened at t=23s in the fault on db [22, 32) s and is still open at t=45s"),
    ("closes late", lambda t: "open" if 23 <= t < 40 else "closed", {"recover": "within 5s"},
     "fail", "breaker db closed only at t=40s, not within 5s of the end of the fault on db"),
    ("opens again after closing", lambda t: "open" if 23 <= t < 33 or t >= 42 else "closed",
     {}, "fail", "breaker db is open again at t=45s"),
    ("opens on healthy traffic", lambda t: "open" if t in (8, 9) else _opens_and_closes(t),
     {}, "fail", "at base load, before any fault, breaker db was open at t=8s"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "state_at", "checks", "status", "words"), BREAKER_CASES,
                         ids=[c[0] for c in BREAKER_CASES])  # fmt: skip
def test_layer_breaker_from_the_mapped_breaker_gauge(
    case: str, state_at: Any, checks: dict[str, Any], status: str, words: str
) -> None:
    sc = box(metrics=BREAKER, checks=checks)
    v = verdict(judge(sc, samples=_breakers(state_at)), "layer.breaker")
    assert v.status == status, v.message
    assert words in v.message


def test_a_breaker_with_no_fault_to_exercise_it_is_skipped() -> None:
    v = verdict(judge(box(metrics=BREAKER, faults=[]), samples=_breakers(lambda t: "closed")),
                "layer.breaker")  # fmt: skip
    assert v.status == "skipped" and v.message == BREAKER_NO_FAULT


def test_a_mapped_breaker_never_sampled_is_inconclusive() -> None:
    v = verdict(judge(box(metrics=BREAKER)), "layer.breaker")
    assert v.status == "inconclusive" and "'cb_state' was in no successful scrape" in v.message


def test_a_mapped_breaker_opening_counts_as_protection_in_time_to_detect() -> None:
    rows = between(box_rows(), 20, 35, lambda r: sec(r.t, ok=300, p99=400.0, publishers={}))
    sc = box(metrics=BREAKER)
    v = verdict(judge(sc, rows=rows, samples=_breakers(_opens_and_closes)), "time_to_detect")
    assert v.status == "pass" and "breaker db left closed" in v.message


# --- the proxies' own counters in the evidence ------------------------------------------------
def _with_proxy_counters(samples: list[Sample]) -> list[Sample]:
    return [
        dataclasses.replace(
            s,
            proxy_bytes={"db": {"received": 1000, "sent": 4000 if s.t < 23 else 100}},
            proxy_connections={"db": {"accepted": 1, "open": 8 if s.t == 30 else 4}},
        )
        for s in samples
    ]


def test_proxy_counters_are_evidence_of_bounded_resources_and_layer_breaker() -> None:
    samples = _with_proxy_counters(_breakers(_opens_and_closes))
    result = judge(box(metrics=BREAKER), samples=samples)
    traffic = verdict(result, "bounded_resources").evidence["proxies"]["db"]
    assert traffic == {
        "bytes_received": 60_000, "bytes_sent": 23 * 4000 + 37 * 100,
        "connections_accepted": 60, "connections_open_max": 8, "connections_open_max_t": 30.0,
    }  # fmt: skip
    (fault,) = verdict(result, "layer.breaker").evidence["faults"]
    assert fault["proxy_traffic_while_open"]["seconds"] == 10  # open 23..31, half-open 32
    assert fault["proxy_traffic_while_open"]["db"]["bytes_sent"] == 10 * 100


# --- skipped in CheckResult and the reports ---------------------------------------------------
def test_skipped_verdicts_never_decide_the_run() -> None:
    skip = Verdict("layer.edge", "stress", "skipped", "no mapping")
    assert CheckResult([skip, Verdict("x", "run", "pass", "ok")], {}).exit_code == 0
    assert CheckResult([skip, Verdict("x", "run", "fail", "no")], {}).exit_code == 1
    assert CheckResult([skip, Verdict("x", "run", "inconclusive", "?")], {}).exit_code == 3
    nothing = CheckResult([skip], {})
    assert (nothing.status, nothing.exit_code) == ("inconclusive", 3)  # nothing was judged


def _box_run(tmp_path: Path, inflight: float | None = None) -> Path:
    """A black box's run directory: its rows, and samples that scraped nothing of the
    service (no metrics path) but carry the proxies' counters; with `inflight`, samples of
    its in-flight gauge, mapped and bounded at 32."""
    target: dict[str, Any] = {"kind": "command", "command": ["python", "app.py", "{port}"]}
    extra: dict[str, Any] = {}
    if inflight is not None:
        target["metrics"] = "/metrics"
        extra = {"metrics": INFLIGHT, "checks": {"inflight_max": 32}}
    sc = scenario({
        **SMOKE, **extra, "target": target,
        "dependencies": [{"name": "db", "start": "redis"}],
        "faults": [{"at_s": 8, "for_s": 5, "fault": "latency", "proxy": "db",
                    "params": {"latency_ms": 20}}],
    })  # fmt: skip
    samples = [
        {"t": float(t), "ok": False, "scraped": False, "error": "no metrics path",
         "proxy_bytes": {"db": {"received": 500 + t, "sent": 2000}},
         "proxy_connections": {"db": {"accepted": 0, "open": 3}}}
        for t in range(20)
    ]  # fmt: skip
    if inflight is not None:
        samples = [
            {**r, "ok": True, "scraped": True, "auction_inflight": inflight} for r in samples
        ]
    name = "run" if inflight is None else f"run-{inflight:g}"
    return write_run(tmp_path / name, sc, samples=samples, impressions=False)


def test_a_black_box_run_directory_is_judged_and_reported_with_its_skips(tmp_path: Path) -> None:
    run = _box_run(tmp_path)
    out = io.StringIO()
    result = check_run(run, (), Console(file=out, width=300, color_system=None))
    assert result.exit_code == 0, [(v.name, v.status, v.message) for v in result.verdicts]
    skipped = [v for v in result.verdicts if v.status == "skipped"]
    assert {v.name for v in skipped} == {"bounded_resources", *LAYERS}
    text = out.getvalue()
    assert "PASS: 0 failed, 0 inconclusive, 12 passed, 5 skipped (exit 0)" in text
    assert EDGE_SKIPPED[:60] in text.replace("\n", "")

    report = json.loads((run / "report.json").read_text())
    assert report["counts"] == {"pass": 12, "fail": 0, "inconclusive": 0, "skipped": 5}
    by_name = {v["name"]: v for v in report["verdicts"]}
    assert by_name["layer.edge"]["status"] == "skipped"
    assert by_name["bounded_resources"]["evidence"]["proxies"]["db"]["connections_open_max"] == 3

    suite = ET.parse(run / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("skipped") == "5" and suite.get("failures") == "0"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    edge = cases["layer.edge"].find("skipped")
    assert edge is not None and edge.get("message") == f"skipped: {EDGE_SKIPPED}"
    assert cases["valid_run"].find("skipped") is None

    summary = (run / "summary.md").read_text()
    assert "PASS: 0 failed, 0 inconclusive, 12 passed, 5 skipped of 17 verdicts (exit 0)" in summary
    rows = [line for line in summary.splitlines() if line.startswith("| layer.edge |")]
    assert rows and "| SKIPPED |" in rows[0]
    table = summary.split("### Key figures")[0]
    assert table.index("| SKIPPED |") > table.rindex("| PASS |")  # judged ones first

    html = (run / "report.html").read_text()
    edge_row = html.split("<code>layer.edge</code>", 1)[1].split("</tr>", 1)[0]
    assert '<td class="skipped">SKIPPED</td>' in edge_row and "PASS" not in edge_row
    assert "<em>not judged:</em>" in edge_row
    chart = html.split('id="chart-proxy-bytes"', 1)[1].split("</figure>", 1)[0]
    assert "<svg" in chart and "db received" in chart and "db sent" in chart


def test_compare_flags_a_verdict_skipped_in_a_and_failed_in_b(tmp_path: Path) -> None:
    """B mapped the service's in-flight gauge and it broke its bound: a regression. A run
    that lost the evidence for a verdict it passed (skipped in B) is a change, not one."""
    unmapped, over, within = (_box_run(tmp_path, x) for x in (None, 40.0, 20.0))
    console = Console(file=io.StringIO(), width=200, record=True)
    out = tmp_path / "cmp.json"
    assert compare_runs(unmapped, over, console, out) == 1
    changes = json.loads(out.read_text())["verdict_changes"]
    assert {"verdict": "layer.bulkhead/stress", "a": "skipped", "b": "fail"} in changes
    assert compare_runs(within, unmapped, console, out) == 0
    changes = json.loads(out.read_text())["verdict_changes"]
    assert {"verdict": "layer.bulkhead/stress", "a": "pass", "b": "skipped"} in changes
