"""The report's time charts, drawn with matplotlib on the Agg canvas and exported as inline SVG.

    RunData --chart fn--> Figure (Agg canvas) --shade windows--> SVG text (no prolog, no
                                                                  metadata, no namespaces)

Every chart shares the time axis of the run and shades the stress window and each fault
window, so a breach can be read against what caused it. Figures are built with
`matplotlib.figure.Figure` directly (never pyplot): no display, no global figure registry.
A chart without data says "no data" instead of disappearing.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from spikegate.contract.outcomes import OUTCOMES
from spikegate.harness.reports_data import RunData, latency_series, series

__all__ = ["CHARTS", "Chart", "new_figure", "render_charts"]

# one colour per outcome, in OUTCOMES order (green admitted, amber rejected, red failed)
OUTCOME_COLORS = dict(
    zip(
        OUTCOMES,
        (
            "#2e7d32",
            "#81c784",
            "#26a69a",
            "#ffb300",
            "#fb8c00",
            "#8e24aa",
            "#e53935",
            "#f06292",
            "#8b0000",
            "#212121",
        ),
        strict=True,
    )
)
BREAKER_COLORS = {
    "closed": "#66bb6a",
    "half_open": "#ffca28",
    "open": "#e53935",
    "forced_open": "#8b0000",
    "disabled": "#bdbdbd",
}
FAULT_COLORS = ("#ef5350", "#42a5f5", "#ab47bc", "#ffa726", "#26c6da", "#8d6e63")
STRESS_COLOR = "#9e9e9e"
_SHADE_Z = 2.5  # above filled areas (a stacked chart would hide a background band), translucent

_RC: dict[Any, Any] = {"svg.fonttype": "none", "font.family": "sans-serif", "font.size": 9.0}


@dataclass(frozen=True, slots=True)
class Chart:
    id: str
    title: str
    svg: str  # an <svg> element ready to inline in HTML
    has_data: bool
    note: str = ""


def new_figure(height_in: float = 3.0) -> Figure:
    """A figure bound to the Agg canvas (raster backend; no display needed)."""
    fig = Figure(figsize=(11.0, height_in), dpi=100)
    FigureCanvasAgg(fig)
    # Fixed margins (inches) rather than constrained layout: it doubles the drawing time and
    # every chart has the same furniture (y label left, legend right, phase names on top).
    fig.subplots_adjust(
        left=0.75 / 11.0, right=1.0 - 2.4 / 11.0, bottom=0.5 / height_in, top=1.0 - 0.3 / height_in
    )
    return fig


def to_svg(fig: Figure) -> str:
    buf = io.StringIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buf, format="svg")
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    # Namespace declarations are URIs, not fetches; inline SVG in HTML needs none of them.
    return re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)


# --- shared decoration ------------------------------------------------------------------------
def shade_windows(ax: Axes, data: RunData, chart_id: str) -> int:
    """Shade the stress window and each fault window; return how many spans were drawn.
    Each span carries an SVG id (`<chart>-stress`, `<chart>-fault-<i>`) a reader can find."""
    drawn = 0
    stresses = [data.stress] if data.stress is not None else []
    for i, w in enumerate([*stresses, *data.more_stress]):  # a session's: stress-2, ...
        ax.axvspan(
            w.start_s,
            w.end_s,
            color=STRESS_COLOR,
            alpha=0.18,
            lw=0,
            gid=f"{chart_id}-stress" + (f"-{i + 1}" if i else ""),
            zorder=_SHADE_Z,
        )
        drawn += 1
    for i, w in enumerate(data.faults):
        ax.axvspan(
            w.start_s,
            w.end_s,
            ymin=0.0,
            ymax=1.0,
            facecolor=FAULT_COLORS[i % len(FAULT_COLORS)],
            alpha=0.12,
            hatch="//" if i % 2 else "\\\\",
            edgecolor=FAULT_COLORS[i % len(FAULT_COLORS)],
            lw=0,
            gid=f"{chart_id}-fault-{i}",
            zorder=_SHADE_Z,
        )
        drawn += 1
    for p in data.phases[1:]:
        ax.axvline(p.start_s, color="#616161", lw=0.6, ls=":", zorder=1)
    return drawn


def _window_handles(data: RunData) -> list[Patch]:
    handles = []
    if data.stress is not None or data.more_stress:
        many = len(data.more_stress) + (data.stress is not None) > 1
        label = "stress windows" if many else "stress window"
        handles.append(Patch(color=STRESS_COLOR, alpha=0.3, label=label))
    for i, w in enumerate(data.faults):
        c = FAULT_COLORS[i % len(FAULT_COLORS)]
        handles.append(Patch(facecolor=c, alpha=0.35, edgecolor=c, label=f"fault: {w.label}"))
    return handles


def _frame(ax: Axes, data: RunData, chart_id: str, ylabel: str) -> None:
    ax.set_xlim(0.0, max(data.duration_s, 1.0))
    ax.set_xlabel("seconds since start")
    ax.set_ylabel(ylabel)
    ax.grid(True, lw=0.3, alpha=0.6)
    shade_windows(ax, data, chart_id)
    for p in data.phases:
        if p.end_s > p.start_s:
            ax.text(
                (p.start_s + p.end_s) / 2,
                1.01,
                p.name,
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="bottom",
                fontsize=7,
                color="#616161",
            )


def _no_data(ax: Axes, chart_id: str, what: str) -> None:
    ax.set_ylim(0.0, 1.0)
    ax.text(
        0.5,
        0.5,
        f"no data ({what})",
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=11,
        color="#757575",
        gid=f"{chart_id}-no-data",
    )


def _legend(ax: Axes, data: RunData, extra: Sequence[Any] = ()) -> None:
    handles, _ = ax.get_legend_handles_labels()
    handles = [*handles, *extra, *_window_handles(data)]
    if handles:
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7)


def _seconds(end: float) -> list[float]:
    return [float(s) for s in range(math.ceil(end))]


# --- the charts -------------------------------------------------------------------------------
def chart_rates(data: RunData, ax: Axes) -> bool:
    rows = data.requests
    if not rows:
        _no_data(ax, "rates", "requests.jsonl has no rows")
        return False
    xs = _seconds(data.duration_s)
    index = {int(t): r for r in rows if isinstance(t := r.get("t"), int | float)}
    stacks, labels, colors = [], [], []
    for outcome in OUTCOMES:
        ys = []
        for x in xs:
            outcomes = index.get(int(x), {}).get("outcomes") or {}
            ys.append(float(outcomes.get(outcome, 0) or 0))
        if any(ys):
            stacks.append(ys)
            labels.append(outcome)
            colors.append(OUTCOME_COLORS[outcome])
    if stacks:
        ax.stackplot(xs, stacks, labels=labels, colors=colors, alpha=0.85, step="post", lw=0)
    t, offered = series(rows, "intended")
    ax.step(t, offered, where="post", color="black", lw=1.4, ls="--", label="offered (intended)")
    t, sent = series(rows, "sent")
    ax.step(t, sent, where="post", color="#1565c0", lw=1.0, label="sent")
    return True


def chart_latency(data: RunData, ax: Axes) -> bool:
    adm = latency_series(
        data.requests, "hist_admitted", {50.0: "admitted_p50_ms", 99.0: "admitted_p99_ms"}
    )
    rej = latency_series(data.requests, "hist_rejected", {99.0: "rejected_p99_ms"})
    lines = [
        (adm[50.0], "admitted p50", "#2e7d32", "-"),
        (adm[99.0], "admitted p99", "#1b5e20", "-"),
        (rej[50.0], "rejected p50", "#fb8c00", "--"),
        (rej[99.0], "rejected p99", "#e65100", "--"),
    ]
    drawn = False
    for (ts, vs), label, color, ls in lines:
        if ts:
            ax.plot(ts, vs, color=color, ls=ls, lw=1.2, marker=".", ms=2, label=label)
            drawn = True
    if not drawn:
        _no_data(ax, "latency", "no latency histograms recorded")
        return False
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylim(bottom=0.0)
    return True


def _metric_lines(
    data: RunData, ax: Axes, chart_id: str, lines: Sequence[tuple[str, str, str, str]]
) -> bool:
    drawn = False
    for key, label, color, ls in lines:
        ts, vs = series(data.samples, key)
        if ts:
            ax.step(ts, vs, where="post", color=color, ls=ls, lw=1.2, label=label)
            drawn = True
    if not drawn:
        _no_data(ax, chart_id, "samples.jsonl has no such metric")
    return drawn


def chart_inflight(data: RunData, ax: Axes) -> bool:
    return _metric_lines(
        data,
        ax,
        "inflight",
        [
            ("auction_inflight", "inflight", "#1565c0", "-"),
            ("auction_inflight_max", "inflight peak (per second)", "#64b5f6", "-"),
            ("auction_limit", "limit", "#e53935", "--"),
            ("auction_limit_ceiling", "limit ceiling", "#9e9e9e", ":"),
            ("auction_waiting", "waiting", "#8e24aa", "-"),
        ],
    )


def chart_queue(data: RunData, ax: Axes) -> bool:
    return _metric_lines(
        data,
        ax,
        "queue",
        [
            ("queue_depth", "queue depth", "#00897b", "-"),
            ("queue_max_depth", "cap (max depth)", "#e53935", "--"),
        ],
    )


def chart_resources(data: RunData, ax: Axes) -> bool:
    ts, rss = series(data.samples, "rss_bytes")
    lt, lag = series(data.samples, "loop_lag_ms")
    if not ts and not lt:
        _no_data(ax, "resources", "samples.jsonl has no rss_bytes / loop_lag_ms")
        return False
    if ts:
        ax.step(ts, [v / 2**20 for v in rss], where="post", color="#3949ab", label="RSS (MiB)")
    if lt:
        ax.step(lt, lag, where="post", color="#d81b60", ls="--", label="event-loop lag (ms)")
    return True


def chart_breakers(data: RunData, ax: Axes) -> bool:
    """One lane per DSP, coloured by breaker state over time (a failed scrape leaves a gap)."""
    segments: dict[str, dict[str, list[tuple[float, float]]]] = {}
    gaps: list[tuple[float, float]] = []
    rows = [s for s in data.samples if isinstance(s.get("t"), int | float)]
    for i, s in enumerate(rows):
        breakers = s.get("breakers")
        t0 = float(s["t"])
        t1 = float(rows[i + 1]["t"]) if i + 1 < len(rows) else t0 + 1.0
        if not s.get("ok", True) or not isinstance(breakers, Mapping):
            gaps.append((t0, t1 - t0))
            continue
        for dsp, state in breakers.items():
            segments.setdefault(str(dsp), {}).setdefault(str(state), []).append((t0, t1 - t0))
    if not segments:
        _no_data(ax, "breakers", "no breaker states sampled")
        return False
    names = sorted(segments)
    seen: set[str] = set()
    for lane, dsp in enumerate(names):
        for state, spans in segments[dsp].items():
            color = BREAKER_COLORS.get(state, "#424242")
            label = state if state not in seen else None
            seen.add(state)
            ax.broken_barh(spans, (lane - 0.35, 0.7), facecolors=color, label=label)
    if gaps:  # a failed scrape says nothing about the breakers: show it as unknown, not closed
        ax.broken_barh(
            gaps,
            (-0.45, len(names) - 0.1),
            facecolors="none",
            edgecolors="#9e9e9e",
            hatch="..",
            lw=0,
            label="no sample (scrape failed)",
        )
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.grid(False)
    return True


CHARTS: dict[str, tuple[str, str, Callable[[RunData, Axes], bool]]] = {
    "rates": ("Offered vs sent rate, outcomes per second (stacked)", "requests/s", chart_rates),
    "latency": ("Admitted and rejected latency, p50/p99 per second", "ms (symlog)", chart_latency),
    "inflight": ("Auction concurrency: inflight and limit", "requests", chart_inflight),
    "queue": ("Impression queue depth", "impressions", chart_queue),
    "breakers": ("Breaker state per DSP", "", chart_breakers),
    "resources": ("Target resources: RSS and event-loop lag", "MiB / ms", chart_resources),
}


def render_charts(data: RunData) -> list[Chart]:
    """Every chart of CHARTS as inline SVG; one that fails to draw becomes a note, not a crash."""
    out = []
    for chart_id, (title, ylabel, draw) in CHARTS.items():
        fig = new_figure(2.2 if chart_id == "breakers" else 3.0)
        ax = fig.add_subplot()
        try:
            with matplotlib.rc_context(_RC):
                has_data = draw(data, ax)
                _frame(ax, data, chart_id, ylabel)
                _legend(ax, data)
            out.append(Chart(chart_id, title, to_svg(fig), has_data))
        except Exception as exc:  # a drawing bug must cost one chart, never the whole report
            out.append(Chart(chart_id, title, "", False, note=f"chart failed: {exc!r}"))
    return out


# --- the goodput curve (spikegate curve) -------------------------------------------------------
CURVE_COLORS = {"on": "#2e7d32", "off": "#e53935"}


def curve_figure(result: Mapping[str, Any]) -> Figure:
    """Goodput (admitted bids answered within the deadline) and admitted latency against
    offered load (multiples of the measured capacity), patterns on vs off; admitted bids/s
    thin and dashed beside each goodput, whose known range (at least / at most) is shaded; the
    ideal min(offered, capacity) and, when r/a was measured, the bound (1 - k r/a) / (1 - r/a)
    x capacity."""
    fig = Figure(figsize=(11.0, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.14, top=0.88, wspace=0.25)
    good, lat = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    cap = float(result.get("capacity", {}).get("bids_rps") or 0.0)
    pkey = f"admitted_p{_slo_pct(result)}_ms"
    deadline = result.get("deadline_ms", result.get("slo_ms"))
    within = f" in {deadline:g} ms" if isinstance(deadline, int | float) else ""
    points = list(result.get("points", []))
    ks = sorted({float(p["multiple"]) for p in points}) or [1.0]
    with matplotlib.rc_context(_RC):
        for patterns in ("on", "off"):
            mine = sorted((p for p in points if p["patterns"] == patterns), key=_k)
            xs = [_k(p) for p in mine]
            color, label = CURVE_COLORS[patterns], f"patterns {patterns}"
            lo = [_nan(p.get("goodput_bids_rps")) for p in mine]
            hi = [_nan(p.get("goodput_bids_max_rps", p.get("goodput_bids_rps"))) for p in mine]
            good.plot(xs, lo, marker="o", lw=1.6, color=color, label=f"{label}: goodput{within}")
            if any(h > g for g, h in zip(lo, hi, strict=True)):
                good.fill_between(xs, lo, hi, color=color, alpha=0.15, lw=0,
                                  label=f"{label}: goodput at most")  # fmt: skip
            good.plot(xs, [_nan(p.get("admitted_bids_rps")) for p in mine], ls="--", lw=0.9,
                      marker=".", color=color, alpha=0.7, label=f"{label}: admitted")  # fmt: skip
            ys = [p.get(pkey) for p in mine]
            lat.plot(xs, [y if y is not None else math.nan for y in ys], marker="o", lw=1.6,
                     color=color, label=label)  # fmt: skip
        if cap > 0:
            grid = sorted({0.5 * ks[0], 1.0, *ks, ks[-1] * 1.05})
            ideal = [min(k, 1.0) * cap for k in grid]
            good.plot(grid, ideal, ls="--", color="#9e9e9e", lw=1.0, label="min(offered, capacity)")
            ratio = result.get("cost", {}).get("ratio")
            if isinstance(ratio, int | float):
                from spikegate.harness.curve_cost import bound_share  # the one formula

                bx = [1.0 + i * (ks[-1] * 1.05 - 1.0) / 200 for i in range(201)]
                good.plot(bx, [bound_share(k, ratio) * cap for k in bx], ls=":", lw=1.4,
                          color="#6a1b9a", label=f"bound at r/a = {ratio:.2f}")  # fmt: skip
            good.axvline(1.0, color="#616161", lw=0.7, ls=":")
            good.text(1.0, 1.01, f"capacity {cap:g}/s", transform=good.get_xaxis_transform(),
                      ha="center", va="bottom", fontsize=7, color="#616161")  # fmt: skip
        slo = result.get("slo_ms")
        if isinstance(slo, int | float):
            lat.axhline(slo, color="#e65100", ls="--", lw=1.0, label=f"SLO {result.get('slo')}")
        for ax in (good, lat):
            ax.set_xscale("log")
            ax.set_xticks(ks, [f"{k:g}x" for k in ks])
            ax.minorticks_off()
            ax.set_xlabel("offered load (x measured capacity)")
            ax.grid(True, lw=0.3, alpha=0.6)
            ax.legend(fontsize=7, loc="best")
        good.set_ylabel("bids/s: in time (goodput), admitted")
        good.set_ylim(bottom=0.0)
        lat.set_yscale("log")
        lat.set_ylabel(f"admitted p{_slo_pct(result)} (ms, log)")
        limits = result.get("limits") or {}
        sized = (
            f"  (capacity: the server's knee, patterns off; on: buckets "
            f"{limits['publisher_rate_per_s']:g}/s per publisher, auction limit "
            f"{limits['auction_limit']})"
            if "auction_limit" in limits
            else ""
        )
        fig.suptitle(f"Goodput curve: {result.get('scenario', '')}{sized}", fontsize=10)
    return fig


def _nan(v: Any) -> float:
    return float(v) if isinstance(v, int | float) else math.nan


def _k(p: Mapping[str, Any]) -> float:
    return float(p["multiple"])


def _slo_pct(result: Mapping[str, Any]) -> str:
    m = re.match(r"p([\d.]+)", str(result.get("slo", "p99")))
    return m.group(1) if m else "99"
