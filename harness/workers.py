"""The run's side of master/worker (load.workers): where the master listens, who joined, who
went missing.

    harness ──starts──> Locust master (--master --expect-workers N, no t0 yet)
       │                   │ writes RUN_DIR/workers.json: who joined, who went missing
       │ <──polls──────────┘
       │ every worker joined within load.workers_wait_s (else exit 4, naming the command)
       └──writes RUN_DIR/control/t0.json──> the master starts the load at t0 on every worker

A worker that goes missing mid-run (no heartbeat, or it quit before the load's end) is a
component_crash event in the history: the run is inconclusive (exit 3), never a pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spikegate.contract.rundir import T0_FILE, WORKERS_FILE
from spikegate.harness.errors import EnvironmentProblem
from spikegate.harness.services import free_port

__all__ = ["MissingWorker", "await_workers", "master_address", "missing_workers", "write_t0"]

POLL_S = 0.2


@dataclass(frozen=True)
class MissingWorker:
    id: str
    host: str | None
    pid: int | None
    reason: str
    t: float | None

    def describe(self) -> str:
        where = f" ({self.host}, pid {self.pid})" if self.host else ""
        when = f" at t={self.t:g}s" if self.t is not None else ""
        return f"worker {self.id}{where}{when}: {self.reason}"


def master_address(bind: str) -> tuple[str, int]:
    """load.master_bind -> (host, port); port 0 picks a free one (on loopback)."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    return host, int(port) or free_port()


def _read(run_dir: Path) -> dict[str, Any]:
    try:
        doc = json.loads((run_dir / WORKERS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def joined_workers(run_dir: Path) -> int:
    """Workers connected to the master now (missing ones excluded)."""
    workers = _read(run_dir).get("workers") or {}
    return sum(1 for w in workers.values() if isinstance(w, dict) and w.get("state") != "missing")


def missing_workers(run_dir: Path) -> list[MissingWorker]:
    """Workers the master declared missing, in the order of their ids."""
    out: list[MissingWorker] = []
    for wid, w in sorted((_read(run_dir).get("workers") or {}).items()):
        if isinstance(w, dict) and w.get("state") == "missing":
            pid = w.get("pid")
            t = w.get("t")
            out.append(
                MissingWorker(
                    id=str(wid),
                    host=None if w.get("host") is None else str(w["host"]),
                    pid=int(pid) if isinstance(pid, int) else None,
                    reason=str(w.get("reason") or "missing"),
                    t=float(t) if isinstance(t, int | float) else None,
                )
            )
    return out


def await_workers(
    run_dir: Path,
    expected: int,
    *,
    address: tuple[str, int],
    timeout_s: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    check: Callable[[], None] = lambda: None,
) -> None:
    """Return once `expected` workers joined; EnvironmentProblem (exit 4) when they did not
    within `timeout_s`, naming the command that starts one. `check` runs every poll (it
    raises to abandon the wait: a signal, the master dying)."""
    deadline = clock() + timeout_s
    while True:
        joined = joined_workers(run_dir)
        if joined >= expected:
            return
        check()
        if clock() >= deadline:
            host, port = address
            raise EnvironmentProblem(
                f"expected {expected} worker{'s' if expected != 1 else ''}, {joined} joined "
                f"within {timeout_s:g} s: start them with "
                f"`spikegate worker --master {host}:{port}`",
                hint="or lower load.workers (--expect-workers), or raise load.workers_wait_s",
            )
        sleep(POLL_S)


def write_t0(run_dir: Path, t0_epoch: float) -> None:
    """The instant the load starts on every worker (the master waits for this file)."""
    path = run_dir / T0_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"t0_epoch": t0_epoch}), encoding="utf-8")
    tmp.replace(path)
