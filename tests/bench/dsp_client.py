"""Benchmark: httpx vs aiohttp as the DSP fan-out client, same run, same simulated bidders.

    python tests/bench/dsp_client.py [--duration 4] [--concurrency 32] [--rounds 3]

Each round drives the three bidders (python -m target.dsp, one process) with a closed loop of
`concurrency` auctions, each auction fanning out to every bidder in parallel, once with an
aiohttp session and once with an httpx AsyncClient (pools sized alike, keep-alive on); the
order alternates between rounds so neither client always runs on a warmer machine. JSON on
stdout: fan-outs/s and p50/p99 per client, the best round of each, and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

BODY = json.dumps(
    {
        "id": "bench",
        "imp": [{"id": "1", "bidfloor": 0.1}],
        "site": {"publisher": {"id": "p"}},
        "user": {"id": "u"},
        "tmax": 200,
    }
).encode()
HEADERS = {"Content-Type": "application/json"}

Post = Callable[[str], Awaitable[int]]


async def _drive(
    post: Post, urls: list[str], concurrency: int, duration_s: float
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + duration_s

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            statuses = await asyncio.gather(*(post(u) for u in urls), return_exceptions=True)
            latencies.append(time.perf_counter() - t0)
            errors += sum(1 for s in statuses if not isinstance(s, int) or s >= 500)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    s = sorted(latencies)
    return {
        "fanouts": len(s),
        "fanouts_per_s": round(len(s) / wall, 1),
        "p50_ms": round(s[len(s) // 2] * 1000, 3) if s else None,
        "p99_ms": round(s[min(len(s) - 1, int(len(s) * 0.99))] * 1000, 3) if s else None,
        "errors": errors,
    }


async def _with_aiohttp(urls: list[str], concurrency: int, duration_s: float) -> dict[str, Any]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency * len(urls), limit_per_host=concurrency)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None)
    ) as session:

        async def post(url: str) -> int:
            async with session.post(url, data=BODY, headers=HEADERS) as resp:
                await resp.read()
                return resp.status

        return await _drive(post, urls, concurrency, duration_s)


async def _with_httpx(urls: list[str], concurrency: int, duration_s: float) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(
        max_connections=concurrency * len(urls), max_keepalive_connections=concurrency * len(urls)
    )
    async with httpx.AsyncClient(limits=limits, timeout=None) as client:

        async def post(url: str) -> int:
            resp = await client.post(url, content=BODY, headers=HEADERS)
            return resp.status_code

        return await _drive(post, urls, concurrency, duration_s)


def bench(duration_s: float, concurrency: int, rounds: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from spikegate.harness.services import DspBidders

    runners = {"aiohttp": _with_aiohttp, "httpx": _with_httpx}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in runners}
    dsps = DspBidders(Path(tempfile.mkdtemp(prefix="spikegate-bench-")), count=3)
    with dsps:
        urls = [f"{u}/bid" for u in dsps.urls]
        for r in range(rounds):
            order = list(runners) if r % 2 == 0 else list(reversed(runners))
            for name in order:
                asyncio.run(runners[name](urls, concurrency, 0.5))  # warm-up
                runs[name].append(asyncio.run(runners[name](urls, concurrency, duration_s)))
    best = {name: max(rs, key=lambda x: x["fanouts_per_s"]) for name, rs in runs.items()}
    faster = max(best, key=lambda n: best[n]["fanouts_per_s"])
    return {
        "duration_s": duration_s,
        "concurrency": concurrency,
        "dsps": 3,
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg()[0],
        "best": best,
        "rounds_fanouts_per_s": {n: [x["fanouts_per_s"] for x in rs] for n, rs in runs.items()},
        "aiohttp_vs_httpx_throughput": round(
            best["aiohttp"]["fanouts_per_s"] / max(1.0, best["httpx"]["fanouts_per_s"]), 3
        ),
        "faster": faster,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    if not (0 < args.duration <= 600 and 1 <= args.concurrency <= 1024 and args.rounds >= 1):
        p.error("--duration in (0, 600], --concurrency in [1, 1024], --rounds >= 1")
    print(json.dumps(bench(args.duration, args.concurrency, args.rounds), indent=2))


if __name__ == "__main__":
    main()
