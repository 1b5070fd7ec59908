"""The reaper against real processes: a planted orphan of a dead harness is killed, group and
grandchildren with it; a reused pid, a live owner and a record from another boot never are."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from spikegate.harness.lifeline import OWNER_ENV, owner_token, process_start
from spikegate.harness.reaper import children_dir, describe, reap_orphans, records

pytestmark = [pytest.mark.integration]

ORPHAN = """
import os, sys, time
pid = os.fork()
if pid == 0:
    time.sleep(120)
open(sys.argv[1], "w").write(str(pid))
time.sleep(120)
"""


@pytest.fixture(autouse=True)
def _runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIKEGATE_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
def dead_owner() -> tuple[int, str]:
    """(pid, token) of a process that ran and is gone: a harness that was killed."""
    with subprocess.Popen([sys.executable, "-c", "pass"]) as proc:
        token = owner_token(proc.pid)
    return proc.pid, token


@pytest.fixture
def spawned(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test started; killed and reaped afterwards whatever happened."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _orphan(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]], token: str | None
) -> tuple[subprocess.Popen[bytes], int]:
    """A group leader with a forked grandchild, marked with `token`: (leader, grandchild)."""
    marker = tmp_path / f"grandchild-{len(spawned)}"
    env = {k: v for k, v in os.environ.items() if k != OWNER_ENV}
    if token is not None:
        env[OWNER_ENV] = token
    proc = subprocess.Popen(
        [sys.executable, "-c", ORPHAN, str(marker)], env=env, start_new_session=True
    )
    spawned.append(proc)
    deadline = time.monotonic() + 15
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline, "the orphan did not start"
        time.sleep(0.02)
    return proc, int(marker.read_text())


def _plant(pid: int, owner: tuple[int, str], **overrides: Any) -> Path:
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    data = {
        "pid": pid,
        "pgid": pid,
        "start": process_start(pid),
        "create_time": psutil.Process(pid).create_time(),
        "boot_id": boot,
        "name": "chaos",
        "title": "chaos server",
        "log_dir": "/tmp/some-run/logs",
        "cmd": sys.executable,
        "owner_pid": owner[0],
        "owner_token": owner[1],
        "owner_create_time": 0.0,
        **overrides,
    }
    path = children_dir() / f"{owner[0]}-{pid}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.mark.timeout(30)
def test_a_planted_orphan_of_a_dead_harness_is_reaped_with_its_grandchild_and_named(
    tmp_path: Path, dead_owner: tuple[int, str], spawned: list[subprocess.Popen[bytes]]
) -> None:
    leader, grandchild = _orphan(tmp_path, spawned, dead_owner[1])
    record = _plant(leader.pid, dead_owner)
    reaped = reap_orphans()
    assert sorted(r.pid for r in reaped) == sorted([leader.pid, grandchild])
    assert not _running(leader.pid) and not _running(grandchild)
    assert leader.wait(5) == -signal.SIGKILL
    assert not record.exists()
    text = describe(reaped)
    assert text.startswith(
        f"reaped 2 processes left by an earlier run (harness pid {dead_owner[0]}, killed): "
    )
    assert f"chaos server (pid {leader.pid})" in text
    assert f"chaos server child (pid {grandchild})" in text
    assert reap_orphans() == []


@pytest.mark.timeout(30)
def test_a_marked_grandchild_whose_leader_is_gone_is_still_reaped(
    tmp_path: Path, dead_owner: tuple[int, str], spawned: list[subprocess.Popen[bytes]]
) -> None:
    leader, grandchild = _orphan(tmp_path, spawned, dead_owner[1])
    _plant(leader.pid, dead_owner)
    leader.kill()  # the parent-death signal got the child, nothing got the grandchild
    leader.wait()
    assert [r.pid for r in reap_orphans()] == [grandchild]
    assert not _running(grandchild)


@pytest.mark.timeout(30)
def test_a_reused_pid_is_never_killed(
    tmp_path: Path, dead_owner: tuple[int, str], spawned: list[subprocess.Popen[bytes]]
) -> None:
    """The record names a pid that now belongs to another process (start time differs)."""
    stranger, its_child = _orphan(tmp_path, spawned, None)
    start = process_start(stranger.pid)
    assert start is not None
    record = _plant(stranger.pid, dead_owner, start=str(int(start) - 100))
    assert reap_orphans() == []
    assert _running(stranger.pid) and _running(its_child)
    assert not record.exists()  # the record is stale: dropped


@pytest.mark.timeout(30)
def test_children_of_a_running_harness_are_left_alone(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    me = (os.getpid(), owner_token())
    leader, grandchild = _orphan(tmp_path, spawned, me[1])
    record = _plant(leader.pid, me)
    assert reap_orphans() == []
    assert _running(leader.pid) and _running(grandchild)
    assert record.exists()


@pytest.mark.timeout(30)
def test_records_from_before_a_reboot_are_dropped_without_killing(
    tmp_path: Path, dead_owner: tuple[int, str], spawned: list[subprocess.Popen[bytes]]
) -> None:
    leader, _ = _orphan(tmp_path, spawned, None)
    record = _plant(leader.pid, dead_owner, boot_id="another-boot")
    assert reap_orphans() == []
    assert _running(leader.pid) and not record.exists()
    assert records() == []
