"""What `spikegate load set|stop|start|spike|show` do: find the live run, call its control server.

    --run RUN_DIR -> RUN_DIR/control.json ─┐
    (none)        -> live_runs(): exactly one ┴─> LiveRun.control_url ─> POST /load... ─> print

The control server (harness/control.py LoadControl) writes RUN_DIR/control/load.json, which
every Locust process polls (locustfiles/live_rate.py), and records each change in
events.jsonl. A rate is arrivals/s for the whole run, or `Nx`: N times the scenario's
base_rps. A malformed RATE, --peak or --for is a UsageError (exit 2) found here, before any
live run is looked for; the rest as `spikegate fault` (harness/faultcmd.py).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from spikegate.contract.load import MAX_RPS
from spikegate.harness.control import MAX_FOR_S
from spikegate.harness.errors import UsageError
from spikegate.harness.faultcmd import _call, find_run

__all__ = ["parse_rate", "set_load", "show_load", "spike_load", "start_load", "stop_load"]

SOURCE = "cli"
_FACTOR = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*[xX]\s*$")


def parse_rate(text: str, what: str) -> tuple[str, float]:
    """("rate", arrivals/s) or ("factor", N) from `300`, `12.5` or `3x`; UsageError naming
    `what` (RATE, --peak) otherwise."""
    hint = f"{what} is arrivals/s (e.g. 300) or a multiple of the scenario's base_rps (e.g. 3x)"
    match = _FACTOR.match(text)
    kind, raw = ("factor", match.group(1)) if match else ("rate", text.strip())
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{what} {text!r} is not a rate", hint=hint) from None
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{what} {text!r} must be a finite number >= 0", hint=hint)
    if kind == "rate" and value > MAX_RPS:
        raise UsageError(f"{what} {text!r} is over {MAX_RPS:g} arrivals/s", hint=hint)
    return kind, value


def _check_for(for_s: float) -> float:
    if not (math.isfinite(for_s) and 0 < for_s <= MAX_FOR_S):
        raise UsageError(
            f"--for {for_s:g}: expected seconds in (0, {MAX_FOR_S:g}]",
            hint="a spike always ends: e.g. --for 15",
        )
    return for_s


def _state_text(data: dict[str, Any]) -> str:
    rate = data.get("rate")
    held = (
        f"held at {rate:g}/s"
        if rate is not None
        else f"the scenario's {data.get('shape', 'shape')} (base {data.get('base_rps', 0):g}/s)"
    )
    text = f"t={data.get('t', 0):.1f} s: {data.get('rps_now', 0):g} arrivals/s now, {held}"
    spike = data.get("spike")
    if spike:
        text += (
            f"; spike at {spike['peak']:g}/s until t={spike['until_t']:.1f} s "
            f"({spike['remaining_s']:.1f} s left)"
        )
    return text


def set_load(run_dir: Path | None, console: Console, rate: str) -> None:
    kind, value = parse_rate(rate, "RATE")
    run = find_run(run_dir)
    data = _call(run, "POST", "/load", {kind: value, "source": SOURCE})
    console.print(escape(f"load set: {_state_text(data)}"), highlight=False, soft_wrap=True)


def stop_load(run_dir: Path | None, console: Console) -> None:
    run = find_run(run_dir)
    data = _call(run, "POST", "/load/stop", {"source": SOURCE})
    console.print(escape(f"load stopped: {_state_text(data)}"), highlight=False, soft_wrap=True)


def start_load(run_dir: Path | None, console: Console) -> None:
    run = find_run(run_dir)
    data = _call(run, "POST", "/load/start", {"source": SOURCE})
    console.print(escape(f"load started: {_state_text(data)}"), highlight=False, soft_wrap=True)


def spike_load(run_dir: Path | None, console: Console, peak: str, for_s: float) -> None:
    kind, value = parse_rate(peak, "--peak")
    body: dict[str, Any] = {
        ("peak" if kind == "rate" else "peak_factor"): value,
        "for_s": _check_for(for_s),
        "source": SOURCE,
    }
    run = find_run(run_dir)
    data = _call(run, "POST", "/load/spike", body)
    console.print(escape(f"spike: {_state_text(data)}"), highlight=False, soft_wrap=True)


def halt_run(run_dir: Path | None, console: Console) -> None:
    """The halt button from a terminal: every fault off, the load at base_rps, at once."""
    run = find_run(run_dir)
    data = _call(run, "POST", "/halt", {"source": SOURCE})
    removed = ", ".join(data.get("removed") or []) or "none active"
    load = data.get("load")
    after = _state_text(load) if isinstance(load, dict) else "load unchanged (no load control)"
    console.print(
        escape(f"halted: faults taken off: {removed}; {after}"), highlight=False, soft_wrap=True
    )


def show_load(run_dir: Path | None, console: Console, *, as_json: bool = False) -> None:
    run = find_run(run_dir)
    data = _call(run, "GET", "/load")
    if as_json:
        console.print_json(data=data)
        return
    console.print(
        escape(f"run {run.run_dir} ({run.scenario}, pid {run.pid}) {_state_text(data)}"),
        highlight=False,
        soft_wrap=True,
    )
