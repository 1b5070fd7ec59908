"""Benchmark: the harness's own CPU with the live page open and pushed to, against closed.

Run: ``.venv/bin/python tests/bench/live_page.py [--rps 500] [--window-s 15] [--rounds 2]``
(not a pytest test; needs Debian's chromium and the dev extra's playwright). Prints one JSON
document on stdout; progress on stderr.

    spikegate up smoke --set load.base_rps=RPS      the harness process: watch loop, sampler,
        │                                           control server, the live feed   <- measured
        ├── Locust, the reference target, Redis, Kafka, DSPs, chaos proxy          (not counted)
        └── GET /stream <── headless Chromium (the live page, charts redrawn each second)

One session at RPS arrivals/s. Windows of `window_s` seconds alternate, in an order that
flips each round, between the page open (a Chromium tab on the control page, its stream
connected) and no page (the same browser, no tab). For each window: the harness process's
own CPU (utime + stime of its threads from /proc, children left out) as a percentage of
one core, the messages the page received, and the requests Locust sent (bids and
impressions). The goal: under 10% of a core with the page open at 500 arrivals/s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

SPIKEGATE = REPO / ".venv" / "bin" / "spikegate"
GOAL_PCT = 10.0
TICK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cpu_s(pid: int) -> float:
    """utime + stime of the process (all its threads, not its children), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def sent_total(run_dir: Path) -> int:
    total = 0
    path = run_dir / "requests.jsonl"
    if not path.exists():
        return 0
    for line in path.read_text().splitlines():
        try:
            total += int(json.loads(line).get("sent") or 0)
        except ValueError:
            continue
    return total


def wait_for_url(proc: subprocess.Popen[str], timeout_s: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"spikegate up ended before its control page: rc={proc.poll()}")
        found = re.search(r"control page: (http://127\.0\.0\.1:\d+)/", line)
        if found:
            return found.group(1)
    raise SystemExit("no control page within the bound")


def window(pid: int, run_dir: Path, seconds: float) -> dict[str, float]:
    c0, s0, w0 = cpu_s(pid), sent_total(run_dir), time.monotonic()
    time.sleep(seconds)
    c1, s1, w1 = cpu_s(pid), sent_total(run_dir), time.monotonic()
    wall = w1 - w0
    return {
        "wall_s": round(wall, 3),
        "cpu_pct": round(100.0 * (c1 - c0) / wall, 2),
        "requests_per_s": round((s1 - s0) / wall, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rps", type=float, default=500.0)
    ap.add_argument("--window-s", type=float, default=15.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup-s", type=float, default=8.0)
    args = ap.parse_args()
    chromium = CHROMIUM
    if chromium is None:
        log("no chromium: sudo apt-get install -y chromium")
        return 2
    from playwright.sync_api import sync_playwright

    out_dir = Path(tempfile.mkdtemp(prefix="bench-live-page-"))
    run_dir = out_dir / "run"
    max_s = args.warmup_s + args.rounds * 2 * (args.window_s + 5.0) + 30.0
    argv = [str(SPIKEGATE), "up", "smoke", "--set", f"load.base_rps={args.rps:g}",
            "--max-s", f"{max_s:g}", "--no-live", "--out", str(run_dir)]  # fmt: skip
    log("$ " + " ".join(argv))
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    windows: list[dict[str, Any]] = []
    try:
        url = wait_for_url(proc, 90.0)
        log(f"control page {url}; warming up {args.warmup_s:g} s")
        time.sleep(args.warmup_s)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            for rnd in range(args.rounds):
                order = ("closed", "open") if rnd % 2 == 0 else ("open", "closed")
                for state in order:
                    page = None
                    got0 = 0
                    if state == "open":
                        page = browser.new_page(viewport={"width": 1280, "height": 1400})
                        page.goto(url + "/")
                        page.wait_for_function("window.spikegate && window.spikegate.rows > 0")
                        got0 = page.evaluate("window.spikegate.rows + window.spikegate.samples")
                    w = window(proc.pid, run_dir, args.window_s)
                    w.update(round=rnd, page=state)
                    if page is not None:
                        got = page.evaluate("window.spikegate.rows + window.spikegate.samples")
                        w["page_messages_per_s"] = round((got - got0) / w["wall_s"], 2)
                        page.close()
                    log(json.dumps(w))
                    windows.append(w)
            browser.close()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # the session ends as by Ctrl-C
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    opened = [w["cpu_pct"] for w in windows if w["page"] == "open"]
    closed = [w["cpu_pct"] for w in windows if w["page"] == "closed"]
    med_open, med_closed = statistics.median(opened), statistics.median(closed)
    result = {
        "bench": "live_page",
        "rps": args.rps,
        "window_s": args.window_s,
        "windows": windows,
        "median_cpu_pct_page_open": med_open,
        "median_cpu_pct_page_closed": med_closed,
        "ratio_open_vs_closed": round(med_open / med_closed, 3) if med_closed else None,
        "median_requests_per_s": statistics.median(w["requests_per_s"] for w in windows),
        "median_page_messages_per_s": statistics.median(
            w["page_messages_per_s"] for w in windows if "page_messages_per_s" in w
        ),
        "goal_pct_of_a_core": GOAL_PCT,
        "within_goal": med_open < GOAL_PCT,
        "session_exit": proc.returncode,
        "run_dir": str(run_dir),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
