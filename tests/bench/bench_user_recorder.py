"""Benchmark: a user's FastHttpUser under plain Locust versus under our driver + recorder.

Run: ``.venv/bin/python tests/bench/bench_user_recorder.py [--quick] [--users N]
[--seconds S] [--rounds R]`` (not a pytest test). Prints one JSON document on stdout;
progress on stderr.

    locust -f <bench>/shop_user.py -u N                       --GET /-->  haproxy (fixed 200)
    locust -f locustfiles/user.py -u 1  (load.locustfile =        "      or aiohttp if no
           <bench>/shop_user.py, mode "closed", max_inflight N)         haproxy is installed

The same locustfile (a FastHttpUser, wait_time 0, one task: GET /) against the same fast
endpoint, closed loop both: plain Locust runs N users; ours runs one driver that runs N
instances of the class as Locust would, every request recorded by our `request` listener
into requests.jsonl as in a real run. Interleaved per round (order alternating) so machine
load hits both alike. Measured as tests/bench/generator.py does (its run_locust): Locust's
num_requests / (last request - start) from --json-file, CPU microseconds per request of
the Locust process, and the steady state between console tables (start-up and shut-down
left out). Ours is cross-checked against the recorder's `sent` total. Target: ours >= 85%
of plain (median over rounds; compare same-run ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from generator import run_locust  # noqa: E402  (tests/bench/generator.py: the same measure)

from spikegate.contract.rundir import REQUESTS_FILE, read_jsonl  # noqa: E402
from spikegate.harness.services import free_port  # noqa: E402

LOCUSTFILE = """
from locust import FastHttpUser, constant, task


class ShopUser(FastHttpUser):
    wait_time = constant(0)
    network_timeout = 2.0
    connection_timeout = 2.0

    @task
    def front(self):
        self.client.get("/")
"""

HAPROXY_CFG = """
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout client 10s
    timeout connect 2s
    timeout server 10s
frontend shop
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string "ok"
"""

AIOHTTP_SERVER = """
import sys
from aiohttp import web

async def front(_request):
    return web.Response(text="ok")

app = web.Application()
app.router.add_get("/", front)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def start_server(work: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """haproxy answering 200 itself when installed, else a one-route aiohttp server."""
    port = free_port()
    haproxy = shutil.which("haproxy")
    if haproxy:
        cfg = work / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(port=port))
        cmd = [haproxy, "-db", "-f", str(cfg)]
        kind = "haproxy (http-request return 200, 1 thread)"
    else:
        script = work / "server.py"
        script.write_text(AIOHTTP_SERVER)
        cmd = [sys.executable, str(script), str(port)]
        kind = "aiohttp (haproxy not installed)"
    out = (work / "server.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/", timeout=1):
                return proc, url, kind
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"the server did not start; see {work / 'server.log'}")


def _median(results: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in results if r.get(key) is not None]
    return float(statistics.median(values)) if values else 0.0


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 round of 5 s")
    ap.add_argument("--users", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 5.0, 1
    user_entry = str(REPO / "locustfiles" / "user.py")
    ours: list[dict[str, Any]] = []
    plain: list[dict[str, Any]] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="spikegate-bench-user-") as tmp:
        work = Path(tmp)
        locustfile = work / "shop_user.py"
        locustfile.write_text(LOCUSTFILE)
        load = {
            "mode": "closed",
            "duration_s": 3600,  # -t ends the run, as for plain Locust
            "warmup_s": 0,
            "max_inflight": args.users,
            "client_timeout_s": 2.0,
            "locustfile": str(locustfile),
        }
        server, url, kind = start_server(work)
        try:
            for i in range(args.rounds):
                for name in ("plain", "ours") if i % 2 == 0 else ("ours", "plain"):
                    run_dir = work / f"{name}-{i}"
                    run_dir.mkdir()
                    if name == "ours":
                        env = {
                            "SPIKEGATE_LOAD": json.dumps(load),
                            "SPIKEGATE_RUN_DIR": str(run_dir),
                            "SPIKEGATE_SEED": "1",
                        }
                        res = run_locust(user_entry, url, 1, args.seconds, run_dir, env)
                        rows = [r for _, r in read_jsonl(run_dir / REQUESTS_FILE)]
                        res["recorded_sent"] = sum(r["sent"] for r in rows)
                        res["recorded_matches_locust"] = res["recorded_sent"] == res["requests"]
                        ours.append(res)
                    else:
                        res = run_locust(
                            str(locustfile), url, args.users, args.seconds, run_dir, {}
                        )
                        plain.append(res)
                    log(f"round {i + 1}/{args.rounds} {name}: {res['rps']:.0f} rps")
        finally:
            server.terminate()
            server.wait(10)
    ours_rps, plain_rps = _median(ours, "rps"), _median(plain, "rps")
    ours_steady, plain_steady = _median(ours, "steady_rps"), _median(plain, "steady_rps")
    ours_cpu = _median(ours, "cpu_us_per_request")
    plain_cpu = _median(plain, "cpu_us_per_request")
    ours_steady_cpu = _median(ours, "steady_cpu_us_per_request")
    plain_steady_cpu = _median(plain, "steady_cpu_us_per_request")
    ratio = ours_rps / plain_rps if plain_rps else 0.0
    out = {
        "endpoint": f"GET / on {kind}",
        "locustfile": "FastHttpUser, wait_time constant(0), one task",
        "users": args.users,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "cpu_count": os.cpu_count(),
        "load_average_1m_before": load_before,
        "load_average_1m": os.getloadavg()[0],
        "ours": ours,
        "plain": plain,
        "ours_median_rps": round(ours_rps, 1),
        "plain_median_rps": round(plain_rps, 1),
        "ratio": round(ratio, 3),
        "ours_median_steady_rps": ours_steady,
        "plain_median_steady_rps": plain_steady,
        "steady_ratio": _ratio(ours_steady, plain_steady),
        "ours_median_cpu_us_per_request": ours_cpu,
        "plain_median_cpu_us_per_request": plain_cpu,
        "cpu_ratio_plain_over_ours": _ratio(plain_cpu, ours_cpu),
        "ours_median_steady_cpu_us_per_request": ours_steady_cpu,
        "plain_median_steady_cpu_us_per_request": plain_steady_cpu,
        "steady_cpu_ratio_plain_over_ours": _ratio(plain_steady_cpu, ours_steady_cpu),
        "every_request_recorded": all(r["recorded_matches_locust"] for r in ours),
        "target_ratio": 0.85,
        "meets_target": ratio >= 0.85,
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
