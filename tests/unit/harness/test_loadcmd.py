"""Load under your hand, harness side: LoadControl (the document and the events), the control
server's /load endpoints (in-process, fake clock), and `spikegate load`'s own input errors."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from spikegate.chaos.schedule import FaultSchedule
from spikegate.contract.rundir import LOAD_CONTROL_FILE
from spikegate.harness.cli import main
from spikegate.harness.control import ControlApi, ControlServer, LoadControl, Request, Response
from spikegate.harness.loadcmd import parse_rate
from spikegate.locustfiles.live_rate import LoadDoc, Spike, read_doc
from spikegate.locustfiles.shapes import load_params

SCENARIO_TOML = """\
name = "s"
[load]
shape = "flash_crowd"
duration_s = 60.0
warmup_s = 2.0
base_rps = 40.0
peak_rps = 160.0
spike_at_s = 30.0
spike_for_s = 5.0
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class NoChaos:
    """A chaos server that accepts every change and does nothing."""

    def reset(self) -> None:
        pass

    def set_enabled(self, proxy: str, enabled: bool) -> None:
        pass

    def add_toxic(self, proxy: str, type: str, **kwargs: Any) -> None:
        pass

    def remove_toxic(self, proxy: str, name: str) -> None:
        pass


class Env:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        (run_dir / "scenario.toml").write_text(SCENARIO_TOML)
        self.clock = Clock()
        self.events: list[dict[str, Any]] = []
        self.schedule = FaultSchedule(NoChaos(), on_event=self.events.append, clock=self.clock)
        self.schedule.begin(self.clock.now - 10.0)  # t = 10
        info = {"scenario": "s", "run_dir": str(run_dir)}
        # as the orchestrator builds it today: the load control wires itself from run_dir
        self.api = ControlApi(self.schedule, lambda: ("redis",), info=info)

    def call(self, method: str, path: str, body: object = None) -> Response:
        raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body))
        data = raw.encode() if isinstance(raw, str) else raw
        return self.api.handle(Request(method, path, data, {}))

    def doc(self) -> LoadDoc | None:
        return read_doc(self.run_dir / LOAD_CONTROL_FILE)

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.events]


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def test_show_before_any_change_is_the_scenarios_shape_and_no_document(env: Env) -> None:
    resp = env.call("GET", "/load")
    assert resp.status == 200
    data = resp.data()
    assert data["rate"] is None and data["spike"] is None and data["version"] == 0
    assert data["rps_now"] == 40.0 and data["base_rps"] == 40.0 and data["t"] == 10.0
    assert env.doc() is None and env.events == []


def test_set_writes_the_document_and_records_the_change_with_who_and_the_rate_before(
    env: Env,
) -> None:
    resp = env.call("POST", "/load", {"rate": 300, "source": "cli"})
    assert resp.status == 200 and resp.data()["rps_now"] == 300.0
    assert env.doc() == LoadDoc(version=1, rate=300.0)
    [event] = env.events
    assert event == {
        "t": 10.0,
        "kind": "load_set",
        "action": "set",
        "rate": 300.0,
        "previous": None,
        "rps_before": 40.0,
        "rps_after": 300.0,
        "source": "cli",
    }
    env.clock.now += 2
    assert env.call("POST", "/load", {"factor": 3}).data()["rps_now"] == 120.0  # 3 x base
    assert env.events[-1]["previous"] == 300.0 and env.events[-1]["source"] == "api"
    assert env.doc() == LoadDoc(version=2, rate=120.0)


def test_stop_and_start(env: Env) -> None:
    assert env.call("POST", "/load/stop", {"source": "page"}).data()["rps_now"] == 0.0
    env.clock.now += 20.0  # t = 30: the scenario's own spike
    data = env.call("POST", "/load/start").data()
    assert data["rate"] is None and data["rps_now"] == 160.0
    stop, start = env.events
    assert (stop["action"], stop["rate"], stop["rps_after"], stop["source"]) == (
        "stop", 0.0, 0.0, "page",
    )  # fmt: skip
    assert (start["action"], start["rate"], start["rps_before"], start["rps_after"]) == (
        "start", None, 0.0, 160.0,
    )  # fmt: skip
    assert env.doc() == LoadDoc(version=2, rate=None)


def test_a_spike_is_in_the_document_and_its_end_is_recorded_at_its_until(env: Env) -> None:
    env.call("POST", "/load", {"rate": 100})
    resp = env.call("POST", "/load/spike", {"peak_factor": 5, "for_s": 0.2})
    assert resp.status == 201
    data = resp.data()
    assert data["rps_now"] == 200.0 and data["spike"]["until_t"] == 10.2
    assert env.doc() == LoadDoc(version=2, rate=100.0, spike=Spike(200.0, 10.0, 10.2))
    start = env.events[-1]
    assert start["kind"] == "load_spike_start" and start["rps_before"] == 100.0
    assert (start["peak"], start["for_s"], start["until_t"]) == (200.0, 0.2, 10.2)
    timer = env.api.load._timer  # type: ignore[union-attr]
    assert timer is not None
    timer.join(5.0)  # the real timer: 0.2 s
    end = env.events[-1]
    assert end == {
        "t": 10.2, "kind": "load_spike_end", "peak": 200.0, "rps_after": 100.0,
        "reason": "expired",
    }  # fmt: skip
    assert env.doc() == LoadDoc(version=3, rate=100.0)


def test_a_new_spike_replaces_a_running_one_and_the_run_end_ends_one(env: Env) -> None:
    env.call("POST", "/load/spike", {"peak": 500, "for_s": 60})
    env.clock.now += 1.0
    env.call("POST", "/load/spike", {"peak": 700, "for_s": 60})
    assert env.kinds() == ["load_spike_start", "load_spike_end", "load_spike_start"]
    assert env.events[1]["reason"] == "replaced" and env.events[1]["t"] == 11.0
    env.clock.now += 1.0
    env.api.close()
    assert env.events[-1]["kind"] == "load_spike_end" and env.events[-1]["reason"] == "run_end"
    assert env.events[-1]["t"] == 12.0
    resp = env.call("POST", "/load", {"rate": 1})
    assert resp.status == 409  # the run is ending: nothing changes any more


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/load", {}, 422, "rate is required"),
        ("POST", "/load", {"rate": "300"}, 422, "rate must be a number"),
        ("POST", "/load", {"rate": True}, 422, "rate must be a number"),
        ("POST", "/load", {"rate": -1}, 422, "rate -1: the rate must be in [0, 1e+06]"),
        ("POST", "/load", {"rate": 2e6}, 422, "the rate must be in [0"),
        ("POST", "/load", {"factor": -2}, 422, "factor must be a number >= 0"),
        ("POST", "/load", {"factor": 1e5}, 422, "factor 100000.0 x base_rps 40"),
        ("POST", "/load", {"rate": 1, "factor": 2}, 422, "give rate or factor, not both"),
        ("POST", "/load", {"rps": 1}, 422, "unknown field(s) rps; allowed: rate, factor"),
        ("POST", "/load", {"rate": 1, "source": "x"}, 422, "source must be one of cli, page"),
        ("POST", "/load", b"{nope", 400, "not valid JSON"),
        ("POST", "/load", [1], 400, "must be a JSON object"),
        ("POST", "/load/spike", {"for_s": 5}, 422, "peak is required"),
        ("POST", "/load/spike", {"peak": 5}, 422, "for_s is required"),
        ("POST", "/load/spike", {"peak": 5, "for_s": 0}, 422, "for_s must be a number of"),
        ("POST", "/load/spike", {"peak": 5, "for_s": 601}, 422, "(0, 600]"),
        ("POST", "/load/stop", {"rate": 1}, 422, "unknown field(s) rate"),
        ("DELETE", "/load", None, 405, "DELETE is not allowed"),
        ("GET", "/load/spike", None, 405, "GET is not allowed"),
        ("POST", "/load/nope", None, 404, "no such path"),
    ],
)
def test_bad_bodies_name_the_field_and_change_nothing(
    env: Env, method: str, path: str, body: object, status: int, message: str
) -> None:
    resp = env.call(method, path, body)
    assert resp.status == status, resp.data()
    assert message in resp.data()["error"]
    assert env.doc() is None and env.events == []


def test_without_a_run_directory_the_load_endpoints_say_why(tmp_path: Path) -> None:
    schedule = FaultSchedule(NoChaos(), on_event=lambda e: None)
    api = ControlApi(schedule, lambda: (), info={"scenario": "s", "run_dir": str(tmp_path)})
    resp = api.handle(Request("GET", "/load"))
    assert resp.status == 503 and "no [load] from" in resp.data()["error"]


def test_the_server_caps_the_body_and_serves_load_on_loopback(env: Env) -> None:
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with ControlServer(env.api) as server:
        req = urllib.request.Request(
            f"{server.url}/load", data=json.dumps({"rate": 77}).encode(), method="POST"
        )
        with opener.open(req, timeout=5) as resp:
            assert json.loads(resp.read())["rps_now"] == 77.0
        big = urllib.request.Request(f"{server.url}/load", data=b" " * 20_000, method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(big, timeout=5)
        assert err.value.code == 413
        err.value.close()
    assert env.doc() == LoadDoc(version=1, rate=77.0)


def test_concurrent_changes_keep_versions_increasing(env: Env) -> None:
    load = env.api.load
    assert isinstance(load, LoadControl)
    threads = [threading.Thread(target=load.set_rate, args=(float(i),)) for i in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    doc = env.doc()
    assert doc is not None and doc.version == 20
    assert len(env.events) == 20
    assert [e["rps_before"] for e in env.events[1:]] == [e["rps_after"] for e in env.events[:-1]]


def test_load_control_over_a_section(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    load = LoadControl(
        tmp_path, load_params({"duration_s": 30, "base_rps": 10}), clock=lambda: 5.0,
        on_event=events.append,
    )  # fmt: skip
    load.set_rate(12.5)
    assert load.show()["rps_now"] == 12.5 and events[0]["rps_before"] == 10.0


# --- the CLI's own errors: exit 2, the argument named, before any run is looked for ---------
@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [("300", "rate", 300.0), ("12.5", "rate", 12.5), ("3x", "factor", 3.0),
     (" 0.5X", "factor", 0.5), ("0", "rate", 0.0)],
)  # fmt: skip
def test_parse_rate(text: str, kind: str, value: float) -> None:
    assert parse_rate(text, "RATE") == (kind, value)


def run_cli(*argv: str) -> tuple[int, str]:
    buf = io.StringIO()
    code = main(list(argv), console=Console(file=buf, width=200))
    return code, buf.getvalue()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["load", "set", "abc"], "RATE 'abc' is not a rate"),
        (["load", "set", "--", "-5"], "RATE '-5' must be a finite number >= 0"),
        (["load", "set", "nan"], "RATE 'nan' must be a finite number"),
        (["load", "set", "2e6"], "RATE '2e6' is over 1e+06"),
        (["load", "set", "3y"], "RATE '3y' is not a rate"),
        (["load", "spike", "--peak", "x3", "--for", "5"], "--peak 'x3' is not a rate"),
        (["load", "spike", "--peak", "3x", "--for", "0"], "--for 0: expected seconds in (0, 600]"),
        (["load", "spike", "--peak", "3x", "--for", "700"], "--for 700"),
    ],
)
def test_cli_input_errors_exit_2_naming_the_argument(
    argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPIKEGATE_RUNTIME_DIR", str(tmp_path))  # no live run anywhere
    code, out = run_cli(*argv)
    assert code == 2, out
    assert message in out


def test_cli_without_a_live_run_is_exit_4(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIKEGATE_RUNTIME_DIR", str(tmp_path))
    code, out = run_cli("load", "show")
    assert code == 4 and "no live spikegate run" in out
    code, out = run_cli("load", "set", "10", "--run", str(tmp_path / "nope"))
    assert code == 2 and "no such directory" in out


def test_halt_clears_the_faults_ends_a_spike_and_holds_the_base_rate(env: Env) -> None:
    env.call("POST", "/load", {"rate": 300})
    env.call("POST", "/load/spike", {"peak": 900, "for_s": 60})
    env.clock.now += 1.0
    resp = env.call("POST", "/halt", {"source": "page"})
    assert resp.status == 200, resp.data()
    data = resp.data()
    assert data["removed"] == [] and data["load"]["rps_now"] == 40.0
    assert data["load"]["spike"] is None and data["load"]["rate"] == 40.0
    end, halt = env.events[-2:]
    assert (end["kind"], end["reason"], end["t"]) == ("load_spike_end", "cleared", 11.0)
    assert (halt["kind"], halt["action"], halt["rps_before"], halt["rps_after"]) == (
        "load_set", "halt", 300.0, 40.0,
    )  # fmt: skip
    assert env.doc() == LoadDoc(version=4, rate=40.0)


def test_a_document_written_before_the_control_goes_on_with_its_version(tmp_path: Path) -> None:
    from spikegate.locustfiles.live_rate import write_doc

    write_doc(tmp_path / LOAD_CONTROL_FILE, LoadDoc(version=1, rate=0.0))  # `up --idle`
    env = Env(tmp_path)
    assert env.call("GET", "/load").data()["rps_now"] == 0.0
    env.call("POST", "/load/start")
    assert env.doc() == LoadDoc(version=2, rate=None)
    assert env.events[0]["previous"] == 0.0 and env.events[0]["rps_after"] == 40.0


def test_the_page_has_the_load_form_on_the_load_endpoints(env: Env) -> None:
    page = env.call("GET", "/").body.decode()
    for path in ('"/load"', '"/load/stop"', '"/load/start"', '"/load/spike"', '"/halt"'):
        assert path in page
    assert 'source: "page"' in page and "http://" not in page


def test_a_closed_model_has_no_rate_to_change(tmp_path: Path) -> None:
    env = Env(tmp_path)
    (tmp_path / "scenario.toml").write_text(SCENARIO_TOML + 'mode = "closed"\n')
    env.api = ControlApi(env.schedule, lambda: (), info={"run_dir": str(tmp_path)})
    assert env.call("GET", "/load").status == 200
    resp = env.call("POST", "/load/spike", {"peak": 5, "for_s": 5})
    assert resp.status == 409 and "load.mode = closed" in resp.data()["error"]
    assert env.call("POST", "/halt").status == 200  # the faults still go off
    assert env.doc() is None and env.events == []


def test_a_document_written_by_the_orchestrator_meanwhile_is_the_state_from_then_on(
    env: Env,
) -> None:
    from spikegate.locustfiles.live_rate import write_doc

    env.call("POST", "/load/spike", {"peak": 500, "for_s": 60})
    env.clock.now += 2.0
    # a session's end: the orchestrator holds rate 0 on its own (a newer version)
    write_doc(env.run_dir / LOAD_CONTROL_FILE, LoadDoc(version=2, rate=0.0))
    data = env.call("GET", "/load").data()
    assert (data["rps_now"], data["rate"], data["spike"], data["version"]) == (0.0, 0.0, None, 2)
    end = env.events[-1]
    assert (end["kind"], end["reason"], end["t"], end["rps_after"]) == (
        "load_spike_end", "replaced", 12.0, 0.0,
    )  # fmt: skip
    env.call("POST", "/load", {"rate": 10})
    assert env.doc() == LoadDoc(version=3, rate=10.0)  # newer than both writers' last
    assert env.events[-1]["previous"] == 0.0


def test_load_halt_from_the_cli_clears_faults_and_holds_the_base_rate(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`spikegate load halt --run RUN_DIR` against a real control server of the run."""
    from spikegate.harness.liverun import LiveRun, unpublish

    monkeypatch.setenv("SPIKEGATE_RUNTIME_DIR", str(tmp_path / "runtime"))
    env.call("POST", "/load/spike", {"peak": 900, "for_s": 60})
    added = env.call("POST", "/faults", {"fault": "redis_down", "for_s": 30})
    assert added.status in (200, 201), added.data()
    with ControlServer(env.api) as server:
        live = LiveRun.here(server.url, env.run_dir, "s", "2026-12-07T00:00:00Z")
        live.publish()
        try:
            code, out = run_cli("load", "halt", "--run", str(env.run_dir))
        finally:
            unpublish(live.paths())
    out += capsys.readouterr().out
    assert code == 0, out
    assert "halted: faults taken off: m1" in out and "40" in out
    assert env.schedule.active() == []
    doc = env.doc()
    assert doc is not None and doc.rate == 40.0 and doc.spike is None
    halt = [e for e in env.events if e["kind"] == "load_set"][-1]
    assert (halt["action"], halt["source"]) == ("halt", "cli")
