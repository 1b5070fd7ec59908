"""Benchmark: the target's throughput and latency with every pattern on vs off, and the cost
of a rejection at 5x the auction capacity. JSON on stdout.

    python tests/bench/target.py [--duration 5] [--concurrency 32] [--rounds 2]

Real redis-server, Tansu and three simulated DSPs (harness/services.py); the target runs under
uvicorn; the load is a closed loop from a separate process (this file with --load), so the
load generator never shares the target's event loop or CPU quota.

    phase 1  all-on / all-off alternated `rounds` times, no faults, generous limits: the
             patterns decide but never reject; the median round of each is kept, plus the
             target's CPU time per request (psutil), steadier than rps on a shared box
    phase 2  overload: a publisher allowed capacity/5 per second and an auction limit of 2,
             driven flat out -> 429s and 503s; the server-side cost of a rejection comes from
             the target's own `spikegate_rejection_seconds` histogram (/metrics)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
KEY = "bench-key"


# -- the load generator (runs as a subprocess) -------------------------------------------------


async def _load(url: str, concurrency: int, duration_s: float, max_requests: int) -> dict[str, Any]:
    import aiohttp

    latencies: dict[str, list[float]] = {"ok": [], "rejected": [], "other": []}
    statuses: dict[str, int] = {}
    stop_at = time.perf_counter() + duration_s
    sent = 0
    headers = {"X-Api-Key": KEY, "Content-Type": "application/json"}

    async def worker(session: aiohttp.ClientSession, wid: int) -> None:
        nonlocal sent
        i = 0
        while time.perf_counter() < stop_at and sent < max_requests:
            sent += 1
            i += 1
            body = json.dumps(
                {
                    "id": f"r{wid}-{i}",
                    "imp": [{"id": "1", "bidfloor": 0.01}],
                    "site": {"publisher": {"id": "bench"}},
                    "user": {"id": f"u{wid}-{i % 50}"},
                    "tmax": 1000,  # no faults: only a starved CPU could be that slow
                }
            )
            t0 = time.perf_counter()
            try:
                async with session.post(f"{url}/bid", data=body, headers=headers) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, OSError):
                status = 0
            elapsed = time.perf_counter() - t0
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            cls = "ok" if status in (200, 204) else "rejected" if status in (429, 503) else "other"
            latencies[cls].append(elapsed)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session, w) for w in range(concurrency)))
        wall = time.perf_counter() - started
    total = sum(statuses.values())
    return {
        "requests": total,
        "rps": round(total / wall, 1),
        "ok_rps": round(len(latencies["ok"]) / wall, 1),
        "bid_rps": round(statuses.get("200", 0) / wall, 1),
        "statuses": statuses,
        **{f"{cls}_{k}": v for cls, lat in latencies.items() for k, v in _pcts(lat).items()},
    }


def _median(values: list[float]) -> float:
    s = sorted(values)
    return s[len(s) // 2]


def _pcts(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p99_ms": None}
    s = sorted(values)
    return {
        "p50_ms": round(s[len(s) // 2] * 1000, 3),
        "p99_ms": round(s[min(len(s) - 1, int(len(s) * 0.99))] * 1000, 3),
    }


# -- the driver ----------------------------------------------------------------------------------


def _target_env(
    redis_url: str, bootstrap: str, dsps: list[dict[str, str]], spool: Path, **over: Any
) -> dict[str, str]:
    on = over.pop("patterns", True)
    env = {
        "SPIKEGATE__PUBLISHERS": json.dumps(
            {
                "bench": {
                    "api_key": KEY,
                    "rate_per_s": over.pop("rate_per_s", 1_000_000),
                    "burst": over.pop("burst", 100_000),
                }
            }
        ),
        "SPIKEGATE__DSPS": json.dumps(dsps),
        "SPIKEGATE__REDIS_URL": redis_url,
        "SPIKEGATE__KAFKA_BOOTSTRAP": bootstrap,
        "SPIKEGATE__EDGE__ENABLED": json.dumps(on),
        "SPIKEGATE__AUCTION__ENABLED": json.dumps(on),
        "SPIKEGATE__AUCTION__LIMIT": str(over.pop("limit", 256)),
        "SPIKEGATE__AUCTION__MAX_WAIT_MS": str(over.pop("max_wait_ms", 0)),
        "SPIKEGATE__AUCTION__REDIS_TIMEOUT_MS": "500",
        "SPIKEGATE__BREAKER__ENABLED": json.dumps(on),
        # No faults here: a call slowed only by this CPU-starved box must not trip a breaker
        # (an open breaker answers a fast 204 and would flatter the all-on figure).
        "SPIKEGATE__BREAKER__SLOW_CALL_DURATION_S": "1.0",
        "SPIKEGATE__IMPRESSIONS__ENABLED": json.dumps(on),
        "SPIKEGATE__IMPRESSIONS__SPOOL_DIR": str(spool),
    }
    assert not over, over
    return env


def _run_load(url: str, concurrency: int, duration_s: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--load", url, "--concurrency", str(concurrency)]
    cmd += ["--duration", str(duration_s)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60, check=True)
    parsed: dict[str, Any] = json.loads(out.stdout)
    return parsed


def _scrape(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def _histogram_p99(text: str, name: str) -> tuple[float | None, int]:
    """Upper bound of the bucket holding the 99th percentile, summed over label sets."""
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if not line.startswith(name + "_bucket{"):
            continue
        labels, _, value = line.rpartition(" ")
        le = labels.split('le="')[1].split('"')[0]
        bound = float("inf") if le == "+Inf" else float(le)
        buckets[bound] = buckets.get(bound, 0.0) + float(value)
    if not buckets:
        return None, 0
    total = buckets[float("inf")]
    for bound in sorted(buckets):
        if buckets[bound] >= 0.99 * total:
            return (bound * 1000 if bound != float("inf") else None), int(total)
    return None, int(total)


async def _inprocess_rejection_cost(env: dict[str, str], n: int) -> dict[str, Any]:
    """The server-side cost of a 429 and of a 503 bulkhead_full, timed around the ASGI app
    (middleware, routing, body parsing, decision, response) without sockets or OS noise
    from other processes: `n` calls of each, p50/p99 in ms."""
    from spikegate.target.app import create_app
    from spikegate.target.config import load_config

    app = create_app(load_config(environ=env))
    body = json.dumps(
        {
            "id": "r",
            "imp": [{"id": "1", "bidfloor": 0.01}],
            "site": {"publisher": {"id": "bench"}},
            "user": {"id": "u"},
            "tmax": 200,
        }
    ).encode()

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    status: list[int] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    def scope() -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/bid",
            "raw_path": b"/bid",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"x-api-key", KEY.encode()), (b"content-type", b"application/json")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 2),
        }

    out: dict[str, Any] = {}
    async with app.router.lifespan_context(app):
        limit = app.state.auction.limit
        for kind in ("429_rate_limited", "503_bulkhead_full"):
            if kind.startswith("503"):
                app.state.edge.enabled = False  # let requests through to the full bulkhead
                while limit.try_acquire().admitted:
                    pass
            else:
                for _ in range(200):  # drain the publisher's bucket
                    await app(scope(), receive, send)
            batches: list[dict[str, Any]] = []
            status.clear()
            code = int(kind[:3])
            for _ in range(5):  # batches: one preempted batch on a shared box is not the cost
                gc.collect()
                times: list[float] = []
                for _ in range(n // 5):
                    t0 = time.perf_counter()
                    await app(scope(), receive, send)
                    elapsed = time.perf_counter() - t0
                    if status[-1] == code:  # a refilled token admits a call: not a rejection
                        times.append(elapsed)
                batches.append(_pcts(times))
            p99s = sorted(b["p99_ms"] for b in batches)
            out[kind] = {
                "share_with_status": round(status.count(code) / len(status), 4),
                "p50_ms": sorted(b["p50_ms"] for b in batches)[2],
                "p99_ms_median_batch": p99s[2],
                "p99_ms_batches": p99s,
            }
    return out


def bench(duration_s: float, concurrency: int, rounds: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    import psutil

    from spikegate.harness.services import DspBidders, KafkaBroker, RedisServer, TargetServer

    tmp = Path(tempfile.mkdtemp(prefix="spikegate-bench-"))
    result: dict[str, Any] = {
        "duration_s": duration_s,
        "concurrency": concurrency,
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg()[0],
    }
    redis, kafka, dsps = RedisServer(tmp), KafkaBroker(tmp), DspBidders(tmp, count=3)
    with redis, kafka, dsps:
        dsp_list = [{"name": n, "url": u} for n, u in zip(dsps.names, dsps.urls, strict=True)]

        def serve(spool: str, **over: Any) -> TargetServer:
            env = _target_env(redis.url, kafka.bootstrap, dsp_list, tmp / spool, **over)
            return TargetServer(tmp, env=env)

        runs: dict[str, list[dict[str, Any]]] = {"all_on": [], "all_off": []}
        for _ in range(rounds):
            for mode, on in (("all_on", True), ("all_off", False)):
                target = serve(f"spool-{mode}", patterns=on)
                with target:
                    _run_load(target.url, concurrency, 1.0)  # warm-up
                    procs = {"target": psutil.Process(target.pid), "dsp": psutil.Process(dsps.pid)}
                    before = {k: p.cpu_times() for k, p in procs.items()}
                    run = _run_load(target.url, concurrency, duration_s)
                    for k, p in procs.items():
                        b, a = before[k], p.cpu_times()
                        cpu_s = (a.user - b.user) + (a.system - b.system)
                        run[f"{k}_cpu_us_per_request"] = round(cpu_s / run["requests"] * 1e6, 1)
                    runs[mode].append(run)
        # Median round of each: the box is shared, single rounds swing by +-40%.
        best = {m: sorted(r, key=lambda x: x["ok_rps"])[len(r) // 2] for m, r in runs.items()}
        result["all_on"], result["all_off"] = best["all_on"], best["all_off"]
        result["rounds_ok_rps"] = {m: [x["ok_rps"] for x in r] for m, r in runs.items()}
        result["throughput_ratio_on_vs_off"] = round(
            best["all_on"]["ok_rps"] / max(1.0, best["all_off"]["ok_rps"]), 3
        )
        # The steadier figure on a shared box: the target's own CPU time per request.
        cpu = {m: _median([x["target_cpu_us_per_request"] for x in r]) for m, r in runs.items()}
        result["target_cpu_us_per_request"] = cpu
        result["dsp_cpu_us_per_request"] = {
            m: _median([x["dsp_cpu_us_per_request"] for x in r]) for m, r in runs.items()
        }
        result["cpu_cost_ratio_on_vs_off"] = round(cpu["all_on"] / cpu["all_off"], 3)

        capacity = best["all_on"]["ok_rps"]
        overload = {"rate_per_s": max(1.0, capacity / 5), "burst": 10, "limit": 2}
        t = serve("spool-overload", **overload)
        with t:
            load = _run_load(t.url, concurrency, duration_s)
            text = _scrape(t.url)
        env = _target_env(redis.url, kafka.bootstrap, dsp_list, tmp / "spool-inproc", **overload)
        inproc = asyncio.run(_inprocess_rejection_cost(env, 5000))
        p99_ms, count = _histogram_p99(text, "spikegate_rejection_seconds")
        result["overload"] = {
            "publisher_rate_per_s": round(capacity / 5, 1),
            "auction_limit": 2,
            "client": load,
            "server_rejections": count,
            "server_rejection_p99_ms_upper_bound": p99_ms,
            "in_process": inproc,
        }
    result["loadavg_end"] = os.getloadavg()[0]
    result["acceptance"] = {
        "throughput_ratio_ge_0.9": result["throughput_ratio_on_vs_off"] >= 0.9,
        "cpu_per_request_overhead_le_10pct": result["cpu_cost_ratio_on_vs_off"] <= 1.1,
        "rejection_p99_le_2ms_live_histogram": p99_ms is not None and p99_ms <= 2.0,
        "rejection_p99_le_2ms_in_process": all(
            v["p99_ms_median_batch"] <= 2.0 for v in inproc.values()
        ),
    }
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--load", metavar="URL", help="internal: run the load generator against URL")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--max-requests", type=int, default=1_000_000)
    args = p.parse_args()
    if not (0 < args.duration <= 600 and 1 <= args.concurrency <= 1024 and args.rounds >= 1):
        p.error("--duration in (0, 600], --concurrency in [1, 1024], --rounds >= 1")
    if args.load:
        out = asyncio.run(_load(args.load, args.concurrency, args.duration, args.max_requests))
    else:
        out = bench(args.duration, args.concurrency, args.rounds)
    print(json.dumps(out, indent=None if args.load else 2))


if __name__ == "__main__":
    main()
