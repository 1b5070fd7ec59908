"""Lifelines: every child of the harness dies with it, however the harness dies (SIGKILL too).

    harness ──fork──> child        prctl(PR_SET_PDEATHSIG, SIGKILL) before exec: the kernel
       │               │           kills the child when the thread that forked it exits, so
       │               │           children are forked only by threads that live as long as
       │               │           the process (the main thread, or the spawner thread)
       │               └─> grandchildren (Locust workers ...) inherit SPIKEGATE_OWNER=<token>
       │ pipe
       └──> guardian               `python -I -S -c GUARDIAN <token>`, own session, no imports:
                                   reads "+ <pgid> <start>" / "- <pgid>" lines; at EOF without
                                   a "bye" first (the harness died, however) SIGKILLs each group
                                   still listed and every process that carries the token

The guardian exists only while children do: `watch()` starts it with the first group and
`unwatch()` says "bye" and waits for it to exit when the last group is released. A process is
named by its token "<pid>.<start>" (start = boot-relative start time in clock ticks), which a
reused pid cannot match. What survives even this (the guardian killed with the harness) is
found by harness/reaper.py at the next start.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

import psutil

from spikegate.contract.env import OWNER_ENV

__all__ = [
    "OWNER_ENV",
    "child_env",
    "guardian_pids",
    "marked_processes",
    "owner_token",
    "process_start",
    "spawn",
    "unwatch",
    "watch",
]

_PR_SET_PDEATHSIG = 1
GUARDIAN_ARG = "spikegate-guardian"

# Runs in a bare interpreter (-I -S): standard library only, nothing from spikegate.
GUARDIAN = r"""# spikegate guardian: kills what its harness left when the pipe closes
import os, signal, sys, time
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
MARK = sys.argv[3].encode() + b"=" + sys.argv[2].encode()

def start(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None

groups = {}
for line in sys.stdin.buffer:
    parts = line.split()
    if len(parts) == 3 and parts[0] == b"+":
        groups[int(parts[1])] = parts[2].decode()
    elif len(parts) >= 2 and parts[0] == b"-":
        groups.pop(int(parts[1]), None)
    elif parts == [b"bye"]:  # the harness stopped everything itself
        sys.exit(0)
for pgid, st in groups.items():
    now = start(pgid)
    if now is None or now == st:  # leader gone (the group id cannot be reused) or ours
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass
me = os.getpid()
for _ in range(40):
    found = 0
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        break
    for pid in pids:
        if pid == me:
            continue
        try:
            with open("/proc/%d/environ" % pid, "rb") as f:
                marked = MARK in f.read().split(b"\0")
        except OSError:
            continue
        if marked:
            found += 1
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    if not found:
        break
    time.sleep(0.05)
"""


# --- naming processes ------------------------------------------------------------------


def process_start(pid: int) -> str | None:
    """The start time of `pid` as a stable string (None when there is no such process).

    Linux: field 22 of /proc/PID/stat (clock ticks since boot), exact and independent of
    wall-clock steps; elsewhere psutil's create_time to 1/100 s.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode()
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None
    except (OSError, IndexError):
        return None
    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except psutil.Error:
        return None


_TOKEN: tuple[int, str] | None = None


def owner_token(pid: int | None = None) -> str:
    """'<pid>.<start>' of `pid` (default: this process, cached per pid after a fork)."""
    global _TOKEN
    if pid is not None:
        return f"{pid}.{process_start(pid) or 0}"
    me = os.getpid()
    if _TOKEN is None or _TOKEN[0] != me:
        _TOKEN = (me, owner_token(me))
    return _TOKEN[1]


def parse_token(token: str) -> tuple[int, str] | None:
    pid, _, start = token.partition(".")
    return (int(pid), start) if pid.isdigit() and start else None


def child_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """`env` (default: ours) marked with this harness's token, inherited by grandchildren."""
    out = dict(os.environ if env is None else env)
    out[OWNER_ENV] = owner_token()
    return out


def marked_processes(tokens: set[str] | frozenset[str]) -> list[tuple[psutil.Process, str]]:
    """Live processes of this user whose SPIKEGATE_OWNER is one of `tokens`, with it."""
    found: list[tuple[psutil.Process, str]] = []
    if not tokens:
        return found
    uid = os.getuid() if hasattr(os, "getuid") else None
    me = os.getpid()
    for proc in psutil.process_iter(["uids"]):
        if proc.pid == me:
            continue
        with contextlib.suppress(psutil.Error, OSError):
            uids = proc.info.get("uids")
            if uid not in (None, 0) and uids is not None and uids.real != uid:
                continue
            mark = proc.environ().get(OWNER_ENV)
            if mark in tokens and proc.status() != psutil.STATUS_ZOMBIE:
                found.append((proc, mark))
    return found


# --- spawning with a parent-death signal -----------------------------------------------


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    return fn


_PRCTL = _load_prctl()  # resolved here: the child between fork and exec must not import


def _deathsig(parent: int) -> Callable[[], None] | None:
    prctl = _PRCTL
    if prctl is None:
        return None

    def preexec() -> None:  # in the child, between fork and exec: no imports, no locks
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)

    return preexec


class _Spawner:
    """A thread that lives as long as the process, for forks asked for by other threads
    (PR_SET_PDEATHSIG fires when the *forking thread* exits, not the process)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, fn: Callable[[], Any]) -> Any:
        if threading.current_thread() is threading.main_thread():
            return fn()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="spikegate-spawner", daemon=True
                )
                self._thread.start()
        fut: Future[Any] = Future()
        self._queue.put((fn, fut))
        return fut.result()

    def _loop(self) -> None:
        while True:
            fn, fut = self._queue.get()
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed to the caller's thread
                fut.set_exception(exc)


_SPAWNER = _Spawner()


def spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """subprocess.Popen(cmd, **kwargs), the child killed by the kernel if we die (Linux)."""

    def popen() -> subprocess.Popen[bytes]:
        preexec = _deathsig(os.getpid())
        if preexec is not None:
            kwargs["preexec_fn"] = preexec
        return subprocess.Popen(cmd, **kwargs)

    proc: subprocess.Popen[bytes] = _SPAWNER.run(popen)
    return proc


# --- the guardian ----------------------------------------------------------------------


class _Guardian:
    """The watchdog process and the groups it knows about (one per harness process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid_of_owner = 0
        self._groups: dict[int, str] = {}

    def pids(self) -> list[int]:
        with self._lock:
            return [self._proc.pid] if self._proc is not None else []

    def watch(self, pgid: int, start: str | None) -> None:
        with self._lock:
            self._groups[pgid] = start or "0"
            if not self._alive():
                self._start()
            else:
                self._send(f"+ {pgid} {start or '0'}\n")

    def unwatch(self, pgid: int) -> None:
        with self._lock:
            if self._groups.pop(pgid, None) is None:
                return
            if self._groups:
                self._send(f"- {pgid}\n")
            else:
                self._close()

    def _alive(self) -> bool:
        return (
            self._proc is not None
            and self._pid_of_owner == os.getpid()
            and self._proc.poll() is None
            and self._proc.stdin is not None
        )

    def _start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != OWNER_ENV}
        try:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    "-c",
                    GUARDIAN,
                    GUARDIAN_ARG,
                    owner_token(),
                    OWNER_ENV,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # outside any group a tree-kill sends to
                close_fds=True,
            )
        except OSError:
            self._proc = None  # the parent-death signal and the reaper remain
            return
        self._pid_of_owner = os.getpid()
        self._send("".join(f"+ {g} {s}\n" for g, s in self._groups.items()))

    def _send(self, lines: str) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        try:
            proc.stdin.write(lines.encode())
            proc.stdin.flush()
        except OSError:  # it died: the next watch() starts another
            with contextlib.suppress(OSError):
                proc.stdin.close()
            self._proc = None

    def _close(self) -> None:
        """Every group was released: the guardian leaves without killing anything (a child
        started meanwhile by another thread carries our token too)."""
        proc = self._proc
        if proc is None or self._pid_of_owner != os.getpid():
            self._proc = None
            return
        self._send("bye\n")
        self._proc = None
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_GUARDIAN = _Guardian()


def watch(pgid: int, start: str | None) -> None:
    """Have the guardian kill group `pgid` if this process dies before `unwatch(pgid)`."""
    _GUARDIAN.watch(pgid, start)


def unwatch(pgid: int) -> None:
    """The group was stopped; the guardian exits with the last one."""
    _GUARDIAN.unwatch(pgid)


def guardian_pids() -> list[int]:
    """The guardian's pid while it runs (a child of ours, but not one to stop)."""
    return _GUARDIAN.pids()
