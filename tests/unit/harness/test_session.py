"""A hand-made session's phases come from its events (harness/session.py): disturbances
merge when close, each stress window gets a recovery and a post, and the checker judges each
stress window with a scripted run's verdicts, its phases numbered."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from spikegate.harness.checker import check
from spikegate.harness.history import Event, History, RequestSecond, Sample, load_history
from spikegate.harness.scenario import Scenario
from spikegate.harness.session import Disturbance, disturbances, load_timeline, session_phases
from tests.unit.harness.test_checker import STORM, sample, scenario, sec, verdict
from tests.unit.harness.test_history import SMOKE, request_row, write_run


def spans(phases: Any) -> list[tuple[str, float, float]]:
    return [(p.name, p.start_s, p.end_s) for p in phases]


def ev(t: float, kind: str, **data: Any) -> Event:
    return Event(t, kind, data)


# --- phases from disturbances ---------------------------------------------------------------
def test_two_separated_disturbances_give_two_stress_and_recovery_phases() -> None:
    found = [Disturbance(20, 30, "a load spike"), Disturbance(55, 65, "redis latency")]
    assert spans(session_phases(5, 10, found, 90)) == [
        ("warmup", 0, 5), ("baseline", 5, 20),
        ("stress", 20, 30), ("recovery", 30, 40), ("post", 40, 55),
        ("stress-2", 55, 65), ("recovery-2", 65, 75), ("post-2", 75, 90),
    ]  # fmt: skip


def test_overlapping_or_close_disturbances_merge_into_one_stress_window() -> None:
    # 30..35 is closer than the recovery length (10 s): one window 20..40; 38..45 overlaps it
    found = [Disturbance(20, 30, "spike"), Disturbance(35, 40, "fault"), Disturbance(38, 45, "f")]
    assert spans(session_phases(5, 10, found, 90)) == [
        ("warmup", 0, 5), ("baseline", 5, 20), ("stress", 20, 45), ("recovery", 45, 55),
        ("post", 55, 90),
    ]  # fmt: skip


def test_a_gap_of_exactly_the_recovery_length_keeps_two_windows_without_a_post() -> None:
    found = [Disturbance(20, 30, "spike"), Disturbance(40, 50, "fault")]
    assert [p[0] for p in spans(session_phases(5, 10, found, 70))] == [
        "warmup", "baseline", "stress", "recovery", "stress-2", "recovery-2", "post-2",
    ]  # fmt: skip


def test_the_session_end_cuts_the_last_recovery_short() -> None:
    phases = session_phases(5, 10, [Disturbance(80, 85, "fault")], 90)
    assert spans(phases)[-2:] == [("stress", 80, 85), ("recovery", 85, 90)]


def test_a_disturbance_in_the_warmup_is_clipped_and_a_quiet_session_is_all_baseline() -> None:
    assert spans(session_phases(5, 10, [Disturbance(2, 8, "f")], 30)) == [
        ("warmup", 0, 5), ("stress", 5, 8), ("recovery", 8, 18), ("post", 18, 30),
    ]  # fmt: skip
    assert spans(session_phases(5, 10, [Disturbance(1, 4, "f")], 30)) == [
        ("warmup", 0, 5), ("baseline", 5, 30),
    ]  # fmt: skip


# --- load changes ---------------------------------------------------------------------------
def test_load_timeline_follows_sets_and_spikes() -> None:
    events = [
        ev(0.5, "load_set", rate=100, previous=0),  # started --idle
        ev(20, "load_spike_start", peak=300, for_s=10),
        ev(25, "load_set", rate=150, previous=300),  # during the spike: the rate after it
        ev(31, "load_spike_end", rate=150),
        ev(50, "load_spike_start", peak=400, for_s=5),  # never ended by an event
    ]
    assert load_timeline(100, events, 90) == [
        (0, 0), (0.5, 100), (20, 300), (31, 150), (50, 400), (55, 150),
    ]  # fmt: skip


def test_load_timeline_reads_the_run_directory_contracts_fields() -> None:
    """spikegate/contract/rundir.py: load_set {action, rate (null: the scenario's),
    rps_before, rps_after}, load_spike_start {peak, for_s, until_t, rps_before},
    load_spike_end {peak, reason}."""
    events = [
        ev(3, "load_set", action="set", rate=120, previous=None, rps_before=0, rps_after=120),
        ev(10, "load_spike_start", peak="3x", for_s=5, until_t=15.4, rps_before=120),
        ev(30, "load_spike_start", peak=500, for_s=9, until_t=39, rps_before=120),
        ev(33, "load_spike_end", peak=500, reason="cancelled"),
        ev(40, "load_set", action="stop", rate=0, rps_before=120, rps_after=0),
        ev(44, "load_set", action="start", rate=None, rps_before=0),  # the scenario's rate
    ]
    assert load_timeline(100, events, 60) == [
        (0, 0), (3, 120), (10, 360), (15.4, 120), (30, 500), (33, 120), (40, 0), (44, 100),
    ]  # fmt: skip
    found = disturbances(100, events, [], 60)
    assert [(d.start_s, d.end_s) for d in found] == [(3, 40)]  # above the base 3..40 s


def test_a_spike_and_load_above_base_are_disturbances_load_at_base_is_not() -> None:
    events = [
        ev(10, "load_set", rate=80, previous=100),  # lower: not a disturbance
        ev(20, "load_set", rate=250, previous=80),
        ev(30, "load_set", rate=100, previous=250),
        ev(50, "load_spike_start", peak=90, for_s=5),  # a spike, even below the base rate
        ev(55, "load_spike_end", rate=100),
    ]
    found = disturbances(100, events, [(60, 90, "redis latency")], 80)
    assert [(d.start_s, d.end_s, d.what) for d in found] == [
        (20, 30, "load above base"), (50, 55, "a load spike"), (60, 80, "redis latency"),
    ]  # fmt: skip


# --- a session history ----------------------------------------------------------------------
SESSION: dict[str, Any] = {**STORM, "faults": [],
                           "load": {"shape": "steady", "duration_s": 30, "warmup_s": 5,
                                    "base_rps": 100, "publishers": 4}}  # fmt: skip
SPIKE = [ev(20, "load_spike_start", peak=300, for_s=10), ev(30, "load_spike_end", rate=100)]
FAULT = [
    ev(55.2, "fault_start", id="m1", proxy="dsp-1", fault="latency", source="manual",
       params={"latency_ms": 250}),
    ev(65.1, "fault_stop", id="m1", proxy="dsp-1", fault="latency", source="manual"),
]  # fmt: skip


def session_rows(*, recovers: bool = True) -> list[RequestSecond]:
    """A spike 20..30 and a DSP fault 55..65, 90 s: protected (fast designed rejections),
    then healthy again; or, with recovers=False, slow for good after the fault."""
    out = []
    for t in range(90):
        if 20 <= t < 30:
            rejected = {"rate_limited": 40, "overloaded": 40, "shed": 20}
            decisions = {"rate_limited": 40, "bulkhead_full": 40, "shed": 20}
            out.append(sec(t, ok=200, p99=60.0, rejected=rejected, decisions=decisions))
        elif 55 <= t < 65 or (t >= 65 and not recovers):
            out.append(sec(t, ok=100, p99=400.0 if t >= 65 else 60.0))
        else:
            out.append(sec(t))
    return out


def session_samples() -> list[Sample]:
    def state(t: int) -> str:
        return "open" if 56 <= t < 65 else "half_open" if t == 65 else "closed"

    return [
        sample(t, breakers={"dsp-1": state(t), "dsp-2": "closed", "dsp-3": "closed"})
        for t in range(90)
    ]


def session_history(*, recovers: bool = True, mode: str | None = "session") -> History:
    meta: dict[str, Any] = {"status": "complete"}
    if mode is not None:
        meta["mode"] = mode
    return History.build(
        scenario(SESSION),
        requests=session_rows(recovers=recovers),
        samples=session_samples(),
        events=[*SPIKE, *FAULT],
        meta=meta,
    )


def test_a_session_takes_its_phases_faults_and_load_from_its_events() -> None:
    h = session_history()
    assert spans(h.phases) == [
        ("warmup", 0, 5), ("baseline", 5, 20),
        ("stress", 20, 30), ("recovery", 30, 40), ("post", 40, 55),
        ("stress-2", 55, 65.1), ("recovery-2", 65.1, 75.1), ("post-2", 75.1, 90),
    ]  # fmt: skip
    # the fault added by hand at 55.2 s opens stress-2 at the start of the second it touches:
    # the row of second 55 already carries requests that met it
    assert [(w.proxy, w.start_s, w.end_s, w.source) for w in h.faults] == [
        ("dsp-1", 55.2, 65.1, "manual")
    ]
    # the generator is held to the load as it was offered, for as long as the session lasted
    assert h.scenario.load.shape == "step" and h.scenario.load.duration_s == 90
    assert [(s.at_s, s.rps) for s in h.scenario.load.steps] == [(20, 300), (30, 100)]


def test_a_scripted_run_keeps_the_scenarios_phases_whatever_its_events() -> None:
    h = session_history(mode=None)
    sc: Scenario = scenario(SESSION)
    assert spans(h.phases) == spans(sc.phase_list()) == [("warmup", 0, 5), ("baseline", 5, 30)]
    assert h.scenario == sc


def test_the_checker_judges_each_stress_window_with_a_scripted_runs_verdicts() -> None:
    result = check(session_history())
    scripted = check(History.build(scenario(), requests=session_rows()[:60]))
    by_phase: dict[str, set[str]] = {}
    for v in result.verdicts:
        by_phase.setdefault(v.phase, set()).add(v.name)
    names = {v.name for v in scripted.verdicts}
    assert {v.name for v in result.verdicts} == names
    # layer.breaker judges a DSP fault: only the second window has one
    assert by_phase["stress"] | {"layer.breaker"} == by_phase["stress-2"]
    assert "layer.breaker" not in by_phase["stress"]
    assert by_phase["recovery"] == by_phase["recovery-2"] == {"valid_run", "time_to_recover"}
    assert {"graceful_degradation", "time_to_detect", "no_unexpected_errors"} <= by_phase["stress"]
    assert by_phase["post"] == by_phase["post-2"] == {"valid_run", "steady_state"}
    # the whole-run verdicts once, the baseline once
    assert sum(1 for v in result.verdicts if v.name == "bounded_resources") == 1
    assert (
        sum(1 for v in result.verdicts if v.phase == "baseline" and v.name == "steady_state") == 1
    )
    # each recovery is timed from its own disturbance's end
    assert verdict(result, "time_to_recover", "recovery").evidence["disturbance_end_s"] == 30
    assert verdict(result, "time_to_recover", "recovery-2").evidence["disturbance_end_s"] == 65.1
    first = verdict(result, "time_to_recover", "recovery")
    assert first.status == "pass" and first.message.endswith("until the next stress window")
    assert verdict(result, "time_to_recover", "recovery-2").message.endswith("end of the run")
    assert verdict(result, "time_to_recover", "recovery-2").status == "pass"
    assert verdict(result, "steady_state", "post-2").status == "pass"


def test_a_service_that_does_not_recover_after_the_second_fault_fails_recovery_2() -> None:
    healthy, broken = check(session_history()), check(session_history(recovers=False))
    # the first pair is judged on the rows before the second stress window: the same
    for phase in ("baseline", "stress", "recovery", "post"):
        assert [(v.name, v.status) for v in healthy.verdicts if v.phase == phase] == [
            (v.name, v.status) for v in broken.verdicts if v.phase == phase
        ]
    ttr = verdict(broken, "time_to_recover", "recovery-2")
    assert ttr.status == "fail" and "never recovered" in ttr.message
    post2 = verdict(broken, "steady_state", "post-2")
    assert post2.status == "fail" and post2.message.startswith("post-2: admitted p99")
    assert broken.exit_code == 1 and verdict(healthy, "time_to_recover", "recovery-2").status == (
        "pass"
    )


def session_dir(tmp_path: Path, spikes: list[float], seconds: int) -> Path:
    """A session's run directory on smoke: a 3 s spike at each of `spikes`, `seconds` rows."""
    sc = scenario(SMOKE, faults=[], load={"shape": "steady", "duration_s": 300})
    events: list[dict[str, Any]] = [{"t": 0.0, "kind": "run_start"}]
    for t in spikes:
        events += [
            {"t": t, "kind": "load_spike_start", "peak": 180, "for_s": 3},
            {"t": t + 3.0, "kind": "load_spike_end", "rate": 60},
        ]
    d = write_run(tmp_path / "s", sc, requests=None, events=events)
    rows = [json.loads(x) for x in (d / "requests.jsonl").read_text().splitlines()][:seconds]
    (d / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps({**meta, "mode": "session"}))
    return d


def test_load_history_derives_a_sessions_phases_from_its_run_directory(tmp_path: Path) -> None:
    h = load_history(session_dir(tmp_path, [8.0], 20))
    assert spans(h.phases) == [
        ("warmup", 0, 2), ("baseline", 2, 8), ("stress", 8, 11), ("recovery", 11, 15),
        ("post", 15, 20),
    ]  # fmt: skip
    assert h.end_s == 20 and h.faults == ()


def test_recorded_numbered_phases_are_judged_per_window_and_others_dropped() -> None:
    """A run that recorded numbered phase events (a session's, or a replay that keeps its
    windows) is judged per window whatever its meta; unknown names are not phases."""
    h = session_history()
    recorded = [
        ev(p.start_s, "phase", name=p.name, start_t=p.start_s, end_t=p.end_s) for p in h.phases
    ]
    recorded.append(ev(0, "phase", name="stress-1", start_t=1, end_t=2))
    scripted = History.build(
        scenario(SESSION), requests=session_rows(), samples=session_samples(),
        events=[*recorded, *FAULT],
    )  # fmt: skip
    assert spans(scripted.phases) == spans(h.phases)
    phases = {v.phase for v in check(scripted).verdicts}
    assert {"stress-2", "recovery-2", "post-2"} <= phases and "stress-1" not in phases


def test_a_sessions_report_lasts_as_long_as_the_session(tmp_path: Path) -> None:
    from spikegate.harness.reports_data import load_run_data

    sc = scenario(SMOKE, faults=[], load={"shape": "steady", "duration_s": 300})
    spike = [{"t": 8.0, "kind": "load_spike_start", "peak": 180, "for_s": 3}]
    rows = [request_row(t) for t in range(20)]
    d = write_run(tmp_path / "s", sc, requests=rows, samples=[], events=spike)
    meta = json.loads((d / "meta.json").read_text())
    assert load_run_data(d, load_history(d)).duration_s == 300  # a scripted run: its scenario's
    (d / "meta.json").write_text(json.dumps({**meta, "mode": "session"}))
    data = load_run_data(d, load_history(d))
    assert data.duration_s == 20 and [p.name for p in data.phases][2:4] == ["stress", "recovery"]


def test_a_post_too_short_to_judge_is_part_of_the_recovery_before_it() -> None:
    found = [Disturbance(20, 30, "fault"), Disturbance(42, 50, "spike")]  # 40..42: 2 s
    assert spans(session_phases(5, 10, found, 70))[2:5] == [
        ("stress", 20, 30), ("recovery", 30, 42), ("stress-2", 42, 50),
    ]  # fmt: skip


def _valid_run_stress(missing: int) -> tuple[str, str]:
    """valid_run on the spike's window when the generator recorded `missing` fewer intended
    arrivals in its first second (where a change by hand lands up to 0.3 s late)."""
    rows = session_rows()
    rows[20] = dataclasses.replace(rows[20], intended=rows[20].intended - missing)
    h = History.build(
        scenario(SESSION),
        requests=rows,
        samples=session_samples(),
        events=[*SPIKE, *FAULT],
        meta={"status": "complete", "mode": "session"},
    )
    v = verdict(check(h), "valid_run", "stress")
    return v.status, v.message


def test_a_load_change_by_hand_may_land_a_poll_late_but_lost_requests_still_fail() -> None:
    status, _ = _valid_run_stress(0)
    assert status == "pass"
    # the spike (100 -> 300/s) read 0.2 s late: 40 arrivals fewer at its edge, allowed
    status, message = _valid_run_stress(40)
    assert status == "pass", message
    # 150 missing is more than any lateness of the change explains: the record lost them
    status, message = _valid_run_stress(150)
    assert status == "fail" and "missing from the generator's own record" in message


def test_a_sessions_reports_and_compare_show_every_stress_window(tmp_path: Path) -> None:
    """Two spikes far apart: the charts shade both stress windows, and `compare` lists the
    figures of stress-2 and recovery-2 beside the first ones (it listed only the first)."""
    import io

    from rich.console import Console

    from spikegate.harness import charts
    from spikegate.harness.checkcmd import compare_runs
    from spikegate.harness.reports_data import load_run_data

    d = session_dir(tmp_path, [8.0, 24.0], 40)
    h = load_history(d)
    assert [p.name for p in h.phases if p.name.startswith("stress")] == ["stress", "stress-2"]

    data = load_run_data(d, h)
    ax = charts.new_figure().add_subplot()
    charts.shade_windows(ax, data, "x")
    stress = sorted((p.get_x(), p.get_gid()) for p in ax.patches if "stress" in p.get_gid())
    assert stress == [(8.0, "x-stress"), (24.0, "x-stress-2")]

    out = tmp_path / "compare.json"
    compare_runs(d, d, Console(file=io.StringIO()), json_out=out)
    phases = list(dict.fromkeys(r["phase"] for r in json.loads(out.read_text())["deltas"]))
    assert phases[:6] == ["baseline", "stress", "recovery", "post", "stress-2", "recovery-2"]
