"""r/a on the target alone: its CPU per designed rejection against its CPU per admitted bid.

    measure --starts redis-server, Tansu, 3 DSP fakes and two targets (services.py)-->
            for each round, each kind in a rotating order: one window of one kind of request
            from a separate load process (python -m spikegate.harness.rejection_cost --load)
            --> the target's CPU over the window --> per kind, the median over rounds

Why r/a matters (issue 14): with CPU r per designed rejection and a per admitted request, the
goodput at k times capacity is at most (1 - k r/a) / (1 - r/a) of capacity, whatever the
patterns decide (curve_cost.bound_share). `spikegate curve` measures it here, and
`tests/bench/rejection_cost.py` prints it (beside an older checkout's target).

Measured alone, at a fixed rate, because inside the curve's levels it cannot be: on a machine
that the generator, the DSP fakes and Redis share, the target's CPU is capped by the others
in every overloaded level and a request's cost falls as the loop reads several per wake-up, so
no linear fit over the levels explains it. Each window sends one kind of request, open model
(request i leaves at start + i/rate, whatever the earlier ones are doing), over keep-alive
connections from its own process:

    admitted   POST /bid from a publisher far under its rate                 -> 200/204
    429        POST /bid from a publisher far over its rate (same body)      -> 429 rate_limited
    shed       POST /impression to a second target whose queue is full       -> 503 shed
               (Kafka unreachable, one-item queue: every offer sheds queue_full)
    idle       nothing: the target's background CPU (loop-lag monitor, Kafka client), per second

The target's CPU is the scheduler's nanoseconds per thread (`cpu_s`), read by the load
process right before its first send and right after its last answer. `*_net` figures subtract
the idle CPU of the same wall time: what a request adds, the figure the bound's arithmetic
counts. The raw figure is kept beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w

from spikegate.contract.outcomes import ADMITTED, SHED
from spikegate.harness.curve_cost import bound_share
from spikegate.harness.errors import EnvironmentProblem
from spikegate.harness.lifeline import child_env, spawn

__all__ = ["KINDS", "MEASURED", "cpu_s", "measure", "summarize"]

MEASURED = (ADMITTED, "429", SHED)  # the kinds of request whose cost is measured
KINDS = (*MEASURED, "idle")
BID_KEY = "bench-key"
HOT_KEY = "hot-key"
_BID = {
    "imp": [{"id": "1", "bidfloor": 0.01}],
    "site": {"publisher": {"id": "bench"}},
    "tmax": 1000,  # no faults: only a starved CPU could be that slow
}


def cpu_s(pid: int) -> float:
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


# --- the load process -----------------------------------------------------------------------
async def _load(url: str, kind: str, pid: int, rate: float, duration_s: float) -> dict[str, Any]:
    """One window: `rate` requests/s of `kind` for `duration_s`, and the target's CPU over it."""
    import aiohttp

    if kind == "idle":
        before, t0 = cpu_s(pid), time.perf_counter()
        await asyncio.sleep(duration_s)
        return {"cpu_s": cpu_s(pid) - before, "wall_s": time.perf_counter() - t0, "n": 0}
    path = "/impression" if kind == SHED else "/bid"
    key = HOT_KEY if kind == "429" else BID_KEY
    headers = {"X-Api-Key": key, "Content-Type": "application/json"}
    statuses: dict[str, int] = {}
    n = max(1, int(rate * duration_s))

    def body(i: int) -> bytes:
        if kind == SHED:
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
        before, t0 = cpu_s(pid), time.perf_counter()
        tasks = []
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, i)))
        await asyncio.gather(*tasks)
        cpu, wall = cpu_s(pid) - before, time.perf_counter() - t0
    return {"cpu_s": cpu, "wall_s": wall, "n": n, "statuses": statuses}


def _window(url: str, kind: str, pid: int, rate: float, duration_s: float) -> dict[str, Any]:
    """One window from its own load process: a child of the lifeline (it dies with the
    harness, SIGKILL too, and carries the harness's mark), bounded to the window + 60 s."""
    cmd = [sys.executable, "-m", "spikegate.harness.rejection_cost", "--load", url]
    cmd += ["--kind", kind, "--pid", str(pid), "--rate", str(rate), "--window", str(duration_s)]
    proc = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(None))
    try:
        out, err = proc.communicate(timeout=duration_s + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise EnvironmentProblem(
            f"the {kind} window's load process ran past {duration_s + 60:g} s and was killed"
        ) from None
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-1:]
        raise EnvironmentProblem(
            f"the {kind} window's load process exited {proc.returncode}"
            + (f": {tail[0]}" if tail else "")
        )
    parsed: dict[str, Any] = json.loads(out)
    return parsed


# --- the targets and the windows ------------------------------------------------------------
def _target_config(
    path: Path,
    redis_url: str,
    bootstrap: str,
    dsps: list[dict[str, str]],
    spool: Path,
    **impressions: Any,
) -> Path:
    """The target's config file (SPIKEGATE_TARGET_CONFIG) for the cost windows: one publisher
    far under its rate, one far over it, a bulkhead and breakers that a starved box cannot
    trip; `impressions` overrides the impression logger's settings."""
    config = {
        "publishers": {
            "bench": {"api_key": BID_KEY, "rate_per_s": 1_000_000, "burst": 100_000},
            # Far over its rate: one token per 100 s, so (nearly) every request is a 429.
            "hot": {"api_key": HOT_KEY, "rate_per_s": 0.01, "burst": 1},
        },
        "dsps": dsps,
        "redis_url": redis_url,
        "kafka_bootstrap": bootstrap,
        "auction": {"limit": 256, "max_wait_ms": 0, "redis_timeout_ms": 500},
        "breaker": {"slow_call_duration_s": 1.0},
        "impressions": {"spool_dir": str(spool), **impressions},
    }
    path.write_text(tomli_w.dumps(config), encoding="utf-8")
    return path


def summarize(runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """Per kind the CPU per request (median over rounds; raw, and net of the idle CPU of the
    same wall time) and the statuses seen; r/a and shed/a raw and net, with the bound each
    puts on goodput at 2x and 5x."""
    idle_cpu_per_s = statistics.median([w["cpu_s"] / w["wall_s"] for w in runs["idle"]])
    per: dict[str, Any] = {}
    for kind in MEASURED:
        ws = runs[kind]
        raw = [w["cpu_s"] / w["n"] * 1e6 for w in ws]
        net = [(w["cpu_s"] - idle_cpu_per_s * w["wall_s"]) / w["n"] * 1e6 for w in ws]
        statuses: dict[str, int] = {}
        for w in ws:
            for s, c in w["statuses"].items():
                statuses[s] = statuses.get(s, 0) + c
        per[kind] = {
            "cpu_us_per_request": round(statistics.median(raw), 1),
            "cpu_us_per_request_net": round(statistics.median(net), 1),
            "rounds_us": [round(x, 1) for x in raw],
            "statuses": statuses,
        }
    a, r, s = (per[k]["cpu_us_per_request"] for k in MEASURED)
    a_net, r_net, s_net = (per[k]["cpu_us_per_request_net"] for k in MEASURED)
    return {
        "idle_cpu_share_of_core": round(idle_cpu_per_s, 4),
        "per_kind": per,
        "r_over_a": round(r / a, 4),
        "r_over_a_net": round(r_net / a_net, 4),
        "shed_over_a": round(s / a, 4),
        "shed_over_a_net": round(s_net / a_net, 4),
        "goodput_bound_429": {f"{k}x": round(bound_share(k, r / a), 3) for k in (2, 5)},
        "goodput_bound_429_net": {f"{k}x": round(bound_share(k, r_net / a_net), 3) for k in (2, 5)},
    }


def measure(
    rate: float,
    window_s: float,
    rounds: int,
    log_dir: Path,
    *,
    targets: Mapping[str, Callable[..., Any]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Start the stack, warm each kind up for 1 s, then `rounds` rounds of one `window_s`
    window per kind (the order rotating each round, the variants alternating) and summarize
    each variant. `targets` maps a variant's name to its TargetServer class (default: this
    tree's target only)."""
    from spikegate.harness.services import (
        DspBidders,
        KafkaBroker,
        RedisServer,
        TargetServer,
        free_port,
    )

    say = progress or (lambda _msg: None)
    targets = targets or {"this_tree": TargetServer}
    variants = list(targets)
    log_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "rate_per_s": rate,
        "window_s": window_s,
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg()[0],
    }
    redis, kafka, dsps = RedisServer(log_dir), KafkaBroker(log_dir), DspBidders(log_dir, count=3)
    with redis, kafka, dsps, contextlib.ExitStack() as stack:
        dsp_list = [{"name": n, "url": u} for n, u in zip(dsps.names, dsps.urls, strict=True)]
        dead = f"127.0.0.1:{free_port()}"  # nothing listens: the shedding target's Kafka
        serving: dict[tuple[str, str], Any] = {}
        for variant, cls in targets.items():
            main_cfg = _target_config(
                log_dir / f"{variant}.toml", redis.url, kafka.bootstrap, dsp_list,
                log_dir / f"spool-{variant}",
            )  # fmt: skip
            # The one worker holds one item, the queue one more: every offer sheds.
            shed_cfg = _target_config(
                log_dir / f"shed-{variant}.toml", redis.url, dead, dsp_list,
                log_dir / f"spool-shed-{variant}",
                max_depth=1, workers=1, batch_size=1, codel=False,
            )  # fmt: skip
            main = stack.enter_context(cls(log_dir / variant, config_path=main_cfg))
            shed = stack.enter_context(cls(log_dir / f"shed-{variant}", config_path=shed_cfg))
            for kind in KINDS:
                serving[variant, kind] = shed if kind == SHED else main

        def window(variant: str, kind: str, duration_s: float) -> dict[str, Any]:
            t = serving[variant, kind]
            return _window(t.url, kind, t.pid, rate, duration_s)

        for variant in variants:
            for kind in MEASURED:  # warm-up: imports, pools, caches
                window(variant, kind, 1.0)
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            v: {k: [] for k in KINDS} for v in variants
        }
        for r in range(rounds):
            order = KINDS[r % len(KINDS) :] + KINDS[: r % len(KINDS)]
            say(f"round {r + 1} of {rounds}: {', '.join(order)}, {window_s:g} s each")
            for kind in order:
                for variant in variants if r % 2 == 0 else variants[::-1]:
                    runs[variant][kind].append(window(variant, kind, window_s))
    for variant in variants:
        result[variant] = summarize(runs[variant])
    result["loadavg_end"] = os.getloadavg()[0]
    return result


def main(argv: Sequence[str] | None = None) -> None:
    """Internal: the load process of one window (`--load URL`), its result as JSON."""
    p = argparse.ArgumentParser(description="one window of rejection_cost's load (internal)")
    p.add_argument("--load", metavar="URL", required=True)
    p.add_argument("--kind", choices=KINDS, required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--window", type=float, required=True)
    a = p.parse_args(argv)
    print(json.dumps(asyncio.run(_load(a.load, a.kind, a.pid, a.rate, a.window))))


if __name__ == "__main__":
    main()
