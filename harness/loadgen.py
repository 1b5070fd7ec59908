"""The load generator: Locust as a supervised subprocess (never imported here).

    locust -f locustfiles/adserver.py,locustfiles/shape_<shape>.py --headless --host URL
           [--processes N] --exit-code-on-error 0 --stop-timeout 3 --only-summary
    env: SPIKEGATE_LOAD, SPIKEGATE_PUBLISHERS, SPIKEGATE_SEED, SPIKEGATE_T0, SPIKEGATE_RUN_DIR

Importing locust monkey-patches sockets and threads for the whole process, so the harness
only ever runs it as a child: its own process group (its --processes workers included),
its output in logs/locust.log, stopped like every other child. The shape ends the run at
load.duration_s; the recorder plugin writes requests.jsonl and acked/ into the run dir.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from spikegate.contract.env import LOCUSTFILES_ENV, RUN_DIR_ENV, T0_ENV
from spikegate.contract.load import SHAPES
from spikegate.harness.services import ManagedProcess
from spikegate.harness.stack import python_env

__all__ = ["LOCUSTFILES", "LOCUSTFILES_ENV", "SHAPES", "LocustProcess", "locust_command"]

LOCUSTFILES = Path(__file__).resolve().parent.parent / "locustfiles"


def locust_command(host: str, shape: str, *, processes: int = 1) -> list[str]:
    """The Locust command line of the contract for `shape` against `host`."""
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)} (got {shape!r})")
    if processes < 1:
        raise ValueError(f"processes must be >= 1 (got {processes})")
    folder = Path(os.environ.get(LOCUSTFILES_ENV) or LOCUSTFILES)
    files = f"{folder / 'adserver.py'},{folder / f'shape_{shape}.py'}"
    cmd = [sys.executable, "-m", "locust", "-f", files, "--headless", "--host", host]
    if processes > 1:
        cmd += ["--processes", str(processes)]
    return [
        *cmd,
        "--exit-code-on-error", "0",
        "--stop-timeout", "3",
        "--only-summary",
        "--loglevel", "WARNING",
    ]  # fmt: skip


class LocustProcess(ManagedProcess):
    """One headless Locust run; `start()` it (there is nothing to await), then watch `.alive`."""

    name: ClassVar[str] = "locust"
    title: ClassVar[str] = "locust"
    stop_timeout_s: ClassVar[float] = 8.0  # --stop-timeout 3 plus writing the last rows

    def __init__(
        self,
        log_dir: Path,
        *,
        host: str,
        shape: str,
        processes: int,
        env: Mapping[str, str],
        run_dir: Path,
        t0_epoch: float,
    ) -> None:
        super().__init__(log_dir)
        self._cmd = locust_command(host, shape, processes=processes)
        self._env = {**env, T0_ENV: repr(t0_epoch), RUN_DIR_ENV: str(run_dir)}

    def command(self) -> list[str]:
        return list(self._cmd)

    def env(self) -> dict[str, str]:
        return python_env(self._env)

    def is_ready(self) -> bool:
        return True
