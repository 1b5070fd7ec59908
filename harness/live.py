"""The live view of a run: a rich panel refreshed about once a second, or plain progress lines.

    orchestrator tick --LiveStatus--> LiveView.update()      (a TTY: rich.live.Live panel)
                                  \\-> PlainProgress.update() (--no-live / CI: a line every 5 s)

Both read only a `LiveStatus` snapshot: the last complete requests.jsonl row (the generator's
view: offered versus sent, outcomes, admitted p99) and the last sample (the target's
view: rate it saw, inflight/limit, queue depth, breaker states), plus the active faults.
`RequestsTail` follows requests.jsonl as the recorder appends to it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

__all__ = ["LiveStatus", "LiveView", "PlainProgress", "Progress", "RequestsTail", "target_rate"]


@dataclass
class LiveStatus:
    """What the view shows at one instant."""

    elapsed_s: float
    duration_s: float
    phase: str
    request_row: dict[str, Any] | None = None
    sample: dict[str, Any] | None = None
    target_rps: float | None = None  # from the samples' request counters
    faults: list[str] = field(default_factory=list)
    note: str = ""


class Progress(Protocol):
    def update(self, status: LiveStatus) -> None: ...
    def __enter__(self) -> Progress: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class RequestsTail:
    """Follows a JSONL file: `poll()` returns the rows completed since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.last: dict[str, Any] | None = None
        self.count = 0

    def poll(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except OSError:
            return []
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an incomplete last line waits for its end
        rows: list[dict[str, Any]] = []
        for line in lines:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        if rows:
            self.last = rows[-1]
            self.count += len(rows)
        return rows


def target_rate(prev: dict[str, Any] | None, cur: dict[str, Any] | None) -> float | None:
    """Responses per second the target counted between two ok samples."""
    if not prev or not cur or not prev.get("ok") or not cur.get("ok"):
        return None
    dt = float(cur["t"]) - float(prev["t"])
    a, b = prev.get("requests_total"), cur.get("requests_total")
    if dt <= 0 or not isinstance(a, dict) or not isinstance(b, dict):
        return None
    return max(0.0, sum(b.values()) - sum(a.values())) / dt


def _fmt(value: Any, unit: str = "", digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, int | float):
        return f"{value:.{digits}f}{unit}"
    return str(value)


def _outcomes(row: dict[str, Any] | None) -> str:
    if not row:
        return "-"
    outcomes = row.get("outcomes") or {}
    parts = [f"{k} {v}" for k, v in sorted(outcomes.items()) if v]
    return ", ".join(parts) or "none"


def _breakers(sample: dict[str, Any] | None) -> str:
    if not sample or not sample.get("breakers"):
        return "-"
    return ", ".join(f"{k} {v}" for k, v in sample["breakers"].items())


def summary_fields(status: LiveStatus) -> list[tuple[str, str]]:
    """(label, value) pairs shared by both views."""
    row, sample = status.request_row, status.sample
    offered = f"{_fmt(row.get('intended'))}/s" if row else "-"
    sent = f"{_fmt(row.get('sent'))}/s" if row else "-"
    row_t = f" (second {_fmt(row.get('t'))})" if row else ""
    inflight = "-"
    if sample and "auction_inflight" in sample:
        inflight = f"{_fmt(sample.get('auction_inflight'))}/{_fmt(sample.get('auction_limit'))}"
    queue = "-"
    if sample and "queue_depth" in sample:
        queue = f"{_fmt(sample.get('queue_depth'))} (cap {_fmt(sample.get('queue_max_depth'))})"
    return [
        ("elapsed", f"{status.elapsed_s:5.1f} / {status.duration_s:g} s   phase {status.phase}"),
        ("offered / sent", f"{offered} / {sent}{row_t}"),
        ("target saw", f"{_fmt(status.target_rps)}/s"),
        ("outcomes", _outcomes(row)),
        ("admitted p99", _fmt(row.get("admitted_p99_ms") if row else None, " ms", 1)),
        ("faults", ", ".join(status.faults) or "none"),
        ("breakers", _breakers(sample)),
        ("queue depth", queue),
        ("inflight / limit", inflight),
    ]


class LiveView:
    """A rich Live panel; `update()` redraws it (Live refreshes it about once a second)."""

    def __init__(self, console: Console, title: str) -> None:
        self._console = console
        self._title = title
        self._live = Live(console=console, refresh_per_second=1, transient=False)

    def _render(self, status: LiveStatus) -> Panel:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for label, value in summary_fields(status):
            table.add_row(label, value)
        body = Group(table, Text(status.note, style="yellow")) if status.note else table
        return Panel(body, title=self._title, border_style="blue")

    def update(self, status: LiveStatus) -> None:
        self._live.update(self._render(status))

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._live.__exit__(exc_type, exc, tb)


class PlainProgress:
    """One plain line every `every_s` seconds of run time (CI logs, --no-live)."""

    def __init__(self, console: Console, every_s: float = 5.0) -> None:
        self._console = console
        self._every_s = every_s
        self._next_s = 0.0

    def update(self, status: LiveStatus) -> None:
        if status.elapsed_s < self._next_s:
            return
        self._next_s = (status.elapsed_s // self._every_s + 1) * self._every_s
        fields = dict(summary_fields(status))
        self._console.print(
            f"[{status.elapsed_s:5.1f}s {status.phase}] "
            f"offered/sent {fields['offered / sent']}, "
            f"p99 {fields['admitted p99']}, outcomes: {fields['outcomes']}; "
            f"faults: {fields['faults']}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None
