"""Benchmark: the highest arrival rate held by one Locust process against a master with two
workers (`spikegate worker`'s command line), open model, same fixed fast responder.

    python tests/bench/workers.py [--rates 3000,4000,5000,6000,7000] [--seconds 10]

    one process:  locust -f adserver.py,shape_steady.py --headless          --POST /bid-->
    master + 2:   locust ... --master --expect-workers 2                          haproxy
                  locust -f - --worker --master-host 127.0.0.1 (x2)               (fixed 200)

Held: sent / intended over the steady window (from 2 s to 1 s before the end) of the rows the
recorder wrote (for the workers: merged by the master from what they sent over Locust's
messaging); a rate is held when >= 99% is sent and the p99 of the per-second worst lateness
is under 10 ms. JSON on stdout: per rate and mode, held, lateness, p99, CPU per arrival.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from spikegate.contract.rundir import REQUESTS_FILE, read_jsonl  # noqa: E402
from spikegate.harness.services import free_port  # noqa: E402

LOCUST = [sys.executable, "-m", "locust"]
HAPROXY_CFG = """
global
    nbthread 1
defaults
    mode http
    timeout client 10s
    timeout connect 5s
    timeout server 10s
frontend fe
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string ok
"""
WINDOW_START_S, WINDOW_END_BEFORE_S = 2.0, 1.0


def log(msg: str) -> None:
    sys.stderr.write(f"[workers bench] {msg}\n")


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


def _cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        for q in _tree(p):
            try:
                t = q.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
    return total


def run(url: str, rate: float, seconds: float, workers: int, work: Path) -> dict[str, Any]:
    load = {
        "shape": "steady", "duration_s": seconds, "warmup_s": 0, "base_rps": rate,
        "impression_rate": 0, "publishers": 1, "client_timeout_s": 2.0,
    }  # fmt: skip
    t0 = time.time() + 5.0
    files = f"{REPO / 'locustfiles' / 'adserver.py'},{REPO / 'locustfiles' / 'shape_steady.py'}"
    cmd = [*LOCUST, "-f", files, "--headless", "--host", url, "--exit-code-on-error", "0",
           "--stop-timeout", "2", "--loglevel", "WARNING", "--only-summary"]  # fmt: skip
    port = free_port()
    if workers:
        cmd += ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                "--expect-workers", str(workers)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIKEGATE_")}
    master_env = {
        **env, "SPIKEGATE_LOAD": json.dumps(load), "SPIKEGATE_RUN_DIR": str(work),
        "SPIKEGATE_SEED": "1", "SPIKEGATE_T0": repr(t0),
    }  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    with (work / "locust.log").open("w") as out:
        procs.append(subprocess.Popen(cmd, env=master_env, stdout=out, stderr=subprocess.STDOUT))
        for i in range(workers):
            tmp = work / f"w{i}"
            tmp.mkdir()
            wcmd = [*LOCUST, "-f", "-", "--worker", "--master-host", "127.0.0.1",
                    "--master-port", str(port), "--loglevel", "WARNING"]  # fmt: skip
            procs.append(
                subprocess.Popen(
                    wcmd, env={**env, "TMPDIR": str(tmp)}, stdout=out, stderr=subprocess.STDOUT
                )
            )
        ps = [psutil.Process(p.pid) for p in procs]
        time.sleep(max(0.0, t0 + WINDOW_START_S - time.time()))
        cpu_a = _cpu_s(ps)
        time.sleep(max(0.0, t0 + seconds - WINDOW_END_BEFORE_S - time.time()))
        cpu_b = _cpu_s(ps)
        try:
            procs[0].wait(timeout=seconds + 60)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                    p.wait(10)
    rows = [r for _, r in read_jsonl(work / REQUESTS_FILE)]
    steady = [r for r in rows if WINDOW_START_S <= r["t"] < seconds - WINDOW_END_BEFORE_S]
    intended = sum(r["intended"] for r in steady)
    sent = sum(r["sent"] for r in steady)
    late = sorted(float(r["max_lateness_ms"] or 0.0) for r in steady)
    p99s = sorted(float(r["admitted_p99_ms"]) for r in steady if r.get("admitted_p99_ms"))
    return {
        "rate": rate,
        "mode": f"master + {workers} workers" if workers else "one process",
        "intended": intended,
        "sent": sent,
        "ok": sum(r["outcomes"].get("ok", 0) for r in steady),
        "held": round(sent / intended, 4) if intended else None,
        "lateness_p99_ms": late[min(len(late) - 1, int(0.99 * len(late)))] if late else None,
        "admitted_p99_ms_median_second": p99s[len(p99s) // 2] if p99s else None,
        "processes_per_row": sorted({r["processes"] for r in steady}),
        "cpu_us_per_arrival": round((cpu_b - cpu_a) / sent * 1e6, 1) if sent else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="3000,4000,5000,6000,7000")
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        log("haproxy is not installed: skipped")
        print(json.dumps({"skipped": "haproxy is not installed"}))
        return 0
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sg-bench-workers-") as d:
        root = Path(d)
        port = free_port()
        cfg = root / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(port=port))
        server = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            url = f"http://127.0.0.1:{port}"
            for rate in (float(r) for r in args.rates.split(",")):
                for workers in (0, 2):
                    work = root / f"{int(rate)}-{workers}"
                    work.mkdir()
                    res = run(url, rate, args.seconds, workers, work)
                    log(json.dumps(res))
                    results.append(res)
        finally:
            server.terminate()
            server.wait(5)

    def held(r: dict[str, Any]) -> bool:
        late = r["lateness_p99_ms"]
        return bool(r["held"] and r["held"] >= 0.99 and late is not None and late < 10.0)

    best = {
        mode: max((r["rate"] for r in results if r["mode"] == mode and held(r)), default=None)
        for mode in ("one process", "master + 2 workers")
    }
    print(json.dumps({"highest_held_rate": best, "runs": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
