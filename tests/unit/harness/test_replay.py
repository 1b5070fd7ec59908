"""`spikegate replay RUN_DIR`: a session's scenario file, written from its events, loads as
a valid scenario with the session's length, load steps and faults; a session with one stress
window replays to the same phases; anything but a sound session is refused (exit 2)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from spikegate.harness.cli import main
from spikegate.harness.history import load_history
from spikegate.harness.scenario import load_scenario, parse_scenario
from tests.unit.harness.test_history import SMOKE, request_row, write_run

SESSION_SCENARIO = parse_scenario(
    {**SMOKE, "faults": [], "load": {**SMOKE["load"], "duration_s": 30}}, source="test"
)
SPIKE = [
    {"t": 8.0, "kind": "load_spike_start", "peak": 180, "for_s": 3},
    {"t": 11.0, "kind": "load_spike_end", "rate": 60},
]
REDIS = {"id": "m1", "proxy": "redis", "fault": "latency", "source": "manual",
         "params": {"latency_ms": 40, "jitter_ms": 0}}  # fmt: skip


def session_dir(d: Path, events: list[dict[str, Any]], seconds: int = 50) -> Path:
    write_run(
        d,
        SESSION_SCENARIO,
        requests=[request_row(t) for t in range(seconds)],
        samples=[],
        events=[{"t": 0.0, "kind": "run_start"}, *events],
    )
    meta = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps({**meta, "mode": "session"}))
    return d


def run_cli(*argv: str) -> tuple[int, str]:
    buf = io.StringIO()
    code = main(list(argv), Console(file=buf, width=200))
    return code, buf.getvalue()


def test_replay_writes_a_valid_scenario_with_the_sessions_timeline(tmp_path: Path) -> None:
    events = [
        *SPIKE,
        {"t": 20.0, "kind": "load_set", "rate": 90, "previous": 60},
        {"t": 30.5, "kind": "fault_start", **REDIS},  # never stopped: lasts to the end
    ]
    d = session_dir(tmp_path / "s", events)
    out = tmp_path / "replay.toml"
    code, _ = run_cli("replay", str(d), "--out", str(out))
    assert code == 0
    text = out.read_text()
    assert text.startswith(f"# Replay of the session recorded in {d}\n")
    assert "the session's 2 stress windows: 8..11, 20..50 s" in text
    sc = load_scenario(out)
    assert sc.load.duration_s == 50 and sc.load.shape == "step" and sc.load.base_rps == 60
    assert [(s.at_s, s.rps) for s in sc.load.steps] == [(8, 180), (11, 60), (20, 90)]
    assert [(f.at_s, f.for_s, f.fault, f.proxy, f.params) for f in sc.faults] == [
        (30.5, 19.5, "latency", "redis", {"latency_ms": 40, "jitter_ms": 0})
    ]
    # one stress and recovery phase per disturbance, as the session had them
    assert sc.phases.each_disturbance and sc.phases.stress_start_s is None
    session = load_history(d)
    assert [(p.name, p.start_s, p.end_s) for p in sc.phase_list()] == [
        (p.name, p.start_s, p.end_s) for p in session.phases
    ]
    assert [p.name for p in sc.phase_list()][2:] == ["stress", "recovery", "post", "stress-2"]
    # everything else is the session's scenario
    assert sc.checks == SESSION_SCENARIO.checks and sc.target == SESSION_SCENARIO.target


def test_a_session_with_one_stress_window_replays_to_the_same_phases(tmp_path: Path) -> None:
    events = [*SPIKE, {"t": 9.2, "kind": "fault_start", **REDIS},
              {"t": 14.0, "kind": "fault_stop", **REDIS}]  # fmt: skip
    d = session_dir(tmp_path / "s", events, seconds=40)
    code, _ = run_cli("replay", str(d))
    assert code == 0
    sc = load_scenario(d / "replay.toml")
    session = load_history(d)
    spans = [(p.name, p.start_s, p.end_s) for p in session.phases]
    assert spans == [(p.name, p.start_s, p.end_s) for p in sc.phase_list()]
    assert [n for n, *_ in spans] == ["warmup", "baseline", "stress", "recovery", "post"]
    assert [(f.at_s, f.for_s) for f in sc.faults] == [(9.2, 4.8)]
    assert "stress windows" not in (d / "replay.toml").read_text()


def test_replay_refuses_a_scripted_run_and_a_broken_directory(tmp_path: Path) -> None:
    scripted = write_run(tmp_path / "run")
    code, err = run_cli("replay", str(scripted))
    assert code == 2 and "is not a session" in err and 'mode": "session"' in err
    assert not (scripted / "replay.toml").exists()
    broken = session_dir(tmp_path / "b", SPIKE)
    (broken / "requests.jsonl").write_text('{"t": 1, "sent": "x"}\n')
    code, err = run_cli("replay", str(broken))
    assert code == 2 and "requests.jsonl:1" in err and "'sent'" in err
    code, err = run_cli("replay", str(tmp_path / "missing"))
    assert code == 2 and "not a run directory" in err


def test_a_session_whose_fault_lies_in_the_warmup_leaves_it_out_and_says_so(
    tmp_path: Path,
) -> None:
    early = {**REDIS, "id": "m0"}
    events = [{"t": 0.5, "kind": "fault_start", **early},
              {"t": 1.5, "kind": "fault_stop", **early}, *SPIKE]  # fmt: skip
    d = session_dir(tmp_path / "s", events, seconds=30)
    code, _ = run_cli("replay", str(d))
    assert code == 0
    text = (d / "replay.toml").read_text()
    assert "# left out: latency on redis at 0.5..1.5 s, inside the warmup (2 s)" in text
    assert load_scenario(d / "replay.toml").faults == []


def test_the_replayed_timeline_run_as_a_script_gets_the_sessions_verdicts(
    tmp_path: Path,
) -> None:
    """The same seconds recorded by a scripted run of the replay (its phase and fault events
    as the orchestrator writes them) are judged as the session was: same verdicts."""
    from spikegate.harness.checkcmd import judge
    from tests.unit.harness.test_history import sample_row

    rows = [request_row(t, ok=180 if 8 <= t < 11 else 60) for t in range(40)]
    samples = [sample_row(t) for t in range(40)]
    fault = [{"t": 9.2, "kind": "fault_start", **REDIS}, {"t": 14.0, "kind": "fault_stop", **REDIS}]
    d = session_dir(tmp_path / "s", [*SPIKE, *fault], seconds=40)
    write_run(d, SESSION_SCENARIO, requests=rows, samples=samples,
              events=[{"t": 0.0, "kind": "run_start"}, *SPIKE, *fault])  # fmt: skip
    meta = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps({**meta, "mode": "session"}))
    assert run_cli("replay", str(d))[0] == 0
    sc = load_scenario(d / "replay.toml")
    events: list[dict[str, Any]] = [{"t": 0.0, "kind": "run_start"}]
    events += [{"t": p.start_s, "kind": "phase", "name": p.name, "start_t": p.start_s,
                "end_t": p.end_s} for p in sc.phase_list()]  # fmt: skip
    for i, f in enumerate(sc.faults):
        base = {"id": f"s{i}", "proxy": f.proxy, "fault": f.fault, "params": f.params}
        events += [{"t": f.at_s, "kind": "fault_start", **base},
                   {"t": f.at_s + f.for_s, "kind": "fault_stop", **base}]  # fmt: skip
    scripted = write_run(tmp_path / "r", sc, requests=rows, samples=samples, events=events)
    (_, session), (_, replayed) = judge(d), judge(scripted)
    got = [(v.name, v.phase, v.status, v.message) for v in replayed.verdicts]
    assert got == [(v.name, v.phase, v.status, v.message) for v in session.verdicts]
    assert {v.phase for v in session.verdicts} == {"run", "baseline", "stress", "recovery", "post"}
    assert session.exit_code == 0, [v for v in session.verdicts if v.status != "pass"]


def test_spikegate_check_reports_each_stress_window_of_a_session(tmp_path: Path) -> None:
    fault = [
        {"t": 30.5, "kind": "fault_start", **REDIS},
        {"t": 36.0, "kind": "fault_stop", **REDIS},
    ]
    d = session_dir(tmp_path / "s", [*SPIKE, *fault])
    code, out = run_cli("check", str(d))
    assert code in (0, 1, 3), out
    report = json.loads((d / "report.json").read_text())
    assert [p["name"] for p in report["phases"]] == [
        "warmup", "baseline", "stress", "recovery", "post", "stress-2", "recovery-2", "post-2",
    ]  # fmt: skip
    judged = {(v["name"], v["phase"]) for v in report["verdicts"]}
    for phase in ("recovery", "recovery-2"):
        assert ("time_to_recover", phase) in judged
    assert 'classname="spikegate.mini.stress-2"' in (d / "junit.xml").read_text()
