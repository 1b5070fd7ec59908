"""Load under your hand: a live rate that replaces the shape's while a run goes on.

    spikegate load set|stop|start|spike --HTTP--> control server (harness/control.py)
        --os.replace--> RUN_DIR/control/load.json  {"version", "rate", "spike"}
                            |  stat every POLL_S in each generating process (local, workers)
                            v
        LiveLoad (this process's copy) --> live_arrivals(schedule, ...) --> paced() --> rows

The document (LoadDoc; written by the harness only, read by every generating process):

    version   an integer that grows with every change (a reader applies a newer one only)
    rate      arrivals/s for the whole run (every process takes rate/count), or null: the
              scenario's shape
    spike     null, or {"peak": arrivals/s, "from_s": t, "until_s": t}: in [from_s, until_s)
              (seconds since t0, the same instants in every process) the rate is `peak`,
              on top of whatever `rate` says; after until_s the rate goes back by itself

The live schedule is ArrivalSchedule's time-rescaling construction with the rate read from
LiveLoad: the same thresholds (so without a document the instants are exactly the seeded
schedule's), and it never integrates more than HORIZON_S ahead of the clock, so a change read
at wall time w applies from at most w + HORIZON_S. It sleeps (through `sleep`) while it is
ahead, in steps of at most HORIZON_S, and ends when `stop()` holds. Its cost without a
document: one float comparison per 1 ms integration step, and one clock read per HORIZON_S
of schedule time. Bounded: rates are clamped to [0, MAX_RPS], the run still ends at
duration_s. Only the standard library: the harness writes the document with `write_doc`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spikegate.contract.load import MAX_RPS
from spikegate.contract.rundir import LOAD_CONTROL_FILE

__all__ = [
    "HORIZON_S",
    "LOAD_CONTROL_FILE",
    "POLL_S",
    "LiveLoad",
    "LoadDoc",
    "Spike",
    "live_arrivals",
    "parse_doc",
    "read_doc",
    "write_doc",
]

POLL_S = 0.2  # how often a generating process looks at the document
HORIZON_S = 0.1  # how far ahead of the clock the live schedule may integrate
MAX_DOC_BYTES = 4096


@dataclass(frozen=True)
class Spike:
    peak: float
    from_s: float
    until_s: float


@dataclass(frozen=True)
class LoadDoc:
    version: int = 0
    rate: float | None = None
    spike: Spike | None = None

    def to_json(self) -> dict[str, Any]:
        spike = None
        if self.spike is not None:
            s = self.spike
            spike = {"peak": s.peak, "from_s": s.from_s, "until_s": s.until_s}
        return {"version": self.version, "rate": self.rate, "spike": spike}

    def rate_fn(self, shape_rate: Callable[[float], float]) -> Callable[[float], float]:
        """The intended rate at t: the spike's peak inside it, else `rate`, else the shape's."""
        spike, rate = self.spike, self.rate
        if spike is None and rate is None:
            return shape_rate
        base: Callable[[float], float] = shape_rate if rate is None else (lambda t: rate)
        if spike is None:
            return base
        peak, lo, hi = spike.peak, spike.from_s, spike.until_s
        return lambda t: peak if lo <= t < hi else base(t)


def _rate(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where} must be a number of arrivals/s, got {value!r}")
    if not 0 <= value <= MAX_RPS:
        raise ValueError(f"{where} must be in [0, {MAX_RPS:g}], got {value!r}")
    return float(value)


def _time(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where} must be a number of seconds, got {value!r}")
    return float(value)


def parse_doc(data: object) -> LoadDoc:
    """Validate a document; errors name the field."""
    if not isinstance(data, Mapping):
        raise ValueError(f"the load document must be an object, got {type(data).__name__}")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"version must be an integer >= 0, got {version!r}")
    raw_rate = data.get("rate")
    rate = None if raw_rate is None else _rate(raw_rate, "rate")
    raw_spike = data.get("spike")
    spike = None
    if raw_spike is not None:
        if not isinstance(raw_spike, Mapping):
            raise ValueError(f"spike must be an object or null, got {raw_spike!r}")
        spike = Spike(
            peak=_rate(raw_spike.get("peak"), "spike.peak"),
            from_s=_time(raw_spike.get("from_s"), "spike.from_s"),
            until_s=_time(raw_spike.get("until_s"), "spike.until_s"),
        )
        if not spike.until_s > spike.from_s:
            raise ValueError(f"spike.until_s must be after spike.from_s, got {raw_spike!r}")
    return LoadDoc(version=version, rate=rate, spike=spike)


def read_doc(path: Path) -> LoadDoc | None:
    """The document at `path`, None if there is none; ValueError if it is malformed."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_DOC_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(raw) > MAX_DOC_BYTES:
        raise ValueError(f"{path} is over {MAX_DOC_BYTES} bytes")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    return parse_doc(data)


def write_doc(path: Path, doc: LoadDoc) -> None:
    """Write atomically (a temporary file in the same folder, then os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".load-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc.to_json(), fh, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class LiveLoad:
    """This process's view of the document: `poll()` reads it when its stat changed."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.doc = LoadDoc()
        self._stamp: tuple[int, int, int] | None = None
        self.error: str | None = None  # the last malformed document's message

    def poll(self) -> bool:
        """Re-read the document if it changed; True when a newer version was applied."""
        if self.path is None:
            return False
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            doc = read_doc(self.path)
        except (OSError, ValueError) as exc:
            self.error = str(exc)
            return False
        if doc is None or doc.version <= self.doc.version:
            return False
        self.doc, self.error = doc, None
        return True

    def set(self, doc: LoadDoc) -> None:
        """Apply a document directly (tests, or a process that got it another way)."""
        if doc.version > self.doc.version:
            self.doc = doc


def live_arrivals(
    thresholds: Iterator[float],
    shape_rate: Callable[[float], float],
    live: LiveLoad,
    *,
    share: float,
    start_s: float,
    end_s: float,
    now: Callable[[], float],
    sleep: Callable[[float], object],
    stop: Callable[[], bool] = lambda: False,
    step_s: float = 0.001,
    horizon_s: float = HORIZON_S,
) -> Iterator[float]:
    """Arrival instants (seconds since t0) in [start_s, end_s) at the live rate.

    `thresholds` are the schedule's (ArrivalSchedule._thresholds), `share` its 1/count,
    `now()` the clock in seconds since t0. Identical arithmetic to ArrivalSchedule.__iter__
    while the document says nothing, so those instants are the seeded schedule's."""
    nxt = next(thresholds)
    cum = 0.0
    k = 0
    t = 0.0
    horizon = -math.inf
    seen: LoadDoc | None = None
    rate_at = shape_rate
    while t < end_s:
        if t >= horizon:
            clock = now()
            while t > clock + horizon_s:
                if stop():
                    return
                sleep(min(max(t - clock - horizon_s, step_s), horizon_s))
                clock = now()
            if stop():
                return
            doc = live.doc
            if doc is not seen:
                seen, rate_at = doc, doc.rate_fn(shape_rate)
            horizon = clock + horizon_s
        t1 = min((k + 1) * step_s, end_s)
        r = rate_at((t + t1) * 0.5) * share
        c1 = cum + r * (t1 - t)
        while nxt <= c1 and r > 0:
            at = t + (nxt - cum) / r
            if at >= start_s:
                yield min(at, t1)
            nxt = next(thresholds)
        cum, t, k = c1, t1, k + 1
