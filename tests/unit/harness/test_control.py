"""The control API over a FaultSchedule (fake chaos client, fake clock), discovery of live
runs, and the `spikegate fault` commands' own errors (no server needed for those)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from spikegate.chaos.errors import ChaosUnavailable
from spikegate.chaos.schedule import FaultSchedule
from spikegate.harness.cli import main
from spikegate.harness.control import ControlApi, Request, Response, catalog
from spikegate.harness.faultcmd import NO_RUN, parse_params
from spikegate.harness.liverun import CONTROL_FILE, LiveRun, live_dir, live_runs, runtime_dir

PROXIES = ("dsp-1", "dsp-2", "kafka", "redis")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeChaos:
    """Toxics and enabled flags per proxy; `fail` makes the next calls raise."""

    def __init__(self) -> None:
        self.toxics: dict[str, dict[str, str]] = {p: {} for p in PROXIES}
        self.enabled = dict.fromkeys(PROXIES, True)
        self.fail: Exception | None = None

    def add_toxic(self, proxy: str, type: str, *, name: str | None = None, **kw: Any) -> None:
        if self.fail is not None:
            raise self.fail
        self.toxics[proxy][name or type] = type

    def remove_toxic(self, proxy: str, name: str) -> None:
        del self.toxics[proxy][name]

    def set_enabled(self, name: str, enabled: bool) -> None:
        if self.fail is not None:
            raise self.fail
        self.enabled[name] = enabled

    def reset(self) -> None:
        for proxy in self.toxics:
            self.toxics[proxy].clear()
            self.enabled[proxy] = True

    def clean(self) -> bool:
        return all(self.enabled.values()) and not any(self.toxics.values())


class Env:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.chaos = FakeChaos()
        self.events: list[dict[str, Any]] = []
        self.schedule = FaultSchedule(self.chaos, on_event=self.events.append, clock=self.clock)
        self.schedule.begin(self.clock.now - 10.0)
        self.api = ControlApi(self.schedule, lambda: PROXIES, info={"scenario": "s"})

    def call(self, method: str, path: str, body: object = None, **headers: str) -> Response:
        raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body))
        data = raw.encode() if isinstance(raw, str) else raw
        return self.api.handle(Request(method, path, data, headers))


@pytest.fixture
def env() -> Env:
    return Env()


# --- the API --------------------------------------------------------------------------------
def test_get_faults_lists_active_proxies_and_the_catalog_with_parameters(env: Env) -> None:
    resp = env.call("GET", "/faults")
    assert resp.status == 200
    data = resp.data()
    assert data["active"] == [] and data["proxies"] == sorted(PROXIES) and data["t"] == 10.0
    assert data["run"] == {"scenario": "s"} and data["default_for_s"] == 30.0
    by_name = {c["name"]: c for c in data["catalog"]}
    assert by_name["redis_latency"]["params"]["latency_ms"] == 100
    assert by_name["redis_latency"]["proxy"] == "redis"
    assert by_name["redis_latency"]["proxies"] == ["redis"]
    assert by_name["dsp_down"]["proxies"] == ["dsp-1", "dsp-2"]
    assert by_name["latency"]["proxy"] is None and len(by_name["latency"]["proxies"]) == 4
    assert by_name["kafka_stall"]["params"]["rate_kb_s"] == 0  # the shorthand's own default


def test_catalog_names_every_fault_and_shorthand_once() -> None:
    names = [c["name"] for c in catalog()]
    assert names == sorted(set(names))
    assert {"latency", "down", "redis_latency", "kafka_stall", "dsp_down"} <= set(names)


def test_post_adds_a_manual_fault_that_expires_after_the_default_30_s(env: Env) -> None:
    resp = env.call("POST", "/faults", {"fault": "redis_latency", "params": {"latency_ms": 50}})
    assert resp.status == 201, resp.body
    added = resp.data()
    assert added["id"] == "m1" and added["proxy"] == "redis" and added["source"] == "manual"
    assert added["params"]["latency_ms"] == 50
    assert added["started_t"] == 10.0 and added["ends_t"] == 40.0 and added["remaining_s"] == 30
    assert env.chaos.toxics["redis"] == {"spikegate_m1_latency": "latency"}
    start = env.events[-1]
    assert start["kind"] == "fault_start" and start["source"] == "manual"
    assert start["duration_s"] == 30.0
    env.clock.now += 30.0
    env.schedule.run_due()
    assert env.chaos.clean() and env.events[-1]["reason"] == "expired"
    assert env.call("GET", "/faults").data()["active"] == []


def test_post_with_for_s_and_an_explicit_proxy(env: Env) -> None:
    body = {"fault": "dsp_down", "proxy": "dsp-2", "for_s": 2.5}
    added = env.call("POST", "/faults", body).data()
    assert added["proxy"] == "dsp-2" and added["remaining_s"] == 2.5
    assert env.chaos.enabled["dsp-2"] is False
    listed = env.call("GET", "/faults").data()["active"]
    assert [f["id"] for f in listed] == ["m1"]


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "JSON object"),
        ([1, 2], 400, "JSON object"),
        ({}, 422, "fault is required"),
        ({"fault": "nope"}, 422, "fault must be one of"),
        ({"fault": "redis_latency", "latncy": 1}, 422, "unknown field(s) latncy"),
        ({"fault": "redis_latency", "params": [1]}, 422, "params must be an object"),
        ({"fault": "redis_latency", "params": {"latency_ms": -5}}, 422, "latency.latency_ms"),
        ({"fault": "redis_latency", "params": {"latency_ms": "50"}}, 422, "latency_ms"),
        ({"fault": "redis_latency", "params": {"lag": 5}}, 422, "unknown parameter(s) lag"),
        ({"fault": "latency"}, 422, "proxy is required"),
        ({"fault": "latency", "proxy": 7}, 422, "proxy must be a proxy name"),
        ({"fault": "latency", "proxy": "postgres"}, 422, "proxy 'postgres' is not a proxy"),
        ({"fault": "dsp_latency", "proxy": "dsp-9"}, 422, "(proxies: dsp-1, dsp-2, kafka"),
        ({"fault": "redis_down", "proxy": "kafka"}, 422, "proxy for 'redis_down'"),
        ({"fault": "redis_down", "for_s": 0}, 422, "for_s must be"),
        ({"fault": "redis_down", "for_s": -1}, 422, "for_s must be"),
        ({"fault": "redis_down", "for_s": 601}, 422, "(0, 600]"),
        ({"fault": "redis_down", "for_s": "5"}, 422, "for_s must be"),
        ({"fault": "redis_down", "for_s": True}, 422, "for_s must be"),
    ],
)
def test_bad_fault_requests_name_the_field_and_change_nothing(
    env: Env, body: object, status: int, names: str
) -> None:
    resp = env.call("POST", "/faults", body)
    assert resp.status == status, resp.body
    assert names in resp.data()["error"]
    assert env.chaos.clean() and env.events == [] and env.schedule.active() == []


def test_a_chaos_server_failure_is_502_and_recorded_as_fault_error(env: Env) -> None:
    env.chaos.fail = ChaosUnavailable("connection refused")
    resp = env.call("POST", "/faults", {"fault": "kafka_down"})
    assert resp.status == 502 and "connection refused" in resp.data()["error"]
    assert env.events[-1]["kind"] == "fault_error" and env.events[-1]["source"] == "manual"


def test_delete_removes_one_fault_and_unknown_ids_get_404_naming_the_active_ones(
    env: Env,
) -> None:
    env.call("POST", "/faults", {"fault": "redis_latency"})
    env.call("POST", "/faults", {"fault": "kafka_stall"})
    missing = env.call("DELETE", "/faults/m9")
    assert missing.status == 404
    assert missing.data()["error"] == "fault 'm9' is not active (active: m1, m2)"
    resp = env.call("DELETE", "/faults/m1")
    assert resp.status == 200 and resp.data()["removed"] == ["m1"]
    assert [f["id"] for f in resp.data()["active"]] == ["m2"]
    assert env.chaos.toxics["redis"] == {}
    assert env.events[-1]["kind"] == "fault_stop" and env.events[-1]["reason"] == "manual"


def test_clear_takes_every_active_fault_off(env: Env) -> None:
    env.call("POST", "/faults", {"fault": "redis_down"})
    env.call("POST", "/faults", {"fault": "dsp_latency", "proxy": "dsp-2"})
    resp = env.call("POST", "/faults/clear")
    assert resp.status == 200 and resp.data() == {"removed": ["m1", "m2"], "active": []}
    assert env.chaos.clean()
    assert env.call("POST", "/faults/clear").data()["removed"] == []


def test_after_the_run_closed_the_schedule_changes_are_409(env: Env) -> None:
    env.call("POST", "/faults", {"fault": "redis_down"})
    env.schedule.close()
    assert env.chaos.clean()
    resp = env.call("POST", "/faults", {"fault": "redis_down"})
    assert resp.status == 409 and "the run is ending" in resp.data()["error"]


def test_unknown_paths_are_404_and_wrong_methods_405(env: Env) -> None:
    assert env.call("GET", "/nope").status == 404
    resp = env.call("PUT", "/faults")
    assert resp.status == 405 and "allowed: GET, POST" in resp.data()["error"]
    assert env.call("GET", "/faults/m1").status == 405
    assert env.call("DELETE", "/faults/a/b").status == 404


def test_the_control_page_is_self_contained_html(env: Env) -> None:
    resp = env.call("GET", "/")
    assert resp.status == 200 and resp.content_type.startswith("text/html")
    page = resp.body.decode()
    assert "<form" in page and "fetch(" in page and "/faults/clear" in page
    assert "http://" not in page and "https://" not in page  # works offline: no CDN
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets and all(a.startswith("/static/") for a in assets), assets
    for asset in assets:  # the vendored chart library, served by the control server itself
        assert env.call("GET", asset).status == 200, asset


def test_a_foreign_host_or_origin_is_refused_once_hosts_are_known(env: Env) -> None:
    env.api.hosts = frozenset({"127.0.0.1:5000", "localhost:5000"})
    body = {"fault": "redis_down"}
    assert env.call("GET", "/faults", Host="evil.example:5000").status == 403
    resp = env.call("POST", "/faults", body, Host="127.0.0.1:5000", Origin="http://evil.example")
    assert resp.status == 403 and "Origin" in resp.data()["error"]
    assert env.chaos.clean()
    ok = env.call("POST", "/faults", body, Host="localhost:5000", Origin="http://localhost:5000")
    assert ok.status == 201
    assert env.call("GET", "/faults", Host="127.0.0.1:5000").status == 200


def test_an_unexpected_failure_is_a_500_not_a_crash(env: Env) -> None:
    def broken() -> list[str]:
        raise KeyError("boom")

    env.api.proxies = broken
    resp = env.call("GET", "/faults")
    assert resp.status == 500 and "boom" in resp.data()["error"]


# --- discovery ------------------------------------------------------------------------------
def test_runtime_dir_prefers_the_override_then_xdg(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SPIKEGATE_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    assert runtime_dir() == tmp_path / "xdg" / "spikegate"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert runtime_dir() == Path.home() / ".cache" / "spikegate"
    monkeypatch.setenv("SPIKEGATE_RUNTIME_DIR", str(tmp_path / "rt"))
    assert live_dir() == tmp_path / "rt" / "live"


def _publish(tmp_path: Path, name: str) -> LiveRun:
    run_dir = tmp_path / name
    run_dir.mkdir()
    run = LiveRun.here("http://127.0.0.1:9", run_dir, name, f"2026-01-01T00:00:0{len(name)}Z")
    run.publish()
    return run


def test_published_run_is_found_and_stale_pointers_are_removed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SPIKEGATE_RUNTIME_DIR", str(tmp_path / "rt"))
    ours = _publish(tmp_path, "ours")
    assert json.loads((tmp_path / "ours" / CONTROL_FILE).read_text())["pid"] == ours.pid
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(10)
    stale = [
        LiveRun(dead.pid, "http://127.0.0.1:9", str(tmp_path), "gone", "x").to_json(),
        {**ours.to_json(), "pid": dead.pid},
        {**ours.to_json(), "process_start": 1.0},  # our pid, but another process's start
    ]
    for i, data in enumerate(stale):
        (live_dir() / f"stale{i}.json").write_text(json.dumps(data))
    (live_dir() / "junk.json").write_text("{not json")
    assert live_runs() == [ours]
    assert sorted(p.name for p in live_dir().iterdir()) == [f"{ours.pid}.json"]


# --- the commands' own errors -------------------------------------------------------------------
def _main(args: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    code = main(args, Console(file=buf, width=200))
    return code, buf.getvalue()


def test_fault_without_a_live_run_exits_4_saying_how_to_start_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SPIKEGATE_RUNTIME_DIR", str(tmp_path / "rt"))
    for args in (["fault", "ls"], ["fault", "add", "redis_down"], ["fault", "clear"]):
        code, err = _main(args)
        assert code == 4 and NO_RUN in err and "Traceback" not in err


def test_several_live_runs_need_run_and_are_listed_exit_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SPIKEGATE_RUNTIME_DIR", str(tmp_path / "rt"))
    first = _publish(tmp_path, "one")
    other = LiveRun.from_json({**first.to_json(), "run_dir": str(tmp_path / "two")})
    (live_dir() / "other.json").write_text(json.dumps(other.to_json()))
    code, err = _main(["fault", "ls"])
    assert code == 2 and "2 live spikegate runs" in err and "--run RUN_DIR" in err
    assert str(tmp_path / "one") in err and str(tmp_path / "two") in err


def test_run_option_errors_name_the_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SPIKEGATE_RUNTIME_DIR", str(tmp_path / "rt"))
    code, err = _main(["fault", "ls", "--run", str(tmp_path / "missing")])
    assert code == 2 and "no such directory" in err
    code, err = _main(["fault", "ls", "--run", str(tmp_path)])
    assert code == 4 and "not live" in err
    data = LiveRun(99_999_999, "http://127.0.0.1:9", str(tmp_path), "s", "x").to_json()
    (tmp_path / CONTROL_FILE).write_text(json.dumps(data))
    code, err = _main(["fault", "ls", "--run", str(tmp_path)])
    assert code == 4 and "process 99999999 is gone" in err


def test_params_are_numbers_when_they_read_as_numbers() -> None:
    parsed = parse_params(["latency_ms=50", "toxicity=0.5", "stream=upstream", "x=nan", "e="])
    assert parsed == {"latency_ms": 50, "toxicity": 0.5, "stream": "upstream", "x": "nan", "e": ""}
    assert type(parsed["latency_ms"]) is int


@pytest.mark.parametrize(
    ("param", "message"), [("latency_ms", "not key=value"), ("=5", "not key=value")]
)
def test_bad_param_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, param: str, message: str
) -> None:
    monkeypatch.setenv("SPIKEGATE_RUNTIME_DIR", str(tmp_path / "rt"))
    code, err = _main(["fault", "add", "redis_latency", "--param", param])
    assert code == 2 and message in err and "latency_ms=50" in err


def test_a_param_given_twice_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SPIKEGATE_RUNTIME_DIR", str(tmp_path / "rt"))
    args = ["fault", "add", "redis_latency", "--param", "latency_ms=5", "--param", "latency_ms=6"]
    code, err = _main(args)
    assert code == 2 and "given twice" in err


def test_a_run_without_proxies_still_serves_the_page_and_refuses_faults_naming_why() -> None:
    """Your service with no [[dependencies]]: no chaos server, yet the control server (the
    live page, the load by hand, halt) runs over a schedule of no proxy."""
    from spikegate.harness.orchestrator import _NoProxies

    clock = FakeClock()
    schedule = FaultSchedule(_NoProxies(), on_event=lambda row: None, clock=clock)
    schedule.begin(clock.now)
    api = ControlApi(schedule, lambda: [], info={"scenario": "own"})
    assert api.handle(Request("GET", "/")).status == 200
    listed = api.handle(Request("GET", "/faults")).data()
    assert listed["proxies"] == [] and all(c["proxies"] == [] for c in listed["catalog"])
    resp = api.handle(Request("POST", "/faults", b'{"fault": "latency", "proxy": "db"}'))
    assert resp.status == 422 and "proxies: none" in resp.data()["error"]
    assert api.handle(Request("POST", "/halt", b"{}")).status == 200
    schedule.close()  # the run's end: nothing to reset, nothing raised
