"""What `spikegate check` and `spikegate compare` do; the CLI calls these functions.

    check RUN_DIR [--set checks.k=v]...   load_history -> thresholds (+ overrides) -> check
                                          -> reports (report.json, junit.xml, ...) + table
    compare RUN_A RUN_B [--json FILE]     judge both with their own thresholds -> deltas per
                                          phase, detect/recover times, verdict changes

Reports come from `harness.reports` (write_reports, print_verdicts).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from spikegate.harness.checker import check
from spikegate.harness.errors import UsageError
from spikegate.harness.figures import phase_figures
from spikegate.harness.history import History, load_history
from spikegate.harness.reports import print_verdicts, write_reports
from spikegate.harness.reports_data import load_run_data
from spikegate.harness.thresholds import parse_check_overrides, thresholds_from_checks
from spikegate.harness.verdicts import CheckResult

__all__ = ["check_run", "compare_runs", "judge", "summarize"]

_STYLE = {"pass": "green", "fail": "bold red", "inconclusive": "yellow", "skipped": "dim"}
_PHASES = ("baseline", "stress", "recovery", "post")


def judge(run_dir: Path, overrides: Sequence[str] = ()) -> tuple[History, CheckResult]:
    """Load and judge a run directory with its own `[checks]` plus `checks.*` overrides."""
    changed = parse_check_overrides(overrides)  # a bad --set is named before anything is read
    history = load_history(run_dir)
    checks = {**dict(history.scenario.checks), **changed}
    th = thresholds_from_checks(checks, source=f"{Path(run_dir) / 'scenario.toml'} [checks]")
    return history, check(history, th)


def check_run(run_dir: Path, overrides: Sequence[str], console: Console) -> CheckResult:
    """Re-judge a stored run offline; write its reports; print the verdict table.
    The caller turns `result.exit_code` into the process exit code (0 / 1 / 3)."""
    history, result = judge(run_dir, overrides)
    for note in history.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    written = write_reports(Path(run_dir), history, result)
    print_verdicts(console, result)
    listed = ", ".join(str(p) for p in written.values())
    console.print(escape(f"reports: {listed}"), highlight=False)
    return result


# --- compare --------------------------------------------------------------------------------
def summarize(history: History, result: CheckResult) -> dict[str, Any]:
    """Key figures of one judged run: per-phase stats, detect/recover times, verdicts."""
    ev = {(v.name, v.phase): v.evidence for v in result.verdicts}
    return {
        "scenario": history.scenario.name,
        "run_dir": str(history.run_dir) if history.run_dir else None,
        "status": result.status,
        "phases": _phases(history),
        "detect_s": ev.get(("time_to_detect", "stress"), {}).get("detect_s"),
        "recover_s": ev.get(("time_to_recover", "recovery"), {}).get("ttr_s"),
        "verdicts": {f"{v.name}/{v.phase}": v.status for v in result.verdicts},
    }


def _phases(history: History) -> dict[str, dict[str, Any]]:
    """The reports' per-phase figures of each judged phase (one computation for both)."""
    if history.run_dir is None:
        return {}
    data = load_run_data(history.run_dir, history)
    return {
        p.name: phase_figures(data.requests, data.samples, p.start_s, p.end_s)
        for p in history.phases
        if _judged_phase(p.name)
    }


def _judged_phase(name: str) -> bool:
    """baseline, stress, recovery, post, and a session's numbered ones (stress-2, ...)."""
    base, _, n = name.partition("-")
    return base in _PHASES and (not n or n.isdigit())


def _delta(a: Any, b: Any) -> Any:
    if isinstance(a, int | float) and isinstance(b, int | float):
        return round(b - a, 4)
    return None


def compare_runs(a: Path, b: Path, console: Console, json_out: Path | None = None) -> int:
    """Deltas from run A to run B. Returns 1 when B regresses (a verdict that passed in A
    fails in B, or B fails where A had no such verdict or skipped it), else 0. A verdict
    that passed in A and is skipped in B is listed as a change, not a regression: B lost the
    evidence for it (a [metrics] mapping removed), which its reason names."""
    sa, sb = (summarize(*judge(p)) for p in (a, b))
    metrics = ("offered_rps", "sent_rps", "goodput_rps", "admitted_p99_ms", "rejected_p99_ms",
               "rejected_share", "failure_share")  # fmt: skip
    rows: list[dict[str, Any]] = []
    for phase in dict.fromkeys([*sa["phases"], *sb["phases"]]):  # each run's order, A first
        pa, pb = sa["phases"].get(phase), sb["phases"].get(phase)
        if pa is None and pb is None:
            continue
        for m in metrics:
            va, vb = (pa or {}).get(m), (pb or {}).get(m)
            rows.append({"phase": phase, "metric": m, "a": va, "b": vb, "delta": _delta(va, vb)})
    for m in ("detect_s", "recover_s"):
        rows.append({"phase": "run", "metric": m, "a": sa[m], "b": sb[m],
                     "delta": _delta(sa[m], sb[m])})  # fmt: skip
    changes = [
        {"verdict": k, "a": sa["verdicts"].get(k), "b": sb["verdicts"].get(k)}
        for k in sorted(set(sa["verdicts"]) | set(sb["verdicts"]))
        if sa["verdicts"].get(k) != sb["verdicts"].get(k)
    ]
    regressed = [c for c in changes if c["b"] == "fail"]
    report = {"a": sa, "b": sb, "deltas": rows, "verdict_changes": changes,
              "regressed": bool(regressed)}  # fmt: skip
    _print_compare(console, a, b, rows, changes, sa["status"], sb["status"])
    if json_out is not None:
        try:
            Path(json_out).write_text(json.dumps(report, indent=2, default=str) + "\n")
        except OSError as exc:
            raise UsageError(f"--json {json_out}: cannot write ({exc})") from None
        console.print(escape(f"comparison written to {json_out}"), highlight=False)
    return 1 if regressed else 0


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:+.4g}" if v < 0 else f"{v:.4g}"
    return str(v)


def _print_compare(
    console: Console,
    a: Path,
    b: Path,
    rows: list[dict[str, Any]],
    changes: list[dict[str, Any]],
    status_a: str,
    status_b: str,
) -> None:
    table = Table(title=escape(f"A = {a}\nB = {b}"))
    for col in ("phase", "metric", "A", "B", "B - A"):
        table.add_column(col, justify="right" if col in ("A", "B", "B - A") else "left")
    for r in rows:
        d = r["delta"]
        shown = "-" if d is None else f"{d:+.4g}"
        table.add_row(r["phase"], r["metric"], _fmt(r["a"]), _fmt(r["b"]), shown)
    console.print(table)
    if changes:
        vt = Table(title="verdict changes")
        for col in ("verdict", "A", "B"):
            vt.add_column(col)
        for c in changes:
            cells = [c["a"] or "-", c["b"] or "-"]
            styled = [f"[{_STYLE[x]}]{x}[/]" if x in _STYLE else x for x in cells]
            vt.add_row(c["verdict"], *styled)
        console.print(vt)
    else:
        console.print("no verdict changed")
    console.print(f"A: {status_a.upper()}   B: {status_b.upper()}")
