"""A hand-made session (`spikegate up`, meta.json "mode": "session"): its phases come from
what happened, not from a scenario's timeline.

    events.jsonl --load_timeline--> the offered rate over time (load_set, load_spike_*)
                 --disturbances--->  every fault window, every spike, load above base_rps
                 --session_phases-> warmup, baseline, stress, recovery, post,
                                    stress-2, recovery-2, post-2, ...

The rules:
- A disturbance is a fault window (fault_start .. fault_stop, or to the session's end), a
  spike (load_spike_start .. load_spike_end, or start + for_s), or a time the rate was set
  above the scenario's load.base_rps (load_set .. the next load_set at or below it).
- Disturbances that overlap, or are closer than phases.recovery_s, are one stress window.
- Each stress window is followed by a recovery window of phases.recovery_s, cut short by the
  next stress window or the session's end; the quiet time before the first stress window
  (after the warmup) is the baseline, the quiet time after a recovery is that pair's post.
- The first pair keeps the plain names (stress, recovery, post), as a scripted run's; the
  n-th is stress-n, recovery-n, post-n. The checker judges each pair as its own window
  (`pair_views`): the verdict names are a scripted run's, the phase names are numbered.

Event kinds read (written by `spikegate up` and `spikegate load`; spikegate/contract/rundir.py):
    load_set          {rps_after | rate, rps_before | previous, action}
                      the arrival rate from now on (rate null: the scenario's base rate;
                      action "stop": 0)
    load_spike_start  {peak, for_s, until_t, rps_before}
                      the rate is `peak` (a number, or "3x" the rate before) until until_t
                      (else for `for_s` seconds), then back to the rate before
    load_spike_end    {rps_after | rate}  the spike ended (back to this rate, when given)
    fault_start / fault_stop             as in a scripted run (history.derive_fault_windows)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from pydantic import ValidationError

from spikegate.harness.scenario import Phase, Scenario

if TYPE_CHECKING:
    from spikegate.harness.history import History

__all__ = [
    "SESSION_MODE",
    "Disturbance",
    "Pair",
    "disturbances",
    "is_session",
    "load_timeline",
    "pair_views",
    "pairs",
    "session_end",
    "session_phases",
    "session_scenario",
    "timeline_data",
]

SESSION_MODE = "session"


class _Event(Protocol):
    @property
    def t(self) -> float: ...
    @property
    def kind(self) -> str: ...
    @property
    def data(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Disturbance:
    """Something that stressed the service, [start_s, end_s)."""

    start_s: float
    end_s: float
    what: str


@dataclass(frozen=True, slots=True)
class Pair:
    """One stress window with what follows it, and the suffix its phases carry ("" or "-n")."""

    suffix: str
    stress: Phase
    recovery: Phase | None
    post: Phase | None
    end_s: float  # where this pair's judging stops: the next stress window, or the end


def is_session(meta: Mapping[str, Any]) -> bool:
    return meta.get("mode") == SESSION_MODE


def _num(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _or(v: float | None, default: float) -> float:
    return default if v is None else v


def session_end(
    meta: Mapping[str, Any], request_ts: Sequence[float], events: Sequence[_Event]
) -> float:
    """How long the session lasted: meta.json's duration_s when recorded, else the end of
    the last recorded second or the last event, whichever is later."""
    recorded = _num(meta.get("duration_s"))
    if recorded is not None and recorded > 0:
        return recorded
    last = request_ts[-1] + 1.0 if request_ts else 0.0
    return max([last, *(e.t for e in events)])


def load_timeline(
    base_rps: float, events: Sequence[_Event], end_s: float
) -> list[tuple[float, float]]:
    """The offered rate as (from t, rps) steps, the first at 0: the rate before the first
    load event is that event's rate before (a session started --idle is at 0), else
    `base_rps`. A spike ends at its load_spike_end event, else at its until_t, else after
    its for_s, and returns to the rate before it (or its end event's rate)."""
    changes: list[tuple[float, float]] = []
    start_rate: float | None = None
    spike_end: float | None = None  # an open spike's scheduled end
    before_spike = base_rps
    ordered = sorted(events, key=lambda e: e.t)
    for i, e in enumerate(ordered):
        if spike_end is not None and e.t >= spike_end:
            changes.append((spike_end, before_spike))
            spike_end = None
        current = changes[-1][1] if changes else _or(start_rate, base_rps)
        if e.kind == "load_set":
            rate = _rate_after(e, base_rps)
            if rate is None:
                continue
            if start_rate is None and not changes:
                start_rate = _rate_before(e)
            if spike_end is not None:
                before_spike = rate  # the spike keeps going; its end returns to this rate
            else:
                changes.append((e.t, rate))
        elif e.kind == "load_spike_start":
            before = _rate_before(e)
            if start_rate is None and not changes:
                start_rate = before
            before_spike = _or(before, current) if spike_end is None else before_spike
            peak = _peak(e.data.get("peak"), before_spike)
            if peak is None:
                continue
            changes.append((e.t, peak))
            spike_end = _spike_end(e, ordered[i + 1 :])
        elif e.kind == "load_spike_end" and spike_end is not None:
            rate = _rate_after(e, base_rps)
            changes.append((e.t, before_spike if rate is None else rate))
            spike_end = None
    if spike_end is not None and spike_end < end_s:
        changes.append((spike_end, before_spike))
    first = base_rps if start_rate is None else start_rate
    steps: list[tuple[float, float]] = [(0.0, first)]
    for t, rate in changes:
        t = max(0.0, t)
        if t >= end_s:
            break
        if steps[-1][0] == t:
            steps[-1] = (t, rate)
        elif steps[-1][1] != rate:
            steps.append((t, rate))
    return steps


def _rate_after(e: _Event, base_rps: float) -> float | None:
    """The rate a load event leaves: rps_after, else rate; `rate` null is the scenario's
    own rate (its base), action "stop" is 0; None when the event does not say."""
    d = e.data
    for key in ("rps_after", "rate"):
        v = _num(d.get(key))
        if v is not None:
            return v
    if d.get("action") == "stop":
        return 0.0
    if "rate" in d and d["rate"] is None:
        return base_rps
    return None


def _rate_before(e: _Event) -> float | None:
    d = e.data
    v = _num(d.get("rps_before"))
    return v if v is not None else _num(d.get("previous"))


def _peak(raw: object, before: float) -> float | None:
    """A spike's peak in arrivals/s: a number, or "3x" (a multiple of the rate before)."""
    v = _num(raw)
    if v is not None:
        return v
    if isinstance(raw, str) and raw.strip().lower().endswith("x"):
        try:
            factor = float(raw.strip()[:-1])
        except ValueError:
            return None
        return factor * before if math.isfinite(factor) and factor >= 0 else None
    return None


def _spike_end(start: _Event, later: Sequence[_Event]) -> float:
    """When a spike ended: at its load_spike_end event when one was recorded (before the
    next spike: inf here, the event closes it), else at its until_t, else after its for_s
    (never, without either)."""
    for e in later:
        if e.kind == "load_spike_start":
            break
        if e.kind == "load_spike_end":
            return math.inf
    until, for_s = _num(start.data.get("until_t")), _num(start.data.get("for_s"))
    if until is not None and until > start.t:
        return until
    return start.t + for_s if for_s is not None and for_s > 0 else math.inf


def disturbances(
    base_rps: float,
    events: Sequence[_Event],
    faults: Sequence[tuple[float, float, str]],
    end_s: float,
) -> list[Disturbance]:
    """Every fault window (start, end, name), every spike, every time above base_rps."""
    out = [Disturbance(s, min(e, end_s), what) for s, e, what in faults if s < end_s]
    steps = load_timeline(base_rps, events, end_s)
    spikes = [e.t for e in events if e.kind == "load_spike_start"]
    above: list[list[float]] = []
    for i, (t, rate) in enumerate(steps):
        nxt = steps[i + 1][0] if i + 1 < len(steps) else end_s
        if rate <= base_rps or nxt <= t:
            continue
        if above and above[-1][1] == t:
            above[-1][1] = nxt
        else:
            above.append([t, nxt])
    for lo, hi in above:
        what = "a load spike" if any(lo <= x < hi for x in spikes) else "load above base"
        out.append(Disturbance(lo, hi, what))
    for e in events:  # a spike at or below the base rate is still one the user fired
        if e.kind == "load_spike_start" and not any(d.start_s <= e.t < d.end_s for d in out):
            later = sorted((x for x in events if x.t >= e.t and x is not e), key=lambda x: x.t)
            ends = [x.t for x in later if x.kind == "load_spike_end"]
            stop = min([_spike_end(e, later), *ends[:1]])
            out.append(Disturbance(e.t, min(stop, end_s), "a load spike"))
    return sorted(out, key=lambda d: (d.start_s, d.end_s))


MIN_POST_S = 3.0  # a quiet stretch shorter than this after a recovery is part of it


def _phase(name: str, start: float, end: float) -> Phase:
    return Phase(cast(Any, name), start, end)  # numbered names: Phase.name's Literal is narrower


def session_phases(
    warmup_s: float, recovery_s: float, found: Sequence[Disturbance], end_s: float
) -> tuple[Phase, ...]:
    """The session's phases from its disturbances (see the module doc)."""
    warm = min(warmup_s, end_s)
    out = [_phase("warmup", 0.0, warm)] if warm > 0 else []
    windows: list[list[float]] = []
    for d in sorted(found, key=lambda d: d.start_s):
        # from the first whole second it touches: rows are per second of intended send,
        # and a fault added by hand at 18.07 s already shapes the row of second 18
        s, e = max(warm, float(math.floor(d.start_s))), min(end_s, d.end_s)
        if e <= s:
            continue
        if windows and s - windows[-1][1] < max(recovery_s, 1e-9):
            windows[-1][1] = max(windows[-1][1], e)
        else:
            windows.append([s, e])
    if not windows:
        if end_s > warm:
            out.append(_phase("baseline", warm, end_s))
        return tuple(out)
    if windows[0][0] > warm:
        out.append(_phase("baseline", warm, windows[0][0]))
    for i, (s, e) in enumerate(windows):
        suffix = "" if i == 0 else f"-{i + 1}"
        nxt = windows[i + 1][0] if i + 1 < len(windows) else end_s
        out.append(_phase(f"stress{suffix}", s, e))
        r = min(nxt, e + recovery_s)
        if nxt - r < MIN_POST_S:  # too short to judge on its own: the recovery holds it
            r = nxt
        if r > e:
            out.append(_phase(f"recovery{suffix}", e, r))
        if nxt > r:
            out.append(_phase(f"post{suffix}", r, nxt))
    return tuple(out)


def timeline_data(
    scenario: Scenario,
    steps: Sequence[tuple[float, float]],
    end_s: float,
    faults: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """`scenario` as data, with the session's timeline: duration_s = the session's length,
    its load as a step shape (or steady when the rate never changed), `faults` as its
    [[faults]], and the stress window left to be derived."""
    data: dict[str, Any] = scenario.model_dump(mode="json")
    load: dict[str, Any] = data["load"]
    load["duration_s"] = _round(end_s)
    load["base_rps"] = steps[0][1] if steps else scenario.load.base_rps
    later = [{"at_s": _round(t), "rps": rate} for t, rate in steps[1:]]
    if later:
        load["shape"], load["steps"] = "step", later
    else:
        load["shape"], load["steps"] = "steady", []
    data["faults"] = [dict(f) for f in faults]
    data["phases"]["stress_start_s"] = data["phases"]["stress_end_s"] = None
    return data


def _round(t: float) -> float:
    return round(t, 3)


def session_scenario(
    scenario: Scenario, steps: Sequence[tuple[float, float]], end_s: float
) -> Scenario | None:
    """The scenario the session effectively ran (its load as it was offered, its length):
    what the checker holds the generator's schedule to. None when it is not a valid
    scenario (a session shorter than its warmup, for one)."""
    try:
        return Scenario.model_validate(timeline_data(scenario, steps, end_s))
    except ValidationError:
        return None


def pairs(phases: Sequence[Phase], end_s: float) -> list[Pair]:
    """Each stress window with its recovery and post (by their numbered names)."""
    by_name: dict[str, Phase] = {str(p.name): p for p in phases}
    out: list[Pair] = []
    n = 1
    while True:
        suffix = "" if n == 1 else f"-{n}"
        stress = by_name.get(f"stress{suffix}")
        if stress is None:
            return out
        nxt = by_name.get(f"stress-{n + 1}")
        out.append(
            Pair(
                suffix,
                stress,
                by_name.get(f"recovery{suffix}"),
                by_name.get(f"post{suffix}"),
                nxt.start_s if nxt is not None else end_s,
            )
        )
        n += 1


def pair_views(history: History) -> list[tuple[str, History]]:
    """One History per stress window, as a scripted run with one stress window would have
    it: phases warmup, baseline, stress, recovery, post (this pair's, plain names), the
    faults that overlap this stress window, and the rows up to the next stress window (a
    recovery is judged on the time before the next disturbance, not after it)."""
    warm = [p for p in history.phases if p.name in ("warmup", "baseline")]
    views: list[tuple[str, History]] = []
    for pair in pairs(history.phases, history.end_s):
        s = pair.stress
        phases = [*warm, _phase("stress", s.start_s, s.end_s)]
        if pair.recovery is not None:
            phases.append(_phase("recovery", pair.recovery.start_s, pair.recovery.end_s))
        if pair.post is not None:
            phases.append(_phase("post", pair.post.start_s, pair.post.end_s))
        faults = [w for w in history.faults if w.start_s < s.end_s and w.end_s > s.start_s]
        reqs = history.requests_in(-math.inf, pair.end_s)
        smps = history.samples_in(-math.inf, pair.end_s)
        view = dataclasses.replace(
            history,
            phases=tuple(phases),
            faults=tuple(faults),
            requests=tuple(reqs),
            samples=tuple(smps),
            _req_t=tuple(r.t for r in reqs),
            _smp_t=tuple(x.t for x in smps),
        )
        views.append((pair.suffix, view))
    return views
