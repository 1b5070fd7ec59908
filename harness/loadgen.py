"""The load generator: Locust as a supervised subprocess (never imported here).

    locust -f locustfiles/adserver.py,locustfiles/shape_<shape>.py --headless --host URL
           [--processes N] --exit-code-on-error 0 --stop-timeout 3 --only-summary
    env: SPIKEGATE_LOAD, SPIKEGATE_PUBLISHERS, SPIKEGATE_SEED, SPIKEGATE_T0, SPIKEGATE_RUN_DIR
         (+ SPIKEGATE_OUTCOMES)

With the user's own locustfile (load.locustfile) the entry file is locustfiles/user.py,
which imports it (the path travels in SPIKEGATE_LOAD) and drives its User class under the
arrival schedule; Locust's own final stats then go to logs/locust_stats.csv (--csv), for
comparison with requests.jsonl. `probe_locustfile` checks such a file before a run starts:
`python -m spikegate.locustfiles.probe PATH [USER]` in a subprocess (it imports locust).

Importing locust monkey-patches sockets and threads for the whole process, so the harness
only ever runs it as a child: its own process group (its --processes workers included),
its output in logs/locust.log, stopped like every other child. The shape ends the run at
load.duration_s; the recorder plugin writes requests.jsonl and acked/ into the run dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from spikegate.contract.env import LOAD_ENV, LOCUSTFILES_ENV, RUN_DIR_ENV, T0_ENV
from spikegate.contract.load import SHAPES
from spikegate.harness.errors import UsageError
from spikegate.harness.services import ManagedProcess, python_env

__all__ = [
    "LOCUSTFILES",
    "LOCUSTFILES_ENV",
    "LOCUST_CSV_PREFIX",
    "PROBE_TIMEOUT_S",
    "SHAPES",
    "LocustProcess",
    "locust_command",
    "probe_locustfile",
]

LOCUSTFILES = Path(__file__).resolve().parent.parent / "locustfiles"
LOCUST_CSV_PREFIX = "locust"  # logs/locust_stats.csv, _failures.csv, _exceptions.csv, ...
PROBE_TIMEOUT_S = 30.0
PROBE_MODULE = "spikegate.locustfiles.probe"
PROBE_PREFIX = "spikegate-probe:"  # the probe's error line on stderr


def locust_command(
    host: str,
    shape: str,
    *,
    processes: int = 1,
    user_locustfile: bool = False,
    csv_prefix: Path | None = None,
    workers: int = 0,
    master_bind: tuple[str, int] | None = None,
) -> list[str]:
    """The Locust command line of the contract for `shape` against `host` (the entry file
    user.py when the run drives the user's own locustfile); with `workers`, a master that
    listens on `master_bind` and waits for that many `spikegate worker`s."""
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)} (got {shape!r})")
    if processes < 1:
        raise ValueError(f"processes must be >= 1 (got {processes})")
    folder = Path(os.environ.get(LOCUSTFILES_ENV) or LOCUSTFILES)
    entry = "user.py" if user_locustfile else "adserver.py"
    files = f"{folder / entry},{folder / f'shape_{shape}.py'}"
    cmd = [sys.executable, "-m", "locust", "-f", files, "--headless", "--host", host]
    if processes > 1:
        cmd += ["--processes", str(processes)]
    if workers > 0:
        bind_host, bind_port = master_bind or ("127.0.0.1", 5557)
        cmd += [
            "--master",
            "--master-bind-host", bind_host,
            "--master-bind-port", str(bind_port),
            "--expect-workers", str(workers),
        ]  # fmt: skip
    if csv_prefix is not None:
        cmd += ["--csv", str(csv_prefix)]
    return [
        *cmd,
        "--exit-code-on-error", "0",
        "--stop-timeout", "3",
        "--only-summary",
        "--loglevel", "WARNING",
    ]  # fmt: skip


class LocustProcess(ManagedProcess):
    """One headless Locust run; `start()` it (there is nothing to await), then watch `.alive`.

    `locustfile` (an absolute path, load.locustfile): drive the user's own locustfile
    (locustfiles/user.py); it overrides load.locustfile in env[SPIKEGATE_LOAD], and Locust's
    own stats are written to log_dir/locust_stats.csv."""

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
        t0_epoch: float | None,
        locustfile: str | None = None,
        workers: int = 0,
        master_bind: tuple[str, int] | None = None,
    ) -> None:
        super().__init__(log_dir)
        self._cmd = locust_command(
            host,
            shape,
            processes=processes,
            user_locustfile=locustfile is not None,
            csv_prefix=None if locustfile is None else self.log_dir / LOCUST_CSV_PREFIX,
            workers=workers,
            master_bind=master_bind,
        )
        # t0_epoch None (a master waiting for workers): the harness writes RUN_DIR/T0_FILE
        self._env = {**env, RUN_DIR_ENV: str(run_dir)}
        if t0_epoch is not None:
            self._env[T0_ENV] = repr(t0_epoch)
        if locustfile is not None:
            self._env[LOAD_ENV] = _with_locustfile(env.get(LOAD_ENV), locustfile)

    def command(self) -> list[str]:
        return list(self._cmd)

    def env(self) -> dict[str, str]:
        return python_env(self._env)

    def is_ready(self) -> bool:
        return True


def _with_locustfile(load_json: str | None, locustfile: str) -> str:
    try:
        load = json.loads(load_json) if load_json else {}
    except json.JSONDecodeError:
        load = None
    if not isinstance(load, dict):
        raise ValueError(f"{LOAD_ENV} must be the [load] section as a JSON object")
    load["locustfile"] = str(Path(locustfile).resolve())
    return json.dumps(load, sort_keys=True)


def probe_locustfile(
    path: str, user: str | None = None, *, timeout_s: float = PROBE_TIMEOUT_S
) -> str:
    """The User class a run of the locustfile at `path` would drive (`user`, or the only one
    it defines), found by importing it in a subprocess (bounded); UsageError (exit 2) with
    one line naming the problem: the file missing or not a .py, its import failing (the
    last line of the traceback), no User class, several and no load.user, the named class
    missing."""
    file = Path(path).expanduser()
    if not file.is_file():
        what = "is not a file" if file.exists() else "does not exist"
        raise UsageError(f"load.locustfile: {file} {what}", hint="give the path of a .py file")
    if file.suffix != ".py":
        raise UsageError(f"load.locustfile: {file} is not a .py file")
    cmd = [sys.executable, "-m", PROBE_MODULE, str(file.resolve()), *([user] if user else [])]
    try:
        done = subprocess.run(
            cmd,
            env=python_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise UsageError(
            f"load.locustfile: importing {file} took longer than {timeout_s:g} s",
            hint="a locustfile should only define classes at import time (no load, no waiting)",
        ) from None
    if done.returncode == 0:
        lines = [ln.strip() for ln in done.stdout.splitlines() if ln.strip()]
        if lines and lines[-1].isidentifier():
            return lines[-1]
    problem = _probe_problem(done.stderr)
    if done.returncode == 2 and problem:
        raise UsageError(problem)
    raise UsageError(
        f"load.locustfile: checking {file} failed (exit {done.returncode})"
        + (f": {problem}" if problem else "")
    )


def _probe_problem(stderr: str) -> str:
    """The probe's own message (prefixed), else the last line of stderr."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    ours = [ln for ln in lines if ln.startswith(PROBE_PREFIX)]
    if ours:
        return ours[-1].removeprefix(PROBE_PREFIX).strip()
    return lines[-1] if lines else ""
