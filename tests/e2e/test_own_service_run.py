"""`spikegate run` on your own service, end to end: a plain documentation-style locustfile,
unchanged, under a flash crowd while a fault slows the service's declared dependency.

    spikegate run  ->  cache: redis-server  <-  proxy "cache" (latency fault)  <-  shop_server.py
                       Locust: locustfiles/user.py + user_locustfile/locustfile.py (unchanged)

The per-second rows add up (sent = the sum of outcomes, every second), their totals equal
Locust's own final stats for the same run (logs/locust_stats.csv), the proxy's own byte
counters show the dependency's traffic every second, and the verdicts that have no evidence
for a black box are skipped with their reason instead of making the run inconclusive.
"""

from __future__ import annotations

import csv
import json
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.conftest import finish, leftovers, rows, spikegate

pytestmark = [pytest.mark.e2e]

FILES = Path(__file__).resolve().parent / "user_locustfile"
SCENARIO = f"""
name = "own-service"

[target]
kind = "command"
command = ["{sys.executable}", "{FILES / "shop_server.py"}",
           "--port", "{{port}}", "--redis", "{{proxy.cache}}"]
ready = "/healthz"

[[dependencies]]
name = "cache"
start = "redis"

[load]
locustfile = "{FILES / "locustfile.py"}"
shape = "flash_crowd"
duration_s = 18
warmup_s = 2
base_rps = 10
peak_rps = 40
spike_at_s = 6
spike_for_s = 4
client_timeout_s = 3

[[faults]]
at_s = 5
for_s = 5
fault = "latency"
proxy = "cache"
params = {{ latency_ms = 40 }}

[phases]
recovery_s = 4
"""


@pytest.mark.timeout(150)
def test_a_documentation_locustfile_runs_unchanged_and_its_rows_add_up(tmp_path: Path) -> None:
    scenario = tmp_path / "own.toml"
    scenario.write_text(textwrap.dedent(SCENARIO), encoding="utf-8")
    run_dir = tmp_path / "run"
    proc = spikegate(["run", str(scenario), "--no-live", "--out", str(run_dir)])
    code, out = finish(proc, 140)
    assert "Traceback" not in out, out
    assert code in (0, 1), out  # judged (pass or fail), never inconclusive
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["cleanup"]["clean"] is True, meta

    requests = rows(run_dir / "requests.jsonl")
    totals: Counter[str] = Counter()
    for r in requests:
        assert r["sent"] == sum(r["outcomes"].values()), r["t"]
        totals.update({k: v for k, v in r["outcomes"].items() if v})
    sent = sum(r["sent"] for r in requests)
    by_name: Counter[str] = Counter()
    for r in requests:
        for name, entry in r["names"].items():
            by_name[name] += sum(entry["outcomes"].values())
    assert {"/hello", "/world", "/item", "/login"} <= set(by_name), by_name

    with (run_dir / "logs" / "locust_stats.csv").open(encoding="utf-8") as fh:
        stats = {row["Name"]: int(row["Request Count"]) for row in csv.DictReader(fh)}
    assert sent == stats["Aggregated"] > 100
    for name, n in by_name.items():
        assert stats[name] == n, name
    # the service's designed rejections are counted as such, not as failures
    assert totals["rate_limited"] > 0 and totals["overloaded"] > 0, totals

    samples = rows(run_dir / "samples.jsonl")
    seconds = [s for s in samples if 0 <= s["t"] < 18]
    assert len(seconds) >= 17
    assert all("cache" in (s.get("proxy_bytes") or {}) for s in seconds[1:])
    assert sum(s["proxy_bytes"]["cache"]["received"] for s in seconds[1:]) > 0

    report = json.loads((run_dir / "report.json").read_text())
    verdicts = {(v["name"], v["phase"]): v for v in report["verdicts"]}
    skipped = [v for v in verdicts.values() if v["status"] == "skipped"]
    assert skipped and all(v["message"] for v in skipped)
    assert verdicts[("layer.edge", "stress")]["status"] == "skipped"
    assert not [v for v in verdicts.values() if v["status"] == "inconclusive"], report
    assert leftovers(run_dir, proc.pid) == []
