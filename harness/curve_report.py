"""The goodput curve's report: curve.json (every figure), curve.png (the chart) and curve.md
(the table a reader or a CI step summary shows), all in the curve's output directory.

    result (harness/curve.py) --json--> curve.json
                              --charts.curve_figure--> curve.png
                              --summary_markdown--> curve.md (links curve.png)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

from spikegate.harness.charts import _RC, curve_figure

__all__ = ["GOALS", "goals", "summary_markdown", "write_report"]


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}{unit}" if abs(v) >= 10 else f"{v:.3g}{unit}"
    return f"{v}{unit}"


def _pct(v: Any) -> str:
    return "-" if not isinstance(v, int | float) else f"{v * 100:.1f}%"


def _by_level(result: Mapping[str, Any]) -> dict[float, dict[str, Mapping[str, Any]]]:
    out: dict[float, dict[str, Mapping[str, Any]]] = {}
    for p in result.get("points", []):
        out.setdefault(float(p["multiple"]), {})[str(p["patterns"])] = p
    return dict(sorted(out.items()))


def _cpu_at_capacity(result: Mapping[str, Any]) -> str:
    at_one = _by_level(result).get(1.0, {}).get("on", {})
    cores = at_one.get("cpu_cores")
    if not isinstance(cores, int | float):
        return ""
    return f" (the target used {cores:.2f} cores at 1x, patterns on)"


def _capacity_line(result: Mapping[str, Any]) -> str:
    """Where the capacity came from: the ramp's knee, and the steady runs that confirmed it
    (a curve from before them has only the knee)."""
    cap = result.get("capacity", {})
    capacity = float(cap.get("bids_rps") or 0.0)
    ramp = cap.get("ramp", result.get("ramp", "patterns on, edge open"))
    knee = (
        f"on a ramp with {ramp}, at {_fmt(cap.get('at_s'))} s; what broke first past it: "
        f"{cap.get('broke_first', cap.get('limited_by', '?'))}"
    )
    tries = cap.get("confirm")
    if not isinstance(tries, list) or not tries:
        return f"Capacity (the server's knee, found {knee}): **{capacity:g}/s**."
    said = _tried(tries, "rate_rps", "/s", str(result.get("slo", "p99")).split()[0])
    return (
        f"Capacity: **{capacity:g}/s**, the highest steady rate the server held with the same "
        f"patterns off, confirmed on steady runs of a level's length from the ramp's knee "
        f"{_fmt(cap.get('knee_bids_rps'))}/s down ({knee}): {said}."
    )


def _tried(tries: list[Mapping[str, Any]], key: str, unit: str, pct: str) -> str:
    """Runs that each held or not, in words: '<t[key]><unit> held (admitted ..., p99 ...)'."""
    said = []
    for t in tries:
        how = "held" if not t.get("broke") else f"did not hold: {'+'.join(t['broke'])}"
        said.append(
            f"{_fmt(t.get(key))}{unit} {how} (admitted {_fmt(t.get('admitted_bids_rps'))}/s, "
            f"{pct} {_fmt(t.get(f'admitted_{pct}_ms'))} ms, late {_pct(t.get('late_share'))})"
        )
    return ", ".join(said)


def _edge_tries(limits: Mapping[str, Any], pct: str) -> str:
    """The edge's calibration runs, in words ("" for a curve without them)."""
    tries = limits.get("edge_tries")
    if not isinstance(tries, list) or not tries:
        return ""
    return (
        f" The edge's calibration, patterns on at {_fmt(tries[0].get('multiple', 2.0))}x the "
        f"capacity: {_tried(tries, 'share', ' x capacity', pct)}."
    )


def _above_bound(result: Mapping[str, Any]) -> str:
    """The levels whose patterns-on goodput passed the bound, in words ("" for none)."""
    capacity = float(result.get("capacity", {}).get("bids_rps") or 0.0)
    bound = result.get("bound") or {}
    cost = result.get("cost") or {}
    over = []
    for k, pts in _by_level(result).items():
        g, b = pts.get("on", {}).get("goodput_bids_rps"), bound.get(f"{k:g}")
        if not (isinstance(g, int | float) and isinstance(b, int | float) and capacity > 0):
            continue
        if g / capacity > b + 0.01:
            over.append(f"{k:g}x ({g / capacity:.2f} > {b:.2f})")
    if not over:
        return ""
    return (
        f" Patterns-on goodput passed the bound at {', '.join(over)}: r was measured at "
        f"{_fmt(cost.get('rate_per_s'))} requests/s, where each one wakes the target's loop, "
        "the dearest a refusal gets; thousands a second are read several per wake-up, and "
        "cost less."
    )


def _cost_line(result: Mapping[str, Any]) -> str:
    """r/a and where it came from: measured on the target alone (a curve's `cost.method`), or
    fitted over the levels (curves from before), or why there is none."""
    cost = result.get("cost") or {}
    bound = (
        "Bound on goodput at k x capacity: (1 - k r/a) / (1 - r/a), where the capacity is "
        "where the target's CPU runs out" + _cpu_at_capacity(result) + "."
    )
    if cost.get("method") and cost.get("ratio") is not None:
        fit = cost.get("fit") or {}
        fitted = fit.get("unfit") or f"r/a {_fmt(fit.get('ratio'))}, R^2 {_fmt(fit.get('r2'))}"
        return (
            f"Target CPU, measured on {cost['method']}: per admitted /bid a = "
            f"{_fmt(cost.get('a_us'))} us, per edge 429 r = {_fmt(cost.get('r_us'))} us, per "
            f"shed 503 {_fmt(cost.get('shed_us'))} us: **r/a = {cost['ratio']:.3f}** (raw, "
            f"with its idle {_fmt(cost.get('idle_cores'))} cores: {_fmt(cost.get('ratio_raw'))}; "
            f"shed/a {_fmt(cost.get('shed_ratio'))}). {bound} The levels' own target CPU, "
            f"fitted against its answers, does not give it ({fitted}): on a machine shared "
            "with the generator the target's CPU is capped by the others in every overloaded "
            "level." + _above_bound(result)
        )
    if cost.get("ratio") is not None:
        return (
            f"Target CPU per admitted /bid a = {_fmt(cost.get('a_us'))} us, per designed "
            f"rejection r = {_fmt(cost.get('r_us'))} us: **r/a = {cost['ratio']:.3f}** "
            f"(least squares over {cost.get('seconds')} seconds, R^2 {_fmt(cost.get('r2'))}, "
            f"idle {_fmt(cost.get('idle_cores'))} cores). {bound}"
        )
    why = f": {cost['unfit']}, so no bound is drawn" if cost.get("unfit") else ""
    return (
        f"r/a not measured (a = {_fmt(cost.get('a_us'))} us, r = {_fmt(cost.get('r_us'))} us{why})."
    )


def summary_markdown(result: Mapping[str, Any]) -> str:
    """The curve as a markdown table, with the capacity and r/a above it."""
    lines = [
        f"# Goodput curve: {result.get('scenario', '?')}",
        "",
        f"{_capacity_line(result)} SLO `{result.get('slo')}`. Each level: steady "
        f"{_fmt(result.get('run_s'))} s, judged after {_fmt(result.get('warmup_s'))} s of "
        "warmup; no faults.",
        "",
    ]
    limits = result.get("limits")
    if isinstance(limits, Mapping):
        lines += [
            "Patterns on: every pattern on; each publisher's bucket "
            f"**{_fmt(limits.get('publisher_rate_per_s'))}/s** ({limits.get('edge_basis')}); "
            f"the auction's concurrency limit **{limits.get('auction_limit')}** "
            f"({limits.get('auction_basis')}), max_wait_ms "
            f"{_fmt(limits.get('auction_max_wait_ms'))} as the scenario's; the impression "
            "shedder and the breakers as the scenario has them. Patterns off: all four off."
            + _edge_tries(limits, str(result.get("slo", "p99")).split()[0]),
            "",
        ]
    lines += [_cost_line(result)]
    lines += ["", _definition(result), "", "![goodput curve](curve.png)", "", *_table(result)]
    lines += ["", *goals(result)]
    held = [
        f"{p['multiple']:g}x-{p['patterns']} {_pct(p.get('held'))}"
        for p in result.get("points", [])
        if isinstance(p.get("held"), int | float) and p["held"] < 0.95
    ]
    lines.append("")
    if held:
        lines.append(
            "The generator did not hold the offered rate (sent / intended) at: "
            + ", ".join(held)
            + ". Those points measure the generator as much as the target."
        )
    else:
        lines.append("The generator held >= 95% of the offered rate at every level.")
    return "\n".join(lines) + "\n"


def _definition(result: Mapping[str, Any]) -> str:
    d = result.get("deadline_ms", result.get("slo_ms"))
    deadline = f"{d:g}" if isinstance(d, int | float) else "?"
    tmax = result.get("tmax_ms")
    against_tmax = f" (the bids' tmax is {tmax} ms)" if tmax is not None else ""
    return (
        f"**Goodput** is useful work only: bids/s answered with a win or no-bid (admitted 2xx) "
        f"within {deadline} ms, the bound of the SLO `{result.get('slo')}`{against_tmax}, "
        "counted from the generator's own per-second histograms of admitted latency (a value "
        "of exactly the deadline counts). A bid answered later is worthless to the publisher. "
        "Those histograms hold bids and the impression notices after won bids together, so a "
        "second's bids in time are known between its admitted bids minus all its late "
        "admitted answers (the figure shown) and the smaller of its admitted bids and its "
        "answers in time (shown as `<= n` where higher). **Admitted** is bids/s answered 2xx "
        "whenever; **late** is the share of admitted answers past the deadline."
    )


def _table(result: Mapping[str, Any]) -> list[str]:
    """One row per level: goodput, admitted, late, p99 and rejected/failed, on then off."""
    capacity = float(result.get("capacity", {}).get("bids_rps") or 0.0)
    pct = str(result.get("slo", "p99")).split()[0]
    key = f"admitted_{pct}_ms"
    head = ["offered", "rate/s"]
    for side, tail in (("on", "rejected"), ("off", "failed")):
        head += [f"{side}: goodput/s", f"{side}: share of capacity", f"{side}: admitted/s",
                 f"{side}: late", f"{side}: {pct} ms", f"{side}: {tail}"]  # fmt: skip
    head += ["off below on", "bound: share"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    bound = result.get("bound") or {}
    for k, pts in _by_level(result).items():
        on, off = pts.get("on", {}), pts.get("off", {})
        rate = on.get("offered_bids_rps", off.get("offered_bids_rps"))
        row = [f"{k:g}x", _fmt(rate)]
        for p, tail in ((on, "rejected_share"), (off, "failed_share")):
            g, g_max = p.get("goodput_bids_rps"), p.get("goodput_bids_max_rps")
            share = g / capacity if isinstance(g, int | float) and capacity > 0 else None
            cell = _fmt(g)
            if isinstance(g, int | float) and isinstance(g_max, int | float) and g_max > g:
                cell += f" (<= {_fmt(g_max)})"
            over = " (over SLO)" if p.get("slo_met") is False else ""
            admitted, late = _fmt(p.get("admitted_bids_rps")), _pct(p.get("late_share"))
            row += [cell, _pct(share), admitted, late, _fmt(p.get(key)) + over, _pct(p.get(tail))]
        row.append(_below(on, off))
        b = bound.get(f"{k:g}")
        row.append(_pct(b) if b is not None else "-")
        lines.append("| " + " | ".join(row) + " |")
    return lines


GOALS = ((2.0, 0.9), (5.0, 0.7))  # the issue's: patterns-on goodput >= share x capacity at k


def goals(result: Mapping[str, Any]) -> list[str]:
    """The issue's goals, each met or not from the figures: patterns-on goodput >= 0.9x the
    capacity at 2x and >= 0.7x at 5x, patterns-off below both (off's most under on's least)."""
    capacity = float(result.get("capacity", {}).get("bids_rps") or 0.0)
    by = _by_level(result)
    out = []
    for k, share in GOALS:
        on, off = by.get(k, {}).get("on", {}), by.get(k, {}).get("off", {})
        g = on.get("goodput_bids_rps")
        if not isinstance(g, int | float) or capacity <= 0:
            out.append(f"- at {k:g}x: not measured")
            continue
        met = "met" if g >= share * capacity else "NOT met"
        line = f"- at {k:g}x: on {g / capacity:.2f}x capacity (goal >= {share:g}x): {met}"
        below = _below(on, off)
        off_g = off.get("goodput_bids_rps")
        if isinstance(off_g, int | float):
            verdict = {"yes": "met", "no": "NOT met", "overlap": "NOT shown (ranges overlap)"}
            line += f"; off {off_g / capacity:.2f}x, below on: {verdict.get(below, below)}"
        out.append(line)
    return ["Goals:", *out]


def _below(on: Mapping[str, Any], off: Mapping[str, Any]) -> str:
    """yes: off's most is under on's least; no: off's least reaches on's most; else overlap."""
    nums = [p.get(k) for p in (on, off) for k in ("goodput_bids_rps", "goodput_bids_max_rps")]
    if not all(isinstance(v, int | float) for v in nums):
        return "-"
    on_lo, on_hi, off_lo, off_hi = (float(v) for v in nums)  # type: ignore[arg-type]
    if off_hi < on_lo:
        return "yes"
    return "no" if off_lo >= on_hi else "overlap"


def write_report(result: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """curve.json, curve.png and curve.md in `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "curve.json", out_dir / "curve.png", out_dir / "curve.md"]
    paths[0].write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    fig = curve_figure(result)
    with matplotlib.rc_context(_RC):
        fig.savefig(paths[1], format="png")
    paths[2].write_text(summary_markdown(result), encoding="utf-8")
    return paths
