"""The open model's senders: a bounded pool of long-lived greenlets fed by the schedule.

    paced(schedule) --due arrival--> SenderPool.submit(job)
                                        an idle sender parked?  hand it the job (one hub
                                                                callback, no new greenlet)
                                        fewer than `limit`?     a new sender runs it
                                        else                    False: the caller's shortfall
    sender: run(job) -> park (LIFO) -> next job ... until close()

A greenlet per arrival (Group.spawn) costs an object, a stack, a start callback and a
link callback at its death; a parked sender costs one callback per job. Jobs still run
concurrently (a slow answer holds one sender; the others keep taking arrivals), so a slow
target never slows the schedule, only fills the pool up to `limit`. Senders live in the
caller's Group, so Runtime.finish joins (and at last kills) the in-flight ones; close()
lets the parked ones end at once. Imports gevent only (no Locust).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from gevent.hub import Waiter, get_hub
from gevent.pool import Group

__all__ = ["SenderPool"]

J = TypeVar("J")
_CLOSE: Any = object()


class SenderPool(Generic[J]):
    """At most `limit` sender greenlets in `group`, each running `run(job)` one job at a time."""

    def __init__(self, run: Callable[[J], object], limit: int, group: Group) -> None:
        self._run = run
        self.limit = limit
        self._group = group
        self._idle: list[Waiter] = []
        self._callback = get_hub().loop.run_callback
        self.size = 0  # senders alive: running a job or parked
        self.closed = False

    @property
    def idle(self) -> int:
        return len(self._idle)

    def submit(self, job: J) -> bool:
        """Start `job` now (on a parked sender, else a new one); False when `limit` senders
        are all busy or the pool is closed."""
        if self.closed:
            return False
        if self._idle:
            self._callback(self._handoff, self._idle.pop(), job)
            return True
        if self.size >= self.limit:
            return False
        self._spawn(job)
        return True

    def close(self) -> None:
        """No more jobs: parked senders end now, busy ones after their job."""
        self.closed = True
        idle, self._idle = self._idle, []
        for waiter in idle:
            self._callback(self._handoff, waiter, _CLOSE)

    def _spawn(self, job: J) -> None:
        self.size += 1
        self._group.spawn(self._sender, job)

    def _handoff(self, waiter: Waiter, job: Any) -> None:
        if waiter.greenlet is not None:
            waiter.switch(job)
        elif job is not _CLOSE:  # its sender was killed while parked: the job still runs
            self._spawn(job)

    def _sender(self, job: Any) -> None:
        run, idle = self._run, self._idle
        waiter = Waiter()
        try:
            while True:
                run(job)
                if self.closed:
                    return
                idle.append(waiter)
                job = waiter.get()
                if job is _CLOSE:
                    return
        finally:
            self.size -= 1
            if waiter in idle:  # killed while parked
                idle.remove(waiter)
