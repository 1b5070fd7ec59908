"""Per-second aggregation of the generator's requests into requests.jsonl rows (no locust).

    send greenlet --record()--> SecondStats[s]  (s = floor(intended send - t0))
                                     |  complete once no request of s can still finish
                                     v
    single process:  Recorder.complete() -> seal() -> row() -> requests.jsonl
    workers:         Recorder.complete() -> seal() -> wire() --report_to_master-->
    master:          Merger.add() -> Merger.ready() -> row() -> requests.jsonl

The hot path (`record`) only bumps counters: latencies are kept as {quantized us: count}
(9 significant bits, <= 0.2% error) and become HdrHistograms once a second, when a second
is sealed. Row fields are those of spikegate/contract/rundir.py (RequestRow).

Two producers fill a second:
    the reference target's user (adserver.py):  record() per request, by endpoint/publisher
    the user's own locustfile (user.py):         record_request() per request Locust reports,
                                                 by request name (at most NAMES_CAP names a
                                                 process, the rest under OTHER_NAME), plus
                                                 the arrivals (tasks) of the open model
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Any

from hdrh.histogram import HdrHistogram

from spikegate.contract.outcomes import (
    ADMITTED_OUTCOMES,
    CONN_ERROR,
    DESIGNED_REJECTIONS,
    ERROR_5XX,
    NO_DECISION,
    OK,
    OUTCOMES,
    RATE_LIMITED,
    TIMEOUT,
    OutcomeRules,
    classify,
)
from spikegate.contract.rundir import LATE_BOUNDS_MS

__all__ = [
    "BID",
    "ENDPOINTS",
    "IMPRESSION",
    "LATE_BOUNDS_MS",
    "NAMES_CAP",
    "OTHER_NAME",
    "Merger",
    "Recorder",
    "SecondStats",
    "classify",
    "classify_response",
    "is_timeout",
    "quantize_us",
    "valid_retry_after",
]

ENDPOINTS = ("bid", "impression")
BID, IMPRESSION = 0, 1
_NO_PUBLISHER = [0, 0, 0]  # scratch counts for requests not metered per publisher
OUTCOME_INDEX = {name: i for i, name in enumerate(OUTCOMES)}
_N = len(OUTCOMES)
_ADMITTED = frozenset(OUTCOME_INDEX[o] for o in ADMITTED_OUTCOMES)
_REJECTED = frozenset(OUTCOME_INDEX[o] for o in DESIGNED_REJECTIONS)
_RATE_LIMITED = OUTCOME_INDEX[RATE_LIMITED]
HIST_LOWEST_US = 1
HIST_HIGHEST_US = 600_000_000  # 10 min: above any client timeout
HIST_DIGITS = 3
_KEEP_BITS = 9
# send lateness is counted per second between LATE_BOUNDS_MS (the contract's): counts add
# exactly across processes and workers, which a per-process maximum or percentile cannot
_LATE_BOUNDS_S = tuple(b / 1000.0 for b in LATE_BOUNDS_MS)
_LATE_SLOTS = len(LATE_BOUNDS_MS) + 1  # slot i: bounds[i-1] < late <= bounds[i]; last: above all
NAMES_CAP = 100  # distinct request names a row keeps; the rest are summed under OTHER_NAME
OTHER_NAME = "(other)"


def quantize_us(value: int) -> int:
    """`value` rounded to its 9 most significant bits (bucket midpoint), as recorded."""
    bits = value.bit_length()
    if bits <= _KEEP_BITS:
        return value
    shift = bits - _KEEP_BITS
    return ((value >> shift) << shift) | (1 << (shift - 1))


def _new_hist() -> HdrHistogram:
    return HdrHistogram(HIST_LOWEST_US, HIST_HIGHEST_US, HIST_DIGITS)


def _hist_from(counts: Mapping[int, int]) -> HdrHistogram | None:
    if not counts:
        return None
    hist = _new_hist()
    for value, n in counts.items():
        hist.record_value(min(max(value, HIST_LOWEST_US), HIST_HIGHEST_US), n)
    return hist


def _pct_ms(hist: HdrHistogram | None, pct: float) -> float | None:
    if hist is None or hist.get_total_count() == 0:
        return None
    return round(float(hist.get_value_at_percentile(pct)) / 1000.0, 3)


def _pct_counts_ms(counts: Mapping[int, int], pct: float) -> float | None:
    """The `pct` percentile of {quantized us: count} in ms (the smallest recorded value with
    at least pct% of the counts at or below it), None when empty."""
    total = sum(counts.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(total * pct / 100.0))
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= rank:
            return round(value / 1000.0, 3)
    return round(max(counts) / 1000.0, 3)  # pragma: no cover - rank <= total


def valid_retry_after(value: object) -> bool:
    """Retry-After as a designed rejection must carry it: integer seconds, at least 1."""
    if isinstance(value, list):  # a repeated header: the last one counts
        value = value[-1] if value else None
    return isinstance(value, str) and value.strip().isdigit() and int(value) >= 1


def classify_response(
    rules: OutcomeRules, response: Any, exception: BaseException | None
) -> tuple[str, str | None, str | None]:
    """(outcome, decision value, Retry-After) of one request Locust reported (user traffic).

    `response` is whatever the user's client put in the request event: requests' or
    geventhttpclient's response (status_code 0 when none came), or None / a non-HTTP object
    from a custom client (then only `exception` tells success from failure). The decision
    is the value of rules.decision_header (None without one). A status keeps its class
    whatever the user's code marked it, except an admitted one marked failed (catch_response
    failure()): error_5xx, the service answered and its answer was wrong."""
    status = getattr(response, "status_code", None) if response is not None else None
    headers = getattr(response, "headers", None) if response is not None else None
    decision = _header(headers, rules.decision_header)
    if status is None:  # not an HTTP response: a custom client firing the event itself
        if exception is None:
            return OK, decision, None
        return (TIMEOUT if is_timeout(exception) else CONN_ERROR), decision, None
    try:
        code = int(status or 0)
    except (TypeError, ValueError):
        code = 0
    if code <= 0:
        error = exception if exception is not None else getattr(response, "error", None)
        return (TIMEOUT if is_timeout(error) else CONN_ERROR), decision, None
    outcome = rules.classify(code, decision)
    if outcome == OK and exception is not None:
        outcome = ERROR_5XX
    retry_after = _header(headers, "Retry-After") if outcome in DESIGNED_REJECTIONS else None
    return outcome, decision, retry_after


def _header(headers: Any, name: str | None) -> str | None:
    if headers is None or not name:
        return None
    try:
        value = headers.get(name)
    except Exception:
        return None
    if isinstance(value, list):  # a repeated header: the last one counts
        value = value[-1] if value else None
    return None if value is None else str(value)


def is_timeout(error: object) -> bool:
    """A client timeout (requests' Timeout, a socket's TimeoutError, gevent's Timeout), also
    when wrapped (`original`, or raised from / while handling one)."""
    for _ in range(5):
        if error is None:
            return False
        if isinstance(error, TimeoutError) or any(
            "Timeout" in c.__name__ for c in type(error).__mro__
        ):
            return True
        if "timed out" in str(error):
            return True
        if not isinstance(error, BaseException):
            return False
        error = getattr(error, "original", None) or error.__cause__ or error.__context__
    return False


class SecondStats:
    """Everything the generator saw for the requests intended in one second."""

    __slots__ = (
        "cpu_percent",
        "cpu_warning",
        "decisions",
        "endpoints",
        "hist_admitted",
        "hist_rejected",
        "intended",
        "lat_admitted",
        "lat_rejected",
        "late_counts",
        "max_lateness_s",
        "names",
        "outcomes",
        "processes",
        "publishers",
        "retry_after_invalid",
        "second",
        "sent",
        "task_counts",
        "tasks_open",
    )

    def __init__(self, second: int) -> None:
        self.second = second
        self.intended = 0
        self.sent = 0
        self.outcomes = [0] * _N
        self.decisions: dict[str, int] = {}
        self.endpoints = ([0] * _N, [0] * _N)
        self.publishers: dict[str, list[int]] = {}  # id -> [sent, admitted, rate_limited]
        self.lat_admitted: dict[int, int] = {}
        self.lat_rejected: dict[int, int] = {}
        self.hist_admitted: HdrHistogram | None = None
        self.hist_rejected: HdrHistogram | None = None
        self.max_lateness_s = 0.0
        self.late_counts = [0] * _LATE_SLOTS  # sends by lateness slot (see LATE_BOUNDS_MS)
        self.cpu_percent: float | None = None
        self.cpu_warning = False
        self.processes = 1
        # designed rejections (429/503 with a decision) without a valid Retry-After
        # (integer seconds >= 1), by outcome
        self.retry_after_invalid: dict[str, int] = {}
        # user traffic: request name -> (counts by outcome, admitted {quantized us: count})
        self.names: dict[str, tuple[list[int], dict[int, int]]] = {}
        # user traffic, open model: arrivals [intended, run, errors, unfinished]
        self.task_counts = [0, 0, 0, 0]
        self.tasks_open = 0  # arrivals of this second still running (not in the row)

    # --- hot path --------------------------------------------------------------------------
    def record(
        self, endpoint: int, publisher: str, outcome: int, decision: str | None, latency_us: int
    ) -> None:
        """One finished request (outcome = index into OUTCOMES)."""
        self.outcomes[outcome] += 1
        self.endpoints[endpoint][outcome] += 1
        key = decision or NO_DECISION
        self.decisions[key] = self.decisions.get(key, 0) + 1
        # per publisher: bid requests only, the ones the edge's token buckets meter
        pub = self.publishers.get(publisher) if endpoint == BID else _NO_PUBLISHER
        if pub is None:
            pub = self.publishers[publisher] = [0, 0, 0]
        pub[0] += 1
        if outcome in _ADMITTED:
            pub[1] += 1
            lat = self.lat_admitted
        elif outcome in _REJECTED:
            if outcome == _RATE_LIMITED:
                pub[2] += 1
            lat = self.lat_rejected
        else:
            return
        q = quantize_us(latency_us)
        lat[q] = lat.get(q, 0) + 1

    def note_late(self, late_s: float) -> None:
        """One arrival sent `late_s` seconds after its scheduled instant."""
        self.late_counts[bisect_left(_LATE_BOUNDS_S, late_s)] += 1
        if late_s > self.max_lateness_s:
            self.max_lateness_s = late_s

    def lateness(self) -> dict[str, Any]:
        """The row's lateness field: {"sends": sends noted, "over_ms": {bound: sends later
        than bound ms}} (zero counts left out)."""
        over: dict[str, int] = {}
        later = 0
        for i in range(len(LATE_BOUNDS_MS) - 1, -1, -1):
            later += self.late_counts[i + 1]
            if later:
                over[str(LATE_BOUNDS_MS[i])] = later
        return {"sends": sum(self.late_counts), "over_ms": dict(reversed(over.items()))}

    def record_request(
        self, name: str, outcome: int, decision: str | None, latency_us: int
    ) -> None:
        """One finished request of the user's own traffic: it was intended and sent in this
        second (the second of the arrival that made it) and has this outcome."""
        self.intended += 1
        self.sent += 1
        self.outcomes[outcome] += 1
        key = decision or NO_DECISION
        self.decisions[key] = self.decisions.get(key, 0) + 1
        entry = self.names.get(name)
        if entry is None:
            entry = self.names[name] = ([0] * _N, {})
        entry[0][outcome] += 1
        if outcome in _ADMITTED:
            q = quantize_us(latency_us)
            lat = self.lat_admitted
            lat[q] = lat.get(q, 0) + 1
            per_name = entry[1]
            per_name[q] = per_name.get(q, 0) + 1
        elif outcome in _REJECTED:
            q = quantize_us(latency_us)
            lat = self.lat_rejected
            lat[q] = lat.get(q, 0) + 1

    def bad_retry_after(self, outcome: int) -> None:
        """A designed rejection came without a usable Retry-After (integer seconds >= 1)."""
        name = OUTCOMES[outcome]
        self.retry_after_invalid[name] = self.retry_after_invalid.get(name, 0) + 1

    def running(self) -> int:
        """Requests sent in this second that have no outcome yet, plus arrivals (tasks of
        the user's own class) of this second still running."""
        return self.sent - sum(self.outcomes) + self.tasks_open

    # --- once a second ---------------------------------------------------------------------
    def seal(self) -> SecondStats:
        """Turn the latency counts into HdrHistograms (once the second is complete)."""
        if self.lat_admitted:
            self.hist_admitted = _hist_from(self.lat_admitted)
            self.lat_admitted = {}
        if self.lat_rejected:
            self.hist_rejected = _hist_from(self.lat_rejected)
            self.lat_rejected = {}
        return self

    def merge(self, other: SecondStats) -> None:
        """Add `other` (same second, another process; both sealed) into this one."""
        self.intended += other.intended
        self.sent += other.sent
        for i in range(_N):
            self.outcomes[i] += other.outcomes[i]
            self.endpoints[0][i] += other.endpoints[0][i]
            self.endpoints[1][i] += other.endpoints[1][i]
        for k, n in other.decisions.items():
            self.decisions[k] = self.decisions.get(k, 0) + n
        for pid, counts in other.publishers.items():
            mine = self.publishers.setdefault(pid, [0, 0, 0])
            for i in range(3):
                mine[i] += counts[i]
        self.hist_admitted = _add(self.hist_admitted, other.hist_admitted)
        self.hist_rejected = _add(self.hist_rejected, other.hist_rejected)
        self.max_lateness_s = max(self.max_lateness_s, other.max_lateness_s)
        for i in range(_LATE_SLOTS):
            self.late_counts[i] += other.late_counts[i]
        if other.cpu_percent is not None:
            self.cpu_percent = max(self.cpu_percent or 0.0, other.cpu_percent)
        self.cpu_warning = self.cpu_warning or other.cpu_warning
        self.processes += other.processes
        for k, n in other.retry_after_invalid.items():
            self.retry_after_invalid[k] = self.retry_after_invalid.get(k, 0) + n
        for name, (counts, lat) in other.names.items():
            _add_name(self.names, name, counts, lat)
        for i in range(4):
            self.task_counts[i] += other.task_counts[i]

    def wire(self) -> dict[str, Any]:
        """A JSON-able copy for report_to_master (sealed; histograms encoded)."""
        return {
            "second": self.second,
            "intended": self.intended,
            "sent": self.sent,
            "outcomes": list(self.outcomes),
            "endpoints": [list(self.endpoints[0]), list(self.endpoints[1])],
            "decisions": dict(self.decisions),
            "publishers": {k: list(v) for k, v in self.publishers.items()},
            "hist_admitted": _encode(self.hist_admitted),
            "hist_rejected": _encode(self.hist_rejected),
            "max_lateness_s": self.max_lateness_s,
            "late_counts": list(self.late_counts),
            "cpu_percent": self.cpu_percent,
            "cpu_warning": self.cpu_warning,
            "processes": self.processes,
            "retry_after_invalid": dict(self.retry_after_invalid),
            "names": {
                k: [list(counts), [[q, n] for q, n in lat.items()]]
                for k, (counts, lat) in self.names.items()
            },
            "tasks": list(self.task_counts),
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> SecondStats:
        s = cls(int(data["second"]))
        s.intended = int(data["intended"])
        s.sent = int(data["sent"])
        s.outcomes = [int(x) for x in data["outcomes"]]
        s.endpoints = (
            [int(x) for x in data["endpoints"][0]],
            [int(x) for x in data["endpoints"][1]],
        )
        s.decisions = {str(k): int(v) for k, v in data["decisions"].items()}
        s.publishers = {str(k): [int(x) for x in v] for k, v in data["publishers"].items()}
        s.hist_admitted = _decode(data["hist_admitted"])
        s.hist_rejected = _decode(data["hist_rejected"])
        s.max_lateness_s = float(data["max_lateness_s"])
        late = data.get("late_counts")  # absent from an older worker: nothing noted
        if late is not None and len(late) == _LATE_SLOTS:
            s.late_counts = [int(x) for x in late]
        cpu = data.get("cpu_percent")
        s.cpu_percent = None if cpu is None else float(cpu)
        s.cpu_warning = bool(data.get("cpu_warning", False))
        s.processes = int(data.get("processes", 1))
        bad = data.get("retry_after_invalid") or {}
        s.retry_after_invalid = {str(k): int(v) for k, v in bad.items()}
        for name, (counts, lat) in (data.get("names") or {}).items():
            s.names[str(name)] = ([int(x) for x in counts], {int(q): int(n) for q, n in lat})
        s.task_counts = [int(x) for x in data.get("tasks") or (0, 0, 0, 0)]
        return s

    def row(self) -> dict[str, Any]:
        """The RequestRow of spikegate/contract/rundir.py for this (sealed) second."""
        return {
            "t": float(self.second),
            "intended": self.intended,
            "sent": self.sent,
            "outcomes": dict(zip(OUTCOMES, self.outcomes, strict=True)),
            "decisions": dict(sorted(self.decisions.items())),
            "endpoints": {
                name: {o: n for o, n in zip(OUTCOMES, counts, strict=True) if n}
                for name, counts in zip(ENDPOINTS, self.endpoints, strict=True)
            },
            "publishers": {
                pid: {"sent": c[0], "admitted": c[1], "rate_limited": c[2]}
                for pid, c in sorted(self.publishers.items())
            },
            "hist_admitted": _encode(self.hist_admitted),
            "hist_rejected": _encode(self.hist_rejected),
            "admitted_p50_ms": _pct_ms(self.hist_admitted, 50.0),
            "admitted_p99_ms": _pct_ms(self.hist_admitted, 99.0),
            "rejected_p99_ms": _pct_ms(self.hist_rejected, 99.0),
            "max_lateness_ms": round(self.max_lateness_s * 1000.0, 3),
            "lateness": self.lateness(),
            "cpu_percent": self.cpu_percent,
            "cpu_warning": self.cpu_warning,
            "processes": self.processes,
            "retry_after_invalid": dict(sorted(self.retry_after_invalid.items())),
            "names": {
                name: {
                    "outcomes": {o: n for o, n in zip(OUTCOMES, counts, strict=True) if n},
                    "admitted_p50_ms": _pct_counts_ms(lat, 50.0),
                    "admitted_p99_ms": _pct_counts_ms(lat, 99.0),
                }
                for name, (counts, lat) in sorted(_capped(self.names).items())
            },
            "tasks": dict(zip(_TASK_KEYS, self.task_counts, strict=True)),
        }


_TASK_KEYS = ("intended", "run", "errors", "unfinished")


def _add_name(
    names: dict[str, tuple[list[int], dict[int, int]]],
    name: str,
    counts: list[int],
    lat: Mapping[int, int],
) -> None:
    mine = names.get(name)
    if mine is None:
        mine = names[name] = ([0] * _N, {})
    for i, n in enumerate(counts):
        mine[0][i] += n
    for q, n in lat.items():
        mine[1][q] = mine[1].get(q, 0) + n


def _capped(
    names: dict[str, tuple[list[int], dict[int, int]]],
) -> dict[str, tuple[list[int], dict[int, int]]]:
    """At most NAMES_CAP names: the busiest NAMES_CAP - 1 and the rest under OTHER_NAME
    (processes each keep NAMES_CAP names, so a merged second can hold more)."""
    if len(names) <= NAMES_CAP:
        return names
    ranked = sorted(names, key=lambda k: (k == OTHER_NAME, -sum(names[k][0]), k))
    out = {k: names[k] for k in ranked[: NAMES_CAP - 1]}
    for k in ranked[NAMES_CAP - 1 :]:
        _add_name(out, OTHER_NAME, *names[k])
    return out


def _add(mine: HdrHistogram | None, other: HdrHistogram | None) -> HdrHistogram | None:
    if other is None:
        return mine
    if mine is None:
        mine = _new_hist()
    mine.add(other)
    return mine


def _encode(hist: HdrHistogram | None) -> str | None:
    if hist is None or hist.get_total_count() == 0:
        return None
    raw = hist.encode()
    return raw.decode("ascii") if isinstance(raw, bytes) else str(raw)


def _decode(text: str | None) -> HdrHistogram | None:
    return None if not text else HdrHistogram.decode(text)


class Recorder:
    """One process's per-second buckets, keyed by floor(intended send - t0).

    A second is complete once every request sent in it has its outcome, and no earlier than
    `t0 + second + 1 + settle_s` (settle_s = the longest allowed send lateness plus the
    client timeout plus a margin): a CPU-starved generator or a connect timeout followed by
    a read timeout can take longer than settle_s, and sealing early would move outcomes into
    later rows. Past `hard_s` (default 3 x settle_s) a second is sealed regardless. Complete
    seconds come out in order and without gaps from `first_second` on (an idle second is an
    empty row, not a missing one)."""

    def __init__(
        self, t0: float, *, first_second: int, settle_s: float, hard_s: float | None = None
    ) -> None:
        self.t0 = t0
        self.settle_s = settle_s
        self.hard_s = 3.0 * settle_s if hard_s is None else max(hard_s, settle_s)
        self.next_second = first_second  # the first second not handed out yet
        self.buckets: dict[int, SecondStats] = {}
        self._names: set[str] = set()  # the request names this process keeps apart

    def name_key(self, name: str) -> str:
        """The name a request is counted under: its own for the first NAMES_CAP - 1 distinct
        names this process sees, OTHER_NAME after that."""
        if name in self._names:
            return name
        if len(self._names) < NAMES_CAP - 1:
            self._names.add(name)
            return name
        return OTHER_NAME

    def bucket(self, second: int) -> SecondStats:
        """The bucket of `second`; a second already handed out (which the settle time
        should prevent) is folded into the oldest open one so nothing is lost."""
        b = self.buckets.get(second)
        if b is None:
            if second < self.next_second:
                return self.bucket(self.next_second)
            b = self.buckets[second] = SecondStats(second)
        return b

    def second_of(self, epoch: float) -> int:
        return math.floor(epoch - self.t0)

    def complete(self, now: float) -> list[SecondStats]:
        """Seal and hand out the seconds that are complete at epoch `now`."""
        upto = math.floor(now - self.t0 - 1.0 - self.settle_s)  # earliest it can be complete
        forced = math.floor(now - self.t0 - 1.0 - self.hard_s)  # sealed whatever is running
        out: list[SecondStats] = []
        while self.next_second <= upto:
            b = self.buckets.get(self.next_second)
            if b is not None and b.running() > 0 and self.next_second > forced:
                break
            out += self._take(self.next_second)
        return out

    def drain(self, upto: int | None = None) -> list[SecondStats]:
        """Seal and hand out every remaining second (through `upto`, default the last seen)."""
        last = max(self.buckets, default=self.next_second - 1)
        return self._take(last if upto is None else max(last, upto))

    def _take(self, upto: int) -> list[SecondStats]:
        out: list[SecondStats] = []
        while self.next_second <= upto:
            s = self.next_second
            out.append((self.buckets.pop(s, None) or SecondStats(s)).seal())
            self.next_second = s + 1
        return out


class Merger:
    """The master's merge of workers' sealed seconds into exactly one row per second.

    Each worker reports its sealed seconds plus a watermark (every second below it has been
    sent; None = the worker is done). Second s is ready (sealed) only when every expected
    worker has a watermark above s, or was declared lost (`lost()`: missing heartbeats, or
    it quit before the end); `drain()` hands out the rest regardless (end of run)."""

    def __init__(self) -> None:
        self.pending: dict[int, SecondStats] = {}
        self.watermarks: dict[str, float] = {}
        self.next_second: int | None = None
        self.missing: set[str] = set()  # workers that stopped reporting before their end

    def lost(self, worker: str) -> None:
        """`worker` stopped reporting before it was done: no second waits for it any longer
        (what it never sent is not in the rows; the run names it as missing)."""
        self.missing.add(worker)
        self.watermarks[worker] = math.inf

    def add(
        self, worker: str, seconds: Iterable[Mapping[str, Any]], watermark: float | None
    ) -> None:
        for data in seconds:
            s = SecondStats.from_wire(data)
            if self.next_second is not None and s.second < self.next_second:
                s.second = self.next_second  # late: fold into the oldest open second
            mine = self.pending.get(s.second)
            if mine is None:
                self.pending[s.second] = s
            else:
                mine.merge(s)
        lost = worker in self.missing
        self.watermarks[worker] = math.inf if watermark is None or lost else watermark

    def done(self, expected_workers: int) -> bool:
        marks = list(self.watermarks.values())
        return len(marks) >= expected_workers and all(m == math.inf for m in marks)

    def ready(self, expected_workers: int) -> list[SecondStats]:
        marks = list(self.watermarks.values())
        if len(marks) < max(1, expected_workers):
            return []
        return self._take(min(marks))

    def drain(self) -> list[SecondStats]:
        return self._take(math.inf)

    def _take(self, below: float) -> list[SecondStats]:
        if not self.pending:
            return []
        if self.next_second is None:
            self.next_second = min(self.pending)
        last = max(self.pending)
        out: list[SecondStats] = []
        while self.next_second <= last and self.next_second < below:
            s = self.next_second
            b = self.pending.pop(s, None)
            if b is None:
                b = SecondStats(s)
                b.processes = 0
            out.append(b)
            self.next_second = s + 1
        return out
