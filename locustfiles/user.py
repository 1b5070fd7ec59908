"""Locust entry file for the user's own locustfile (scenario `[load] locustfile = "x.py"`).

    locust -f locustfiles/user.py,locustfiles/shape_<shape>.py --headless --host URL
    env: SPIKEGATE_LOAD (load.locustfile: an absolute path; load.user), _OUTCOMES, ...

At import the user's file is imported by path (probe.py: its folder first on sys.path) and
its User class chosen (load.user, or the only one it defines). The class is never bound
in this module, so Locust spawns only SpikegateDriver: one per process. The driver runs
the user class's instances itself:

    open (default)  this process's share of the ArrivalSchedule, paced as in adserver.py
                    (lateness cap MAX_LATENESS_S, max_inflight running arrivals, else the
                    arrival is skipped: the shortfall). Each arrival runs ONE task of the
                    user class (weighted choice, seeded by the scenario seed) in its own
                    greenlet, on an idle instance from a pool (created on demand, at most
                    max_inflight; on_start runs once when an instance is created), so a slow
                    service never slows the offered load. wait_time is not used: the
                    schedule paces. A TaskSet task runs one of its own tasks (its instance
                    kept per user instance until it interrupts). A task that raises is
                    counted (row `tasks.errors`, Locust's user_error) and never stops the
                    run; StopUser retires the instance.
    closed          plain Locust semantics: max_inflight instances per process, each running
                    its tasks back to back with its own wait_time until the schedule's end.

Recording: a listener on Locust's `request` event sees every request the user's code makes,
whatever its client. Each counts intended + sent + one outcome in the second of the arrival
that made it (a greenlet-local current arrival; outside one, e.g. on_start or closed mode,
the second it started); a skipped arrival counts intended only. Outcomes: OutcomeRules
(SPIKEGATE_OUTCOMES) on the status and the decision header; no response -> timeout or
conn_error; a request the user's code marked failed (catch_response's failure()) on an
admitted status -> error_5xx (the service answered, its answer was wrong: a service
failure). Every other status keeps its class whatever the user's code marked it (a 429 is
rate_limited even when Locust calls it a failure). So for every second sent == sum of the
outcomes, and the totals equal Locust's own num_requests.

client_timeout_s becomes the default timeout of a FastHttpUser that sets no
network_timeout / connection_timeout of its own, and of an HttpUser request that passes no
`timeout=`: the recorder's settle time assumes it.
"""

from __future__ import annotations

import inspect
import logging
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import gevent
from gevent import GreenletExit
from gevent.pool import Group
from locust import HttpUser, User, constant, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.env import Environment
from locust.exception import (
    InterruptTaskSet,
    RescheduleTask,
    RescheduleTaskImmediately,
    StopTest,
    StopUser,
)
from locust.user.task import (
    LOCUST_STATE_RUNNING,
    LOCUST_STATE_STOPPING,
    DefaultTaskSet,
    TaskSet,
)

from spikegate.contract.env import LOAD_ENV
from spikegate.contract.outcomes import DESIGNED_REJECTIONS, OutcomeRules
from spikegate.locustfiles.plugin import (
    IDLE_SLEEP_S,
    MAX_LATENESS_S,
    Config,
    Runtime,
    paced,
    runtime,
)
from spikegate.locustfiles.probe import LocustfileError, load_user_class
from spikegate.locustfiles.recorder import OUTCOME_INDEX, classify_response, valid_retry_after

__all__ = ["Driver", "SpikegateDriver"]

log = logging.getLogger("spikegate")
wall = time.time
_ON_STOP_WAIT_S = 2.0
_LOGGED_PER_ERROR = 3  # tracebacks logged per exception type, then counted only
_DESIGNED = frozenset(OUTCOME_INDEX[o] for o in DESIGNED_REJECTIONS)
_ENDED = (InterruptTaskSet, RescheduleTask, RescheduleTaskImmediately)  # a normal task end
_SETS_ATTR = "_spikegate_tasksets"


def _fail(message: str) -> NoReturn:
    sys.stderr.write(f"spikegate: {message}\n")
    sys.exit(2)


@dataclass(frozen=True)
class _Target:
    """The user's class, held in an instance (Locust collects classes bound in this module)."""

    user_class: type[User]


def _load_target() -> _Target:
    try:
        config = Config.from_env(os.environ)
    except ValueError as exc:
        _fail(str(exc))
    path = config.params.locustfile
    if path is None:
        _fail(
            f"{LOAD_ENV} sets no load.locustfile: user.py runs a user's own locustfile "
            "(use adserver.py for the reference target)"
        )
    try:
        cls = load_user_class(path, config.params.user)
    except LocustfileError as exc:
        _fail(str(exc))
    _default_timeouts(cls, config.params.client_timeout_s)
    return _Target(cls)


def _default_timeouts(cls: type[User], timeout_s: float) -> None:
    """client_timeout_s for a FastHttpUser's own timeouts that it left at Locust's default."""
    if not issubclass(cls, FastHttpUser):
        return
    for attr in ("network_timeout", "connection_timeout"):
        own = any(attr in vars(c) for c in cls.__mro__[: cls.__mro__.index(FastHttpUser)])
        if not own:
            setattr(cls, attr, timeout_s)


# --- the driver ----------------------------------------------------------------------------
@dataclass
class Driver:
    """This process's instances of the user's class, the arrivals running on them, and the
    recording of their requests."""

    rt: Runtime
    user_class: type[User]
    environment: Environment
    rng: random.Random = field(default_factory=random.Random)
    idle: list[User] = field(default_factory=list)
    closed_users: list[User] = field(default_factory=list)
    current: dict[Any, int] = field(default_factory=dict)  # arrival greenlet -> its second
    logged: dict[str, int] = field(default_factory=dict)

    @property
    def rules(self) -> OutcomeRules:
        return self.rt.config.outcomes

    def reset(self) -> None:
        """At test start: a fresh pool and the task choice seeded per process."""
        rt = self.rt
        self.rng = random.Random(f"tasks:{rt.config.seed}:{rt.index}:{rt.count}")
        self.idle, self.closed_users = [], []
        self.current.clear()
        if self._on_stop_idle not in rt.finish_hooks:
            rt.finish_hooks.append(self._on_stop_idle)

    # --- instances ---------------------------------------------------------------------------
    def _new_user(self) -> User:
        cls, env = self.user_class, self.environment
        if env.host:
            cls.host = env.host  # as Locust does for the classes it spawns
        user = cls(env)
        if isinstance(user, HttpUser):
            _default_request_timeout(user, self.rt.params.client_timeout_s)
        return user

    def _take(self) -> User | None:
        """An idle instance, else a new one with on_start run (None: on_start failed)."""
        if self.idle:
            return self.idle.pop()
        try:
            user = self._new_user()
        except Exception as exc:  # e.g. an HttpUser without a host
            self._task_error(None, exc)
            return None
        user._state = LOCUST_STATE_RUNNING
        user._taskset_instance = DefaultTaskSet(user)  # what User.run() sets (User.wait())
        try:
            user.on_start()
        except StopUser:
            return None
        except Exception as exc:
            self._task_error(user, exc)
            return None
        return user

    def _on_stop_idle(self) -> None:
        """At the end of an open-model run: on_stop for every pooled instance (bounded)."""
        users, self.idle = self.idle, []
        if not users:
            return
        group = Group()
        for user in users:
            group.spawn(self._stop_user, user)
        if not group.join(timeout=_ON_STOP_WAIT_S):
            group.kill(block=True, timeout=1.0)

    def _stop_user(self, user: User) -> None:
        try:
            for ts in reversed(list(getattr(user, _SETS_ATTR, {}).values())):
                ts.on_stop()
            user.on_stop()
        except (GreenletExit, StopUser, StopTest):
            pass
        except Exception as exc:
            self._log_error(exc, "on_stop")

    # --- open model ---------------------------------------------------------------------------
    def open_loop(self, driver: SpikegateDriver) -> None:
        rt = self.rt
        rec, t0 = rt.recorder, rt.t0
        assert rec is not None
        limit = rt.params.max_inflight
        spawn = rt.group.spawn
        for rel, late in paced(rt.arrivals, t0, driver.stopping):
            b = rec.bucket(int(rel))
            b.task_counts[0] += 1
            if late > MAX_LATENESS_S or rt.inflight >= limit:
                b.intended += 1  # the shortfall: an arrival (at least one request) not sent
                continue
            b.task_counts[1] += 1
            b.note_late(late)
            b.tasks_open += 1
            rt.inflight += 1
            spawn(self._arrival, b)
        if not driver.stopping():  # the schedule ended
            rt.schedule_done = True
            driver.idle_until_stopped()

    def _arrival(self, bucket: Any) -> None:
        """One arrival: one task of the user class on a pooled instance."""
        rt = self.rt
        second = bucket.second
        me = gevent.getcurrent()
        try:
            user = self._take()
            if user is None:
                return
            self.current[me] = second
            keep = True
            try:
                self._step(user, self.rng.choice(user.tasks))
            except _ENDED:
                pass
            except (StopUser, StopTest):
                keep = False
                self._stop_user(user)
            except GreenletExit:
                raise
            except Exception as exc:
                self._task_error(user, exc)
            finally:
                self.current.pop(me, None)
            if keep:
                self.idle.append(user)  # at the end, finish() runs on_stop for the pool
        except GreenletExit:
            rec = rt.recorder
            if rec is not None:
                rec.bucket(second).task_counts[3] += 1  # cut short at the end of the run
            raise
        finally:
            bucket.tasks_open -= 1
            rt.inflight -= 1

    def _step(self, holder: Any, chosen: Any) -> None:
        """Run `chosen` (a task of `holder`: a User or a TaskSet instance) once; a TaskSet
        class runs one task of its instance under `holder` (kept until it interrupts)."""
        if inspect.isclass(chosen) and issubclass(chosen, TaskSet):
            sets: dict[type, TaskSet] | None = holder.__dict__.get(_SETS_ATTR)
            if sets is None:
                sets = holder.__dict__[_SETS_ATTR] = {}
            ts = sets.get(chosen)
            if ts is None:
                ts = sets[chosen] = chosen(holder)
                ts.on_start()
            try:
                self._step(ts, self._next_task(ts))
            except InterruptTaskSet:
                sets.pop(chosen, None)
                ts.on_stop()
            return
        if getattr(chosen, "__self__", None) is holder:
            chosen()  # a bound method of the holder
        else:
            chosen(holder)

    def _next_task(self, ts: TaskSet) -> Any:
        if type(ts).get_next_task is TaskSet.get_next_task and ts.tasks:
            return self.rng.choice(ts.tasks)  # plain random choice: the seeded one
        return ts.get_next_task()  # SequentialTaskSet, MarkovTaskSet, custom

    # --- closed mode --------------------------------------------------------------------------
    def closed_loop(self, driver: SpikegateDriver) -> None:
        """max_inflight instances running as Locust runs users, until the schedule's end."""
        rt = self.rt
        for _ in range(rt.params.max_inflight):
            if driver.stopping():
                break
            try:
                user = self._new_user()
            except Exception as exc:
                self._task_error(None, exc)
                break
            rt.inflight += 1
            user.start(rt.group).link(self._closed_user_ended)
            self.closed_users.append(user)
        while not driver.stopping() and wall() < rt.end:
            gevent.sleep(min(IDLE_SLEEP_S, max(0.0, rt.end - wall())))
        for user in self.closed_users:
            gevent.spawn(_stop_closed, user)
        rt.schedule_done = True
        driver.idle_until_stopped()

    def _closed_user_ended(self, _greenlet: Any) -> None:
        self.rt.inflight -= 1

    # --- recording ----------------------------------------------------------------------------
    def on_request(
        self,
        request_type: str = "",
        name: str = "",
        response_time: float | None = None,
        response_length: int = 0,
        response: Any = None,
        context: Any = None,
        exception: BaseException | None = None,
        start_time: float | None = None,
        url: str | None = None,
        **_kw: Any,
    ) -> None:
        rec = self.rt.recorder
        if rec is None:
            return
        second = self.current.get(gevent.getcurrent())
        if second is None:
            second = rec.second_of(start_time if start_time else wall())
        outcome, decision, retry_after = classify_response(self.rules, response, exception)
        index = OUTCOME_INDEX[outcome]
        b = rec.bucket(second)
        latency_us = int((response_time or 0.0) * 1000.0)
        b.record_request(rec.name_key(str(name)), index, decision, latency_us)
        if index in _DESIGNED and not valid_retry_after(retry_after):
            b.bad_retry_after(index)

    def on_user_error(self, user_instance: Any, exception: BaseException, **_kw: Any) -> None:
        """Locust's user_error: the user's own code raised (counted, never a crash)."""
        owner = user_instance.user if isinstance(user_instance, TaskSet) else user_instance
        if isinstance(owner, SpikegateDriver):
            return  # our own code: Locust's runner.exceptions makes the run exit 2
        rt = self.rt
        rt.user_errors += 1
        rec = rt.recorder
        if rec is None:
            return
        second = self.current.get(gevent.getcurrent())
        if second is None:
            second = rec.second_of(wall())
        rec.bucket(second).task_counts[2] += 1

    def _task_error(self, user: User | None, exc: Exception) -> None:
        self._log_error(exc, "a task")
        self.environment.events.user_error.fire(
            user_instance=user, exception=exc, tb=exc.__traceback__
        )

    def _log_error(self, exc: BaseException, where: str) -> None:
        key = type(exc).__name__
        n = self.logged[key] = self.logged.get(key, 0) + 1
        if n <= _LOGGED_PER_ERROR:
            log.error(
                "%s of %s raised %s: %s", where, self.user_class.__name__, key, exc, exc_info=exc
            )


def _stop_closed(user: User) -> None:
    try:
        user.stop(force=False)
    except Exception:
        log.debug("spikegate: stopping a user that already ended", exc_info=True)


def _default_request_timeout(user: HttpUser, timeout_s: float) -> None:
    """client_timeout_s for an HttpUser's requests that pass no timeout of their own."""
    session = user.client
    request: Callable[..., Any] = session.request

    def with_timeout(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", timeout_s)
        return request(method, url, *args, **kwargs)

    session.request = with_timeout  # type: ignore[method-assign]


# --- the one user Locust spawns --------------------------------------------------------------
class SpikegateDriver(User):
    """Runs this process's arrivals (open) or instances (closed) of the user's class."""

    wait_time = constant(0)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.rt = runtime()

    @task
    def dispatch(self) -> None:
        driver = _DRIVER
        if driver is None or not self.rt.dispatching:
            gevent.sleep(IDLE_SLEEP_S)  # before test_start, after the process finished
        elif self.rt.params.mode == "closed":
            driver.closed_loop(self)
        else:
            driver.open_loop(self)

    def stopping(self) -> bool:
        return self._state == LOCUST_STATE_STOPPING or not self.rt.dispatching

    def idle_until_stopped(self) -> None:
        while not self.stopping():
            gevent.sleep(IDLE_SLEEP_S)


_TARGET = _load_target()
_DRIVER: Driver | None = None


def _on_init(environment: Environment, **_kw: Any) -> None:
    global _DRIVER
    _DRIVER = Driver(runtime(), _TARGET.user_class, environment)
    environment.events.request.add_listener(_DRIVER.on_request)
    environment.events.user_error.add_listener(_DRIVER.on_user_error)


def _on_test_start(environment: Environment, **_kw: Any) -> None:
    if _DRIVER is not None and _DRIVER.rt.role != "master":
        _DRIVER.reset()


# registered after the plugin's own (imported above): its Runtime exists and has started
events.init.add_listener(_on_init)
events.test_start.add_listener(_on_test_start)
