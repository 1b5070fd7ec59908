"""The live view's inputs: following requests.jsonl, the target's rate, plain progress lines."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from spikegate.harness.live import LiveStatus, LiveView, PlainProgress, RequestsTail, target_rate


def test_requests_tail_returns_only_complete_new_rows(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    tail = RequestsTail(path)
    assert tail.poll() == []  # no file yet
    path.write_text(json.dumps({"t": 0.0, "sent": 5}) + "\n" + '{"t": 1.0, "se', encoding="utf-8")
    assert [r["t"] for r in tail.poll()] == [0.0]
    with path.open("a", encoding="utf-8") as fh:
        fh.write('nt": 7}\n')
    rows = tail.poll()
    assert rows == [{"t": 1.0, "sent": 7}]
    assert tail.last == {"t": 1.0, "sent": 7} and tail.count == 2
    assert tail.poll() == []


def test_target_rate_is_the_counter_delta_per_second() -> None:
    a = {"t": 4.0, "ok": True, "requests_total": {"bid:200:admitted": 100.0}}
    b = {"t": 6.0, "ok": True, "requests_total": {"bid:200:admitted": 250.0, "bid:429:x": 50.0}}
    assert target_rate(a, b) == 100.0
    assert target_rate(None, b) is None
    assert target_rate(a, {"t": 5.0, "ok": False}) is None


def _status(elapsed: float) -> LiveStatus:
    return LiveStatus(
        elapsed_s=elapsed,
        duration_s=20,
        phase="stress",
        request_row={
            "t": 3.0,
            "intended": 60,
            "sent": 59,
            "outcomes": {"ok": 50, "shed": 9},
            "admitted_p99_ms": 12.5,
        },
        sample={
            "t": 3.0,
            "ok": True,
            "auction_inflight": 3,
            "auction_limit": 12,
            "breakers": {"dsp-1": "open"},
            "queue_depth": 4,
            "queue_max_depth": 400,
        },
        faults=["dsp_latency@dsp-1"],
    )


def test_plain_progress_prints_one_line_per_five_seconds() -> None:
    buf = io.StringIO()
    progress = PlainProgress(Console(file=buf, width=200), every_s=5.0)
    for tick in range(0, 60):  # 0.0 .. 11.8 s in 0.2 s ticks
        progress.update(_status(tick * 0.2))
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3  # at 0, 5 and 10 s
    assert "60/s / 59/s" in lines[0] and "shed 9" in lines[0]
    assert "dsp_latency@dsp-1" in lines[0] and "12.5 ms" in lines[0]


def test_live_view_renders_breakers_queue_and_inflight() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=120, force_terminal=True)
    with LiveView(console, "run") as view:
        view.update(_status(7.0))
    out = buf.getvalue()
    for text in ("dsp-1 open", "4 (cap 400)", "3/12", "phase stress"):
        assert text in out
