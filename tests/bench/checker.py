"""Benchmark of the offline judge: loading, checking and reporting a run; prints JSON.

    python tests/bench/checker.py [--hours 1] [--repeat 5] [--run-dir RUN_DIR]

- check: `harness.checker.check` on a synthetic history of `--hours` hours (one request row
  and one sample a second, a spike in the middle), against the baseline of one plain pass
  over the same rows summing their counts (the least any judge must do);
- a run directory (`--run-dir`, default the newest under runs/ when there is one):
  `load_history` + `check` + `write_reports` (the four files), against `load_history` alone.

Each figure is the median of `--repeat` timings in seconds; ratios are operation/baseline.
Not a timed test: run it by hand on a quiet machine and quote the figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from spikegate.harness.checker import check  # noqa: E402
from spikegate.harness.history import (  # noqa: E402
    History,
    ImpressionAccounting,
    RequestSecond,
    Sample,
    load_history,
)
from spikegate.harness.reports import write_reports  # noqa: E402
from spikegate.harness.scenario import Scenario, parse_scenario  # noqa: E402


def _median(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _scenario(seconds: int) -> Scenario:
    mid = seconds // 2
    return parse_scenario(
        {
            "name": "bench",
            "load": {
                "shape": "flash_crowd", "duration_s": seconds, "warmup_s": 5, "base_rps": 100,
                "peak_rps": 300, "spike_at_s": mid, "spike_for_s": 60, "publishers": 4,
            },
            "phases": {"recovery_s": 10},
        },
        source="bench",
    )  # fmt: skip


def synthetic_history(seconds: int) -> History:
    h = HdrHistogram(1, 60_000_000, 3)
    h.record_value(20_000, 100)
    encoded = h.encode().decode()
    rows = [
        RequestSecond(
            t=float(t), intended=100, sent=100, outcomes={"ok": 100}, admitted=100,
            rejected=0, failures=0, hist_admitted=encoded, admitted_p99_ms=20.0,
            publishers={f"pub-{i}": {"sent": 25, "admitted": 25} for i in range(1, 5)},
        )
        for t in range(seconds)
    ]  # fmt: skip
    samples = [
        Sample(t=float(t), ok=True, auction_inflight=3.0, auction_limit=12.0,
               queue_depth=10.0, queue_max_depth=400.0, rss_bytes=100e6)
        for t in range(seconds)
    ]  # fmt: skip
    return History.build(
        _scenario(seconds),
        requests=rows,
        samples=samples,
        impressions=ImpressionAccounting(acked=1, found=1, missing=0),
    )


def bench_check(hours: float, repeat: int) -> dict[str, Any]:
    seconds = max(120, round(hours * 3600))
    history = synthetic_history(seconds)

    def one_pass() -> int:
        total = 0
        for r in history.requests:
            total += r.admitted + r.rejected + r.failures
        for s in history.samples:
            total += int(s.auction_inflight or 0)
        return total

    base = _median(one_pass, repeat)
    judged = _median(lambda: check(history), repeat)
    return {
        "rows": seconds,
        "baseline_one_pass_s": round(base, 6),
        "check_s": round(judged, 4),
        "ratio_check_to_baseline": round(judged / base, 1) if base > 0 else None,
    }


def _newest_run() -> Path | None:
    runs = ROOT / "runs"
    dirs = [d for d in runs.iterdir() if (d / "requests.jsonl").is_file()] if runs.is_dir() else []
    return max(dirs, key=lambda d: d.stat().st_mtime) if dirs else None


def bench_run_dir(run_dir: Path, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="spikegate-bench-") as tmp:
        copy = Path(tmp) / run_dir.name
        shutil.copytree(run_dir, copy)  # reports are written into the copy, not the original

        def judge_and_report() -> None:
            history = load_history(copy)
            write_reports(copy, history, check(history))

        base = _median(lambda: load_history(copy), repeat)
        full = _median(judge_and_report, repeat)
    return {
        "run_dir": str(run_dir),
        "load_history_s": round(base, 4),
        "load_check_report_s": round(full, 4),
        "ratio_to_load": round(full / base, 2) if base > 0 else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=1.0, help="synthetic history length")
    ap.add_argument("--repeat", type=int, default=5, help="timings per figure (median)")
    ap.add_argument("--run-dir", type=Path, default=None, help="a stored run to judge")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    out: dict[str, Any] = {"check_synthetic": bench_check(args.hours, args.repeat)}
    run_dir = args.run_dir or _newest_run()
    if run_dir is not None:
        if not (run_dir / "requests.jsonl").is_file():
            ap.error(f"--run-dir {run_dir} is not a run directory (no requests.jsonl)")
        out["run_dir"] = bench_run_dir(run_dir, args.repeat)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
