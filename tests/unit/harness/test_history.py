"""Loading run directories into a History (and re-judging them offline: check_run, compare):
well-formed, partial and corrupted directories give values or precise UsageErrors."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram
from rich.console import Console

from spikegate.harness.checkcmd import check_run, compare_runs, judge
from spikegate.harness.errors import UsageError
from spikegate.harness.history import (
    Event,
    History,
    derive_fault_windows,
    derive_phases,
    events_from_rows,
    load_history,
)
from spikegate.harness.scenario import Scenario, parse_scenario
from spikegate.locustfiles.recorder import SecondStats

SMOKE: dict[str, Any] = {
    "name": "mini",
    "seed": 3,
    "load": {"shape": "steady", "duration_s": 20, "warmup_s": 2, "base_rps": 60},
    "faults": [{"at_s": 8, "for_s": 5, "fault": "dsp_latency", "proxy": "dsp-1",
                "params": {"latency_ms": 200}}],
    "phases": {"recovery_s": 4},
    "checks": {"slo": "p99 < 150ms"},
}  # fmt: skip


def hist(ms: float, n: int) -> str:
    h = HdrHistogram(1, 60_000_000, 3)
    h.record_value(round(ms * 1000), n)
    return h.encode().decode()


def request_row(t: int, *, ok: int = 60, p99: float = 20.0, shed: int = 0) -> dict[str, Any]:
    outcomes = {"ok": ok, "shed": shed}
    return {
        "t": float(t), "intended": ok + shed, "sent": ok + shed, "outcomes": outcomes,
        "decisions": {"none": ok, "shed": shed},
        "endpoints": {"bid": {"ok": ok}, "impression": {"shed": shed}},
        "publishers": {"pub-1": {"sent": ok + shed, "admitted": ok, "rate_limited": 0}},
        "hist_admitted": hist(p99, ok) if ok else None,
        "hist_rejected": hist(2.0, shed) if shed else None,
        "admitted_p50_ms": p99, "admitted_p99_ms": p99, "rejected_p99_ms": 2.0 if shed else None,
        "max_lateness_ms": 1.0, "cpu_percent": 20.0, "processes": 1,
    }  # fmt: skip


def sample_row(t: int, *, state: str = "closed", depth: float = 3.0) -> dict[str, Any]:
    return {
        "t": float(t), "ok": True, "auction_inflight": 4.0, "auction_limit": 64.0,
        "auction_limit_ceiling": 64.0, "auction_waiting": 0.0, "queue_depth": depth,
        "queue_max_depth": 10000.0, "queue_sojourn_ms": 1.0,
        "breakers": {"dsp-1": state, "dsp-2": "closed", "dsp-3": "closed"},
        "decisions_total": {"dsp:breaker_open_fallback": 0.0}, "requests_total": {},
        "impressions": {"accepted": 0.0}, "rss_bytes": 80e6, "loop_lag_ms": 0.5,
        "loop_lag_max_ms": 1.0, "scrape_ms": 2.0,
    }  # fmt: skip


def jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_run(
    d: Path,
    sc: Scenario | None = None,
    *,
    requests: list[dict[str, Any]] | None = None,
    samples: list[dict[str, Any]] | None = None,
    events: list[dict[str, Any]] | None = None,
    impressions: dict[str, Any] | None = None,
    status: str = "complete",
) -> Path:
    """A run directory in spikegate/contract/rundir.py's format; healthy rows unless given."""
    sc = sc or parse_scenario(SMOKE, source="test")
    d.mkdir(parents=True, exist_ok=True)
    duration = int(sc.load.duration_s)
    (d / "scenario.toml").write_text(sc.to_toml())
    meta = {"scenario": sc.name, "seed": sc.seed, "t0_epoch": 1.7e9, "status": status}
    (d / "meta.json").write_text(json.dumps(meta))
    requests = requests or [request_row(t) for t in range(duration)]
    jsonl(d / "requests.jsonl", requests)
    if samples is None:
        samples = [
            sample_row(t, state="open" if 9 <= t < 13 else "closed") for t in range(duration)
        ]
    jsonl(d / "samples.jsonl", samples)
    if events is None:
        events = [{"t": 0.0, "kind": "run_start"}]
        events += [{"t": p.start_s, "kind": "phase", "name": p.name, "start_t": p.start_s,
                    "end_t": p.end_s} for p in sc.phase_list()]  # fmt: skip
        for i, f in enumerate(sc.faults):
            proxy = f.to_spec().resolve()[0]
            base = {"id": f"f{i}", "proxy": proxy, "fault": f.fault, "source": "scenario"}
            events += [{"t": f.at_s + 0.01, "kind": "fault_start", **base},
                       {"t": f.at_s + f.for_s + 0.02, "kind": "fault_stop", **base}]  # fmt: skip
    jsonl(d / "events.jsonl", events)
    if impressions is not False:
        n = sum(int((r.get("outcomes") or {}).get("accepted", 0)) for r in requests)
        imp = impressions or {"acked": n, "found": n, "missing": 0, "missing_sample": [],
                              "duplicates_in_topic": 0, "read_back_s": 0.1, "complete": True,
                              "error": None}  # fmt: skip
        (d / "impressions.json").write_text(json.dumps(imp))
    return d


# --- well-formed ----------------------------------------------------------------------------
def test_loads_every_file_of_a_run_directory(tmp_path: Path) -> None:
    h = load_history(write_run(tmp_path / "run"))
    assert h.scenario.name == "mini"
    assert len(h.requests) == 20 and len(h.samples) == 20
    assert h.requests[5].admitted == 60 and h.requests[5].sent == 60
    assert [p.name for p in h.phases] == ["warmup", "baseline", "stress", "recovery", "post"]
    assert [(w.proxy, w.start_s, w.end_s) for w in h.faults] == [("dsp-1", 8.01, 13.02)]
    assert h.impressions is not None and h.impressions.complete
    assert h.notes == ()
    # no target.json (an older run directory): the limits are resolved from the scenario
    assert h.target_config is not None and h.target_config["auction"]["limit"] == 64


def test_the_targets_limits_come_from_target_json_as_recorded(tmp_path: Path) -> None:
    d = write_run(tmp_path / "run")
    recorded = load_history(d).target_config
    assert recorded is not None
    changed = {**recorded, "auction": {**recorded["auction"], "limit": 7}}
    (d / "target.json").write_text(json.dumps(changed))
    h = load_history(d)
    assert h.target_config is not None and h.target_config["auction"]["limit"] == 7
    (d / "target.json").write_text("[1, 2]")
    with pytest.raises(UsageError, match=r"target\.json: expected a JSON object"):
        load_history(d)


def test_window_selection_is_half_open(tmp_path: Path) -> None:
    h = load_history(write_run(tmp_path / "run"))
    assert [r.t for r in h.requests_in(8.0, 13.0)] == [8.0, 9.0, 10.0, 11.0, 12.0]


def test_phases_and_faults_fall_back_to_the_scenario_without_events(tmp_path: Path) -> None:
    d = write_run(tmp_path / "run", events=[])
    (d / "events.jsonl").unlink()
    h = load_history(d)
    assert [(p.name, p.start_s, p.end_s) for p in h.phases][2] == ("stress", 8.0, 13.0)
    assert [(w.proxy, w.start_s, w.end_s) for w in h.faults] == [("dsp-1", 8.0, 13.0)]
    assert any("events.jsonl" in n for n in h.notes)


def test_a_fault_never_stopped_lasts_to_the_end(tmp_path: Path) -> None:
    start = {"t": 8.0, "kind": "fault_start", "id": "x", "proxy": "redis", "fault": "down"}
    h = load_history(write_run(tmp_path / "run", events=[start]))
    assert [(w.proxy, w.end_s) for w in h.faults] == [("redis", 20.0)]


def test_a_manual_fault_keeps_its_source_id_and_params(tmp_path: Path) -> None:
    base = {"id": "m1", "proxy": "redis", "fault": "latency", "source": "manual",
            "params": {"latency_ms": 50}}  # fmt: skip
    events = [{"t": 3.0, "kind": "fault_start", **base}, {"t": 6.0, "kind": "fault_stop", **base}]
    h = load_history(write_run(tmp_path / "run", events=events))
    (w,) = h.faults
    assert (w.proxy, w.start_s, w.end_s, w.source, w.id) == ("redis", 3.0, 6.0, "manual", "m1")
    assert w.params == {"latency_ms": 50}


def test_scenario_fault_windows_carry_the_schedule_ids_and_params() -> None:
    sc = parse_scenario(SMOKE, source="test")
    (w,) = derive_fault_windows(sc, [])
    assert (w.id, w.source, dict(w.params)) == ("s0", "scenario", dict(sc.faults[0].params))


def test_without_a_scenario_only_recorded_phases_and_faults_are_derived() -> None:
    events = [Event(1.0, "fault_start", {"id": "a", "proxy": "kafka", "fault": "down"})]
    assert derive_phases(None, events) == ()
    (w,) = derive_fault_windows(None, events, end_s=9.0)
    assert (w.proxy, w.start_s, w.end_s) == ("kafka", 1.0, 9.0)
    assert derive_fault_windows(None, []) == ()


def test_events_from_rows_skips_and_notes_a_malformed_row() -> None:
    rows = [(1, {"t": 2.0, "kind": "phase"}), (2, {"t": "soon", "kind": "fault_start"}),
            (3, {"t": 1.0, "kind": "run_start"})]  # fmt: skip
    events, notes = events_from_rows(rows, "events.jsonl")
    assert [(e.t, e.kind) for e in events] == [(1.0, "run_start"), (2.0, "phase")]
    assert len(notes) == 1 and "events.jsonl:2" in notes[0] and "'t'" in notes[0]


def test_failed_scrapes_load_with_empty_levels(tmp_path: Path) -> None:
    rows = [{"t": float(t), "ok": False, "error": "timeout"} for t in range(20)]
    h = load_history(write_run(tmp_path / "run", samples=rows))
    assert not h.samples[0].ok and h.samples[0].queue_depth is None


def test_proxy_bytes_and_connections_load_and_older_rows_without_them_too(
    tmp_path: Path,
) -> None:
    rows = [sample_row(t) for t in range(20)]
    rows[5]["proxy_bytes"] = {"db": {"received": 512, "sent": 128}}
    rows[5]["proxy_connections"] = {"db": {"accepted": 2, "open": 7}}
    h = load_history(write_run(tmp_path / "run", samples=rows))
    assert h.samples[5].proxy_bytes == {"db": {"received": 512, "sent": 128}}
    assert h.samples[5].proxy_connections == {"db": {"accepted": 2, "open": 7}}
    assert h.samples[4].proxy_bytes == {} and h.samples[4].proxy_connections == {}


def test_lateness_counts_load_and_older_rows_without_them_too(tmp_path: Path) -> None:
    """A row of today's recorder carries its send-lateness counts; an older row (or a
    user's recorder) has none, which is not the same as none late."""
    rows = [request_row(t) for t in range(20)]
    rows[5]["lateness"] = {"sends": 60, "over_ms": {"1": 9, "2": 4, "10": 1}}
    rows[6]["lateness"] = {"sends": 60, "over_ms": {}}
    h = load_history(write_run(tmp_path / "run", requests=rows))
    assert (h.requests[5].late_sends, h.requests[5].late_over_ms) == (60, {1: 9, 2: 4, 10: 1})
    assert (h.requests[6].late_sends, h.requests[6].late_over_ms) == (60, {})
    assert (h.requests[4].late_sends, h.requests[4].late_over_ms) == (None, {})


def _late_generator_row(t: int) -> dict[str, Any]:
    """A second of two generator processes as the recorder writes it: 60 bids noted, one
    process CPU-starved in the post phase (6 of its 30 sends over 10 ms late)."""
    procs = [SecondStats(t), SecondStats(t)]
    for i, proc in enumerate(procs):
        starved = i == 1 and t >= 17
        for n in range(30):
            proc.note_late(0.025 if starved and n < 6 else 0.0005)
    procs[0].merge(procs[1].seal())
    return {**request_row(t), "lateness": procs[0].seal().row()["lateness"]}


def test_spikegate_check_names_a_late_generator_in_console_and_junit(tmp_path: Path) -> None:
    """The recorder's merged counts reach the verdict through the run directory: the post
    phase (t >= 17) is inconclusive with the figure, the rest of the run judged as usual."""
    d = write_run(tmp_path / "run", requests=[_late_generator_row(t) for t in range(20)])
    console = _console()
    result = check_run(d, [], console)
    assert result.exit_code == 3
    post = next(v for v in result.verdicts if (v.name, v.phase) == ("valid_run", "post"))
    assert post.status == "inconclusive" and post.evidence["late_share"] == 0.1
    baseline = next(v for v in result.verdicts if (v.name, v.phase) == ("valid_run", "baseline"))
    assert baseline.status == "pass" and baseline.evidence["late_share"] == 0.0
    assert "more than 10 ms late" in console.export_text()
    junit = (d / "junit.xml").read_text()
    assert "10.00% of its 180 arrivals in post more than 10 ms late" in junit


def test_rows_of_a_service_without_a_metrics_path_load_as_not_scraped(tmp_path: Path) -> None:
    rows = [{"t": float(t), "ok": False, "scraped": False, "error": "no metrics path",
             "proxy_bytes": {"db": {"received": t, "sent": 0}}} for t in range(20)]  # fmt: skip
    h = load_history(write_run(tmp_path / "run", samples=rows))
    assert not h.samples[3].ok and not h.samples[3].scraped
    assert h.samples[3].proxy_bytes == {"db": {"received": 3, "sent": 0}}
    assert load_history(write_run(tmp_path / "old")).samples[0].scraped  # absent: scraped


@pytest.mark.parametrize(
    ("target", "reference"),
    [
        ({}, True),
        ({"kind": "external", "url": "http://127.0.0.1:8000"}, False),
        ({"kind": "command", "command": ["my-service", "--port", "{port}"]}, False),
    ],
)
def test_reference_is_the_reference_target_and_external_every_other(
    target: dict[str, Any], reference: bool
) -> None:
    sc = parse_scenario({**SMOKE, "faults": [], "target": target}, source="test")
    h = History.build(sc)
    assert h.reference is reference and h.external is not reference


def test_rejection_buckets_load_sorted_with_inf_and_are_none_when_absent(tmp_path: Path) -> None:
    """Older run directories have no rejection_buckets: None, not an error."""
    rows = [sample_row(t) for t in range(20)]
    rows[3]["rejection_buckets"] = {"auction": [[None, 9], [0.001, 2], [0.005, 9]], "edge": []}
    h = load_history(write_run(tmp_path / "run", samples=rows))
    assert h.samples[3].rejection_buckets == {
        "auction": ((0.001, 2), (0.005, 9), (math.inf, 9)),
        "edge": (),
    }
    assert h.samples[2].rejection_buckets is None


def test_truncated_last_line_of_a_killed_run_is_skipped(tmp_path: Path) -> None:
    d = write_run(tmp_path / "run")
    with (d / "requests.jsonl").open("a") as fh:
        fh.write('{"t": 20.0, "sent": ')
    assert len(load_history(d).requests) == 20


def test_interrupted_run_is_noted_and_inconclusive(tmp_path: Path) -> None:
    d = write_run(tmp_path / "run", status="interrupted")
    assert any("interrupted" in n for n in load_history(d).notes)
    _, result = judge(d)
    assert result.exit_code in (1, 3)
    assert any(v.name == "valid_run" and v.status == "inconclusive" for v in result.verdicts)


# --- missing, partial, corrupted -> UsageError naming file, line and field ------------------
def _corrupt_line(d: Path, name: str, line: int, text: str) -> None:
    lines = (d / name).read_text().splitlines(keepends=True)
    lines[line - 1] = text + "\n"
    (d / name).write_text("".join(lines))


BROKEN: list[tuple[str, Callable[[Path], None], list[str]]] = [
    ("missing requests.jsonl", lambda d: (d / "requests.jsonl").unlink(), ["requests.jsonl"]),
    ("missing scenario.toml", lambda d: (d / "scenario.toml").unlink(), ["scenario.toml"]),
    ("missing meta.json", lambda d: (d / "meta.json").unlink(), ["meta.json"]),
    ("corrupted requests line",
     lambda d: _corrupt_line(d, "requests.jsonl", 3, '{"t": 2.0, "sent": 6'), ["requests.jsonl:3"]),
    ("a row that is not an object",
     lambda d: _corrupt_line(d, "samples.jsonl", 4, "[1, 2]"), ["samples.jsonl:4", "object"]),
    ("a count of the wrong type",
     lambda d: _corrupt_line(d, "requests.jsonl", 5, '{"t": 4.0, "sent": "many"}'),
     ["requests.jsonl:5", "'sent'"]),
    ("a negative count",
     lambda d: _corrupt_line(d, "requests.jsonl", 2,
                             '{"t": 1.0, "sent": 5, "outcomes": {"ok": -5}}'),
     ["requests.jsonl:2", "'ok'", ">= 0"]),
    ("a row without t",
     lambda d: _corrupt_line(d, "requests.jsonl", 6, '{"sent": 5}'), ["requests.jsonl:6", "'t'"]),
    ("a garbage histogram",
     lambda d: _corrupt_line(d, "requests.jsonl", 7,
                             '{"t": 6.0, "sent": 1, "outcomes": {"ok": 1}, "hist_admitted": "xx"}'),
     ["requests.jsonl:7", "hist_admitted"]),
    ("a lateness bound the recorder does not count",
     lambda d: _corrupt_line(d, "requests.jsonl", 7, '{"t": 6.0, "sent": 1, "outcomes": '
                             '{"ok": 1}, "lateness": {"sends": 1, "over_ms": {"7": 1}}}'),
     ["requests.jsonl:7", "lateness", "'7'", "1, 2, 5, 10"]),
    ("lateness not an object",
     lambda d: _corrupt_line(d, "requests.jsonl", 7, '{"t": 6.0, "sent": 1, "outcomes": '
                             '{"ok": 1}, "lateness": 3}'), ["requests.jsonl:7", "'lateness'"]),
    ("breakers not a mapping",
     lambda d: _corrupt_line(d, "samples.jsonl", 2, '{"t": 1.0, "ok": true, "breakers": [1]}'),
     ["samples.jsonl:2", "breakers"]),
    ("rejection buckets with a negative count",
     lambda d: _corrupt_line(d, "samples.jsonl", 3,
                             '{"t": 2.0, "rejection_buckets": {"auction": [[0.001, -1]]}}'),
     ["samples.jsonl:3", "rejection_buckets", "auction", "[le, count]"]),
    ("rejection buckets not an object",
     lambda d: _corrupt_line(d, "samples.jsonl", 3, '{"t": 2.0, "rejection_buckets": [1]}'),
     ["samples.jsonl:3", "rejection_buckets", "null for +Inf"]),
    ("proxy bytes not per proxy",
     lambda d: _corrupt_line(d, "samples.jsonl", 3, '{"t": 2.0, "proxy_bytes": {"db": 5}}'),
     ["samples.jsonl:3", "proxy_bytes"]),
    ("proxy connections with a negative count",
     lambda d: _corrupt_line(d, "samples.jsonl", 3,
                             '{"t": 2.0, "proxy_connections": {"db": {"open": -1}}}'),
     ["samples.jsonl:3", "'open'", ">= 0"]),
    ("scraped not a boolean",
     lambda d: _corrupt_line(d, "samples.jsonl", 3, '{"t": 2.0, "scraped": "no"}'),
     ["samples.jsonl:3", "'scraped'"]),
    ("an event without kind",
     lambda d: _corrupt_line(d, "events.jsonl", 1, '{"t": 0.0}'), ["events.jsonl:1", "kind"]),
    ("meta.json not JSON", lambda d: (d / "meta.json").write_text("{oops"), ["meta.json"]),
    ("impressions.json without acked",
     lambda d: (d / "impressions.json").write_text('{"missing": 0}'),
     ["impressions.json", "'acked'"]),
    ("scenario.toml invalid",
     lambda d: (d / "scenario.toml").write_text('name = "x"\n[load]\nduration_s = -1\n'),
     ["scenario.toml", "load.duration_s"]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "damage", "words"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_run_directory_is_a_usage_error_naming_the_place(
    tmp_path: Path, case: str, damage: Callable[[Path], None], words: list[str]
) -> None:
    d = write_run(tmp_path / "run")
    damage(d)
    with pytest.raises(UsageError) as info:
        load_history(d)
    assert info.value.exit_code == 2
    for word in words:
        assert word in str(info.value)


def test_not_a_directory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a run directory"):
        load_history(tmp_path / "nope")


def test_empty_requests_file_loads_and_judges_inconclusive(tmp_path: Path) -> None:
    d = write_run(tmp_path / "run")
    (d / "requests.jsonl").write_text("")
    _, result = judge(d)
    assert result.exit_code == 3


# --- check_run / compare_runs ---------------------------------------------------------------
def _console() -> Console:
    return Console(record=True, width=200, force_terminal=False)


def test_check_run_judges_and_a_tightened_slo_fails(tmp_path: Path) -> None:
    d = write_run(tmp_path / "run")
    console = _console()
    assert check_run(d, [], console).exit_code == 0
    strict = check_run(d, ['checks.slo="p99 < 10ms"'], console)
    assert strict.exit_code == 1
    assert any(v.name == "steady_state" and v.status == "fail" for v in strict.verdicts)
    assert strict.thresholds["slo"] == "p99 < 10ms"
    assert "steady_state" in console.export_text()


def test_check_run_rejects_overrides_outside_checks(tmp_path: Path) -> None:
    d = write_run(tmp_path / "run")
    with pytest.raises(UsageError, match=r"checks\.KEY=VALUE"):
        check_run(d, ["load.duration_s"], _console())
    with pytest.raises(UsageError, match=r"checks\.slo"):
        check_run(d, ["checks.slo=fast please"], _console())


def test_compare_shows_deltas_and_flags_a_regression(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a")
    slow = [request_row(t, p99=400.0 if t >= 13 else 20.0) for t in range(20)]
    b = write_run(tmp_path / "b", requests=slow)
    out = tmp_path / "cmp.json"
    console = _console()
    assert compare_runs(a, b, console, out) == 1
    assert compare_runs(a, a, console) == 0
    data = json.loads(out.read_text())
    post = next(
        r for r in data["deltas"] if r["phase"] == "post" and r["metric"] == "admitted_p99_ms"
    )
    assert post["a"] == pytest.approx(20.0, rel=0.01) and post["b"] == pytest.approx(400, rel=0.01)
    assert {"verdict": "steady_state/post", "a": "pass", "b": "fail"} in data["verdict_changes"]
    assert "verdict changes" in console.export_text()
