"""What the reports draw and count: a run directory read tolerantly, and its key figures.

    run dir --load_run_data--> RunData --phase_figures--> per-phase figures (report.json, md, html)
                                   \\--series------------> per-second series (charts)

The checker refuses a broken history; the reports must still render one (a run killed
half-way, a target that never answered /metrics), so every file here is optional and every
problem is kept as a note the report shows instead of an exception.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spikegate.contract.rundir import (
    EVENTS_FILE,
    IMPRESSIONS_FILE,
    META_FILE,
    REQUESTS_FILE,
    SAMPLES_FILE,
    SCENARIO_FILE,
    read_jsonl,
)
from spikegate.harness.errors import ScenarioError
from spikegate.harness.figures import _decode_any as _decode
from spikegate.harness.figures import _num, _percentiles, phase_figures
from spikegate.harness.history import (
    FaultWindow,
    History,
    derive_fault_windows,
    derive_phases,
    events_from_rows,
)
from spikegate.harness.scenario import Scenario, parse_scenario
from spikegate.harness.session import is_session

__all__ = [
    "PhaseSpan",
    "RunData",
    "Window",
    "latency_series",
    "load_run_data",
    "phase_figures",
    "series",
]


@dataclass(frozen=True, slots=True)
class PhaseSpan:
    name: str
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class Window:
    """A time span shaded on every chart: a fault (kind "fault") or the stress window."""

    kind: str
    label: str
    start_s: float
    end_s: float
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RunData:
    run_dir: Path
    scenario_name: str
    seed: int | None
    meta: dict[str, Any]
    requests: list[dict[str, Any]]
    samples: list[dict[str, Any]]
    impressions: dict[str, Any] | None
    phases: list[PhaseSpan]
    faults: list[Window]
    stress: Window | None
    duration_s: float
    notes: list[str] = field(default_factory=list)  # missing or unreadable files
    # a session's later stress windows (stress-2, stress-3, ...), shaded like the first
    more_stress: list[Window] = field(default_factory=list)


def load_run_data(run_dir: Path, history: History | None = None) -> RunData:
    """Read every file of the run directory that exists; note (never raise) what is missing.
    Phases and fault windows are the checker's (`history`), else derived the checker's way
    from what could be read."""
    notes: list[str] = []
    meta = _read_json(run_dir / META_FILE, notes) or {}
    scenario = _read_scenario(run_dir / SCENARIO_FILE, notes)
    requests = [row for _, row in _read_rows(run_dir / REQUESTS_FILE, notes)]
    samples = [row for _, row in _read_rows(run_dir / SAMPLES_FILE, notes)]
    event_rows = _read_rows(run_dir / EVENTS_FILE, notes)
    impressions = _read_json(run_dir / IMPRESSIONS_FILE, notes)

    name = str(meta.get("scenario") or (scenario.name if scenario else run_dir.name))
    seed_raw = meta.get("seed", scenario.seed if scenario else None)
    seed = seed_raw if isinstance(seed_raw, int) and not isinstance(seed_raw, bool) else None
    last_t = max((_num(r.get("t")) or 0.0) + 1.0 for r in (*requests, *samples, {"t": 0.0}))
    event_t = max((_num(row.get("t")) or 0.0 for _, row in event_rows), default=0.0)
    duration = max(last_t, event_t, scenario.load.duration_s if scenario else 0.0)

    if history is not None:
        scenario = history.scenario
        phases = [PhaseSpan(p.name, p.start_s, p.end_s) for p in history.phases]
        windows: Sequence[FaultWindow] = history.faults
        duration = max(duration, history.end_s)
        if is_session(history.meta):  # as long as the session, not its scenario's duration
            duration = max(last_t, event_t, history.end_s)
    else:
        events, skipped = events_from_rows(event_rows, EVENTS_FILE)
        notes += skipped
        recorded = derive_phases(scenario, events)
        phases = [PhaseSpan(p.name, p.start_s, p.end_s) for p in recorded]
        phases = phases or [PhaseSpan("run", 0.0, duration)]
        windows = derive_fault_windows(scenario, events, end_s=duration)
    return RunData(
        run_dir=run_dir,
        scenario_name=name,
        seed=seed,
        meta=meta,
        requests=sorted(requests, key=lambda r: _num(r.get("t")) or 0.0),
        samples=sorted(samples, key=lambda r: _num(r.get("t")) or 0.0),
        impressions=impressions,
        phases=phases,
        faults=[_fault(w) for w in windows],
        stress=_stress(phases, scenario),
        duration_s=duration,
        notes=notes,
        more_stress=[
            Window("stress", f"{p.name} window", p.start_s, p.end_s)
            for p in phases
            if p.name.startswith("stress-") and p.name[7:].isdigit()
        ],
    )


# --- reading ----------------------------------------------------------------------------------
def _read_rows(path: Path, notes: list[str]) -> list[tuple[int, dict[str, Any]]]:
    """(line, row) pairs up to the first unreadable line, which is noted."""
    rows: list[tuple[int, dict[str, Any]]] = []
    if not path.is_file():
        notes.append(f"{path.name} is missing")
        return rows
    try:
        for line, row in read_jsonl(path):
            rows.append((line, row))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        notes.append(f"{path.name}: read stopped after {len(rows)} rows ({exc})")
    return rows


def _read_json(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        notes.append(f"{path.name} is missing")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        notes.append(f"{path.name} is unreadable ({exc})")
        return None
    if not isinstance(data, dict):
        notes.append(f"{path.name} is not a JSON object")
        return None
    return data


def _read_scenario(path: Path, notes: list[str]) -> Scenario | None:
    if not path.is_file():
        notes.append(f"{path.name} is missing")
        return None
    try:
        text = path.read_text(encoding="utf-8")
        return parse_scenario(tomllib.loads(text), source=str(path), text=text)
    except (OSError, ValueError, ScenarioError) as exc:
        notes.append(f"{path.name} is not a valid scenario ({str(exc).splitlines()[0]})")
        return None


# --- timeline ---------------------------------------------------------------------------------
def _fault(w: FaultWindow) -> Window:
    details: dict[str, Any] = {"fault": w.fault, "proxy": w.proxy, "source": w.source}
    if w.id:
        details["id"] = w.id
    if w.params:
        details["params"] = dict(w.params)
    return Window("fault", f"{w.fault} on {w.proxy}", w.start_s, w.end_s, details)


def _stress(phases: Sequence[PhaseSpan], scenario: Scenario | None) -> Window | None:
    for p in phases:
        if p.name == "stress":
            return Window("stress", "stress window", p.start_s, p.end_s)
    window = scenario.stress_window() if scenario is not None else None
    return Window("stress", "stress window", *window) if window else None


# --- per-second series for the charts --------------------------------------------------------
def series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(t, value) for the rows that carry a finite number under `key` (a failed scrape, ok=false,
    leaves a gap)."""
    ts: list[float] = []
    vs: list[float] = []
    for r in rows:
        t, v = _num(r.get("t")), _num(r.get(key))
        if t is not None and v is not None and r.get("ok", True):
            ts.append(t)
            vs.append(v)
    return ts, vs


def latency_series(
    rows: Sequence[Mapping[str, Any]], hist_key: str, fallback: Mapping[float, str]
) -> dict[float, tuple[list[float], list[float]]]:
    """Per-second p50 and p99 (ms) from each row's HDR histogram; where a row has none, the
    row's convenience copy named in `fallback` (percentile -> field) when present."""
    out: dict[float, tuple[list[float], list[float]]] = {50.0: ([], []), 99.0: ([], [])}
    for r in rows:
        t = _num(r.get("t"))
        if t is None:
            continue
        h = _decode(r.get(hist_key))
        values = _percentiles(h, tuple(out)) if h is not None else {}
        for pct, (ts, vs) in out.items():
            value: float | None = values.get(pct)
            if value is None and pct in fallback:
                value = _num(r.get(fallback[pct]))
            if value is not None:
                ts.append(t)
                vs.append(value)
    return out
