"""The control server and `spikegate fault` against the real embedded chaos server.

A FaultSchedule (thread runner, real clock) over `python -m chaos.server` with the proxies a
run has, a ControlServer on 127.0.0.1:0 published as a live run (SPIKEGATE_RUNTIME_DIR in
tmp_path), and the CLI in-process through `harness.cli.main`.
"""

from __future__ import annotations

import http.client
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from spikegate.chaos.client import ChaosClient
from spikegate.chaos.schedule import FaultSchedule
from spikegate.harness.cli import main
from spikegate.harness.control import MAX_BODY_BYTES, ControlApi, ControlServer
from spikegate.harness.liverun import CONTROL_FILE, LiveRun, unpublish
from spikegate.harness.services import free_port
from spikegate.harness.stack import ChaosServerProcess, port_listening

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PROXIES = ("dsp-1", "dsp-2", "kafka", "redis")


@dataclass
class Live:
    chaos: ChaosClient
    chaos_proc: ChaosServerProcess
    schedule: FaultSchedule
    server: ControlServer
    run_dir: Path
    events: list[dict[str, Any]]

    def toxics(self) -> dict[str, list[str]]:
        return {n: [t.name for t in p.toxics] for n, p in self.chaos.proxies().items()}

    def disabled(self) -> list[str]:
        return sorted(n for n, p in self.chaos.proxies().items() if not p.enabled)


@pytest.fixture
def live(tmp_path: Path, log_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Live]:
    monkeypatch.setenv("SPIKEGATE_RUNTIME_DIR", str(tmp_path / "rt"))
    monkeypatch.setenv("COLUMNS", "200")  # the rich table on one line per fault
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with ChaosServerProcess(log_dir) as proc:
        assert isinstance(proc, ChaosServerProcess)
        chaos = ChaosClient(proc.url)
        upstream = f"127.0.0.1:{free_port()}"  # toxics need a proxy, not a live upstream
        for name in PROXIES:
            chaos.create_proxy(name, upstream, "127.0.0.1:0")
        events: list[dict[str, Any]] = []
        schedule = FaultSchedule(chaos, on_event=events.append)
        schedule.begin()
        with schedule:
            api = ControlApi(schedule, lambda: PROXIES, info={"scenario": "t"})
            with ControlServer(api) as server:
                run = LiveRun.here(server.url, run_dir, "t", "2026-01-01T00:00:00Z")
                run.publish()
                try:
                    yield Live(chaos, proc, schedule, server, run_dir, events)
                finally:
                    unpublish(run.paths())
        if proc.alive:
            assert chaos.is_clean()  # the schedule's close reset everything


def fault(*args: str) -> tuple[int, str]:
    """`spikegate fault ARGS` in-process: (exit code, stdout + errors)."""
    buf = io.StringIO()
    code = main(["fault", *args], Console(file=buf, width=200))
    return code, buf.getvalue()


def wait_until(predicate: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def test_add_ls_and_expiry_on_the_real_chaos_server(
    live: Live, capsys: pytest.CaptureFixture[str]
) -> None:
    # 3 s: the checks below, made while it is active, do not race its expiry on a busy machine
    code, err = fault("add", "redis_latency", "--param", "latency_ms=50", "--for", "3")
    out = capsys.readouterr().out
    assert code == 0, err
    assert "added m1: redis_latency on redis" in out and "latency_ms=50" in out
    toxic = live.chaos.get_toxic("redis", "spikegate_m1_latency")
    assert toxic.type == "latency" and toxic.attributes["latency"] == 50
    code, err = fault("ls")
    out = capsys.readouterr().out
    assert code == 0, err
    assert "m1" in out and "redis_latency" in out and "manual" in out
    assert "proxies: dsp-1, dsp-2, kafka, redis" in out and live.server.url in out
    assert wait_until(lambda: live.toxics()["redis"] == [], 15.0)
    kinds = [(e["kind"], e["id"], e["source"]) for e in live.events]
    assert kinds == [("fault_start", "m1", "manual"), ("fault_stop", "m1", "manual")]
    assert live.events[1]["reason"] == "expired"
    # never early; late by at most 1.5 s (the exact timeline is unit-tested on a fake clock)
    assert 2.9 <= live.events[1]["t"] - live.events[0]["t"] <= 3.0 + 1.5
    code, _ = fault("ls")
    assert code == 0 and "no active faults" in capsys.readouterr().out


def test_rm_and_clear_take_faults_off_the_server(
    live: Live, capsys: pytest.CaptureFixture[str]
) -> None:
    assert fault("add", "dsp_down", "--proxy", "dsp-2", "--run", str(live.run_dir))[0] == 0
    assert fault("add", "latency", "--proxy", "kafka", "--param", "latency_ms=5")[0] == 0
    assert fault("add", "redis_reset")[0] == 0
    assert live.disabled() == ["dsp-2"]
    assert live.toxics()["kafka"] == ["spikegate_m2_latency"]
    code, err = fault("rm", "m1")
    assert code == 0, err
    assert live.disabled() == []
    code, err = fault("rm", "m1")
    assert code == 2 and "fault 'm1' is not active (active: m2, m3)" in err
    code, err = fault("clear")
    assert code == 0, err
    assert "removed m2, m3" in capsys.readouterr().out
    assert all(not names for names in live.toxics().values())
    stops = [(e["id"], e["reason"]) for e in live.events if e["kind"] == "fault_stop"]
    assert stops == [("m1", "manual"), ("m2", "manual"), ("m3", "manual")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["redis_latency", "--param", "latency_ms=-5"], "latency.latency_ms must be"),
        (["latency"], "proxy is required"),
        (["dsp_latency", "--proxy", "dsp-7"], "(proxies: dsp-1, dsp-2, kafka, redis)"),
        (["redis_down", "--for", "601"], "--for 601: expected seconds in (0, 600]"),
        (["nope"], "fault must be one of"),
    ],
)
def test_bad_faults_exit_2_with_the_servers_message(
    live: Live, args: list[str], message: str
) -> None:
    code, err = fault("add", *args)
    assert code == 2 and message in err and "Traceback" not in err
    assert live.events == [] and live.chaos.is_clean()


def test_http_limits_origin_and_page(live: Live) -> None:
    port = live.server.port

    def request(method: str, path: str, body: bytes = b"", **headers: str) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        finally:
            conn.close()
        kind = resp.getheader("Content-Type", "")
        return resp.status, json.loads(payload) if "json" in kind else payload.decode()

    status, page = request("GET", "/")
    assert status == 200 and "<form" in page
    status, data = request("POST", "/faults", b"x" * (MAX_BODY_BYTES + 1))
    assert status == 413 and str(MAX_BODY_BYTES) in data["error"]
    body = json.dumps({"fault": "redis_down"}).encode()
    status, data = request("POST", "/faults", body, Origin="http://evil.example")
    assert status == 403
    status, data = request("GET", "/faults", Host=f"rebound.example:{port}")
    assert status == 403
    status, data = request("POST", "/faults", body, Origin=f"http://127.0.0.1:{port}")
    assert status == 201 and data["id"] == "m1"
    assert live.disabled() == ["redis"]


def test_a_dead_chaos_server_is_an_environment_error_exit_4(live: Live) -> None:
    live.chaos_proc.stop()
    code, err = fault("add", "redis_latency")
    assert code == 4 and "the chaos server failed" in err
    assert live.events[-1]["kind"] == "fault_error"


def test_a_closed_control_server_frees_its_port_and_the_cli_says_so(live: Live) -> None:
    port = live.server.port
    live.server.close()
    assert not port_listening(port)
    code, err = fault("ls")
    assert code == 4 and "does not answer" in err
    assert json.loads((live.run_dir / CONTROL_FILE).read_text())["control_url"].endswith(f":{port}")
