"""The live page in a real browser (headless Chromium, driven by Playwright) against a real
`spikegate up`: the charts draw from the stream, a rate, a spike and a fault set from the
page happen and show, halt clears them, Ctrl-C ends the session and the open page says so.

    spikegate up smoke --max-s 120 <── Chromium: GET /, /static/uplot.min.*, GET /stream,
                                                  POST /load, /load/spike, /faults, /halt

Skipped with a message where Chromium or Playwright is missing (`make test` installs
Chromium as root through apt-get; Playwright comes with the dev extra and never downloads a
browser of its own). Screenshots of the page during the spike, during the fault and after
the end are written to the test's temp dir (SPIKEGATE_SHOTS=DIR copies them there too).
The timing assertions read what the run recorded (event times, per-second rows), never the
test's own clock.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.e2e.conftest import (
    cli,
    finish,
    leftovers,
    rows,
    spikegate,
    wait_for_event,
    wait_for_second,
)

pytestmark = [pytest.mark.e2e]

WAIT_MS = 60_000


def _playwright() -> Any:
    if CHROMIUM is None:
        pytest.skip("no chromium: `sudo apt-get install -y chromium` (make test does it as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("no playwright: `pip install -e '.[dev]'`")
    return sync_playwright


def _control_url(run_dir: Path, proc: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, "spikegate up ended early"
        try:
            meta = json.loads((run_dir / "meta.json").read_text())
        except (OSError, ValueError):
            meta = {}
        url = meta.get("components", {}).get("control", {}).get("url")
        if url:
            return str(url)
        time.sleep(0.2)
    pytest.fail("no control server in meta.json")


def _event(run_dir: Path, kind: str, **match: Any) -> dict[str, Any]:
    """The first event of `kind` whose fields equal `match` (bounded wait)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for e in rows(run_dir / "events.jsonl"):
            if e["kind"] == kind and all(e.get(k) == v for k, v in match.items()):
                return e
        time.sleep(0.1)
    pytest.fail(f"no {kind} event with {match}")


def _shot(page: Any, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    extra = os.environ.get("SPIKEGATE_SHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)


@pytest.mark.timeout(300)
def test_the_live_page_drives_a_session_and_shows_what_happened(tmp_path: Path) -> None:
    sync_playwright = _playwright()
    run_dir = tmp_path / "session"
    proc = spikegate(["up", "smoke", "--no-live", "--max-s", "150", "--out", str(run_dir)])
    problems: list[str] = []
    try:
        url = _control_url(run_dir, proc)
        wait_for_event(run_dir, "run_start", 60)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on(
                "console",
                lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None,
            )
            page.goto(url + "/")
            page.wait_for_function(
                "window.spikegate && window.spikegate.connected && window.spikegate.rows >= 3",
                timeout=WAIT_MS,
            )
            # the charts come from the stream, the chart library from the harness itself
            assert page.evaluate("typeof uPlot") == "function"
            for chart in ("load", "outcomes", "latency", "inflight", "queue", "breakers"):
                page.wait_for_selector(f'#chart-{chart}[data-state="drawn"]', timeout=WAIT_MS)
            assert page.inner_text("#status").startswith("live: smoke")

            # a new rate from the page's form
            page.fill("#rate", "90")
            page.click("#loadform button[type=submit]")
            rate_set = _event(run_dir, "load_set", rate=90.0, source="page")
            wait_for_second(run_dir, math.floor(rate_set["t"]) + 2, proc)  # its seconds recorded

            # a spike from the page: its window shows while it runs
            page.fill("#peak", "2x")
            page.fill("#spike_for", "4")
            page.click("#spike")
            page.wait_for_selector(
                '#windows li[data-kind="spike"][data-state="active"]', timeout=WAIT_MS
            )
            spike = _event(run_dir, "load_spike_start", source="page")
            wait_for_second(run_dir, spike["t"] + 3, proc)
            page.wait_for_timeout(1500)  # the next redraw (at most one a second)
            _shot(page, tmp_path / "live-spike.png")
            _event(run_dir, "load_spike_end", reason="expired")
            page.wait_for_selector(
                '#windows li[data-kind="spike"][data-state="ended"]', timeout=WAIT_MS
            )

            # a fault from the page's form: its window shows on the charts as it happens
            page.select_option("#fault", "redis_latency")
            page.fill("#for_s", "60")
            page.click("#add button[type=submit]")
            active = page.wait_for_selector(
                '#windows li[data-kind="fault"][data-state="active"]', timeout=WAIT_MS
            )
            fault_id = active.get_attribute("data-id")
            started = _event(run_dir, "fault_start", id=fault_id)
            assert started["fault"] == "redis_latency" and started["source"] == "manual"
            windows = page.evaluate("window.spikegate.windows")
            (drawn,) = [w for w in windows if w["id"] == fault_id]
            assert drawn["active"] and drawn["label"] == "redis_latency@redis"
            assert drawn["from_t"] == pytest.approx(started["t"], abs=0.01)
            wait_for_second(run_dir, started["t"] + 3, proc)
            page.wait_for_timeout(1500)
            _shot(page, tmp_path / "live-fault.png")

            # halt: every fault off, the load back at the base rate, and the CLI agrees
            page.click("#halt")
            page.wait_for_selector(
                f'#windows li[data-id="{fault_id}"][data-state="ended"]', timeout=WAIT_MS
            )
            halted = _event(run_dir, "load_set", action="halt", source="page")
            stopped = _event(run_dir, "fault_stop", id=fault_id)
            assert stopped["t"] < started["t"] + 60  # taken off by the halt, not expired
            listed = cli("fault", "ls", "--run", str(run_dir))
            assert listed.returncode == 0, listed.stdout + listed.stderr
            assert "no active faults" in listed.stdout and fault_id not in listed.stdout

            # Ctrl-C ends the session; the page left open says so
            wait_for_second(run_dir, halted["t"] + 2, proc)
            proc.send_signal(signal.SIGINT)
            page.wait_for_selector("#ended", state="visible", timeout=WAIT_MS)
            assert "session ended" in page.inner_text("#ended")
            assert page.evaluate("window.spikegate.ended") is True
            assert page.is_disabled("#halt")
            _shot(page, tmp_path / "live-ended.png")
            code, out = finish(proc, 150)
            page.wait_for_timeout(1200)  # nothing more to say once the harness is gone
            browser.close()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert "Traceback" not in out, out
    assert problems == []
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["mode"] == "session" and meta["status"] == "complete", out
    report = json.loads((run_dir / "report.json").read_text())
    assert code == report["exit_code"], out

    # the rate set from the page was held within a second: the first whole second that
    # starts a second after the set had exactly 90 bid arrivals, and everything the schedule
    # intended that second (bids and their impressions) was sent
    by_t = {r["t"]: r for r in rows(run_dir / "requests.jsonl")}
    second = by_t[float(math.floor(rate_set["t"]) + 2)]
    assert sum(second["endpoints"]["bid"].values()) == 90, second
    assert second["sent"] == second["intended"], second
    # the load above base (90/s from the page), the spike and the fault under it are one
    # disturbance: one stress phase from the set's second to the halt, a recovery after it
    phases = {p["name"]: p for p in report["phases"]}
    assert phases["stress"]["start_s"] == math.floor(rate_set["t"]), phases
    assert phases["stress"]["end_s"] == pytest.approx(halted["t"], abs=0.01), phases
    assert phases["recovery"]["start_s"] == phases["stress"]["end_s"], phases
    assert leftovers(run_dir, proc.pid) == []
    for name in ("live-spike.png", "live-fault.png", "live-ended.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name
