"""The fault schedule: applies a timeline of faults, expires them, records every change.

::

    specs ─┐                        ┌─> client.add_toxic / set_enabled ─> event fault_start
           ├─> pending (heap by t) ─┤
    add() ─┘                        └─> Undo.revert                     ─> event fault_stop
                                     failures of either                 ─> event fault_error
    close(): POST /reset, one fault_stop (reason "shutdown") per fault still active

Scheduled faults (from ``FaultSpec``) and manual ones (``add`` / ``remove``, the path of
``spikegate fault add|rm``) share one code path and produce the same events. Every fault
expires: at its end time, or at ``close()`` which always runs when ``run`` / ``run_sync``
ends or the context manager exits, including on Ctrl-C and task cancellation.

Client calls block (HTTP); the async runner makes them in a worker thread, serialised by a
lock that ``close`` also takes, so a reset never overtakes a fault still being applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Protocol, Self

from spikegate.chaos.errors import ChaosError
from spikegate.chaos.faults import FaultSpec, FaultTarget, Undo, fault_params, resolve_fault

__all__ = ["ActiveFault", "EventSink", "FaultSchedule", "ScheduleClient"]

log = logging.getLogger(__name__)

EventSink = Callable[[dict[str, Any]], None]


class ScheduleClient(FaultTarget, Protocol):
    """What the schedule needs of ``ChaosClient``: the fault calls plus ``reset``."""

    def reset(self) -> None: ...


@dataclass(frozen=True)
class ActiveFault:
    """A fault currently applied; ``ends_t`` is None for a manual fault without duration."""

    id: str
    proxy: str
    fault: str
    params: Mapping[str, Any] = field(hash=False)
    source: str
    started_t: float
    ends_t: float | None
    undo: Undo


@dataclass(frozen=True, order=True)
class _Pending:
    due_t: float
    priority: int  # stops (0) before starts (1) at the same instant
    seq: int
    fault_id: str = field(compare=False)
    spec: FaultSpec | None = field(compare=False, default=None)


class FaultSchedule:
    """Apply ``specs`` at their offsets from a start time; expire them; always reset on exit.

    Use as ``await schedule.run(start)`` (returns when the timeline is done), as
    ``async with schedule:`` (runs until the block exits), or from threads via
    ``run_sync`` / ``with schedule:``. Event ``t`` is seconds since the start time.
    """

    def __init__(
        self,
        client: ScheduleClient,
        specs: Iterable[FaultSpec] = (),
        *,
        on_event: EventSink,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        tick_s: float = 0.1,
    ) -> None:
        self._specs = list(specs)
        for i, spec in enumerate(self._specs):
            if not isinstance(spec, FaultSpec):
                raise ValueError(f"specs[{i}] must be a FaultSpec (got {spec!r})")
        if not isinstance(tick_s, int | float) or not 0 < tick_s <= 10:
            raise ValueError(f"tick_s must be in (0, 10] seconds (got {tick_s!r})")
        self._client = client
        self._on_event = on_event
        self._clock = clock
        self._sleep = sleep
        self._tick_s = float(tick_s)
        self._lock = threading.RLock()
        self._start: float | None = None
        self._closed = False
        self._pending: list[_Pending] = []
        self._active: dict[str, ActiveFault] = {}
        self._seq = 0
        self._manual_ids = 0
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.reset_ok: bool | None = None  # outcome of the final reset, once closed

    # -- state -----------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._start is not None

    @property
    def closed(self) -> bool:
        return self._closed

    def elapsed(self) -> float:
        """Seconds since the start time (0 before ``begin``)."""
        return 0.0 if self._start is None else self._clock() - self._start

    def active(self) -> list[ActiveFault]:
        with self._lock:
            return sorted(self._active.values(), key=lambda a: (a.started_t, a.id))

    def begin(self, start_monotonic: float | None = None) -> None:
        """Fix the start time (default: now) and queue the timeline."""
        with self._lock:
            if self._start is not None:
                raise RuntimeError("fault schedule already started")
            if self._closed:
                raise RuntimeError("fault schedule is closed")
            self._start = self._clock() if start_monotonic is None else float(start_monotonic)
            for i, spec in enumerate(self._specs, start=1):
                self._push(spec.at_s, 1, f"s{i}", spec)

    # -- manual faults -----------------------------------------------------------------

    def add(
        self,
        fault: str,
        proxy: str | None = None,
        params: Mapping[str, object] | None = None,
        *,
        duration_s: float | None = None,
    ) -> ActiveFault:
        """Apply a fault now (blocking); it expires after ``duration_s`` if given.

        Bad input raises ValueError; a server failure is recorded as ``fault_error`` and
        raised as the ``ChaosError``.
        """
        if duration_s is not None:
            # FaultSpec validates the duration, fault, proxy and params in one place.
            FaultSpec(0.0, duration_s, proxy, fault, dict(params or {}))
        resolve_fault(fault, proxy, params)
        with self._lock:
            self._require_open()
            if self._start is None:
                self.begin()
            self._manual_ids += 1
            fault_id = f"m{self._manual_ids}"
            end_t = None if duration_s is None else self._now_t() + float(duration_s)
            active = self._start_fault(fault_id, fault, proxy, params, "manual", end_t)
            if isinstance(active, ChaosError):
                raise active
            return active

    def remove(self, fault_id: str) -> None:
        """Take an active fault off now (blocking)."""
        with self._lock:
            self._require_open()
            if fault_id not in self._active:
                known = ", ".join(self._active) or "none"
                raise ValueError(f"fault_id {fault_id!r} is not active (active: {known})")
            self._stop_fault(fault_id, "manual")

    def clear(self) -> None:
        """Take every active fault off now (blocking)."""
        with self._lock:
            for fault_id in list(self._active):
                self._stop_fault(fault_id, "manual")

    # -- the step both runners share -------------------------------------------------------

    def next_wait(self) -> float | None:
        """Seconds until the next pending action (0 if due), None when nothing is pending."""
        with self._lock:
            if self._closed or not self._pending:
                return None
            return max(0.0, self._pending[0].due_t - self._now_t())

    def run_due(self) -> None:
        """Perform every action that is due (blocking)."""
        while True:
            with self._lock:
                if self._closed or not self._pending or self._pending[0].due_t > self._now_t():
                    return
                item = heapq.heappop(self._pending)
                spec = item.spec
                if spec is not None:
                    self._start_fault(
                        item.fault_id, spec.fault, spec.proxy, spec.params, "schedule", spec.end_s
                    )
                elif item.fault_id in self._active:
                    self._stop_fault(item.fault_id, "expired")

    def close(self) -> None:
        """Reset the server and end every active fault; idempotent, never raises ChaosError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._pending.clear()
            remaining = self.active()
            self._active.clear()
            try:
                self._client.reset()
            except ChaosError as exc:
                self.reset_ok = False
                self._emit({"kind": "fault_error", "action": "reset", "error": str(exc)})
                for fault in remaining:
                    self._emit(
                        self._fault_event("fault_error", fault, action="stop", error=str(exc))
                    )
            else:
                self.reset_ok = True
                for fault in remaining:
                    self._emit(self._fault_event("fault_stop", fault, reason="shutdown"))

    # -- async runner ------------------------------------------------------------------

    async def run(self, start_monotonic: float | None = None, *, until_idle: bool = True) -> None:
        """Run the timeline; with ``until_idle`` return once nothing is pending. Always closes."""
        try:
            if self._start is None:
                self.begin(start_monotonic)
            while True:
                wait = self.next_wait()
                if wait is None:
                    if until_idle or self._closed:
                        return
                    wait = self._tick_s
                if wait <= 0:
                    await asyncio.to_thread(self.run_due)
                    continue
                await self._sleep(min(wait, self._tick_s))
        finally:
            self.close()

    async def __aenter__(self) -> Self:
        if self._start is None:
            self.begin()
        self._task = asyncio.create_task(self.run(until_idle=False), name="fault-schedule")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = self._task
        try:
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            self.close()  # also covers a task cancelled before it ever ran
        if task is not None and task.done() and not task.cancelled():
            task.result()  # surface a crash of the runner

    # -- thread runner -----------------------------------------------------------------

    def run_sync(self, start_monotonic: float | None = None, *, until_idle: bool = True) -> None:
        """Blocking runner for threads; ``stop_sync`` (or Ctrl-C) ends it. Always closes."""
        try:
            if self._start is None:
                self.begin(start_monotonic)
            while not self._stop.is_set():
                wait = self.next_wait()
                if wait is None:
                    if until_idle or self._closed:
                        return
                    wait = self._tick_s
                if wait <= 0:
                    self.run_due()
                    continue
                self._stop.wait(min(wait, self._tick_s))
        finally:
            self.close()

    def stop_sync(self) -> None:
        self._stop.set()

    def __enter__(self) -> Self:
        if self._start is None:
            self.begin()
        self._thread = threading.Thread(
            target=self.run_sync, kwargs={"until_idle": False}, name="fault-schedule", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        try:
            if self._thread is not None:
                self._thread.join()
        finally:
            self.close()

    # -- internals (called with the lock held) ---------------------------------------------

    def _require_open(self) -> None:
        if self._closed:
            raise RuntimeError("fault schedule is closed")

    def _now_t(self) -> float:
        return 0.0 if self._start is None else self._clock() - self._start

    def _push(self, due_t: float, priority: int, fault_id: str, spec: FaultSpec | None) -> None:
        self._seq += 1
        heapq.heappush(self._pending, _Pending(due_t, priority, self._seq, fault_id, spec))

    def _start_fault(
        self,
        fault_id: str,
        name: str,
        proxy_name: str | None,
        params: Mapping[str, object] | None,
        source: str,
        end_t: float | None,
    ) -> ActiveFault | ChaosError:
        """Apply one fault; on failure record ``fault_error`` and return the error."""
        proxy, fault = resolve_fault(name, proxy_name, params)
        base = {
            "id": fault_id,
            "proxy": proxy,
            "fault": name,
            "params": fault_params(fault),
            "source": source,
        }
        try:
            undo = fault.apply(self._client, proxy, f"spikegate_{fault_id}_{fault.name}")
        except ChaosError as exc:
            self._emit({"kind": "fault_error", **base, "action": "start", "error": str(exc)})
            return exc
        active = ActiveFault(
            id=fault_id,
            proxy=proxy,
            fault=name,
            params=fault_params(fault),
            source=source,
            started_t=self._now_t(),
            ends_t=end_t,
            undo=undo,
        )
        self._active[fault_id] = active
        if end_t is not None:
            self._push(end_t, 0, fault_id, None)
        duration = None if end_t is None else end_t - active.started_t
        self._emit(self._fault_event("fault_start", active, duration_s=duration))
        return active

    def _stop_fault(self, fault_id: str, reason: str) -> None:
        active = self._active.pop(fault_id)
        undo = active.undo
        # Two overlapping "down" faults on one proxy: only the last to end re-enables it.
        if undo.reenable and any(
            a.proxy == undo.proxy and a.undo.reenable for a in self._active.values()
        ):
            undo = replace(undo, reenable=False)
        try:
            undo.revert(self._client)
        except ChaosError as exc:
            self._emit(self._fault_event("fault_error", active, action="stop", error=str(exc)))
            return
        self._emit(self._fault_event("fault_stop", active, reason=reason))

    def _fault_event(self, kind: str, fault: ActiveFault, **extra: Any) -> dict[str, Any]:
        return {
            "kind": kind,
            "id": fault.id,
            "proxy": fault.proxy,
            "fault": fault.fault,
            "params": dict(fault.params),
            "source": fault.source,
            **extra,
        }

    def _emit(self, event: dict[str, Any]) -> None:
        record = {"t": round(self._now_t(), 6), **event}
        try:
            self._on_event(record)
        except Exception:  # a broken sink must not leave a fault applied
            log.exception("fault event sink failed for %r", record)
