"""The cost of a rejection: the target's CPU per admitted bid (a) and per designed rejection (r).

    run starts --meta.json (target pid, t0)--> CpuTrace: cpu seconds every 0.25 s
    samples.jsonl requests_total (the target's own counters) --+
                                                               +--> cost_seconds: intervals
                                                                    --> fit_cost: a, r, idle

cpu/s = a * admitted bids/s + r * designed rejections/s + idle, least squares over the
intervals between good scrapes, each weighted by its length. An admitted bid carries the
impression that follows it. By the arithmetic of issue 14, goodput at k times a CPU-bound
capacity is at most (1 - k r/a) / (1 - r/a) of it (`bound_share`).
"""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spikegate.contract.outcomes import ADMITTED, ERROR

__all__ = [
    "CostFit",
    "CpuTrace",
    "Interval",
    "bound_share",
    "cost_seconds",
    "cpu_at",
    "fit_cost",
    "level_cpu",
    "raw_samples",
    "server_counts",
]


class CpuTrace:
    """Reads the target's CPU seconds every `every_s` while a run runs, by the pid and t0 the
    orchestrator writes to meta.json once the stack is up: [(t since t0, cpu seconds)]."""

    def __init__(self, run_dir: Path, every_s: float = 0.25) -> None:
        self.run_dir = run_dir
        self.every_s = every_s
        self.points: list[tuple[float, float]] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="curve-cpu", daemon=True)

    def __enter__(self) -> CpuTrace:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _target(self) -> tuple[Any, float] | None:
        import psutil

        try:
            meta = json.loads((self.run_dir / "meta.json").read_text(encoding="utf-8"))
            pid, t0 = meta["components"]["target"]["pid"], meta["t0_epoch"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not isinstance(pid, int) or not isinstance(t0, int | float):
            return None
        try:
            return psutil.Process(pid), float(t0)
        except psutil.Error as exc:
            self.error = f"target pid {pid}: {exc}"
            return None

    def _loop(self) -> None:
        import psutil

        found = None
        while found is None and not self._stop.wait(0.1):
            found = self._target()
        if found is None:
            self.error = self.error or "no target pid in meta.json"
            return
        proc, t0 = found
        while not self._stop.is_set():
            try:
                with proc.oneshot():
                    procs = [proc, *proc.children(recursive=True)]
                    cpu = sum(sum(p.cpu_times()[:2]) for p in procs)
            except psutil.Error:
                return  # the target has stopped: the trace ends here
            self.points.append((round(time.time() - t0, 3), round(cpu, 4)))
            self._stop.wait(self.every_s)


def cpu_at(points: Sequence[tuple[float, float]], t: float) -> float | None:
    """The CPU seconds at `t`, linearly between the two readings around it."""
    for (t0, c0), (t1, c1) in itertools.pairwise(points):
        if t0 <= t <= t1:
            return c0 if t1 == t0 else c0 + (c1 - c0) * (t - t0) / (t1 - t0)
    return None


def server_counts(requests_total: Mapping[str, Any]) -> dict[str, float]:
    """The target's cumulative /bid and /impression answers by kind: bids (admitted /bid),
    impressions (admitted /impression), rejections (429/503 with a designed decision)."""
    out = {"bids": 0.0, "impressions": 0.0, "rejections": 0.0, "other": 0.0}
    for key, value in requests_total.items():
        path, _, rest = str(key).partition(":")
        status, _, decision = rest.partition(":")
        if path not in ("/bid", "/impression") or not isinstance(value, int | float):
            continue
        if status.startswith("2"):
            out["bids" if path == "/bid" else "impressions"] += value
        elif status in ("429", "503") and decision and decision not in (ADMITTED, ERROR):
            out["rejections"] += value
        else:
            out["other"] += value
    return out


Interval = tuple[float, float, float, float]
"""(target CPU seconds, admitted bids, designed rejections, seconds) between two scrapes."""


def cost_seconds(
    samples: Sequence[Mapping[str, Any]],
    cpu: Sequence[tuple[float, float]],
    start_s: float,
    end_s: float,
) -> list[Interval]:
    """The intervals between consecutive good scrapes in [start_s, end_s], from their
    `requests_total` and the CPU trace at the same instants. A target too busy to answer its
    /metrics in time leaves no good scrape inside: then the last one before and the first one
    after the window bound one longer interval (the counters are cumulative, so nothing is
    lost, the mix is only averaged)."""
    good = [
        s
        for s in samples
        if s.get("ok") and isinstance(s.get("requests_total"), Mapping)
        and isinstance(s.get("t"), int | float)
    ]  # fmt: skip
    rows = [s for s in good if start_s <= s["t"] <= end_s]
    if len(rows) < 2:
        before = [s for s in good if s["t"] < start_s][-1:]
        after = [s for s in good if s["t"] > end_s][:1]
        rows = [*before, *rows, *after]
    out = []
    for a, b in itertools.pairwise(rows):
        dt = float(b["t"]) - float(a["t"])
        ca, cb = cpu_at(cpu, float(a["t"])), cpu_at(cpu, float(b["t"]))
        if dt <= 0 or ca is None or cb is None:
            continue
        na, nb = server_counts(a["requests_total"]), server_counts(b["requests_total"])
        out.append((cb - ca, nb["bids"] - na["bids"], nb["rejections"] - na["rejections"], dt))
    return out


@dataclass(frozen=True, slots=True)
class CostFit:
    a_us: float | None  # target CPU per admitted /bid (with its impression), microseconds
    r_us: float | None  # target CPU per designed rejection (429/503), microseconds
    idle_cores: float | None
    seconds: float  # the intervals' total length
    r2: float | None
    unfit: str | None = None  # why a and r do not explain the CPU (then no ratio is given)

    @property
    def ratio(self) -> float | None:
        if self.a_us is None or self.r_us is None or self.a_us <= 0 or self.unfit:
            return None
        return self.r_us / self.a_us


MIN_R2 = 0.5  # below it the linear cost model does not explain the target's CPU


def fit_cost(points: Sequence[Interval]) -> CostFit:
    """Least squares cpu/s = a * bids/s + r * rejections/s + idle over the intervals, each
    weighted by its length; r is None (not measurable) with fewer than 3 intervals that
    rejected, a and r None when the fit is not positive."""
    import numpy as np

    pts = [p for p in points if all(math.isfinite(v) for v in p) and p[3] > 0]
    seconds = round(sum(p[3] for p in pts), 1)
    if len(pts) < 5 or not any(p[1] > 0 for p in pts):
        return CostFit(None, None, None, seconds, None)
    w = np.sqrt(np.array([p[3] for p in pts]))
    y = np.array([p[0] / p[3] for p in pts])
    with_r = sum(1 for p in pts if p[2] > 0) >= 3
    cols = [[p[1] / p[3] for p in pts], [1.0] * len(pts)]
    if with_r:
        cols.insert(1, [p[2] / p[3] for p in pts])
    x = np.array(cols).T
    coef, *_ = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)
    resid = (y - x @ coef) * w
    mean = float((y * w * w).sum() / (w * w).sum())
    ss_tot = float((((y - mean) * w) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else None
    a = float(coef[0]) * 1e6
    r = float(coef[1]) * 1e6 if with_r else None
    # A target pinned near one core in every overloaded run gives CPU that no mix of
    # answers explains: r comes out below zero, or the fit explains little of the CPU. A
    # bound drawn from such a ratio would be a guess, so none is given (the isolated bench,
    # tests/bench/rejection_cost.py, measures r/a instead).
    unfit = None
    if r is not None and r < 0:
        unfit = f"the fit gave r = {r:.0f} us, below zero"
    elif r2 is not None and r2 < MIN_R2:
        unfit = f"the fit explains R^2 {r2:.2f} of the CPU (< {MIN_R2:g})"
    return CostFit(
        round(a, 1) if a > 0 else None,
        None if r is None else round(max(r, 0.0), 1),
        round(float(coef[-1]), 4),
        seconds,
        None if r2 is None else round(r2, 4),
        unfit,
    )


def bound_share(k: float, ratio: float) -> float:
    """Goodput at k x capacity, as a share of capacity, at most (1 - k r/a) / (1 - r/a)
    (k <= 1: all of the offered load), floored at 0."""
    if k <= 1.0:
        return k
    if ratio >= 1.0:
        return 0.0
    return max(0.0, min(1.0, (1.0 - k * ratio) / (1.0 - ratio)))


def level_cpu(intervals: Sequence[Interval], error: str | None) -> dict[str, Any]:
    """The target's CPU over one run's intervals: cores, answers/s, us per answer."""
    if not intervals:
        return {"cpu_cores": None, "cpu_note": error or "no CPU readings and scrapes to match"}
    cpu, bids, rej, dt = (sum(i[j] for i in intervals) for j in range(4))
    return {
        "cpu_cores": round(cpu / dt, 3),
        "cpu_seconds_measured": round(dt, 1),
        "server_bids_rps": round(bids / dt, 1),
        "server_rejections_rps": round(rej / dt, 1),
        "cpu_us_per_answer": round(cpu / (bids + rej) * 1e6, 1) if bids + rej else None,
    }


def raw_samples(run_dir: Path) -> list[dict[str, Any]]:
    """samples.jsonl as raw rows (requests_total is not part of history.Sample)."""
    out = []
    path = run_dir / "samples.jsonl"
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                out.append(row)
    return out
