"""Locust headless (always a subprocess) with our user + recorder against a small local server.

The server (fake_target.py, aiohttp) answers /bid with a fixed 200/204/429 cycle and
/impression with 202, optionally after a delay. Rates are small: the machine is shared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram

from spikegate.contract.rundir import ACKED_DIR, REQUESTS_FILE, read_jsonl
from spikegate.harness.services import free_port

pytestmark = [pytest.mark.integration]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
LOCUST = Path(sys.executable).parent / "locust"
LOCUSTFILES = ROOT / "locustfiles"


@contextmanager
def fake_target(log: Path, delay_ms: float = 0.0) -> Iterator[str]:
    """fake_target.py on a free port; yields its URL, always stops it."""
    port = free_port()
    cmd = [sys.executable, str(HERE / "fake_target.py"), "--port", str(port)]
    if delay_ms:
        cmd += ["--delay-ms", str(delay_ms)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 15
            while True:
                try:
                    with urllib.request.urlopen(url + "/healthz", timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"fake target did not start; see {log}") from None
                    time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with fake_target(tmp_path / "server.log") as url:
        yield url


@pytest.fixture
def slow_server(tmp_path: Path) -> Iterator[str]:
    with fake_target(tmp_path / "slow.log", delay_ms=400) as url:
        yield url


def run_locust(
    run_dir: Path,
    host: str,
    load: dict[str, Any] | str,
    *,
    shape: str = "steady",
    processes: int = 1,
    timeout_s: float = 60,
    publishers: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Locust headless; Locust's own stats go to run_dir.parent / "locust.json"."""
    files = f"{LOCUSTFILES / 'adserver.py'},{LOCUSTFILES / f'shape_{shape}.py'}"
    cmd = [str(LOCUST), "-f", files, "--headless", "--host", host]
    cmd += ["--json-file", str(run_dir.parent / "locust")]
    if processes > 1:
        cmd += ["--processes", str(processes)]
    cmd += ["--exit-code-on-error", "0", "--stop-timeout", "3", "--only-summary"]
    cmd += ["--loglevel", "WARNING"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIKEGATE_")}
    env["SPIKEGATE_LOAD"] = load if isinstance(load, str) else json.dumps(load)
    env["SPIKEGATE_SEED"] = "3"
    env["SPIKEGATE_RUN_DIR"] = str(run_dir)
    if publishers is not None:
        env["SPIKEGATE_PUBLISHERS"] = json.dumps(publishers)
    return subprocess.run(
        cmd, env=env, cwd=run_dir.parent, capture_output=True, text=True, timeout=timeout_s
    )


def locust_stats(run_dir: Path) -> dict[str, dict[str, int]]:
    """Locust's own totals by request name: {name: {"requests": n, "failures": n}}."""
    entries = json.loads((run_dir.parent / "locust.json").read_text())
    return {
        e["name"]: {"requests": int(e["num_requests"]), "failures": int(e["num_failures"])}
        for e in entries
    }


def rows(run_dir: Path) -> list[dict[str, Any]]:
    return [row for _, row in read_jsonl(run_dir / REQUESTS_FILE)]


def assert_one_row_per_second(got: list[dict[str, Any]]) -> None:
    ts = [r["t"] for r in got]
    assert ts == [float(t) for t in range(int(ts[0]), int(ts[0]) + len(ts))], ts


def assert_outcomes_sum_to_sent(got: list[dict[str, Any]]) -> None:
    for r in got:
        assert sum(r["outcomes"].values()) == r["sent"], r
        assert r["sent"] <= r["intended"], r


def bids(row: dict[str, Any]) -> int:
    return sum(row["endpoints"].get("bid", {}).values())


@pytest.mark.timeout(120)
def test_healthy_target_gets_the_intended_rate_with_one_row_per_second(
    tmp_path: Path, server: str
) -> None:
    run_dir = tmp_path / "run"
    load = {"duration_s": 8, "warmup_s": 1, "base_rps": 120, "impression_rate": 0.5}
    done = run_locust(run_dir, server, load)
    assert done.returncode == 0, done.stderr[-3000:]
    got = rows(run_dir)
    assert_one_row_per_second(got)
    assert got[0]["t"] == 0.0 and got[-1]["t"] >= 7.0
    assert_outcomes_sum_to_sent(got)
    intended = sum(r["intended"] for r in got)
    sent = sum(r["sent"] for r in got)
    assert sent >= 0.95 * intended, (sent, intended)
    # every bid second of the schedule carries the rate (intended exactly, sent within 5%)
    assert sum(bids(r) for r in got) >= 0.95 * 120 * 8
    full = [r for r in got if 0 < r["t"] < 7]
    assert all(r["outcomes"]["rate_limited"] > 0 and r["outcomes"]["no_bid"] > 0 for r in full)
    for r in full:
        assert r["decisions"]["rate_limited"] == r["outcomes"]["rate_limited"]
        hist = HdrHistogram.decode(r["hist_admitted"])
        admitted = r["outcomes"]["ok"] + r["outcomes"]["no_bid"] + r["outcomes"]["accepted"]
        assert hist.get_total_count() == admitted
        assert (
            HdrHistogram.decode(r["hist_rejected"]).get_total_count()
            == (r["outcomes"]["rate_limited"])
        )
        assert r["admitted_p99_ms"] is not None and r["processes"] == 1
        assert r["cpu_percent"] is not None
    # acked impression ids: one file for the process, one unique id per 202
    files = list((run_dir / ACKED_DIR).glob("*.txt"))
    assert len(files) == 1
    ids = files[0].read_text().split()
    assert len(ids) == len(set(ids)) == sum(r["outcomes"]["accepted"] for r in got) > 0


@pytest.mark.timeout(150)
def test_two_processes_write_exactly_one_merged_row_per_second(tmp_path: Path, server: str) -> None:
    run_dir = tmp_path / "run"
    load = {
        "shape": "flash_crowd",
        "duration_s": 9,
        "warmup_s": 1,
        "base_rps": 60,
        "peak_rps": 240,
        "spike_at_s": 4,
        "spike_for_s": 2,
        "impression_rate": 0.3,
    }
    done = run_locust(run_dir, server, load, shape="flash_crowd", processes=2)
    assert done.returncode == 0, done.stderr[-3000:]
    got = rows(run_dir)
    assert_one_row_per_second(got)
    assert_outcomes_sum_to_sent(got)
    by_t = {r["t"]: r for r in got}
    assert all(by_t[t]["processes"] == 2 for t in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0))
    # the spike lands in its own seconds, split across both processes
    assert by_t[4.0]["intended"] >= 240 and by_t[5.0]["intended"] >= 240
    assert by_t[3.0]["intended"] < 120 and by_t[6.0]["intended"] < 120
    assert sum(r["sent"] for r in got) >= 0.95 * sum(r["intended"] for r in got)
    assert len(list((run_dir / ACKED_DIR).glob("*.txt"))) == 2


@pytest.mark.timeout(120)
def test_slow_target_shows_the_shortfall_instead_of_a_lower_rate(
    tmp_path: Path, slow_server: str
) -> None:
    run_dir = tmp_path / "run"
    # 400 ms per answer with at most 8 in flight: ~20 rps can be sent of the 100 intended
    load = {"duration_s": 6, "warmup_s": 1, "base_rps": 100, "max_inflight": 8}
    done = run_locust(run_dir, slow_server, load)
    assert done.returncode == 0, done.stderr[-3000:]
    got = rows(run_dir)
    assert_one_row_per_second(got)
    assert_outcomes_sum_to_sent(got)
    full = [r for r in got if 0 < r["t"] < 5]
    assert all(r["intended"] >= 95 for r in full)  # the offered load did not drop
    assert all(r["sent"] <= 0.5 * r["intended"] for r in full)  # the shortfall is recorded
    assert sum(r["outcomes"]["ok"] for r in got) > 0


@pytest.mark.timeout(60)
def test_bad_load_settings_exit_2_naming_the_field(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = run_locust(run_dir, "http://127.0.0.1:9", {"base_rps": -5}, timeout_s=50)
    assert done.returncode == 2
    assert (
        "SPIKEGATE_LOAD: load.base_rps: Input should be greater than or equal to 0" in done.stderr
    )
    assert "Traceback" not in done.stderr


@pytest.mark.timeout(120)
def test_locust_counts_designed_rejections_as_successes_and_the_rest_as_failures(
    tmp_path: Path, server: str
) -> None:
    """Locust's own stats see every request once; 429 with a decision header is no failure."""
    run_dir = tmp_path / "run"
    load = {"duration_s": 4, "warmup_s": 1, "base_rps": 50, "impression_rate": 1.0}
    done = run_locust(run_dir, server, load)
    assert done.returncode == 0, done.stderr[-3000:]
    got = rows(run_dir)
    stats = locust_stats(run_dir)
    bid = {
        o: sum(r["endpoints"].get("bid", {}).get(o, 0) for r in got) for o in ("ok", "rate_limited")
    }
    impressions = sum(r["endpoints"].get("impression", {}).get("accepted", 0) for r in got)
    assert bid["rate_limited"] > 0 and impressions > 0
    assert stats["/bid"] == {"requests": sum(bids(r) for r in got), "failures": 0}
    assert stats["/impression"] == {"requests": impressions, "failures": 0}


@pytest.mark.timeout(120)
def test_a_rejected_api_key_is_a_client_error_and_a_locust_failure(
    tmp_path: Path, server: str
) -> None:
    run_dir = tmp_path / "run"
    load = {"duration_s": 3, "warmup_s": 1, "base_rps": 40}
    done = run_locust(run_dir, server, load, publishers={"pub-1": ""})  # the target answers 401
    assert done.returncode == 0, done.stderr[-3000:]
    got = rows(run_dir)
    sent = sum(r["sent"] for r in got)
    assert sent > 0 and sum(r["outcomes"]["client_error"] for r in got) == sent
    assert locust_stats(run_dir)["/bid"] == {"requests": sent, "failures": sent}


@pytest.mark.timeout(120)
def test_client_timeout_bounds_each_request_and_is_recorded_as_timeout(
    tmp_path: Path, slow_server: str
) -> None:
    """client_timeout_s (0.15 s) cuts the 400 ms answers: no request waits for them."""
    run_dir = tmp_path / "run"
    load = {"duration_s": 3, "warmup_s": 1, "base_rps": 20, "client_timeout_s": 0.15}
    done = run_locust(run_dir, slow_server, load)
    assert done.returncode == 0, done.stderr[-3000:]
    got = rows(run_dir)
    assert_outcomes_sum_to_sent(got)
    sent = sum(r["sent"] for r in got)
    assert sent >= 40 and sum(r["outcomes"]["timeout"] for r in got) == sent
    assert locust_stats(run_dir)["/bid"]["failures"] == sent


@pytest.mark.timeout(120)
def test_closed_mode_sends_back_to_back_with_every_request_recorded_once(
    tmp_path: Path, server: str
) -> None:
    """The benchmark mode: intended = sent, rows add up, Locust and the recorder agree."""
    run_dir = tmp_path / "run"
    load = {"mode": "closed", "duration_s": 3, "warmup_s": 0, "max_inflight": 3}
    done = run_locust(run_dir, server, load)
    assert done.returncode == 0, done.stderr[-3000:]
    got = rows(run_dir)
    assert_one_row_per_second(got)
    assert_outcomes_sum_to_sent(got)
    assert all(r["intended"] == r["sent"] for r in got)
    sent = sum(r["sent"] for r in got)
    assert sent > 100  # back to back, not paced by base_rps
    stats = locust_stats(run_dir)
    assert stats["/bid"]["requests"] + stats.get("/impression", {"requests": 0})["requests"] == sent
