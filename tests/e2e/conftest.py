"""e2e helpers: `spikegate` as a subprocess, and the checks that nothing was left behind.

Each run gets its own --out directory under tmp_path; the harness picks ephemeral ports.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest

from spikegate.chaos.server import server_command

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def _env() -> dict[str, str]:
    """This environment, with the checkout first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def spikegate(args: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
    """Start `python -m harness ARGS` in its own session (a signal reaches it alone)."""
    return subprocess.Popen(
        [sys.executable, "-m", "spikegate.harness", *args],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kwargs,
    )


def cli(*args: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    """A short `spikegate ARGS` command (fault, load, replay, ...) run to its end."""
    return subprocess.run(
        [sys.executable, "-m", "spikegate.harness", *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def wait_for_second(run_dir: Path, t: float, proc: subprocess.Popen[str]) -> None:
    """Until the run's own per-second rows reach second `t` (bounded): the run's clock, not
    the test's."""
    deadline = time.monotonic() + t + 60
    path = run_dir / "requests.jsonl"
    while time.monotonic() < deadline:
        assert proc.poll() is None, "spikegate ended early"
        if path.exists():
            last = [line for line in path.read_text().splitlines() if line.strip()]
            if last and json.loads(last[-1])["t"] >= t:
                return
        time.sleep(0.2)
    pytest.fail(f"the run's rows did not reach t={t}")


def finish(proc: subprocess.Popen[str], timeout_s: float) -> tuple[int, str]:
    """Wait for the harness; on a hang kill its whole group and fail."""
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"spikegate did not exit within {timeout_s} s:\n{out[-4000:]}")
    return proc.returncode, out


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for_event(run_dir: Path, kind: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    path = run_dir / "events.jsonl"
    while time.monotonic() < deadline:
        if path.exists() and f'"kind":"{kind}"' in path.read_text():
            return
        time.sleep(0.1)
    pytest.fail(f"no {kind} event in {path} within {timeout_s} s")


def _ports_of(components: dict[str, Any]) -> set[int]:
    ports: set[int] = set()

    def port(addr: str) -> None:
        tail = addr.rstrip("/").rsplit(":", 1)[-1].split("/")[0]
        if tail.isdigit():
            ports.add(int(tail))

    for entry in components.values():
        if entry.get("external"):
            continue  # e.g. the test's own toxiproxy: not the run's to stop
        for key in ("url", "bootstrap", "listen"):
            if isinstance(entry.get(key), str):
                port(entry[key])
        for url in (entry.get("urls") or {}).values():
            port(url)
    return ports


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def leftovers(run_dir: Path, harness_pid: int) -> list[str]:
    """Processes or ports of the run that are still alive: [] when everything is gone."""
    meta = json.loads((run_dir / "meta.json").read_text())
    components = meta.get("components", {})
    pids = {c["pid"] for c in components.values() if isinstance(c.get("pid"), int)}
    groups = pids | {harness_pid}
    found: list[str] = []
    for proc in psutil.process_iter(["pid", "status", "cmdline"]):
        try:
            pgid = os.getpgid(proc.pid)
        except OSError:
            continue
        in_run = str(run_dir) in " ".join(proc.info["cmdline"] or ())
        ours = proc.pid in pids or pgid in groups or in_run
        if ours and proc.pid != os.getpid() and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(f"process {proc.pid} {proc.info['cmdline']}")
    found += [f"port {p} still listening" for p in sorted(_ports_of(components)) if listening(p)]
    return found


@pytest.fixture
def chaos_server(tmp_path: Path) -> Iterator[str]:
    """A chaos server of the test's own (`python -m chaos.server`), as an external toxiproxy."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (tmp_path / "chaos-test.log").open("wb")
    env = _env()
    proc = subprocess.Popen(
        server_command(port),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        from spikegate.chaos.client import ChaosClient

        ChaosClient(url).wait_ready(15.0)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
