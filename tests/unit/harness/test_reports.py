"""Reports: report.json, junit.xml, summary.md and report.html from a synthetic run directory."""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram
from matplotlib.backends.backend_agg import FigureCanvasAgg
from rich.console import Console

from spikegate.contract.rundir import (
    EVENTS_FILE,
    IMPRESSIONS_FILE,
    META_FILE,
    REQUESTS_FILE,
    SAMPLES_FILE,
    SCENARIO_FILE,
    JsonlWriter,
)
from spikegate.harness import charts
from spikegate.harness.reports import (
    REPORT_FILES,
    build_report,
    load_report,
    print_verdicts,
    render_junit,
    write_reports,
)
from spikegate.harness.reports_data import load_run_data
from spikegate.harness.scenario import load_scenario
from spikegate.harness.verdicts import CheckResult, Verdict

WORKFLOW = Path(__file__).resolve().parents[3] / ".github" / "workflows" / "spikegate-gate.yml"


# --- builders following spikegate/contract/rundir.py -------------------------------------
def hist(latencies_ms: list[float]) -> str | None:
    if not latencies_ms:
        return None
    h = HdrHistogram(1, 60_000_000, 3)
    for ms in latencies_ms:
        h.record_value(int(ms * 1000))
    return h.encode().decode("ascii")


def request_row(t: float, *, rps: int, spike: bool) -> dict[str, Any]:
    intended = rps * (4 if spike else 1)
    if spike:
        outcomes = {"ok": rps, "no_bid": 5, "rate_limited": intended - rps - 10, "shed": 3,
                    "error_5xx": 1}  # fmt: skip
    else:
        outcomes = {"ok": intended - 5, "no_bid": 5}
    n = outcomes["ok"] + outcomes["no_bid"]
    admitted = [10.0 + 20.0 * i / n for i in range(n)]  # uniform 10..30 ms
    designed = outcomes.get("rate_limited", 0) + outcomes.get("shed", 0)
    rejected = [0.8 + 0.01 * (i % 10) for i in range(designed)]
    return {
        "t": t,
        "intended": intended,
        "sent": intended - (1 if spike else 0),
        "outcomes": outcomes,
        "decisions": {"none": len(admitted), "rate_limited": len(rejected)},
        "endpoints": {"bid": outcomes},
        "publishers": {"pub-1": {"sent": intended, "admitted": len(admitted), "rate_limited": 0}},
        "hist_admitted": hist(admitted),
        "hist_rejected": hist(rejected),
        "admitted_p50_ms": 20.0,
        "admitted_p99_ms": 29.0,
        "rejected_p99_ms": 0.9,
        "max_lateness_ms": 1.5,
        "cpu_percent": 30.0,
        "processes": 1,
    }


def sample_row(t: float, *, spike: bool, fault: bool) -> dict[str, Any]:
    if t == 7.0:
        return {"t": t, "ok": False}  # a failed scrape
    return {
        "t": t,
        "ok": True,
        "auction_inflight": 11.0 if spike else 3.0,
        "auction_limit": 12.0,
        "auction_limit_ceiling": 12.0,
        "auction_waiting": 2.0 if spike else 0.0,
        "queue_depth": 350.0 if spike else 10.0,
        "queue_max_depth": 400.0,
        "queue_sojourn_ms": 4.0,
        "breakers": {"dsp-1": "open" if fault else "closed", "dsp-2": "closed"},
        "decisions_total": {"edge:rate_limited": int(t) * 10},
        "requests_total": {"bid:200:admitted": int(t) * 100},
        "impressions": {"enqueued": int(t) * 50},
        "rss_bytes": 80e6 + t * 1e5,
        "loop_lag_ms": 0.5,
        "loop_lag_max_ms": 2.0,
        "scrape_ms": 3.0,
    }


SCENARIO_TOML = """
name = "synthetic"
seed = 7
[load]
shape = "flash_crowd"
duration_s = 60
warmup_s = 5
base_rps = 50
peak_rps = 200
spike_at_s = 20
spike_for_s = 15
[[faults]]
at_s = 22
for_s = 10
fault = "dsp_latency"
proxy = "dsp-1"
params = { latency_ms = 250 }
[phases]
recovery_s = 10
"""


def make_run_dir(root: Path, *, samples: bool = True, seconds: int = 60) -> Path:
    run = root / "20250101T000000Z-synthetic"
    run.mkdir()
    (run / SCENARIO_FILE).write_text(SCENARIO_TOML)
    meta = {"scenario": "synthetic", "seed": 7, "t0_epoch": 1_735_689_600.0,
            "started_utc": "2025-01-01T00:00:00+00:00", "ended_utc": "2025-01-01T00:01:00+00:00",
            "spikegate_version": "0.1.0", "argv": ["run", "synthetic"], "status": "complete",
            "components": {"target": {"url": "http://127.0.0.1:40001", "pid": 1,
                                      "log": "logs/target.log"}}}  # fmt: skip
    (run / META_FILE).write_text(json.dumps(meta))
    with JsonlWriter(run / REQUESTS_FILE) as w:
        for t in range(seconds):
            w.write(request_row(float(t), rps=50, spike=20 <= t < 35))
    if samples:
        with JsonlWriter(run / SAMPLES_FILE) as w:
            for t in range(seconds):
                w.write(sample_row(float(t), spike=20 <= t < 35, fault=24 <= t < 34))
    events = [{"t": 0.0, "kind": "run_start"}]
    for name, a, b in [("warmup", 0, 5), ("baseline", 5, 20), ("stress", 20, 35),
                       ("recovery", 35, 45), ("post", 45, 60)]:  # fmt: skip
        events.append({"t": float(a), "kind": "phase", "name": name, "start_t": a, "end_t": b})
    events += [
        {"t": 22.0, "kind": "fault_start", "id": "f1", "proxy": "dsp-1", "fault": "dsp_latency",
         "params": {"latency_ms": 250}, "source": "timeline"},
        {"t": 32.0, "kind": "fault_stop", "id": "f1", "proxy": "dsp-1", "fault": "dsp_latency"},
        {"t": 40.0, "kind": "fault_start", "id": "m1", "proxy": "redis", "fault": "redis_down",
         "params": {}, "source": "manual"},
        {"t": 43.0, "kind": "fault_stop", "id": "m1"},
        {"t": 60.0, "kind": "run_end"},
    ]  # fmt: skip
    with JsonlWriter(run / EVENTS_FILE) as w:
        for e in sorted(events, key=lambda e: e["t"]):
            w.write(e)
    impressions = {"acked": 1000, "found": 998, "missing": 2, "missing_sample": ["a", "b"],
                   "duplicates_in_topic": 3, "read_back_s": 1.2, "complete": True,
                   "error": None}  # fmt: skip
    (run / IMPRESSIONS_FILE).write_text(json.dumps(impressions))
    return run


def make_result() -> CheckResult:
    verdicts = [
        Verdict("valid_run", "run", "pass", "generator held 99.8% of the intended rate",
                {"held_ratio": 0.998}),
        Verdict("steady_state", "baseline", "pass", "p99 21 ms < 150 ms", {"p99_ms": 21.0}),
        Verdict("graceful_degradation", "stress", "fail",
                "admitted p99 412 ms > max(150 ms, 3 x 21 ms) | windows 24-31",
                {"p99_ms": 412.0, "worst_windows": [24, 25, 31], "limit_ms": 150.0}),
        Verdict("time_to_detect", "stress", "pass", "first protective decision 0.4 s after start",
                {"time_to_detect_s": 0.4}),
        Verdict("time_to_recover", "recovery", "inconclusive",
                "too few samples in recovery <3 of 10> [red]x[/red]", {"samples": 3, "needed": 10}),
        Verdict("no_silent_loss", "run", "fail", "2 acked impressions missing from Kafka",
                {"missing": 2, "missing_sample": ["a", "b"], "ratio": float("nan")}),
    ]  # fmt: skip
    return CheckResult(verdicts=verdicts, thresholds={"slo": "p99 < 150ms", "hold": 3})


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run_dir(tmp_path)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The reports of one synthetic run, written once for the read-only tests."""
    return write_reports(make_run_dir(tmp_path_factory.mktemp("run")), None, make_result())


# --- all files ----------------------------------------------------------------------------------
def test_write_reports_writes_the_four_files_into_the_run_dir(written: dict[str, Path]) -> None:
    run_dir = written["report.json"].parent
    assert set(written) == set(REPORT_FILES)
    for name, path in written.items():
        assert path == run_dir / name
        assert path.stat().st_size > 0
    assert not list(run_dir.glob(".*.tmp"))


def test_write_reports_refuses_a_path_that_is_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="run_dir"):
        write_reports(tmp_path / "nope", None, make_result())


# --- report.json --------------------------------------------------------------------------------
def test_report_json_round_trips_to_the_same_check_result(written: dict[str, Path]) -> None:
    result = make_result()
    data, again = load_report(written["report.json"])
    assert [v.name for v in again.verdicts] == [v.name for v in result.verdicts]
    assert [v.status for v in again.verdicts] == [v.status for v in result.verdicts]
    assert again.status == result.status == "fail"
    assert again.thresholds == result.thresholds
    assert again.verdicts[2].evidence["worst_windows"] == [24, 25, 31]
    assert data["verdicts"][5]["evidence"]["ratio"] is None  # NaN is not JSON: written as null
    assert data == json.loads(json.dumps(data))


def test_report_json_carries_scenario_seed_phases_and_key_figures(
    written: dict[str, Path],
) -> None:
    data = json.loads(written["report.json"].read_text())
    assert (data["scenario"], data["seed"], data["status"], data["exit_code"]) == (
        "synthetic", 7, "fail", 1)  # fmt: skip
    assert data["meta"]["started_utc"].startswith("2025-01-01")
    assert [p["name"] for p in data["phases"]] == [
        "warmup", "baseline", "stress", "recovery", "post"]  # fmt: skip
    base = data["phases"][1]["figures"]
    stress = data["phases"][2]["figures"]
    assert base["offered_rps"] == pytest.approx(50.0)
    assert base["goodput_rps"] == pytest.approx(50.0)
    assert stress["offered_rps"] == pytest.approx(200.0)
    assert stress["sent_rps"] == pytest.approx(199.0)
    assert stress["goodput_rps"] == pytest.approx(55.0)
    assert stress["outcome_shares"]["rate_limited"] == pytest.approx(140 / 199, abs=1e-6)
    assert stress["failure_share"] == pytest.approx(1 / 199, abs=1e-6)
    assert 19.5 <= base["admitted_p50_ms"] <= 20.5
    assert 29.0 <= base["admitted_p99_ms"] <= 30.0
    assert stress["rejected_p99_ms"] == pytest.approx(0.89, abs=0.01)
    assert stress["max_inflight"] == 11.0 and stress["max_queue_depth"] == 350.0
    assert data["key_figures"]["time_to_detect_s"] == 0.4
    assert data["key_figures"]["impressions"]["acked"] == 1000
    assert data["key_figures"]["impressions"]["found"] == 998
    assert data["stress_window"] == [20, 35]
    assert [(f["label"], f["start_s"], f["end_s"]) for f in data["faults"]] == [
        ("dsp_latency on dsp-1", 22.0, 32.0), ("redis_down on redis", 40.0, 43.0)]  # fmt: skip


# --- junit.xml ----------------------------------------------------------------------------------
def test_junit_has_one_testcase_per_verdict_with_classname_per_phase(
    written: dict[str, Path],
) -> None:
    root = ET.parse(written["junit.xml"]).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        (f"spikegate.synthetic.{v.phase}", v.name) for v in make_result().verdicts
    ]
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("6", "2", "1")
    assert suite.get("errors") == "0" and float(suite.get("time") or -1) == 60.0
    assert suite.get("timestamp") == "2025-01-01T00:00:00"


def test_junit_failures_carry_message_and_evidence_and_inconclusive_is_skipped(
    written: dict[str, Path],
) -> None:
    suite = ET.parse(written["junit.xml"]).getroot().find("testsuite")
    assert suite is not None
    by_name = {c.get("name"): c for c in suite.findall("testcase")}
    failure = by_name["graceful_degradation"].find("failure")
    assert failure is not None
    assert failure.get("message", "").startswith("admitted p99 412 ms")
    assert '"worst_windows"' in (failure.text or "") and "412.0" in (failure.text or "")
    skipped = by_name["time_to_recover"].find("skipped")
    assert skipped is not None and "too few samples" in skipped.get("message", "")
    assert by_name["valid_run"].find("failure") is None
    assert by_name["valid_run"].find("skipped") is None


def test_junit_survives_control_characters_and_markup_in_messages(run_dir: Path) -> None:
    bad = Verdict("layer.edge", "stress", "fail", "pub-1 <&> \x07 bell", {"x": "\x1b[31m"})
    report = build_report(load_run_data(run_dir), CheckResult([bad], {}))
    root = ET.fromstring(render_junit(report))
    failure = root.find("testsuite/testcase/failure")
    assert failure is not None and failure.get("message") == "pub-1 <&> ? bell"


# --- summary.md ---------------------------------------------------------------------------------
def test_summary_has_the_status_and_every_failing_verdict(written: dict[str, Path]) -> None:
    text = written["summary.md"].read_text()
    assert "FAIL: 2 failed, 1 inconclusive, 3 passed of 6 verdicts (exit 1)" in text
    for v in make_result().failed():
        assert v.name in text
    assert "max(150 ms, 3 x 21 ms) \\| windows 24-31" in text  # a pipe cannot break the table
    assert "report.html" in text
    assert "Time to detect: 0.4 s" in text and "impressions acked/found: 1000/998" in text
    assert not re.search(r"[\U0001F300-\U0001FAFF\u2600-\u27BF]", text)  # emoji-free


# --- report.html --------------------------------------------------------------------------------
def test_both_figure_tables_say_the_verdicts_leave_out_the_settle(
    written: dict[str, Path],
) -> None:
    for name in ("summary.md", "report.html"):
        assert "checks.settle" in written[name].read_text(), name


def test_html_is_self_contained(written: dict[str, Path]) -> None:
    html = written["report.html"].read_text()
    assert "http://" not in html and "https://" not in html
    refs = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', html)
    assert all(r.startswith(("data:", "#")) for r in refs), refs
    assert "<link" not in html and "<script" not in html and "@import" not in html
    assert not re.search(r"url\((?!#)", html)


def test_html_has_one_svg_chart_per_chart_each_with_shaded_windows(
    written: dict[str, Path],
) -> None:
    html = written["report.html"].read_text()
    for chart_id in charts.CHARTS:
        section = html.split(f'id="chart-{chart_id}"', 1)[1].split("</figure>", 1)[0]
        assert "<svg" in section, chart_id
        assert f'id="{chart_id}-stress"' in section, chart_id
        assert f'id="{chart_id}-fault-0"' in section and f'id="{chart_id}-fault-1"' in section
        assert f'id="{chart_id}-no-data"' not in section, chart_id


def test_html_shows_verdicts_with_evidence_escaped(written: dict[str, Path]) -> None:
    html = written["report.html"].read_text()
    assert "graceful_degradation" in html and "worst_windows" in html
    assert "too few samples in recovery &lt;3 of 10&gt;" in html


def test_shading_draws_the_stress_window_and_every_fault(run_dir: Path) -> None:
    data = load_run_data(run_dir)
    ax = charts.new_figure().add_subplot()
    assert charts.shade_windows(ax, data, "x") == 1 + 2
    assert {p.get_gid() for p in ax.patches} == {"x-stress", "x-fault-0", "x-fault-1"}


def test_figures_are_drawn_on_the_agg_canvas() -> None:
    assert isinstance(charts.new_figure().canvas, FigureCanvasAgg)


def test_missing_samples_still_renders_with_no_data_charts(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path, samples=False)
    paths = write_reports(run, None, make_result())
    html = paths["report.html"].read_text()
    for chart_id in ("inflight", "queue", "breakers", "resources"):
        assert f'id="{chart_id}-no-data"' in html
    assert "no data" in html
    assert 'id="rates-no-data"' not in html
    assert "samples.jsonl is missing" in html
    assert "samples.jsonl is missing" in paths["summary.md"].read_text()


def test_an_almost_empty_run_dir_still_gets_all_reports(tmp_path: Path) -> None:
    run = tmp_path / "empty"
    run.mkdir()
    (run / REQUESTS_FILE).write_text(
        '{"t": 0, "intended": 5, "sent": 5, "outcomes": {"ok": 5}}\n{"t": 1'
    )
    paths = write_reports(run, None, CheckResult([], {}))
    data = json.loads(paths["report.json"].read_text())
    assert data["status"] == "inconclusive" and data["phases"][0]["name"] == "run"
    assert ET.parse(paths["junit.xml"]).getroot().get("tests") == "0"
    assert "INCONCLUSIVE" in paths["summary.md"].read_text()
    assert "<svg" in paths["report.html"].read_text()


def test_without_fault_events_the_scenario_timeline_is_shaded(run_dir: Path) -> None:
    events = [json.loads(line) for line in (run_dir / EVENTS_FILE).read_text().splitlines()]
    kept = [e for e in events if not e["kind"].startswith("fault")]
    (run_dir / EVENTS_FILE).write_text("".join(json.dumps(e) + "\n" for e in kept))
    data = load_run_data(run_dir)
    assert [(w.label, w.start_s, w.end_s) for w in data.faults] == [
        ("dsp_latency on dsp-1", 22.0, 32.0)]  # fmt: skip


def test_a_malformed_event_is_skipped_and_noted_and_the_rest_is_drawn(run_dir: Path) -> None:
    before = [(w.label, w.start_s, w.end_s) for w in load_run_data(run_dir).faults]
    with (run_dir / EVENTS_FILE).open("a") as f:
        f.write('{"t": "late", "kind": "fault_start", "proxy": "redis"}\n')
    data = load_run_data(run_dir)
    assert [(w.label, w.start_s, w.end_s) for w in data.faults] == before
    assert any(n.startswith("skipped events.jsonl:") for n in data.notes)


def test_shipped_perfect_storm_scenario_parses_in_a_run_dir(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path)
    (run / SCENARIO_FILE).write_text(load_scenario("perfect-storm").to_toml())
    (run / EVENTS_FILE).write_text("")
    data = load_run_data(run)
    assert [p.name for p in data.phases][:3] == ["warmup", "baseline", "stress"]
    assert len(data.faults) == 3 and data.stress is not None


# --- console ------------------------------------------------------------------------------------
def test_print_verdicts_shows_each_verdict_and_the_overall_status() -> None:
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    print_verdicts(console, make_result())
    text = out.getvalue()
    for v in make_result().verdicts:
        assert v.name in text
    assert "<3 of 10> [red]x[/red]" in text  # markup in a message is shown, not interpreted
    assert "FAIL: 2 failed, 1 inconclusive, 3 passed (exit 1)" in text


def test_print_verdicts_colours_the_status() -> None:
    out = io.StringIO()
    print_verdicts(Console(file=out, width=200, force_terminal=True), make_result())
    assert "\x1b[" in out.getvalue() and "fail" in out.getvalue()


# --- the CI workflow ----------------------------------------------------------------------------
def test_ci_workflow_runs_the_gate_publishes_reports_and_propagates_the_exit_code() -> None:
    text = WORKFLOW.read_text()
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(text)
    steps = doc["jobs"]["gate"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("actions/checkout@") for u in uses)
    setup = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert str(setup["with"]["python-version"]) == "3.11"
    assert "make gate" in runs and "GITHUB_STEP_SUMMARY" in runs and "summary.md" in runs
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert "always()" in upload["if"]
    assert any("junit" in u for u in uses)
    assert steps[-1]["run"].strip().startswith("exit")


# --- with the checker's History and verdicts -----------------------------------------------------
def test_the_checkers_history_and_verdicts_render(run_dir: Path) -> None:
    """A real History and the real checker's CheckResult: phases come from the History, the
    durations from the checker's evidence, and every verdict becomes a testcase."""
    from spikegate.harness.checker import check
    from spikegate.harness.history import load_history

    history = load_history(run_dir)
    result = check(history)
    paths = write_reports(run_dir, history, result)
    data = json.loads(paths["report.json"].read_text())
    assert [(p["name"], p["start_s"], p["end_s"]) for p in data["phases"]] == [
        (p.name, p.start_s, p.end_s) for p in history.phases
    ]
    assert [(f["start_s"], f["end_s"]) for f in data["faults"]] == [
        (w.start_s, w.end_s) for w in history.faults
    ]
    assert data["faults"][0]["params"] == {"latency_ms": 250}  # ids/params kept from events
    detect = next(v for v in result.verdicts if v.name == "time_to_detect")
    recover = next(v for v in result.verdicts if v.name == "time_to_recover")
    assert data["key_figures"]["time_to_detect_s"] == detect.evidence["detect_s"] == 0.0
    assert data["key_figures"]["time_to_recover_s"] == recover.evidence["ttr_s"] == 0.0
    cases = ET.parse(paths["junit.xml"]).getroot().findall("testsuite/testcase")
    assert len(cases) == len(result.verdicts)
    # 2 acked impressions are missing; the synthetic bids go on winning while Redis is down;
    # its queue stands far longer than CoDel allows
    assert data["status"] == result.status == "fail"
    assert [v["name"] for v in data["verdicts"] if v["status"] == "fail"] == [
        "no_silent_loss", "layer.bulkhead", "layer.shedder"]  # fmt: skip
    shedder = next(v for v in result.verdicts if v.name == "layer.shedder")
    assert "the shedder let a queue stand" in shedder.message


def test_key_figures_read_the_checkers_duration_evidence(run_dir: Path) -> None:
    result = CheckResult(
        [
            Verdict("time_to_detect", "stress", "pass", "ok", {"detect_s": 1.5}),
            Verdict("time_to_recover", "recovery", "pass", "ok",
                    {"recovered_at_s": 38.0, "ttr_s": 3.0}),
        ],
        {},
    )  # fmt: skip
    report = build_report(load_run_data(run_dir), result)
    assert report["key_figures"]["time_to_detect_s"] == 1.5
    assert report["key_figures"]["time_to_recover_s"] == 3.0


def test_breaker_chart_shows_states_per_dsp_and_failed_scrapes_as_unknown(run_dir: Path) -> None:
    data = load_run_data(run_dir)
    ax = charts.new_figure().add_subplot()
    assert charts.chart_breakers(data, ax) is True
    labels = {c.get_label() for c in ax.collections}
    assert {"closed", "open", "no sample (scrape failed)"} <= labels
    assert [t.get_text() for t in ax.get_yticklabels()] == ["dsp-1", "dsp-2"]


def test_load_report_names_the_file_when_it_is_not_a_report(tmp_path: Path) -> None:
    bad = tmp_path / "report.json"
    bad.write_text('{"verdicts": [{"name": "x"}]}')
    with pytest.raises(ValueError, match=r"report\.json: not a Spikegate report\.json"):
        load_report(bad)


# --- skipped verdicts (a user's service: no evidence for them) --------------------------------
def make_skipping_result() -> CheckResult:
    return CheckResult(
        verdicts=[
            Verdict("layer.edge", "stress", "skipped", "no black-box mapping for the edge",
                    {"skipped": "no black-box mapping for the edge"}),
            *make_result().verdicts,
        ],
        thresholds={},
    )  # fmt: skip


def test_a_skipped_verdict_is_rendered_skipped_everywhere_never_passed(run_dir: Path) -> None:
    result = make_skipping_result()
    paths = write_reports(run_dir, None, result)
    data, again = load_report(paths["report.json"])
    assert data["counts"] == {"pass": 3, "fail": 2, "inconclusive": 1, "skipped": 1}
    assert data["verdicts"][0]["status"] == "skipped" and again.verdicts[0].status == "skipped"

    suite = ET.parse(paths["junit.xml"]).getroot().find("testsuite")
    assert suite is not None and suite.get("skipped") == "2"  # the inconclusive one and it
    edge = next(c for c in suite.findall("testcase") if c.get("name") == "layer.edge")
    skipped = edge.find("skipped")
    assert skipped is not None and edge.find("failure") is None
    assert skipped.get("message") == "skipped: no black-box mapping for the edge"

    summary = paths["summary.md"].read_text()
    assert "FAIL: 2 failed, 1 inconclusive, 3 passed, 1 skipped of 7 verdicts (exit 1)" in summary
    table = summary.split("### Key figures", 1)[0]
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert "| layer.edge | stress | SKIPPED |" in lines[-1]  # listed after every judged one

    html = paths["report.html"].read_text()
    row = html.split("<code>layer.edge</code>", 1)[1].split("</tr>", 1)[0]
    assert '<td class="skipped">SKIPPED</td>' in row and "PASS" not in row
    assert html.index("<code>layer.edge</code>") > html.index("<code>valid_run</code>")


def test_print_verdicts_counts_skipped_apart() -> None:
    out = io.StringIO()
    print_verdicts(Console(file=out, width=200, color_system=None), make_skipping_result())
    text = out.getvalue()
    assert "FAIL: 2 failed, 1 inconclusive, 3 passed, 1 skipped (exit 1)" in text
    assert "skipped" in text.split("layer.edge", 1)[1].splitlines()[0]


def test_bytes_per_dependency_are_charted_only_when_the_proxies_counted_them(
    run_dir: Path,
) -> None:
    from spikegate.harness.reports_html import proxy_bytes_chart

    assert proxy_bytes_chart(load_run_data(run_dir)) is None
    rows = [json.loads(line) for line in (run_dir / SAMPLES_FILE).read_text().splitlines()]
    for r in rows:
        r["proxy_bytes"] = {"redis": {"received": 100, "sent": 900}, "bad": "x"}
    (run_dir / SAMPLES_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    chart = proxy_bytes_chart(load_run_data(run_dir))
    assert chart is not None and chart.has_data
    assert "redis received" in chart.svg and "redis sent" in chart.svg
    assert 'id="proxy-bytes-stress"' in chart.svg  # the windows are shaded as on every chart
