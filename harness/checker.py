"""The checker: a pure function from a recorded History and Thresholds to verdicts.

    History --+--> valid_run            (per judged phase + run)   generator held, enough data,
              |                                                     the record agrees with itself
              +--> steady_state         (baseline, post)           admitted pNN, errors, rejections
              +--> no_unexpected_errors (stress)                   failures besides 429/503
              +--> graceful_degradation (stress)                   goodput, admitted/rejected pNN
              +--> bounded_resources    (run)                      inflight, queue, RSS growth
              +--> time_to_detect       (stress)                   need -> protective decision
              +--> time_to_recover      (recovery)                 SLO holds `hold` s, no relapse
              +--> no_silent_loss       (run)                      outcomes = sent; acked in Kafka
              +--> layer.edge / layer.bulkhead / layer.shedder / layer.breaker (stress)
                                      --> CheckResult(verdicts, thresholds)

A hand-made session (meta.json "mode": "session", harness/session.py) has its phases from
its events: stress, recovery, post for the first disturbance, stress-2, recovery-2, post-2
for the next, and so on. Each stress window is judged by the same verdicts as a scripted
run's single one (on its own faults and on the rows up to the next stress window), the
baseline and the whole-run verdicts once.

A user's own service (target kind "command" or "external", not "reference") is a black box:
the same run verdicts, judged from the outside (run_verdicts.py says where they differ), with
bounded_resources and the layer signatures judged only where the scenario maps the service's
own metrics ([metrics]) and states their bounds ([checks]), otherwise skipped with the reason
(blackbox_verdicts.py). A skipped verdict never passes and never decides the run.

The judge has rooms of its own:
    figures.py          figures shared by the checker, the reports and `compare`
    judging.py          the context every verdict reads (history, thresholds, target facts)
    evidence.py         the harness's independent evidence (proxies, broker, schedule)
    run_verdicts.py     verdicts for any HTTP service
    layer_verdicts.py   the reference target's four patterns
    blackbox_verdicts.py  a user's service: resources and layers from its mapped metrics
    target_facts.py     the reference target's limits, read as data from the run directory
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from spikegate.contract.rundir import WORKER_CRASH_PREFIX
from spikegate.harness import blackbox_verdicts as blackbox
from spikegate.harness.figures import (
    ServerRejections,
    percentile_ms,
    server_rejections,
)
from spikegate.harness.history import History
from spikegate.harness.judging import _Ctx
from spikegate.harness.layer_verdicts import (
    layer_breaker,
    layer_bulkhead,
    layer_edge,
    layer_shedder,
)
from spikegate.harness.run_verdicts import (
    bounded_resources,
    graceful_degradation,
    no_silent_loss,
    no_unexpected_errors,
    steady_state,
    time_to_detect,
    time_to_recover,
    valid_run,
)
from spikegate.harness.session import pair_views
from spikegate.harness.target_facts import TargetFacts
from spikegate.harness.thresholds import Thresholds, thresholds_from_checks
from spikegate.harness.verdicts import FAIL, INCONCLUSIVE, CheckResult, Verdict

__all__ = [
    "BLACKBOX_LAYERS",
    "BLACKBOX_VERDICTS",
    "LAYERS",
    "VERDICTS",
    "ServerRejections",
    "check",
    "percentile_ms",
    "server_rejections",
]

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
BLACKBOX_VERDICTS: tuple[Callable[[_Ctx], list[Verdict]], ...] = tuple(
    blackbox.bounded_resources if fn is bounded_resources else fn for fn in VERDICTS
)
BLACKBOX_LAYERS: tuple[Callable[[_Ctx], list[Verdict]], ...] = (
    blackbox.layer_edge,
    blackbox.layer_bulkhead,
    blackbox.layer_shedder,
    blackbox.layer_breaker,
)

_PAIRED = frozenset({"stress", "recovery", "post"})  # the phases each stress window has
_PHASE_WORD = re.compile(r"\b(stress|recovery|post)\b(?!-)")


def _numbered(v: Verdict, suffix: str, *, last: bool) -> Verdict:
    """A verdict of one stress window of several: its phase, and the phase names its
    message gives ("post: admitted p99 ..."), numbered as the window's; a window before
    the last was judged up to the next one, not to the end of the run."""
    message = _PHASE_WORD.sub(lambda m: m.group(1) + suffix, v.message) if suffix else v.message
    if not last:
        message = message.replace("to the end of the run", "until the next stress window")
    if message == v.message and not suffix:
        return v
    return dataclasses.replace(v, phase=v.phase + suffix, message=message)


def _lost_workers(history: History) -> list[str]:
    names = (str(e.data.get("name", "")) for e in history.events if e.kind == "component_crash")
    return [n for n in names if n.startswith(WORKER_CRASH_PREFIX)]


def _unjudgeable(verdicts: list[Verdict], lost: list[str]) -> tuple[Verdict, ...]:
    """A Locust worker lost mid-run: the generator's record misses what it sent (rows, acked
    ids), so nothing judged on it may fail the service: each failure is inconclusive."""
    if not lost:
        return tuple(verdicts)
    why = f"the generator lost {', '.join(lost)} mid-run, its record is incomplete"
    return tuple(
        dataclasses.replace(v, status=INCONCLUSIVE, message=f"{why}: {v.message}")
        if v.status == FAIL
        else v
        for v in verdicts
    )


def check(history: History, thresholds: Thresholds | None = None) -> CheckResult:
    """Judge `history` (pure: same history and thresholds, same verdicts)."""
    result = _check(history, thresholds)
    verdicts = _unjudgeable(list(result.verdicts), _lost_workers(history))
    return CheckResult(verdicts, result.thresholds)


def _check(history: History, thresholds: Thresholds | None = None) -> CheckResult:
    th = thresholds or thresholds_from_checks(history.scenario.checks)
    reference = history.reference
    cfg = history.target_config if reference else None
    ctx = _Ctx(history, th, None if cfg is None else TargetFacts.from_config(cfg))
    fns = [*(VERDICTS if reference else BLACKBOX_VERDICTS)]
    if th.layers:
        fns.extend(LAYERS if reference else BLACKBOX_LAYERS)
    several = any(str(p.name) == "stress-2" for p in history.phases)  # a session's numbering
    views = pair_views(history) if several else []
    verdicts: list[Verdict] = []
    if len(views) < 2:  # a scripted run (one stress window at most)
        for fn in fns:
            verdicts.extend(fn(ctx))
        return CheckResult(tuple(verdicts), th.to_json())
    # A session with several stress windows: each judged as its own run would be (its
    # faults, its rows up to the next stress window), its phases numbered; the whole-run
    # verdicts once, on the whole session.
    ctxs = [(suffix, _Ctx(view, th, ctx.target)) for suffix, view in views]
    last = ctxs[-1][0]
    for fn in fns:
        verdicts.extend(v for v in fn(ctx) if v.phase == "run")
        for suffix, c in ctxs:
            for v in fn(c):
                if v.phase == "run" or (suffix and v.phase not in _PAIRED):
                    continue
                verdicts.append(_numbered(v, suffix, last=suffix == last))
    return CheckResult(tuple(verdicts), th.to_json())
