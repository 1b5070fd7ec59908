"""Verdict values: what the checker decides and what the reports render.

    run directory --(harness.history.load)--> History --(checker.check)--> CheckResult
                                                                               |
                                console table, report.json, junit.xml, summary.md, report.html

A `Verdict` is one check for one phase (or for the whole run, phase "run"): pass, fail,
inconclusive or skipped, a one-line message a person can act on, and the evidence that
decided it (the windows, counts, thresholds and timestamps), JSON-serialisable so
report.json carries it.

    pass          judged, and it held
    fail          judged, and it broke (exit 1)
    inconclusive  the harness could not measure what it needed (exit 3, never a pass)
    skipped       there is no evidence for it on this service (a user's service that does
                  not export what the verdict reads); its message is the reason and how to
                  supply the evidence. It never decides the run and is never shown passed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["pass", "fail", "inconclusive", "skipped"]

PASS: Status = "pass"
FAIL: Status = "fail"
INCONCLUSIVE: Status = "inconclusive"
SKIPPED: Status = "skipped"
STATUSES: tuple[Status, ...] = (PASS, FAIL, INCONCLUSIVE, SKIPPED)


@dataclass(frozen=True, slots=True)
class Verdict:
    name: str  # e.g. "graceful_degradation", "layer.breaker"
    phase: str  # "baseline", "stress", "recovery", "post", or "run"
    status: Status
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "phase": self.phase,
            "status": self.status,
            "message": self.message,
            "evidence": dict(self.evidence),
        }


@dataclass(frozen=True, slots=True)
class CheckResult:
    verdicts: Sequence[Verdict]
    thresholds: Mapping[str, Any]  # the resolved thresholds used (defaults filled in)

    @property
    def status(self) -> Status:
        """fail if any verdict failed; else inconclusive if any was, or if nothing was judged
        (no verdicts, or every one skipped); else pass. Skipped verdicts do not count."""
        statuses = {v.status for v in self.verdicts}
        if FAIL in statuses:
            return FAIL
        if INCONCLUSIVE in statuses or not statuses - {SKIPPED}:
            return INCONCLUSIVE
        return PASS

    @property
    def exit_code(self) -> int:
        return {PASS: 0, FAIL: 1, INCONCLUSIVE: 3}[self.status]

    def failed(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status == FAIL]

    def counts(self) -> dict[str, int]:
        """How many verdicts have each status (every status listed, zeros included)."""
        return {s: sum(1 for v in self.verdicts if v.status == s) for s in STATUSES}

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "thresholds": dict(self.thresholds),
            "verdicts": [v.to_json() for v in self.verdicts],
        }
