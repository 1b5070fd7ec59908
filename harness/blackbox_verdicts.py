"""Black-box verdicts: a user's own service's resources and layer signatures, judged only
where its scenario maps the service's own metrics ([metrics]) and states the bounds
([checks]); otherwise skipped, with the reason and how to supply the evidence.

    [metrics] inflight      + checks.inflight_max  -> bounded_resources (in flight), layer.bulkhead
    [metrics] queue_depth   + checks.queue_max     -> bounded_resources (queue), layer.shedder
    [metrics] breaker_state + a fault on a dependency ------------------------> layer.breaker
    RSS in the samples -------------------------------> bounded_resources (RSS growth)
    nothing maps the edge's per-publisher buckets ----> layer.edge: always skipped

The sampler writes a mapped gauge into the sample fields the reference target's own metrics
fill (auction_inflight, queue_depth, breakers {series label: state}), so one field means one
thing for every target: the service's in flight, its queue, its breakers.

Each part of a verdict is
    skipped       its metric is not mapped, or its bound is not stated: nothing to judge it
                  on, and the message says what to add (never a pass);
    inconclusive  it is mapped and bounded but no successful scrape carried it (a metric
                  name the service does not export, a /metrics that never answered): the
                  harness could not measure what the scenario asked for;
    judged        otherwise (pass or fail).
A verdict combines its parts (judging._combine): skipped only when every part is.

Rejection speed is judged on the client side only (`client_reject`): a black box has no
server-side rejection histogram. Beside the service's word the chaos proxies' own counters
(per dependency: bytes received and sent, connections accepted and open) go into the
evidence of bounded_resources and layer.breaker: how much the service talked to each
dependency, and to the faulted one while it said its breaker was open.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from spikegate.contract.outcomes import OVERLOADED, SHED
from spikegate.harness.history import FaultWindow, RequestSecond, Sample
from spikegate.harness.judging import (
    _PROTECTIVE_BREAKER,
    _combine,
    _Ctx,
    _gauge_max,
    _inflight_peak,
    _v,
    settle_windows,
)
from spikegate.harness.run_verdicts import client_reject_part, rss_parts
from spikegate.harness.verdicts import FAIL, INCONCLUSIVE, PASS, SKIPPED, Status, Verdict

__all__ = [
    "EDGE_SKIPPED",
    "RSS_SKIPPED",
    "bounded_resources",
    "layer_breaker",
    "layer_bulkhead",
    "layer_edge",
    "layer_shedder",
    "proxy_traffic",
]

EDGE_SKIPPED = (
    "no black-box mapping for the edge: its per-publisher token buckets are the reference "
    "target's; your 429s are timed by graceful_degradation and count as protection in "
    "time_to_detect"
)
RSS_SKIPPED = "no RSS was sampled from your service: its memory growth is not judged"
BREAKER_NO_FAULT = (
    "no fault on a dependency in this scenario: nothing exercised the breaker (add a "
    "[[faults]] entry on the dependency it protects)"
)
_PURE = 0.9  # share of a second's rejections that must be 503s for its latencies to time them
_NON_429 = (OVERLOADED, SHED)  # the designed rejections that are not 429 (503, by default)


@dataclass(frozen=True, slots=True)
class _Gauge:
    """A [metrics] mapping with its bound ([checks]) and what the samples showed of it."""

    key: str  # the [metrics] key: "inflight" or "queue_depth"
    what: str  # "in-flight", "queue depth"
    metric: str | None  # the service's metric name, None: not mapped
    bound_key: str  # "inflight_max" or "queue_max"
    bound: float | None
    get: Callable[[Sample], float | None]


def _gauges(c: _Ctx) -> tuple[_Gauge, _Gauge]:
    m, th = c.h.scenario.metrics, c.th
    return (
        _Gauge("inflight", "in-flight", m.inflight, "inflight_max",
               None if th.inflight_max is None else float(th.inflight_max), _inflight_peak),
        _Gauge("queue_depth", "queue depth", m.queue_depth, "queue_max",
               None if th.queue_max is None else float(th.queue_max), lambda s: s.queue_depth),
    )  # fmt: skip


def _unmapped(key: str, what: str) -> str:
    return f"no [metrics] {key} mapping: map your service's {what} gauge to judge it"


def _gauge_part(c: _Ctx, g: _Gauge, ev: dict[str, Any]) -> tuple[Status, str]:
    """The mapped gauge's peak against its bound; skipped or inconclusive as the module
    docstring says. Fills `ev` (prefixed by the mapping's key)."""
    ev[f"{g.key}_metric"] = g.metric
    ev[f"{g.key}_bound"] = g.bound
    if g.metric is None:
        return SKIPPED, _unmapped(g.key, g.what)
    peak, at = _gauge_max(c, g.get)
    ev.update({f"{g.key}_max": peak, f"{g.key}_max_t": at})
    if g.bound is None:
        seen = "" if peak is None else f" (its peak was {peak:g} at t={at:g}s)"
        return SKIPPED, (
            f"no checks.{g.bound_key}: state the bound of your service's {g.what} "
            f"({g.metric}) to judge it{seen}"
        )
    if peak is None:
        ok = sum(1 for s in c.h.samples if s.ok)
        path = c.h.scenario.target.metrics or "target.metrics"
        if not ok:
            return INCONCLUSIVE, (
                f"no scrape of {path} succeeded: [metrics] {g.key} = {g.metric!r} could not be read"
            )
        return INCONCLUSIVE, (
            f"[metrics] {g.key} = {g.metric!r} was in none of the {ok} successful scrapes "
            f"of {path}: check the name against what your service exports"
        )
    assert at is not None
    if peak > g.bound:
        return FAIL, (
            f"{g.what} ({g.metric}) reached {peak:g} at t={at:g}s > checks.{g.bound_key} "
            f"{g.bound:g}"
        )
    return PASS, f"{g.what} <= {g.bound:g} (peak {peak:g})"


# --- the chaos proxies' own counters -------------------------------------------------------
def proxy_traffic(samples: Sequence[Sample]) -> dict[str, dict[str, Any]]:
    """Per proxy, over `samples`: bytes received from the service and sent back to it (sums
    of the per-second deltas), connections accepted (sum) and the peak of connections open
    with its time. Empty for run directories older than the proxies' counters."""
    out: dict[str, dict[str, Any]] = {}
    for s in samples:
        for proxy, counts in s.proxy_bytes.items():
            row = out.setdefault(proxy, {})
            for key in ("received", "sent"):
                if key in counts:
                    row[f"bytes_{key}"] = row.get(f"bytes_{key}", 0) + counts[key]
        for proxy, counts in s.proxy_connections.items():
            row = out.setdefault(proxy, {})
            if "accepted" in counts:
                row["connections_accepted"] = (
                    row.get("connections_accepted", 0) + counts["accepted"]
                )
            if "open" in counts and counts["open"] > row.get("connections_open_max", -1):
                row["connections_open_max"] = counts["open"]
                row["connections_open_max_t"] = s.t
    return out


# --- bounded_resources -----------------------------------------------------------------------
def bounded_resources(c: _Ctx) -> list[Verdict]:
    """In flight and queue depth where mapped and bounded, RSS growth where sampled."""
    ev: dict[str, Any] = {"mapped": c.h.scenario.metrics.mapped()}
    parts = [_gauge_part(c, g, ev) for g in _gauges(c)]
    rss = rss_parts(c, ev)
    parts.extend(rss or [(SKIPPED, RSS_SKIPPED)])
    traffic = proxy_traffic(c.h.samples)
    if traffic:
        ev["proxies"] = traffic
    ev["skipped"] = [m for s, m in parts if s == SKIPPED]
    st, msg = _combine(parts)
    return [_v("bounded_resources", "run", st, msg, **ev)]


# --- layer signatures ------------------------------------------------------------------------
def layer_edge(c: _Ctx) -> list[Verdict]:
    return [_v("layer.edge", "stress", SKIPPED, EDGE_SKIPPED, skipped=EDGE_SKIPPED)]


def _judged_rows(c: _Ctx) -> list[RequestSecond]:
    """The seconds after warmup, less the `settle` after the stress start and each onset."""
    warm = c.h.phase("warmup")
    settle = settle_windows(c, c.stress) if c.stress is not None else []
    rows = c.h.requests_in(warm.end_s if warm else 0.0, math.inf)
    return [r for r in rows if not any(a <= r.t < b for a, b in settle)]


def _pure_503(r: RequestSecond) -> bool:
    """Nearly all of this second's designed rejections are not 429s (503s, by default)."""
    return r.rejected > 0 and sum(r.outcomes.get(k, 0) for k in _NON_429) >= _PURE * r.rejected


def _near(c: _Ctx, t: float, get: Callable[[Sample], float | None]) -> float | None:
    """The gauge's largest value at the scrapes that bound the second [t, t + 1)."""
    values = [v for s in c.h.samples_in(t, t + 1.0 + 1e-9) if s.ok and (v := get(s)) is not None]
    return max(values) if values else None


def _layer(
    c: _Ctx, name: str, g: _Gauge, when: str, busy: Callable[[float, float], bool]
) -> list[Verdict]:
    """A mapped gauge's layer: its peak within the bound, and the designed 503s of the
    seconds it was `busy` (value, bound) answered fast on the client side."""
    ev: dict[str, Any] = {}
    part = _gauge_part(c, g, ev)
    if part[0] in (SKIPPED, INCONCLUSIVE):
        if part[0] == SKIPPED:
            ev["skipped"] = part[1]
        return [_v(name, "stress", part[0], part[1], **ev)]
    assert g.bound is not None
    bound = g.bound
    rows = [
        r
        for r in _judged_rows(c)
        if _pure_503(r) and (v := _near(c, r.t, g.get)) is not None and busy(v, bound)
    ]
    ev["busy_seconds"] = [r.t for r in rows][:50]
    parts = [part, *client_reject_part(c, rows, f"designed 503s {when} answered", ev)]
    if not rows:
        parts.append((PASS, f"no second of designed 503s {when} to time"))
    st, msg = _combine(parts)
    return [_v(name, "stress", st, msg, **ev)]


def layer_bulkhead(c: _Ctx) -> list[Verdict]:
    """[metrics] inflight: never above checks.inflight_max, and fast 503s at the limit."""
    g = _gauges(c)[0]
    return _layer(c, "layer.bulkhead", g, "at the limit", lambda v, bound: v >= bound)


def layer_shedder(c: _Ctx) -> list[Verdict]:
    """[metrics] queue_depth: never above checks.queue_max, and fast 503s while the queue
    held work (a shedder answers before the work, not after it)."""
    g = _gauges(c)[1]
    return _layer(c, "layer.shedder", g, "while the queue held work", lambda v, _b: v > 0)


def _episodes(faults: Sequence[FaultWindow]) -> list[FaultWindow]:
    """Fault windows on any dependency, in order; windows that overlap or touch (within a
    second) are one disturbance, named by its first window, spanning all of them."""
    out: list[FaultWindow] = []
    proxies: list[set[str]] = []
    for w in sorted(faults, key=lambda w: w.start_s):
        if out and w.start_s <= out[-1].end_s + 1.0:
            last = out[-1]
            out[-1] = FaultWindow(
                last.proxy, last.fault, last.start_s, max(last.end_s, w.end_s), last.source
            )
            proxies[-1].add(w.proxy)
        else:
            out.append(w)
            proxies.append({w.proxy})
    return [
        FaultWindow(",".join(sorted(p)), w.fault, w.start_s, w.end_s, w.source)
        for w, p in zip(out, proxies, strict=True)
    ]


def _open_traffic(samples: Sequence[Sample], proxies: set[str], series: set[str]) -> Any:
    """Bytes to the faulted dependencies in the seconds the service said a breaker that
    opened was open (the proxies' own count), or None without proxy counters."""
    seconds = [s for s in samples if any(s.breakers.get(x) in _PROTECTIVE_BREAKER for x in series)]
    traffic = proxy_traffic(seconds)
    picked = {p: traffic[p] for p in sorted(proxies) if p in traffic}
    return {"seconds": len(seconds), **picked} if picked else None


def _breaker_episode(
    c: _Ctx, w: FaultWindow, until: float, last: bool
) -> tuple[list[tuple[Status, str]], dict[str, Any], bool]:
    """One disturbance: which breakers opened during it, and whether each closed again
    within `recover` of its end (before the next one, or by the end of recovery for the
    last). Returns (parts, evidence, any opened)."""
    during = [s for s in c.h.samples_in(math.floor(w.start_s), w.end_s + 2.0) if s.ok]
    opened: dict[str, float] = {}
    for s in during:
        for series, state in s.breakers.items():
            if state in _PROTECTIVE_BREAKER:
                opened.setdefault(series, s.t)
    span = f"the fault on {w.proxy} [{w.start_s:g}, {w.end_s:g}) s"
    ev: dict[str, Any] = dict(
        fault=[w.start_s, w.end_s], proxies=w.proxy.split(","), opened_at=opened,
        states_during=sorted({st for s in during for st in s.breakers.values()}),
        judged_until_s=until,
    )  # fmt: skip
    if not opened:
        return [], ev, False
    traffic = _open_traffic(during, set(w.proxy.split(",")), set(opened))
    if traffic is not None:
        ev["proxy_traffic_while_open"] = traffic
    after = [s for s in c.h.samples_in(w.end_s, until) if s.ok]
    parts: list[tuple[Status, str]] = []
    closed_at: dict[str, float | None] = {}
    for series, t_open in sorted(opened.items()):
        seen = [s for s in after if series in s.breakers]
        closed = next((s.t for s in seen if s.t > t_open and s.breakers[series] == "closed"), None)
        closed_at[series] = closed
        final = seen[-1].breakers[series] if seen else None
        if not seen:
            if last:
                parts.append((INCONCLUSIVE, f"no samples after {span} to see {series} close"))
        elif closed is None:
            where = "the end of recovery" if last else "the next fault"
            parts.append((FAIL, (
                f"breaker {series} opened at t={t_open:g}s in {span} and is still {final} at "
                f"t={until:g}s ({where})"
            )))  # fmt: skip
        elif not c.th.recover.ok(closed - w.end_s):
            parts.append((FAIL, (
                f"breaker {series} closed only at t={closed:g}s, not {c.th.recover} of the "
                f"end of {span}"
            )))  # fmt: skip
        elif last and final != "closed":
            parts.append((FAIL, f"breaker {series} is {final} again at t={until:g}s"))
        else:
            parts.append((PASS, (
                f"{series} opened at t={t_open:g}s in {span}, closed at t={closed:g}s"
            )))  # fmt: skip
    ev["closed_at"] = closed_at
    return parts, ev, True


def layer_breaker(c: _Ctx) -> list[Verdict]:
    """[metrics] breaker_state: closed at base load, opens during at least one fault window
    on a dependency, and every breaker that opened closes again after it."""
    metric = c.h.scenario.metrics.breaker_state
    if metric is None:
        why = _unmapped("breaker_state", "breaker")
        return [_v("layer.breaker", "stress", SKIPPED, why, skipped=why)]
    ev: dict[str, Any] = {"breaker_state_metric": metric}
    episodes = _episodes(c.h.faults)
    if not episodes:
        return [_v("layer.breaker", "stress", SKIPPED, BREAKER_NO_FAULT, skipped=BREAKER_NO_FAULT,
                   **ev)]  # fmt: skip
    if not any(s.breakers for s in c.h.samples if s.ok):
        msg = (
            f"[metrics] breaker_state = {metric!r} was in no successful scrape: check the "
            "name against what your service exports"
        )
        return [_v("layer.breaker", "stress", INCONCLUSIVE, msg, **ev)]
    parts: list[tuple[Status, str]] = []
    base = c.h.phase("baseline")
    if base is not None:
        for s in c.h.samples_in(base.start_s, base.end_s):
            shut = {k: v for k, v in s.breakers.items() if v in _PROTECTIVE_BREAKER}
            if s.ok and shut:
                parts.append((FAIL, (
                    f"at base load, before any fault, breaker {', '.join(sorted(shut))} was "
                    f"{'/'.join(sorted(set(shut.values())))} at t={s.t:g}s: it opens on "
                    "healthy traffic"
                )))  # fmt: skip
                ev["open_in_baseline_t"] = s.t
                break
    rec = c.h.phase("recovery")
    deadline = rec.end_s if rec else c.h.end_s
    per: list[dict[str, Any]] = []
    any_opened = False
    for i, w in enumerate(episodes):
        last = i == len(episodes) - 1
        until = deadline if last else episodes[i + 1].start_s
        got, wev, opened = _breaker_episode(c, w, until, last)
        parts.extend(got)
        per.append(wev)
        any_opened = any_opened or opened
    ev["faults"] = per
    if not any_opened:
        states = sorted({st for s in c.h.samples if s.ok for st in s.breakers.values()})
        faults = ", ".join(f"{w.proxy} [{w.start_s:g}, {w.end_s:g}) s" for w in episodes)
        parts.append((FAIL, (
            f"no breaker opened during any fault on a dependency ({faults}); states seen: "
            f"{', '.join(states)}"
        )))  # fmt: skip
    st, msg = _combine(parts)
    return [_v("layer.breaker", "stress", st, msg, **ev)]
