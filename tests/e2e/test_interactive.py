"""Faults by hand while `spikegate run` runs: `spikegate fault add` (a second process) finds
the live run, the fault lands on the run's proxy, expires on time, is recorded as a manual
fault window that the checker and the reports use, and nothing is left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from spikegate.harness.history import load_history
from tests.e2e.conftest import (
    SCENARIOS,
    cli,
    finish,
    leftovers,
    rows,
    spikegate,
    wait_for_event,
)

pytestmark = [pytest.mark.e2e]

SCENARIO = str(SCENARIOS / "interactive.toml")


def fault_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return cli("fault", *args)


# slow: `spikegate fault add` through the same control server is in make test twice over
# (tests/e2e/test_session.py from the CLI, tests/e2e/test_live_page.py from the page)
@pytest.mark.slow
@pytest.mark.timeout(90)
def test_fault_added_by_hand_is_recorded_judged_and_cleaned_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = tmp_path / "runtime"
    monkeypatch.setenv("SPIKEGATE_RUNTIME_DIR", str(runtime))  # the run and the CLI both
    run_dir = tmp_path / "run"
    proc = spikegate(["run", SCENARIO, "--no-live", "--out", str(run_dir)])
    try:
        wait_for_event(run_dir, "load_start", timeout_s=40)
        control = json.loads((run_dir / "control.json").read_text())
        assert control["pid"] == proc.pid and control["scenario"] == "e2e-interactive"
        assert (runtime / "live" / f"{proc.pid}.json").is_file()
        added = fault_cli("add", "redis_latency", "--param", "latency_ms=50", "--for", "3")
        assert added.returncode == 0, added.stdout + added.stderr
        assert "added m1: redis_latency on redis" in added.stdout
        listed = fault_cli("ls", "--run", str(run_dir))
        assert listed.returncode == 0, listed.stdout + listed.stderr
        code, out = finish(proc, 60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code in (0, 1), out  # the verdicts are not this test's subject
    assert f"control page: {control['control_url']}/" in out
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "complete", out
    assert meta["cleanup"]["clean"] is True and meta["cleanup"]["toxics_left"] == []

    events = rows(run_dir / "events.jsonl")
    faults = [e for e in events if e["kind"].startswith("fault_")]
    assert [(e["kind"], e["id"], e["source"]) for e in faults] == [
        ("fault_start", "m1", "manual"),
        ("fault_stop", "m1", "manual"),
    ], faults
    start, stop = faults
    assert start["proxy"] == "redis" and start["params"]["latency_ms"] == 50
    # 3 s, never much early, at most 1.5 s late on a busy machine (exact timeline: unit tests)
    assert stop["reason"] == "expired" and 2.5 <= stop["t"] - start["t"] <= 3.0 + 1.5

    history = load_history(run_dir)
    [window] = history.faults
    assert (window.proxy, window.fault, window.source) == ("redis", "redis_latency", "manual")
    assert window.start_s == pytest.approx(start["t"]) and window.end_s == pytest.approx(stop["t"])
    report = json.loads((run_dir / "report.json").read_text())
    [shown] = report["faults"]
    assert shown["source"] == "manual" and shown["start_s"] == pytest.approx(start["t"])
    recover = [v for v in report["verdicts"] if v["name"] == "time_to_recover"]
    assert recover and recover[0]["evidence"]["disturbance_end_s"] == pytest.approx(stop["t"])

    assert not (run_dir / "control.json").exists()
    assert not list((runtime / "live").glob("*.json"))
    assert leftovers(run_dir, proc.pid) == []  # the control port included (meta components)
