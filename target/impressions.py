"""The impression logger: acknowledge fast, shed when Kafka cannot keep up, never lose an ack.

    POST /impression --> offer() --[SHED]--> 503 + Retry-After   (no Kafka I/O on this path)
                           | ADMIT (= acknowledged, 202)
                           v
                    [ ShedQueue: depth cap / threshold / CoDel ]
                           | workers (batches)
                           v
                    aiokafka producer (acks=all) --retry with backoff until confirmed--> Kafka
                           |
          stop(): flush within the bound, spool the unconfirmed rest (JSON lines, fsync'd)
          start(): replay the spool first, drop it only once Kafka confirmed every entry

Delivery is at-least-once: the embedded broker rejects the idempotent producer, and a record
whose acknowledgement was lost is sent again. Every impression carries a unique
`impression_id` (also the record key), so whoever counts reads ids, not records. An item is
counted delivered only when its send future resolved.

The spool holds what Kafka had not confirmed when the logger stopped; it is written only at
`stop()` (a SIGKILLed process loses what was queued — graceful shutdown is the contract).
One logger per `spool_dir` and topic: an advisory lock (fcntl) enforces it.

aiokafka's errors are translated at one boundary (`_send_once`): any failure of a send is a
retry, never an exception out of a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from spikegate.target.backpressure.clock import Clock, monotonic_ns
from spikegate.target.backpressure.decision import SHED, Decision
from spikegate.target.backpressure.shedder import (
    SHED_CODEL,
    SHED_QUEUE_FULL,
    LoadShedder,
    ShedDecision,
    ShedQueue,
)

__all__ = ["SHED_STOPPING", "ImpressionLogger", "ImpressionLoggerSettings"]

log = logging.getLogger(__name__)

SHED_STOPPING = "stopping"
"""Sub-reason: the logger is shutting down and acknowledges nothing more."""

_Record = tuple[bytes, bytes]  # (key = impression_id, value = the JSON document)
_SEND_ERRORS = (KafkaError, OSError, asyncio.TimeoutError)


class ImpressionLoggerSettings(BaseModel):
    """The `[impressions]` section of the target config (the shedder's switch included)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        True,
        description="Load shedding on. Off (ablation): unbounded queue, nothing is ever shed.",
    )
    max_depth: int = Field(10_000, ge=1, le=10_000_000, description="Hard cap on queued items.")
    threshold: int | None = Field(
        None, ge=1, description="Seed rule: shed when the queue would exceed this depth."
    )
    codel: bool = Field(True, description="CoDel shedding on sojourn time.")
    target_ms: float = Field(5.0, gt=0, description="CoDel target sojourn.")
    interval_ms: float = Field(100.0, gt=0, le=60_000, description="CoDel interval.")
    workers: int = Field(2, ge=1, le=64, description="Concurrent producer workers.")
    batch_size: int = Field(500, ge=1, le=100_000, description="Items a worker takes at once.")
    linger_ms: int = Field(2, ge=0, le=10_000, description="aiokafka linger_ms.")
    flush_timeout_s: float = Field(5.0, gt=0, le=600, description="Bound of stop()'s flush.")
    spool_dir: Path = Field(Path(".spikegate/spool"), description="Where stop() spools.")
    topic: str = Field("impressions", min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    request_timeout_ms: int = Field(5_000, ge=100, le=300_000, description="aiokafka timeout.")
    retry_backoff_ms: int = Field(100, ge=1, le=60_000, description="First retry delay.")
    max_retry_backoff_ms: int = Field(2_000, ge=1, le=300_000, description="Retry delay cap.")
    client_id: str = Field("spikegate-impressions", min_length=1)

    @model_validator(mode="after")
    def _check_relations(self) -> ImpressionLoggerSettings:
        if self.threshold is not None and self.threshold > self.max_depth:
            raise ValueError(
                f"threshold ({self.threshold}) must be <= max_depth ({self.max_depth})"
            )
        if self.target_ms >= self.interval_ms:
            raise ValueError(
                f"target_ms ({self.target_ms}) must be < interval_ms ({self.interval_ms})"
            )
        if self.retry_backoff_ms > self.max_retry_backoff_ms:
            raise ValueError(
                f"retry_backoff_ms ({self.retry_backoff_ms}) must be <= "
                f"max_retry_backoff_ms ({self.max_retry_backoff_ms})"
            )
        return self


class ImpressionLogger:
    """Bounded, shedding impression queue drained to Kafka by background workers.

    `stats()` keys: queue_depth, queue_max_depth (inf when shedding is off), last_sojourn_s,
    head_age_s, shedding, dequeue_rate, accepted, shed_queue_full, shed_codel, shed_stopping,
    delivered, delivery_errors, retries, inflight, spooled, replayed, replay_pending,
    spool_corrupt, kafka_up.
    """

    def __init__(
        self,
        settings: ImpressionLoggerSettings,
        *,
        bootstrap: str,
        clock: Clock = monotonic_ns,
    ) -> None:
        if not isinstance(settings, ImpressionLoggerSettings):
            raise ValueError(
                f"settings must be an ImpressionLoggerSettings, got {type(settings).__name__}"
            )
        if not isinstance(bootstrap, str) or not bootstrap.strip():
            raise ValueError(f"bootstrap must be 'host:port[,host:port...]', got {bootstrap!r}")
        self.settings = settings
        self.bootstrap = bootstrap
        if settings.enabled:
            shedder = LoadShedder(
                settings.max_depth,
                threshold=settings.threshold,
                codel=settings.codel,
                target_s=settings.target_ms / 1000,
                interval_s=settings.interval_ms / 1000,
                clock=clock,
            )
        else:  # ablation: the queue grows without bound and nothing is shed
            shedder = LoadShedder(sys.maxsize, clock=clock)
        self._queue: ShedQueue[_Record] = ShedQueue(shedder)
        self._spool_path = settings.spool_dir / f"{settings.topic}.jsonl"
        self._lock_file: IO[bytes] | None = None
        self._producer: AIOKafkaProducer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: dict[int, list[_Record]] = {}
        self._replay_pending: list[_Record] = []
        self._spool_loaded = False
        self._ready = asyncio.Event()
        self._progress = asyncio.Event()  # a batch finished: stop() re-checks the flush
        self._started = False
        self._stopping = False
        self._stopped = False
        self._failing = False
        self._kafka_up = False
        self._stopping_decision = ShedDecision(False, SHED, 1.0, SHED_STOPPING)
        self._last_shed_cause: str | None = None
        self._counts = {
            "accepted": 0,
            SHED_STOPPING: 0,
            "delivered": 0,
            "delivery_errors": 0,
            "retries": 0,
            "spooled": 0,
            "replayed": 0,
            "spool_corrupt": 0,
        }

    # -- the request path -------------------------------------------------------------------

    def offer(self, impression: dict[str, Any]) -> Decision:
        """Acknowledge (ADMIT: answer 202) or shed (SHED: 503 + Retry-After). No Kafka I/O.

        A shed decision's `detail` is its sub-reason: "queue_full", "codel" or "stopping".

        Raises ValueError when `impression` has no string `impression_id` or is not JSON.
        """
        if self._stopping:
            self._counts[SHED_STOPPING] += 1
            self._last_shed_cause = SHED_STOPPING
            return self._stopping_decision
        record = _encode(impression)
        decision = self._queue.offer(record)
        if decision.admitted:
            self._counts["accepted"] += 1
        else:
            self._last_shed_cause = decision.detail
        return decision

    @property
    def last_shed_cause(self) -> str | None:
        """Sub-reason of the latest SHED from offer(): "queue_full", "codel" or "stopping"."""
        return self._last_shed_cause

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the spool, then connect and replay it in the background, then run workers.

        Returns at once: a Kafka that is down at start delays delivery, never the caller.
        Raises RuntimeError if another logger holds the same spool.
        """
        if self._started:
            raise RuntimeError("ImpressionLogger.start() was already called")
        self._started = True
        await asyncio.to_thread(self._lock_spool)
        records, corrupt = await asyncio.to_thread(_read_spool, self._spool_path)
        self._replay_pending = records
        self._counts["spool_corrupt"] += corrupt
        self._spool_loaded = True
        if records:
            log.info("replaying %d spooled impressions from %s", len(records), self._spool_path)
        self._tasks.append(asyncio.create_task(self._connect_and_replay(), name="impr-connect"))
        for idx in range(self.settings.workers):
            self._tasks.append(asyncio.create_task(self._worker(idx), name=f"impr-worker-{idx}"))

    async def wait_ready(self, timeout_s: float) -> bool:
        """True once connected to Kafka and the spool is replayed; False after `timeout_s`."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def stop(self, timeout_s: float | None = None) -> None:
        """Flush for at most `timeout_s` (default flush_timeout_s); spool what is unconfirmed.

        After stop(), offer() sheds with the sub-reason "stopping". Idempotent.
        """
        if self._stopping:
            return
        self._stopping = True
        timeout = self.settings.flush_timeout_s if timeout_s is None else timeout_s
        if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout >= 0):
            raise ValueError(f"timeout_s must be a finite number >= 0, got {timeout_s!r}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Keep a slice of the bound for spooling and closing the producer.
        flush_deadline = deadline - min(1.0, timeout / 4)
        try:
            while self._tasks and not self._flushed():
                left = flush_deadline - loop.time()
                if left <= 0:
                    break
                self._progress.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._progress.wait(), left)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks.clear()
            unconfirmed = list(self._replay_pending)
            for batch in self._inflight.values():
                unconfirmed.extend(batch)
            self._inflight.clear()
            unconfirmed.extend(self._queue.drain_nowait())
            await asyncio.to_thread(self._write_spool, unconfirmed)
            self._replay_pending = []
            self._counts["spooled"] += len(unconfirmed)
            if unconfirmed:
                log.warning("spooled %d unconfirmed impressions to %s", len(unconfirmed),
                            self._spool_path)  # fmt: skip
            await self._close_producer(max(0.2, deadline - loop.time()), abort=bool(unconfirmed))
        finally:
            self._unlock_spool()
            self._stopped = True

    # -- observability ----------------------------------------------------------------------

    def stats(self) -> dict[str, float]:
        """Counters and gauges for /metrics (see the class docstring for the keys)."""
        q = self._queue
        shedder = q.shedder
        counts = self._counts
        return {
            "queue_depth": float(q.depth),
            "queue_max_depth": float(q.max_depth) if self.settings.enabled else math.inf,
            "last_sojourn_s": q.last_sojourn_s,
            "head_age_s": q.head_age_s,
            "shedding": 1.0 if q.shedding else 0.0,
            "dequeue_rate": shedder.dequeue_rate or 0.0,
            "accepted": float(counts["accepted"]),
            "shed_queue_full": float(shedder.shed_counts[SHED_QUEUE_FULL]),
            "shed_codel": float(shedder.shed_counts[SHED_CODEL]),
            "shed_stopping": float(counts[SHED_STOPPING]),
            "delivered": float(counts["delivered"]),
            "delivery_errors": float(counts["delivery_errors"]),
            "retries": float(counts["retries"]),
            "inflight": float(sum(len(b) for b in self._inflight.values())),
            "spooled": float(counts["spooled"]),
            "replayed": float(counts["replayed"]),
            "replay_pending": float(len(self._replay_pending)),
            "spool_corrupt": float(counts["spool_corrupt"]),
            "kafka_up": 1.0 if self._kafka_up else 0.0,
        }

    # -- background work --------------------------------------------------------------------

    def _flushed(self) -> bool:
        return (
            self._ready.is_set()
            and self._queue.depth == 0
            and not self._replay_pending
            and not any(self._inflight.values())
        )

    async def _connect_and_replay(self) -> None:
        attempt = 0
        # `_stopping` ends the retries even when a cancel from stop() is swallowed on its way
        # (aiokafka's producer.stop() can absorb one): stop() then never waits on a retry loop
        while self._producer is None and not self._stopping:
            producer = self._make_producer()
            try:
                await asyncio.wait_for(
                    self._start_producer(producer), self.settings.request_timeout_ms / 1000 + 1.0
                )
            except Exception as exc:  # any start failure is a retry, never a crash
                self._kafka_up = False
                attempt += 1
                if attempt == 1:
                    log.warning("Kafka at %s unreachable, retrying: %s", self.bootstrap, exc)
                await _stop_producer(producer, 1.0)
                await asyncio.sleep(self._backoff_s(attempt))
                continue
            self._producer = producer
            self._kafka_up = True
        if self._producer is None:  # stopped before Kafka was reached
            return
        if self._replay_pending:
            size = self.settings.batch_size
            while self._replay_pending:
                chunk = self._replay_pending[:size]
                await self._deliver(chunk, on_confirmed=self._confirm_replayed)
            await asyncio.to_thread(_remove_file, self._spool_path)
        self._ready.set()
        self._progress.set()

    async def _start_producer(self, producer: AIOKafkaProducer) -> None:
        await producer.start()
        # Fetch the topic's metadata now (Tansu auto-creates it on this request), so the
        # first batches do not stall on it and look like a standing queue to CoDel.
        await producer.partitions_for(self.settings.topic)

    def _confirm_replayed(self, records: list[_Record]) -> None:
        done = {id(r) for r in records}
        self._replay_pending = [r for r in self._replay_pending if id(r) not in done]
        self._counts["replayed"] += len(records)

    async def _worker(self, idx: int) -> None:
        await self._ready.wait()
        queue = self._queue
        size = self.settings.batch_size
        while True:
            batch = [await queue.get()]
            while len(batch) < size and queue.depth:
                batch.append(queue.get_nowait())
            self._inflight[idx] = batch
            await self._deliver(batch, slot=idx)
            self._inflight[idx] = []
            self._progress.set()

    async def _deliver(
        self,
        records: list[_Record],
        *,
        slot: int | None = None,
        on_confirmed: Callable[[list[_Record]], None] | None = None,
    ) -> None:
        """Send `records` until Kafka confirmed every one (retrying with backoff)."""
        pending = records
        attempt = 0
        while pending:
            failed = await self._send_once(pending)
            confirmed = len(pending) - len(failed)
            if confirmed:
                self._counts["delivered"] += confirmed
                if on_confirmed is not None:
                    failed_ids = {id(r) for r in failed}
                    on_confirmed([r for r in pending if id(r) not in failed_ids])
            if not failed:
                if self._failing:
                    log.info("Kafka delivery recovered")
                self._failing = False
                self._kafka_up = True
                return
            self._kafka_up = False
            self._counts["retries"] += len(failed)
            attempt += 1
            pending = failed
            if slot is not None:
                self._inflight[slot] = pending
            await asyncio.sleep(self._backoff_s(attempt))

    async def _send_once(self, records: list[_Record]) -> list[_Record]:
        """One attempt at every record; returns those Kafka did not confirm. The boundary
        where aiokafka's errors become retries."""
        producer = self._producer
        assert producer is not None
        topic = self.settings.topic
        futures: list[asyncio.Future[Any]] = []
        failed: list[_Record] = []
        error: BaseException | None = None
        for n, (key, value) in enumerate(records):
            try:
                futures.append(await producer.send(topic, value=value, key=key))
            except _SEND_ERRORS as exc:
                error = exc
                failed = records[n:]
                break
        results = await asyncio.gather(*futures, return_exceptions=True)
        for record, result in zip(records, results, strict=False):
            if isinstance(result, BaseException):
                error = result
                failed.append(record)
        if error is not None:
            self._counts["delivery_errors"] += 1
            if not self._failing:
                log.warning("Kafka delivery failed, retrying until confirmed: %r", error)
            self._failing = True
        return failed

    def _backoff_s(self, attempt: int) -> float:
        s = self.settings
        delay_ms = min(s.max_retry_backoff_ms, s.retry_backoff_ms * 2 ** min(attempt - 1, 30))
        return float(delay_ms) / 1000

    def _make_producer(self) -> AIOKafkaProducer:
        s = self.settings
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=s.client_id,
            acks="all",
            enable_idempotence=False,  # Tansu answers InitProducerId with an error
            linger_ms=s.linger_ms,
            request_timeout_ms=s.request_timeout_ms,
            retry_backoff_ms=s.retry_backoff_ms,
        )

    async def _close_producer(self, timeout_s: float, *, abort: bool = False) -> None:
        producer, self._producer = self._producer, None
        self._kafka_up = False
        if producer is not None:
            await _stop_producer(producer, timeout_s, abort=abort)

    # -- the spool --------------------------------------------------------------------------

    def _lock_spool(self) -> None:
        self.settings.spool_dir.mkdir(parents=True, exist_ok=True)
        lock_path = self.settings.spool_dir / f".{self.settings.topic}.lock"
        handle = open(lock_path, "ab")  # noqa: SIM115 - held until stop()
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            raise RuntimeError(
                f"spool {self._spool_path} is in use by another impression logger; "
                f"give each logger its own spool_dir"
            ) from exc
        self._lock_file = handle

    def _unlock_spool(self) -> None:
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def _write_spool(self, records: list[_Record]) -> None:
        path = self._spool_path
        if not self._spool_loaded:
            # Never started: the file (if any) holds entries nobody replayed; keep them.
            if records:
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "ab") as fh:
                    fh.writelines(value + b"\n" for _, value in records)
                    fh.flush()
                    os.fsync(fh.fileno())
                _fsync_dir(path.parent)
            return
        if not records:
            _remove_file(path)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as fh:
            fh.writelines(value + b"\n" for _, value in records)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)


# -- helpers ---------------------------------------------------------------------------------


def _encode(impression: dict[str, Any]) -> _Record:
    if not isinstance(impression, dict):
        raise ValueError(f"impression must be a dict, got {type(impression).__name__}")
    impression_id = impression.get("impression_id")
    if not isinstance(impression_id, str) or not impression_id:
        raise ValueError("impression must have a non-empty string 'impression_id'")
    try:
        value = json.dumps(impression, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"impression is not JSON-serializable: {exc}") from exc
    return impression_id.encode(), value.encode()


def _read_spool(path: Path) -> tuple[list[_Record], int]:
    """The spooled records (a torn or foreign line is skipped and counted, not fatal)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    records: list[_Record] = []
    corrupt = 0
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            records.append(_encode(json.loads(line)))
        except ValueError:
            corrupt += 1
    if corrupt:
        log.warning("skipped %d unreadable lines in spool %s", corrupt, path)
    return records, corrupt


def _remove_file(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def _stop_producer(
    producer: AIOKafkaProducer, timeout_s: float, *, abort: bool = False
) -> None:
    """Close `producer` within `timeout_s`.

    `abort`: the caller has spooled everything unconfirmed, so the producer's buffered
    batches are failed instead of flushed and its connections dropped first; otherwise
    aiokafka's stop() waits for a stalled broker until the requests time out.
    """
    if abort:
        _fail_buffered(producer)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.client.close(), 1.0)
    try:
        await asyncio.wait_for(producer.stop(), timeout_s)
    except Exception as exc:
        log.debug("producer stop did not finish in %.1f s: %r", timeout_s, exc)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.client.close(), 1.0)


def _fail_buffered(producer: AIOKafkaProducer) -> None:
    """Fail every batch the producer still buffers (aiokafka has no public abort).

    Reaches into aiokafka's accumulator, so every step tolerates its absence; the futures'
    exceptions are marked retrieved (the workers that awaited them are gone), which keeps
    "Future exception was never retrieved" out of the log.
    """
    accumulator: Any = getattr(producer, "_message_accumulator", None)
    if accumulator is None:
        return
    try:
        batches = [b for bs in accumulator._batches.values() for b in bs]
        batches += list(accumulator._pending_batches)
        accumulator.fail_all(KafkaError("impression logger stopped; records were spooled"))
    except Exception as exc:
        log.debug("could not fail the producer's buffered batches: %r", exc)
        return
    for batch in batches:
        futures = [getattr(batch, "future", None), getattr(batch, "_drain_waiter", None)]
        futures += [f for f, _ in getattr(batch, "_msg_futures", ())]
        for fut in futures:
            if isinstance(fut, asyncio.Future) and fut.done() and not fut.cancelled():
                fut.exception()
