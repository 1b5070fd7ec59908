"""`spikegate up`: a hand-made session, judged afterwards like a scripted run.

    spikegate up smoke --max-s 90        (the stack under smoke's base load, no timeline)
      t ~ 8 s   spikegate fault add dsp_latency --proxy dsp-1 ... --for 4
      t ~ 18 s  spikegate load spike --peak 2x --for 4
      t ~ 34 s  SIGINT: the session ends like a complete run, then it is judged

The assertions read what the run recorded (event times, rows, phases), never the test's
own clock: the two disturbances each open a stress phase from the first whole second they
touch and a recovery after them; every acknowledged impression has its row (the session's
end lets the last requests finish); `spikegate replay` writes a scenario that loads.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from spikegate.harness.scenario import load_scenario
from tests.e2e.conftest import (
    cli,
    finish,
    leftovers,
    rows,
    spikegate,
    wait_for_event,
    wait_for_second,
)

pytestmark = [pytest.mark.e2e]


@pytest.mark.timeout(180)
def test_a_hand_made_session_gets_a_stress_and_recovery_phase_per_disturbance(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "session"
    proc = spikegate(["up", "smoke", "--no-live", "--max-s", "90", "--out", str(run_dir)])
    try:
        wait_for_event(run_dir, "run_start", 60)
        wait_for_second(run_dir, 4, proc)  # rows lag the clock by ~3.5 s: t is about 8 s
        fault = cli(
            "fault", "add", "dsp_latency", "--proxy", "dsp-1", "--param", "latency_ms=200",
            "--for", "4", "--run", str(run_dir),
        )  # fmt: skip
        assert fault.returncode == 0, fault.stdout + fault.stderr
        wait_for_second(run_dir, 14, proc)
        spike = cli("load", "spike", "--peak", "2x", "--for", "4", "--run", str(run_dir))
        assert spike.returncode == 0, spike.stdout + spike.stderr
        wait_for_second(run_dir, 30, proc)
        proc.send_signal(signal.SIGINT)
        code, out = finish(proc, 120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in out, out
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["mode"] == "session" and meta["status"] == "complete", out
    assert meta["cleanup"]["clean"] is True
    report = json.loads((run_dir / "report.json").read_text())
    assert code == report["exit_code"], out

    events = rows(run_dir / "events.jsonl")
    fault_t = next(e["t"] for e in events if e["kind"] == "fault_start")
    spike_t = next(e["t"] for e in events if e["kind"] == "load_spike_start")
    phases = {p["name"]: p for p in report["phases"]}
    assert phases["stress"]["start_s"] == int(fault_t)
    assert phases["stress-2"]["start_s"] == int(spike_t)
    assert {"recovery", "recovery-2"} <= set(phases)
    judged = {(v["name"], v["phase"]) for v in report["verdicts"]}
    for phase in ("stress", "stress-2"):
        assert ("graceful_degradation", phase) in judged
    for phase in ("recovery", "recovery-2"):
        assert ("time_to_recover", phase) in judged

    # the session's end let the last requests finish: rows and the ack log agree
    loss = next(v for v in report["verdicts"] if v["name"] == "no_silent_loss")
    assert loss["status"] == "pass", loss
    last = rows(run_dir / "requests.jsonl")[-1]["t"]
    assert last >= int(meta["duration_s"])

    replay = cli("replay", str(run_dir), "--out", str(tmp_path / "replay.toml"))
    assert replay.returncode == 0, replay.stdout + replay.stderr
    scripted = load_scenario(tmp_path / "replay.toml")
    assert [f.fault for f in scripted.faults] == ["dsp_latency"]
    assert leftovers(run_dir, proc.pid) == []
