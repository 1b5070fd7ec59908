"""The reaper: what an earlier harness left running is found and killed at the next start.

    ManagedProcess.start ──record()──> <state dir>/<owner pid>-<pid>.json
    ManagedProcess.stop  ──forget()──> (file removed)
    spikegate run ──reap_orphans()──> records whose owner harness is gone:
        the child, same start time      -> SIGKILL to its process group
        any process with the owner's    -> SIGKILL (grandchildren, strays that left the
          SPIKEGATE_OWNER token                      group)
        pid now someone else's (start   -> never touched; the record is dropped
          time differs)

The lifelines (harness/lifeline.py) normally leave nothing to reap; this is the backstop for
when the guardian died with the harness, or the machine was too busy to run it. State dir:
$SPIKEGATE_STATE_DIR, else <runtime dir>/children (runtime dir: $SPIKEGATE_RUNTIME_DIR, else
$XDG_RUNTIME_DIR/spikegate, else ~/.cache/spikegate).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from spikegate.contract.env import STATE_DIR_ENV
from spikegate.harness.lifeline import marked_processes, owner_token, parse_token, process_start
from spikegate.harness.liverun import runtime_dir

__all__ = ["Reaped", "children_dir", "describe", "forget", "reap_orphans", "record", "records"]

REAP_TIMEOUT_S = 5.0


def children_dir() -> Path:
    """$SPIKEGATE_STATE_DIR, else <runtime dir>/children."""
    override = os.environ.get(STATE_DIR_ENV)
    return Path(override) if override else runtime_dir() / "children"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return f"{psutil.boot_time():.0f}"


def _path(pid: int, owner_pid: int | None = None) -> Path:
    return children_dir() / f"{owner_pid or os.getpid()}-{pid}.json"


def record(pid: int, *, name: str, title: str, log_dir: Path, cmd: str) -> None:
    """Note a child just started by this process (atomically; a failure costs only this)."""
    start = process_start(pid)
    try:
        create_time = psutil.Process(pid).create_time()
    except psutil.Error:
        create_time = None
    me = os.getpid()
    data = {
        "pid": pid,
        "pgid": pid,  # every child leads its own group (start_new_session)
        "start": start,
        "create_time": create_time,
        "boot_id": _boot_id(),
        "name": name,
        "title": title,
        "log_dir": str(Path(log_dir).resolve()),
        "cmd": cmd,
        "owner_pid": me,
        "owner_token": owner_token(),
        "owner_create_time": psutil.Process(me).create_time(),
    }
    path = _path(pid)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def forget(pid: int) -> None:
    """The child was stopped and reaped: nothing to find next time."""
    with contextlib.suppress(OSError):
        _path(pid).unlink()


def records() -> list[tuple[Path, dict[str, Any]]]:
    """Every record in the state directory (unreadable ones are dropped on the way)."""
    out: list[tuple[Path, dict[str, Any]]] = []
    try:
        paths = sorted(children_dir().glob("*.json"))
    except OSError:
        return out
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
                raise ValueError("not a record")
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        out.append((path, data))
    return out


@dataclass(frozen=True)
class Reaped:
    """One process killed because the harness that started it was gone."""

    pid: int
    title: str
    owner_pid: int
    log_dir: str


def _owner_alive(token: str) -> bool:
    parsed = parse_token(token)
    if parsed is None:
        return False
    pid, start = parsed
    return process_start(pid) == start


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


_Records = dict[str, list[tuple[Path, dict[str, Any]]]]


def _dead_owners() -> _Records:
    """Records grouped by owner token, for owners that no longer run."""
    boot = _boot_id()
    dead: _Records = {}
    for path, data in records():
        if data.get("boot_id") != boot:  # from before a reboot: nothing of it runs
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        token = str(data.get("owner_token") or "")
        if not _owner_alive(token):
            dead.setdefault(token, []).append((path, data))
    return dead


def _victims(dead: _Records) -> dict[int, tuple[psutil.Process, int | None, Reaped]]:
    """pid -> (process, group to kill or None, what it is): only what is provably theirs."""
    victims: dict[int, tuple[psutil.Process, int | None, Reaped]] = {}
    groups: dict[int, dict[str, Any]] = {}
    for entries in dead.values():
        for _, data in entries:
            pid = int(data["pid"])
            groups[int(data.get("pgid") or pid)] = data
            if data.get("start") is None or process_start(pid) != data.get("start"):
                continue  # exited, or the pid is someone else's now
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if proc.status() != psutil.STATUS_ZOMBIE:
                    victims[pid] = (proc, int(data.get("pgid") or pid), _reaped(pid, data))
    for proc, token in marked_processes(set(dead)):
        if proc.pid in victims:
            continue
        with contextlib.suppress(psutil.Error, OSError):
            group = groups.get(os.getpgid(proc.pid))
            if group is not None:
                info = _reaped(proc.pid, group, suffix=" child")
            else:
                owner = parse_token(token)
                info = Reaped(proc.pid, proc.name(), owner[0] if owner else 0, "")
            victims[proc.pid] = (proc, None, info)
    return victims


def _reaped(pid: int, data: dict[str, Any], *, suffix: str = "") -> Reaped:
    title = str(data.get("title") or data.get("name") or "process") + suffix
    return Reaped(pid, title, int(data.get("owner_pid") or 0), str(data.get("log_dir") or ""))


def reap_orphans(*, timeout_s: float = REAP_TIMEOUT_S) -> list[Reaped]:
    """Kill what harnesses that no longer run left behind; return what was killed.

    Only processes proven to be theirs die: a recorded child whose start time still
    matches (its whole group with it), or a process carrying a dead owner's token.
    """
    dead = _dead_owners()
    if not dead:
        return []
    victims = _victims(dead)
    for proc, pgid, _ in victims.values():
        with contextlib.suppress(OSError):
            if pgid is not None:
                os.killpg(pgid, signal.SIGKILL)
            else:
                os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while any(not _gone(p) for p, _, _ in victims.values()) and time.monotonic() < deadline:
        time.sleep(0.02)
    for entries in dead.values():
        for path, _ in entries:
            with contextlib.suppress(OSError):
                path.unlink()
    return sorted((info for _, _, info in victims.values()), key=lambda r: r.pid)


def describe(reaped: Iterable[Reaped]) -> str:
    """'reaped 5 processes left by an earlier run (harness pid 1234, killed): chaos server, ...'"""
    items = list(reaped)
    if not items:
        return ""
    owners = sorted({r.owner_pid for r in items})
    which = (
        f"an earlier run (harness pid {owners[0]}, killed)"
        if len(owners) == 1
        else f"earlier runs (harness pids {', '.join(map(str, owners))}, killed)"
    )
    names = ", ".join(f"{r.title} (pid {r.pid})" for r in items)
    noun = "process" if len(items) == 1 else "processes"
    return f"reaped {len(items)} {noun} left by {which}: {names}"
