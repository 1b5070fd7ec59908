"""Master and workers as separate process trees (load.workers): the run's Locust master merges
what `spikegate worker --master HOST:PORT` processes send over Locust's messaging, each worker
with its own folder and no shared run directory.

- the merged rows are, second by second, the sum of what each worker sent (its own copy, on
  its own disk), and every acked impression is accounted by id;
- a worker killed mid-run makes the run inconclusive (exit 3) naming it, nothing left running;
- workers that do not come end the run with exit 4 and the command that starts one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.e2e.conftest import SCENARIOS, finish, leftovers, rows, spikegate

SCENARIO = str(SCENARIOS / "workers.toml")


def master_of(run_dir: Path, proc: subprocess.Popen[str], timeout_s: float = 30.0) -> str:
    """HOST:PORT of the run's Locust master, from meta.json once it is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"spikegate ended before its master was up:\n{proc.communicate()[0]}")
        try:
            meta = json.loads((run_dir / "meta.json").read_text())
            where = meta["components"]["locust"]["master"]
            return str(where)
        except (OSError, ValueError, KeyError):
            time.sleep(0.1)
    pytest.fail(f"no master address in {run_dir / 'meta.json'} within {timeout_s} s")


def worker(master: str, log_dir: Path) -> subprocess.Popen[str]:
    return spikegate(["worker", "--master", master, "--log-dir", str(log_dir)])


def own_rows(log_dir: Path) -> list[dict[str, Any]]:
    """The rows a worker kept of what it sent the master (one folder per process)."""
    return [r for path in sorted(log_dir.glob("sent/*/requests.jsonl")) for r in rows(path)]


def own_acked(log_dir: Path) -> list[str]:
    return [
        line
        for path in sorted(log_dir.glob("sent/*/acked.txt"))
        for line in path.read_text().split()
    ]


def master_acked(run_dir: Path) -> list[str]:
    return [
        line
        for path in sorted((run_dir / "acked").glob("*.txt"))
        for line in path.read_text().split()
    ]


def alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def still_running(marker: str) -> list[str]:
    """Processes whose command line holds `marker` (a worker's --master-port, a log dir)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = " ".join(p.info["cmdline"] or ())
        if marker in cmd and p.pid != os.getpid() and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(f"{p.pid} {cmd}")
    return found


@pytest.mark.timeout(90)
def test_master_and_two_workers_add_up_exactly_and_account_every_acked_id(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    proc = spikegate(["run", SCENARIO, "--no-live", "--out", str(run_dir)])
    master = master_of(run_dir, proc)
    logs = [tmp_path / "w1", tmp_path / "w2"]
    workers = [worker(master, d) for d in logs]
    code, out = finish(proc, 70)
    outs = [finish(w, 20) for w in workers]
    assert code == 0, out
    assert f"spikegate worker --master {master}" in out
    for wcode, wout in outs:
        assert wcode == 0, wout
        assert "the run ended" in wout

    merged = {int(r["t"]): r for r in rows(run_dir / "requests.jsonl")}
    per_worker = [{int(r["t"]): r for r in own_rows(d)} for d in logs]
    assert all(per_worker), "each worker kept its own rows"
    seconds = set(merged) | set(per_worker[0]) | set(per_worker[1])
    assert set(merged) == seconds, "one merged row for every second any worker sent"
    for t in sorted(seconds):
        parts = [w[t] for w in per_worker if t in w]
        for key in ("intended", "sent"):
            assert merged[t][key] == sum(p[key] for p in parts), (t, key)
        want = sum((Counter(p["outcomes"]) for p in parts), Counter())
        assert +Counter(merged[t]["outcomes"]) == +want, t
        assert merged[t]["processes"] == len(parts), t
    load_seconds = [t for t in range(10) if merged[t]["intended"]]
    assert len(load_seconds) >= 9 and all(merged[t]["processes"] == 2 for t in load_seconds)
    assert all(w[t]["sent"] > 0 for w in per_worker for t in range(1, 9)), "both generated"
    assert sum(merged[t]["sent"] for t in range(10)) >= 0.95 * 80 * 10

    ids = [own_acked(d) for d in logs]
    assert ids[0] and ids[1] and not set(ids[0]) & set(ids[1])
    got = master_acked(run_dir)
    assert sorted(got) == sorted(ids[0] + ids[1]), "every acked id reached the master, once"
    imp = json.loads((run_dir / "impressions.json").read_text())
    assert imp["complete"] is True and imp["missing"] == 0 and imp["acked"] == len(got)

    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["cleanup"]["clean"] is True
    assert leftovers(run_dir, proc.pid) == []
    assert still_running(f"--master-port {master.rsplit(':', 1)[1]}") == []


@pytest.mark.timeout(90)
def test_a_worker_killed_mid_run_makes_the_run_inconclusive_naming_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = spikegate(["run", SCENARIO, "--no-live", "--out", str(run_dir)])
    master = master_of(run_dir, proc)
    logs = [tmp_path / "w1", tmp_path / "w2"]
    workers = [worker(master, d) for d in logs]
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and not list(logs[1].glob("sent/*/requests.jsonl")):
        time.sleep(0.2)  # the second worker has sent its first rows: the load runs
    victim = psutil.Process(workers[1].pid)
    tree = [victim, *victim.children(recursive=True)]
    os.killpg(workers[1].pid, signal.SIGKILL)  # the `spikegate worker` and its session
    code, out = finish(proc, 70)
    other_code, other_out = finish(workers[0], 20)
    finish(workers[1], 10)  # killed: its output pipe is read and closed
    assert code == 3, out
    flat = " ".join(out.split())
    assert "warning: worker " in flat and "the run is inconclusive" in flat, out
    events = rows(run_dir / "events.jsonl")
    crashes = [e for e in events if e["kind"] == "component_crash"]
    assert len(crashes) == 1 and crashes[0]["name"].startswith("locust worker "), crashes
    workers_doc = json.loads((run_dir / "workers.json").read_text())
    lost = [w for w in workers_doc["workers"].values() if w["state"] == "missing"]
    assert len(lost) == 1 and lost[0]["pid"] in {p.pid for p in tree}, workers_doc
    assert crashes[0]["name"].removeprefix("locust worker ") in workers_doc["workers"]
    report = json.loads((run_dir / "report.json").read_text())
    valid = [v for v in report["verdicts"] if v["name"] == "valid_run" and v["phase"] == "run"]
    assert valid[0]["status"] == "inconclusive" and "locust worker" in valid[0]["message"]
    assert other_code == 0, other_out
    assert leftovers(run_dir, proc.pid) == []
    assert [p.pid for p in tree if alive(p)] == []
    assert still_running(f"--master-port {master.rsplit(':', 1)[1]}") == []


@pytest.mark.timeout(60)
def test_workers_that_do_not_come_end_the_run_with_exit_4_and_the_command(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    proc = spikegate(
        ["run", SCENARIO, "--no-live", "--out", str(run_dir), "--set", "load.workers_wait_s=4"]
    )
    master = master_of(run_dir, proc)
    one = worker(master, tmp_path / "w1")
    code, out = finish(proc, 45)
    wcode, wout = finish(one, 20)
    assert code == 4, out
    flat = " ".join(out.split())
    assert (
        f"expected 2 workers, 1 joined within 4 s: start them with "
        f"`spikegate worker --master {master}`"
    ) in flat, out
    assert "Traceback" not in out
    assert wcode == 0, wout  # the master ended the run: the worker leaves cleanly
    assert leftovers(run_dir, proc.pid) == []
    assert still_running(f"--master-port {master.rsplit(':', 1)[1]}") == []
