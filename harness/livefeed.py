"""The live page's feed: the run's per-second rows, samples and events, pushed as they land.

    watch loop ── requests.jsonl rows (RequestsTail) ──> LiveFeed.publish_row ──┐
               └─ sampler.latest ─────────────────────> LiveFeed.publish_sample ─┤ one bounded
    _EventLog.write/emit (faults, load, phases) ──────> LiveFeed.publish_event ──┤ log, a seq each
    the run's end ────────────────────────────────────> LiveFeed.close(status) ──┘
                                                              │
    GET /stream (harness/control.py) <── wait(after_seq) ─────┘  server-sent events

The page draws from the same rows the run writes to disk, compacted to what it charts
(`compact_row`, `compact_sample`). Each message is serialised once, whatever the number of
open pages. The log keeps the newest MAX_MESSAGES (a page opened late gets the history it
can draw, then every new message); `wait` blocks a reader until something newer arrives, the
feed closes, or its timeout passes.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spikegate.contract.outcomes import ADMITTED, ADMITTED_OUTCOMES

__all__ = [
    "MAX_MESSAGES",
    "LiveFeed",
    "Message",
    "compact_row",
    "compact_sample",
    "sse",
]

MAX_MESSAGES = 4000  # about half an hour of rows and samples, with the events beside them


@dataclass(frozen=True)
class Message:
    seq: int
    kind: str  # hello | row | sample | event | end
    data: str  # JSON, serialised once


def sse(msg: Message, *, with_id: bool = True) -> bytes:
    """One server-sent event; `hello` goes without an id so a reconnect resumes after the
    last numbered message."""
    head = f"id: {msg.seq}\n" if with_id else ""
    return f"{head}event: {msg.kind}\ndata: {msg.data}\n\n".encode()


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def compact_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A requests.jsonl row as the page charts it: offered, sent, admitted, each outcome,
    admitted p50/p99 and rejected p99. `admitted` is the recorder's own decision count when it
    has one, else the reference target's admitted outcomes."""
    outcomes = {str(k): int(v) for k, v in (row.get("outcomes") or {}).items() if _num(v)}
    decisions = row.get("decisions") or {}
    admitted = _num(decisions.get(ADMITTED)) if isinstance(decisions, Mapping) else None
    if admitted is None:
        admitted = sum(outcomes.get(k, 0) for k in ADMITTED_OUTCOMES)
    return {
        "t": row.get("t"),
        "intended": row.get("intended"),
        "sent": row.get("sent"),
        "admitted": int(admitted),
        "outcomes": outcomes,
        "admitted_p50_ms": _num(row.get("admitted_p50_ms")),
        "admitted_p99_ms": _num(row.get("admitted_p99_ms")),
        "rejected_p99_ms": _num(row.get("rejected_p99_ms")),
    }


def compact_sample(
    sample: Mapping[str, Any], prev: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A samples.jsonl row as the page charts it: in-flight against the limit, queue depth
    against its cap, each breaker's state, and the request rate the target counted since
    `prev` (None without two samples). A user's service's gauges land in the same fields
    (harness/mapped_metrics.py)."""
    impressions = sample.get("impressions") or {}
    breakers = sample.get("breakers") or {}
    return {
        "t": sample.get("t"),
        "inflight": _num(sample.get("auction_inflight")),
        "limit": _num(sample.get("auction_limit")),
        "queue_depth": _num(sample.get("queue_depth")),
        "queue_cap": _num(sample.get("queue_max_depth"))
        if "queue_max_depth" in sample
        else _num(impressions.get("queue_max_depth")),
        "breakers": {str(k): str(v) for k, v in breakers.items()}
        if isinstance(breakers, Mapping)
        else {},
        "target_rps": _target_rps(prev, sample),
    }


def _target_rps(prev: Mapping[str, Any] | None, cur: Mapping[str, Any]) -> float | None:
    if prev is None:
        return None
    a, b = prev.get("requests_total"), cur.get("requests_total")
    ta, tb = _num(prev.get("t")), _num(cur.get("t"))
    if not isinstance(a, Mapping) or not isinstance(b, Mapping) or ta is None or tb is None:
        return None
    if tb <= ta:
        return None
    return round(max(0.0, _served(b) - _served(a)) / (tb - ta), 3)


def _served(counters: Mapping[str, Any]) -> float:
    """Requests counted by the target, its own /metrics scrapes left out."""
    return sum(
        n
        for k, v in counters.items()
        if (n := _num(v)) is not None and not k.startswith("/metrics")
    )


class LiveFeed:
    """A bounded, thread-safe log of the live page's messages; readers wait on it."""

    def __init__(self, *, max_messages: int = MAX_MESSAGES) -> None:
        self._log: deque[Message] = deque(maxlen=max_messages)
        self._cond = threading.Condition()
        self._seq = 0
        self._hello: dict[str, Any] = {}
        self._closed: Message | None = None

    # -- writers -------------------------------------------------------------------------------
    def set_hello(self, **fields: Any) -> None:
        """What every new reader gets first (the run, base rate, limits); merged."""
        with self._cond:
            self._hello.update(fields)

    def publish(self, kind: str, data: Mapping[str, Any]) -> None:
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
        with self._cond:
            if self._closed is not None:
                return
            self._seq += 1
            self._log.append(Message(self._seq, kind, text))
            self._cond.notify_all()

    def publish_row(self, row: Mapping[str, Any]) -> None:
        self.publish("row", compact_row(row))

    def publish_sample(
        self, sample: Mapping[str, Any], prev: Mapping[str, Any] | None = None
    ) -> None:
        self.publish("sample", compact_sample(sample, prev))

    def publish_event(self, row: Mapping[str, Any]) -> None:
        self.publish("event", row)

    def close(self, status: str, t: float | None = None) -> None:
        """The run ended: readers get `end` and no message after it; idempotent."""
        with self._cond:
            if self._closed is not None:
                return
            self._seq += 1
            data = json.dumps({"status": status, "t": t}, sort_keys=True)
            self._closed = Message(self._seq, "end", data)
            self._cond.notify_all()

    # -- readers -------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed is not None

    @property
    def last_seq(self) -> int:
        with self._cond:
            return self._seq

    def hello(self, t: float | None = None) -> Message:
        with self._cond:
            data = {**self._hello, "t": t}
            return Message(0, "hello", json.dumps(data, sort_keys=True, default=str))

    def after(self, seq: int) -> list[Message]:
        """Every kept message newer than `seq` (the end last, once the feed is closed)."""
        with self._cond:
            return self._after(seq)

    def wait(self, seq: int, timeout: float) -> list[Message]:
        """The messages newer than `seq`, waiting up to `timeout` s for one; [] on timeout."""
        with self._cond:
            out = self._after(seq)
            if not out:
                self._cond.wait(timeout)
                out = self._after(seq)
            return out

    def _after(self, seq: int) -> list[Message]:
        out: list[Message] = []
        if self._log and self._log[-1].seq > seq:
            # the kept messages have consecutive seqs: slice from the first one newer than seq
            start = max(0, seq - self._log[0].seq + 1)
            out = list(itertools.islice(self._log, start, None))
        if self._closed is not None and self._closed.seq > seq:
            out.append(self._closed)
        return out
