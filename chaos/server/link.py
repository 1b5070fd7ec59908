"""One direction of one proxied connection: a fast path, or a pump through the toxic chain.

    source ─ data_received ─ side.forward ─┬─ no active toxic: dest.write ──────────────> dest
                                           └─ toxics: feed ─> queue ─> pump ─> toxic ─> ─> dest
                                                                        │
                                         consults the *current* chain for every chunk and stage

The fast path costs one Python call per socket read: the source socket's protocol calls
``side.forward``, which *is* ``dest.write`` while the link is direct and ``Link.feed``
otherwise; the link swaps it when it enters or leaves the fast path, so no per-chunk branch
or task switch runs and order is kept (the pump drains its queue before the swap back).
``notify_next_write`` arms a one-shot callback for the next write to the destination (the
connection's "the answer reached the client"): while armed, the fast path is
``_write_and_notify`` instead of ``dest.write``, so the unarmed path stays one call.

The API never waits on data: adding, updating or removing a toxic swaps the chain tuple,
rolls toxicity for new toxics, and wakes any toxic sleeping in this link so it re-reads its
attributes (or, removed, hands its chunk on at once). Each chunk remembers which toxics it has
passed, so a toxic added mid-flight still applies and a removed one is skipped; nothing is
dropped or reordered. When the chain empties, the pump drains its queue and the link returns
to the fast path.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .schema import ToxicWrapper
from .toxics import Attaching, Chunk, Cleanup

log = logging.getLogger("chaos.server")

CHUNK_SIZE = 32 * 1024
QUEUE_HIGH = 4 * 1024 * 1024  # pause the source when this much waits for the toxics
QUEUE_LOW = 1024 * 1024


@dataclass(slots=True)
class Counters:
    """Bytes read from the source and written to the destination, per proxy and direction.

    The fast path only counts ``received`` (one add per read); ``sent`` is derived: what
    was received, minus what entered the toxic pipeline, plus what the pipeline wrote.
    """

    received: int = 0
    piped_in: int = 0  # received bytes that went to the toxic pipeline (or were discarded)
    piped_out: int = 0  # bytes the toxic pipeline wrote to the destination

    @property
    def sent(self) -> int:
        return self.received - self.piped_in + self.piped_out


class ConnectionLike(Protocol):
    def close(self, reset: bool = False) -> None: ...

    def link_finished(self) -> None: ...


class SourceSide(Protocol):
    """The protocol of the source socket: it hands every read to ``forward``."""

    forward: Callable[[bytes], None]


@dataclass(slots=True)
class _ToxicState:
    active: bool
    state: dict[str, float] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None


def _resolve(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)


def _wake(waiters: set[asyncio.Future[bool]]) -> None:
    for fut in tuple(waiters):
        _resolve(fut, False)


class Link:
    """The upstream or downstream direction of one connection."""

    def __init__(
        self,
        conn: ConnectionLike,
        side: SourceSide,
        source: asyncio.Transport,
        dest: asyncio.Transport,
        counters: Counters,
        rng: random.Random,
        chain: tuple[ToxicWrapper, ...],
    ) -> None:
        self.conn = conn
        self.side = side
        self.source = source
        self.dest = dest
        self.counters = counters
        self.rng = rng
        self.chain: tuple[ToxicWrapper, ...] = ()
        self.states: dict[ToxicWrapper, _ToxicState] = {}
        self.direct = True
        self.closed = False
        self.finished = False
        self._loop = asyncio.get_running_loop()
        self._queue: deque[Chunk] = deque()
        self._queued = 0
        self._pump: asyncio.Task[None] | None = None
        self._sleepers: set[asyncio.Future[bool]] = set()  # toxics; woken by chain changes
        self._readers: set[asyncio.Future[bool]] = set()  # the idle pump; woken by input
        self._writers: set[asyncio.Future[bool]] = set()  # the pump; woken when dest drains
        self._dest_blocked = False
        self._queue_full = False
        self._source_paused = False
        self._on_write: Callable[[], None] | None = None  # fired once, after the next write
        self._armed_write = self._write_and_notify  # bound once: arming is per request
        side.forward = dest.write
        self.rechain(chain)

    # --- data in ---------------------------------------------------------------------------
    def _set_direct(self, direct: bool) -> None:
        """Enter or leave the fast path: the source's reads go straight to ``dest.write``
        (through ``_write_and_notify`` while a callback is armed)."""
        self.direct = direct
        if not direct:
            self.side.forward = self.feed
        elif self._on_write is None:
            self.side.forward = self.dest.write
        else:
            self.side.forward = self._armed_write

    def notify_next_write(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, right after the next bytes are written to the destination."""
        if self.closed:
            return
        self._on_write = callback
        if self.direct:
            self.side.forward = self._armed_write

    def _write_and_notify(self, data: bytes) -> None:
        """The fast path while a callback is armed: write, then disarm and call it."""
        self.dest.write(data)
        # installed only while direct, open and armed (every change of those swaps it out)
        callback, self._on_write = self._on_write, None
        self.side.forward = self.dest.write
        if callback is not None:
            callback()

    def _notify(self) -> None:
        callback, self._on_write = self._on_write, None
        if self.direct and not self.closed:
            self.side.forward = self.dest.write
        if callback is not None:
            callback()

    def feed(self, data: bytes) -> None:
        """A read while toxics are active: queue it (in chunks) for the pump."""
        self.counters.piped_in += len(data)
        now = time.monotonic()
        for start in range(0, len(data), CHUNK_SIZE):
            self._queue.append(Chunk(data[start : start + CHUNK_SIZE], now))
        self._queued += len(data)
        if self._queued > QUEUE_HIGH and not self._queue_full:
            self._queue_full = True
            self._update_reading()
        _wake(self._readers)

    def feed_eof(self) -> None:
        if self.direct:
            self._deliver_eof()
        else:
            self._queue.append(Chunk(b"", time.monotonic(), eof=True))
            _wake(self._readers)

    def set_dest_blocked(self, blocked: bool) -> None:
        self._dest_blocked = blocked
        self._update_reading()
        if not blocked:
            _wake(self._writers)

    def _update_reading(self) -> None:
        paused = self._dest_blocked or self._queue_full
        if paused != self._source_paused and not self.source.is_closing():
            self._source_paused = paused
            if paused:
                self.source.pause_reading()
            else:
                self.source.resume_reading()

    # --- the chain -------------------------------------------------------------------------
    def rechain(
        self,
        chain: tuple[ToxicWrapper, ...],
        removed: ToxicWrapper | None = None,
        updated: ToxicWrapper | None = None,
        reroll: bool = False,
    ) -> None:
        """Apply a change of the toxic chain now; never waits on data flow."""
        if self.closed:
            return
        self.chain = chain
        for wrapper in chain:
            if wrapper not in self.states:
                self._start(wrapper, _ToxicState(active=self._roll(wrapper)))
        if removed is not None and (state := self.states.pop(removed, None)) is not None:
            self._stop(removed, state)
        if updated is not None and (state := self.states.get(updated)) is not None:
            if reroll:
                self._stop(updated, state)
                self._start(updated, _ToxicState(active=self._roll(updated), state=state.state))
            elif state.active and isinstance(updated.toxic, Attaching):
                updated.toxic.attach(_Stub(self, updated, state, frozenset()))
        _wake(self._sleepers)
        _wake(self._readers)
        if self.direct and not self.closed and self._has_active():
            self._set_direct(False)
            self._pump = self._loop.create_task(self._run_pump())

    def _roll(self, wrapper: ToxicWrapper) -> bool:
        return self.rng.random() < wrapper.toxicity

    def _start(self, wrapper: ToxicWrapper, state: _ToxicState) -> None:
        self.states[wrapper] = state
        if state.active and isinstance(wrapper.toxic, Attaching):
            wrapper.toxic.attach(_Stub(self, wrapper, state, frozenset()))

    def _stop(self, wrapper: ToxicWrapper, state: _ToxicState) -> None:
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        if state.active and isinstance(wrapper.toxic, Cleanup):
            wrapper.toxic.cleanup(_Stub(self, wrapper, state, frozenset()))

    def _has_active(self) -> bool:
        return any(self.states[w].active for w in self.chain if w in self.states)

    # --- the pump --------------------------------------------------------------------------
    async def _run_pump(self) -> None:
        try:
            while not self.closed:
                if not self._queue:
                    if not self._has_active():
                        self._set_direct(True)
                        return
                    await self._wait(self._readers, math.inf)
                    continue
                chunk = self._queue.popleft()
                self._queued -= len(chunk.data)
                if self._queue_full and self._queued <= QUEUE_LOW:
                    self._queue_full = False
                    self._update_reading()
                await self.through(chunk, frozenset())
        except Exception:
            log.exception("toxic pipeline failed; closing the connection")
            self.conn.close()
        finally:
            self._pump = None

    async def through(self, chunk: Chunk, applied: frozenset[ToxicWrapper]) -> None:
        """Run a chunk through the toxics it has not passed yet, then to the destination."""
        for wrapper in self.chain:
            if wrapper in applied:
                continue
            state = self.states.get(wrapper)
            if state is None or not state.active:
                continue
            await wrapper.toxic.pipe(chunk, _Stub(self, wrapper, state, applied | {wrapper}))
            return
        await self._deliver(chunk)

    async def _deliver(self, chunk: Chunk) -> None:
        if self.closed or self.finished:
            return
        if chunk.eof:
            self._deliver_eof()
            return
        if chunk.data:
            self.dest.write(chunk.data)
            self.counters.piped_out += len(chunk.data)
            if self._on_write is not None:
                self._notify()
            while self._dest_blocked and not self.closed:
                await self._wait(self._writers, math.inf)

    def _deliver_eof(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.dest.can_write_eof() and not self.dest.is_closing():
            self.dest.write_eof()
        self.conn.link_finished()

    def _discard(self, data: bytes) -> None:
        """A read after the connection closed: counted as received, never sent."""
        self.counters.piped_in += len(data)

    # --- waiting ---------------------------------------------------------------------------
    async def _wait(self, waiters: set[asyncio.Future[bool]], delay: float) -> bool:
        """True when ``delay`` passed; False when woken early through ``waiters``."""
        fut: asyncio.Future[bool] = self._loop.create_future()
        waiters.add(fut)
        handle = None if math.isinf(delay) else self._loop.call_later(delay, _resolve, fut, True)
        try:
            return await fut
        finally:
            waiters.discard(fut)
            if handle is not None:
                handle.cancel()

    async def sleep_until(self, deadline: float) -> bool:
        while not self.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            if not await self._wait(self._sleepers, remaining):
                return False
        return False

    def shutdown(self) -> None:
        """The connection is closing: stop timers, wake everything so the pump exits."""
        if self.closed:
            return
        self.closed = True
        self._on_write = None
        self.side.forward = self._discard
        for state in self.states.values():
            if state.timer is not None:
                state.timer.cancel()
        self.states.clear()
        self._queue.clear()
        for waiters in (self._sleepers, self._readers, self._writers):
            _wake(waiters)


class _Stub:
    """What a toxic sees of a link while it handles one chunk (see toxics.Stub)."""

    __slots__ = ("_applied", "_link", "_state", "_wrapper", "rng", "state")

    def __init__(
        self,
        link: Link,
        wrapper: ToxicWrapper,
        state: _ToxicState,
        applied: frozenset[ToxicWrapper],
    ) -> None:
        self._link = link
        self._wrapper = wrapper
        self._state = state
        self._applied = applied
        self.rng = link.rng
        self.state = state.state

    @property
    def alive(self) -> bool:
        link = self._link
        return (
            not link.closed and link.states.get(self._wrapper) is self._state and self._state.active
        )

    def now(self) -> float:
        return time.monotonic()

    async def emit(self, chunk: Chunk) -> None:
        await self._link.through(chunk, self._applied)

    async def sleep_until(self, deadline: float) -> bool:
        return await self._link.sleep_until(deadline)

    def set_timer(self, delay_s: float | None, callback: Callable[[], None]) -> None:
        if self._state.timer is not None:
            self._state.timer.cancel()
        self._state.timer = None
        if delay_s is not None and self.alive:
            self._state.timer = asyncio.get_running_loop().call_later(delay_s, callback)

    def close(self) -> None:
        self._link.conn.close()

    def reset(self) -> None:
        self._link.conn.close(reset=True)
