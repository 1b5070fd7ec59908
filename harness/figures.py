"""Figures of a recorded run shared by the checker, the reports and `spikegate compare`.

One meaning per name, wherever it appears:
    offered_rps   intended arrivals per second (the schedule the generator was asked to keep)
    sent_rps      requests actually sent per second (offered minus the generator's shortfall)
    goodput_rps   admitted requests per second (ok, no_bid, accepted)
Latency percentiles come from the generator's merged HDR histograms (microseconds, reported
in ms); `server_rejections` differences the target's cumulative rejection-cost buckets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hdrh.histogram import HdrHistogram

from spikegate.contract.outcomes import ADMITTED_OUTCOMES, DESIGNED_REJECTIONS, FAILURES, OUTCOMES
from spikegate.contract.rundir import LATE_BOUNDS_MS
from spikegate.harness.history import RequestSecond, Sample


# --- shared numbers -------------------------------------------------------------------------
def percentile_ms(
    rows: Sequence[RequestSecond], which: str, pct: float
) -> tuple[float | None, int, bool]:
    """(pNN in ms over the merged HDR histograms of `rows`, response count, exact).

    `which` is "admitted" or "rejected". Rows without a histogram contribute their
    per-second p99 copy (conservatively, as a maximum) and make the result inexact."""
    merged: HdrHistogram | None = None
    fallback: float | None = None
    exact = True
    count = 0
    for r in rows:
        n = r.admitted if which == "admitted" else r.rejected
        count += n
        if n == 0:
            continue
        enc = r.hist_admitted if which == "admitted" else r.hist_rejected
        if enc and merged is None:
            merged = _decode(enc)
            if merged is not None:
                continue
        elif enc and merged is not None and _add(merged, enc):
            continue
        copy = r.admitted_p99_ms if which == "admitted" else r.rejected_p99_ms
        exact = False
        if copy is not None:
            fallback = copy if fallback is None else max(fallback, copy)
    value: float | None = None
    if merged is not None and merged.get_total_count() > 0:
        value = merged.get_value_at_percentile(pct) / 1000.0
    if fallback is not None:
        value = fallback if value is None else max(value, fallback)
    return value, count, exact


def _decode(enc: str | None) -> HdrHistogram | None:
    if not enc:
        return None
    try:
        return HdrHistogram.decode(enc)
    except Exception:  # a corrupted histogram falls back to the per-second copies
        return None


def _add(into: HdrHistogram, enc: str) -> bool:
    try:
        into.decode_and_add(enc)
    except Exception:  # a corrupted histogram falls back to the per-second copies
        return False
    return True


def _second_p99(r: RequestSecond) -> float | None:
    if r.admitted_p99_ms is not None:
        return r.admitted_p99_ms
    h = _decode(r.hist_admitted)
    return None if h is None else h.get_value_at_percentile(99.0) / 1000.0


@dataclass(frozen=True, slots=True)
class ServerRejections:
    """The target's own cost of one layer's 429/503s over a window of samples.

    `p_ms` is the upper edge of the bucket holding the percentile (an upper bound on it);
    inf when it lies above the last finite edge (`last_edge_ms`); None when `count` is 0.
    """

    layer: str
    count: int
    p_ms: float | None
    last_edge_ms: float | None
    first_t: float
    last_t: float


Buckets = Mapping[str, tuple[tuple[float, int], ...]]


def bucket_deltas(
    rows: Sequence[Sample],
    pick: Callable[[Sample], Buckets | None],
    key: str,
    exclude: Sequence[tuple[float, float]] = (),
) -> dict[float, int]:
    """Observations per cumulative bucket edge of a histogram the target exports, summed
    over the scrape-to-scrape increments of `rows` (all of which carry it): last minus first
    unless the target restarted (a falling total counts from zero). An increment covers
    (previous scrape, this scrape]; one that overlaps a window of `exclude` is left out."""
    acc: dict[float, int] = {}
    prev = dict((pick(rows[0]) or {}).get(key, ()))
    prev_t = rows[0].t
    for s in rows[1:]:
        cur = dict((pick(s) or {}).get(key, ()))
        reset = max(cur.values(), default=0) < max(prev.values(), default=0)
        if not any(prev_t < b and s.t > a for a, b in exclude):
            for le, n in cur.items():
                acc[le] = acc.get(le, 0) + max(0, n if reset else n - prev.get(le, 0))
        prev, prev_t = cur, s.t
    return acc


def server_rejections(
    samples: Sequence[Sample],
    layer: str,
    pct: float,
    exclude: Sequence[tuple[float, float]] = (),
) -> ServerRejections | None:
    """pNN of `spikegate_rejection_seconds{layer}` over `samples`, or None when fewer than
    two of them carry the histogram (an external target, an older run directory).

    The cumulative buckets are differenced with `bucket_deltas`, leaving out `exclude`."""
    rows = [s for s in samples if s.ok and s.rejection_buckets is not None]
    if len(rows) < 2:
        return None
    acc = bucket_deltas(rows, lambda s: s.rejection_buckets, layer, exclude)
    edges = sorted(acc)
    count = max(acc.values(), default=0)
    finite = [le for le in edges if math.isfinite(le)]
    p_ms: float | None = None
    if count:
        rank = pct / 100.0 * count
        le = next((le for le in edges if acc[le] >= rank), math.inf)
        p_ms = le * 1000.0
    return ServerRejections(
        layer=layer,
        count=count,
        p_ms=p_ms,
        last_edge_ms=finite[-1] * 1000.0 if finite else None,
        first_t=rows[0].t,
        last_t=rows[-1].t,
    )


@dataclass(frozen=True, slots=True)
class Totals:
    seconds: int
    intended: int
    sent: int
    admitted: int
    rejected: int
    failures: int
    outcomes: dict[str, int]

    @staticmethod
    def of(rows: Iterable[RequestSecond]) -> Totals:
        seconds = intended = sent = admitted = rejected = failures = 0
        outcomes: dict[str, int] = {}
        for r in rows:
            seconds += 1
            intended += r.intended
            sent += r.sent
            admitted += r.admitted
            rejected += r.rejected
            failures += r.failures
            for k, n in r.outcomes.items():
                outcomes[k] = outcomes.get(k, 0) + n
        return Totals(seconds, intended, sent, admitted, rejected, failures, outcomes)

    def share(self, n: int) -> float:
        return n / self.sent if self.sent else 0.0


@dataclass(frozen=True, slots=True)
class SendLateness:
    """The generator's send lateness over some seconds: the rows' counts summed (they add
    exactly across seconds, processes and workers; a maximum or a percentile would not)."""

    sends: int  # arrivals whose send lateness was noted
    over_ms: dict[int, int]  # bound of LATE_BOUNDS_MS -> sends later than it
    seconds_without: int  # seconds whose row carries no lateness counts

    @staticmethod
    def of(rows: Iterable[RequestSecond]) -> SendLateness | None:
        """None when no row carries the counts (an older recorder, a user's own one)."""
        sends = without = 0
        over: dict[int, int] = {}
        for r in rows:
            if r.late_sends is None:
                without += 1
                continue
            sends += r.late_sends
            for bound, n in r.late_over_ms.items():
                over[bound] = over.get(bound, 0) + n
        if sends == 0 and not over and without:
            return None
        return SendLateness(sends, over, without)

    @staticmethod
    def bound_for(threshold_ms: float) -> int:
        """The bound the counts are read at for `threshold_ms`: itself when it is a bound,
        else the nearest bound below it. Sends later than that bound include every send
        later than the threshold, so the share read there can only overstate lateness: a
        generator is never taken to hold a rate it may not have held (thresholds start at
        the smallest bound, see Thresholds)."""
        below = [b for b in LATE_BOUNDS_MS if b <= threshold_ms]
        return below[-1] if below else LATE_BOUNDS_MS[0]

    def share_over(self, bound_ms: int) -> float:
        """The share of noted sends later than `bound_ms` (a bound of LATE_BOUNDS_MS)."""
        return self.over_ms.get(bound_ms, 0) / self.sends if self.sends else 0.0

    def p99_at_most_ms(self) -> int | None:
        """The smallest bound the p99 send lateness is within (at most 1% of sends later),
        None when it is over the largest bound or nothing was noted."""
        if not self.sends:
            return None
        return next((b for b in LATE_BOUNDS_MS if self.share_over(b) <= 0.01), None)


def _r(v: float | None, nd: int = 2) -> float | None:
    return None if v is None else round(v, nd)


def _pct(v: float) -> str:
    return f"{v * 100:.2f}%"


def _num(value: Any) -> float | None:
    """A finite number, else None (a row as read may hold anything)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


# --- per-phase figures of the run directory's rows -------------------------------------------
def _in(rows: Iterable[Mapping[str, Any]], start: float, end: float) -> list[Mapping[str, Any]]:
    return [r for r in rows if (t := _num(r.get("t"))) is not None and start <= t < end]


def _decode_any(encoded: Any) -> HdrHistogram | None:
    if not isinstance(encoded, str) or not encoded:
        return None
    try:
        return HdrHistogram.decode(encoded)
    except Exception:  # a corrupt encoding must not stop a report; the figure is left empty
        return None


def _merged_percentiles(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, float | None]:
    acc: HdrHistogram | None = None
    for r in rows:
        h = _decode_any(r.get(key))
        if h is None or h.get_total_count() == 0:
            continue
        if acc is None:
            acc = h
        else:
            acc.add(h)
    if acc is None:
        return {"p50_ms": None, "p99_ms": None, "count": 0}
    values = _percentiles(acc, (50.0, 99.0))
    return {
        "p50_ms": round(values[50.0], 3),
        "p99_ms": round(values[99.0], 3),
        "count": int(acc.get_total_count()),
    }


def _percentiles(h: HdrHistogram, pcts: tuple[float, ...]) -> dict[float, float]:
    """Percentiles in ms (the histograms record microseconds), in one pass over the counts."""
    if h.get_total_count() == 0:
        return {}
    values = h.get_percentile_to_value_dict(list(pcts))
    return {p: float(values[p]) / 1000.0 for p in pcts}


def _max(rows: Iterable[Mapping[str, Any]], key: str) -> float | None:
    values = [v for r in rows if (v := _num(r.get(key))) is not None]
    return max(values) if values else None


def phase_figures(
    requests: Sequence[Mapping[str, Any]],
    samples: Sequence[Mapping[str, Any]],
    start: float,
    end: float,
) -> dict[str, Any]:
    """Rates, outcome shares, latency percentiles (merged HDR histograms) and resource peaks
    for the seconds in [start, end), from the run directory's rows as read (a row or an
    encoding that cannot be read leaves its figure empty, never raises): the one place the
    reports and `spikegate compare` get them."""
    rows = _in(requests, start, end)
    samples = [s for s in _in(samples, start, end) if s.get("ok", True)]
    seconds = max(end - start, 1e-9)
    counts = dict.fromkeys(OUTCOMES, 0)
    intended = sent = 0
    for r in rows:
        intended += int(_num(r.get("intended")) or 0)
        sent += int(_num(r.get("sent")) or 0)
        outcomes = r.get("outcomes")
        if isinstance(outcomes, Mapping):
            for k, v in outcomes.items():
                counts[k] = counts.get(k, 0) + int(_num(v) or 0)
    total = sum(counts.values())
    admitted = sum(counts.get(k, 0) for k in ADMITTED_OUTCOMES)
    rejected = sum(counts.get(k, 0) for k in DESIGNED_REJECTIONS)
    failed = sum(counts.get(k, 0) for k in FAILURES)
    share = (lambda n: round(n / total, 6)) if total else (lambda n: None)
    adm = _merged_percentiles(rows, "hist_admitted")
    rej = _merged_percentiles(rows, "hist_rejected")
    return {
        "start_s": start,
        "end_s": end,
        "seconds_with_data": len(rows),
        "samples": len(samples),
        "intended": intended,
        "sent": sent,
        "offered_rps": round(intended / seconds, 3),
        "sent_rps": round(sent / seconds, 3),
        "goodput_rps": round(admitted / seconds, 3),
        "outcomes": {k: v for k, v in counts.items() if v},
        "outcome_shares": {k: share(v) for k, v in counts.items() if v},
        "admitted_share": share(admitted),
        "rejected_share": share(rejected),
        "failure_share": share(failed),
        "admitted_p50_ms": adm["p50_ms"],
        "admitted_p99_ms": adm["p99_ms"],
        "rejected_p50_ms": rej["p50_ms"],
        "rejected_p99_ms": rej["p99_ms"],
        "max_inflight": _max(samples, "auction_inflight_max") or _max(samples, "auction_inflight"),
        "max_limit": _max(samples, "auction_limit"),
        "max_queue_depth": _max(samples, "queue_depth"),
        "max_rss_bytes": _max(samples, "rss_bytes"),
    }
