"""The checker: a pure function from a recorded History and Thresholds to verdicts.

    History --+--> valid_run            (per judged phase + run)   generator held, enough data
              +--> steady_state         (baseline, post)           admitted pNN, errors, rejections
              +--> no_unexpected_errors (stress)                   failures besides 429/503
              +--> graceful_degradation (stress)                   goodput, admitted/rejected pNN
              +--> bounded_resources    (run)                      inflight, queue, RSS growth
              +--> time_to_detect       (stress)                   need -> protective decision
              +--> time_to_recover      (recovery)                 SLO holds `hold` s, no relapse
              +--> no_silent_loss       (run)                      outcomes = sent; acked in Kafka
              +--> layer.edge / layer.bulkhead / layer.shedder / layer.breaker (stress)
                                      --> CheckResult(verdicts, thresholds)

One small function per verdict, each returning its verdicts with evidence (windows, counts,
thresholds, timestamps) and a message a person can act on. Too little data gives
inconclusive, never pass. Layer signatures are judged only for the reference target and only
for layers the scenario exercises; a layer switched off (ablation) that is exercised fails.
The module is longer than the house's ~400 lines because it holds every verdict in one
place: each function stays small and reads on its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from spikegate.contract.outcomes import (
    ADMITTED_OUTCOMES,
    BULKHEAD_FULL,
    DESIGNED_REJECTIONS,
    FAILURES,
    RATE_LIMITED,
    SHED,
)
from spikegate.harness.history import FaultWindow, History, RequestSecond, Sample
from spikegate.harness.scenario import Phase
from spikegate.harness.thresholds import LatencyBound, Thresholds, thresholds_from_checks
from spikegate.harness.verdicts import FAIL, INCONCLUSIVE, PASS, CheckResult, Status, Verdict

__all__ = [
    "VERDICTS",
    "ServerRejections",
    "check",
    "percentile_ms",
    "phase_stats",
    "server_rejections",
]

JUDGED_PHASES = ("baseline", "stress", "recovery", "post")
_PROTECTIVE_BREAKER = frozenset({"open", "half_open", "forced_open"})


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


def server_rejections(samples: Sequence[Sample], layer: str, pct: float) -> ServerRejections | None:
    """pNN of `spikegate_rejection_seconds{layer}` over `samples`, or None when fewer than
    two of them carry the histogram (an external target, an older run directory).

    The cumulative buckets are differenced between consecutive scrapes and summed, which
    is last minus first unless the target restarted (a falling total: counted from zero)."""
    rows = [s for s in samples if s.ok and s.rejection_buckets is not None]
    if len(rows) < 2:
        return None
    acc: dict[float, int] = {}
    prev = dict(rows[0].rejection_buckets.get(layer, ()))  # type: ignore[union-attr]
    for s in rows[1:]:
        cur = dict(s.rejection_buckets.get(layer, ()))  # type: ignore[union-attr]
        reset = max(cur.values(), default=0) < max(prev.values(), default=0)
        for le, n in cur.items():
            acc[le] = acc.get(le, 0) + max(0, n if reset else n - prev.get(le, 0))
        prev = cur
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


def phase_stats(history: History, phase: str, pct: float = 99.0) -> dict[str, Any] | None:
    """Key figures of one phase (compare and reports): rates, shares, latency percentiles."""
    p = history.phase(phase)
    if p is None:
        return None
    rows = history.requests_in(p.start_s, p.end_s)
    tot = Totals.of(rows)
    adm, _, _ = percentile_ms(rows, "admitted", pct)
    rej, _, _ = percentile_ms(rows, "rejected", pct)
    secs = max(tot.seconds, 1)
    return {
        "start_s": p.start_s,
        "end_s": p.end_s,
        "seconds": tot.seconds,
        "offered_rps": round(tot.sent / secs, 2),
        "goodput_rps": round(tot.admitted / secs, 2),
        "rejection_share": round(tot.share(tot.rejected), 4),
        "failure_share": round(tot.share(tot.failures), 4),
        f"admitted_p{pct:g}_ms": _r(adm),
        f"rejected_p{pct:g}_ms": _r(rej),
    }


def _r(v: float | None, nd: int = 2) -> float | None:
    return None if v is None else round(v, nd)


def _pct(v: float) -> str:
    return f"{v * 100:.2f}%"


# --- context --------------------------------------------------------------------------------
@dataclass
class _Ctx:
    h: History
    th: Thresholds
    target: Any = None  # target.config.TargetConfig for the reference target, else None
    _cache: dict[tuple[float, float, str], tuple[float | None, int, bool]] = field(
        default_factory=dict
    )

    def rows(self, p: Phase) -> Sequence[RequestSecond]:
        return self.h.requests_in(p.start_s, p.end_s)

    def p(self, p: Phase, which: str) -> tuple[float | None, int, bool]:
        key = (p.start_s, p.end_s, which)
        if key not in self._cache:
            self._cache[key] = percentile_ms(self.rows(p), which, self.th.slo.percentile)
        return self._cache[key]

    @property
    def stress(self) -> Phase | None:
        return self.h.phase("stress")

    @property
    def disturbance_end(self) -> float | None:
        """End of the last disturbance: the stress phase end, or a later fault's end."""
        ends = [w.end_s for w in self.h.faults]
        s = self.stress
        if s is not None:
            ends.append(s.end_s)
        return max(ends) if ends else None


def _v(name: str, phase: str, st: Status, message: str, /, **evidence: Any) -> Verdict:
    return Verdict(name, phase, st, message, evidence)


def _combine(parts: Sequence[tuple[Status, str]]) -> tuple[Status, str]:
    """fail if any part failed; else inconclusive if any was; messages of the worst kind."""
    for status in (FAIL, INCONCLUSIVE):
        msgs = [m for s, m in parts if s == status]
        if msgs:
            return status, "; ".join(msgs)
    return PASS, "; ".join(m for _, m in parts)


# --- verdicts -------------------------------------------------------------------------------
def valid_run(c: _Ctx) -> list[Verdict]:
    th, out = c.th, []
    run_parts: list[tuple[Status, str]] = []
    status = c.h.meta.get("status", "complete")
    if status != "complete":
        run_parts.append((INCONCLUSIVE, f"the run ended {status!r}, not 'complete'"))
    crashes = [e for e in c.h.events if e.kind == "component_crash"]
    if crashes:
        names = ", ".join(str(e.data.get("name", "?")) for e in crashes)
        run_parts.append((INCONCLUSIVE, f"component crashed during the run: {names}"))
    if not c.h.requests:
        run_parts.append((INCONCLUSIVE, "requests.jsonl has no rows: no load was recorded"))
    st, msg = _combine(run_parts or [(PASS, "the run completed with load recorded")])
    out.append(_v("valid_run", "run", st, msg, status=status, crashes=len(crashes)))
    for p in c.h.phases:
        if p.name not in JUDGED_PHASES:
            continue
        rows = c.rows(p)
        tot = Totals.of(rows)
        expected = max(0, math.ceil(p.end_s - p.start_s - 1e-9))
        cpus = sorted(r.cpu_percent for r in rows if r.cpu_percent is not None)
        cpu90 = cpus[min(len(cpus) - 1, int(0.9 * len(cpus)))] if cpus else None
        held = tot.sent / tot.intended if tot.intended else None
        parts: list[tuple[Status, str]] = []
        if tot.seconds < min(th.min_seconds, max(expected, 1)) or tot.seconds < th.min_seconds:
            parts.append(
                (
                    INCONCLUSIVE,
                    f"{p.name} has {tot.seconds} s of data, needs {th.min_seconds} "
                    f"(lengthen the phase or lower checks.min_seconds)",
                )
            )
        elif tot.seconds < 0.8 * expected:
            parts.append((INCONCLUSIVE, f"{p.name} has {tot.seconds} of {expected} seconds"))
        if held is None:
            if tot.seconds:
                parts.append((INCONCLUSIVE, f"no arrivals were intended in {p.name}"))
        elif not th.generator_min.ok(held):
            parts.append(
                (
                    INCONCLUSIVE,
                    f"the generator sent {_pct(held)} of intended arrivals in {p.name} "
                    f"(needs {th.generator_min}): add --processes or lower the rate",
                )
            )
        if cpu90 is not None and not th.generator_cpu.ok(cpu90 / 100):
            parts.append(
                (
                    INCONCLUSIVE,
                    f"the generator was CPU-starved in {p.name} (p90 {cpu90:.0f}% of a core, "
                    f"bound {th.generator_cpu.op} {th.cpu_max_percent:g}%)",
                )
            )
        st, msg = _combine(parts or [(PASS, f"generator held {_pct(held or 0)} of arrivals")])
        out.append(
            _v(
                "valid_run",
                p.name,
                st,
                msg,
                window=[p.start_s, p.end_s],
                seconds=tot.seconds,
                expected_seconds=expected,
                intended=tot.intended,
                sent=tot.sent,
                held=_r(held, 4),
                cpu_p90_percent=cpu90,
            )
        )
    return out


def steady_state(c: _Ctx) -> list[Verdict]:
    """Baseline and post at base load: the SLO, the error ratio, and designed rejections
    within `steady_rejections` (a target that sheds or rate-limits at base load is broken).
    The ratios need only `min_requests` sent: a service that admits nothing fails here,
    it is not too few samples for a percentile."""
    out = []
    th = c.th
    for name in ("baseline", "post"):
        p = c.h.phase(name)
        if p is None:
            continue
        tot = Totals.of(c.rows(p))
        value, count, exact = c.p(p, "admitted")
        err, rej = tot.share(tot.failures), tot.share(tot.rejected)
        ev = dict(
            window=[p.start_s, p.end_s],
            sent=tot.sent,
            admitted=count,
            failures=tot.failures,
            error_ratio=round(err, 5),
            rejected=tot.rejected,
            rejection_ratio=round(rej, 5),
            by_class={k: n for k, n in tot.outcomes.items() if k not in ADMITTED_OUTCOMES and n},
            slo=str(th.slo),
            error_rate=str(th.error_rate),
            steady_rejections=str(th.steady_rejections),
            latency_ms=_r(value),
            exact=exact,
        )
        parts: list[tuple[Status, str]] = []
        if tot.sent >= th.min_requests:
            if th.error_rate.ok(err):
                parts.append((PASS, f"errors {_pct(err)}"))
            else:
                parts.append(
                    (FAIL, f"error ratio {_pct(err)} breaks {th.error_rate}{_classes(tot)}")
                )
            if th.steady_rejections.ok(rej):
                parts.append((PASS, f"designed rejections {_pct(rej)}"))
            else:
                parts.append(
                    (
                        FAIL,
                        f"designed rejections {_pct(rej)} at base load break "
                        f"{th.steady_rejections}{_classes(tot, DESIGNED_REJECTIONS)}: "
                        "nothing should be shed or rate-limited outside a disturbance",
                    )
                )
        if value is None or count < th.min_requests:
            parts.append(
                (
                    INCONCLUSIVE,
                    f"{count} admitted responses in {name}, needs {th.min_requests} for a "
                    f"p{th.slo.percentile:g}",
                )
            )
        elif th.slo.ok(value):
            parts.append((PASS, f"p{th.slo.percentile:g} {value:.1f} ms"))
        else:
            parts.append((FAIL, f"admitted p{th.slo.percentile:g} {value:.1f} ms breaks {th.slo}"))
        st, msg = _combine(parts)
        out.append(_v("steady_state", name, st, f"{name}: {msg}", **ev))
    return out


def _classes(tot: Totals, among: Iterable[str] = FAILURES) -> str:
    """` (conn_error=900 of 900 sent)`: the outcome classes behind a ratio, largest first."""
    found = [(k, n) for k, n in tot.outcomes.items() if n and k in among]
    if not found:
        return ""
    top = ", ".join(f"{k}={n}" for k, n in sorted(found, key=lambda kv: -kv[1]))
    return f" ({top} of {tot.sent} sent)"


def no_unexpected_errors(c: _Ctx) -> list[Verdict]:
    p = c.stress
    if p is None:
        return []
    rows = c.rows(p)
    tot = Totals.of(rows)
    designed = DESIGNED_REJECTIONS | ADMITTED_OUTCOMES
    classes = {k: n for k, n in tot.outcomes.items() if k not in designed and n}
    worst = sorted(rows, key=lambda r: r.failures, reverse=True)[:3]
    share = tot.share(tot.failures)
    ev = dict(
        window=[p.start_s, p.end_s],
        sent=tot.sent,
        failures=tot.failures,
        share=round(share, 5),
        by_class=classes,
        budget=str(c.th.unexpected_errors),
        worst_seconds=[[r.t, r.failures] for r in worst if r.failures],
    )
    if tot.sent == 0:
        return [_v("no_unexpected_errors", "stress", INCONCLUSIVE, "no load in stress", **ev)]
    if c.th.unexpected_errors.ok(share):
        msg = f"{tot.failures} unexpected failures ({_pct(share)}) within budget"
        return [_v("no_unexpected_errors", "stress", PASS, msg, **ev)]
    top = ", ".join(f"{k}={n}" for k, n in sorted(classes.items(), key=lambda kv: -kv[1]))
    msg = (
        f"{_pct(share)} of stress requests failed outside designed rejections ({top}); "
        f"budget {c.th.unexpected_errors}: these should be fast 429/503 with a decision header"
    )
    return [_v("no_unexpected_errors", "stress", FAIL, msg, **ev)]


def graceful_degradation(c: _Ctx) -> list[Verdict]:
    p, th = c.stress, c.th
    if p is None:
        return []
    tot = Totals.of(c.rows(p))
    if tot.seconds == 0 or tot.sent == 0:
        return [_v("graceful_degradation", "stress", INCONCLUSIVE, "no load in stress")]
    offered = tot.sent / tot.seconds
    goodput = tot.admitted / tot.seconds
    base = c.h.phase("baseline")
    base_tot = Totals.of(c.rows(base)) if base else None
    base_p99 = c.p(base, "admitted")[0] if base else None
    if th.capacity_rps is not None:
        cap_src, cap = "declared capacity_rps", th.capacity_rps
    elif base_tot is not None and base_tot.admitted:
        cap_src, cap = "baseline admitted rate", base_tot.admitted / base_tot.seconds
    elif base_tot is not None and base_tot.sent:
        # A baseline that admitted nothing measured no capacity: zero would excuse any
        # stress goodput, zero included (a dead service passed here).
        cap_src, cap = "offered rate (the baseline admitted nothing)", offered
    else:
        cap_src, cap = "offered rate (no baseline)", offered
    capacity = min(offered, cap)
    ratio = goodput / capacity if capacity > 0 else 1.0
    parts: list[tuple[Status, str]] = []
    if th.goodput_floor.ok(ratio):
        parts.append((PASS, f"goodput {goodput:.0f}/s = {_pct(ratio)} of capacity"))
    else:
        parts.append(
            (
                FAIL,
                f"goodput {goodput:.0f}/s is {_pct(ratio)} of capacity {capacity:.0f}/s "
                f"({cap_src}), floor {th.goodput_floor}",
            )
        )
    # Latencies are judged once protection had time to engage (`settle` after each onset).
    onsets = sorted(
        {p.start_s, *(w.start_s for w in c.h.faults if p.start_s <= w.start_s < p.end_s)}
    )
    grace = th.settle.seconds
    settled = [r for r in c.rows(p) if not any(o <= r.t < o + grace for o in onsets)]
    adm, adm_n, _ = percentile_ms(settled, "admitted", th.slo.percentile)
    bound = th.slo.bound_ms
    if base_p99 is not None:
        bound = max(bound, th.latency_factor * base_p99)
    lat = LatencyBound(th.slo.percentile, th.slo.op, bound)
    if adm is None or adm_n < th.min_requests:
        parts.append((INCONCLUSIVE, f"{adm_n} admitted responses, too few for a percentile"))
    elif lat.ok(adm):
        parts.append((PASS, f"admitted p{th.slo.percentile:g} {adm:.1f} ms"))
    else:
        parts.append(
            (FAIL, f"admitted p{th.slo.percentile:g} {adm:.1f} ms breaks {lat} (SLO/baseline)")
        )
    rb = th.reject_bound
    rej, rej_n, _ = percentile_ms(settled, "rejected", rb.percentile)
    if rej is not None and rej_n > 0 and not rb.ok(rej):
        parts.append((FAIL, f"rejections p{rb.percentile:g} {rej:.1f} ms are not fast ({rb})"))
    st, msg = _combine(parts)
    return [
        _v(
            "graceful_degradation",
            "stress",
            st,
            msg,
            window=[p.start_s, p.end_s],
            offered_rps=round(offered, 2),
            goodput_rps=round(goodput, 2),
            capacity_rps=round(capacity, 2),
            capacity_source=cap_src,
            goodput_ratio=round(ratio, 4),
            floor=str(th.goodput_floor),
            admitted_latency_ms=_r(adm),
            admitted_bound=str(lat),
            baseline_latency_ms=_r(base_p99),
            rejected_latency_ms=_r(rej),
            rejected=rej_n,
            reject_bound=str(rb),
            latency_excludes=[[o, o + grace] for o in onsets],
        )
    ]


def _gauge_max(c: _Ctx, get: Callable[[Any], float | None]) -> tuple[float | None, float | None]:
    best: tuple[float | None, float | None] = (None, None)
    for s in c.h.samples:
        v = get(s)
        if s.ok and v is not None and (best[0] is None or v > best[0]):
            best = (v, s.t)
    return best


def _ceiling(c: _Ctx) -> tuple[float | None, str]:
    if c.th.inflight_max is not None:
        return float(c.th.inflight_max), "checks.inflight_max"
    seen, _ = _gauge_max(c, lambda s: s.auction_limit_ceiling)
    if seen is not None:
        return seen, "exported auction_limit_ceiling"
    if c.target is not None:
        return float(c.target.auction.limit), "target.config auction.limit"
    return None, "unknown"


def _queue_cap(c: _Ctx) -> tuple[float | None, str]:
    if c.th.queue_max is not None:
        return float(c.th.queue_max), "checks.queue_max"
    if c.target is not None:
        return float(c.target.impressions.max_depth), "target.config impressions.max_depth"
    return None, "unknown"


def _inflight_peak(s: Sample) -> float | None:
    """Auctions in flight: the peak since the previous sample when the target exports one (a
    bound crossed between two scrapes is still seen, however late), else the level at the
    scrape."""
    if s.auction_inflight_max is None:
        return s.auction_inflight
    return max(s.auction_inflight_max, s.auction_inflight or 0.0)


def bounded_resources(c: _Ctx) -> list[Verdict]:
    ok_samples = [s for s in c.h.samples if s.ok]
    if not ok_samples:
        if c.h.external:
            return []
        return [_v("bounded_resources", "run", INCONCLUSIVE, "no successful /metrics sample")]
    parts: list[tuple[Status, str]] = []
    ev: dict[str, Any] = {}
    inflight, at = _gauge_max(c, _inflight_peak)
    ceiling, src = _ceiling(c)
    ev.update(max_inflight=inflight, max_inflight_t=at, ceiling=ceiling, ceiling_source=src)
    if inflight is not None and ceiling is not None:
        if inflight <= ceiling:
            parts.append((PASS, f"inflight <= {ceiling:g}"))
        else:
            parts.append(
                (FAIL, f"auction inflight reached {inflight:g} by t={at:g}s > {ceiling:g}")
            )
    depth, dat = _gauge_max(c, lambda s: s.queue_depth)
    cap, qsrc = _queue_cap(c)
    ev.update(max_queue_depth=depth, max_queue_depth_t=dat, queue_cap=cap, queue_source=qsrc)
    if depth is not None and cap is not None:
        if depth <= cap:
            parts.append((PASS, f"queue depth <= {cap:g}"))
        else:
            parts.append(
                (FAIL, f"impression queue depth reached {depth:g} at t={dat:g}s > {cap:g}")
            )
    growth = _rss_growth(c)
    if growth is not None:
        base, peak, peak_t = growth
        g = peak - base
        ev.update(rss_baseline_bytes=base, rss_peak_bytes=peak, rss_peak_t=peak_t, rss_growth=g)
        ev["rss_budget"] = str(c.th.rss_growth)
        if c.th.rss_growth.ok(g):
            parts.append((PASS, f"RSS grew {g / 1e6:.1f} MB"))
        else:
            parts.append(
                (FAIL, f"RSS grew {g / 1e6:.1f} MB by t={peak_t:g}s, budget {c.th.rss_growth}")
            )
    if not parts:
        if c.h.external:
            return []
        return [
            _v("bounded_resources", "run", INCONCLUSIVE, "no resource gauge was exported", **ev)
        ]
    st, msg = _combine(parts)
    return [_v("bounded_resources", "run", st, msg, **ev)]


def _rss_growth(c: _Ctx) -> tuple[float, float, float] | None:
    warm = c.h.phase("warmup")
    start = warm.end_s if warm else 0.0
    base_p = c.h.phase("baseline")
    base_win = (base_p.start_s, base_p.end_s) if base_p else (start, start + 3)
    base_vals = sorted(
        s.rss_bytes for s in c.h.samples_in(*base_win) if s.ok and s.rss_bytes is not None
    )
    later = [(s.rss_bytes, s.t) for s in c.h.samples_in(start, math.inf) if s.rss_bytes]
    if not base_vals or not later:
        return None
    base = base_vals[len(base_vals) // 2]
    peak, peak_t = max(later)
    return base, peak, peak_t


def _protective_at(c: _Ctx, start: float, end: float) -> tuple[float | None, str]:
    first_t: float | None = None
    why = ""
    for r in c.h.requests_in(start, end):
        if r.rejected > 0 or r.decisions.get("breaker_open_fallback", 0) > 0:
            first_t = r.t
            kinds = {k: n for k, n in r.outcomes.items() if k in DESIGNED_REJECTIONS and n}
            why = f"designed rejections {kinds}" if kinds else "breaker fallback"
            break
    for s in c.h.samples_in(start, end if first_t is None else first_t):
        opened = sorted(d for d, st in s.breakers.items() if st in _PROTECTIVE_BREAKER)
        if opened:
            return s.t, f"breaker {', '.join(opened)} left closed"
    return first_t, why


# Faults that need protection whatever the latencies show: the dependency stops answering.
_HARD_FAULTS = frozenset({"down", "reset", "timeout", "stall"})


def _hard(w: FaultWindow) -> bool:
    """`redis_down`, `kafka_stall`, `reset`, a bandwidth of 0: by the fault's last word."""
    if w.fault == "bandwidth":
        return w.params.get("rate_kb_s") == 0
    return w.fault.rsplit("_", 1)[-1] in _HARD_FAULTS


def _over_slo(c: _Ctx, r: RequestSecond) -> bool:
    """A stress second over the SLO: load was sent and its admitted pNN breaks `slo`, or
    its failures (designed rejections are not failures) break `unexpected_errors`."""
    if r.sent == 0:
        return False
    if not c.th.unexpected_errors.ok(r.failures / r.sent):
        return True
    p99 = _second_p99(r) if r.admitted else None
    return p99 is not None and not c.th.slo.ok(p99)


def _first_over(c: _Ctx, start: float, end: float) -> RequestSecond | None:
    return next((r for r in c.h.requests_in(start, end) if _over_slo(c, r)), None)


def _needs(c: _Ctx, p: Phase) -> list[tuple[float, str]]:
    """Every second that needed protection, as (t, why), in time order: the onset of a
    hard fault; the onset of any other disturbance (a fault, the load spike) whose window
    holds a second over the SLO, or that drew a protective decision within `settle` of its
    onset (the protection's own evidence of need: it can only pass); the first stress
    second over the SLO. An onset is the first second the disturbance touches (rows are
    whole seconds; a fault event's time is not)."""
    spans: list[tuple[float, float, str, bool]] = [
        (math.floor(w.start_s + 1e-9), min(w.end_s, p.end_s), f"{w.fault} on {w.proxy}", _hard(w))
        for w in c.h.faults
        if p.start_s <= w.start_s < p.end_s
    ]
    spike = c.h.scenario.load.disturbance()
    if spike is not None and p.start_s <= spike[0] < p.end_s:
        spans.append((spike[0], min(spike[1], p.end_s), "the load spike", False))
    found: dict[float, str] = {}
    for start, end, what, hard in sorted(spans, key=lambda s: s[0]):
        if start in found:
            continue
        if hard:
            found[start] = f"{what} began (a hard fault)"
        elif (r := _first_over(c, start, end)) is not None:
            found[start] = f"{what} began; over the SLO at t={r.t:g}s"
        else:
            t, _ = _protective_at(c, start, min(end, start + c.th.settle.seconds + 1e-9))
            if t is not None:
                found[start] = f"{what} began and drew protection at once"
    r = _first_over(c, p.start_s, p.end_s)
    if r is not None and r.t not in found:
        found[r.t] = f"t={r.t:g}s was the first second over the SLO"
    return sorted(found.items())


def time_to_detect(c: _Ctx) -> list[Verdict]:
    """Each second that needed protection -> the first protective decision from then on;
    `detect_s` is the first one's. Fails on the first need detected late, or never while
    the SLO broke."""
    p = c.stress
    if p is None:
        return []
    needs = _needs(c, p)
    ev: dict[str, Any] = dict(
        stress_start_s=p.start_s,
        need_s=needs[0][0] if needs else None,
        need=needs[0][1] if needs else "",
        budget=str(c.th.detect),
    )
    if Totals.of(c.rows(p)).sent == 0:
        return [_v("time_to_detect", "stress", INCONCLUSIVE, "no load in stress", **ev)]
    if not needs:
        t, why = _protective_at(c, p.start_s, p.end_s)
        ev.update(first_t=t, needs=[])
        msg = "no protection needed: no hard fault, and no stress second broke the SLO" + (
            f" (protection engaged anyway at t={t:g}s: {why})" if t is not None else ""
        )
        return [_v("time_to_detect", "stress", PASS, msg, **ev)]
    judged: list[dict[str, Any]] = []
    failed: tuple[dict[str, Any], str] | None = None
    for need, need_why in needs:
        t, why = _protective_at(c, need, p.end_s)
        row: dict[str, Any] = dict(at_s=need, why=need_why, protected_at_s=t, protection=why)
        if t is not None:
            row["detect_s"] = d = round(max(0.0, t - need), 3)
            if not c.th.detect.ok(d) and failed is None:
                msg = (
                    f"first protective decision {d:g} s after protection was needed at "
                    f"t={need:g}s ({need_why}): {why}; budget {c.th.detect}"
                )
                failed = (row, msg)
        elif (over := _first_over(c, need, p.end_s)) is not None and failed is None:
            row["first_over_slo_s"] = over.t
            msg = (
                f"no protective decision (429/503 or breaker) from t={need:g}s ({need_why}) "
                f"to the end of stress while the SLO broke (first at t={over.t:g}s): the "
                "protections did not engage"
            )
            failed = (row, msg)
        judged.append(row)
    first = judged[0]
    ev.update(first_t=first["protected_at_s"], needs=judged)
    if "detect_s" in first:
        ev["detect_s"] = first["detect_s"]
    if failed is not None:
        return [_v("time_to_detect", "stress", FAIL, failed[1], **ev)]
    if first["protected_at_s"] is None:
        msg = f"{first['why']}, absorbed with no second over the SLO: no protective decision needed"
    else:
        msg = (
            f"detected {first['detect_s']:g} s after protection was needed at "
            f"t={first['at_s']:g}s ({first['why']}): {first['protection']}"
        )
    if len(judged) > 1:
        msg += f"; {len(judged) - 1} later need(s) met {c.th.detect}"
    return [_v("time_to_detect", "stress", PASS, msg, **ev)]


def _healthy(c: _Ctx, r: RequestSecond) -> bool:
    if r.sent == 0 or r.admitted == 0:
        return False
    if not c.th.error_rate.ok(r.failures / r.sent):
        return False
    if not c.th.goodput_floor.ok(r.admitted / r.sent):
        return False
    p99 = _second_p99(r)
    return p99 is not None and c.th.slo.ok(p99)


def time_to_recover(c: _Ctx) -> list[Verdict]:
    start = c.disturbance_end
    if start is None:
        return []
    hold = c.th.hold
    rows = c.h.requests_in(start - 1e-9, math.inf)
    ev: dict[str, Any] = dict(
        disturbance_end_s=start, hold_s=hold, budget=str(c.th.recover), slo=str(c.th.slo)
    )
    if len(rows) < hold:
        msg = f"{len(rows)} s recorded after the disturbance, need at least {hold} (hold)"
        return [_v("time_to_recover", "recovery", INCONCLUSIVE, msg, **ev)]
    run = 0
    for i, r in enumerate(rows):
        contiguous = i == 0 or r.t - rows[i - 1].t <= 1.0 + 1e-9
        # A breach resets the count; a gap in the rows restarts it at this second.
        run = (run + 1 if contiguous else 1) if _healthy(c, r) else 0
        if run >= hold:
            first = rows[i - hold + 1]
            ttr = max(0.0, first.t - start)
            ttr = round(ttr, 3)
            ev.update(recovered_at_s=first.t, ttr_s=ttr)
            if not c.th.recover.ok(ttr):
                msg = f"recovered only after {ttr:.1f} s, budget {c.th.recover}"
                return [_v("time_to_recover", "recovery", FAIL, msg, **ev)]
            relapse = _relapse(c, rows[i + 1 :])
            if relapse is not None:
                ev.update(relapse)
                msg = (
                    f"relapsed at t={relapse['relapse_at_s']:g}s after recovering at "
                    f"t={first.t:g}s: {relapse['relapse']} (worst second t="
                    f"{relapse['relapse_worst_s']:g}s)"
                )
                return [_v("time_to_recover", "recovery", FAIL, msg, **ev)]
            msg = (
                f"recovered {ttr:.1f} s after the disturbance (SLO held {hold} s) and held "
                "to the end of the run"
            )
            return [_v("time_to_recover", "recovery", PASS, msg, **ev)]
    span = rows[-1].t + 1 - start
    ev.update(recovered_at_s=None, observed_s=span)
    msg = (
        f"never recovered: the SLO did not hold for {hold} consecutive seconds in the "
        f"{span:g} s after the disturbance ended at t={start:g}s"
    )
    return [_v("time_to_recover", "recovery", FAIL, msg, **ev)]


def _relapse(c: _Ctx, rows: Sequence[RequestSecond]) -> dict[str, Any] | None:
    """The first window of `hold` consecutive seconds, after recovery and to the end of
    the run, whose merged figures break what a healthy second meets (admitted pNN,
    failures, admitted share), or None. Merged, so one second's noise does not relapse a
    run while one bad second (all failures) does; the run's last, partial second is not
    judged."""
    hold, th = c.th.hold, c.th
    rows = [r for r in rows if r.t + 1.0 <= c.h.end_s + 1e-9]
    for i in range(len(rows) - hold + 1):
        win = rows[i : i + hold]
        if win[-1].t - win[0].t > hold - 1 + 1e-9:  # a gap: not consecutive seconds
            continue
        tot = Totals.of(win)
        if tot.sent == 0:
            continue
        broke: list[str] = []
        err, adm_share = tot.share(tot.failures), tot.share(tot.admitted)
        if not th.error_rate.ok(err):
            broke.append(f"errors {_pct(err)} break {th.error_rate}{_classes(tot)}")
        if not th.goodput_floor.ok(adm_share):
            broke.append(f"admitted share {_pct(adm_share)} under {th.goodput_floor}")
        value, _n, _ = percentile_ms(win, "admitted", th.slo.percentile)
        if value is not None and not th.slo.ok(value):
            broke.append(f"admitted p{th.slo.percentile:g} {value:.1f} ms breaks {th.slo}")
        if broke:
            worst = max(win, key=lambda r: (r.failures + r.sent - r.admitted, _second_p99(r) or 0))
            at = next((r for r in win if not _healthy(c, r)), worst)
            return dict(
                relapse_at_s=at.t,
                relapse_window=[win[0].t, win[-1].t + 1.0],
                relapse_worst_s=worst.t,
                relapse="; ".join(broke) + f" over [{win[0].t:g}, {win[-1].t + 1:g}) s",
            )
    return None


def no_silent_loss(c: _Ctx) -> list[Verdict]:
    parts: list[tuple[Status, str]] = []
    bad = [r for r in c.h.requests if r.total != r.sent]
    ev: dict[str, Any] = dict(
        seconds=len(c.h.requests),
        mismatched_seconds=[[r.t, r.sent, r.total] for r in bad[:20]],
        mismatched_count=len(bad),
    )
    if bad:
        lost = sum(r.sent - r.total for r in bad)
        parts.append(
            (
                FAIL,
                f"{len(bad)} seconds where outcomes do not add up to sent "
                f"({lost:+d} requests without exactly one outcome), first at t={bad[0].t:g}s",
            )
        )
    else:
        parts.append((PASS, "every sent request has one outcome"))
    accepted = sum(r.outcomes.get("accepted", 0) for r in c.h.requests)
    imp = c.h.impressions
    ev["accepted_impressions"] = accepted
    if imp is None:
        if accepted:
            parts.append((INCONCLUSIVE, "impressions.json is missing: loss not accounted"))
    else:
        ev.update(
            acked=imp.acked,
            found=imp.found,
            missing=imp.missing,
            missing_sample=list(imp.missing_sample[:10]),
            budget=c.th.lost_impressions,
        )
        if imp.missing > c.th.lost_impressions:
            parts.append((FAIL, f"{imp.missing} of {imp.acked} acked impressions are not in Kafka"))
        elif not imp.complete or imp.error:
            parts.append(
                (INCONCLUSIVE, f"impression read-back incomplete: {imp.error or 'not complete'}")
            )
        else:
            parts.append((PASS, f"all {imp.acked} acked impressions found in Kafka"))
    st, msg = _combine(parts)
    return [_v("no_silent_loss", "run", st, msg, **ev)]


# --- layer signatures -----------------------------------------------------------------------
def _layer_off(c: _Ctx, section: str) -> bool:
    return c.target is not None and not getattr(c.target, section).enabled


def _publisher_limits(c: _Ctx) -> dict[str, tuple[float, float]]:
    if c.target is not None:
        return {p: (cfg.rate_per_s, float(cfg.burst)) for p, cfg in c.target.publishers.items()}
    t = c.h.scenario.target
    return {
        p: (t.publisher_rate_per_s, float(t.publisher_burst)) for p in c.h.scenario.publishers()
    }


def _worst_window(
    series: Sequence[tuple[float, int]], rate: float
) -> tuple[float, float, float, int]:
    """max over windows [a, b] of admitted - rate * length: (excess, a, b, admitted)."""
    best = (-math.inf, 0.0, 0.0, 0)
    cum = 0
    t0 = series[0][0] if series else 0.0
    lowest = (-rate * t0, t0, 0)  # (cum - rate*t, t, cum) before a
    for t, n in series:
        cum += n
        end = t + 1.0
        val = cum - rate * end
        excess = val - lowest[0]
        if excess > best[0]:
            best = (excess, lowest[1], end, cum - lowest[2])
        here = (cum - rate * end, end, cum)
        if here[0] < lowest[0]:
            lowest = here
    return best


def _edge_floor(
    series: Sequence[tuple[float, int, int]], rate: float, burst: float
) -> tuple[float, float, float, int, float]:
    """What a correct bucket lets through at least, against what it did: (shortfall, a, b,
    let through, owed) over the window [a, b) of the largest shortfall.

    `series` is (t, sent, let through the edge) per second. A fluid bucket (starting full,
    each second's requests spread over it) owes min(sent, tokens + rate) each second: a
    publisher under its rate is owed all it sent, one over it about its rate."""
    tokens = burst
    best = (0.0, 0.0, 0.0, 0, 0.0)
    run = (0.0, 0.0, 0, 0.0)  # (shortfall, start, let through, owed) of the window ending here
    prev = series[0][0] - 1.0 if series else 0.0
    for t, sent, through in series:
        tokens = min(burst, tokens + rate * max(0.0, t - prev - 1.0))  # seconds it sent nothing
        prev = t
        owed = min(float(sent), tokens + rate)
        tokens = min(burst, tokens + rate - owed)
        gap = owed - through
        if run[0] <= 0:
            run = (gap, t, through, owed)
        else:
            run = (run[0] + gap, run[1], run[2] + through, run[3] + owed)
        if run[0] > best[0]:
            best = (run[0], run[1], t + 1.0, run[2], run[3])
    return best


def layer_edge(c: _Ctx) -> list[Verdict]:
    limits = _publisher_limits(c)
    pubs: dict[str, list[tuple[float, int, int]]] = {}
    limited: dict[str, list[int]] = {}
    for r in c.h.requests:
        for pid, counts in r.publishers.items():
            pubs.setdefault(pid, []).append((r.t, counts.get("admitted", 0), counts.get("sent", 0)))
            limited.setdefault(pid, []).append(counts.get("rate_limited", 0))
    exercised = any(
        any(sent > limits.get(pid, (math.inf, 0))[0] for _, _, sent in rows)
        for pid, rows in pubs.items()
    ) or any(r.outcomes.get("rate_limited", 0) for r in c.h.requests)
    if not exercised:
        return []
    if not pubs:
        return [_v("layer.edge", "stress", INCONCLUSIVE, "no per-publisher counts recorded")]
    parts: list[tuple[Status, str]] = []
    bounds: dict[str, Any] = {}
    floors: dict[str, Any] = {}
    for pid, rows in sorted(pubs.items()):
        if pid not in limits:
            continue
        rate, burst = limits[pid]
        _excess, a, b, admitted = _worst_window([(t, n) for t, n, _ in rows], rate)
        # One second of slack: counts are attributed to the second a request was sent.
        allowed = burst + rate * (b - a + 1.0)
        bounds[pid] = dict(window=[a, b], admitted=admitted, allowed=round(allowed, 1))
        if admitted > allowed:
            parts.append(
                (
                    FAIL,
                    f"{pid} got {admitted} admitted in [{a:g}, {b:g}) s, above its bucket's "
                    f"burst + rate x t = {allowed:.0f}",
                )
            )
        if _layer_off(c, "edge"):
            continue
        # From below: what passed the edge (sent - 429) against what a correct bucket owes.
        series = [(t, s, s - n) for (t, _, s), n in zip(rows, limited[pid], strict=True)]
        short, fa, fb, through, owed = _edge_floor(series, rate, burst)
        slack = burst + rate  # the burst and one second
        floors[pid] = dict(
            window=[fa, fb], let_through=through, owed=round(owed, 1), slack=round(slack, 1)
        )
        if short > slack:
            parts.append(
                (
                    FAIL,
                    f"{pid} got {through} past the edge in [{fa:g}, {fb:g}) s, {short:.0f} short "
                    f"of the {owed:.0f} its own bucket owes it (what it sent, up to burst + "
                    f"rate x t; slack burst + 1 s = {slack:.0f}): a bucket shared or too small",
                )
            )
    iso = _isolation(c, pubs)
    if iso is not None:
        parts.append(iso[0])
        bounds["isolation"] = iso[1]
    if not any(s == FAIL for s, _ in parts):
        parts.append((PASS, "every publisher within burst + rate x t, and got what it was owed"))
    if _layer_off(c, "edge"):
        parts.append((PASS, "(edge token bucket switched off)"))
    ev: dict[str, Any] = dict(publishers=bounds, floors=floors)
    p = c.stress
    if p is not None:
        parts.extend(_rejection_speed(c, p, RATE_LIMITED, "429s answered", ev))
    st, msg = _combine(parts)
    return [_v("layer.edge", "stress", st, msg, **ev)]


def _isolation(
    c: _Ctx, pubs: dict[str, list[tuple[float, int, int]]]
) -> tuple[tuple[Status, str], dict[str, Any]] | None:
    load, p = c.h.scenario.load, c.stress
    if load.shape != "hot_publisher" or p is None:
        return None
    shares: dict[str, float] = {}
    for pid, rows in pubs.items():
        if pid == load.hot_publisher:
            continue
        sent = sum(s for t, _, s in rows if p.start_s <= t < p.end_s)
        adm = sum(a for t, a, _ in rows if p.start_s <= t < p.end_s)
        if sent:
            shares[pid] = round((sent - adm) / sent, 4)
    bad = {k: v for k, v in shares.items() if not c.th.isolation.ok(v)}
    ev = dict(hot=load.hot_publisher, not_admitted_share=shares, budget=str(c.th.isolation))
    if bad:
        worst = max(bad, key=lambda k: bad[k])
        msg = (
            f"hot publisher {load.hot_publisher} starved others: {worst} lost "
            f"{_pct(bad[worst])} of its requests (budget {c.th.isolation})"
        )
        return (FAIL, msg), ev
    return (PASS, "other publishers isolated from the hot one"), ev


# The layer label under which the target counts each judged rejection's server-side cost.
_REJECTION_LAYER = {RATE_LIMITED: "edge", BULKHEAD_FULL: "auction", SHED: "impressions"}
_ESTIMATE = "upper edge of the histogram bucket holding the percentile (an upper bound)"


def _rejection_speed(
    c: _Ctx, p: Phase, decision: str, what: str, ev: dict[str, Any], *, wait_ms: float = 0.0
) -> list[tuple[Status, str]]:
    """Was `decision` answered fast? Judged twice, over the run after warmup: on the
    target's own rejection histogram (`server_reject`), and on the client-side rejected
    latency of the seconds whose rejections were (>= 90%) `decision` (`client_reject`), so
    neither a target whose histogram lies nor a slow path the histogram misses passes. Both
    bounds get `wait_ms`, the wait the layer may take by design. Empty: nothing to judge.
    Fills `ev` with both figures."""
    parts: list[tuple[Status, str]] = []
    warm = c.h.phase("warmup")
    start = warm.end_s if warm else p.start_s
    extra = f" + {wait_ms:g} ms designed wait" if wait_ms else ""
    cb = c.th.client_reject
    cbound = LatencyBound(cb.percentile, cb.op, cb.bound_ms + wait_ms)
    rows = _pure_rejection_rows(c, start, decision)
    rej, n, _ = percentile_ms(rows, "rejected", cb.percentile)
    ev.update(
        rejected_latency_ms=_r(rej), rejected=n, client_seconds=len(rows),
        client_bound=str(cbound) + (f" ({cb}{extra})" if wait_ms else ""),
    )  # fmt: skip
    judged = []
    if rej is not None:
        judged.append("client")
        tag = f"p{cb.percentile:g} {rej:.1f} ms client-side"
        if cbound.ok(rej):
            parts.append((PASS, f"{what} in {tag}"))
        else:
            parts.append((FAIL, f"{what} in {tag}, above {ev['client_bound']}"))
    sb = c.th.server_reject
    server = server_rejections(
        c.h.samples_in(start, math.inf), _REJECTION_LAYER[decision], sb.percentile
    )
    if server is not None:
        bound = LatencyBound(sb.percentile, sb.op, sb.bound_ms + wait_ms)
        above = server.p_ms is not None and math.isinf(server.p_ms)
        ev.update(
            server_layer=server.layer,
            server_window=[server.first_t, server.last_t],
            server_rejected=server.count,
            server_latency_ms=None if above else _r(server.p_ms, 3),
            server_latency_above_ms=server.last_edge_ms if above else None,
            server_estimate=_ESTIMATE,
            server_bound=str(bound) + (f" ({sb}{extra})" if wait_ms else ""),
        )
        if server.p_ms is not None:
            judged.append("server")
            parts.append(_server_part(what, server, sb, bound, ev["server_bound"]))
    ev["reject_latency_judged_on"] = " and ".join(judged) or (
        "neither (no such rejection, or no seconds pure enough client-side and no server-side "
        "rejection histogram)"
    )
    return parts


def _pure_rejection_rows(c: _Ctx, start: float, decision: str) -> list[RequestSecond]:
    """The seconds from `start` whose rejections were (>= 90%) `decision`: per-second
    histograms mix rejection kinds, so nearly pure seconds stand for it (a second mixing
    sheds with slow redis_unavailable 503s says nothing of sheds)."""
    return [
        r
        for r in c.h.requests_in(start, math.inf)
        if r.rejected and r.decisions.get(decision, 0) >= 0.9 * r.rejected
    ]


def _server_part(
    what: str, server: ServerRejections, sb: LatencyBound, bound: LatencyBound, shown: str
) -> tuple[Status, str]:
    # A bucket holds values <= its edge: an edge equal to a `<` bound is within it.
    assert server.p_ms is not None
    if math.isinf(server.p_ms):
        tag = f"p{sb.percentile:g} > {server.last_edge_ms:g} ms server-side (the last bucket)"
        return FAIL, f"{what} in {tag}, above {shown}"
    tag = f"p{sb.percentile:g} <= {server.p_ms:g} ms server-side"
    if server.p_ms <= bound.bound_ms:
        return PASS, f"{what} in {tag}"
    return FAIL, f"{what} in {tag} (a bucket's upper edge), above {shown}"


def layer_bulkhead(c: _Ctx) -> list[Verdict]:
    p = c.stress
    if p is None:
        return []
    ceiling, src = _ceiling(c)
    inflight, at = _gauge_max(c, _inflight_peak)
    redis_fault = any(w.proxy == "redis" for w in c.h.faults)
    full = sum(r.decisions.get("bulkhead_full", 0) for r in c.h.requests)
    at_limit = inflight is not None and ceiling is not None and inflight >= ceiling
    if not (redis_fault or full or at_limit):
        return []
    ev: dict[str, Any] = dict(
        max_inflight=inflight, max_inflight_t=at, ceiling=ceiling, ceiling_source=src,
        bulkhead_full=full,
    )  # fmt: skip
    off = _layer_off(c, "auction")
    if inflight is None or ceiling is None:
        msg = "auction inflight was not exported: the limit cannot be checked"
        if off:
            msg = (
                "the auction concurrency limit is switched off (auction.enabled = false) and "
                "the target exports no inflight without it: the bound cannot be checked"
            )
        return [_v("layer.bulkhead", "stress", INCONCLUSIVE, msg, enabled=not off, **ev)]
    parts: list[tuple[Status, str]] = []
    if inflight > ceiling:
        why = " (limit switched off)" if off else ""
        parts.append(
            (FAIL, f"inflight {inflight:g} exceeded the ceiling {ceiling:g} by t={at:g}s{why}")
        )
    else:
        parts.append((PASS, f"inflight never above {ceiling:g} (max {inflight:g})"))
    wait_ms = float(c.target.auction.max_wait_ms) if c.target is not None and not off else 0.0
    parts.extend(
        _rejection_speed(c, p, BULKHEAD_FULL, "bulkhead_full answered", ev, wait_ms=wait_ms)
    )
    st, msg = _combine(parts)
    return [_v("layer.bulkhead", "stress", st, msg, **ev)]


def layer_shedder(c: _Ctx) -> list[Verdict]:
    p = c.stress
    if p is None:
        return []
    cap, src = _queue_cap(c)
    depth, at = _gauge_max(c, lambda s: s.queue_depth)
    kafka_fault = any(w.proxy == "kafka" for w in c.h.faults)
    shed = sum(r.outcomes.get("shed", 0) for r in c.h.requests)
    if not (kafka_fault or shed):
        return []
    ev: dict[str, Any] = dict(
        max_queue_depth=depth, max_queue_depth_t=at, cap=cap, cap_source=src, shed=shed
    )
    if depth is None or cap is None:
        msg = "the impression queue depth was not exported: the cap cannot be checked"
        return [_v("layer.shedder", "stress", INCONCLUSIVE, msg, **ev)]
    parts: list[tuple[Status, str]] = []
    if depth > cap:
        off = " (shedding switched off)" if _layer_off(c, "impressions") else ""
        parts.append((FAIL, f"queue depth reached {depth:g} at t={at:g}s > cap {cap:g}{off}"))
    else:
        parts.append((PASS, f"queue depth never above {cap:g} (max {depth:g})"))
    parts.extend(_rejection_speed(c, p, SHED, "sheds answered", ev))
    st, msg = _combine(parts)
    return [_v("layer.shedder", "stress", st, msg, **ev)]


def _dsp_windows(c: _Ctx) -> dict[str, FaultWindow]:
    out: dict[str, FaultWindow] = {}
    for w in c.h.faults:
        if not w.proxy.startswith("dsp"):
            continue
        prev = out.get(w.proxy)
        if prev is None:
            out[w.proxy] = w
        else:
            start, end = min(prev.start_s, w.start_s), max(prev.end_s, w.end_s)
            out[w.proxy] = FaultWindow(w.proxy, prev.fault, start, end, prev.source)
    return out


def layer_breaker(c: _Ctx) -> list[Verdict]:
    windows = _dsp_windows(c)
    if not windows:
        return []
    if not any(s.breakers for s in c.h.samples):
        msg = "no breaker states were exported: the breakers cannot be checked"
        return [_v("layer.breaker", "stress", INCONCLUSIVE, msg)]
    rec = c.h.phase("recovery")
    deadline = rec.end_s if rec else c.h.end_s
    parts: list[tuple[Status, str]] = []
    per: dict[str, Any] = {}
    for dsp, w in sorted(windows.items()):
        during = c.h.samples_in(w.start_s, w.end_s + 2.0)
        opened = next((s.t for s in during if s.breakers.get(dsp) in _PROTECTIVE_BREAKER), None)
        states = sorted({s.breakers.get(dsp, "?") for s in during})
        after = [s for s in c.h.samples_in(w.end_s, deadline) if dsp in s.breakers]
        closed = next((s.t for s in after if s.breakers[dsp] == "closed"), None)
        final = after[-1].breakers[dsp] if after else None
        per[dsp] = dict(
            fault=[w.start_s, w.end_s], opened_at=opened, closed_at=closed,
            state_at_deadline=final, states_during=states, deadline_s=deadline,
        )  # fmt: skip
        if opened is None:
            parts.append(
                (FAIL, f"{dsp}'s breaker never opened during its fault (states: {states})")
            )
        elif not after:
            parts.append((INCONCLUSIVE, f"no samples after {dsp}'s fault to see it close"))
        elif final != "closed":
            parts.append(
                (FAIL, f"{dsp}'s breaker is still {final} at t={deadline:g}s (end of recovery)")
            )
        else:
            parts.append((PASS, f"{dsp} opened at t={opened:g}s, closed by t={closed:g}s"))
    st, msg = _combine(parts)
    return [_v("layer.breaker", "stress", st, msg, dsps=per)]


# --- entry point ----------------------------------------------------------------------------
VERDICTS: tuple[Callable[[_Ctx], list[Verdict]], ...] = (
    valid_run,
    steady_state,
    no_unexpected_errors,
    graceful_degradation,
    bounded_resources,
    time_to_detect,
    time_to_recover,
    no_silent_loss,
)
LAYERS: tuple[Callable[[_Ctx], list[Verdict]], ...] = (
    layer_edge,
    layer_bulkhead,
    layer_shedder,
    layer_breaker,
)


def _target_config(history: History) -> Any:
    if history.external:
        return None
    from spikegate.target.config import TargetConfig  # the reference target's defaults and switches

    sc = history.scenario
    data = sc.target_config(
        redis_url="redis://127.0.0.1:6379",
        kafka_bootstrap="127.0.0.1:9092",
        dsp_urls={n: "http://127.0.0.1:1" for n in sc.dsp_names()},
    )
    try:
        return TargetConfig.model_validate(data)
    except ValueError:
        return None


def check(history: History, thresholds: Thresholds | None = None) -> CheckResult:
    """Judge `history` (pure: same history and thresholds, same verdicts)."""
    th = thresholds or thresholds_from_checks(history.scenario.checks)
    ctx = _Ctx(history, th, _target_config(history))
    verdicts: list[Verdict] = []
    for fn in VERDICTS:
        verdicts.extend(fn(ctx))
    if th.layers and not history.external:
        for fn in LAYERS:
            verdicts.extend(fn(ctx))
    return CheckResult(tuple(verdicts), th.to_json())
