"""Benchmark of the harness itself; prints JSON.

    python tests/bench/harness.py [--bring-ups 5] [--scenario smoke] [--skip-run]

- stack start-up: the median (and all) of several full bring-ups of the reference stack
  (redis, chaos server + proxies, Kafka, DSP bidders, target), each torn down again;
- harness CPU during a run: `spikegate run SCENARIO --no-live` as a subprocess, sampled once
  a second with psutil: the harness process itself versus all its descendants (the stack and
  Locust), as CPU seconds and average percent of one core.

Not a timed test: run it by hand on a quiet machine and quote the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from spikegate.harness.scenario import load_scenario  # noqa: E402
from spikegate.harness.stack import Stack, StackSettings  # noqa: E402


def bring_ups(n: int) -> dict[str, Any]:
    sc = load_scenario("smoke")
    times: list[float] = []
    per_component: list[dict[str, float]] = []
    for _ in range(n):
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = Path(tmp)
            stack = Stack(run_dir, StackSettings(dsp_count=sc.stack.dsp_count, seed=sc.seed))
            spool = str(run_dir / "spool")
            try:
                stack.up(
                    lambda r, k, d, spool=spool: sc.target_config(
                        redis_url=r, kafka_bootstrap=k, dsp_urls=d, spool_dir=spool
                    )
                )
                times.append(stack.startup_s)
                per_component.append(dict(stack.timings))
            finally:
                stack.close()
    return {
        "bring_ups": n,
        "startup_median_s": round(statistics.median(times), 3),
        "startup_max_s": round(max(times), 3),
        "startup_all_s": [round(t, 3) for t in times],
        "ready_at_s_median": {
            name: round(statistics.median(t[name] for t in per_component), 3)
            for name in per_component[0]
        },
    }


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def harness_cpu(scenario: str) -> dict[str, Any]:
    """CPU seconds of the harness process versus its children over one run."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        started = time.monotonic()
        popen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "spikegate.harness",
                "run",
                scenario,
                "--no-live",
                "--out",
                str(out),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        parent = psutil.Process(popen.pid)
        own = 0.0
        children: dict[int, float] = {}
        while popen.poll() is None:
            try:
                own = _cpu(parent)
                for child in parent.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        children[child.pid] = _cpu(child)
            except psutil.Error:
                break
            time.sleep(0.5)
        wall = time.monotonic() - started
        meta = json.loads((out / "meta.json").read_text()) if (out / "meta.json").exists() else {}
    others = sum(children.values())
    return {
        "scenario": scenario,
        "exit_code": popen.returncode,
        "status": meta.get("status"),
        "wall_s": round(wall, 2),
        "harness_cpu_s": round(own, 2),
        "harness_cpu_percent": round(100 * own / wall, 1),
        "children_cpu_s": round(others, 2),
        "harness_share_of_total_cpu": round(own / (own + others), 3) if own + others else None,
        "note": "children CPU is the last sample before each child exited (a lower bound)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bring-ups", type=int, default=5)
    parser.add_argument("--scenario", default="smoke")
    parser.add_argument("--skip-run", action="store_true")
    args = parser.parse_args()
    if args.bring_ups < 1:
        parser.error(f"--bring-ups must be >= 1 (got {args.bring_ups})")
    result: dict[str, Any] = {"cores": psutil.cpu_count(), "stack": bring_ups(args.bring_ups)}
    if not args.skip_run:
        result["run"] = harness_cpu(args.scenario)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
