"""Benchmark: our ad-server user + recorder versus a plain FastHttpUser, same endpoint, same run.

Run: ``.venv/bin/python tests/bench/generator.py [--quick] [--users N] [--seconds S]
[--repeats R]`` (not a pytest test). Prints one JSON document on stdout; progress on stderr.

    locust -f locustfiles/adserver.py (closed mode)  ──POST /bid──>  simulated DSP bidder
    locust -f tests/bench/plain_locustfile.py        ──POST /bid──>  (python -m target.dsp)

Both sides run N users for S seconds as one Locust process each, interleaved per repeat
so machine load hits both alike. Ours runs in its closed max-rate mode
(SPIKEGATE_LOAD mode = "closed": each user sends back to back, one request in flight,
intended = sent; impressions off) with the recorder writing requests.jsonl as in a real
run; the open model's scheduling is not what limits throughput, the per-request cost is.
Achieved rate = Locust's num_requests / (last request - start) from --json-file, the
same measure for both; ours is cross-checked against the recorder's `sent` total.
Also reported: CPU microseconds per request of each Locust process (getrusage of the
child, start-up included), the steadier figure on a shared machine; plain/ours is the
rate ratio a saturated generator would reach. And the steady state without start-up and
shut-down: Locust's console table (printed every 2 s to stderr, for both sides alike)
gives the request count, the bench reads the child's CPU time at each table; rate and CPU
per request between the table at ~2 s and the last one before the run time ends.
Target (issue 5): ours >= 85% of plain (median over repeats; compare same-run ratios:
other work on the machine moves the absolute figures).

Open-model section: ``--open-model`` also runs tests/bench/open_model.py's measurement (the
open model at fixed arrival rates beside k6, its docstring says what it measures) and puts
its document under "open_model"; ``--open-model-args "--k6 PATH --rates 3000 --repeats 3"``
passes it its own arguments (default: --no-search).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import deque
from pathlib import Path
from typing import IO, Any

import psutil

REPO = Path(__file__).resolve().parents[2]
LOCUST = Path(sys.executable).parent / "locust"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from spikegate.contract.rundir import REQUESTS_FILE, read_jsonl  # noqa: E402
from spikegate.harness.services import free_port  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def start_bidder(log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    out = log_path.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spikegate.target.dsp",
            "--port",
            str(port),
            "--service-time-ms",
            "0",
        ],
        cwd=REPO,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    out.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"the DSP bidder did not start; see {log_path}")


def _watch_tables(
    stream: IO[str],
    proc: psutil.Process,
    samples: list[tuple[float, float, int]],
    tail: deque[str],
) -> None:
    """For each console table, (monotonic time, CPU seconds of the child, requests so far)."""
    for line in stream:
        tail.append(line)
        parts = line.split()
        if len(parts) > 1 and parts[0] == "Aggregated" and parts[1].isdigit():
            try:
                cpu = proc.cpu_times()
            except psutil.Error:
                continue
            samples.append((time.monotonic(), cpu.user + cpu.system, int(parts[1])))


def _steady(samples: list[tuple[float, float, int]], seconds: float) -> dict[str, float | None]:
    """Rate and CPU/request between the table at >= 1.5 s and the last at <= seconds - 0.5 s
    (times from the first table, printed as the run starts)."""
    if not samples:
        return {"steady_rps": None, "steady_cpu_us_per_request": None}
    t0 = samples[0][0]
    window = [s for s in samples if 1.5 <= s[0] - t0 <= seconds - 0.5]
    if len(window) < 2 or window[-1][2] <= window[0][2]:
        return {"steady_rps": None, "steady_cpu_us_per_request": None}
    (ta, ca, na), (tb, cb, nb) = window[0], window[-1]
    return {
        "steady_rps": round((nb - na) / (tb - ta), 1),
        "steady_cpu_us_per_request": round((cb - ca) / (nb - na) * 1e6, 1),
    }


def run_locust(
    files: str, host: str, users: int, seconds: float, work: Path, env_extra: dict[str, str]
) -> dict[str, Any]:
    report = work / "stats.json"
    cmd = [
        str(LOCUST), "-f", files, "--headless", "--host", host,
        "-u", str(users), "-r", str(users), "-t", f"{round(seconds)}s",
        "--exit-code-on-error", "0", "--stop-timeout", "2",
        "--loglevel", "WARNING", "--json-file", str(report.with_suffix("")),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIKEGATE_")}
    env.update(env_extra)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    samples: list[tuple[float, float, int]] = []
    tail: deque[str] = deque(maxlen=60)
    with (work / "locust.log").open("w") as out:
        child = subprocess.Popen(
            cmd, env=env, cwd=work, stdout=out, stderr=subprocess.PIPE, text=True
        )
        assert child.stderr is not None
        watcher = threading.Thread(
            target=_watch_tables, args=(child.stderr, psutil.Process(child.pid), samples, tail)
        )
        watcher.start()
        try:
            returncode = child.wait(timeout=seconds + 60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            watcher.join(10)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if returncode != 0:
        raise SystemExit(f"locust failed ({returncode}):\n{''.join(tail)[-3000:]}")
    stats = json.loads(report.read_text())
    reqs = sum(int(s["num_requests"]) for s in stats)
    fails = sum(int(s["num_failures"]) for s in stats)
    start = min(float(s["start_time"]) for s in stats)
    last = max(float(s["last_request_timestamp"]) for s in stats)
    return {
        "requests": reqs,
        "failures": fails,
        "rps": reqs / max(last - start, 1e-9),
        # CPU of the whole locust process (start-up included) per request: steadier than
        # rps on a shared machine, and what bounds the rate once the generator saturates
        "cpu_us_per_request": round(cpu_s / max(reqs, 1) * 1e6, 1),
        **_steady(samples, seconds),
    }


def _median(results: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in results if r.get(key) is not None]
    return float(statistics.median(values)) if values else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 repeat of 5 s")
    ap.add_argument("--users", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--open-model", action="store_true", help="also open_model.py's section")
    ap.add_argument("--open-model-args", default="--no-search", help="open_model.py's arguments")
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats = 5.0, 1
    ours_files = str(REPO / "locustfiles" / "adserver.py")
    plain_files = str(REPO / "tests" / "bench" / "plain_locustfile.py")
    load = {
        "mode": "closed",
        "duration_s": 3600,
        "warmup_s": 0,
        "impression_rate": 0,
        "publishers": 1,
        "client_timeout_s": 2.0,
    }
    ours: list[dict[str, Any]] = []
    plain: list[dict[str, Any]] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="spikegate-bench-gen-") as tmp:
        work = Path(tmp)
        bidder, url = start_bidder(work / "dsp.log")
        try:
            for i in range(args.repeats):
                for name in ("plain", "ours") if i % 2 == 0 else ("ours", "plain"):
                    run_dir = work / f"{name}-{i}"
                    run_dir.mkdir()
                    if name == "ours":
                        env = {
                            "SPIKEGATE_LOAD": json.dumps(load),
                            "SPIKEGATE_RUN_DIR": str(run_dir),
                            "SPIKEGATE_SEED": "1",
                        }
                        res = run_locust(ours_files, url, args.users, args.seconds, run_dir, env)
                        rows = [r for _, r in read_jsonl(run_dir / REQUESTS_FILE)]
                        res["recorded_sent"] = sum(r["sent"] for r in rows)
                        res["recorded_rows"] = len(rows)
                        res["max_cpu_percent"] = max(
                            (r["cpu_percent"] or 0.0 for r in rows), default=None
                        )
                        ours.append(res)
                    else:
                        res = run_locust(plain_files, url, args.users, args.seconds, run_dir, {})
                        plain.append(res)
                    log(f"repeat {i + 1}/{args.repeats} {name}: {res['rps']:.0f} rps")
        finally:
            bidder.terminate()
            bidder.wait(10)
    ours_rps = _median(ours, "rps")
    plain_rps = _median(plain, "rps")
    ratio = ours_rps / plain_rps if plain_rps else 0.0
    ours_cpu = _median(ours, "cpu_us_per_request")
    plain_cpu = _median(plain, "cpu_us_per_request")
    ours_steady = _median(ours, "steady_rps")
    plain_steady = _median(plain, "steady_rps")
    ours_steady_cpu = _median(ours, "steady_cpu_us_per_request")
    plain_steady_cpu = _median(plain, "steady_cpu_us_per_request")
    out = {
        "endpoint": "simulated DSP bidder POST /bid (python -m target.dsp, service time 0)",
        "users": args.users,
        "seconds": args.seconds,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "load_average_1m_before": load_before,
        "load_average_1m": os.getloadavg()[0],
        "ours": ours,
        "plain": plain,
        "ours_median_rps": round(ours_rps, 1),
        "plain_median_rps": round(plain_rps, 1),
        "ratio": round(ratio, 3),
        "ours_median_cpu_us_per_request": ours_cpu,
        "plain_median_cpu_us_per_request": plain_cpu,
        "cpu_ratio_plain_over_ours": round(plain_cpu / ours_cpu, 3) if ours_cpu else None,
        "ours_median_steady_rps": ours_steady,
        "plain_median_steady_rps": plain_steady,
        "steady_ratio": round(ours_steady / plain_steady, 3) if plain_steady else None,
        "ours_median_steady_cpu_us_per_request": ours_steady_cpu,
        "plain_median_steady_cpu_us_per_request": plain_steady_cpu,
        "steady_cpu_ratio_plain_over_ours": (
            round(plain_steady_cpu / ours_steady_cpu, 3) if ours_steady_cpu else None
        ),
        "target_ratio": 0.85,
        "meets_target": ratio >= 0.85,
    }
    if args.open_model:
        # imported here: open_model imports bench_user_recorder, which imports this module
        import open_model

        log("open-model section: open_model.py " + args.open_model_args)
        out["open_model"] = open_model.measure(shlex.split(args.open_model_args))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
