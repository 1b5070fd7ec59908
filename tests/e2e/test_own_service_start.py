"""Your own service: what stops a run before any load is sent, with one clear message.

Each case is `spikegate run` as a subprocess on a scenario written here. It must exit 2
(the scenario or its files are wrong) or 4 (the environment: a dependency or the service),
print one message that names the cause, print no traceback, send no load (no
requests.jsonl) and leave nothing running (no process, no port of the run).
"""

from __future__ import annotations

import json
import socket
import textwrap
from pathlib import Path

import pytest

from tests.e2e.conftest import finish, leftovers, rows, spikegate

pytestmark = [pytest.mark.e2e]

LOAD = """
[load]
duration_s = 6
warmup_s = 1
base_rps = 10
"""
SERVER = '["python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1"]'


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run(
    tmp_path: Path, body: str, timeout_s: float = 60, extra_load: str = ""
) -> tuple[int, str, Path]:
    scenario = tmp_path / "own.toml"
    scenario.write_text(textwrap.dedent(body) + LOAD + extra_load, encoding="utf-8")
    run_dir = tmp_path / "run"
    proc = spikegate(["run", str(scenario), "--no-live", "--out", str(run_dir)])
    code, out = finish(proc, timeout_s)
    assert "Traceback" not in out, out
    assert not (run_dir / "requests.jsonl").exists(), "load was sent"
    if (run_dir / "meta.json").exists():
        assert leftovers(run_dir, proc.pid) == []
    return code, out, run_dir


@pytest.mark.timeout(90)
def test_a_command_that_exits_at_once_ends_the_run_with_its_last_lines(tmp_path: Path) -> None:
    code, out, run_dir = _run(
        tmp_path,
        """
        [target]
        kind = "command"
        command = ["python3", "-c", "import sys; print('boom: no DATABASE_URL'); sys.exit(3)"]
        """,
    )
    assert code == 4, out
    assert "exited with code 3" in out and "boom: no DATABASE_URL" in out, out
    assert "boom: no DATABASE_URL" in (run_dir / "logs" / "target.log").read_text()
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "failed"


@pytest.mark.timeout(90)
def test_a_ready_path_that_never_answers_2xx_fails_within_the_start_bound(
    tmp_path: Path,
) -> None:
    code, out, _ = _run(
        tmp_path,
        f"""
        [target]
        kind = "command"
        command = {SERVER}
        ready = "/never-here"

        [stack]
        start_timeout_s = 3
        """,
    )
    assert code == 4, out
    assert "was not ready within 3 s" in out, out


@pytest.mark.timeout(90)
def test_an_unreachable_upstream_dependency_stops_before_the_service_starts(
    tmp_path: Path,
) -> None:
    port = _free_port()
    code, out, run_dir = _run(
        tmp_path,
        f"""
        [target]
        kind = "command"
        command = {SERVER}

        [[dependencies]]
        name = "db"
        upstream = "127.0.0.1:{port}"
        """,
    )
    assert code == 4, out
    assert f"dependency 'db': nothing accepts connections at 127.0.0.1:{port}" in out, out
    assert not (run_dir / "logs" / "target.log").exists()  # the service was never started


@pytest.mark.timeout(60)
def test_a_program_that_does_not_exist_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    code, out, run_dir = _run(
        tmp_path,
        """
        [target]
        kind = "command"
        command = ["no-such-program-spikegate", "{port}"]
        """,
    )
    assert code == 2, out
    assert "'no-such-program-spikegate' is not found on PATH" in out, out
    assert not run_dir.exists()


@pytest.mark.timeout(60)
def test_an_external_url_where_nothing_listens_stops_at_once(tmp_path: Path) -> None:
    port = _free_port()
    code, out, _ = _run(
        tmp_path,
        f"""
        [target]
        kind = "external"
        url = "http://127.0.0.1:{port}"
        """,
    )
    assert code == 4, out
    assert f"http://127.0.0.1:{port}: nothing accepts connections there" in out, out


@pytest.mark.timeout(90)
def test_a_started_dependency_reaches_the_service_through_its_proxy(tmp_path: Path) -> None:
    """The {proxy.NAME} placeholder is the proxy's address, and the proxy leads to the
    redis-server the harness started: the service PINGs it before it says it is ready."""
    app = tmp_path / "app.py"
    app.write_text(
        textwrap.dedent(
            """
            import socket, sys, http.server
            host, port = sys.argv[2].split(":")
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.sendall(b"*1\\r\\n$4\\r\\nPING\\r\\n")
                assert s.recv(16).startswith(b"+PONG")
            print("redis answered through", sys.argv[2], flush=True)
            http.server.test(
                HandlerClass=http.server.SimpleHTTPRequestHandler,
                port=int(sys.argv[1]), bind="127.0.0.1",
            )
            """
        ),
        encoding="utf-8",
    )
    scenario = tmp_path / "own.toml"
    scenario.write_text(
        textwrap.dedent(
            """
            [target]
            kind = "command"
            command = ["python3", "app.py", "{port}", "{proxy.cache}"]
            ready = "/"

            [[dependencies]]
            name = "cache"
            start = "redis"

            [outcomes]
            rejected = [429]

            [load]
            duration_s = 4
            warmup_s = 1
            base_rps = 5
            """
        ),
        encoding="utf-8",
    )
    run_dir = tmp_path / "run"
    proc = spikegate(["run", str(scenario), "--no-live", "--out", str(run_dir)])
    _, out = finish(proc, 80)
    assert "Traceback" not in out, out
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "complete", out
    listen = meta["components"]["proxy:cache"]["listen"]
    assert f"redis answered through {listen}" in (run_dir / "logs" / "target.log").read_text()
    assert meta["components"]["proxy:cache"]["upstream"].endswith(
        meta["components"]["cache"]["url"].split(":")[2].split("/")[0]
    )
    assert meta["cleanup"]["clean"] is True
    assert leftovers(run_dir, proc.pid) == []


@pytest.mark.timeout(90)
def test_a_locustfile_without_a_user_class_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    (tmp_path / "empty_locustfile.py").write_text(
        "from locust import task\n\n\nclass NotAUser:\n    @task\n    def t(self):\n        pass\n",
        encoding="utf-8",
    )
    code, out, run_dir = _run(
        tmp_path,
        f"""
        [target]
        kind = "command"
        command = {SERVER}
        """,
        extra_load='locustfile = "empty_locustfile.py"\n',
    )
    assert code == 2, out
    flat = out.replace("\n", "")  # the console wraps at 80 columns
    assert "empty_locustfile.py: a locustfile needs a class deriving from" in flat, out
    assert not run_dir.exists()


DEPS_APP = """
import http.server, socket, sys
from spikegate.harness.kafka_util import kafka_metadata_ok

port, cache, db, events = sys.argv[1:5]
for name, addr in (("cache", cache), ("db", db)):
    host, p = addr.split(":")
    with socket.create_connection((host, int(p)), timeout=5) as s:
        s.sendall(b"*1\\r\\n$4\\r\\nPING\\r\\n")
        assert s.recv(16).startswith(b"+PONG"), name
    print(name, "answered PONG through", addr, flush=True)
assert kafka_metadata_ok(int(events.split(":")[1])), "kafka"
print("events answered Metadata through", events, flush=True)
http.server.test(
    HandlerClass=http.server.SimpleHTTPRequestHandler, port=int(port), bind="127.0.0.1"
)
"""


@pytest.mark.timeout(120)
def test_started_and_upstream_dependencies_each_reach_the_service_through_a_proxy(
    tmp_path: Path,
) -> None:
    """start = "redis", start = "kafka" and upstream = (a redis-server this test runs) each
    get a proxy; the service talks to all three through the addresses it was handed."""
    from spikegate.harness.services import RedisServer

    (tmp_path / "deps_app.py").write_text(DEPS_APP, encoding="utf-8")
    with RedisServer(tmp_path / "own-redis") as own:
        scenario = tmp_path / "own.toml"
        scenario.write_text(
            textwrap.dedent(
                f"""
                [target]
                kind = "command"
                command = ["{{python}}", "deps_app.py", "{{port}}", "{{proxy.cache}}",
                           "{{proxy.db}}", "{{proxy.events}}"]
                ready = "/"

                [[dependencies]]
                name = "cache"
                start = "redis"

                [[dependencies]]
                name = "db"
                upstream = "127.0.0.1:{own.port}"

                [[dependencies]]
                name = "events"
                start = "kafka"

                [[faults]]
                at_s = 2
                for_s = 1
                fault = "down"
                proxy = "db"

                [outcomes]
                rejected = [429]

                [load]
                duration_s = 4
                warmup_s = 1
                base_rps = 5
                """
            ),
            encoding="utf-8",
        )
        run_dir = tmp_path / "run"
        proc = spikegate(["run", str(scenario), "--no-live", "--out", str(run_dir)])
        _, out = finish(proc, 100)
        assert "Traceback" not in out, out
        meta = json.loads((run_dir / "meta.json").read_text())
        assert meta["status"] == "complete", out
        comps = meta["components"]
        log = (run_dir / "logs" / "target.log").read_text()
        for name in ("cache", "db"):
            assert f"{name} answered PONG through {comps[f'proxy:{name}']['listen']}" in log
        assert f"events answered Metadata through {comps['proxy:events']['listen']}" in log
        assert comps["proxy:db"]["upstream"] == f"127.0.0.1:{own.port}"
        assert {"cache", "events"} <= set(comps) and "db" not in comps  # not ours to stop
        events = rows(run_dir / "events.jsonl")
        faults = [e for e in events if e["kind"] in ("fault_start", "fault_stop")]
        assert [e["kind"] for e in faults] == ["fault_start", "fault_stop"], faults
        assert all(e.get("proxy") == "db" for e in faults), faults
        assert meta["cleanup"]["clean"] is True
        assert leftovers(run_dir, proc.pid) == []
        assert own.alive  # the user's own dependency is left as it was
