"""The Locust plugin: one Runtime per process, driven by Locust's events.

    env SPIKEGATE_LOAD / _PUBLISHERS / _SEED / _T0 / _RUN_DIR  --init-->  Runtime (this process)

    local:   test_start: schedule + recorder + flusher --1 s--> requests.jsonl, acked/<pid>.txt
             (open model with a run dir: the live rate, RUN_DIR/control/load.json polled
             every 0.2 s by each generating process, replaces the shape's: live_rate.py)
    master:  test_start: load start, t0 and the process count go to the workers inside the
             spawn message (custom parsed options); worker_report / spikegate_final --> Merger
             --> requests.jsonl (one merged row per second)
    worker:  test_start: its share of the schedule (index of count); report_to_master every
             3 s carries its complete seconds, its acked ids and its CPU (in the rows);
             spikegate_final carries the rest once its last request finished (or on
             spikegate_flush from a quitting master). A worker may run on another machine
             (`spikegate worker --master HOST:PORT`, load.workers): it gets the locustfiles
             (`-f -`) and the run's config (--spikegate-config) from the master; the master
             writes its acked ids to acked/worker-<id>.txt. Its only writes are its own copy
             (SPIKEGATE_WORKER_DIR, on its own disk: requests.jsonl, acked.txt) for audit.
    master with load.workers: waits for RUN_DIR/control/t0.json (the harness writes it once
             every worker joined) before the load starts; RUN_DIR/workers.json says who
             joined and who went missing (no heartbeat, or quit before the end), which the
             harness turns into a component_crash event: the run is inconclusive

With load.locustfile set, user.py is the entry file instead of adserver.py: the same
Runtime, its requests recorded from Locust's `request` event by name (SecondStats.
record_request), outcomes by SPIKEGATE_OUTCOMES (contract.outcomes.OutcomeRules).

The schedule ends at t0 + duration_s. The shape keeps the run going until every process
has recorded the outcome of its last request (bounded by the lateness cap plus the client
timeout), so the run ends a little after duration_s with no request left without an outcome.
Nothing here runs at import time except registering the listeners.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import psutil
from gevent.pool import Group
from geventhttpclient.client import HTTPClientPool
from locust import events
from locust.contrib.fasthttp import insecure_ssl_context_factory
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from spikegate.contract.env import (
    LOAD_ENV,
    OUTCOMES_ENV,
    PUBLISHERS_ENV,
    RUN_DIR_ENV,
    SEED_ENV,
    T0_ENV,
    WORKER_DIR_ENV,
)
from spikegate.contract.load import LoadSection
from spikegate.contract.outcomes import OutcomeRules
from spikegate.contract.rundir import (
    ACKED_DIR,
    LOAD_CONTROL_FILE,
    REQUESTS_FILE,
    T0_FILE,
    WORKERS_FILE,
    JsonlWriter,
)
from spikegate.locustfiles.live_rate import POLL_S, LiveLoad
from spikegate.locustfiles.recorder import Merger, Recorder, SecondStats
from spikegate.locustfiles.shapes import DEMO_LOAD, ArrivalSchedule, Shape, load_params, make_shape
from spikegate.locustfiles.traffic import Traffic, default_publishers

__all__ = [
    "LOAD_ENV",
    "MAX_LATENESS_S",
    "PUBLISHERS_ENV",
    "SEED_ENV",
    "Config",
    "Runtime",
    "runtime",
]

MAX_LATENESS_S = 1.0  # an arrival later than this is not sent (counted as shortfall)
FLUSH_INTERVAL_S = 1.0
FINAL_MSG = "spikegate_final"
FLUSH_MSG = "spikegate_flush"
REPORT_KEY = "spikegate"
CONFIG_ENVS = (
    LOAD_ENV,
    PUBLISHERS_ENV,
    SEED_ENV,
    OUTCOMES_ENV,
)  # what a worker gets from the master
WORKERS_POLL_S = 0.5
T0_WAIT_S = 60.0  # the master's bound on waiting for control/t0.json
EARLY_S = 1.0  # a worker that ends this long before the schedule's end quit early
log = logging.getLogger("spikegate")


YIELD_EVERY = 32  # arrivals between forced yields when a loop never has to wait
IDLE_SLEEP_S = 0.25


def paced(
    arrivals: Iterator[float], t0: float, stopping: Callable[[], bool]
) -> Iterator[tuple[float, float]]:
    """Each arrival of `arrivals` (seconds from `t0`) as it falls due: (instant, lateness
    in seconds). Sleeps until the instant (waking at least every IDLE_SLEEP_S to honour
    `stopping`), yields to the other greenlets every YIELD_EVERY arrivals that never had to
    wait, and ends when the schedule ends or `stopping()` holds."""
    burst = 0
    wall = time.time
    while not stopping():
        rel = next(arrivals, None)
        if rel is None:
            return
        at = t0 + rel
        delay = at - wall()
        if delay > 0:
            burst = 0
            while delay > 0:
                gevent.sleep(min(delay, IDLE_SLEEP_S))
                if stopping():
                    return
                delay = at - wall()
        else:
            burst += 1
            if burst >= YIELD_EVERY:
                burst = 0
                gevent.sleep(0)
        yield rel, wall() - at


@dataclass(frozen=True)
class Config:
    """What the harness hands the generator through the environment (defaults without it)."""

    params: LoadSection
    publishers: dict[str, str]
    seed: int = 0
    t0: float | None = None
    run_dir: Path | None = None
    outcomes: OutcomeRules = field(default_factory=OutcomeRules)

    @classmethod
    def from_env(cls, env: Mapping[str, str], shape: str | None = None) -> Config:
        """Parse and validate; errors name the variable and the field."""
        raw_load: Any = dict(DEMO_LOAD)
        if env.get(LOAD_ENV):
            try:
                raw_load = json.loads(env[LOAD_ENV])
            except json.JSONDecodeError as exc:
                raise ValueError(f"{LOAD_ENV} is not valid JSON ({exc.msg})") from exc
        override = {} if shape is None else {"shape": shape}
        try:
            params = load_params(raw_load, **override)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{LOAD_ENV}: {exc}") from exc
        publishers = default_publishers(params.publishers)
        if env.get(PUBLISHERS_ENV):
            try:
                raw_pubs = json.loads(env[PUBLISHERS_ENV])
            except json.JSONDecodeError as exc:
                raise ValueError(f"{PUBLISHERS_ENV} is not valid JSON ({exc.msg})") from exc
            if (
                not isinstance(raw_pubs, dict)
                or not raw_pubs
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw_pubs.items())
            ):
                raise ValueError(
                    f"{PUBLISHERS_ENV} must be a JSON object of publisher id -> API key, "
                    'e.g. {"pub-1": "key-pub-1"}'
                )
            publishers = dict(raw_pubs)
        seed = _env_number(env, SEED_ENV, int) if env.get(SEED_ENV) else 0
        t0 = _env_number(env, T0_ENV, float) if env.get(T0_ENV) else None
        run_dir = Path(env[RUN_DIR_ENV]) if env.get(RUN_DIR_ENV) else None
        outcomes = OutcomeRules()
        if env.get(OUTCOMES_ENV):
            try:
                outcomes = OutcomeRules.from_json(env[OUTCOMES_ENV])
            except json.JSONDecodeError as exc:
                raise ValueError(f"{OUTCOMES_ENV} is not valid JSON ({exc.msg})") from exc
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{OUTCOMES_ENV}: {exc}") from exc
        return cls(
            params=params,
            publishers=publishers,
            seed=int(seed),
            t0=t0,
            run_dir=run_dir,
            outcomes=outcomes,
        )


def _env_number(env: Mapping[str, str], name: str, kind: type[int] | type[float]) -> float:
    try:
        value = kind(env[name])
    except ValueError:
        raise ValueError(f"{name} must be a {kind.__name__}, got {env[name]!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {env[name]!r}")
    return value


@dataclass
class Runtime:
    """This process's part of the run: schedule, recorder, in-flight requests, outputs."""

    config: Config
    role: str  # "local" | "master" | "worker"
    shape: Shape
    environment: Environment
    t0: float = 0.0
    load_start: float = 0.0
    index: int = 0
    count: int = 1
    started: bool = False
    recorder: Recorder | None = None
    traffic: Traffic | None = None
    arrivals: Iterator[float] = field(default_factory=lambda: iter(()))
    group: Group = field(default_factory=Group)
    inflight: int = 0
    dispatching: bool = False
    schedule_done: bool = False
    finished: bool = False
    cpu_warning: bool = False
    acked: list[str] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    acked_outbox: list[str] = field(default_factory=list)  # worker: ids not yet sent
    flush_requested: bool = False  # worker: the master asked for the last seconds
    # master: worker id -> {"host", "pid", "state", "reason", "t"} (RUN_DIR/workers.json)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    merger: Merger = field(default_factory=Merger)
    expected_workers: int = 1
    # exceptions raised by the user's own code (load.locustfile) that Locust also counted in
    # runner.exceptions: data, not a crash of the generator
    user_errors: int = 0
    # run by finish() once the arrivals ended, before the last seconds are handed out
    finish_hooks: list[Callable[[], None]] = field(default_factory=list)
    _rows: JsonlWriter | None = None
    _acked_path: Path | None = None
    _flusher: gevent.Greenlet | None = None
    # the live rate (spikegate load ...): open model with a run directory only
    live: LiveLoad | None = None
    _poller: gevent.Greenlet | None = None
    _pool: HTTPClientPool | None = None
    _proc: psutil.Process | None = None

    @property
    def params(self) -> LoadSection:
        return self.config.params

    @property
    def end(self) -> float:
        """Epoch instant the schedule ends (t0 + duration_s)."""
        return self.t0 + self.params.duration_s

    @property
    def settle_s(self) -> float:
        """How long after a second ends its last request can still be running."""
        return MAX_LATENESS_S + self.params.client_timeout_s + 0.5

    def drain_cap_s(self) -> float:
        """How long after `end` the shape waits for the last outcomes before stopping."""
        return self.settle_s + (2.0 if self.role == "master" else 1.0)

    def users(self) -> int:
        """The fixed user count: one per process (open model, and any user locustfile: its
        driver runs the user class's instances itself), max_inflight (closed)."""
        runner = self.environment.runner
        procs = max(1, runner.worker_count) if isinstance(runner, MasterRunner) else 1
        closed = self.params.mode == "closed" and self.params.locustfile is None
        return procs * (self.params.max_inflight if closed else 1)

    def all_done(self) -> bool:
        if self.role == "master":
            return self.merger.done(self.expected_workers)
        return self.finished

    def client_pool(self) -> HTTPClientPool:
        """One HTTP connection pool per process, sized to the in-flight bound, with
        client_timeout_s on the connect and on each socket read (a pool handed to
        FastHttpUser replaces the one its own timeouts would have configured)."""
        if self._pool is None:
            timeout = self.params.client_timeout_s
            self._pool = HTTPClientPool(
                concurrency=self.params.max_inflight,
                connection_timeout=timeout,
                network_timeout=timeout,
                insecure=True,  # FastHttpUser's default: loopback and test targets
                ssl_context_factory=insecure_ssl_context_factory,
            )
        return self._pool

    # --- start ---------------------------------------------------------------------------
    def start(self) -> None:
        env = self.environment
        opts = env.parsed_options
        if self.role == "worker":
            assert opts is not None
            self._config_from_master(getattr(opts, "spikegate_config", "") or "")
            # A worker that starts after the master skips what it missed instead of
            # bursting it out late (its first second just counts fewer intended arrivals).
            self.load_start = max(float(opts.spikegate_load_start), time.time())
            self.t0 = float(opts.spikegate_t0) or self.load_start
            self.count = max(1, int(opts.spikegate_processes))
            runner = env.runner
            self.index = max(0, getattr(runner, "worker_index", 0)) % self.count
        else:
            t0 = self.config.t0
            if (
                t0 is None
                and self.role == "master"
                and self.config.params.workers  # remote workers; not --processes on one host
                and self.config.run_dir is not None
            ):
                t0 = _await_t0(self.config.run_dir / T0_FILE, T0_WAIT_S)
            self.load_start = time.time()
            self.t0 = t0 if t0 is not None else self.load_start
            runner = env.runner
            self.count = max(1, runner.worker_count) if isinstance(runner, MasterRunner) else 1
            if opts is not None:
                opts.spikegate_load_start = self.load_start
                opts.spikegate_t0 = self.t0
                opts.spikegate_processes = self.count
        self.expected_workers = self.count
        self.started, self.finished, self.schedule_done = True, False, False
        self.merger = Merger()
        if self.role == "master":
            return
        first = math.floor(self.load_start - self.t0)
        self.recorder = Recorder(self.t0, first_second=first, settle_s=self.settle_s)
        seed = self.config.seed
        self.traffic = Traffic(self.params, self.config.publishers, seed=seed, index=self.index)
        schedule = ArrivalSchedule(
            self.shape,
            seed=seed,
            index=self.index,
            count=self.count,
            start_s=self.load_start - self.t0,
        )
        run_dir = self.config.run_dir
        if run_dir is not None and self.params.mode == "open":
            # spikegate load set|stop|start|spike: RUN_DIR/control/load.json, polled
            self.live = LiveLoad(run_dir / LOAD_CONTROL_FILE)
            self.live.poll()
            t0 = self.t0
            self.arrivals = schedule.live(
                self.live,
                now=lambda: time.time() - t0,
                sleep=gevent.sleep,
                stop=lambda: not self.dispatching,
            )
            self._poller = gevent.spawn(self._poll_loop)
        else:
            self.arrivals = iter(schedule)
        self.dispatching = True
        self.group = Group()
        self._proc = psutil.Process()
        self._proc.cpu_percent(None)
        if self.config.run_dir is not None and self.role == "local":
            acked = self.config.run_dir / ACKED_DIR
            acked.mkdir(parents=True, exist_ok=True)
            self._acked_path = acked / f"{os.getpid()}.txt"
        self._flusher = gevent.spawn(self._flush_loop)

    def _config_from_master(self, raw: str) -> None:
        """Worker: the run's config as the master has it (a worker on another machine has
        none of the harness's environment); the local run dir (same machine) is kept."""
        if not raw:
            return
        doc = json.loads(raw)
        env = {k: str(v) for k, v in (doc.get("env") or {}).items() if k in CONFIG_ENVS}
        if self.config.run_dir is not None:
            env[RUN_DIR_ENV] = str(self.config.run_dir)
        self.config = Config.from_env(env, shape=doc.get("shape"))
        self.shape = make_shape(self.config.params)

    def master_config(self, shape: str | None) -> str:
        """Master: what each worker needs of this run's config (--spikegate-config)."""
        env = {k: os.environ[k] for k in CONFIG_ENVS if os.environ.get(k)}
        return json.dumps({"env": env, "shape": shape}, sort_keys=True)

    def _poll_loop(self) -> None:
        """Every POLL_S: a newer live load document applies to the schedule at once."""
        live = self.live
        assert live is not None
        error: str | None = None
        while not self.finished:
            gevent.sleep(POLL_S)
            try:
                if live.poll():
                    log.info("spikegate: live load %s", live.doc.to_json())
            except Exception:
                log.exception("spikegate: reading the live load failed")
            if live.error != error:
                error = live.error
                if error is not None:
                    log.warning("spikegate: the live load document is ignored: %s", error)

    # --- once a second ---------------------------------------------------------------------
    def _flush_loop(self) -> None:
        while not self.finished:
            gevent.sleep(FLUSH_INTERVAL_S)
            try:
                self._tick(time.time())
            except Exception:
                log.exception("spikegate recorder: flush failed")
            if self._process_done(time.time()):
                gevent.spawn(self.finish, 0.0)
                return

    def _tick(self, now: float) -> None:
        rec = self.recorder
        if rec is None:
            return
        b = rec.bucket(max(rec.next_second, math.floor(now - self.t0 - 0.5)))
        if self._proc is not None:
            cpu = self._proc.cpu_percent(None)
            b.cpu_percent = max(b.cpu_percent or 0.0, cpu)
        if self.cpu_warning:
            b.cpu_warning, self.cpu_warning = True, False
        self._emit(rec.complete(now))
        self._flush_acked()

    def _process_done(self, now: float) -> bool:
        if now < self.end:
            return False
        # both loops set schedule_done at the end; in-flight requests then get their outcome
        return (self.schedule_done and self.inflight == 0) or now > self.end + self.settle_s

    def _emit(self, seconds: list[SecondStats]) -> None:
        if not seconds:
            return
        if self.role == "worker":
            self.outbox.extend(s.wire() for s in seconds)
            own = _worker_dir()
            if own is not None:
                with JsonlWriter(own / REQUESTS_FILE) as rows:
                    for s in seconds:
                        rows.write(s.row())
        else:
            self._write(seconds)

    def _write(self, seconds: list[SecondStats]) -> None:
        if self.config.run_dir is None or not seconds:
            return
        if self._rows is None:
            self._rows = JsonlWriter(self.config.run_dir / REQUESTS_FILE)
        for s in seconds:
            self._rows.write(s.row())

    def _flush_acked(self) -> None:
        if self.role == "worker":  # to the master with the next report (and its own copy)
            own = _worker_dir()
            if own is not None and self.acked:
                with (own / "acked.txt").open("a", encoding="utf-8") as fh:
                    fh.write("\n".join(self.acked) + "\n")
            self.acked_outbox.extend(self.acked)
            self.acked.clear()
            return
        if not self.acked or self._acked_path is None:
            self.acked.clear()
            return
        ids, self.acked = self.acked, []
        with self._acked_path.open("a", encoding="utf-8") as fh:
            fh.write("\n".join(ids) + "\n")

    # --- the end ---------------------------------------------------------------------------
    def finish(self, wait_s: float | None = None) -> None:
        """Stop sending, let in-flight requests end (bounded), hand out every second."""
        if self.finished or not self.started or self.role == "master":
            return
        self.finished = True
        self.dispatching = False
        early = not self.flush_requested and time.time() < self.end - EARLY_S
        wait = self.settle_s if wait_s is None else wait_s
        if len(self.group) and not self.group.join(timeout=wait):
            self.group.kill(block=True, timeout=1.0)  # each records its request as a timeout
        for hook in self.finish_hooks:
            try:
                hook()
            except Exception:
                log.exception("spikegate recorder: a finish hook failed")
        poller, self._poller = self._poller, None
        if poller is not None and poller is not gevent.getcurrent():
            poller.kill(block=False)
        flusher, self._flusher = self._flusher, None
        if flusher is not None and flusher is not gevent.getcurrent():
            flusher.kill(block=False)
        rec = self.recorder
        if rec is not None:
            if self.cpu_warning and rec.buckets:
                rec.buckets[max(rec.buckets)].cpu_warning = True
            self._emit(rec.drain())
        self._flush_acked()
        if self.role == "worker":
            self._send_final(early)
        elif self._rows is not None:
            self._rows.close()
            self._rows = None

    def _send_final(self, early: bool = False) -> None:
        seconds, self.outbox = self.outbox, []
        acked, self.acked_outbox = self.acked_outbox, []
        payload = {"seconds": seconds, "watermark": None, "acked": acked, "node": _node()}
        if early:
            payload["early"] = True
        try:
            self.environment.runner.send_message(  # type: ignore[union-attr]
                FINAL_MSG, payload
            )
        except Exception:
            log.exception("spikegate recorder: could not send the final seconds to the master")

    def report(self, data: dict[str, Any]) -> None:
        """Worker: attach the complete seconds and the acked ids to Locust's periodic report."""
        if not self.started or (self.finished and not self.outbox and not self.acked_outbox):
            return
        rec = self.recorder
        watermark = None if self.finished else (rec.next_second if rec else None)
        data[REPORT_KEY] = {
            "seconds": self.outbox,
            "watermark": watermark,
            "acked": self.acked_outbox,
            "node": _node(),
        }
        self.outbox, self.acked_outbox = [], []

    def merge(self, worker: str, payload: Any) -> None:
        """Master: fold a worker's seconds in and write every second all workers completed."""
        if not isinstance(payload, dict):
            return
        seconds = payload.get("seconds", ())
        self.merger.add(worker, seconds, payload.get("watermark"))
        self.user_errors += sum(int((s.get("tasks") or (0, 0, 0))[2]) for s in seconds)
        self._write_acked(worker, payload.get("acked") or ())
        info = self.workers.setdefault(worker, {"state": "joined"})
        node = payload.get("node")
        if isinstance(node, dict):
            info.update(host=node.get("host"), pid=node.get("pid"))
        if info["state"] != "missing":
            info["state"] = "done" if payload.get("watermark") is None else "running"
        if payload.get("early") and info["state"] != "missing":
            self.lose(worker, "it stopped before the end of the load")
        self._write(self.merger.ready(self.expected_workers))

    def _write_acked(self, worker: str, ids: Any) -> None:
        if not ids or self.config.run_dir is None:
            return
        folder = self.config.run_dir / ACKED_DIR
        folder.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", worker)
        with (folder / f"worker-{name}.txt").open("a", encoding="utf-8") as fh:
            fh.write("\n".join(str(i) for i in ids) + "\n")

    def lose(self, worker: str, reason: str) -> None:
        """Master: `worker` is gone before its end; seconds stop waiting for it."""
        info = self.workers.setdefault(worker, {"state": "joined"})
        info.update(
            state="missing", reason=reason, t=round(time.time() - self.t0, 1) if self.t0 else None
        )
        log.warning("spikegate: worker %s is missing: %s", worker, reason)
        self.merger.lost(worker)
        self._write(self.merger.ready(self.expected_workers))

    def watch_workers(self) -> None:
        """Master: every WORKERS_POLL_S, who joined and who went missing, to workers.json."""
        runner = self.environment.runner
        assert isinstance(runner, MasterRunner)
        run_dir = self.config.run_dir
        written: str | None = None
        while True:
            try:
                self._poll_workers(runner)
                doc = json.dumps(
                    {
                        "expected": int(
                            getattr(self.environment.parsed_options, "expect_workers", 0) or 0
                        ),
                        "started": self.started,
                        "workers": self.workers,
                    },
                    sort_keys=True,
                )
                if run_dir is not None and doc != written:
                    _write_atomic(run_dir / WORKERS_FILE, doc)
                    written = doc
            except Exception:
                log.exception("spikegate: watching the workers failed")
            gevent.sleep(WORKERS_POLL_S)

    def _poll_workers(self, runner: MasterRunner) -> None:
        present = {c.id: c.state for c in runner.clients.all}
        for wid, state in present.items():
            info = self.workers.setdefault(wid, {"state": "joined"})
            if state == "missing" and info["state"] not in ("done", "missing") and self.started:
                self.lose(wid, "it stopped sending heartbeats")
        for wid in list(self.workers):
            if wid in present:
                continue
            if not self.started:
                del self.workers[wid]  # left before the load started: not part of the run
            elif self.workers[wid]["state"] in ("joined", "running"):
                self.lose(wid, "it left the run before the end of the load")

    def close_master(self) -> None:
        """Master at quit: ask the workers for their last seconds, wait (bounded), write all."""
        runner = self.environment.runner
        if (
            not self.merger.done(self.expected_workers)
            and runner is not None
            and len(runner.greenlet)
        ):
            try:
                runner.send_message(FLUSH_MSG)
            except Exception:
                log.exception("spikegate recorder: could not ask the workers to flush")
            deadline = time.time() + self.settle_s + 1.0
            while time.time() < deadline and not self.merger.done(self.expected_workers):
                gevent.sleep(0.1)
        self._write(self.merger.drain())
        if self._rows is not None:
            self._rows.close()
            self._rows = None


_RUNTIME: Runtime | None = None


def runtime() -> Runtime:
    """This process's Runtime (created by the init event)."""
    if _RUNTIME is None:
        raise RuntimeError("the spikegate plugin was not initialised (no Locust init event)")
    return _RUNTIME


def _worker_dir() -> Path | None:
    raw = os.environ.get(WORKER_DIR_ENV)
    if not raw:
        return None
    path = Path(raw) / str(os.getpid())  # one folder per process (`--processes N`)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _node() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _await_t0(path: Path, bound_s: float) -> float | None:
    """The t0 the harness writes once every worker joined (None: not within the bound)."""
    deadline = time.time() + bound_s
    while time.time() < deadline:
        try:
            return float(json.loads(path.read_text(encoding="utf-8"))["t0_epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            gevent.sleep(0.05)
    log.warning("spikegate: no %s within %g s: the load starts now", T0_FILE, bound_s)
    return None


def _entry_shape(environment: Environment) -> str | None:
    shape = environment.shape_class
    return getattr(shape, "shape_name", None) if shape is not None else None


# --- listeners ---------------------------------------------------------------------------
def _add_arguments(parser: Any) -> None:
    # Set by the master at test start; Locust forwards custom options to the workers.
    for name, kind in (
        ("--spikegate-load-start", float),
        ("--spikegate-t0", float),
        ("--spikegate-processes", int),
    ):
        parser.add_argument(
            name, type=kind, default=kind(0), help=argparse.SUPPRESS, include_in_web_ui=False
        )
    # Set by the master at init: what a worker on another machine needs of the run's config.
    parser.add_argument(
        "--spikegate-config", type=str, default="", help=argparse.SUPPRESS, include_in_web_ui=False
    )


def _on_init(environment: Environment, **_kw: Any) -> None:
    global _RUNTIME
    shape_name = _entry_shape(environment)
    try:
        config = Config.from_env(os.environ, shape=shape_name)
    except ValueError as exc:
        sys.stderr.write(f"spikegate: {exc}\n")
        sys.exit(2)
    asked = _asked_shape(os.environ)
    if shape_name is not None and asked not in (None, shape_name):
        log.warning("%s asks for shape %r; the entry file's %r runs", LOAD_ENV, asked, shape_name)
    runner = environment.runner
    role = (
        "master"
        if isinstance(runner, MasterRunner)
        else "worker"
        if isinstance(runner, WorkerRunner)
        else "local"
    )
    _RUNTIME = Runtime(
        config=config, role=role, shape=make_shape(config.params), environment=environment
    )
    if config.run_dir is None and role != "worker":
        log.warning("%s is not set: per-second rows and acked ids are not written", RUN_DIR_ENV)
    if isinstance(runner, MasterRunner):
        runner.register_message(FINAL_MSG, _on_final)
        opts = environment.parsed_options
        if opts is not None:
            opts.spikegate_config = _RUNTIME.master_config(shape_name)
        gevent.spawn(_RUNTIME.watch_workers)
        if opts is not None and (getattr(opts, "processes", None) or 1) <= 1:
            # workers of their own (spikegate worker): see _on_master_sigterm
            gevent.signal_handler(signal.SIGTERM, _on_master_sigterm, environment)
    elif isinstance(runner, WorkerRunner):
        runner.register_message(FLUSH_MSG, _on_flush, concurrent=True)


def _on_master_sigterm(environment: Environment) -> None:
    """SIGTERM on a headless master with workers of its own. Locust installs its own handler
    only once the shape has ended, so until then SIGTERM would kill the master outright and
    leave the workers waiting a minute for its heartbeat. Running: end the shape, so Locust
    quits the usual way (workers told to quit, the last rows written). Still waiting for
    workers: tell those that joined to quit, and exit."""
    runner = environment.runner
    shape = getattr(runner, "shape_greenlet", None)
    if shape is not None and not shape.dead:
        shape.kill(block=False)
        return
    try:
        if runner is not None:
            runner.quit()
    finally:
        os._exit(128 + signal.SIGTERM)


def _asked_shape(env: Mapping[str, str]) -> str | None:
    try:
        shape = json.loads(env.get(LOAD_ENV) or "{}").get("shape")
    except (ValueError, AttributeError):
        return None
    return shape if isinstance(shape, str) else None


def _on_final(environment: Environment, msg: Any, **_kw: Any) -> None:
    if _RUNTIME is not None:
        _RUNTIME.merge(str(msg.node_id), msg.data)


def _on_flush(environment: Environment, msg: Any, **_kw: Any) -> None:
    if _RUNTIME is not None:
        _RUNTIME.flush_requested = True
        _RUNTIME.finish()


def _on_test_start(environment: Environment, **_kw: Any) -> None:
    if _RUNTIME is not None:
        _RUNTIME.start()


def _on_test_stop(environment: Environment, **_kw: Any) -> None:
    if _RUNTIME is not None and _RUNTIME.role != "master":
        _RUNTIME.finish()


def _on_report_to_master(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    if _RUNTIME is not None:
        _RUNTIME.report(data)


def _on_worker_report(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    if _RUNTIME is not None and REPORT_KEY in data:
        _RUNTIME.merge(client_id, data[REPORT_KEY])


def _on_cpu_warning(environment: Environment, cpu_usage: float, **_kw: Any) -> None:
    if _RUNTIME is not None:
        _RUNTIME.cpu_warning = True
        log.warning("spikegate: generator CPU at %.0f%%: the run may be inconclusive", cpu_usage)


def _on_quitting(environment: Environment, **_kw: Any) -> None:
    rt = _RUNTIME
    if rt is None:
        return
    if rt.role == "master":
        rt.close_master()
    else:
        rt.finish()
    runner = environment.runner
    raised = sum(int(e["count"]) for e in runner.exceptions.values()) if runner else 0
    # Request failures, and the user's own tasks raising (counted in the rows), are data,
    # not a failed run; a crash in our own code is.
    environment.process_exit_code = 2 if raised > rt.user_errors else 0


# EventHook.add_listener is untyped in locust 2.47.
_LISTENERS: tuple[tuple[Any, Any], ...] = (
    (events.init_command_line_parser, _add_arguments),
    (events.init, _on_init),
    (events.test_start, _on_test_start),
    (events.test_stop, _on_test_stop),
    (events.report_to_master, _on_report_to_master),
    (events.worker_report, _on_worker_report),
    (events.cpu_warning, _on_cpu_warning),
    (events.quitting, _on_quitting),
)
for _hook, _listener in _LISTENERS:
    _hook.add_listener(_listener)
