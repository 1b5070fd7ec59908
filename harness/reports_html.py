"""report.html: one self-contained page (inline CSS, inline SVG charts, no fetches at all).

    report dict + RunData --render_charts--> [Chart] --jinja2 (templates/report.html.j2)--> HTML

The page must open from a CI artifact on a machine with no network: nothing is loaded from
anywhere, the charts are SVG elements in the page itself. A run whose samples carry the chaos
proxies' byte counters (`proxy_bytes`) gets one more chart: bytes through each dependency's
proxy per second, the service's traffic to each dependency as no service can misreport it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

import matplotlib
from jinja2 import Environment, StrictUndefined, select_autoescape
from markupsafe import Markup

from spikegate.harness import charts as ch
from spikegate.harness.charts import Chart, render_charts
from spikegate.harness.reports import FIGURES_NOTE, STATUS_ORDER, fmt, pct, status_line
from spikegate.harness.reports_data import RunData

__all__ = ["TEMPLATE", "proxy_bytes_chart", "render_html"]

TEMPLATE = "report.html.j2"


def _environment() -> Environment:
    env = Environment(
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    env.filters["pct"] = pct
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True)
    return env


def render_html(report: Mapping[str, Any], data: RunData) -> str:
    source = (
        resources.files("spikegate.harness.templates")
        .joinpath(TEMPLATE)
        .read_text(encoding="utf-8")
    )
    template = _environment().from_string(source)
    charts = render_charts(data)
    extra = proxy_bytes_chart(data)
    if extra is not None:
        charts.append(extra)
    return template.render(
        r=report,
        status_line=status_line(report),
        figures_note=FIGURES_NOTE,
        # Component URLs are loopback addresses of a stack that no longer exists; leaving them
        # out keeps the page free of anything a browser or a link checker could try to fetch.
        meta_shown={k: v for k, v in report["meta"].items() if k != "components"},
        charts=[{"c": c, "svg": Markup(c.svg)} for c in charts],  # our own matplotlib output
        verdicts=sorted(
            report["verdicts"], key=lambda v: (STATUS_ORDER.get(v["status"], 4), v["phase"])
        ),
    )


PROXY_BYTES_ID = "proxy-bytes"
_COUNTERS = (("received", "-"), ("sent", "--"))


def _proxy_bytes(data: RunData) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """{proxy: {counter: (t, KiB)}} from the raw sample rows, leniently (a row without
    the field, or a malformed entry, contributes nothing)."""
    out: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for row in data.samples:
        t, counters = row.get("t"), row.get("proxy_bytes")
        if not isinstance(t, int | float) or not isinstance(counters, Mapping):
            continue
        for proxy, counts in counters.items():
            if not isinstance(counts, Mapping):
                continue
            for key, _ in _COUNTERS:
                n = counts.get(key)
                if isinstance(n, int | float) and not isinstance(n, bool):
                    ts, vs = out.setdefault(str(proxy), {}).setdefault(key, ([], []))
                    ts.append(float(t))
                    vs.append(float(n) / 1024.0)
    return out


def proxy_bytes_chart(data: RunData) -> Chart | None:
    """Bytes through each dependency's proxy per second (received solid, sent dashed), or
    None when no sample carries the proxies' byte counters."""
    lines = _proxy_bytes(data)
    if not lines:
        return None
    title = "Bytes through each dependency's proxy per second (chaos proxy's own count)"
    fig = ch.new_figure()
    ax = fig.add_subplot()
    try:
        with matplotlib.rc_context(ch._RC):
            for i, (proxy, counters) in enumerate(sorted(lines.items())):
                color = f"C{i % 10}"
                for key, ls in _COUNTERS:
                    if key in counters:
                        ts, vs = counters[key]
                        ax.step(ts, vs, where="post", color=color, ls=ls, lw=1.2,
                                label=f"{proxy} {key}")  # fmt: skip
            ch._frame(ax, data, PROXY_BYTES_ID, "KiB/s")
            ch._legend(ax, data)
        return Chart(PROXY_BYTES_ID, title, ch.to_svg(fig), True)
    except Exception as exc:  # a drawing bug must cost one chart, never the whole report
        return Chart(PROXY_BYTES_ID, title, "", False, note=f"chart failed: {exc!r}")
