"""`spikegate replay RUN_DIR`: the scenario file that reproduces a hand-made session as a
timeline.

    session run dir --load_history--> History (phases, fault windows, load from the events)
                    --replay_toml---> scenario.toml of the session with
                                        load.duration_s = the session's length
                                        load.shape "step", load.steps = its load_set / spikes
                                        [[faults]] = its fault windows (at_s, for_s, params)
                                        phases.stress_* = its stress window(s)

A session with one stress window replays exactly: the scripted run's phases are the
session's. A scripted run has one stress window, so a session with several is replayed with
one stress window from the first to the last (said in the file's header).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w

from spikegate.contract.rundir import LOAD_EVENT_KINDS, SCENARIO_FILE
from spikegate.harness.errors import ScenarioError, UsageError
from spikegate.harness.history import FaultWindow, History, load_history
from spikegate.harness.scenario import Scenario, load_scenario, parse_scenario
from spikegate.harness.session import is_session, load_timeline, pairs, timeline_data

__all__ = ["replay", "replay_toml"]

_MS = 3  # times are written to the millisecond


def _r(t: float) -> float:
    return round(t, _MS)


def _fault_entry(w: FaultWindow, end_s: float) -> dict[str, Any]:
    at = _r(w.start_s)
    entry: dict[str, Any] = {
        "at_s": at,
        "for_s": max(_r(min(w.end_s, end_s) - at), 10**-_MS),
        "fault": w.fault,
        "proxy": w.proxy,
    }
    if w.params:
        entry["params"] = dict(w.params)
    return entry


def replay_toml(history: History, scenario: Scenario, source: str) -> str:
    """The TOML text reproducing `history` (a session) from `scenario` (its scenario.toml)."""
    end = history.end_s
    warm = scenario.load.warmup_s
    notes: list[str] = []
    faults: list[dict[str, Any]] = []
    for w in history.faults:
        entry = _fault_entry(w, end)
        if entry["at_s"] + entry["for_s"] <= warm:
            notes.append(
                f"left out: {w.fault} on {w.proxy} at {w.start_s:g}..{w.end_s:g} s, inside "
                f"the warmup ({warm:g} s), which is never judged"
            )
            continue
        faults.append(entry)
    last = max([_r(end), *(f["at_s"] + f["for_s"] for f in faults)])
    duration = math.ceil(last * 10**_MS - 1e-6) / 10**_MS
    steps = load_timeline(scenario.load.base_rps, history.events, duration)
    data = timeline_data(scenario, steps, duration, faults)
    windows = pairs(history.phases, history.end_s)
    if windows:  # a stress and a recovery phase per disturbance, as the session had
        data["phases"]["each_disturbance"] = True
    if len(windows) > 1:
        spans = ", ".join(f"{_r(p.stress.start_s):g}..{_r(p.stress.end_s):g}" for p in windows)
        notes.append(f"the session's {len(windows)} stress windows: {spans} s")
    data = _drop_none(data)
    try:
        parse_scenario(data, source="the replayed session")
    except ScenarioError as exc:
        raise UsageError(
            f"{source}: the session cannot be written as a valid scenario: {exc.message}",
            hint="the session's events are out of the scenario's bounds (see the message)",
        ) from None
    changes = sum(1 for e in history.events if e.kind in LOAD_EVENT_KINDS)
    header = [
        f"Replay of the session recorded in {source}",
        f"written by `spikegate replay` on {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC",
        f"from its {SCENARIO_FILE}, with its timeline from events.jsonl: "
        f"{_r(duration):g} s, {changes} load event(s) as load.steps, "
        f"{len(faults)} fault(s) as [[faults]]",
        "run it with: spikegate run <this file>",
        *notes,
    ]
    comment = "".join(f"# {line}\n" for line in header)
    return comment + "\n" + tomli_w.dumps(data)


def replay(run_dir: Path, out: Path | None = None) -> tuple[Path, str]:
    """Write the replay of the session in `run_dir` (default RUN_DIR/replay.toml); return
    the path and the text. UsageError (exit 2) for a directory that is not a session."""
    history = load_history(run_dir)
    if not is_session(history.meta):
        raise UsageError(
            f'{run_dir} is not a session: its meta.json has no "mode": "session" (a '
            "scripted run's timeline is its scenario.toml already)",
            hint="replay a directory written by `spikegate up`; re-run a scripted run with "
            f"`spikegate run {Path(run_dir) / SCENARIO_FILE}`",
        )
    if not history.requests:
        raise UsageError(
            f"{run_dir}: the session recorded no load (requests.jsonl has no rows): "
            "there is nothing to replay",
        )
    try:
        scenario = load_scenario(Path(run_dir) / SCENARIO_FILE)
    except ScenarioError as exc:
        raise UsageError(exc.message, hint=exc.hint) from None
    text = replay_toml(history, scenario, str(run_dir))
    target = out if out is not None else Path(run_dir) / "replay.toml"
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--out {target}: cannot write ({exc.strerror or exc})") from None
    return target, text


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value
