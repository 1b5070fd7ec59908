"""How a client finds a live run: the files a running orchestrator publishes.

    spikegate run --LiveRun.publish()--> <run dir>/control.json
                                         <runtime dir>/live/<pid>.json   (the pointer)
    spikegate fault --live_runs()------> the pointers whose process still runs (the others
                                         are removed on the way)

Runtime dir: $SPIKEGATE_RUNTIME_DIR, else $XDG_RUNTIME_DIR/spikegate, else ~/.cache/spikegate.
Both files go first at teardown (`unpublish`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from spikegate.contract.env import RUNTIME_DIR_ENV

__all__ = [
    "CONTROL_FILE",
    "LiveRun",
    "live_dir",
    "live_runs",
    "read_live_run",
    "runtime_dir",
    "unpublish",
]

CONTROL_FILE = "control.json"


def runtime_dir() -> Path:
    """$SPIKEGATE_RUNTIME_DIR, else $XDG_RUNTIME_DIR/spikegate, else ~/.cache/spikegate."""
    override = os.environ.get(RUNTIME_DIR_ENV)
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "spikegate"
    return Path.home() / ".cache" / "spikegate"


def live_dir() -> Path:
    return runtime_dir() / "live"


def _process_start(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


@dataclass(frozen=True)
class LiveRun:
    """What a client needs to find a live run and talk to it."""

    pid: int
    control_url: str
    run_dir: str
    scenario: str
    started: str
    process_start: float | None = None  # tells a reused pid from ours

    @classmethod
    def here(cls, control_url: str, run_dir: Path, scenario: str, started: str) -> LiveRun:
        pid = os.getpid()
        return cls(pid, control_url, str(run_dir.resolve()), scenario, started,
                   _process_start(pid))  # fmt: skip

    @classmethod
    def from_json(cls, data: object) -> LiveRun:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        pid, url = data.get("pid"), data.get("control_url")
        if not isinstance(pid, int) or pid <= 0 or not isinstance(url, str):
            raise ValueError("pid or control_url missing")
        started = data.get("process_start")
        return cls(
            pid=pid,
            control_url=url,
            run_dir=str(data.get("run_dir") or ""),
            scenario=str(data.get("scenario") or "?"),
            started=str(data.get("started") or ""),
            process_start=float(started) if isinstance(started, int | float) else None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "control_url": self.control_url,
            "run_dir": self.run_dir,
            "scenario": self.scenario,
            "started": self.started,
            "process_start": self.process_start,
        }

    @property
    def alive(self) -> bool:
        """Its process still runs (the same process: a reused pid does not count)."""
        now = _process_start(self.pid)
        if now is None:
            return False
        return self.process_start is None or abs(now - self.process_start) < 1.0

    def paths(self) -> list[Path]:
        """Where `publish` writes: control.json in the run directory, and the pointer."""
        return [Path(self.run_dir) / CONTROL_FILE, live_dir() / f"{self.pid}.json"]

    def publish(self) -> None:
        """Write both files (OSError on failure; `unpublish(paths())` removes what was)."""
        paths = self.paths()
        paths[1].parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path in paths:
            _write_json(path, self.to_json())


def unpublish(paths: Sequence[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_live_run(path: Path) -> LiveRun:
    """Read a control.json or pointer file; ValueError / OSError when unreadable."""
    return LiveRun.from_json(json.loads(path.read_text(encoding="utf-8")))


def live_runs() -> list[LiveRun]:
    """The live runs of this user, oldest first; pointers of dead or unreadable runs are
    removed on the way."""
    folder = live_dir()
    try:
        paths = sorted(folder.glob("*.json"))
    except OSError:
        return []
    runs: list[LiveRun] = []
    for path in paths[:1000]:
        try:
            run = read_live_run(path)
        except (OSError, ValueError):
            run = None
        if run is None or not run.alive:
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        runs.append(run)
    return sorted(runs, key=lambda r: (r.started, r.pid))
