"""Ablation: prove the gate can fail by switching each backpressure pattern off in turn.

    scenario --all patterns on------------------> run -> check -> must PASS
             --target.config.edge.enabled=false--> run -> check -> must FAIL a PROTECTS["edge"]
             --... auction / impressions / breaker (same)
                                                   -> matrix (rich table) + ablation.json

Which verdicts each pattern protects (an ablated run "is caught" when at least one of its
protecting verdicts fails):

    edge         layer.edge (per-publisher bucket bound, hot-publisher isolation),
                 graceful_degradation
    auction      layer.bulkhead (inflight ceiling, fast bulkhead_full), bounded_resources,
                 graceful_degradation (admitted p99)
    impressions  layer.shedder (queue cap, fast sheds), bounded_resources (queue, RSS),
                 no_silent_loss, graceful_degradation
    breaker      layer.breaker (opened during the DSP fault), graceful_degradation
                 (auctions wait on the slow DSP), steady_state, time_to_recover

Exit code: 0 only when all-on passes and every ablated run is caught; otherwise 1 (or the
exit code of the error that stopped a run, e.g. 4 for the environment).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from spikegate.harness.checkcmd import check_run
from spikegate.harness.errors import SpikegateError
from spikegate.harness.scenario import Scenario, load_scenario
from spikegate.harness.verdicts import FAIL, INCONCLUSIVE, PASS, SKIPPED, CheckResult

__all__ = ["PATTERNS", "PROTECTS", "Runner", "ablate", "ablated", "expectation_met"]

PATTERNS = ("edge", "auction", "impressions", "breaker")  # target.config sections with .enabled

PROTECTS: Mapping[str, tuple[str, ...]] = {
    "edge": ("layer.edge", "graceful_degradation"),
    "auction": ("layer.bulkhead", "bounded_resources", "graceful_degradation"),
    "impressions": ("layer.shedder", "bounded_resources", "no_silent_loss", "graceful_degradation"),
    "breaker": ("layer.breaker", "graceful_degradation", "steady_state", "time_to_recover"),
}

Runner = Callable[[Scenario, Path, Console], Path]
"""Run a scenario into a run directory and return it (default: the orchestrator)."""

_STYLE = {PASS: "green", FAIL: "bold red", INCONCLUSIVE: "yellow", SKIPPED: "dim"}
_RANK: dict[str, int] = {SKIPPED: -1, PASS: 0, INCONCLUSIVE: 1, FAIL: 2}


def ablated(scenario: Scenario, pattern: str) -> Scenario:
    """`scenario` with one pattern switched off through target.config.<pattern>.enabled."""
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {', '.join(PATTERNS)}, got {pattern!r}")
    data = scenario.model_dump(mode="json")
    config = data["target"].setdefault("config", {})
    config[pattern] = {**config.get(pattern, {}), "enabled": False}
    data["name"] = f"{scenario.name}-no-{pattern}"[:64]
    return Scenario.model_validate(data)


def expectation_met(pattern: str | None, result: CheckResult) -> bool:
    """All-on (pattern None) must pass; an ablated run must fail a protecting verdict."""
    if pattern is None:
        return result.status == PASS
    protecting = set(PROTECTS[pattern])
    return any(v.status == FAIL and v.name in protecting for v in result.verdicts)


def _orchestrator_runner(scenario: Scenario, out: Path, console: Console) -> Path:
    orchestrator: Any = importlib.import_module(
        "spikegate.harness.orchestrator"
    )  # lands separately
    result = orchestrator.run_scenario(scenario, out_dir=out, console=console, live=False)
    if getattr(result, "status", "complete") == "interrupted":
        raise KeyboardInterrupt  # Ctrl-C during one run stops the whole ablation
    run_dir = result if isinstance(result, Path) else getattr(result, "run_dir", None)
    return Path(run_dir) if run_dir is not None else out


def _worst(result: CheckResult) -> dict[str, str]:
    worst: dict[str, str] = {}
    for v in result.verdicts:
        if _RANK[v.status] >= _RANK.get(worst.get(v.name, PASS), 0):
            worst[v.name] = v.status
    return worst


def ablate(
    scenario_ref: str | Path,
    overrides: Sequence[str],
    console: Console,
    out_dir: Path,
    *,
    patterns: Sequence[str] = PATTERNS,
    runner: Runner | None = None,
) -> int:
    """Run all-on, then each pattern off; print and write the matrix; 0 iff as expected."""
    base = load_scenario(scenario_ref, overrides)
    unknown = [p for p in patterns if p not in PATTERNS]
    if unknown:
        raise SpikegateError(f"unknown pattern(s) {unknown}: choose from {', '.join(PATTERNS)}")
    run = runner or _orchestrator_runner
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan: list[tuple[str, str | None, Scenario]] = [("all-on", None, base)]
    plan += [(f"no-{p}", p, ablated(base, p)) for p in patterns]
    runs: list[dict[str, Any]] = []
    error_code = 0
    for label, pattern, sc in plan:
        console.print(f"[bold]ablation[/] {label}: running {sc.name}")
        entry: dict[str, Any] = {
            "label": label, "pattern": pattern,
            "protecting": list(PROTECTS[pattern]) if pattern else [],
        }  # fmt: skip
        try:
            run_dir = run(sc, out_dir / label, console)
            result = check_run(run_dir, (), console)
        except SpikegateError as exc:
            error_code = error_code or exc.exit_code
            entry.update(status="error", error=str(exc), met=False, verdicts={})
            runs.append(entry)
            continue
        entry.update(
            run_dir=str(run_dir),
            status=result.status,
            verdicts=_worst(result),
            failed=[f"{v.name}/{v.phase}: {v.message}" for v in result.failed()],
            met=expectation_met(pattern, result),
        )
        runs.append(entry)
    ok = all(r["met"] for r in runs)
    report = {"scenario": base.name, "protects": dict(PROTECTS), "runs": runs, "ok": ok}
    (out_dir / "ablation.json").write_text(json.dumps(report, indent=2) + "\n")
    _print_matrix(console, runs)
    console.print(
        f"ablation {'[green]as expected[/]' if ok else '[bold red]NOT as expected[/]'}: "
        f"matrix in {out_dir / 'ablation.json'}"
    )
    if ok:
        return 0
    return error_code or 1


def _print_matrix(console: Console, runs: list[dict[str, Any]]) -> None:
    """One row per verdict, one column per run: it stays readable in an 80-column CI log."""
    names: list[str] = []
    for r in runs:
        names += [n for n in r["verdicts"] if n not in names]
    table = Table(
        title="ablation matrix",
        caption="* a verdict the switched-off pattern protects; all on must pass, "
        "each run with a pattern off must fail a *",
    )
    table.add_column("verdict", no_wrap=True)
    for r in runs:
        head = "all\non" if r["pattern"] is None else f"{r['pattern']}\noff"
        table.add_column(head, no_wrap=True)
    for n in names:
        cells = []
        for r in runs:
            st = r["verdicts"].get(n)
            mark = "*" if n in r["protecting"] else ""
            cells.append(f"[{_STYLE[st]}]{st}{mark}[/]" if st else "-")
        table.add_row(n, *cells)
    table.add_section()
    table.add_row(
        "as expected",
        *("[green]yes[/]" if r["met"] else f"[bold red]no[/] ({r['status']})" for r in runs),
    )
    console.print(table)
