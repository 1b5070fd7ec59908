"""The orchestrator: one scenario, run end to end into a run directory (DESIGN.md steps 1-6).

    reap what killed harnesses left running (said on the console and in a warning event)
    run dir + scenario.toml + meta.json
      -> Stack.up()            redis, chaos server + proxies, kafka, DSP bidders, target
      -> t0: Locust (subprocess) | FaultSchedule (thread) | Sampler (thread) | phases, view
             ControlServer (thread; control.json + live pointer): faults by hand
      -> watch: Locust ends / a component dies / SIGINT / SIGTERM
      -> load_stop, faults off, drain, impressions read back (complete runs only)
      -> reset chaos, stop in reverse order, verify: no child (nor anything carrying this
         harness's token), no toxic, no listening port (one an unrelated process took since
         is listed as reused, not as ours)
      -> run_end, meta.json status: complete | interrupted | failed

Whenever there is a chaos server, the run has a FaultSchedule (even without scenario faults)
and a control server over it, so `spikegate fault add|rm|ls|clear` and the control page can
inject faults by hand; teardown unpublishes and closes it before anything else stops.

SIGINT and SIGTERM are caught for the whole run: during bring-up the first one unwinds the
start (every started child is stopped); during load it ends the run at the next tick; a
second one means hurry (short stop bounds, no drain), never skipped cleanup. A component that
dies mid-run ends the run with a component_crash event and EnvironmentProblem (exit 4).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import psutil
from rich.console import Console

from spikegate.chaos.client import ChaosClient
from spikegate.chaos.errors import ChaosError
from spikegate.chaos.schedule import FaultSchedule, ScheduleClient
from spikegate.contract.rundir import (
    EVENTS_FILE,
    IMPRESSIONS_FILE,
    LOAD_CONTROL_FILE,
    LOGS_DIR,
    META_FILE,
    REQUESTS_FILE,
    SAMPLES_FILE,
    SCENARIO_FILE,
    TARGET_CONFIG_FILE,
    WORKER_CRASH_PREFIX,
    JsonlWriter,
    read_jsonl,
)
from spikegate.harness import __version__
from spikegate.harness.accounting import account_impressions, read_acked, unavailable, wait_drained
from spikegate.harness.broker_evidence import BrokerRecords
from spikegate.harness.control import ControlApi, ControlServer
from spikegate.harness.errors import EnvironmentProblem, UsageError
from spikegate.harness.lifeline import OWNER_ENV, owner_token
from spikegate.harness.live import (
    LiveStatus,
    LiveView,
    PlainProgress,
    Progress,
    RequestsTail,
    target_rate,
)
from spikegate.harness.livefeed import LiveFeed
from spikegate.harness.liverun import LiveRun, unpublish
from spikegate.harness.loadgen import LocustProcess, probe_locustfile
from spikegate.harness.proxy_evidence import ProxyCounters
from spikegate.harness.reaper import Reaped, describe, reap_orphans
from spikegate.harness.sampler import Evidence, Sampler
from spikegate.harness.scenario import Scenario, fill_placeholders, placeholders
from spikegate.harness.services import (
    CommandTarget,
    ManagedProcess,
    ServiceError,
    TargetServer,
    wait_reachable,
)
from spikegate.harness.stack import (
    Dependency,
    Stack,
    StackSettings,
    leftover_children,
    port_listening,
)
from spikegate.harness.target_facts import resolve_target_config
from spikegate.harness.workers import await_workers, master_address, missing_workers, write_t0

__all__ = ["RunResult", "new_run_dir", "run_scenario"]

TICK_S = 0.2
LOCUST_BOOT_S = 3.0  # t0 = Locust's spawn + this (+0.5 s per extra process)
WORKERS_LEAD_S = 1.5  # master/worker: t0 = every worker joined + this
LOCUST_GRACE_S = 30.0  # past duration_s, Locust is stopped (its shape should have ended it)
QUIESCE_S = 4.0  # + client_timeout_s: a session's last requests end and their seconds flush
DRAIN_TIMEOUT_S = 10.0
READ_BACK_TIMEOUT_S = 20.0
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class RunResult:
    """What a run left behind; `exit_code` is 0 complete, 130/143 interrupted."""

    run_dir: Path
    status: str
    exit_code: int
    startup_s: float = 0.0
    signal: str | None = None
    totals: dict[str, int] = field(default_factory=dict)
    requests_rows: int = 0
    sample_rows: int = 0
    impressions: dict[str, Any] = field(default_factory=dict)
    cleanup: dict[str, Any] = field(default_factory=dict)


class _Interrupted(BaseException):
    """Raised by the signal handler while the stack is starting (unwinds the bring-up)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _Signals:
    """SIGINT/SIGTERM for the duration of a run: remember, and raise only while starting."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.count = 0
        self.raise_now = False
        self._deferred = 0
        self._saved: dict[int, Any] = {}

    @property
    def hurry(self) -> bool:
        return self.count >= 2

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.count += 1
        if self.signum is None:
            self.signum = signum
        if self.raise_now and self.count == 1 and not self._deferred:
            self.raise_now = False
            raise _Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A critical section: a signal arriving inside it is raised once it is left."""
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1
        if self.raise_now and self.signum is not None and not self._deferred:
            self.raise_now = False
            raise _Interrupted(self.signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[_Signals]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # only the main thread can catch signals; the caller's own problem
            return
        for sig in _SIGNALS:
            self._saved[int(sig)] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for signum, old in self._saved.items():
                signal.signal(signum, old)


class _EventLog:
    """events.jsonl, shared by threads; rows before t0 wait and get negative `t`."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._writer = JsonlWriter(path)
        self._lock = threading.Lock()
        self._t0: float | None = None
        self._early: list[tuple[float, dict[str, Any]]] = []
        # each row once written (the live page's feed); a failing listener costs only itself
        self.listener: Callable[[dict[str, Any]], None] | None = None

    def _put(self, row: dict[str, Any]) -> None:
        self._writer.write(row)
        if self.listener is not None:
            with contextlib.suppress(Exception):  # the feed never raises on a row
                self.listener(row)

    def set_t0(self, t0_mono: float) -> None:
        with self._lock:
            self._t0 = t0_mono
            for mono, row in self._early:
                self._put({"t": round(mono - t0_mono, 6), **row})
            self._early.clear()

    @property
    def started(self) -> bool:
        return self._t0 is not None

    def now_t(self) -> float:
        return 0.0 if self._t0 is None else self._clock() - self._t0

    def emit(self, kind: str, *, t: float | None = None, **details: Any) -> None:
        with self._lock:
            if self._t0 is None:
                self._early.append((self._clock(), {"kind": kind, **details}))
                return
            when = self._clock() - self._t0 if t is None else t
            self._put({"t": round(when, 6), "kind": kind, **details})

    def write(self, row: dict[str, Any]) -> None:
        """A row that carries its own `t` (the fault schedule's)."""
        with self._lock:
            self._put(row)

    def close(self) -> None:
        with self._lock:
            if self._t0 is None:
                self._t0 = self._clock()
                for mono, row in self._early:
                    self._writer.write({"t": round(mono - self._t0, 6), **row})
            self._writer.close()


def new_run_dir(name: str, out_dir: Path | None, root: Path = Path("runs")) -> Path:
    """`out_dir`, or runs/<UTC timestamp>-<name>/ (a suffix if that exists); created empty."""
    if out_dir is not None:
        if (out_dir / META_FILE).exists():
            raise UsageError(
                f"--out {out_dir} already holds a run (meta.json)",
                hint="choose a new directory or remove the old run",
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        return out_dir
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for i in range(1, 1000):
        path = root / (f"{stamp}-{name}" if i == 1 else f"{stamp}-{name}-{i}")
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            continue
        return path
    raise EnvironmentProblem(f"cannot create a run directory under {root}")


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        data = path.read_bytes()[-32_768:].decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _totals(run_dir: Path) -> tuple[int, dict[str, int]]:
    path = run_dir / REQUESTS_FILE
    totals: dict[str, int] = {"intended": 0, "sent": 0}
    rows = 0
    if not path.exists():
        return 0, totals
    with contextlib.suppress(ValueError, OSError):
        for _, row in read_jsonl(path):
            rows += 1
            totals["intended"] += int(row.get("intended") or 0)
            totals["sent"] += int(row.get("sent") or 0)
            for outcome, n in (row.get("outcomes") or {}).items():
                totals[outcome] = totals.get(outcome, 0) + int(n)
    return rows, totals


class _Run:
    """The state of one run; `execute()` is the whole lifecycle."""

    def __init__(
        self,
        scenario: Scenario,
        run_dir: Path,
        console: Console,
        live: bool,
        argv: Sequence[str],
        reaped: Sequence[Reaped] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        session: bool = False,
        idle: bool = False,
    ) -> None:
        self.scenario = scenario
        # a session (`spikegate up`) is ended by its first Ctrl-C / SIGTERM like a run that
        # completed: drained, accounted and judged; a second signal still means hurry
        self.session = session
        self.idle = idle  # the load starts at rate 0 (`spikegate up --idle`)
        self.clock = clock  # monotonic seconds: t0, phases, the watch loop's bounds
        self.sleep = sleep
        self._resources = contextlib.ExitStack()  # what was started, closed newest first
        self.run_dir = run_dir
        self.console = console
        self.live = live
        self.signals = _Signals()
        self.events = _EventLog(run_dir / EVENTS_FILE, clock)
        self.feed = LiveFeed()  # the live page's stream: the rows, samples and events below
        self.events.listener = self.feed.publish_event
        self.samples = JsonlWriter(run_dir / SAMPLES_FILE)
        self.stack: Stack | None = None
        self.chaos: ChaosClient | None = None
        self.locust: LocustProcess | None = None
        self._workers_lost: set[str] = set()  # master/worker: missing workers already named
        self.sampler: Sampler | None = None
        self._sources: list[Evidence] = []  # the harness's own evidence, read beside each scrape
        self.schedule: FaultSchedule | None = None
        self.control: ControlServer | None = None
        self.control_port: int | None = None
        self.published: list[Path] = []
        self.target_url = ""
        self.t0_epoch: float | None = None
        self.t0_mono = 0.0
        self.status = "failed"
        self.failure: EnvironmentProblem | None = None
        self.impressions: dict[str, Any] = {}
        self.cleanup: dict[str, Any] = {}
        self.meta: dict[str, Any] = {
            "scenario": scenario.name,
            "seed": scenario.seed,
            "t0_epoch": None,
            "started_utc": _utc_now(),
            "ended_utc": None,
            "spikegate_version": __version__,
            "argv": list(argv),
            "status": "running",
            "components": {},
        }
        if session:
            self.meta["mode"] = "session"
        if reaped:  # a warning (the contract's kinds): the machine was not clean at start
            self.events.emit(
                "warning",
                message=describe(reaped),
                reaped=[
                    {"pid": r.pid, "what": r.title, "owner_pid": r.owner_pid, "log_dir": r.log_dir}
                    for r in reaped
                ],
            )

    # -- lifecycle ---------------------------------------------------------------------------

    def execute(self) -> RunResult:
        """The whole run: each resource (stack, sampler, drain, fault schedule, Locust,
        control) registers its closing step the moment it exists, so one ExitStack closes
        exactly what was started, newest first, whatever ended the run; then the run is
        verified clean and its end recorded."""
        (self.run_dir / LOGS_DIR).mkdir(parents=True, exist_ok=True)
        (self.run_dir / SCENARIO_FILE).write_text(self.scenario.to_toml(), encoding="utf-8")
        _write_json(self.run_dir / META_FILE, self.meta)
        with self.signals.installed():
            with self._resources:
                try:
                    self.signals.raise_now = True
                    try:
                        self._bring_up()
                    finally:
                        self.signals.raise_now = False
                    self._load()
                except _Interrupted:
                    self.status = "interrupted"
                except ServiceError as exc:
                    self.events.emit(
                        "component_crash", name=exc.name, returncode=None, log_tail=exc.log_tail
                    )
                    self.failure = exc
                except EnvironmentProblem as exc:
                    self.failure = exc
            self._step("verify", self._verify)
            self._finish()
        return self._result()

    def _closing(self, name: str, step: Callable[[], None]) -> None:
        """Register `step` to run when the run's resources close (newest first)."""
        self._resources.callback(self._step, name, step)

    def _step(self, name: str, step: Callable[[], None]) -> None:
        """One closing step: its failure is a warning, never a reason to skip the others."""
        try:
            step()
        except _Interrupted:  # pragma: no cover - raise_now is off while closing
            pass
        except Exception as exc:
            self.events.emit("warning", message=f"teardown step {name} failed: {exc!r}")

    def _bring_up(self) -> None:
        sc = self.scenario
        self._closing("stack", self._stop_stack)  # whatever of the stack gets started
        settings = StackSettings(
            dsp_count=sc.stack.dsp_count,
            seed=sc.seed,
            redis_url=sc.stack.redis_url,
            kafka_bootstrap=sc.stack.kafka_bootstrap,
            toxiproxy_url=sc.stack.toxiproxy_url,
            start_timeout_s=sc.stack.start_timeout_s,
        )
        if sc.target.kind != "reference":
            self._bring_up_service(settings)
            return
        self.stack = Stack(self.run_dir, settings, guard=self.signals.deferred)
        spool = str((self.run_dir / "spool").resolve())

        def config(redis: str, kafka: str, dsps: dict[str, str]) -> dict[str, Any]:
            return sc.target_config(
                redis_url=redis, kafka_bootstrap=kafka, dsp_urls=dsps, spool_dir=spool
            )

        try:
            self.stack.up(config)
        finally:
            self._record_stack()
        assert isinstance(self.stack.target, TargetServer)
        self.target_url = self.stack.target.url
        self.chaos = self.stack.chaos
        # The limits this run really had, for the checker to judge against as data.
        resolved = resolve_target_config(sc, self.stack.target_config)
        if resolved is not None:
            _write_json(self.run_dir / TARGET_CONFIG_FILE, resolved)

    def _bring_up_service(self, settings: StackSettings) -> None:
        """Your own service: its dependencies behind proxies on the chaos server, then the
        service itself (kind = "command"), or a check that something answers at its URL."""
        sc = self.scenario
        deps = [
            Dependency(d.name, upstream=d.upstream, start=d.start, listen=d.listen)
            for d in sc.dependencies
        ]
        if sc.target.kind == "external":
            self.target_url = (sc.target.url or "").rstrip("/")
            _check_url_answers(self.target_url, sc.stack.start_timeout_s)
            if not deps:
                if sc.stack.toxiproxy_url:
                    self.chaos = ChaosClient(sc.stack.toxiproxy_url)
                return
        self.stack = Stack(self.run_dir, settings, guard=self.signals.deferred)
        target = sc.target

        def make(listen: Mapping[str, str]) -> ManagedProcess | None:
            if target.kind != "command":
                return None
            values = {f"proxy.{name}": address for name, address in listen.items()}
            values["python"] = sys.executable

            def argv(port: int) -> list[str]:
                filled = {**values, "port": str(port)}
                return [fill_placeholders(a, filled) for a in target.command or []]

            def env(port: int) -> dict[str, str]:
                filled = {**values, "port": str(port)}
                return {k: fill_placeholders(v, filled) for k, v in target.env.items()}

            return CommandTarget(
                self.run_dir / LOGS_DIR, argv=argv, env=env, cwd=target.cwd, ready=target.ready
            )

        try:
            self.stack.up_service(deps, make)
        finally:
            self._record_stack()
        if isinstance(self.stack.target, CommandTarget):
            self.target_url = self.stack.target.url
        self.chaos = self.stack.chaos

    def _record_stack(self) -> None:
        assert self.stack is not None
        self.meta["components"] = self.stack.components()
        self.meta["startup_s"] = round(self.stack.startup_s, 3)
        self.meta["startup_timings_s"] = dict(self.stack.timings)

    def _load(self) -> None:
        sc = self.scenario
        if sc.load.workers:
            self._start_master()
        # t0 lies a little in the future: Locust needs a moment to import and start its
        # processes, and its schedule (like the faults and the sampler) starts at t0 sharp.
        boot_s = LOCUST_BOOT_S + 0.5 * (sc.load.processes - 1)
        if sc.load.workers:  # the master and its workers are up: they wait for t0.json
            boot_s = WORKERS_LEAD_S
        self.t0_epoch = time.time() + boot_s
        self.t0_mono = self.clock() + boot_s
        self.events.set_t0(self.t0_mono)
        self.meta["t0_epoch"] = self.t0_epoch
        _write_json(self.run_dir / META_FILE, self.meta)
        self.sampler = Sampler(
            self._metrics_url(),
            on_row=self.samples.write,
            on_warning=lambda m: self.events.emit("warning", message=m),
            evidence=self._evidence(),
            mapping=self.scenario.metrics.mapped(),
        )
        self._closing("sampler", self._stop_sampler)
        self.sampler.start(self.t0_mono)
        # closed before the sampler: the drain's seconds are still sampled
        self._closing("drain", self._drain_and_account)
        # a run without proxies (your service, no [[dependencies]]) still gets a schedule
        # (over no proxy: the control API refuses every fault, naming why), so that its
        # control server serves the live page and the load by hand like any other run's
        client: ScheduleClient = self.chaos if self.chaos is not None else _NoProxies()
        self.schedule = FaultSchedule(client, sc.fault_specs(), on_event=self.events.write)
        self.schedule.begin(self.t0_mono)
        self._closing("faults", self._stop_faults)
        self.schedule.__enter__()
        if self.idle:
            self._set_rate(0.0, source="idle")
        if sc.load.workers:
            self._closing("locust", self._stop_locust)  # stopped here, as in a local run
            write_t0(self.run_dir, self.t0_epoch)
        else:
            self.locust = LocustProcess(
                self.run_dir / LOGS_DIR,
                host=self.target_url,
                shape=sc.load.shape,
                processes=sc.load.processes,
                env=sc.load_env(),
                run_dir=self.run_dir.resolve(),
                t0_epoch=self.t0_epoch,
                locustfile=sc.load.locustfile,
            )
            self._closing("locust", self._stop_locust)
            self.locust.start()
            self.meta["components"]["locust"] = {"pid": self.locust.pid, "log": "logs/locust.log"}
        if self.schedule is not None:
            self._closing("control", self._stop_control)
            self._start_control(self.schedule)
        self._watch()

    def _start_master(self) -> None:
        """Master/worker (load.workers): Locust's master on load.master_bind, then a bounded
        wait for every worker (exit 4 naming the command that starts one)."""
        sc = self.scenario
        address = master_address(sc.load.master_bind)
        self.locust = LocustProcess(
            self.run_dir / LOGS_DIR,
            host=self.target_url,
            shape=sc.load.shape,
            processes=1,
            env=sc.load_env(),
            run_dir=self.run_dir.resolve(),
            t0_epoch=None,
            locustfile=sc.load.locustfile,
            workers=sc.load.workers,
            master_bind=address,
        )
        self._closing("locust", self._stop_locust)
        self.locust.start()
        where = f"{address[0]}:{address[1]}"
        self.meta["components"]["locust"] = {
            "pid": self.locust.pid, "log": "logs/locust.log", "master": where,
            "workers": sc.load.workers,
        }  # fmt: skip
        _write_json(self.run_dir / META_FILE, self.meta)
        n = sc.load.workers
        self.console.print(
            f"waiting for {n} worker{'s' if n != 1 else ''} (up to {sc.load.workers_wait_s:g} s):"
            f" start each with `spikegate worker --master {where}`",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        locust = self.locust

        def check() -> None:
            if self.signals.signum is not None:
                raise _Interrupted(self.signals.signum)
            if not locust.alive:
                self._crashed(locust)
                assert self.failure is not None
                raise self.failure

        await_workers(
            self.run_dir,
            n,
            address=address,
            timeout_s=sc.load.workers_wait_s,
            clock=self.clock,
            sleep=self.sleep,
            check=check,
        )

    def _check_workers(self) -> None:
        """A worker the master declared missing is a component_crash: the run is inconclusive."""
        for w in missing_workers(self.run_dir):
            if w.id in self._workers_lost:
                continue
            self._workers_lost.add(w.id)
            self.events.emit(
                "component_crash", name=f"{WORKER_CRASH_PREFIX}{w.id}", returncode=None,
                log_tail=w.describe(),
            )  # fmt: skip
            self.console.print(
                f"warning: {w.describe()}: the run is inconclusive",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )

    def _metrics_url(self) -> str | None:
        """The target's Prometheus endpoint: ours, or your service's `target.metrics`."""
        if self.scenario.target.kind == "reference":
            return f"{self.target_url}/metrics"
        path = self.scenario.target.metrics
        return None if path is None else f"{self.target_url}{path}"

    def _evidence(self) -> list[Evidence]:
        """The harness's own sources, read beside every scrape: the chaos proxy's requests
        outstanding, bytes and connections per dependency, and (reference target) the
        broker's records read at its own listener."""
        sources = self._sources
        if self.chaos is not None:
            sources.append(ProxyCounters(self.chaos.url))
        kafka = self.stack.kafka if self.stack is not None else None
        if kafka is not None and kafka.bootstrap and self.scenario.target.kind == "reference":
            sources.append(BrokerRecords(kafka.bootstrap, self._topic()))
        return sources

    def _start_control(self, schedule: FaultSchedule) -> None:
        """Serve the control API and publish where it is; a failure costs only the control."""
        info = {"scenario": self.scenario.name, "run_dir": str(self.run_dir.resolve())}
        sc = self.scenario
        self.feed.set_hello(
            run=info,
            base_rps=sc.load.base_rps,
            duration_s=None if self.session else sc.load.duration_s,
            session=self.session,
            limits={"inflight": sc.checks.inflight_max, "queue": sc.checks.queue_max},
        )
        api = ControlApi(
            schedule, self._proxy_names, info=info, on_event=self.events.write, feed=self.feed
        )
        try:
            self.control = ControlServer(api).start()
        except OSError as exc:
            self.events.emit("warning", message=f"no control server (faults by hand): {exc}")
            return
        url = self.control.url
        self.control_port = self.control.port
        self.meta["components"]["control"] = {"url": url}
        _write_json(self.run_dir / META_FILE, self.meta)
        live = LiveRun.here(url, self.run_dir, self.scenario.name, self.meta["started_utc"])
        self.published = live.paths()
        try:
            live.publish()
        except OSError as exc:
            self.events.emit("warning", message=f"cannot publish the live run: {exc}")
            self.console.print(
                f"warning: `spikegate fault` cannot find this run ({exc}); use the control page",
                highlight=False,
                markup=False,
            )
        self.console.print(
            f"control page: {url}/  (faults by hand: spikegate fault add|rm|ls|clear)",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    def _proxy_names(self) -> list[str]:
        if self.stack is not None:
            return sorted(self.stack.proxies)
        return sorted(self.chaos.proxies()) if self.chaos is not None else []

    def _watch(self) -> None:
        """Tick until Locust ends, a component dies, a signal arrives or the bound passes."""
        assert self.locust is not None and self.sampler is not None
        sc = self.scenario
        phases = list(sc.phase_list())
        current = "warmup"
        tail = RequestsTail(self.run_dir / REQUESTS_FILE)
        prev_sample: dict[str, Any] | None = None
        last_sample: dict[str, Any] | None = None
        view = self._progress()
        started = False
        with view:
            while True:
                elapsed = self.clock() - self.t0_mono
                if not started and elapsed >= 0:
                    started = True
                    self._emit_start()
                while phases and phases[0].start_s <= elapsed:
                    p = phases.pop(0)
                    current = p.name
                    self.events.emit(
                        "phase", t=p.start_s, name=p.name, start_t=p.start_s, end_t=p.end_s
                    )
                if self.signals.signum is not None:
                    if self._session_end:
                        self.status = "complete"
                        self.meta["duration_s"] = round(max(0.0, elapsed), 3)
                        self._load_stop("session_end")
                        self._quiesce()
                        return
                    self.status = "interrupted"
                    self._load_stop("interrupted")
                    return
                if sc.load.workers or sc.load.processes > 1:
                    self._check_workers()
                dead = self.stack.dead_child() if self.stack is not None else None
                if dead is not None:
                    self._crashed(dead)
                    return
                if not self.locust.alive:
                    self._locust_ended(elapsed)
                    return
                if elapsed > sc.load.duration_s + LOCUST_GRACE_S:
                    self.events.emit(
                        "warning", message=f"Locust still ran {LOCUST_GRACE_S:g} s past the end"
                    )
                    self.status = "complete"
                    self._load_stop("timeout")
                    return
                for row in tail.poll():
                    self.feed.publish_row(row)
                if self.sampler.latest is not last_sample:
                    prev_sample, last_sample = last_sample, self.sampler.latest
                    if last_sample is not None:
                        self.feed.publish_sample(last_sample, prev_sample)
                active = self.schedule.active() if self.schedule is not None else []
                faults = [f"{a.id} {a.fault}@{a.proxy}" for a in active]
                view.update(
                    LiveStatus(
                        elapsed_s=elapsed,
                        duration_s=sc.load.duration_s,
                        phase=current if started else "starting",
                        request_row=tail.last,
                        sample=last_sample,
                        target_rps=target_rate(prev_sample, last_sample),
                        faults=faults,
                    )
                )
                self.sleep(TICK_S)

    def _set_rate(self, rate: float, *, source: str) -> None:
        """Hold `rate` arrivals/s from now (the live-rate document every generating process
        reads), recorded as a load_set event."""
        load = self.control.api.load if self.control is not None else None
        if load is not None:  # one writer of the document while the control server serves
            try:
                load.set_rate(rate, action="stop" if rate == 0 else "set", source=source)
                return
            except Exception as exc:  # closed model, a closed control: write it here
                self.events.emit("warning", message=f"load control: {exc}")
        from spikegate.locustfiles.live_rate import LoadDoc, read_doc, write_doc

        path = self.run_dir / LOAD_CONTROL_FILE
        try:
            doc = read_doc(path) or LoadDoc()
        except ValueError:
            doc = LoadDoc()
        write_doc(path, LoadDoc(version=doc.version + 1, rate=rate, spike=None))
        self.events.emit(
            "load_set", action="stop" if rate == 0 else "set", rate=rate, previous=doc.rate,
            rps_after=rate, source=source,
        )  # fmt: skip

    def _quiesce(self) -> None:
        """A session ends like a run whose schedule ended: the rate drops to 0 and the
        generator gets the time its last requests may take (lateness cap, client timeout,
        a flush) to record every second before it is stopped. A second signal, or Locust
        ending, cuts the wait short."""
        self._set_rate(0.0, source="session_end")
        bound = self.clock() + QUIESCE_S + self.scenario.load.client_timeout_s
        while self.clock() < bound and self.signals.count < 2:
            if self.locust is None or not self.locust.alive:
                return
            self.sleep(TICK_S)

    @property
    def _session_end(self) -> bool:
        """A session ended by hand: one signal, no failure."""
        return self.session and self.signals.count == 1 and self.failure is None

    @property
    def _interrupted(self) -> bool:
        return self.signals.signum is not None and not (
            self._session_end and self.status == "complete"
        )

    def _progress(self) -> Progress:
        title = f"spikegate run {self.scenario.name} -> {self.run_dir}"
        if self.live and self.console.is_terminal:
            return LiveView(self.console, title)
        return PlainProgress(self.console)

    def _emit_start(self) -> None:
        sc = self.scenario
        self.events.emit(
            "run_start",
            t=0.0,
            scenario=sc.name,
            seed=sc.seed,
            target=self.target_url,
            startup_s=self.meta.get("startup_s"),
        )
        self.events.emit("load_start", t=0.0, shape=sc.load.shape, duration_s=sc.load.duration_s)

    def _load_stop(self, reason: str) -> None:
        self.events.emit("load_stop", reason=reason)

    def _locust_ended(self, elapsed: float) -> None:
        assert self.locust is not None
        if self.scenario.load.workers or self.scenario.load.processes > 1:
            self._check_workers()
        code = self.locust.returncode
        if code not in (0, None):
            self._crashed(self.locust)
            return
        if elapsed < self.scenario.load.duration_s - 2.0:
            self.events.emit(
                "warning",
                message=f"Locust ended at {elapsed:.1f} s, before load.duration_s",
            )
        self.status = "complete"
        self._load_stop("done")

    def _crashed(self, proc: ManagedProcess) -> None:
        tail = _log_tail(proc.log_path)
        self.events.emit(
            "component_crash", name=proc.name, returncode=proc.returncode, log_tail=tail
        )
        self._load_stop("component_crash")
        self.failure = EnvironmentProblem(
            f"{proc.name} (pid {proc.pid}) exited with code {proc.returncode} during the run"
            f"\n--- last lines of {proc.log_path} ---\n{tail}",
            hint=f"the partial run directory is {self.run_dir}",
        )

    # -- the end -----------------------------------------------------------------------------

    def _finish(self) -> None:
        """The run's end: its status, the last events, meta.json."""
        sig = self.signals
        if self._interrupted and sig.signum is not None:
            self.status = "interrupted"
            self.events.emit("interrupted", signal=signal.Signals(sig.signum).name)
        elif self.failure is not None:
            self.status = "failed"
        self.events.emit("run_end", status=self.status, clean=self.cleanup.get("clean"))
        self.events.close()
        self.samples.close()
        self.meta["status"] = self.status
        self.meta["ended_utc"] = _utc_now()
        self.meta["cleanup"] = self.cleanup
        if self.t0_epoch is None:
            self.meta["t0_epoch"] = None
        _write_json(self.run_dir / META_FILE, self.meta)

    def _stop_control(self) -> None:
        """Unpublish first, so no client finds a run that is stopping; then close."""
        paths, self.published = self.published, []
        unpublish(paths)
        # open pages learn the run ended (and how) before the server goes
        self.feed.close(self.status, round(self.events.now_t(), 3))
        if self.control is not None:
            self.control.close()

    def _stop_locust(self) -> None:
        if self.locust is not None:
            self.locust.stop(1.0 if self.signals.hurry else None)

    def _stop_faults(self) -> None:
        if self.schedule is not None:
            self.schedule.__exit__(None, None, None)

    def _drain_and_account(self) -> None:
        sig = self.signals
        path = self.run_dir / IMPRESSIONS_FILE
        acked = len(read_acked(self.run_dir))
        bootstrap = self._kafka_bootstrap()
        if self.status != "complete" or self._interrupted or not self.target_url:
            reason = "the run did not complete" if sig.signum is None else "interrupted"
            _write_json(path, unavailable(acked, f"not read back: {reason}"))
            return
        if self.scenario.target.kind != "reference":
            reason = "your service's writes are not read back (no acknowledged-write log)"
            _write_json(path, unavailable(acked, reason))
            return
        if bootstrap is None:
            _write_json(path, unavailable(acked, "no Kafka to read back (external Kafka)"))
            return
        drained = wait_drained(
            f"{self.target_url}/metrics",
            timeout_s=DRAIN_TIMEOUT_S,
            should_stop=lambda: self._interrupted or sig.hurry,
        )
        if not drained:
            self.events.emit("warning", message="the impression queue did not drain in time")
        self.impressions = account_impressions(
            self.run_dir, bootstrap, self._topic(), timeout_s=READ_BACK_TIMEOUT_S
        )
        _write_json(path, self.impressions)

    def _kafka_bootstrap(self) -> str | None:
        if self.stack is not None and "kafka" in self.stack.proxies:
            return self.stack.proxies["kafka"].listen
        return self.scenario.stack.kafka_bootstrap

    def _topic(self) -> str:
        cfg = self.stack.target_config if self.stack is not None else {}
        topic = (cfg.get("impressions") or {}).get("topic", "impressions")
        return str(topic)

    def _stop_sampler(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        for source in self._sources:
            close = getattr(source, "close", None)
            if close is not None:
                with contextlib.suppress(OSError):
                    close()

    def _stop_stack(self) -> None:
        toxics: list[str] = []
        if self.stack is not None:
            reset = self.stack.reset_chaos()
            try:
                toxics = self.stack.toxics_left()
            except ChaosError as exc:
                toxics = [f"unknown: {exc}"] if reset else []
            self.stack.close(hurry=self.signals.hurry)
        elif self.chaos is not None and self.scenario.faults:
            with contextlib.suppress(ChaosError):
                self.chaos.reset()
        self.cleanup["toxics_left"] = toxics

    def _verify(self) -> None:
        """No child alive (a straggler is killed and named), no toxic left, no port bound."""
        left: list[str] = []
        for proc in leftover_children():
            with contextlib.suppress(psutil.Error):
                left.append(f"{proc.name()} (pid {proc.pid})")
                proc.kill()
                proc.wait(2.0)
        ports = sorted(self.stack.ports()) if self.stack is not None else []
        if self.control_port is not None:
            ports.append(self.control_port)
        bound = [p for p in ports if port_listening(p)]
        others = _taken_by_others(bound) if bound else {}
        bound = [p for p in bound if p not in others]
        self.cleanup.update(
            {"children_left": left, "ports_checked": len(ports), "ports_bound": bound}
        )
        if others:  # freed by us, then bound by an unrelated process: not ours to report
            self.cleanup["ports_reused"] = others
        self.cleanup["clean"] = not left and not bound and not self.cleanup.get("toxics_left")
        if not self.cleanup["clean"]:
            self.events.emit("warning", message=f"left behind after the run: {self.cleanup}")

    def _result(self) -> RunResult:
        if self.failure is not None and self.status != "interrupted":
            self.failure.hint = self.failure.hint or f"the partial run directory is {self.run_dir}"
            raise self.failure
        rows, totals = _totals(self.run_dir)
        samples = 0
        with contextlib.suppress(OSError, ValueError):
            samples = sum(1 for _ in read_jsonl(self.run_dir / SAMPLES_FILE))
        signum = None if not self._interrupted else self.signals.signum
        return RunResult(
            run_dir=self.run_dir,
            status=self.status,
            exit_code=0 if signum is None else 128 + signum,
            startup_s=float(self.meta.get("startup_s") or 0.0),
            signal=None if signum is None else signal.Signals(signum).name,
            totals=totals,
            requests_rows=rows,
            sample_rows=samples,
            impressions=self.impressions,
            cleanup=self.cleanup,
        )


class _NoProxies:
    """The fault client of a run without proxies: nothing to reset, and no fault can reach
    it (the control API refuses them first: "proxies: none")."""

    def add_toxic(self, proxy: str, type: str, **_: Any) -> object:
        raise ChaosError(f"this run has no proxies: no fault can go on {proxy!r}")

    def remove_toxic(self, proxy: str, name: str) -> None:
        raise ChaosError(f"this run has no proxies (asked to remove {name!r} from {proxy!r})")

    def set_enabled(self, name: str, enabled: bool) -> None:
        raise ChaosError(f"this run has no proxies (asked to switch {name!r})")

    def reset(self) -> None:
        return None


def _taken_by_others(ports: Sequence[int]) -> dict[int, str]:
    """port -> 'name (pid N)' for listeners on `ports` that are provably not this run's:
    a process that neither descends from us nor carries our token (owner unknown: ours)."""
    wanted = set(ports)
    me, token = os.getpid(), owner_token()
    others: dict[int, str] = {}
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return others
    for conn in conns:
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port not in wanted:
            continue
        if conn.pid is None or conn.pid == me:
            continue
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(conn.pid)
            if proc.environ().get(OWNER_ENV) == token or me in {p.pid for p in proc.parents()}:
                continue
            others[conn.laddr.port] = f"{proc.name()} (pid {proc.pid})"
    return others


def _check_url_answers(url: str, start_timeout_s: float) -> None:
    """An external target must accept connections before any load is sent (exit 4)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    bound = min(5.0, start_timeout_s)
    error = wait_reachable(f"{parts.hostname}:{port}", bound)
    if error is not None:
        raise EnvironmentProblem(
            f"target.url {url}: nothing accepts connections there (tried for {bound:g} s: {error})",
            hint="start your service first, or fix target.url; no load was sent",
        )


def preflight(scenario: Scenario) -> None:
    """What can be refused before anything starts (exit 2): the command's working
    directory and program, and the user's locustfile (imported in a subprocess: it must
    define a User class)."""
    target = scenario.target
    if target.kind == "command":
        cwd = Path(target.cwd or ".")
        if not cwd.is_dir():
            raise UsageError(
                f"target.cwd {cwd} is not a directory",
                hint="target.cwd is relative to the scenario file's folder",
            )
        program = (target.command or [""])[0]
        if placeholders(program) == ["python"]:
            program = fill_placeholders(program, {"python": sys.executable})
        found = (
            (cwd / program).is_file() if os.sep in program else shutil.which(program) is not None
        )
        if not found:
            raise UsageError(
                f"target.command[0] {program!r} is not found"
                + (f" in {cwd}" if os.sep in program else " on PATH"),
                hint="give the program's path (relative to target.cwd) or install it",
            )
    if scenario.load.locustfile is not None:
        probe_locustfile(scenario.load.locustfile, scenario.load.user)


def check_target_allowed(scenario: Scenario) -> None:
    """Refuse a non-loopback external target unless the scenario allows it."""
    if scenario.target.kind != "external" or scenario.target.allow_remote:
        return
    if not scenario.target.is_loopback():
        raise UsageError(
            f"target.url {scenario.target.url} is not a loopback address: refusing to load it",
            hint="pass --allow-remote-target (or set target.allow_remote = true) if you own it",
        )


def run_scenario(
    scenario: Scenario,
    *,
    out_dir: Path | None = None,
    console: Console | None = None,
    live: bool = False,
    argv: Sequence[str] | None = None,
    session: bool = False,
    idle: bool = False,
) -> RunResult:
    """Run `scenario` end to end into a new run directory and return what happened.

    First reaps (and says so) what harnesses that were killed left running. Raises
    UsageError (remote target not allowed, --out already used) before anything starts, and
    EnvironmentProblem (exit 4) after a full cleanup when a component failed to start or
    died mid-run. An interrupted run returns status "interrupted", exit 130/143; a
    `session` (spikegate up) ended by its first signal is complete (exit 0, then judged).
    """
    check_target_allowed(scenario)
    preflight(scenario)
    console = console or Console()
    reaped = reap_orphans()  # what an earlier, killed harness left running
    if reaped:
        console.print(describe(reaped), highlight=False, markup=False, soft_wrap=True)
    run_dir = new_run_dir(scenario.name, out_dir)
    run = _Run(
        scenario,
        run_dir,
        console,
        live,
        list(sys.argv if argv is None else argv),
        reaped,
        session=session,
        idle=idle,
    )
    return run.execute()
