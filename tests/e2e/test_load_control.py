"""Load under your hand while `spikegate run` runs: `spikegate load set 3x` from a second
process reaches both Locust worker processes through RUN_DIR/control/load.json, the recorded
rows show intended (and sent) at the new rate within a second of the event, and the change
is an event in events.jsonl."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from spikegate.harness.intended import recorded_bid_intended
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

SCENARIO = str(SCENARIOS / "interactive.toml")  # steady 40/s for 14 s
BASE, NEW = 40, 120


def load_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return cli("load", *args)


def bid_sent(row: dict[str, object]) -> int:
    endpoints = row.get("endpoints") or {}
    assert isinstance(endpoints, dict)
    return sum(int(n) for n in (endpoints.get("bid") or {}).values())


@pytest.mark.timeout(90)
def test_load_set_mid_run_is_held_within_a_second_and_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPIKEGATE_RUNTIME_DIR", str(tmp_path / "runtime"))
    run_dir = tmp_path / "run"
    args = ["run", SCENARIO, "--no-live", "--out", str(run_dir)]
    sets = ["load.processes=2", "load.impression_rate=0.0"]  # bids only: exact counts
    proc = spikegate([*args, *(x for s in sets for x in ("--set", s))])
    try:
        wait_for_event(run_dir, "load_start", timeout_s=40)
        t0 = json.loads((run_dir / "meta.json").read_text())["t0_epoch"]
        time.sleep(max(0.0, t0 + 3.5 - time.time()))  # a few seconds at the base rate first
        shown = load_cli("show", "--run", str(run_dir))
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert "40 arrivals/s now" in shown.stdout
        done = load_cli("set", "3x")  # the one live run, found through the publication
        assert done.returncode == 0, done.stdout + done.stderr
        assert "120 arrivals/s now, held at 120/s" in done.stdout
        time.sleep(max(0.0, t0 + 8.0 - time.time()))
        spiked = load_cli("spike", "--peak", "5x", "--for", "3", "--run", str(run_dir))
        assert spiked.returncode == 0, spiked.stdout + spiked.stderr
        assert "spike at 200/s until" in spiked.stdout
        code, out = finish(proc, 60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code in (0, 1), out  # the verdicts are not this test's subject
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "complete", out

    events = rows(run_dir / "events.jsonl")
    [event] = [e for e in events if e["kind"] == "load_set"]
    [spike] = [e for e in events if e["kind"] == "load_spike_start"]
    [spike_end] = [e for e in events if e["kind"] == "load_spike_end"]
    assert (event["action"], event["rate"], event["previous"], event["source"]) == (
        "set", 120.0, None, "cli",
    )  # fmt: skip
    assert (event["rps_before"], event["rps_after"]) == (BASE, NEW)
    t = event["t"]
    ts, until = spike["t"], spike["until_t"]
    assert 3.0 < t < ts - 2.0 and until == pytest.approx(ts + 3.0) and ts + 3.0 < 12.5
    assert (spike["peak"], spike["rps_before"], spike["source"]) == (200.0, NEW, "cli")
    assert (spike_end["t"], spike_end["reason"], spike_end["rps_after"]) == (until, "expired", NEW)
    doc = json.loads((run_dir / "control" / "load.json").read_text())
    assert doc == {"version": 3, "rate": 120.0, "spike": None}  # set, spike, its end

    by_second = {int(r["t"]): r for r in rows(run_dir / "requests.jsonl")}
    intended = {s: recorded_bid_intended(r) for s, r in by_second.items()}
    before = [s for s in range(1, math.floor(t))]
    # every whole second that starts >= 1 s after a change and ends before the next one
    after = [s for s in range(math.ceil(t + 1), math.floor(ts))]
    in_spike = [s for s in range(math.ceil(ts + 1), math.floor(until))]
    back = [s for s in range(math.ceil(until + 1), 14)]
    assert before and after and in_spike and back, (t, ts, until)
    assert [intended[s] for s in before] == [BASE] * len(before), intended
    assert [intended[s] for s in after] == [NEW] * len(after), intended
    assert [intended[s] for s in in_spike] == [200] * len(in_spike), intended
    assert [intended[s] for s in back] == [NEW] * len(back), intended
    # sent follows (the reference target keeps up with 200/s: no shortfall to speak of)
    for s in (*after, *in_spike, *back):
        assert bid_sent(by_second[s]) >= intended[s] - 2, by_second[s]

    # when the generators switched: two whole seconds around each change hold the rate
    # before it, then the rate after (uniform arrivals: the count gives the instant)
    def switched(at: float, old: int, new: int) -> float:
        a = math.floor(at)
        return a + (2 * new - intended[a] - intended[a + 1]) / (new - old)

    for name, at, old, new in (("set", t, BASE, NEW), ("spike", ts, NEW, 200),
                               ("spike end", until, 200, NEW)):  # fmt: skip
        lag = switched(at, old, new) - at
        print(f"live rate {name}: event t={at:.3f} s, generators switched {lag:+.3f} s later")
        assert -0.1 <= lag <= 1.0, (name, at, lag, intended)

    assert not (run_dir / "control.json").exists()
    assert leftovers(run_dir, proc.pid) == []
