"""Layer verdicts: the signature of each backpressure pattern of the reference target.

    layer.edge       per-publisher token bucket: admissions bounded above and below, fast 429s
    layer.bulkhead   auction concurrency limit: in-flight ceiling, fast bulkhead_full
    layer.shedder    impression logger: queue cap, fast sheds
    layer.breaker    per-DSP circuit breaker: opens in each fault window, closes after it

Judged only for the reference target and only for layers the scenario exercises; a layer
switched off (ablation) that is exercised fails.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from spikegate.contract.outcomes import (
    BULKHEAD_FULL,
    NO_BID,
    OK,
    RATE_LIMITED,
    SHED,
)
from spikegate.harness.evidence import (
    INFLIGHT_SLACK,
    REDIS_PROXY,
    counts_over,
    impression_backlog,
    inflight_tolerance,
    proxy_peak,
    queue_tolerance,
    server_admitted_over,
    worst_backlog,
)
from spikegate.harness.figures import ServerRejections, _pct, _r, percentile_ms, server_rejections
from spikegate.harness.history import FaultWindow, RequestSecond, Sample
from spikegate.harness.judging import (
    _PROTECTIVE_BREAKER,
    _ceiling,
    _combine,
    _Ctx,
    _gauge_max,
    _inflight_peak,
    _queue_cap,
    _v,
    settle_windows,
)
from spikegate.harness.run_verdicts import _hard
from spikegate.harness.scenario import Phase
from spikegate.harness.target_facts import TargetFacts
from spikegate.harness.thresholds import LatencyBound
from spikegate.harness.verdicts import FAIL, INCONCLUSIVE, PASS, Status, Verdict


# --- layer signatures -----------------------------------------------------------------------
def _layer_off(c: _Ctx, section: str) -> bool:
    return c.target is not None and c.target.off(section)


def _publisher_limits(c: _Ctx) -> dict[str, tuple[float, float]]:
    if c.target is not None:
        return dict(c.target.publishers)
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
    parts.extend(_retry_after(c, ev))
    st, msg = _combine(parts)
    return [_v("layer.edge", "stress", st, msg, **ev)]


def _retry_after(c: _Ctx, ev: dict[str, Any]) -> list[tuple[Status, str]]:
    """Every 429 tells the client when to come back: Retry-After, integer seconds >= 1
    (PATTERNS.md). A 0 (or none) invites the retry storm the edge exists to stop."""
    limited = sum(r.outcomes.get(RATE_LIMITED, 0) for r in c.h.requests)
    bad = [(r.t, r.retry_after_invalid.get(RATE_LIMITED, 0)) for r in c.h.requests]
    bad = [(t, n) for t, n in bad if n]
    ev["retry_after_invalid"] = sum(n for _, n in bad)
    if not limited:
        return []
    if bad:
        n = sum(k for _, k in bad)
        return [(FAIL, (
            f"{n} of {limited} 429s carried no Retry-After of integer seconds >= 1 "
            f"(first at t={bad[0][0]:g}s): clients are told to retry at once"
        ))]  # fmt: skip
    return [(PASS, f"every 429 carried Retry-After >= 1 s ({limited})")]


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
    bounds get `wait_ms`, the wait the layer may take by design. The first `settle` after
    the stress start and each fault onset is left out on both sides, as for admitted
    latencies: a 5x spike's first second stalls every timer of a 2-core machine once.
    Empty: nothing to judge. Fills `ev` with both figures."""
    parts: list[tuple[Status, str]] = []
    warm = c.h.phase("warmup")
    start = warm.end_s if warm else p.start_s
    extra = f" + {wait_ms:g} ms designed wait" if wait_ms else ""
    cb = c.th.client_reject
    cbound = LatencyBound(cb.percentile, cb.op, cb.bound_ms + wait_ms)
    settle = settle_windows(c, p)
    rows = [
        r
        for r in _pure_rejection_rows(c, start, decision)
        if not any(a <= r.t < b for a, b in settle)
    ]
    rej, n, _ = percentile_ms(rows, "rejected", cb.percentile)
    ev.update(
        rejected_latency_ms=_r(rej), rejected=n, client_seconds=len(rows),
        reject_latency_excludes=[[a, b] for a, b in settle],
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
        c.h.samples_in(start, math.inf), _REJECTION_LAYER[decision], sb.percentile, settle
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
        parts.extend(_histogram_counts_them(c, start, decision, ev))
    ev["reject_latency_judged_on"] = " and ".join(judged) or (
        "neither (no such rejection, or no seconds pure enough client-side and no server-side "
        "rejection histogram)"
    )
    return parts


def _histogram_counts_them(
    c: _Ctx, start: float, decision: str, ev: dict[str, Any]
) -> list[tuple[Status, str]]:
    """The target's rejection-cost histogram must time the rejections the generator
    received: a histogram that leaves a kind out makes its speed unjudgeable server-side."""
    received = sum(r.decisions.get(decision, 0) for r in c.h.requests_in(start, math.inf))
    layer = _REJECTION_LAYER[decision]
    timed = server_rejections(c.h.samples_in(start, math.inf), layer, 99.0)
    if timed is None or received < 20:
        return []
    ev.update(server_timed=timed.count, client_received=received)
    if timed.count < 0.9 * received - 5:
        return [(FAIL, (
            f"the target's rejection-cost histogram timed {timed.count} {layer} rejections, "
            f"the generator received {received} {decision}: the target does not measure "
            "what it answers"
        ))]  # fmt: skip
    return []


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
    parts.extend(_redis_agrees(c, inflight, ceiling, ev))
    parts.extend(_fails_closed(c, ev))
    if c.target is not None and not off:
        parts.extend(_permits_kept(c, c.target, ev))
    wait_ms = c.target.auction_max_wait_ms if c.target is not None and not off else 0.0
    parts.extend(
        _rejection_speed(c, p, BULKHEAD_FULL, "bulkhead_full answered", ev, wait_ms=wait_ms)
    )
    st, msg = _combine(parts)
    return [_v("layer.bulkhead", "stress", st, msg, **ev)]


def _abandoning(c: _Ctx) -> list[tuple[float, float]]:
    """Spans where a Redis fault can hold a call past the target's Redis timeout. The auction
    then abandons the call at the timeout and frees its permit (503 redis_unavailable), while
    the proxy counts it outstanding until it ends: by design the proxy counts more than the
    auctions in flight. Such faults are:

    - a latency fault whose delay (latency + jitter) reaches the timeout;
    - every other Redis fault (reset, down, timeout, bandwidth, slicer, limit_data): each
      breaks or slows connections, and the client's reconnects then pass through the proxy
      at over a hundred a second. On a loaded machine that churn can hold a call past the
      timeout. Seen in failure-paths as a reset began: Redis had 7 requests outstanding while
      the target reported 6 auctions in flight, with 119 connections accepted in that second.

    A latency fault below the timeout is still judged. Each span runs to the fault's end, plus
    the fault's delay (or its `timeout_ms`) and one sampling interval."""
    if c.target is None:
        return []
    timeout_ms = c.target.redis_timeout_ms
    out: list[tuple[float, float]] = []
    for w in c.h.faults:
        if w.proxy != REDIS_PROXY:
            continue
        latency = w.fault.rsplit("_", 1)[-1] == "latency"
        keys: tuple[str, ...] = ("latency_ms", "jitter_ms") if latency else ("timeout_ms",)
        delay_ms = sum(float(v) for k in keys if isinstance(v := w.params.get(k, 0), int | float))
        if not latency or delay_ms >= timeout_ms:
            out.append((w.start_s, w.end_s + delay_ms / 1000.0 + 1.0))
    return out


def _judged_samples(c: _Ctx, spans: Sequence[tuple[float, float]]) -> list[Sample | None]:
    """The samples, None where a sample's interval (t - 1, t] touches an abandoning span,
    with a second of slack for a scrape that lands after its tick (the seconds beside)."""
    return [
        None if any(a < s.t + 1.0 and s.t - 1.0 < b for a, b in spans) else s for s in c.h.samples
    ]


def _redis_agrees(
    c: _Ctx, inflight: float, ceiling: float, ev: dict[str, Any]
) -> list[tuple[Status, str]]:
    """The bulkhead against the chaos proxy's count of Redis requests outstanding: the
    auction sends one Redis request at a time, so Redis never has more outstanding than
    the target has auctions in flight (second by second), nor more than the ceiling. The
    seconds where the auction abandons Redis calls by design (`_abandoning`) are left out."""
    spans = _abandoning(c)
    judged = _judged_samples(c, spans)
    kept = [s for s in judged if s is not None]
    left_out = len(judged) - len(kept)
    if spans:
        ev["redis_abandoning_spans"] = [[round(a, 3), round(b, 3)] for a, b in spans]
        ev["redis_samples_left_out"] = left_out
    peak = proxy_peak(kept, REDIS_PROXY)
    if peak is None:
        ev["redis_outstanding_max"] = None
        return []  # a real toxiproxy-server (or an older run) counts nothing
    tol = inflight_tolerance(ceiling)
    ev.update(
        redis_outstanding_max=peak.value, redis_outstanding_max_t=peak.t, evidence_tolerance=tol
    )
    parts: list[tuple[Status, str]] = []
    if peak.value > ceiling + tol:
        parts.append((FAIL, (
            f"Redis had {peak.value:g} requests outstanding at once by t={peak.t:g}s (chaos "
            f"proxy) > ceiling {ceiling:g} + {tol:g}, while the target reported in-flight "
            f"at most {inflight:g}"
        )))  # fmt: skip
    elif (gap := _inflight_gap(c, judged)) is not None:
        t, outstanding, reported = gap
        ev.update(inflight_disagrees_t=t, inflight_disagrees=[outstanding, reported])
        parts.append((FAIL, (
            f"the target's in-flight disagrees with the chaos proxy: at t={t:g}s Redis had "
            f"{outstanding:g} requests outstanding at once, while the target reported at "
            f"most {reported:g} auctions in flight in that second and the ones beside it"
        )))  # fmt: skip
    else:
        why = ""
        if left_out:
            why = (
                f"; {left_out} samples in Redis faults that can hold a call past the "
                f"auction's Redis timeout ({c.target.redis_timeout_ms if c.target else 0:g} "
                "ms: a delay that long, or connections reset, refused or slowed) not "
                "compared: the auction abandons those calls by design, the proxy still "
                "counts them"
            )
        parts.append((PASS, f"Redis outstanding peak {peak.value:g} agrees (proxy){why}"))
    return parts


PERMIT_LAG_MS = 25.0  # what a busy event loop may add to a wait or a hold on this machine
PERMIT_SHARE = 0.01  # of waits or holds that may exceed their bound (a stalled loop)
PERMIT_STRICT_SHARE = 0.001  # of waits with no designed wait (at least 3)
# of holds past the Redis timeout + lag (at least 3): healthy runs hold none that long
PERMIT_HOLD_SHARE = 0.002


def _permits_kept(c: _Ctx, t: TargetFacts, ev: dict[str, Any]) -> list[tuple[Status, str]]:
    """The bulkhead's promise, from its own permit histograms: an admitted auction waited at
    most max_wait for its permit (a bulkhead that queues instead of rejecting waits out the
    deadline), and held it only across its Redis work, bounded by the Redis timeout (a
    permit held across the DSP fan-out fills the bulkhead with work it does not protect)."""
    parts: list[tuple[Status, str]] = []
    # A bulkhead with no designed wait never suspends an admitted auction (no timer, no
    # loop lag): any wait at all is queueing.
    no_wait = t.auction_max_wait_ms == 0
    for kind, bound_ms, lag_ms, share, what, why in (
        ("wait", t.auction_max_wait_ms, 0.0 if no_wait else PERMIT_LAG_MS,
         PERMIT_STRICT_SHARE if no_wait else PERMIT_SHARE, "waited over", "max_wait_ms"),
        ("hold", t.redis_timeout_ms, PERMIT_LAG_MS, PERMIT_HOLD_SHARE, "held a permit over",
         "redis_timeout_ms"),
    ):  # fmt: skip
        over = counts_over(c.h.samples, lambda s: s.permit_buckets, kind)
        total = over.get(math.inf, 0)
        edges = sorted(le for le in over if math.isfinite(le) and le * 1000 >= bound_ms + lag_ms)
        if not total or not edges:
            continue
        edge = edges[0]
        n = over[edge]
        ev[f"permit_{kind}_over"] = [edge * 1000, n, total]
        if n > max(3.0, share * total) if share < PERMIT_SHARE else n > share * total:
            parts.append((FAIL, (
                f"{n} of {total} auctions {what} {edge * 1000:g} ms ({why} {bound_ms:g} ms "
                f"+ {lag_ms:g} ms of loop lag): "
                + ("the bulkhead queues instead of rejecting" if kind == "wait"
                   else "the permit is held across work other than Redis")
            )))  # fmt: skip
        else:
            parts.append((PASS, f"permits {kind} within {edge * 1000:g} ms ({total})"))
    return parts


def _fails_closed(c: _Ctx, ev: dict[str, Any]) -> list[tuple[Status, str]]:
    """While Redis is down (a hard fault on its proxy, after `settle`, its last second
    aside) the auction cannot check frequency caps, budgets or pacing: it must fail closed
    (503 or 204 redis_unavailable), so almost no bid is answered with a seat bid. An
    auction that treats a Redis error as "go" bids blind."""
    parts: list[tuple[Status, str]] = []
    for w in c.h.faults:
        if w.proxy != REDIS_PROXY or not _hard(w):
            continue
        rows = c.h.requests_in(math.floor(w.start_s) + c.th.settle.seconds, w.end_s - 1.0)
        bids = sum(sum(r.endpoints.get("bid", {}).values()) for r in rows)
        filled = sum(r.endpoints.get("bid", {}).get(OK, 0) for r in rows)
        ev.setdefault("redis_down_bids", []).append([w.start_s, w.end_s, bids, filled])
        if bids and filled > 2 + 0.01 * bids:
            parts.append((FAIL, (
                f"while Redis was down [{w.start_s:g}, {w.end_s:g}) s the auction answered "
                f"{filled} of {bids} bids with a seat bid: it ran without its Redis checks "
                "instead of failing closed (redis_unavailable)"
            )))  # fmt: skip
        elif bids:
            parts.append((PASS, f"failed closed while Redis was down ({filled} of {bids} bid)"))
    return parts


def _inflight_gap(c: _Ctx, judged: Sequence[Sample | None]) -> tuple[float, float, float] | None:
    """The first judged second whose Redis requests outstanding (chaos proxy) exceed every
    in-flight peak the target reported for it and the seconds beside it (a scrape apart,
    the two may fall on either side of a tick). An auction holds its permit across its one
    Redis request, so no tolerance is needed: healthy runs never exceed it (`judged` leaves
    out, as None, the seconds where the auction abandons calls at its Redis timeout)."""
    samples = c.h.samples
    for i, s in enumerate(samples):
        if judged[i] is None:
            continue
        outstanding = s.proxy_outstanding_max.get(REDIS_PROXY)
        if outstanding is None:
            continue
        near = [
            v
            for j in (i - 1, i, i + 1)
            if 0 <= j < len(samples) and samples[j].ok
            if (v := _inflight_peak(samples[j])) is not None
        ]
        if near and outstanding > max(near):
            return s.t, outstanding, max(near)
    return None


def _backlog_agrees(c: _Ctx, cap: float, ev: dict[str, Any]) -> list[tuple[Status, str]]:
    """The queue against the independent backlog: 202s the generator received that the
    broker does not hold yet were in the target (queued, or taken by a producer worker)."""
    lost = c.h.impressions.missing if c.h.impressions is not None else 0
    points, lag = impression_backlog(c.h, lost=lost)
    if not points:
        ev["backlog_max"] = None
        return []
    tol = queue_tolerance(cap)
    outside = c.target.in_production if c.target is not None else 0.0
    top = max(points, key=lambda b: b.items)
    ev.update(
        backlog_max=top.items, backlog_max_t=top.t, backlog_lag_s=round(lag, 3),
        backlog_tolerance=tol, backlog_outside_queue=outside,
    )  # fmt: skip
    said = "nothing" if top.reported_held is None else f"{top.reported_held:g}"
    if top.items > cap + outside + tol:
        return [(FAIL, (
            f"at t={top.t:g}s at least {top.items:g} impressions answered 202 were not in "
            f"Kafka (generator's 202s {top.acked_by} - broker's records {top.in_kafka:g}): "
            f"more than the cap {cap:g} + {outside:g} in production + {tol:g}, while "
            f"/metrics said the target held {said}"
        ))]  # fmt: skip
    worst = worst_backlog(points)
    held = None if worst is None else worst.reported_held
    if worst is not None and held is not None and worst.items > held + tol:
        return [(FAIL, (
            f"the target's queue depth + in production {held:g} at t={worst.t:g}s "
            f"disagrees with the broker: at least {worst.items:g} impressions answered 202 "
            f"were not in Kafka then (tolerance {tol:g})"
        ))]  # fmt: skip
    return [(PASS, f"backlog peak {top.items:g} agrees (broker offsets)")]


CODEL_FACTOR = 3.0  # how many CoDel windows of arrivals a queue may hold at its peak
CODEL_SLACK = 10.0


def _codel_keeps_it_short(c: _Ctx, held: float, ev: dict[str, Any]) -> list[tuple[Status, str]]:
    """With CoDel on, a queue stands at most target + interval before the shedder acts, so
    at its peak it holds about that long of arrivals, far below the hard cap; a shedder
    whose test is inverted lets it fill to the cap (acknowledged impressions waiting
    seconds for Kafka). `held` is the larger of the reported depth and the backlog."""
    t = c.target
    if t is None or not t.codel:
        return []
    arrivals = max(
        (sum(r.endpoints.get("impression", {}).values()) for r in c.h.requests), default=0
    )
    bound = CODEL_FACTOR * arrivals * t.codel_window_ms / 1000.0 + CODEL_SLACK
    ev.update(codel_bound=round(bound, 1), impressions_peak_per_s=arrivals)
    if held > bound:
        return [(FAIL, (
            f"with CoDel on the queue held {held:g} impressions at its peak, more than "
            f"{CODEL_FACTOR:g} x {arrivals}/s x {t.codel_window_ms:g} ms (target + interval) "
            f"+ {CODEL_SLACK:g} = {bound:.0f}: the shedder let a queue stand"
        ))]  # fmt: skip
    return [(PASS, f"CoDel kept the queue short (peak {held:g} <= {bound:.0f})")]


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
    parts.extend(_backlog_agrees(c, cap, ev))
    parts.extend(_codel_keeps_it_short(c, max(depth, ev.get("backlog_max") or 0.0), ev))
    parts.extend(_rejection_speed(c, p, SHED, "sheds answered", ev))
    st, msg = _combine(parts)
    return [_v("layer.shedder", "stress", st, msg, **ev)]


def _dsp_episodes(c: _Ctx) -> dict[str, list[FaultWindow]]:
    """Fault windows on each DSP, in order; windows that overlap or touch are one episode
    (a latency fault with an outage inside it is one disturbance to the breaker)."""
    out: dict[str, list[FaultWindow]] = {}
    for w in sorted(c.h.faults, key=lambda w: w.start_s):
        if not w.proxy.startswith("dsp"):
            continue
        eps = out.setdefault(w.proxy, [])
        if eps and w.start_s <= eps[-1].end_s + 1.0:
            last = eps[-1]
            eps[-1] = FaultWindow(
                w.proxy, last.fault, last.start_s, max(last.end_s, w.end_s), last.source
            )
        else:
            eps.append(w)
    return out


def _episode(
    c: _Ctx, dsp: str, w: FaultWindow, until: float, last: bool
) -> tuple[list[tuple[Status, str]], dict[str, Any]]:
    """One fault window on one DSP: its breaker opens within the detect budget of the
    window's onset, and closes within the recover budget of its end (before the next
    window on the same DSP, or by the end of recovery for the last)."""
    onset = math.floor(w.start_s)
    during = c.h.samples_in(onset, w.end_s + 2.0)
    opened = next((s.t for s in during if s.breakers.get(dsp) in _PROTECTIVE_BREAKER), None)
    states = sorted({s.breakers.get(dsp, "?") for s in during})
    after = [s for s in c.h.samples_in(w.end_s, until) if dsp in s.breakers]
    closed = next((s.t for s in after if s.breakers[dsp] == "closed"), None)
    final = after[-1].breakers[dsp] if after else None
    ev = dict(
        fault=[w.start_s, w.end_s], opened_at=opened, closed_at=closed,
        states_during=states, state_at_end=final, judged_until_s=until,
    )  # fmt: skip
    span = f"{dsp}'s window [{w.start_s:g}, {w.end_s:g}) s"
    parts: list[tuple[Status, str]] = []
    if opened is None:
        parts.append((FAIL, f"{span}: its breaker never opened (states: {states})"))
    elif not c.th.detect.ok(opened - onset):
        parts.append(
            (FAIL, f"{span}: its breaker opened at t={opened:g}s, not {c.th.detect} of onset")
        )
    if not after:
        if last:
            parts.append((INCONCLUSIVE, f"no samples after {span} to see its breaker close"))
        return parts, ev
    if closed is None:
        where = "end of recovery" if last else "next window on it"
        parts.append((FAIL, f"{span}: its breaker is still {final} at t={until:g}s ({where})"))
    elif not c.th.recover.ok(closed - w.end_s):
        parts.append((FAIL, (
            f"{span}: its breaker closed at t={closed:g}s, not {c.th.recover} of the "
            "window's end"
        )))  # fmt: skip
    elif last and final != "closed":
        parts.append((FAIL, f"{span}: its breaker is {final} again at t={until:g}s"))
    elif opened is not None and not parts:
        parts.append((PASS, f"{span}: opened at t={opened:g}s, closed at t={closed:g}s"))
    return parts, ev


FILL_MIN_BIDS = 200  # admitted bids each side needs for the fill rate to be judged
FILL_SLACK = 0.03


def _fill(rows: Sequence[RequestSecond]) -> tuple[float | None, int]:
    """Bid fill rate: bids answered with a seat bid over bids admitted (ok + no_bid)."""
    filled = sum(r.endpoints.get("bid", {}).get(OK, 0) for r in rows)
    admitted = filled + sum(r.endpoints.get("bid", {}).get(NO_BID, 0) for r in rows)
    return (filled / admitted if admitted else None), admitted


def _fill_recovered(c: _Ctx, since: float, ev: dict[str, Any]) -> list[tuple[Status, str]]:
    """After the last breaker closed, the bid fill rate is back to the baseline's: a
    breaker stuck open (or a fan-out that skips a DSP) shows as bids that never come back."""
    base = c.h.phase("baseline")
    if base is None:
        return []
    before, n0 = _fill(c.h.requests_in(base.start_s, base.end_s))
    after, n1 = _fill(c.h.requests_in(since, math.inf))
    ev.update(fill_baseline=_r(before, 4), fill_after=_r(after, 4), fill_after_from_s=since)
    if before is None or after is None or n0 < FILL_MIN_BIDS or n1 < FILL_MIN_BIDS:
        return [(PASS, f"bid fill rate not judged ({n0} baseline and {n1} later admitted bids)")]
    p = before
    tol = max(FILL_SLACK, 4.0 * math.sqrt(max(p * (1 - p), 1e-4) * (1 / n0 + 1 / n1)))
    ev["fill_tolerance"] = round(tol, 4)
    if after < before - tol:
        return [(FAIL, (
            f"bid fill rate from t={since:g}s is {_pct(after)}, below the baseline's "
            f"{_pct(before)} by more than {_pct(tol)}: some DSP's bids never came back"
        ))]  # fmt: skip
    return [(PASS, f"bid fill rate back to {_pct(after)} (baseline {_pct(before)})")]


_OPEN = frozenset({"open", "forced_open"})


def _open_but_calling(c: _Ctx, dsp: str, ev: dict[str, Any]) -> list[tuple[Status, str]]:
    """The breaker's state against the chaos proxy: over a second the target reports open
    at both ends, the DSP gets at most the half-open probes (one probe round a second at
    most); a breaker that says open and still calls the DSP is lying about protecting it."""
    probes = c.target.breaker_half_open_probes if c.target is not None else 3.0
    allowed = probes + INFLIGHT_SLACK
    worst: tuple[float, float] | None = None
    prev: Sample | None = None
    for s in c.h.samples:
        v = s.proxy_outstanding_max.get(dsp)
        both = prev is not None and prev.breakers.get(dsp) in _OPEN
        if both and s.breakers.get(dsp) in _OPEN and v is not None and v > allowed:
            worst = max(worst or (v, s.t), (v, s.t))
        prev = s
    if worst is None:
        return []
    ev[f"{dsp}_outstanding_while_open"] = worst[0]
    return [(FAIL, (
        f"the target said {dsp}'s breaker was open over ({worst[1] - 1:g}, {worst[1]:g}] s, "
        f"yet the chaos proxy saw {worst[0]:g} requests outstanding to {dsp} at once "
        f"(half-open probes {probes:g} + {INFLIGHT_SLACK:g})"
    ))]  # fmt: skip


DEADLINE_LAG_MS = 25.0  # what a busy loop may add to an auction past its deadline
DEADLINE_SHARE = 0.001  # of admitted responses that may (at least 3)


def _deadline_kept(c: _Ctx, ev: dict[str, Any]) -> list[tuple[Status, str]]:
    """The fan-out keeps the auction's deadline (tmax): with a DSP slow or down, a bid is
    answered by tmax with what came back, so the target's own time on admitted responses
    (spikegate_request_duration_seconds) stays under tmax + loop lag. A fan-out that waits
    a slow DSP out (a timeout in the wrong unit, say) shows there, whatever it reports."""
    over = server_admitted_over(c.h.samples)
    total = over.get(math.inf, 0)
    max_tmax = c.target.max_tmax_ms if c.target is not None else math.inf
    tmax = min(float(c.h.scenario.load.tmax_ms), max_tmax)
    edges = sorted(le for le in over if math.isfinite(le) and le * 1000 >= tmax + DEADLINE_LAG_MS)
    if not total or not edges:
        return []
    n = over[edges[0]]
    ev["deadline_over"] = [edges[0] * 1000, n, total]
    if n > max(3.0, DEADLINE_SHARE * total):
        return [(FAIL, (
            f"{n} of {total} admitted responses took the target over {edges[0] * 1000:g} ms "
            f"(tmax {tmax:g} ms + {DEADLINE_LAG_MS:g} ms of loop lag): the DSP fan-out does "
            "not keep the auction's deadline"
        ))]  # fmt: skip
    return [(PASS, f"deadline kept: {n} of {total} admitted over {edges[0] * 1000:g} ms")]


def layer_breaker(c: _Ctx) -> list[Verdict]:
    episodes = _dsp_episodes(c)
    if not episodes:
        return []
    if not any(s.breakers for s in c.h.samples):
        msg = "no breaker states were exported: the breakers cannot be checked"
        return [_v("layer.breaker", "stress", INCONCLUSIVE, msg)]
    rec = c.h.phase("recovery")
    deadline = rec.end_s if rec else c.h.end_s
    parts: list[tuple[Status, str]] = []
    per: dict[str, list[dict[str, Any]]] = {}
    since = max(w.end_s for eps in episodes.values() for w in eps)
    for dsp, eps in sorted(episodes.items()):
        for i, w in enumerate(eps):
            last = i == len(eps) - 1
            until = deadline if last else eps[i + 1].start_s
            got, ev = _episode(c, dsp, w, until, last)
            parts.extend(got)
            per.setdefault(dsp, []).append(ev)
            if last and ev["closed_at"] is not None:
                since = max(since, float(ev["closed_at"]) + 1.0)
    evidence: dict[str, Any] = {"dsps": per}
    parts.extend(_deadline_kept(c, evidence))
    for dsp in sorted(episodes):
        parts.extend(_open_but_calling(c, dsp, evidence))
    parts.extend(_fill_recovered(c, since, evidence))
    st, msg = _combine(parts)
    return [_v("layer.breaker", "stress", st, msg, **evidence)]
