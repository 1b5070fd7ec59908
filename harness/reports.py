"""The reports of one run: what the checker decided, written where a person or a CI looks.

    run dir + CheckResult --build_report--> report dict --+--> report.json  (everything)
                                                          +--> junit.xml    (one testcase per
                                                          |                  verdict per phase)
                                                          +--> summary.md   (CI step summary)
                                                          +--> report.html  (charts, verdicts)
    CheckResult --print_verdicts--> rich table on the console

Reports never decide anything: the verdicts come from the checker, the figures are read from
the run directory. A partial run directory still gets its reports (its gaps are listed).
A skipped verdict (no evidence for it on this service) is shown as skipped with its reason
everywhere, after the judged ones, and never counted as passed.
"""

from __future__ import annotations

import json
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from spikegate.harness import __version__
from spikegate.harness.figures import phase_figures
from spikegate.harness.history import History
from spikegate.harness.reports_data import RunData, load_run_data
from spikegate.harness.verdicts import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    SKIPPED,
    STATUSES,
    CheckResult,
    Verdict,
)

__all__ = [
    "FIGURES_NOTE",
    "REPORT_FILES",
    "build_report",
    "load_report",
    "print_verdicts",
    "render_junit",
    "render_summary",
    "write_reports",
]

REPORT_FILES = ("report.json", "junit.xml", "summary.md", "report.html")
FIGURES_NOTE = (
    "Figures cover each whole phase. The verdicts leave out the latencies of the settle "
    "period (checks.settle, 1 s by default) after each onset: the stress start and every "
    "fault start. So a stress p99 here can be above the one graceful_degradation judged."
)
REPORT_FORMAT = 1
STATUS_STYLE = {PASS: "green", FAIL: "bold red", INCONCLUSIVE: "yellow", SKIPPED: "dim"}
STATUS_ORDER = {FAIL: 0, INCONCLUSIVE: 1, PASS: 2, SKIPPED: 3}  # how verdict lists are sorted


def write_reports(run_dir: Path, history: History | None, result: CheckResult) -> dict[str, Path]:
    """Write report.json, junit.xml, summary.md and report.html into `run_dir`; return
    {file name: path}. `history` is the checker's input: its phases and fault windows are the
    ones drawn, so the charts show what was judged. The per-second figures are read from the
    run directory itself, tolerantly, so a directory whose history failed to load (pass None)
    still gets its reports."""
    from spikegate.harness.reports_html import (
        render_html,  # matplotlib loads only when HTML is wanted
    )

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"run_dir {run_dir} is not a directory: pass the run directory")
    data = load_run_data(run_dir, history)
    report = build_report(data, result)
    texts = {
        "report.json": json.dumps(report, indent=2, sort_keys=False, allow_nan=False) + "\n",
        "junit.xml": render_junit(report),
        "summary.md": render_summary(report),
    }
    paths = {name: _write(run_dir / name, text) for name, text in texts.items()}
    paths["report.html"] = _write(run_dir / "report.html", render_html(report, data))
    return paths


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


# --- report.json ------------------------------------------------------------------------------
def build_report(data: RunData, result: CheckResult) -> dict[str, Any]:
    """Everything the other reports show, as one JSON-safe dict (the content of report.json)."""
    verdicts = [jsonable(v.to_json()) for v in result.verdicts]
    counts = {s: sum(1 for v in result.verdicts if v.status == s) for s in STATUSES}
    phases = [
        {
            "name": p.name,
            "start_s": p.start_s,
            "end_s": p.end_s,
            "figures": phase_figures(data.requests, data.samples, p.start_s, p.end_s),
        }
        for p in data.phases
    ]
    report = {
        "format": REPORT_FORMAT,
        "spikegate_version": __version__,
        "generated_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "scenario": data.scenario_name,
        "seed": data.seed,
        "run_dir": str(data.run_dir),
        "status": result.status,
        "exit_code": result.exit_code,
        "counts": counts,
        "duration_s": data.duration_s,
        "meta": data.meta,
        "phases": phases,
        "stress_window": (
            None if data.stress is None else [data.stress.start_s, data.stress.end_s]
        ),
        "faults": [
            {"label": w.label, "start_s": w.start_s, "end_s": w.end_s, **w.details}
            for w in data.faults
        ],
        "thresholds": result.thresholds,
        "verdicts": verdicts,
        "key_figures": {
            "time_to_detect_s": _verdict_seconds(result.verdicts, "time_to_detect"),
            "time_to_recover_s": _verdict_seconds(result.verdicts, "time_to_recover"),
            "impressions": _impressions(data.impressions),
        },
        "notes": data.notes,
    }
    out: dict[str, Any] = jsonable(report)
    return out


def load_report(path: Path) -> tuple[dict[str, Any], CheckResult]:
    """Read a report.json back: the whole dict and the CheckResult it was written from."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        verdicts = [
            Verdict(
                name=str(v["name"]),
                phase=str(v["phase"]),
                status=v["status"],
                message=str(v["message"]),
                evidence=dict(v.get("evidence") or {}),
            )
            for v in data["verdicts"]
        ]
        return data, CheckResult(verdicts=verdicts, thresholds=dict(data.get("thresholds") or {}))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a Spikegate report.json ({exc})") from None


def jsonable(value: Any) -> Any:
    """Strict-JSON form: NaN/inf become null, tuples and sets lists, other objects strings."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((jsonable(v) for v in value), key=repr)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)


# The checker's evidence keys for the two durations (harness/checker.py), then older spellings.
_SECONDS_KEYS = {
    "time_to_detect": ("detect_s", "time_to_detect_s"),
    "time_to_recover": ("ttr_s", "recover_s", "time_to_recover_s"),
}


def _verdict_seconds(verdicts: Sequence[Verdict], name: str) -> float | None:
    for v in verdicts:
        if v.name != name:
            continue
        for key in _SECONDS_KEYS[name]:
            value = v.evidence.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
    return None


def _impressions(acc: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if acc is None:
        return None
    keys = ("acked", "found", "missing", "duplicates_in_topic", "complete", "error")
    return {k: acc.get(k) for k in keys}


# --- junit.xml --------------------------------------------------------------------------------
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_text(text: str) -> str:
    return _XML_BAD.sub("?", text)


def _evidence_text(verdict: Mapping[str, Any]) -> str:
    evidence = json.dumps(verdict.get("evidence") or {}, indent=2, sort_keys=True)
    return _xml_text(f"{verdict['message']}\n\nevidence:\n{evidence}\n")


def render_junit(report: Mapping[str, Any]) -> str:
    """JUnit XML: one testsuite per run, one testcase per verdict per phase
    (classname spikegate.<scenario>.<phase>, name = the verdict), failure / skipped elements
    carrying the message and the evidence. Both inconclusive and skipped verdicts are
    <skipped> (a CI neither passes nor fails them); the message says which."""
    verdicts: list[Mapping[str, Any]] = list(report["verdicts"])
    scenario = str(report["scenario"])
    counts = {
        "tests": str(len(verdicts)),
        "failures": str(sum(v["status"] == FAIL for v in verdicts)),
        "errors": "0",
        "skipped": str(sum(v["status"] in (INCONCLUSIVE, SKIPPED) for v in verdicts)),
        "time": f"{float(report.get('duration_s') or 0.0):.3f}",
    }
    root = ET.Element("testsuites", {"name": "spikegate", **counts})
    stamp = str(report.get("meta", {}).get("started_utc") or report["generated_utc"])
    suite = ET.SubElement(
        root,
        "testsuite",
        {"name": f"spikegate.{scenario}", **counts, "timestamp": _junit_time(stamp)},
    )
    props = ET.SubElement(suite, "properties")
    for key in ("scenario", "seed", "status", "run_dir"):
        ET.SubElement(props, "property", {"name": key, "value": _xml_text(str(report[key]))})
    for v in verdicts:
        case = ET.SubElement(
            suite,
            "testcase",
            {
                "classname": f"spikegate.{scenario}.{v['phase']}",
                "name": str(v["name"]),
                "time": "0",
            },
        )
        message = _xml_text(str(v["message"]))
        if v["status"] == FAIL:
            failure = ET.SubElement(case, "failure", {"message": message, "type": "VerdictFailed"})
            failure.text = _evidence_text(v)
        elif v["status"] == INCONCLUSIVE:
            skipped = ET.SubElement(case, "skipped", {"message": f"inconclusive: {message}"})
            skipped.text = _evidence_text(v)
        elif v["status"] == SKIPPED:
            skipped = ET.SubElement(case, "skipped", {"message": f"skipped: {message}"})
            skipped.text = _evidence_text(v)
        else:
            ET.SubElement(case, "system-out").text = _evidence_text(v)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _junit_time(stamp: str) -> str:
    """JUnit's schema wants an ISO timestamp without a zone (UTC implied)."""
    try:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC)
    return parsed.strftime("%Y-%m-%dT%H:%M:%S")


# --- summary.md -------------------------------------------------------------------------------
def _md(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def pct(value: Any) -> str:
    return "n/a" if value is None else f"{100.0 * float(value):.1f}%"


def status_line(report: Mapping[str, Any]) -> str:
    c = report["counts"]
    total = sum(c.values())
    return (
        f"{report['status'].upper()}: {_tally(c)} of {total} verdicts (exit {report['exit_code']})"
    )


def _tally(c: Mapping[str, int]) -> str:
    """`2 failed, 1 inconclusive, 3 passed`, and `, 4 skipped` when any were."""
    text = (
        f"{c.get(FAIL, 0)} failed, {c.get(INCONCLUSIVE, 0)} inconclusive, {c.get(PASS, 0)} passed"
    )
    return text + (f", {c[SKIPPED]} skipped" if c.get(SKIPPED) else "")


def render_summary(report: Mapping[str, Any]) -> str:
    """Markdown for $GITHUB_STEP_SUMMARY: status, verdict table, key figures, where to look."""
    lines = [
        f"## Spikegate `{report['scenario']}`: {report['status'].upper()}",
        "",
        f"**{status_line(report)}** · seed {report['seed']} · {fmt(report['duration_s'], ' s', 0)}",
        "",
        "| Verdict | Phase | Status | Message |",
        "|---|---|---|---|",
    ]
    for v in sorted(report["verdicts"], key=lambda v: STATUS_ORDER.get(v["status"], 4)):
        status = v["status"].upper()
        status = f"**{status}**" if v["status"] in (FAIL, INCONCLUSIVE) else status
        lines.append(f"| {_md(v['name'])} | {_md(v['phase'])} | {status} | {_md(v['message'])} |")
    lines += [
        "",
        "### Key figures",
        "",
        "| Phase | Offered/s | Achieved/s | Admitted | Rejected | Failed"
        " | Admitted p50/p99 | Rejected p99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in report["phases"]:
        f = p["figures"]
        lines.append(
            f"| {_md(p['name'])} ({fmt(p['start_s'], '', 0)}-{fmt(p['end_s'], ' s', 0)})"
            f" | {fmt(f['offered_rps'])} | {fmt(f['goodput_rps'])}"
            f" | {pct(f['admitted_share'])} | {pct(f['rejected_share'])}"
            f" | {pct(f['failure_share'])}"
            f" | {fmt(f['admitted_p50_ms'], ' ms')} / {fmt(f['admitted_p99_ms'], ' ms')}"
            f" | {fmt(f['rejected_p99_ms'], ' ms')} |"
        )
    k = report["key_figures"]
    imp = k["impressions"] or {}
    lines += [
        "",
        FIGURES_NOTE,
        "",
        f"Time to detect: {fmt(k['time_to_detect_s'], ' s')} · "
        f"time to recover: {fmt(k['time_to_recover_s'], ' s')} · "
        f"impressions acked/found: {fmt(imp.get('acked'))}/{fmt(imp.get('found'))}",
    ]
    if report["notes"]:
        lines += ["", "Gaps in the run directory: " + _md("; ".join(report["notes"]))]
    lines += [
        "",
        f"Full report: `{report['run_dir']}/report.html` (charts, evidence), "
        f"`report.json`, `junit.xml`; the run directory is uploaded as a build artifact.",
        "",
    ]
    return "\n".join(lines)


# --- console ----------------------------------------------------------------------------------
def print_verdicts(console: Console, result: CheckResult) -> None:
    """The verdict table (verdict, phase, coloured status, message) and a one-line status."""
    table = Table(title="Spikegate verdicts", title_justify="left", expand=False)
    table.add_column("verdict", no_wrap=True)
    table.add_column("phase", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("message", overflow="fold")
    for v in result.verdicts:
        style = STATUS_STYLE.get(v.status, "")
        table.add_row(Text(v.name), Text(v.phase), Text(v.status, style=style), Text(v.message))
    console.print(table)
    style = STATUS_STYLE[result.status]
    console.print(
        f"[{style}]{result.status.upper()}[/]: {_tally(result.counts())} (exit {result.exit_code})",
        highlight=False,
    )
