"""Ctrl-C (SIGINT) or SIGTERM in the middle of a run: status interrupted, exit 130/143, and no
process, toxic or bound port left behind, 5 times out of 5. SIGKILL: nothing of the run
outlives the harness by 5 s, and what a harness killed together with its guardian left
(Locust's forked workers) is reaped, and named, by the next run."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from spikegate.harness.lifeline import marked_processes, owner_token
from tests.e2e.conftest import SCENARIOS, finish, leftovers, rows, spikegate, wait_for_event

pytestmark = [pytest.mark.e2e]

SCENARIO = str(SCENARIOS / "interrupt.toml")


def _interrupt_once(run_dir: Path, sig: signal.Signals, *, twice: bool = False) -> None:
    proc = spikegate(["run", SCENARIO, "--no-live", "--out", str(run_dir)])
    try:
        wait_for_event(run_dir, "load_start", timeout_s=40)
        time.sleep(1.5)  # load flowing, the Redis fault applied
        proc.send_signal(sig)
        if twice:  # a second Ctrl-C means hurry, still no orphans
            time.sleep(0.2)
            proc.send_signal(sig)
        code, out = finish(proc, 40)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 128 + sig, out
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "interrupted"
    assert meta["cleanup"]["clean"] is True, meta["cleanup"]
    assert meta["cleanup"]["toxics_left"] == []
    kinds = [e["kind"] for e in rows(run_dir / "events.jsonl")]
    assert "interrupted" in kinds and kinds[-1] == "run_end"
    assert leftovers(run_dir, proc.pid) == []


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("sig", "times"),
    [
        pytest.param(signal.SIGINT, 2, id="SIGINT"),
        pytest.param(signal.SIGTERM, 2, id="SIGTERM"),
        # the full 5 of 5 (make test runs 2 of each, the last with a second signal)
        pytest.param(signal.SIGINT, 5, id="SIGINT-5of5", marks=pytest.mark.slow),
        pytest.param(signal.SIGTERM, 5, id="SIGTERM-5of5", marks=pytest.mark.slow),
    ],
)
def test_interrupt_leaves_nothing_behind(tmp_path: Path, sig: signal.Signals, times: int) -> None:
    for attempt in range(times):
        _interrupt_once(tmp_path / f"run-{attempt}", sig, twice=attempt == times - 1)


@pytest.mark.timeout(60)
def test_sigint_during_bring_up_stops_what_was_started(tmp_path: Path) -> None:
    run_dir = tmp_path / "early"
    proc = spikegate(["run", SCENARIO, "--no-live", "--out", str(run_dir)])
    deadline = time.monotonic() + 30
    while not (run_dir / "logs" / "dsp.log").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    code, out = finish(proc, 40)
    assert code == 130, out
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "interrupted" and meta["cleanup"]["clean"] is True
    assert leftovers(run_dir, proc.pid) == []


# --- whatever kills the harness: SIGKILL, and the next run's reaper -----------------------


def _snapshot(harness_pid: int, token: str) -> tuple[dict[int, float], set[int]]:
    """The run's processes now ((pid -> create_time): the harness's tree and whatever carries
    its token) and the ports they listen on."""
    procs: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        procs = psutil.Process(harness_pid).children(recursive=True)
    procs += [p for p, _ in marked_processes({token})]
    seen: dict[int, float] = {}
    ports: set[int] = set()
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            seen[proc.pid] = proc.create_time()
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr:
                    ports.add(conn.laddr.port)
    return seen, ports


def _listeners(ports: set[int]) -> dict[int, int | None]:
    """port -> pid of whatever listens on it now (None: unknown)."""
    found: dict[int, int | None] = {}
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port in ports:
            found[conn.laddr.port] = conn.pid
    return found


def _left_behind(
    token: str, seen: dict[int, float], ports: set[int], timeout_s: float
) -> tuple[list[str], dict[int, str]]:
    """What of the run still lives after up to `timeout_s`: processes (seen, or carrying the
    token) and ports held by them. Also returns ports re-bound meanwhile by unrelated processes
    (freed by the run, then taken by another test on this machine: not the run's)."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive: dict[int, str] = {}
        for pid, created in seen.items():
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    alive[pid] = " ".join(proc.cmdline())[:120]
        for proc, _ in marked_processes({token}):
            with contextlib.suppress(psutil.Error):
                alive[proc.pid] = " ".join(proc.cmdline())[:120]
        held: list[str] = []
        foreign: dict[int, str] = {}
        for port, pid in _listeners(ports).items():
            if pid is None or pid in alive:
                held.append(f"port {port} still listening (pid {pid})")
            else:
                with contextlib.suppress(psutil.Error):
                    foreign[port] = " ".join(psutil.Process(pid).cmdline())[:80]
        left = [f"process {pid}: {cmd}" for pid, cmd in sorted(alive.items())] + held
        if not left or time.monotonic() >= deadline:
            return left, foreign
        time.sleep(0.05)


def _kill_everything(token: str, seen: dict[int, float]) -> None:
    """After a failed check: the next test must not inherit this run's processes."""
    for pid in seen:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    for proc, _ in marked_processes({token}):
        with contextlib.suppress(psutil.Error):
            proc.kill()


def _wait_processes(token: str, pattern: str, count: int, timeout_s: float) -> None:
    """Wait until `count` processes carrying `token` have `pattern` in their command line."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = 0
        for proc, _ in marked_processes({token}):
            with contextlib.suppress(psutil.Error):
                found += pattern in " ".join(proc.cmdline())
        if found >= count:
            return
        assert time.monotonic() < deadline, f"fewer than {count} {pattern} processes"
        time.sleep(0.1)


COMPONENTS = (
    "chaos.server",
    "target.dsp",
    "redis-server",
    "tansu",
    "-m spikegate.target --",
    "locust",
)


@pytest.mark.timeout(150)
def test_sigkill_once_the_whole_stack_is_up_leaves_nothing_within_5_s(tmp_path: Path) -> None:
    """SIGKILL cannot be caught (a CI runner cancelling a job): the children die of their
    parent-death signal, the guardian kills their groups (Locust's forked workers)."""
    run_dir = tmp_path / "killed"
    proc = spikegate(
        ["run", SCENARIO, "--no-live", "--out", str(run_dir), "--set", "load.processes=2"]
    )
    token = owner_token(proc.pid)
    seen: dict[int, float] = {}
    try:
        wait_for_event(run_dir, "load_start", timeout_s=60)
        _wait_processes(token, "locust", 3, timeout_s=30)  # the master and its 2 workers
        seen, ports = _snapshot(proc.pid, token)
        cmdlines = " ".join(
            " ".join(psutil.Process(pid).cmdline()) for pid in seen if psutil.pid_exists(pid)
        )
        assert all(name in cmdlines for name in COMPONENTS), cmdlines
        assert len(ports) >= 8, ports  # chaos API + proxies, redis, kafka, bidders, target
        proc.kill()
        finish(proc, 10)
        left, _ = _left_behind(token, seen, ports, timeout_s=5)
        assert left == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _kill_everything(token, seen)


class _Output:
    """A child's stdout, read by a thread so that a test can wait for a line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        self._stream = proc.stdout
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            self.lines.append(line)

    def wait_for(self, text: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            time.sleep(0.05)
        pytest.fail(f"no {text!r} in the output within {timeout_s} s:\n{''.join(self.lines)}")

    def rest(self, timeout_s: float) -> str:
        """Everything, once the child closed its end (it exited)."""
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the output did not end"
        return "".join(self.lines)


@pytest.mark.timeout(180)
def test_the_next_run_reaps_and_names_what_a_killed_harness_left(tmp_path: Path) -> None:
    """Harness and guardian SIGKILLed together (nothing watches any more): the children still
    die of their parent-death signal, Locust's forked workers survive; the next run kills
    those at its start and says so, on the console and in its events."""
    first_dir = tmp_path / "first"
    first = spikegate(
        ["run", SCENARIO, "--no-live", "--out", str(first_dir), "--set", "load.processes=2"]
    )
    token = owner_token(first.pid)
    seen: dict[int, float] = {}
    second: subprocess.Popen[str] | None = None
    try:
        wait_for_event(first_dir, "load_start", timeout_s=60)
        _wait_processes(token, "locust", 3, timeout_s=30)
        seen, _ = _snapshot(first.pid, token)
        children = psutil.Process(first.pid).children()
        guardians = [p for p in children if "spikegate guardian" in " ".join(p.cmdline())]
        assert len(guardians) == 1
        guardians[0].kill()  # dead at once: a SIGKILLed process runs no more code
        first.kill()
        finish(first, 10)
        survivors, _ = _left_behind(token, seen, set(), timeout_s=5)
        assert survivors and all("locust" in s for s in survivors), survivors
        run_dir = tmp_path / "second"
        second = spikegate(["run", SCENARIO, "--no-live", "--out", str(run_dir)])
        out = _Output(second)
        line = out.wait_for("reaped ", timeout_s=60)
        assert f"left by an earlier run (harness pid {first.pid}, killed)" in line
        assert line.count("locust child (pid") == len(survivors), line
        assert _left_behind(token, seen, set(), timeout_s=5)[0] == []
        wait_for_event(run_dir, "load_start", timeout_s=60)
        second.send_signal(signal.SIGTERM)
        second.wait(60)
        out.rest(10)
        reaped = [e for e in rows(run_dir / "events.jsonl") if "reaped" in e]
        assert len(reaped) == 1 and len(reaped[0]["reaped"]) == len(survivors)
        assert reaped[0]["kind"] == "warning" and reaped[0]["message"] == line.strip()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc is not None and proc.stdout is not None:
                proc.stdout.close()
        _kill_everything(token, seen)


def _own_verdict(run_dir: Path) -> object:
    """meta.json's cleanup.clean (None when the harness could not write it: SIGKILL, or a
    signal before the run directory existed)."""
    try:
        meta = json.loads((run_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("status") == "running":
        return None
    cleanup = meta.get("cleanup") or {}
    return True if cleanup.get("clean") else cleanup or None


SMOKE_PLAN = [signal.SIGINT] * 7 + [signal.SIGTERM] * 7 + [signal.SIGKILL] * 6


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_20_runs_signalled_at_random_moments_leave_nothing_behind(tmp_path: Path) -> None:
    """`spikegate run smoke`, 20 times, each interrupted by SIGINT, SIGTERM or SIGKILL at a
    random moment 1-20 s after start (bring-up, load, or teardown): 5 s after the harness
    exited, no process of the run lives and no port it listened on is still held by one."""
    rng = random.Random(20)
    plan = list(SMOKE_PLAN)
    rng.shuffle(plan)
    results: list[dict[str, object]] = []
    for i, sig in enumerate(plan):
        delay = round(rng.uniform(1.0, 20.0), 1)
        proc = spikegate(["run", "smoke", "--no-live", "--out", str(tmp_path / f"run-{i:02d}")])
        token = owner_token(proc.pid)
        seen: dict[int, float] = {}
        ports: set[int] = set()
        try:
            until = time.monotonic() + delay
            while proc.poll() is None and time.monotonic() < until:  # all it ever started
                more, listening = _snapshot(proc.pid, token)
                seen.update(more)
                ports |= listening
                time.sleep(0.1)
            signalled = proc.poll() is None
            if signalled:
                proc.send_signal(sig)
            code, out = finish(proc, 90)
            left, foreign = _left_behind(token, seen, ports, timeout_s=5)
            cleanup = _own_verdict(tmp_path / f"run-{i:02d}")
            results.append(
                {"run": i, "signal": sig.name if signalled else "none (ended)", "at_s": delay,
                 "exit": code, "processes": len(seen), "ports": len(ports), "left": left,
                 "ports_reused_by_others": foreign, "reaped_at_start": "reaped " in out,
                 "harness_cleanup": cleanup}
            )  # fmt: skip
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            _kill_everything(token, seen)
    summary = json.dumps(results, indent=1)
    print(summary)
    (tmp_path / "summary.json").write_text(summary)
    assert [r for r in results if r["left"]] == [], summary
    unclean = [r for r in results if r["harness_cleanup"] not in (None, True)]
    assert unclean == [], summary  # what the harness said of itself, when it could
    assert not any(r["reaped_at_start"] for r in results), summary  # SIGKILL left nothing
