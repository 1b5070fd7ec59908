"""Benchmark: the target's own CPU per designed rejection (r) against per admitted /bid (a).

    python tests/bench/rejection_cost.py [--rate 300] [--window 6] [--rounds 3]
                                         [--compare-src OLD/target]

Why r/a matters (issue 14): with CPU r per designed rejection and a per admitted request, the
goodput at k times capacity is at most (1 - k*r/a) / (1 - r/a) of capacity, whatever the
patterns decide. This prints r/a with that bound at 2x and 5x.

Real redis-server, Tansu and three simulated DSPs (harness/services.py); the target runs under
uvicorn exactly as a scenario starts it. The load is an open model at a fixed rate from a
separate process (this file with --load), over keep-alive connections, so the generator never
shares the target's event loop. Each window sends one kind of request:

    admitted   POST /bid from a publisher far under its rate                 -> 200/204
    429        POST /bid from a publisher far over its rate (same body)      -> 429 rate_limited
    shed       POST /impression to a second target whose queue is full       -> 503 shed
               (Kafka unreachable, one-item queue: every offer sheds queue_full)
    idle       nothing: the target's background CPU (loop-lag monitor, Kafka client), per second

The target's CPU (the scheduler's nanoseconds per thread, see _cpu_s) is read by the load
process right before its first send and right after its last answer. Windows alternate within
each round (the order rotates), and the median over rounds is kept.

`*_net` figures subtract the idle CPU of the same wall time: what a request adds. The bound's
arithmetic is about that (capacity is what the CPU left after the process's own timers serves),
so the acceptance reads r/a net; the raw figure is printed beside it. The idle CPU is the same
whatever the requests are (uvicorn's 0.1 s tick, the loop-lag monitor, the Kafka client: ~25
wake-ups/s, ~0.2% of a core), but at 300/s it adds ~7 us to each cheap 429 and ~0.6% to an
admission.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BID_KEY = "bench-key"
HOT_KEY = "hot-key"
KINDS = ("admitted", "429", "shed", "idle")

_BID = {
    "imp": [{"id": "1", "bidfloor": 0.01}],
    "site": {"publisher": {"id": "bench"}},
    "tmax": 1000,  # no faults: only a starved CPU could be that slow
}


# -- the load process ------------------------------------------------------------------------


def _cpu_s(pid: int) -> float:
    """The process's CPU time in seconds: the scheduler's own nanoseconds, summed over its
    threads (/proc/PID/task/*/schedstat), where Linux has them; psutil's user + system
    otherwise, which moves in clock ticks (10 ms: 3.3 us per request in a 10 s window at
    300/s, coarser than the differences measured here)."""
    try:
        total = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that just ended
                total += int((task / "schedstat").read_text().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        import psutil

        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)


async def _load(url: str, kind: str, pid: int, rate: float, duration_s: float) -> dict[str, Any]:
    """Open model: request i leaves at start + i/rate, whatever the earlier ones are doing."""
    import aiohttp

    if kind == "idle":
        before, t0 = _cpu_s(pid), time.perf_counter()
        await asyncio.sleep(duration_s)
        return {"cpu_s": _cpu_s(pid) - before, "wall_s": time.perf_counter() - t0, "n": 0}
    path = "/impression" if kind == "shed" else "/bid"
    key = HOT_KEY if kind == "429" else BID_KEY
    headers = {"X-Api-Key": key, "Content-Type": "application/json"}
    statuses: dict[str, int] = {}
    n = int(rate * duration_s)

    def body(i: int) -> bytes:
        if kind == "shed":
            ids = {f: f"{f[0]}{i}" for f in ("request_id", "bid_id", "publisher_id", "dsp")}
            return json.dumps({"impression_id": f"imp-{i}", **ids, "price": 1.0}).encode()
        return json.dumps({**_BID, "id": f"r{i}", "user": {"id": f"u{i % 50}"}}).encode()

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        try:
            async with session.post(url + path, data=body(i), headers=headers) as resp:
                await resp.read()
                status = str(resp.status)
        except (aiohttp.ClientError, OSError):
            status = "0"
        statuses[status] = statuses.get(status, 0) + 1

    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector) as session:
        for i in range(20):  # open the connections before the window
            await one(session, -i - 1)
        statuses.clear()
        before, t0 = _cpu_s(pid), time.perf_counter()
        tasks = []
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, i)))
        await asyncio.gather(*tasks)
        cpu, wall = _cpu_s(pid) - before, time.perf_counter() - t0
    return {"cpu_s": cpu, "wall_s": wall, "n": n, "statuses": statuses}


# -- the driver --------------------------------------------------------------------------------


def _target_env(
    redis_url: str, bootstrap: str, dsps: list[dict[str, str]], spool: Path, **imp: Any
) -> dict[str, str]:
    publishers = {
        "bench": {"api_key": BID_KEY, "rate_per_s": 1_000_000, "burst": 100_000},
        # Far over its rate: one token per 100 s, so (nearly) every request is a 429.
        "hot": {"api_key": HOT_KEY, "rate_per_s": 0.01, "burst": 1},
    }
    env = {
        "SPIKEGATE__PUBLISHERS": json.dumps(publishers),
        "SPIKEGATE__DSPS": json.dumps(dsps),
        "SPIKEGATE__REDIS_URL": redis_url,
        "SPIKEGATE__KAFKA_BOOTSTRAP": bootstrap,
        "SPIKEGATE__AUCTION__LIMIT": "256",
        "SPIKEGATE__AUCTION__MAX_WAIT_MS": "0",
        "SPIKEGATE__AUCTION__REDIS_TIMEOUT_MS": "500",
        "SPIKEGATE__BREAKER__SLOW_CALL_DURATION_S": "1.0",  # a starved box must not trip one
        "SPIKEGATE__IMPRESSIONS__SPOOL_DIR": str(spool),
    }
    for name, value in imp.items():
        env[f"SPIKEGATE__IMPRESSIONS__{name.upper()}"] = str(value)
    return env


def _window(url: str, kind: str, pid: int, rate: float, duration_s: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--load", url, "--kind", kind, "--pid", str(pid)]
    cmd += ["--rate", str(rate), "--window", str(duration_s)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60, check=True)
    parsed: dict[str, Any] = json.loads(out.stdout)
    return parsed


def _median(values: list[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def goodput_bound(ratio: float, k: float) -> float:
    """Goodput at k x capacity, as a share of capacity, when a rejection costs `ratio` of an
    admission: the CPU left after k*C*r of rejections admits (1 - k r/a) / (1 - r/a) of C."""
    return max(0.0, (1 - k * ratio) / (1 - ratio))


# Serves `spikegate.target` imported from argv[1] (a checkout's target/ folder) instead of the
# installed one, the rest of spikegate staying this tree's: through the checkout's own
# `python -m spikegate.target` when it has one (lean_http), else uvicorn's CLI with the app
# factory (as the target ran before lean_http).
_LAUNCHER = """
import importlib.machinery, os, runpy, sys
src = os.path.abspath(sys.argv.pop(1))
class Finder:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "spikegate.target":
            return importlib.machinery.PathFinder.find_spec(name, [os.path.dirname(src)])
        return None
sys.meta_path.insert(0, Finder)
port = sys.argv[sys.argv.index("--port") + 1]
if os.path.exists(os.path.join(src, "__main__.py")):
    sys.argv[1:] = ["--host", "127.0.0.1", "--port", port, "--no-access-log"]
    runpy.run_module("spikegate.target", run_name="__main__", alter_sys=True)
else:
    import uvicorn.main
    sys.argv[0] = "uvicorn"
    uvicorn.main.main()
"""


def _summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    idle_cpu_per_s = _median([w["cpu_s"] / w["wall_s"] for w in runs["idle"]])
    per: dict[str, Any] = {}
    for kind in ("admitted", "429", "shed"):
        ws = runs[kind]
        raw = [w["cpu_s"] / w["n"] * 1e6 for w in ws]
        net = [(w["cpu_s"] - idle_cpu_per_s * w["wall_s"]) / w["n"] * 1e6 for w in ws]
        statuses: dict[str, int] = {}
        for w in ws:
            for s, c in w["statuses"].items():
                statuses[s] = statuses.get(s, 0) + c
        per[kind] = {
            "cpu_us_per_request": round(_median(raw), 1),
            "cpu_us_per_request_net": round(_median(net), 1),
            "rounds_us": [round(x, 1) for x in raw],
            "statuses": statuses,
        }
    a, r, s = (per[k]["cpu_us_per_request"] for k in ("admitted", "429", "shed"))
    a_net, r_net, s_net = (per[k]["cpu_us_per_request_net"] for k in ("admitted", "429", "shed"))
    return {
        "idle_cpu_share_of_core": round(idle_cpu_per_s, 4),
        "per_kind": per,
        "r_over_a": round(r / a, 4),
        "r_over_a_net": round(r_net / a_net, 4),
        "shed_over_a": round(s / a, 4),
        "shed_over_a_net": round(s_net / a_net, 4),
        "goodput_bound_429": {f"{k}x": round(goodput_bound(r / a, k), 3) for k in (2, 5)},
        "goodput_bound_429_net": {
            f"{k}x": round(goodput_bound(r_net / a_net, k), 3) for k in (2, 5)
        },
    }


def bench(rate: float, window_s: float, rounds: int, compare_src: Path | None) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from spikegate.harness.services import (
        DspBidders,
        KafkaBroker,
        RedisServer,
        TargetServer,
        free_port,
    )

    class CheckoutTarget(TargetServer):
        """The target served with `spikegate.target` from `compare_src` (see _LAUNCHER)."""

        def command(self) -> list[str]:
            """uvicorn's CLI arguments: _LAUNCHER uses them as they are, or takes the port."""
            assert compare_src is not None
            return [
                sys.executable, "-c", _LAUNCHER, str(compare_src),
                "--factory", "spikegate.target.app:create_app_from_env",
                "--host", "127.0.0.1", "--port", str(self.port),
                "--no-access-log", "--no-proxy-headers",
            ]  # fmt: skip

    tmp = Path(tempfile.mkdtemp(prefix="spikegate-rcost-"))
    result: dict[str, Any] = {
        "rate_per_s": rate,
        "window_s": window_s,
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg()[0],
    }
    variants = ["this_tree"] + (["compare_src"] if compare_src else [])
    redis, kafka, dsps = RedisServer(tmp), KafkaBroker(tmp), DspBidders(tmp, count=3)
    with redis, kafka, dsps, contextlib.ExitStack() as stack:
        dsp_list = [{"name": n, "url": u} for n, u in zip(dsps.names, dsps.urls, strict=True)]
        dead = f"127.0.0.1:{free_port()}"  # nothing listens: the shedding target's Kafka
        targets: dict[tuple[str, str], TargetServer] = {}
        for variant in variants:
            cls = CheckoutTarget if variant == "compare_src" else TargetServer
            main_env = _target_env(redis.url, kafka.bootstrap, dsp_list, tmp / f"spool-{variant}")
            # The one worker holds one item, the queue one more: every offer sheds.
            shed_env = _target_env(
                redis.url, dead, dsp_list, tmp / f"spool-shed-{variant}",
                max_depth=1, workers=1, batch_size=1, codel="false",
            )  # fmt: skip
            main = stack.enter_context(cls(tmp / variant, env=main_env))
            shed = stack.enter_context(cls(tmp / f"shed-{variant}", env=shed_env))
            for kind in KINDS:
                targets[variant, kind] = shed if kind == "shed" else main

        def window(variant: str, kind: str, duration_s: float) -> dict[str, Any]:
            t = targets[variant, kind]
            assert t.pid is not None
            return _window(t.url, kind, t.pid, rate, duration_s)

        for variant in variants:
            for kind in ("admitted", "429", "shed"):  # warm-up: imports, pools, caches
                window(variant, kind, 1.0)
        runs = {v: {k: [] for k in KINDS} for v in variants}
        for r in range(rounds):
            order = KINDS[r % len(KINDS) :] + KINDS[: r % len(KINDS)]
            for kind in order:
                for variant in variants if r % 2 == 0 else variants[::-1]:
                    runs[variant][kind].append(window(variant, kind, window_s))
    for variant in variants:
        result[variant] = _summary(runs[variant])
    if compare_src:
        result["compare_src"]["src"] = str(compare_src)
    result["loadavg_end"] = os.getloadavg()[0]
    result["acceptance"] = {"r_over_a_net_le_0.05": result["this_tree"]["r_over_a_net"] <= 0.05}
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--load", metavar="URL", help="internal: send one window to URL")
    p.add_argument("--kind", choices=KINDS, default="admitted", help="internal, with --load")
    p.add_argument("--pid", type=int, default=0, help="internal: the target's pid")
    p.add_argument("--rate", type=float, default=300.0)
    p.add_argument("--window", type=float, default=6.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--compare-src",
        type=Path,
        help="also measure the target package from this target/ folder (e.g. an older "
        "checkout: git archive REV target | tar -x -C DIR), alternating in the same run",
    )
    args = p.parse_args()
    if not (0 < args.rate <= 5000 and 0 < args.window <= 600 and args.rounds >= 1):
        p.error("--rate in (0, 5000], --window in (0, 600], --rounds >= 1")
    if args.load:
        out = asyncio.run(_load(args.load, args.kind, args.pid, args.rate, args.window))
    else:
        if args.compare_src and not (args.compare_src / "__init__.py").is_file():
            p.error(f"--compare-src {args.compare_src}: not a package folder")
        out = bench(args.rate, args.window, args.rounds, args.compare_src)
    print(json.dumps(out, indent=None if args.load else 2))


if __name__ == "__main__":
    main()
