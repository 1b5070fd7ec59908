"""What every verdict reads: the judging context (history, thresholds, the target's facts)
and the small helpers that build and combine verdicts."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from spikegate.harness.figures import percentile_ms
from spikegate.harness.history import History, RequestSecond, Sample
from spikegate.harness.scenario import Phase
from spikegate.harness.target_facts import TargetFacts
from spikegate.harness.thresholds import Thresholds
from spikegate.harness.verdicts import FAIL, INCONCLUSIVE, PASS, SKIPPED, Status, Verdict

JUDGED_PHASES = ("baseline", "stress", "recovery", "post")
_PROTECTIVE_BREAKER = frozenset({"open", "half_open", "forced_open"})


# --- context --------------------------------------------------------------------------------
@dataclass
class _Ctx:
    h: History
    th: Thresholds
    target: TargetFacts | None = None  # the reference target's limits; None: a user's service
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
    def reference(self) -> bool:
        """The reference target, whose internals the layer verdicts know; False for a user's
        own service (kind "command" or "external"), judged as a black box."""
        return self.h.reference

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
    """fail if any part failed; else inconclusive if any was; messages of the worst kind.
    Skipped parts (nothing to judge them on) never decide: the rest passes with them named
    after it, and only parts that are all skipped make a skipped verdict."""
    for status in (FAIL, INCONCLUSIVE):
        msgs = [m for s, m in parts if s == status]
        if msgs:
            return status, "; ".join(msgs)
    judged = [m for s, m in parts if s != SKIPPED]
    skipped = [m for s, m in parts if s == SKIPPED]
    if skipped and not judged:
        return SKIPPED, "; ".join(skipped)
    return PASS, "; ".join([*judged, *skipped])


# --- resource figures read by run and layer verdicts ----------------------------------------
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
        return c.target.auction_limit, "target.config auction.limit"
    return None, "unknown"


def _queue_cap(c: _Ctx) -> tuple[float | None, str]:
    if c.th.queue_max is not None:
        return float(c.th.queue_max), "checks.queue_max"
    if c.target is not None:
        return c.target.queue_max_depth, "target.config impressions.max_depth"
    return None, "unknown"


def _inflight_peak(s: Sample) -> float | None:
    """Auctions in flight: the peak since the previous sample when the target exports one (a
    bound crossed between two scrapes is still seen, however late), else the level at the
    scrape."""
    if s.auction_inflight_max is None:
        return s.auction_inflight
    return max(s.auction_inflight_max, s.auction_inflight or 0.0)


def settle_windows(c: _Ctx, p: Phase) -> list[tuple[float, float]]:
    """The first `settle` after the phase's start and after each fault onset in it, from
    the first whole second the onset touches: protection needs a moment to engage (a
    breaker its slow calls, a timer its loop), so latencies there are not judged."""
    grace = c.th.settle.seconds
    onsets = sorted(
        {p.start_s, *(w.start_s for w in c.h.faults if p.start_s <= w.start_s < p.end_s)}
    )
    return [(math.floor(o), o + grace) for o in onsets]
