"""Ctrl-C (SIGINT) or SIGTERM in the middle of a run: status interrupted, exit 130/143, and no
process, toxic or bound port left behind, 5 times out of 5."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import SCENARIOS, finish, leftovers, rows, spikegate, wait_for_event

pytestmark = [pytest.mark.e2e]

SCENARIO = str(SCENARIOS / "interrupt.toml")


def _interrupt_once(run_dir: Path, sig: signal.Signals, *, twice: bool = False) -> None:
    proc = spikegate(["run", SCENARIO, "--no-live", "--out", str(run_dir)])
    try:
        wait_for_event(run_dir, "load_start", timeout_s=40)
        time.sleep(1.5)  # load flowing, the Redis fault applied
        proc.send_signal(sig)
        if twice:  # a second Ctrl-C means hurry, still no orphans
            time.sleep(0.2)
            proc.send_signal(sig)
        code, out = finish(proc, 40)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 128 + sig, out
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "interrupted"
    assert meta["cleanup"]["clean"] is True, meta["cleanup"]
    assert meta["cleanup"]["toxics_left"] == []
    kinds = [e["kind"] for e in rows(run_dir / "events.jsonl")]
    assert "interrupted" in kinds and kinds[-1] == "run_end"
    assert leftovers(run_dir, proc.pid) == []


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_leaves_nothing_behind_5_of_5(tmp_path: Path, sig: signal.Signals) -> None:
    for attempt in range(5):
        _interrupt_once(tmp_path / f"run-{attempt}", sig, twice=attempt == 4)


@pytest.mark.timeout(60)
def test_sigint_during_bring_up_stops_what_was_started(tmp_path: Path) -> None:
    run_dir = tmp_path / "early"
    proc = spikegate(["run", SCENARIO, "--no-live", "--out", str(run_dir)])
    deadline = time.monotonic() + 30
    while not (run_dir / "logs" / "dsp.log").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    code, out = finish(proc, 40)
    assert code == 130, out
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "interrupted" and meta["cleanup"]["clean"] is True
    assert leftovers(run_dir, proc.pid) == []
