"""`spikegate worker --master HOST:PORT`: one Locust worker joining a run from this or another
machine (the run waits for its `load.workers`, `spikegate run ... --expect-workers N`).

    spikegate worker ──owns──> python -m locust -f - --worker --master-host H --master-port P
                                   │  the locustfiles (-f -) and the run's config come from
                                   │  the master; nothing is read from or written to a shared
                                   │  disk
                                   └─ per-second rows, acked ids, CPU ──Locust's messaging──>
                                      the master (the harness's Locust), which merges them

The worker's Locust is a child like any other the harness starts (own process group,
lifeline: it dies with this command, SIGKILL included). It ends when the master ends the run;
this command then exits 0, or 4 naming what went wrong (no master answered, Locust failed).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar

from rich.console import Console

from spikegate.contract.env import WORKER_DIR_ENV
from spikegate.harness.errors import EnvironmentProblem, UsageError
from spikegate.harness.services import ManagedProcess, python_env, reap_on_sigterm

__all__ = ["LocustWorker", "parse_master", "run_worker"]

POLL_S = 0.2
NO_MASTER = ("Got no locustfile response from master", "Failed to connect to master")


def parse_master(text: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) -> (host, port); UsageError (exit 2) otherwise."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(
            f"--master must be HOST:PORT (got {text!r})",
            hint="the run prints it: `spikegate worker --master 127.0.0.1:PORT`",
        )
    return host, int(port)


class LocustWorker(ManagedProcess):
    """`locust -f - --worker`: fetches the run's locustfiles from the master into its own
    temporary folder (TMPDIR), so two workers on one machine never share a file; keeps a copy
    of what it sent the master in log_dir/sent/<pid>/ (requests.jsonl, acked.txt)."""

    name: ClassVar[str] = "locust-worker"
    title: ClassVar[str] = "locust worker"
    stop_timeout_s: ClassVar[float] = 8.0

    def __init__(self, log_dir: Path, *, master: tuple[str, int], processes: int = 1) -> None:
        super().__init__(log_dir)
        self.master = master
        self.processes = processes
        self.files_dir = self.log_dir / "locustfiles"

    def command(self) -> list[str]:
        host, port = self.master
        cmd = [sys.executable, "-m", "locust", "-f", "-", "--worker"]
        cmd += ["--master-host", host, "--master-port", str(port), "--loglevel", "INFO"]
        if self.processes > 1:
            cmd += ["--processes", str(self.processes)]
        return cmd

    def env(self) -> dict[str, str]:
        self.files_dir.mkdir(parents=True, exist_ok=True)
        own = str(self.log_dir.resolve() / "sent")  # its copy of what it sent the master
        return python_env({"TMPDIR": str(self.files_dir), WORKER_DIR_ENV: own})

    def is_ready(self) -> bool:
        return True


def run_worker(
    master: str, *, processes: int = 1, log_dir: Path | None = None, console: Console
) -> int:
    """Run one worker until the master ends the run (0) or it fails (EnvironmentProblem)."""
    address = parse_master(master)
    if not 1 <= processes <= 64:
        raise UsageError(f"--processes must be between 1 and 64 (got {processes})")
    folder = log_dir or Path(tempfile.mkdtemp(prefix="spikegate-worker-"))
    reap_on_sigterm()
    worker = LocustWorker(folder, master=address, processes=processes)
    console.print(
        f"worker: joining the run at {address[0]}:{address[1]} (log: {worker.log_path})",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    worker.start()
    try:
        while worker.alive:
            time.sleep(POLL_S)
        code = worker.returncode
    finally:
        worker.stop()  # also on Ctrl-C / SIGTERM: its group is stopped and reaped
    if code == 0:
        console.print("worker: the run ended", highlight=False, markup=False)
        return 0
    tail = _tail(worker.log_path)
    if any(marker in tail for marker in NO_MASTER):
        raise EnvironmentProblem(
            f"no run answered at {address[0]}:{address[1]}",
            hint="start the run first (`spikegate run SCENARIO --expect-workers N` prints the "
            "address), and check that this machine reaches it",
        )
    raise EnvironmentProblem(
        f"the Locust worker exited with code {code}\n--- last lines of {worker.log_path} ---\n"
        + tail
    )


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
