"""The goodput curve: goodput and admitted p99 against offered load, patterns on versus off.

    scenario --capacity ramp (all patterns off)--> find_knee --> the ramp's knee K
             --confirm: steady K, 0.95 K, ... (all off) until one holds--> capacity C
             --size_limits: edge = C / publishers, auction limit from the knee's in-flight
             --calibrate the edge: patterns on at EDGE_AT x C, edge C, 0.95 C, ... until one
               holds the SLO--> edge E
             --for k in levels, for on/off: steady k*C for run_s--> level_figures
             --the target alone (rejection_cost.measure): CPU per 429, 503, admitted bid--> r/a
                                                        --> curve.json, curve.png, curve.md

The capacity is the server's, found, not declared: one `ramp_to_knee` run from the
scenario's base rate to `ramp_to` with every pattern switched off, so that no designed
rejection (a bucket, a bulkhead sized for Redis faults) can cap admissions, and `find_knee`
takes the highest offered rate at which admitted bids keep up with the offered rate (>= 95%),
admitted p99 meets the scenario's SLO and the generator holds its schedule. Past it the
server itself ran out: latency, or errors (timeouts, 5xx, its own 503s when Redis or the
deadline could not be met). A window whose shortfall is a pattern's rejection (the target's
`bulkhead_full` / `rate_limited` counters) is "capped": the ramp measured a configured limit,
not the server, and the curve refuses it (exit 3) rather than quote it as the capacity.

A ramp's knee overstates what the server sustains: a window of a few seconds on a rising
rate ends before the queue of a rate at the edge has grown (measured: a knee of 862.7/s whose
own 1x patterns-off level, steady 862.7/s, answered 11% of its admitted answers past the SLO).
So the knee is only where the search starts: `confirm` runs it steady, with every pattern off,
for a level's length, and steps down by CONFIRM_STEP until a rate holds (`holds`: the SLO met,
admitted and sent both >= KEEP_UP of offered). The capacity is the highest rate that held;
none holding within CONFIRM_TRIES makes the curve inconclusive (exit 3).

Each level then runs the scenario's target at k x C on a steady shape without its fault
timeline (the curve is about load): "on" with every pattern on and the limits that would
otherwise cap below C sized from the knee (`size_limits`: each publisher's bucket C /
publishers, `keep_edge` keeps the scenario's; the auction's concurrency limit from the
in-flight Redis work the target measured in the knee window, `keep_limits` keeps the
scenario's), the shedder and the breakers as the scenario has them; "off" with all four
switched off (target.config.<pattern>.enabled, as `spikegate ablate` does).

An edge at the capacity itself runs the target at its knee, where admitted p99 is at the
SLO already, and an overload adds work the capacity was measured without: the refusals, and
on a machine shared with the generator, the generator's own extra sends (measured: the
target's latency knee under 2x is ~10% below its steady one; an edge at C answered 9-12% of
the admitted bids late at 2x). So the edge is calibrated, not assumed: patterns-on runs at
EDGE_AT x C with the bucket at C, 0.95 C, ... (EDGE_SHARES) until one holds the SLO with the
generator on schedule (`edge_holds`); that rate, the highest the protected target sustains
in time while refusing the rest of a 2x load, is every on-level's edge. None holding keeps
the lowest, and curve.md says so. `keep_edge` keeps the scenario's rate and skips it.

Goodput is useful work only: bids answered with a win or no-bid (admitted 2xx) within the
deadline, the bound of the scenario's admitted-latency SLO (`checks.slo`, the figure the knee
and the checker judge admitted answers by). It is counted from the generator's own per-second
HDR histograms of admitted latency (`deadline_counts`), never from the target's numbers. A
bid answered after it is worthless to the publisher (the exchange has moved on), and a target
without backpressure admits everything and answers late: admitted bids/s stays beside
goodput, with the late admitted answers, so the report shows both.

The histogram holds bids and the impression notices that follow won bids together, so per
second the bids in time are known to lie between admitted bids minus every late admitted
answer (`goodput_bids_rps`, the figure quoted: never above the truth, equal to it when no
impression answer was late) and the smaller of admitted bids and admitted answers in time
(`goodput_bids_max_rps`, never below it).

r/a: the target's CPU per designed rejection against its CPU per admitted bid, measured on
the target alone as the last step (harness/rejection_cost.py: one kind of request per window
at COST_RATE/s, net of its idle CPU); the chart draws the bound it puts on goodput. Each
level's own target CPU (curve_cost.CpuTrace against its request counters) is kept per level
and fitted too (`cost.fit`), for the record: on a machine shared with the generator the
target's CPU is capped by the others in every overloaded level and a request costs less as
the loop reads several per wake-up, so that fit does not give r/a.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from spikegate.contract.outcomes import (
    BULKHEAD_FULL,
    DESIGNED_REJECTIONS,
    NO_BID,
    OK,
    RATE_LIMITED,
)
from spikegate.harness.ablate import PATTERNS, Runner, _orchestrator_runner
from spikegate.harness.curve_cost import (
    CostFit,
    CpuTrace,
    Interval,
    bound_share,
    cost_seconds,
    fit_cost,
    level_cpu,
    raw_samples,
)
from spikegate.harness.errors import InconclusiveRun, UsageError
from spikegate.harness.figures import _decode, percentile_ms
from spikegate.harness.history import RequestSecond, Sample, load_history
from spikegate.harness.intended import recorded_bid_intended
from spikegate.harness.scenario import Scenario, load_scenario, parse_scenario
from spikegate.harness.thresholds import LatencyBound

__all__ = [
    "DEFAULT_LEVELS",
    "RAMP",
    "Knee",
    "LevelPlan",
    "Limits",
    "capacity_scenario",
    "confirm_rates",
    "confirm_scenario",
    "cost_figures",
    "curve",
    "deadline_counts",
    "edge_holds",
    "find_knee",
    "holds",
    "level_figures",
    "level_scenario",
    "parse_levels",
    "plan_levels",
    "size_limits",
]

DEFAULT_LEVELS = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0)
KEEP_UP = 0.95  # admitted bids / offered, and sent / intended, at or below the knee
CPU_FILE = "target_cpu.json"  # beside each run directory: <label>.target_cpu.json
RAMP = "all patterns off (target.config.<edge|auction|impressions|breaker>.enabled = false)"
# The target's decisions that are a pattern refusing work it could have done (a bucket, the
# bulkhead), as against its own 503s when Redis or the deadline could not be met.
CAPPING = (RATE_LIMITED, BULKHEAD_FULL)
LIMIT_HEADROOM = 2.0  # auction limit = headroom x the Redis work in flight at the knee
CONFIRM_STEP = 0.95  # each steady run that does not hold lowers the rate by 5%
CONFIRM_TRIES = 8  # the knee, then down to 0.95^7 = 0.70 of it (measured: 0.81 needed)
EDGE_AT = 2.0  # the overload the edge is calibrated at (the first goal)
EDGE_SHARES = (1.0, 0.95, 0.9, 0.85, 0.8)  # of the capacity, tried in turn
COST_RATE, COST_WINDOW_S, COST_ROUNDS = 300.0, 10.0, 3  # r/a on the target alone
COST_KEPT = 0.95  # a cost window's answers of the kind it measures, at least
_COST_STATUS = {"admitted": ("200", "204"), "429": ("429",), "shed": ("503",)}


# --- input -----------------------------------------------------------------------------------
def parse_levels(text: str) -> tuple[float, ...]:
    """`0.5,1,2` -> (0.5, 1.0, 2.0); UsageError naming --levels for anything else."""
    out: list[float] = []
    for item in text.split(","):
        item = item.strip().removesuffix("x")
        try:
            value = float(item)
        except ValueError:
            raise UsageError(
                f"--levels: {item!r} is not a number",
                hint="multiples of the measured capacity, e.g. --levels 0.5,1,2,3,5,10",
            ) from None
        if not math.isfinite(value) or value <= 0:
            raise UsageError(f"--levels: {item!r} is not positive (each level must be > 0)")
        if value > 100:
            raise UsageError(f"--levels: {item!r} is more than 100x the capacity")
        out.append(value)
    if not out:
        raise UsageError("--levels is empty")
    return tuple(sorted(set(out)))


@dataclass(frozen=True, slots=True)
class LevelPlan:
    index: int  # 1-based, for the progress line [i/N]
    multiple: float
    patterns: str  # "on" | "off"
    rate_rps: float  # the level's steady bid arrival rate (load.base_rps)

    @property
    def label(self) -> str:
        return f"{self.multiple:g}x-{self.patterns}"


def plan_levels(levels: Sequence[float], capacity_rps: float) -> list[LevelPlan]:
    """Each level patterns on then off, ascending; the capacity ramp is step 1 of N."""
    plan: list[LevelPlan] = []
    for k in sorted(levels):
        for patterns in ("on", "off"):
            plan.append(LevelPlan(len(plan) + 2, k, patterns, round(k * capacity_rps, 1)))
    return plan


def _steady(data: dict[str, Any], rate: float, run_s: float, warmup_s: float) -> None:
    data["load"].update(
        shape="steady",
        duration_s=float(run_s),
        warmup_s=float(warmup_s),
        base_rps=float(rate),
        peak_rps=0.0,
        spike_at_s=0.0,
        spike_for_s=0.0,
        steps=[],
    )
    data["faults"] = []  # the curve is about load; faults have `spikegate run`
    data["phases"] = {"recovery_s": data["phases"]["recovery_s"]}


def capacity_scenario(base: Scenario, ramp_to: float, ramp_s: float, warmup_s: float) -> Scenario:
    """The capacity ramp: base_rps -> ramp_to over ramp_s, every pattern off (RAMP), so that
    only the server itself running out (latency, errors) can end it."""
    data = base.model_dump(mode="json")
    _steady(data, base.load.base_rps, ramp_s, warmup_s)
    data["load"].update(shape="ramp_to_knee", peak_rps=float(ramp_to))
    _all_off(data)
    data["name"] = f"{base.name}-capacity"[:64]
    return parse_scenario(data, source=f"{base.name} (capacity ramp)")


def confirm_scenario(
    base: Scenario, rate: float, run_s: float, warmup_s: float, attempt: int
) -> Scenario:
    """One confirmation of the capacity: steady `rate` for a level's length, every pattern off
    (as the ramp), no faults."""
    data = base.model_dump(mode="json")
    _steady(data, rate, run_s, warmup_s)
    _all_off(data)
    data["name"] = f"{base.name}-confirm-{attempt}"[:64]
    return parse_scenario(data, source=f"{base.name} (capacity confirmation {attempt})")


def _all_off(data: dict[str, Any]) -> None:
    config = data["target"].setdefault("config", {})
    for p in PATTERNS:
        config[p] = {**config.get(p, {}), "enabled": False}


def level_scenario(
    base: Scenario,
    level: LevelPlan,
    run_s: float,
    warmup_s: float,
    *,
    limits: Limits | None = None,
) -> Scenario:
    """One point of the curve: steady k x capacity, all patterns on (with `limits`, sized
    from the knee; None keeps the scenario's) or all off."""
    data = base.model_dump(mode="json")
    _steady(data, level.rate_rps, run_s, warmup_s)
    config = data["target"].setdefault("config", {})
    for p in PATTERNS:
        config[p] = {**config.get(p, {}), "enabled": level.patterns == "on"}
    if level.patterns == "on" and limits is not None:
        data["target"]["publisher_rate_per_s"] = limits.publisher_rate_per_s
        config["auction"]["limit"] = limits.auction_limit
    data["name"] = f"{base.name}-{level.label}"[:64]
    return parse_scenario(data, source=f"{base.name} ({level.label})")


# --- the knee --------------------------------------------------------------------------------
def bids_admitted(r: RequestSecond) -> int:
    """Admitted /bid answers of one second (ok + no_bid; impressions are not offered load)."""
    bid = r.endpoints.get("bid") or {}
    return int(bid.get(OK, 0)) + int(bid.get(NO_BID, 0))


def bids_intended(r: RequestSecond) -> int:
    """Bid arrivals the schedule called for in one second: a row's `intended` also counts
    the impression notices that follow won bids (harness/intended.py)."""
    return recorded_bid_intended({"intended": r.intended, "endpoints": r.endpoints})


def bids_sent(r: RequestSecond) -> int:
    """Bids sent in one second: each has exactly one outcome in endpoints["bid"]."""
    return sum(int(n) for n in (r.endpoints.get("bid") or {}).values())


def bids_rejected(r: RequestSecond) -> int:
    """Bids answered 429/503 with a decision: by a pattern, or the target's own 503s."""
    bid = r.endpoints.get("bid") or {}
    return sum(int(n) for k, n in bid.items() if k in DESIGNED_REJECTIONS)


@dataclass(frozen=True, slots=True)
class Knee:
    capacity_rps: float  # admitted bids/s of the last window that kept up (<= its offered)
    offered_bids_rps: float  # that window's mean offered bid rate
    at_s: float  # where that window starts in the ramp
    limited_by: str  # what broke first past it: errors | latency | generator | capped | not
    #                  reached ("+"-joined when several broke in the same window)
    windows: tuple[dict[str, Any], ...]  # every window, for the report
    window: Mapping[str, Any]  # the knee's own window (its p_ms, inflight_max, ...)

    @property
    def capped(self) -> bool:
        """A pattern's rejection ended the ramp: the knee is a configured limit's, not the
        server's, and is no capacity."""
        return "capped" in self.limited_by.split("+")


def _window_target(samples: Sequence[Sample], t0: float, t1: float) -> dict[str, Any]:
    """What the target itself counted over [t0, t1]: the most Redis work in flight (each
    scrape's peak since the previous one, so the scrapes in (t0, t1]), and the rise of its
    pattern-rejection counters (CAPPING) between the last scrape at or before t0 and the last
    at or before t1. Empty when no good scrape bounds the window."""
    good = [s for s in samples if s.ok]
    inside = [s.auction_inflight_max for s in good if t0 < s.t <= t1 + 0.5]
    peaks = [v for v in inside if v is not None]
    out: dict[str, Any] = {"inflight_max": max(peaks) if peaks else None}
    before = [s for s in good if s.t <= t0 + 0.5]
    upto = [s for s in good if s.t <= t1 + 0.5]
    if before and upto and upto[-1].t > before[-1].t:
        a, b = before[-1].decisions_total, upto[-1].decisions_total
        out["capped"] = {
            k: b[k] - a.get(k, 0.0)
            for k in b
            if k.rpartition(":")[2] in CAPPING and b[k] - a.get(k, 0.0) > 0
        }
    return out


def find_knee(
    rows: Sequence[RequestSecond],
    slo: LatencyBound,
    *,
    start_s: float = 0.0,
    window_s: int = 3,
    hold: int = 2,
    keep_up: float = KEEP_UP,
    samples: Sequence[Sample] = (),
) -> Knee | None:
    """The goodput of the highest offered rate that kept up before `hold` windows in a row
    did not (a window at 1.03x capacity may keep up within `keep_up`: its goodput says how much
    was served).

    Windows of `window_s` seconds slide one second at a time over the ramp's rows from
    `start_s`. A window keeps up when admitted bids >= keep_up x intended, the generator sent
    >= keep_up x intended, and the admitted percentile of the SLO meets it. A shortfall of
    admitted bids is named by its cause: "capped" when a pattern refused at least half of it
    (the target's CAPPING counters in `samples`; without samples, every bid answered 429/503
    with a decision counts as a pattern's: the harness cannot tell, and a capped knee must
    never pass for the server's), else "errors" (timeouts, 5xx, the server's own 503s).
    None when the very first window fails (the capacity is below the ramp's start)."""
    rows = [r for r in rows if r.t >= start_s]
    windows: list[dict[str, Any]] = []
    last_ok: dict[str, Any] | None = None
    bad = 0
    for i in range(0, max(0, len(rows) - window_s + 1)):
        w = rows[i : i + window_s]
        intended = sum(bids_intended(r) for r in w)
        if intended <= 0:
            continue
        sent = sum(bids_sent(r) for r in w)
        bids = sum(bids_admitted(r) for r in w)
        rejected = sum(bids_rejected(r) for r in w)
        p, _, _ = percentile_ms(w, "admitted", slo.percentile)
        target = _window_target(samples, w[0].t, w[-1].t + 1.0) if samples else {}
        capped = sum(target["capped"].values()) if "capped" in target else rejected
        why = []
        if sent < keep_up * intended:
            why.append("generator")
        if bids < keep_up * intended:
            why.append("capped" if capped > 0 and 2 * capped >= sent - bids else "errors")
        if p is None or not slo.ok(p):
            why.append("latency")
        win = {
            "t": w[0].t,
            "offered_bids_rps": round(intended / window_s, 1),
            "admitted_bids_rps": round(bids / window_s, 1),
            "rejected_bids_rps": round(rejected / window_s, 1),
            "failed_bids_rps": round((sent - bids - rejected) / window_s, 1),
            "p_ms": None if p is None else round(p, 2),
            **target,
            "broke": why,
        }
        windows.append(win)
        if not why:
            last_ok, bad = win, 0
            continue
        if last_ok is None:
            return None
        bad += 1
        if bad >= hold:
            first_bad = windows[-hold]
            return _knee(last_ok, "+".join(first_bad["broke"]), windows)
    if last_ok is None:
        return None
    return _knee(last_ok, "not reached", windows)


def _knee(last_ok: dict[str, Any], limited_by: str, windows: list[dict[str, Any]]) -> Knee:
    capacity = min(last_ok["admitted_bids_rps"], last_ok["offered_bids_rps"])
    return Knee(
        capacity, last_ok["offered_bids_rps"], last_ok["t"], limited_by, tuple(windows), last_ok
    )


def confirm_rates(knee_rps: float, tries: int = CONFIRM_TRIES) -> list[float]:
    """The steady rates that confirm a ramp's knee, highest first: knee x CONFIRM_STEP^i."""
    return [round(knee_rps * CONFIRM_STEP**i, 1) for i in range(tries)]


def edge_holds(figures: Mapping[str, Any], keep_up: float = KEEP_UP) -> list[str]:
    """Why a patterns-on calibration run did not hold: `holds` with its refusals by design."""
    return holds(figures, keep_up, refusing=True)


def holds(
    figures: Mapping[str, Any], keep_up: float = KEEP_UP, *, refusing: bool = False
) -> list[str]:
    """Why a steady run did not hold its rate (level_figures): [] when it did. The generator,
    errors and the SLO each named, as the knee names them. Errors: admitted bids under
    keep_up of offered, or, for a run `refusing` by design (patterns on), failures (timeouts,
    5xx) over 1 - keep_up of the answers."""
    offered = figures.get("offered_bids_rps") or 0.0
    if offered <= 0:
        return ["no bids offered"]
    why = []
    if (figures.get("sent_bids_rps") or 0.0) < keep_up * offered:
        why.append("generator")
    if refusing:
        short = (figures.get("failed_share") or 0.0) > 1.0 - keep_up
    else:
        short = (figures.get("admitted_bids_rps") or 0.0) < keep_up * offered
    if short:
        why.append("errors")
    if not figures.get("slo_met"):
        why.append("latency")
    return why


# --- the patterns-on limits, sized from the knee ---------------------------------------------
@dataclass(frozen=True, slots=True)
class Limits:
    """The limits of every patterns-on level, and where each came from (for the report)."""

    publisher_rate_per_s: float
    edge_basis: str
    auction_limit: int
    auction_basis: str


def size_limits(
    base: Scenario, knee: Knee, *, keep_edge: bool = False, keep_limits: bool = False
) -> Limits:
    """The edge: each publisher's bucket = capacity / publishers (the edge admits what the
    server can serve, and refuses the rest; `keep_edge` keeps the scenario's rate).

    The auction's concurrency limit, unless `keep_limits`: LIMIT_HEADROOM x the Redis work the
    target had in flight in the knee window (its own `auction_inflight_max` gauge, counted with
    the limit switched off), never below the scenario's limit (one that does not cap is kept).
    Why that figure: the limit bounds exactly that count, Redis work in flight, and at the knee
    the server was as busy as it can usefully be. Little's law on the bid latency the generator
    measured (capacity x admitted p99) would oversize it several times, since a bid's latency
    also holds the DSP fan-out and the HTTP stack outside the bulkhead (at a knee p99 of 100 ms
    and 600/s it gives 60 where a few are in flight); it is the fallback when the target has no
    gauge. The headroom is there because the gauge's peak over a 3 s window understates the
    bursts of a steady run's Poisson arrivals, and with max_wait_ms = 0 one burst above the
    limit is refused at once; a limit of 2x the knee's peak still caps the Redis work the
    bulkhead exists to bound."""
    auction = base.target.config.get("auction", {})
    scenario_limit = int(auction.get("limit", 64))
    if keep_edge:
        rate = base.target.publisher_rate_per_s
        edge = f"the scenario's {rate:g}/s per publisher (--keep-edge)"
    else:
        pubs = base.load.publishers
        rate = round(knee.capacity_rps / pubs, 3)
        edge = (
            f"capacity {knee.capacity_rps:g}/s / {pubs} publishers "
            f"(the scenario's: {base.target.publisher_rate_per_s:g}/s)"
        )
    if keep_limits:
        return Limits(
            rate, edge, scenario_limit, f"the scenario's {scenario_limit} (--keep-limits)"
        )
    peak, p_ms = knee.window.get("inflight_max"), knee.window.get("p_ms")
    if isinstance(peak, int | float) and peak > 0:
        need = math.ceil(LIMIT_HEADROOM * peak)
        how = f"{LIMIT_HEADROOM:g} x the {peak:g} Redis calls in flight at the knee"
    elif isinstance(p_ms, int | float) and p_ms > 0:
        need = math.ceil(LIMIT_HEADROOM * knee.capacity_rps * p_ms / 1000.0)
        how = (
            f"{LIMIT_HEADROOM:g} x capacity {knee.capacity_rps:g}/s x the knee's admitted "
            f"p99 {p_ms:g} ms (Little's law; the target reported no in-flight gauge)"
        )
    else:
        return Limits(rate, edge, scenario_limit, f"the scenario's {scenario_limit} (no figure)")
    if need <= scenario_limit:
        return Limits(
            rate, edge, scenario_limit, f"the scenario's {scenario_limit} (>= {how}: {need})"
        )
    return Limits(rate, edge, need, f"{how} (the scenario's: {scenario_limit})")


# --- one level's figures ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DeadlineCounts:
    """Admitted answers of some seconds against a deadline, from the generator's histograms."""

    in_time: int  # admitted answers (bids and impressions) at or under the deadline
    late: int  # admitted answers over it (and those of a second without a usable histogram)
    bids_in_time_min: int  # per second max(0, admitted bids - late), summed: never above
    bids_in_time_max: int  # per second min(admitted bids, in_time), summed: never below
    exact: bool  # every second with admitted answers had a decodable histogram


def deadline_counts(rows: Sequence[RequestSecond], deadline_ms: float) -> DeadlineCounts:
    """Count each second's admitted latencies at or under `deadline_ms`, summed over `rows`.

    A value counts when its HDR bucket starts at or under the deadline (a value of exactly the
    deadline counts; the bucket's width, 1/1000 of its value, is the resolution). A second
    with admitted answers but no decodable histogram counts them all late, one whose histogram
    holds fewer values than its admitted answers counts the missing ones late (both inexact)."""
    deadline_us = deadline_ms * 1000.0
    in_time = late = lo = hi = 0
    exact = True
    for r in rows:
        if r.admitted <= 0:
            continue
        h = _decode(r.hist_admitted)
        w = 0
        if h is None:
            exact = False
        else:
            for item in h.get_recorded_iterator():
                v = item.value_iterated_to
                if h.get_lowest_equivalent_value(v) <= deadline_us:
                    w += item.count_at_value_iterated_to
            exact = exact and h.get_total_count() == r.admitted
            w = min(w, r.admitted)
        bids = bids_admitted(r)
        in_time, late = in_time + w, late + (r.admitted - w)
        lo += max(0, bids - (r.admitted - w))
        hi += min(bids, w)
    return DeadlineCounts(in_time, late, lo, hi, exact)


def level_figures(rows: Sequence[RequestSecond], slo: LatencyBound) -> dict[str, Any]:
    """Over steady rows: offered and sent bids/s; goodput, bids/s answered admitted within
    the SLO's bound (deadline_counts: at least / at most); admitted bids/s whatever their
    latency; admitted answers/s (bids and impressions) in time and late; the SLO's percentile
    of admitted answers; the shares of all answers rejected by design and failed."""
    n = len(rows)
    if n == 0:
        return {"seconds": 0}
    intended = sum(bids_intended(r) for r in rows)
    sent = sum(bids_sent(r) for r in rows)
    total = sum(r.total for r in rows)
    p, count, exact = percentile_ms(rows, "admitted", slo.percentile)
    bids = sum(bids_admitted(r) for r in rows)
    d = deadline_counts(rows, slo.bound_ms)
    admitted = sum(r.admitted for r in rows)
    return {
        "seconds": n,
        "offered_bids_rps": round(intended / n, 1),
        "sent_bids_rps": round(sent / n, 1),
        "held": round(sent / intended, 4) if intended else None,
        "deadline_ms": slo.bound_ms,
        "goodput_bids_rps": round(d.bids_in_time_min / n, 1),  # the curve's y
        "goodput_bids_max_rps": round(d.bids_in_time_max / n, 1),
        "goodput_exact": d.exact and d.bids_in_time_min == d.bids_in_time_max,
        "admitted_bids_rps": round(bids / n, 1),  # in time or not
        "admitted_rps": round(admitted / n, 1),  # bids and impressions (figures.py's goodput_rps)
        "in_time_rps": round(d.in_time / n, 1),  # admitted answers within the deadline
        "late_rps": round(d.late / n, 1),  # admitted answers past it
        "late_share": round(d.late / admitted, 4) if admitted else None,
        f"admitted_p{slo.percentile:g}_ms": None if p is None else round(p, 2),
        "admitted_p_exact": exact,
        "slo_met": p is not None and slo.ok(p),
        "rejected_share": round(sum(r.rejected for r in rows) / total, 4) if total else None,
        "failed_share": round(sum(r.failures for r in rows) / total, 4) if total else None,
        "responses": total,
        "admitted_responses": count,
    }


# --- running it ------------------------------------------------------------------------------
def _measured_run(
    run: Runner, scenario: Scenario, run_dir: Path, console: Console
) -> tuple[Path, list[tuple[float, float]], str | None]:
    with CpuTrace(run_dir) as trace:
        out = run(scenario, run_dir, console)
    cpu_path = run_dir.with_name(f"{run_dir.name}.{CPU_FILE}")
    cpu_path.write_text(json.dumps({"error": trace.error, "points": trace.points}) + "\n")
    return out, trace.points, trace.error


def curve(
    scenario_ref: str | Path,
    overrides: Sequence[str],
    console: Console,
    out_dir: Path,
    *,
    levels: Sequence[float] = DEFAULT_LEVELS,
    run_s: float = 20.0,
    warmup_s: float = 5.0,
    ramp_s: float = 40.0,
    ramp_to: float | None = None,
    keep_edge: bool = False,
    keep_limits: bool = False,
    runner: Runner | None = None,
    report: Callable[[dict[str, Any], Path], list[Path]] | None = None,
    cost_probe: Callable[[Path, Console], Mapping[str, Any]] | None = None,
) -> int:
    """Find the capacity, run every level on and off, measure r/a, write curve.json + chart +
    summary. `cost_probe(dir, console)` measures r/a (default: rejection_cost.measure)."""
    base, top = _checked(scenario_ref, overrides, run_s, warmup_s, ramp_s, ramp_to)
    run = runner or _orchestrator_runner
    out_dir = Path(out_dir)
    if (out_dir / "curve.json").exists() or (out_dir / "capacity").exists():
        raise UsageError(
            f"--out {out_dir} already holds a curve", hint="choose a new directory with --out"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    slo = base.checks.slo
    n = 2 + 2 * len(levels)  # the capacity, each level on and off, r/a
    result: dict[str, Any] = {
        "scenario": base.name,
        "seed": base.seed,
        "slo": str(slo),
        "slo_ms": slo.bound_ms,
        "deadline_ms": slo.bound_ms,  # goodput counts admitted bids answered within it
        "tmax_ms": base.load.tmax_ms,
        "levels": list(levels),
        "run_s": run_s,
        "warmup_s": warmup_s,
        "keep_edge": keep_edge,
        "keep_limits": keep_limits,
        "ramp": RAMP,
        "points": [],
    }
    cost_points: list[Interval] = []
    knee = _capacity(run, base, out_dir, console, result, cost_points, n, ramp_s, top)
    limits = size_limits(base, knee, keep_edge=keep_edge, keep_limits=keep_limits)
    edge_tries: list[dict[str, Any]] = []
    if not keep_edge:
        limits = _calibrate_edge(
            run, base, knee, limits, out_dir, console, result, cost_points, n, edge_tries
        )
    result["limits"] = {
        **asdict(limits),
        "scenario_publisher_rate_per_s": base.target.publisher_rate_per_s,
        "scenario_auction_limit": int(base.target.config.get("auction", {}).get("limit", 64)),
        "auction_max_wait_ms": base.target.config.get("auction", {}).get("max_wait_ms"),
        "edge_tries": edge_tries,
    }
    console.print(
        f"      patterns-on limits: each publisher's bucket {limits.publisher_rate_per_s:g}/s "
        f"({limits.edge_basis}); auction limit {limits.auction_limit} ({limits.auction_basis})",
        highlight=False,
    )
    _write_json(out_dir / "curve.json", {**result, "partial": True})
    for level in plan_levels(levels, knee.capacity_rps):
        sc = level_scenario(base, level, run_s, warmup_s, limits=limits)
        console.print(
            f"[{level.index}/{n}] {level.multiple:g}x patterns-{level.patterns}: "
            f"{level.rate_rps:g}/s for {run_s:g} s",
            highlight=False,
        )
        point = _level(run, sc, level, out_dir, console, slo, cost_points)
        result["points"].append(point)
        _write_json(out_dir / "curve.json", {**result, "partial": True})
        console.print(
            f"      goodput {point.get('goodput_bids_rps', 0):g} bids/s in {slo.bound_ms:g} ms "
            f"(admitted {point.get('admitted_bids_rps', 0):g}, "
            f"late {_pct(point.get('late_share'))}) of {point.get('offered_bids_rps', 0):g} "
            f"offered, admitted p{slo.percentile:g} "
            f"{point.get(f'admitted_p{slo.percentile:g}_ms')} ms, rejected "
            f"{_pct(point.get('rejected_share'))}, failed {_pct(point.get('failed_share'))}",
            highlight=False,
        )
    fit = fit_cost(cost_points)
    console.print(
        f"[{n}/{n}] r/a on the target alone: its CPU per edge 429, per shed 503 and per "
        f"admitted bid, {COST_ROUNDS} rounds of {COST_WINDOW_S:g} s per kind at {COST_RATE:g}/s",
        highlight=False,
    )
    probe = cost_probe or _isolated_cost
    result["cost"] = cost_figures(probe(out_dir / "rejection_cost", console), fit)
    ratio = result["cost"]["ratio"]
    if ratio is not None:
        result["bound"] = {f"{k:g}": round(bound_share(k, ratio), 3) for k in levels}
    write = report or _default_report
    files = write(result, out_dir)
    console.print("curve written: " + ", ".join(str(f) for f in files), highlight=False)
    return 0


def _calibrate_edge(
    run: Runner,
    base: Scenario,
    knee: Knee,
    limits: Limits,
    out_dir: Path,
    console: Console,
    result: dict[str, Any],
    cost_points: list[Interval],
    n: int,
    tries: list[dict[str, Any]],
) -> Limits:
    """Patterns-on runs at EDGE_AT x capacity, the edge at each of EDGE_SHARES of it in turn
    (the auction limit as sized), until one holds (edge_holds): `limits` with that edge, each
    try appended to `tries`. None holding: the lowest share, its basis saying so."""
    slo, run_s, warmup_s = base.checks.slo, float(result["run_s"]), float(result["warmup_s"])
    pubs, capacity = base.load.publishers, knee.capacity_rps
    level = LevelPlan(1, EDGE_AT, "on", round(EDGE_AT * capacity, 1))
    tried = ", ".join(f"{x:g}" for x in EDGE_SHARES)
    edge = limits
    for i, share in enumerate(EDGE_SHARES, 1):
        edge = replace(limits, publisher_rate_per_s=round(share * capacity / pubs, 3))
        console.print(
            f"[1/{n}] calibrating the edge: patterns on at {EDGE_AT:g}x ({level.rate_rps:g}/s), "
            f"buckets {share:g} x capacity ({edge.publisher_rate_per_s:g}/s each; try {i} of "
            f"{len(EDGE_SHARES)})",
            highlight=False,
        )
        sc = level_scenario(base, level, run_s, warmup_s, limits=edge)
        sc = sc.model_copy(update={"name": f"{base.name}-edge-{i}"[:64]})
        point = _steady_run(run, sc, out_dir / f"edge-{i}", console, slo, cost_points)
        why = edge_holds(point)
        tries.append({"share": share, "multiple": EDGE_AT, "rate_per_s": edge.publisher_rate_per_s,
                      "broke": why, **point})  # fmt: skip
        said = (
            f"admitted {point.get('admitted_bids_rps', 0):g}/s, admitted p{slo.percentile:g} "
            f"{point.get(f'admitted_p{slo.percentile:g}_ms')} ms, late "
            f"{_pct(point.get('late_share'))}, failed {_pct(point.get('failed_share'))}"
        )
        if not why:
            console.print(f"      held: {said}", highlight=False)
            return replace(
                edge,
                edge_basis=f"{share:g} x capacity {capacity:g}/s / {pubs} publishers: the "
                f"first of {tried} x capacity whose patterns-on run at {EDGE_AT:g}x held the "
                f"SLO (the scenario's: {base.target.publisher_rate_per_s:g}/s)",
            )
        console.print(f"      did not hold ({'+'.join(why)}): {said}", highlight=False)
    console.print(
        f"      [yellow]no share held at {EDGE_AT:g}x: the levels run with the lowest[/]",
        highlight=False,
    )
    return replace(
        edge,
        edge_basis=f"{EDGE_SHARES[-1]:g} x capacity {capacity:g}/s / {pubs} publishers, the "
        f"lowest share tried: none held the SLO at {EDGE_AT:g}x "
        f"(the scenario's: {base.target.publisher_rate_per_s:g}/s)",
    )


def _isolated_cost(log_dir: Path, console: Console) -> Mapping[str, Any]:
    from spikegate.harness.rejection_cost import measure

    return measure(
        COST_RATE, COST_WINDOW_S, COST_ROUNDS, log_dir,
        progress=lambda msg: console.print(f"      {msg}", highlight=False),
    )  # fmt: skip


def cost_figures(measured: Mapping[str, Any], fit: CostFit) -> dict[str, Any]:
    """result["cost"] from rejection_cost.measure's result: a, r (edge 429) and the shed 503
    per request net of idle (and raw), r/a net as `ratio` (the bound's), the statuses each
    kind was answered with, and the levels' fit for the record. No ratio (`unfit` says why)
    when a kind's windows were not answered as that kind (< COST_KEPT of them): a target
    that admits the hot publisher's bids, say, has not had its 429 measured."""
    tree = measured["this_tree"]
    per = tree["per_kind"]
    out: dict[str, Any] = {
        "method": (
            f"the target alone, {measured['rounds']} rounds of {measured['window_s']:g} s per "
            f"kind at {measured['rate_per_s']:g}/s, net of its idle CPU"
        ),
        "a_us": per["admitted"]["cpu_us_per_request_net"],
        "r_us": per["429"]["cpu_us_per_request_net"],
        "shed_us": per["shed"]["cpu_us_per_request_net"],
        "a_us_raw": per["admitted"]["cpu_us_per_request"],
        "r_us_raw": per["429"]["cpu_us_per_request"],
        "shed_us_raw": per["shed"]["cpu_us_per_request"],
        "ratio": tree["r_over_a_net"],
        "ratio_raw": tree["r_over_a"],
        "shed_ratio": tree["shed_over_a_net"],
        "idle_cores": tree["idle_cpu_share_of_core"],
        "statuses": {k: per[k]["statuses"] for k in _COST_STATUS},
        "rate_per_s": measured["rate_per_s"],
        "window_s": measured["window_s"],
        "rounds": measured["rounds"],
        "unfit": None,
        "fit": {**asdict(fit), "ratio": None if fit.ratio is None else round(fit.ratio, 4)},
    }
    for kind, ok in _COST_STATUS.items():
        seen = per[kind]["statuses"]
        total = sum(seen.values())
        if total == 0 or sum(seen.get(s, 0) for s in ok) < COST_KEPT * total:
            out["unfit"] = f"the {kind} windows were answered {seen}, not {'/'.join(ok)}"
            out["ratio"] = None
            break
    else:
        if not (isinstance(out["a_us"], int | float) and out["a_us"] > 0):
            out["unfit"], out["ratio"] = f"a = {out['a_us']} us is no cost", None
    return out


def _checked(
    scenario_ref: str | Path,
    overrides: Sequence[str],
    run_s: float,
    warmup_s: float,
    ramp_s: float,
    ramp_to: float | None,
) -> tuple[Scenario, float]:
    """The scenario and the ramp's top, or a UsageError naming the option or field."""
    if not 10.0 <= run_s <= 600.0:
        raise UsageError(f"--run-s must be between 10 and 600 seconds (got {run_s:g})")
    if not 0.0 <= warmup_s <= run_s - 5.0:
        raise UsageError(f"--warmup-s must be between 0 and --run-s - 5 (got {warmup_s:g})")
    if not 15.0 <= ramp_s <= 600.0:
        raise UsageError(f"--ramp-s must be between 15 and 600 seconds (got {ramp_s:g})")
    base = load_scenario(scenario_ref, overrides)
    if base.target.kind != "reference":
        raise UsageError(
            f"target.kind is {base.target.kind!r}: the curve switches the reference target's "
            "patterns off (target.config.<pattern>.enabled), which only it has",
        )
    top = ramp_to if ramp_to is not None else 3.0 * max(base.load.base_rps, base.load.peak_rps)
    if top <= base.load.base_rps:
        raise UsageError(
            f"--ramp-to ({top:g}) must exceed load.base_rps ({base.load.base_rps:g}), "
            "where the capacity ramp starts"
        )
    return base, top


def _capacity(
    run: Runner,
    base: Scenario,
    out_dir: Path,
    console: Console,
    result: dict[str, Any],
    cost_points: list[Interval],
    n: int,
    ramp_s: float,
    top: float,
) -> Knee:
    """Step 1 of n: the ramp, its knee into result["capacity"], its CPU into cost_points."""
    slo, warmup_s = base.checks.slo, float(result["warmup_s"])
    console.print(
        f"[1/{n}] capacity ramp, all patterns off: {base.load.base_rps:g} -> {top:g}/s "
        f"over {ramp_s:g} s",
        highlight=False,
    )
    cap_dir, cap_cpu, _ = _measured_run(
        run, capacity_scenario(base, top, ramp_s, warmup_s), out_dir / "capacity", console
    )
    history = load_history(cap_dir)
    knee = find_knee(history.requests, slo, start_s=warmup_s, samples=history.samples)
    cost_points += cost_seconds(raw_samples(cap_dir), cap_cpu, warmup_s, ramp_s)
    if knee is None:
        raise InconclusiveRun(
            f"no capacity found: the ramp did not keep up even at its start "
            f"({base.load.base_rps:g}/s, SLO {slo})",
            hint="lower load.base_rps (--set load.base_rps=...) so the ramp starts below it",
        )
    capacity = knee.capacity_rps
    broke = broke_first(knee, slo)
    result["capacity"] = {
        "bids_rps": capacity,
        "offered_bids_rps": knee.offered_bids_rps,
        "at_s": knee.at_s,
        "limited_by": knee.limited_by,
        "broke_first": broke,
        "ramp": RAMP,
        "ramp_to": top,
        "run_dir": str(cap_dir),
        "windows": list(knee.windows),
    }
    _write_json(out_dir / "curve.json", {**result, "partial": True})
    if knee.capped:
        raise InconclusiveRun(
            f"the capacity ramp was capped by a pattern, not by the server: {broke}",
            hint="the ramp runs with every pattern off; a refusal there means the target "
            "refused by design anyway (check --set target.config... and the target's build)",
        )
    console.print(
        f"      capacity (knee) {capacity:g}/s at {knee.at_s:g} s; past it: {broke}",
        highlight=False,
    )
    if knee.limited_by == "not reached":
        console.print(
            "      [yellow]the ramp never left the SLO: the capacity is at least this; "
            "raise --ramp-to[/]"
        )
    return _confirm(run, base, knee, out_dir, console, result, cost_points, n)


def _confirm(
    run: Runner,
    base: Scenario,
    knee: Knee,
    out_dir: Path,
    console: Console,
    result: dict[str, Any],
    cost_points: list[Interval],
    n: int,
) -> Knee:
    """Steady runs from the ramp's knee down (confirm_rates) until one holds: the knee with
    that run's capacity (min of its offered and admitted bids/s), each try in
    result["capacity"]["confirm"]. InconclusiveRun when none holds."""
    slo, run_s, warmup_s = base.checks.slo, float(result["run_s"]), float(result["warmup_s"])
    cap = result["capacity"]
    cap["knee_bids_rps"], cap["confirm"] = knee.capacity_rps, []
    rates = confirm_rates(knee.capacity_rps)
    for i, rate in enumerate(rates, 1):
        console.print(
            f"[1/{n}] confirming the capacity: steady {rate:g}/s for {run_s:g} s, all patterns "
            f"off (try {i} of {len(rates)})",
            highlight=False,
        )
        sc = confirm_scenario(base, rate, run_s, warmup_s, i)
        point = _steady_run(run, sc, out_dir / f"confirm-{i}", console, slo, cost_points)
        why = holds(point)
        cap["confirm"].append({"rate_rps": rate, "broke": why, **point})
        p = point.get(f"admitted_p{slo.percentile:g}_ms")
        said = (
            f"admitted {point.get('admitted_bids_rps', 0):g}/s of "
            f"{point.get('offered_bids_rps', 0):g} offered "
            f"(sent {point.get('sent_bids_rps', 0):g}), admitted p{slo.percentile:g} {p} ms, "
            f"late {_pct(point.get('late_share'))}"
        )
        if not why:
            capacity = min(point["admitted_bids_rps"], point["offered_bids_rps"])
            cap["bids_rps"] = capacity
            _write_json(out_dir / "curve.json", {**result, "partial": True})
            console.print(
                f"      held: {said}; capacity {capacity:g}/s "
                f"({capacity / knee.capacity_rps:.2f} of the ramp's knee)",
                highlight=False,
            )
            return replace(knee, capacity_rps=capacity)
        _write_json(out_dir / "curve.json", {**result, "partial": True})
        console.print(f"      did not hold ({'+'.join(why)}): {said}", highlight=False)
    raise InconclusiveRun(
        f"no capacity confirmed: the server did not hold a steady rate within the SLO ({slo}) "
        f"from the ramp's knee {knee.capacity_rps:g}/s down to {rates[-1]:g}/s",
        hint="the ramp's knee is far above what the server sustains: see each try under "
        f"{out_dir}/confirm-*; a longer --ramp-s rises more slowly",
    )


def broke_first(knee: Knee, slo: LatencyBound) -> str:
    """What broke first past the knee, in words, from the first window that did not keep up."""
    after = [w for w in knee.windows if w["t"] > knee.at_s and w["broke"]]
    if not after:
        return "nothing: the ramp never left the SLO (the capacity is at least this)"
    w = after[0]
    at = f"at {w['offered_bids_rps']:g} bids/s offered ({w['t']:g} s)"
    parts = []
    for why in w["broke"]:
        if why == "latency":
            parts.append(
                f"latency (admitted p{slo.percentile:g} {w['p_ms']} ms > {slo.bound_ms:g})"
            )
        elif why == "errors":
            parts.append(
                f"errors (admitted {w['admitted_bids_rps']:g}/s; failed "
                f"{w['failed_bids_rps']:g}/s, the server's own 503s {w['rejected_bids_rps']:g}/s)"
            )
        elif why == "capped":
            caps = w.get("capped") or {"bids answered 429/503": w["rejected_bids_rps"]}
            what = ", ".join(f"{k} {v:g}" for k, v in caps.items())
            parts.append(f"capped by a pattern ({what}; admitted {w['admitted_bids_rps']:g}/s)")
        elif why == "generator":
            parts.append("the generator (sent < 95% of the schedule)")
    return "; ".join(parts) + " " + at


def _level(
    run: Runner,
    sc: Scenario,
    level: LevelPlan,
    out_dir: Path,
    console: Console,
    slo: LatencyBound,
    cost_points: list[Interval],
) -> dict[str, Any]:
    """One level's run and its figures; its CPU intervals are added to cost_points."""
    return {
        **asdict(level),
        **_steady_run(run, sc, out_dir / level.label, console, slo, cost_points),
    }


def _steady_run(
    run: Runner,
    sc: Scenario,
    run_dir: Path,
    console: Console,
    slo: LatencyBound,
    cost_points: list[Interval],
) -> dict[str, Any]:
    """A steady run's figures after its warmup, with the target's CPU; its CPU intervals are
    added to cost_points."""
    warmup_s, run_s = sc.load.warmup_s, sc.load.duration_s
    run_dir, cpu, cpu_error = _measured_run(run, sc, run_dir, console)
    steady = [r for r in load_history(run_dir).requests if warmup_s <= r.t < run_s]
    point = {**level_figures(steady, slo), "run_dir": str(run_dir)}
    intervals = cost_seconds(raw_samples(run_dir), cpu, warmup_s, run_s)
    cost_points += intervals
    point.update(level_cpu(intervals, cpu_error))
    return point


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _pct(v: Any) -> str:
    return "-" if not isinstance(v, int | float) else f"{v * 100:.1f}%"


def _default_report(result: dict[str, Any], out_dir: Path) -> list[Path]:
    from spikegate.harness.curve_report import write_report

    return write_report(result, out_dir)
