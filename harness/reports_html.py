"""report.html: one self-contained page (inline CSS, inline SVG charts, no fetches at all).

    report dict + RunData --render_charts--> [Chart] --jinja2 (templates/report.html.j2)--> HTML

The page must open from a CI artifact on a machine with no network: nothing is loaded from
anywhere, the charts are SVG elements in the page itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

from jinja2 import Environment, StrictUndefined, select_autoescape
from markupsafe import Markup

from spikegate.harness.charts import render_charts
from spikegate.harness.reports import FIGURES_NOTE, fmt, pct, status_line
from spikegate.harness.reports_data import RunData

__all__ = ["TEMPLATE", "render_html"]

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
    return template.render(
        r=report,
        status_line=status_line(report),
        figures_note=FIGURES_NOTE,
        # Component URLs are loopback addresses of a stack that no longer exists; leaving them
        # out keeps the page free of anything a browser or a link checker could try to fetch.
        meta_shown={k: v for k, v in report["meta"].items() if k != "components"},
        charts=[{"c": c, "svg": Markup(c.svg)} for c in charts],  # our own matplotlib output
        verdicts=sorted(
            report["verdicts"],
            key=lambda v: ({"fail": 0, "inconclusive": 1}.get(v["status"], 2), v["phase"]),
        ),
    )
