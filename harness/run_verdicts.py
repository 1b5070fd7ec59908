"""Run verdicts: judged for any HTTP service, from the generator's record, the samples and
the harness's independent evidence.

    valid_run, steady_state, no_unexpected_errors, graceful_degradation, bounded_resources,
    time_to_detect, time_to_recover, no_silent_loss

One small function per verdict, each returning its verdicts with evidence (windows, counts,
thresholds, timestamps) and a message a person can act on. Too little data gives
inconclusive, never pass.

A user's own service (target kind "command" or "external") is judged by the same functions
from the outside (the generator's record; designed rejections are the statuses its
[outcomes] names), with three differences, each on the service's side only:
    valid_run             the latency clock check needs the service's own duration
                          histogram: without one it is left out (named in the evidence)
    graceful_degradation  rejection speed is also judged client-side against
                          `client_reject` on every designed rejection of stress: no layer
                          signature times them (there is no server-side histogram)
    no_silent_loss        the outcome accounting (every sent request has exactly one
                          outcome) is judged; the Kafka read-back is skipped, the service
                          keeping no acknowledged-write log the harness can read back. The
                          verdict passes or fails on the accounting, and is skipped only
                          when no request was recorded at all (nothing to account).
bounded_resources and the layer signatures of such a service are in blackbox_verdicts.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from spikegate.contract.outcomes import (
    ADMITTED_OUTCOMES,
    DESIGNED_REJECTIONS,
    FAILURES,
)
from spikegate.harness.evidence import clock_gap, server_admitted_over
from spikegate.harness.figures import (
    SendLateness,
    Totals,
    _decode,
    _pct,
    _r,
    _second_p99,
    percentile_ms,
)
from spikegate.harness.history import FaultWindow, RequestSecond
from spikegate.harness.intended import comparable, expected_arrivals, schedule_tolerance
from spikegate.harness.judging import (
    _PROTECTIVE_BREAKER,
    JUDGED_PHASES,
    _ceiling,
    _combine,
    _Ctx,
    _gauge_max,
    _inflight_peak,
    _queue_cap,
    _v,
    settle_windows,
)
from spikegate.harness.scenario import Phase
from spikegate.harness.session import is_session
from spikegate.harness.thresholds import LatencyBound
from spikegate.harness.verdicts import FAIL, INCONCLUSIVE, PASS, SKIPPED, Status, Verdict
from spikegate.locustfiles.live_rate import HORIZON_S, POLL_S

CLOCK_SKIPPED = (
    "skipped where the service exports no duration histogram of its own: the generator's "
    "latency clock has nothing to be held against"
)
KAFKA_SKIPPED = (
    "the Kafka read-back is skipped: your service keeps no acknowledged-write log the "
    "harness can read back (no broker of ours holds its writes)"
)


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
    gap = clock_gap(c.h)
    if gap is not None:
        run_parts.append((FAIL, (
            f"the target spent over {gap.edge_s * 1000:g} ms on {gap.server_over} admitted "
            f"responses, the generator timed only {gap.client_over} that slow: its latency "
            "clock misses part of every request"
        )))  # fmt: skip
    st, msg = _combine(run_parts or [(PASS, "the run completed with load recorded")])
    clock: dict[str, Any] = {}
    if not c.reference and not server_admitted_over(c.h.samples):
        clock["clock_check"] = CLOCK_SKIPPED
    out.append(_v("valid_run", "run", st, msg, status=status, crashes=len(crashes), **clock))
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
        schedule = _schedule_part(c, p, rows)
        if schedule is not None:
            parts.append(schedule[0])
        torn = _latencies_disagree(rows)
        if torn is not None:
            parts.append((FAIL, torn))
        if cpu90 is not None and not th.generator_cpu.ok(cpu90 / 100):
            parts.append(
                (
                    INCONCLUSIVE,
                    f"the generator was CPU-starved in {p.name} (p90 {cpu90:.0f}% of a core, "
                    f"bound {th.generator_cpu.op} {th.cpu_max_percent:g}%)",
                )
            )
        late_part, late_data = _lateness_part(p.name, rows, th.generator_lateness_p99_ms)
        if late_part is not None:
            parts.append(late_part)
        st, msg = _combine([(PASS, f"generator held {_pct(held or 0)} of arrivals"), *parts])
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
                **late_data,
                **(schedule[1] if schedule is not None else {}),
            )
        )
    return out


LATENESS_UNRECORDED = (
    "not judged: the rows carry no send-lateness counts (an older run directory, or a "
    "recorder that does not keep them)"
)
LATENESS_UNNOTED = "not judged: the generator noted the lateness of no send in this phase"


def _lateness_part(
    phase: str, rows: Sequence[RequestSecond], p99_ms: float
) -> tuple[tuple[Status, str] | None, dict[str, Any]]:
    """The generator sent on schedule: its p99 send lateness within `p99_ms`, i.e. at most
    1% of the phase's sends later than it. A generator near its limit sends everything,
    late, and its own delay would be judged as the service's latency."""
    late = SendLateness.of(rows)
    data: dict[str, Any] = {"lateness_p99_bound_ms": p99_ms}
    if late is None or late.sends == 0:
        data["lateness"] = LATENESS_UNRECORDED if late is None else LATENESS_UNNOTED
        return None, data
    bound = SendLateness.bound_for(p99_ms)
    share = late.share_over(bound)
    data.update(
        lateness_sends=late.sends,
        late_sends=late.over_ms.get(bound, 0),
        late_share=_r(share, 4),
        lateness_read_at_ms=bound,
        lateness_p99_at_most_ms=late.p99_at_most_ms(),
    )
    if late.seconds_without:
        data["lateness_seconds_unrecorded"] = late.seconds_without
    if share <= 0.01:
        return None, data
    read_at = "" if bound == p99_ms else f", read at the {bound} ms bound below it"
    return (
        INCONCLUSIVE,
        f"the generator sent {_pct(share)} of its {late.sends} arrivals in {phase} more than "
        f"{bound} ms late: its p99 send lateness is over checks.generator_lateness_p99_ms "
        f"= {p99_ms:g} ms{read_at}, so its own delay would count as the service's latency "
        "(add --processes or workers, or lower the rate)",
    ), data


def _latencies_disagree(rows: Sequence[RequestSecond]) -> str | None:
    """The generator's record agrees with itself: every admitted response has one latency in
    the admitted histogram and every designed rejection one in the rejected histogram (a
    recorder that files 429s under admitted dilutes the admitted p99 with fast rejections)."""
    for r in rows:
        for which, enc, n in (
            ("admitted", r.hist_admitted, r.admitted),
            ("rejected", r.hist_rejected, r.rejected),
        ):
            h = _decode(enc)
            timed = 0 if h is None else int(h.get_total_count())
            if enc is not None and h is None:
                continue  # unreadable: the percentile falls back to the per-second copies
            if timed != n:
                return (
                    f"at t={r.t:g}s the generator's {which} latency histogram holds {timed} "
                    f"responses but it counted {n} {which}: its latencies cannot be trusted"
                )
    return None


LIVE_APPLY_S = POLL_S + HORIZON_S  # how late a load change by hand reaches the generator


def _live_slack(c: _Ctx, p: Phase) -> float:
    """A session's load changes by hand reach each generating process within LIVE_APPLY_S
    of their event (a poll plus the schedule's horizon), not at its instant: each change in
    or just before the phase may move that much of its rate difference across the edge."""
    if not is_session(c.h.meta):
        return 0.0
    load = c.h.scenario.load
    slack, rate = 0.0, load.base_rps
    for step in load.steps:
        if p.start_s - 1.0 <= step.at_s < p.end_s:
            slack += abs(step.rps - rate) * LIVE_APPLY_S
        rate = step.rps
    return slack


def _schedule_part(
    c: _Ctx, p: Phase, rows: Sequence[RequestSecond]
) -> tuple[tuple[Status, str], dict[str, Any]] | None:
    """The generator's intended bid arrivals against the harness's own schedule, computed
    from the scenario's [load] (harness/intended.py): a generator or recorder that loses
    requests from its own count (intended, sent and outcomes alike) falls short of it."""
    load = c.h.scenario.load
    if not rows or comparable(load) is not None:
        return None
    expected = sum(expected_arrivals(load, r.t, r.t + 1.0) for r in rows)
    recorded = sum(r.intended - sum(r.endpoints.get("impression", {}).values()) for r in rows)
    tol = schedule_tolerance(expected, load) + _live_slack(c, p)
    ev = dict(
        schedule_expected=round(expected, 1), schedule_recorded=recorded,
        schedule_tolerance=round(tol, 1),
    )  # fmt: skip
    if expected - recorded > tol:
        return (FAIL, (
            f"the generator recorded {recorded} intended bid arrivals in {p.name}, the "
            f"scenario's schedule calls for {expected:.0f} (tolerance {tol:.0f}): requests "
            "are missing from the generator's own record"
        )), ev  # fmt: skip
    return (PASS, f"schedule kept ({recorded} of {expected:.0f} arrivals)"), ev


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
    should = "fast 429/503 with a decision header"
    if not c.reference:
        rejected = ", ".join(str(x) for x in c.h.scenario.outcomes.rejected)
        should = f"fast designed rejections (statuses {rejected}, [outcomes] rejected)"
    msg = (
        f"{_pct(share)} of stress requests failed outside designed rejections ({top}); "
        f"budget {c.th.unexpected_errors}: these should be {should}"
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
    settle = settle_windows(c, p)
    settled = [r for r in c.rows(p) if not any(a <= r.t < b for a, b in settle)]
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
    client: dict[str, Any] = {}
    if not c.reference:  # no layer signature times a black box's rejections: judged here
        parts.extend(client_reject_part(c, settled, "designed rejections answered", client))
    st, msg = _combine(parts)
    return [
        _v(
            "graceful_degradation",
            "stress",
            st,
            msg,
            window=[p.start_s, p.end_s],
            sent_rps=round(offered, 2),
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
            latency_excludes=[[a, b] for a, b in settle],
            **client,
        )
    ]


def client_reject_part(
    c: _Ctx, rows: Sequence[RequestSecond], what: str, ev: dict[str, Any]
) -> list[tuple[Status, str]]:
    """The client-side latency of the designed rejections in `rows` against `client_reject`:
    a rejection is the cheap answer to work refused, so one that takes as long as the work
    (a 503 after a queue wait or a timeout) protects nothing. Empty without rejections.
    Fills `ev` with the figure, the count and the bound."""
    cb = c.th.client_reject
    value, n, _ = percentile_ms(rows, "rejected", cb.percentile)
    ev.update(client_rejected=n, client_reject_latency_ms=_r(value), client_reject=str(cb))
    if value is None or n == 0:
        return []
    tag = f"p{cb.percentile:g} {value:.1f} ms client-side"
    if cb.ok(value):
        return [(PASS, f"{what} in {tag}")]
    return [(FAIL, (
        f"{what} in {tag}, above {cb} ({n} rejections): a designed rejection must be "
        "answered at once, not after the work it refuses"
    ))]  # fmt: skip


def bounded_resources(c: _Ctx) -> list[Verdict]:
    ok_samples = [s for s in c.h.samples if s.ok]
    if not ok_samples:
        if not c.reference:
            return []
        return [_v("bounded_resources", "run", INCONCLUSIVE, "no successful /metrics sample")]
    parts: list[tuple[Status, str]] = []
    ev: dict[str, Any] = {}
    inflight, at = _gauge_max(c, _inflight_peak)
    ceiling, src = _ceiling(c)
    ev.update(max_inflight=inflight, max_inflight_t=at, ceiling=ceiling, ceiling_source=src)
    parts.extend(_at_most("inflight", "auction inflight", inflight, at, ceiling))
    depth, dat = _gauge_max(c, lambda s: s.queue_depth)
    cap, qsrc = _queue_cap(c)
    ev.update(max_queue_depth=depth, max_queue_depth_t=dat, queue_cap=cap, queue_source=qsrc)
    parts.extend(_at_most("queue depth", "impression queue depth", depth, dat, cap))
    parts.extend(rss_parts(c, ev))
    if not parts:
        if not c.reference:
            return []
        return [
            _v("bounded_resources", "run", INCONCLUSIVE, "no resource gauge was exported", **ev)
        ]
    st, msg = _combine(parts)
    return [_v("bounded_resources", "run", st, msg, **ev)]


def _at_most(
    short: str, name: str, peak: float | None, at: float | None, bound: float | None
) -> list[tuple[Status, str]]:
    """A gauge's peak against its bound (nothing to judge when either is unknown)."""
    if peak is None or bound is None:
        return []
    if peak <= bound:
        return [(PASS, f"{short} <= {bound:g}")]
    return [(FAIL, f"{name} reached {peak:g} at t={at:g}s > {bound:g}")]


def rss_parts(c: _Ctx, ev: dict[str, Any]) -> list[tuple[Status, str]]:
    """The target's RSS growth over its baseline level against `rss_growth`; empty when no
    RSS was sampled. Fills `ev`."""
    growth = _rss_growth(c)
    if growth is None:
        return []
    base, peak, peak_t = growth
    g = peak - base
    ev.update(rss_baseline_bytes=base, rss_peak_bytes=peak, rss_peak_t=peak_t, rss_growth=g)
    ev["rss_budget"] = str(c.th.rss_growth)
    if c.th.rss_growth.ok(g):
        return [(PASS, f"RSS grew {g / 1e6:.1f} MB")]
    return [(FAIL, f"RSS grew {g / 1e6:.1f} MB by t={peak_t:g}s, budget {c.th.rss_growth}")]


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
    elif not c.h.requests and not c.reference:
        parts.append((SKIPPED, "no request was recorded: there is nothing to account"))
    else:
        parts.append((PASS, "every sent request has one outcome"))
    accepted = sum(r.outcomes.get("accepted", 0) for r in c.h.requests)
    imp = c.h.impressions
    ev["accepted_impressions"] = accepted
    if not c.reference:  # impressions.json, if any, only says why nothing was read back
        parts.append((SKIPPED, KAFKA_SKIPPED))
        ev["kafka_read_back"] = KAFKA_SKIPPED
    elif imp is None:
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
        if imp.acked != accepted:
            what = "lost" if imp.acked < accepted else "holds ids never answered 202"
            parts.append((FAIL, (
                f"the generator's ack log {what}: it holds {imp.acked} impression ids but "
                f"{accepted} impressions were answered 202 (its own per-second counts); "
                "loss cannot be judged on the ack log"
            )))  # fmt: skip
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
