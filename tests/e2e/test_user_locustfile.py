"""The user's own locustfile under the arrival schedule, through harness/loadgen.LocustProcess.

    shop_server.py (aiohttp, 127.0.0.1)  <--  Locust: locustfiles/user.py + shape_<shape>.py
                                               importing user_locustfile/<file>.py unchanged

Every run checks the recorder's invariant (each second: sent == sum of outcomes) and its
totals against Locust's own final stats (logs/locust_stats.csv) and the server's counts.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spikegate.contract.env import LOAD_ENV, OUTCOMES_ENV, SEED_ENV
from spikegate.contract.load import LoadSection
from spikegate.contract.outcomes import OutcomeRules
from spikegate.contract.rundir import LOGS_DIR, REQUESTS_FILE, read_jsonl
from spikegate.harness.loadgen import LocustProcess
from spikegate.harness.services import free_port

pytestmark = [pytest.mark.e2e]

FILES = Path(__file__).resolve().parent / "user_locustfile"


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[str]:
    """shop_server.py on a free port; yields its URL, always stops it."""
    port = free_port()
    log = (tmp_path / "shop.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, str(FILES / "shop_server.py"), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"shop_server did not start; see {tmp_path / 'shop.log'}")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def run_user_locustfile(
    run_dir: Path, host: str, locustfile: str, *, processes: int = 1, **load: Any
) -> tuple[int, list[dict[str, Any]], dict[str, tuple[int, int]]]:
    """One Locust run as the harness starts it; (exit code, rows, Locust's CSV totals by
    name: (requests, failures), "Aggregated" included)."""
    path = str(FILES / locustfile)
    section = LoadSection.model_validate({**load, "locustfile": path, "processes": processes})
    env = {
        LOAD_ENV: json.dumps(section.model_dump(mode="json")),
        OUTCOMES_ENV: OutcomeRules().to_json(),
        SEED_ENV: "7",
    }
    logs = run_dir / LOGS_DIR
    locust = LocustProcess(
        logs,
        host=host,
        shape=section.shape,
        processes=processes,
        env=env,
        run_dir=run_dir,
        t0_epoch=time.time() + 3.0 + 0.5 * (processes - 1),  # as the orchestrator allows
        locustfile=path,
    )
    locust.start()
    try:
        deadline = time.monotonic() + section.duration_s + 45
        while locust.alive and time.monotonic() < deadline:
            time.sleep(0.2)
        code = locust.returncode
    finally:
        locust.stop()
    log_tail = (logs / "locust.log").read_text(errors="replace")[-3000:]
    assert code is not None, f"locust did not end on its own:\n{log_tail}"
    rows = [row for _, row in read_jsonl(run_dir / REQUESTS_FILE)]
    with (logs / "locust_stats.csv").open() as fh:
        stats = {
            r["Name"]: (int(r["Request Count"]), int(r["Failure Count"]))
            for r in csv.DictReader(fh)
        }
    assert rows, log_tail
    return code, rows, stats


def server_counts(host: str) -> dict[str, int]:
    with urllib.request.urlopen(host + "/stats", timeout=5) as resp:
        counts: dict[str, int] = json.loads(resp.read())
    return counts


def assert_recorded_like_locust(rows: list[dict[str, Any]], stats: dict[str, Any]) -> None:
    """Each second adds up; the totals, overall and per name, are Locust's own."""
    ts = [r["t"] for r in rows]
    assert ts == [float(t) for t in range(int(ts[0]), int(ts[0]) + len(ts))]  # no gaps
    for r in rows:
        assert r["sent"] == sum(r["outcomes"].values()), r
        assert r["sent"] <= r["intended"], r
        assert r["endpoints"] == {} or all(not v for v in r["endpoints"].values()), r
        assert r["publishers"] == {}, r
    assert sum(r["sent"] for r in rows) == stats["Aggregated"][0]
    by_name: Counter[str] = Counter()
    for r in rows:
        for name, entry in r["names"].items():
            by_name[name] += sum(entry["outcomes"].values())
    assert dict(by_name) == {k: v[0] for k, v in stats.items() if k != "Aggregated"}


def totals(rows: list[dict[str, Any]], key: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for r in rows:
        out.update(r[key])
    return out


@pytest.mark.timeout(150)
def test_the_documentation_style_locustfile_runs_unchanged_under_the_flash_crowd(
    tmp_path: Path, shop: str
) -> None:
    code, rows, stats = run_user_locustfile(
        tmp_path / "run",
        shop,
        "locustfile.py",
        shape="flash_crowd",
        duration_s=12,
        warmup_s=2,
        base_rps=10,
        peak_rps=40,
        spike_at_s=5,
        spike_for_s=3,
    )
    assert code == 0
    assert_recorded_like_locust(rows, stats)
    # the spike lands in its own seconds: one task per intended arrival, none skipped
    by_t = {r["t"]: r for r in rows}
    for t in range(12):
        want = 40 if 5 <= t < 8 else 10
        assert by_t[float(t)]["tasks"] == {"intended": want, "run": want, "errors": 0,
                                           "unfinished": 0}, t  # fmt: skip
    # Locust ran no user of its own: every request comes from an arrival's one task
    # (hello_world: /hello + /world; view_items: 5 x /item) or an instance's on_start
    arrivals = sum(r["tasks"]["run"] for r in rows)
    hello, items = stats["/hello"][0], stats["/item"][0]
    assert stats["/world"][0] == hello and items % 5 == 0
    assert hello + items // 5 == arrivals == 12 * 10 + 3 * 30
    assert 0 < stats["/login"][0] <= 60  # one per pooled instance, not one per arrival
    assert 0.15 < hello / arrivals < 0.35  # weights 1:3, choice seeded
    assert server_counts(shop) == {k: v[0] for k, v in stats.items() if k != "Aggregated"}
    # outcomes by the default [outcomes]: 2xx admitted, 429/503 designed rejections
    outcomes = totals(rows, "outcomes")
    assert outcomes["rate_limited"] == 2 * (items // 5)  # ids 3 and 4 of every view
    assert outcomes["overloaded"] == stats["/world"][1] > 0  # every 5th /world: 503
    assert (
        outcomes["ok"] == stats["Aggregated"][0] - outcomes["rate_limited"] - outcomes["overloaded"]
    )
    # id 4's 429 has no Retry-After: noted once per view
    assert totals(rows, "retry_after_invalid") == {"rate_limited": items // 5}
    spike = by_t[6.0]["names"]
    assert set(spike) >= {"/hello", "/world", "/item"}
    assert spike["/item"]["admitted_p99_ms"] is not None


@pytest.mark.timeout(120)
def test_a_fast_http_user_with_tasksets_and_checks_runs_closed_like_plain_locust(
    tmp_path: Path, shop: str
) -> None:
    code, rows, stats = run_user_locustfile(
        tmp_path / "run", shop, "fast_user.py", mode="closed", duration_s=4, warmup_s=0,
        max_inflight=3,
    )  # fmt: skip
    assert code == 0
    assert_recorded_like_locust(rows, stats)
    assert all(r["intended"] == r["sent"] for r in rows)
    outcomes = totals(rows, "outcomes")
    # catch_response failure() on a 200 ("wrong item", id 8) is error_5xx; 429s keep theirs
    items = stats["/item"][0]
    assert items >= 20
    assert outcomes["error_5xx"] == stats["/item"][1] - outcomes["rate_limited"]
    assert abs(outcomes["error_5xx"] - items / 10) <= 3
    assert outcomes["client_error"] == outcomes["timeout"] == outcomes["conn_error"] == 0
    assert stats["/world (checked)"][0] > 0  # the TaskSet ran
    assert totals(rows, "tasks")["errors"] == 0


@pytest.mark.timeout(120)
def test_a_locustfile_that_raises_is_counted_and_the_run_still_succeeds_on_two_processes(
    tmp_path: Path, shop: str
) -> None:
    code, rows, stats = run_user_locustfile(
        tmp_path / "run", shop, "flaky_user.py", processes=2, duration_s=5, warmup_s=1,
        base_rps=20,
    )  # fmt: skip
    assert code == 0  # the user's bug is data, not a crash of the generator
    assert_recorded_like_locust(rows, stats)
    full = [r for r in rows if 0 <= r["t"] < 5]
    assert all(r["processes"] == 2 for r in full)
    tasks = totals(rows, "tasks")
    assert tasks["intended"] == tasks["run"] == 100
    assert tasks["errors"] == stats["/world"][0]  # every broken() raised after its request
    assert stats["/hello"][0] + stats["/world"][0] == 100
