"""The process supervisor against real children: redis-server, Tansu, DSP bidders, scripts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from spikegate.harness.errors import EnvironmentProblem
from spikegate.harness.services import (
    DspBidders,
    ExternalService,
    KafkaBroker,
    ManagedProcess,
    PortInUse,
    RedisServer,
    ServiceCrashed,
    ServiceNotReady,
    TargetServer,
    create_topic,
    free_port,
    kafka_metadata_ok,
    live_processes,
    read_topic_ids,
    redis_ping,
)

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


def _assert_gone(pid: int) -> None:
    assert not psutil.pid_exists(pid), f"pid {pid} still exists"
    assert _group_members(pid) == []


class ScriptChild(ManagedProcess):
    """A python -c child; ready when `ready_file` exists."""

    name = "script"

    def __init__(self, log_dir: Path, code: str, *, ready_file: Path | None = None) -> None:
        super().__init__(log_dir)
        self.code = textwrap.dedent(code)
        self.ready_file = ready_file

    def command(self) -> list[str]:
        return [sys.executable, "-c", self.code]

    def is_ready(self) -> bool:
        return self.ready_file is not None and self.ready_file.exists()


@pytest.mark.timeout(30)
def test_redis_starts_on_ephemeral_port_logs_and_stops_leaving_nothing(log_dir: Path) -> None:
    server = RedisServer(log_dir)
    with server:
        assert server.alive and server.pid is not None
        assert server.port > 0 and server.url == f"redis://127.0.0.1:{server.port}/0"
        assert redis_ping(server.port)
        assert server in live_processes()
        pid = server.pid
    assert not server.alive
    _assert_gone(pid)
    assert server not in live_processes()
    assert "Ready to accept connections" in (log_dir / "redis.log").read_text()
    with pytest.raises(OSError):
        redis_ping(server.port, timeout_s=0.5)


@pytest.mark.timeout(30)
def test_redis_fixture_is_ready_and_usable(redis_server: RedisServer) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.incr("k") == 1
    finally:
        client.close()


@pytest.mark.timeout(30)
def test_kafka_broker_answers_metadata_and_stops_leaving_nothing(log_dir: Path) -> None:
    broker = KafkaBroker(log_dir)
    with broker:
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        assert kafka_metadata_ok(broker.port)
        pid = broker.pid
        assert pid is not None
    _assert_gone(pid)
    log = (log_dir / "kafka.log").read_text()
    assert f"tcp://127.0.0.1:{broker.port}" in log


@pytest.mark.timeout(30)
def test_kafka_advertised_listener_is_passed_to_the_broker(log_dir: Path) -> None:
    broker = KafkaBroker(log_dir, advertised="127.0.0.1:9")
    with broker:
        pass
    assert "advertised: tcp://127.0.0.1:9" in (log_dir / "kafka.log").read_text()


@pytest.mark.timeout(60)
async def test_topic_round_trip_reads_back_every_impression_id(kafka_broker: KafkaBroker) -> None:
    from aiokafka import AIOKafkaProducer

    await create_topic(kafka_broker.bootstrap, "impressions", partitions=2)
    await create_topic(kafka_broker.bootstrap, "impressions", partitions=2)  # idempotent
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_broker.bootstrap, acks="all", enable_idempotence=False
    )
    await producer.start()
    try:
        for i in range(50):
            value = json.dumps({"impression_id": f"imp-{i}"}).encode()
            await producer.send("impressions", value, key=f"imp-{i}".encode())
        await producer.send("impressions", json.dumps({"impression_id": "imp-0"}).encode())
        await producer.flush()
    finally:
        await producer.stop()
    ids = await read_topic_ids(kafka_broker.bootstrap, "impressions", timeout_s=20)
    assert ids == {f"imp-{i}" for i in range(50)}


@pytest.mark.timeout(60)
async def test_paused_broker_blocks_a_produce_that_completes_after_resume(
    kafka_broker: KafkaBroker,
) -> None:
    from aiokafka import AIOKafkaProducer

    await create_topic(kafka_broker.bootstrap, "t")
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_broker.bootstrap,
        acks="all",
        enable_idempotence=False,
        request_timeout_ms=30_000,
    )
    await producer.start()
    try:
        await producer.send_and_wait("t", b'{"impression_id": "before"}')
        kafka_broker.pause()
        assert kafka_broker.paused
        assert psutil.Process(kafka_broker.pid).status() == psutil.STATUS_STOPPED
        pending = asyncio.ensure_future(producer.send_and_wait("t", b'{"impression_id": "during"}'))
        await asyncio.sleep(1.5)
        assert not pending.done(), "a produce completed while the broker was paused"
        kafka_broker.resume()
        await asyncio.wait_for(pending, timeout=20)
    finally:
        kafka_broker.resume()
        await producer.stop()
    ids = await read_topic_ids(kafka_broker.bootstrap, "t", timeout_s=20)
    assert ids == {"before", "during"}


@pytest.mark.timeout(30)
def test_a_paused_child_is_still_stopped_and_reaped(log_dir: Path) -> None:
    broker = KafkaBroker(log_dir)
    with broker:
        pid = broker.pid
        assert pid is not None
        broker.pause()
    _assert_gone(pid)


@pytest.mark.timeout(40)
def test_dsp_bidders_listen_on_distinct_ports_and_stop_cleanly(log_dir: Path) -> None:
    bidders = DspBidders(log_dir, count=3)
    with bidders:
        assert bidders.names == ["dsp-1", "dsp-2", "dsp-3"]
        assert len(set(bidders.ports)) == 3
        assert bidders.urls == [f"http://127.0.0.1:{p}" for p in bidders.ports]
        pid = bidders.pid
        assert pid is not None
    assert bidders.returncode == 0, "SIGTERM should end the bidders cleanly, not by SIGKILL"
    _assert_gone(pid)
    assert "dsp ready:" in (log_dir / "dsp.log").read_text()


def test_dsp_bidders_reject_a_bad_count(log_dir: Path) -> None:
    with pytest.raises(ValueError, match="count must be between 1 and 64"):
        DspBidders(log_dir, count=0)


@pytest.mark.timeout(30)
def test_a_child_that_exits_during_readiness_raises_with_its_log_tail(log_dir: Path) -> None:
    earlier = ScriptChild(log_dir, "print('earlier run: address already in use', flush=True)")
    with pytest.raises(ServiceCrashed):
        earlier.up(timeout_s=10)
    child = ScriptChild(
        log_dir, "import sys; print('config is broken: marker-123', flush=True); sys.exit(3)"
    )
    with pytest.raises(ServiceCrashed) as info:
        child.up(timeout_s=10)
    err = info.value
    assert isinstance(err, EnvironmentProblem) and err.exit_code == 4
    assert "exited with code 3" in err.message
    assert "marker-123" in err.log_tail and "marker-123" in str(err)
    assert "earlier run" not in err.log_tail, "the tail is this attempt's, not the log file's"
    assert not isinstance(err, PortInUse)
    assert err.log_path == log_dir / "script.log"
    assert not child.alive and child not in live_processes()


@pytest.mark.timeout(30)
def test_a_child_not_ready_within_its_bound_raises_and_is_stopped(log_dir: Path) -> None:
    child = ScriptChild(log_dir, "import time; print('still booting', flush=True); time.sleep(60)")
    started = time.monotonic()
    with pytest.raises(ServiceNotReady, match="not ready within 1 s") as info:
        child.up(timeout_s=1)
    assert time.monotonic() - started < 10
    assert "still booting" in info.value.log_tail
    assert child.pid is not None
    _assert_gone(child.pid)


@pytest.mark.timeout(30)
def test_stop_escalates_to_sigkill_and_kills_the_whole_group(log_dir: Path, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = f"""
        import signal, subprocess, sys, time, pathlib
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print("grandchild", grandchild.pid, flush=True)
        pathlib.Path({str(ready)!r}).write_text(str(grandchild.pid))
        time.sleep(60)
    """
    child = ScriptChild(log_dir, code, ready_file=ready)
    child.up(timeout_s=15)
    pid = child.pid
    assert pid is not None
    grandchild = int(ready.read_text())
    started = time.monotonic()
    child.stop(timeout_s=0.5)
    assert time.monotonic() - started < 5
    assert child.returncode == -signal.SIGKILL
    _assert_gone(pid)
    deadline = time.monotonic() + 5  # the orphaned grandchild is reaped by init
    while psutil.pid_exists(grandchild) and time.monotonic() < deadline:
        if psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.05)
    assert not psutil.pid_exists(grandchild) or (
        psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
    )
    child.stop()  # idempotent


@pytest.mark.timeout(40)
def test_a_lost_bind_race_is_retried_on_a_fresh_port(log_dir: Path) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]

    class RacingRedis(RedisServer):
        attempts = 0

        def choose_ports(self) -> None:
            RacingRedis.attempts += 1
            self.port = taken if RacingRedis.attempts == 1 else free_port()

    try:
        with RacingRedis(log_dir) as server:
            assert server.port != taken and redis_ping(server.port)
        assert RacingRedis.attempts == 2
        assert "Address already in use" in (log_dir / "redis.log").read_text()
    finally:
        squatter.close()


@pytest.mark.timeout(40)
def test_a_fixed_port_in_use_raises_port_in_use(log_dir: Path) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    try:
        with pytest.raises(PortInUse) as info, RedisServer(log_dir, port=taken):
            pass
        assert "already in use" in info.value.log_tail.lower()
        assert info.value.exit_code == 4
    finally:
        squatter.close()


def test_missing_redis_server_names_the_install_command(
    log_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EnvironmentProblem) as info:
        RedisServer(log_dir)
    assert "redis-server" in info.value.message
    assert info.value.hint is not None
    assert "sudo apt-get install -y redis-server" in info.value.hint


def test_external_services_are_used_as_given_and_never_stopped() -> None:
    redis_ext = ExternalService(url="redis://10.0.0.5:6379/0")
    kafka_ext = ExternalService(bootstrap="10.0.0.6:9092")
    with redis_ext, kafka_ext:
        assert redis_ext.url == "redis://10.0.0.5:6379/0"
        assert kafka_ext.bootstrap == "10.0.0.6:9092"
    with pytest.raises(RuntimeError, match="cannot be paused"):
        kafka_ext.pause()
    with pytest.raises(ValueError, match=r"url= .* or bootstrap="):
        ExternalService()


@pytest.mark.timeout(60)
def test_target_server_is_served_by_uvicorn_and_answers_healthz(
    log_dir: Path, redis_server: RedisServer, kafka_broker: KafkaBroker
) -> None:
    pytest.importorskip("spikegate.target.app", reason="target/app.py is not built yet")
    env = {
        "SPIKEGATE__REDIS_URL": redis_server.url,
        "SPIKEGATE__KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
    }
    server = TargetServer(log_dir, env=env)
    with server:
        import httpx

        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
        pid = server.pid
        assert pid is not None
    _assert_gone(pid)


PARENT_SCRIPT = """
import json, sys, time
from pathlib import Path
from spikegate.harness.services import DspBidders, KafkaBroker, RedisServer, reap_on_sigterm
reap_on_sigterm()
log_dir = Path(sys.argv[1])
with RedisServer(log_dir) as r, KafkaBroker(log_dir) as k, DspBidders(log_dir, count=2) as d:
    print(json.dumps([r.pid, k.pid, d.pid]), flush=True)
    time.sleep(120)
"""


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("sig", "to_group"),
    [(signal.SIGINT, True), (signal.SIGINT, False), (signal.SIGTERM, False)],
    ids=["ctrl-c-to-foreground-group", "SIGINT-to-parent", "SIGTERM-to-parent"],
)
def test_signalling_the_parent_leaves_no_child_behind(
    log_dir: Path, sig: signal.Signals, to_group: bool
) -> None:
    """Children are stopped by their parent's cleanup, and a terminal's Ctrl-C (SIGINT to the
    whole foreground group) never reaches them directly: redis logs SIGTERM, not SIGINT."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with subprocess.Popen(
        [sys.executable, "-c", PARENT_SCRIPT, str(log_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
        start_new_session=True,  # the parent leads a group, like a shell's foreground job
    ) as parent:
        try:
            assert parent.stdout is not None and parent.stderr is not None
            line = parent.stdout.readline()
            assert line, parent.stderr.read().decode()
            pids = json.loads(line)
            assert all(psutil.pid_exists(p) for p in pids)
            if to_group:
                os.killpg(parent.pid, sig)
            else:
                parent.send_signal(sig)
            parent.wait(timeout=30)
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait()
    redis_log = (log_dir / "redis.log").read_text()
    assert "Received SIGTERM" in redis_log and "SIGINT" not in redis_log
    assert parent.returncode != 0
    try:
        for pid in pids:
            _assert_gone(pid)
    finally:  # a failing run must not leave its orphans to the next test
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


# --- lifelines: nothing outlives a SIGKILLed parent -------------------------------------

KILLED_PARENT_SCRIPT = """
import json, sys, time
from pathlib import Path
from spikegate.harness import lifeline
from spikegate.harness.services import DspBidders, ManagedProcess, RedisServer

class Forker(ManagedProcess):
    name = "forker"
    def command(self):
        code = ("import os, sys, time\\n"
                "pid = os.fork()\\n"
                "if pid == 0: time.sleep(120)\\n"
                "open(sys.argv[1], 'w').write(str(pid)); time.sleep(120)\\n")
        return [sys.executable, "-c", code, str(self.log_dir / "grandchild")]
    def is_ready(self):
        return (self.log_dir / "grandchild").exists()

log_dir = Path(sys.argv[1])
r, d, f = RedisServer(log_dir), DspBidders(log_dir, count=1), Forker(log_dir)
for proc in (r, d, f):
    proc.up()
grandchild = int((log_dir / "grandchild").read_text())
print(json.dumps({"children": [r.pid, d.pid, f.pid], "grandchild": grandchild,
                  "guardian": lifeline.guardian_pids()}), flush=True)
time.sleep(120)
"""


def _wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    """The pids still alive (zombies count as gone) after waiting up to `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("guardian_too", [False, True], ids=["parent", "parent-and-guardian"])
def test_a_sigkilled_parent_takes_its_children_and_grandchildren_along(
    log_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, guardian_too: bool
) -> None:
    """SIGKILL cannot be caught: the parent-death signal kills the children and the guardian
    their groups (the forked grandchild). With the guardian killed as well, the children still
    die, and the grandchild is left for the next start's reaper, which finds and kills it."""
    state = tmp_path / "state"
    monkeypatch.setenv("SPIKEGATE_STATE_DIR", str(state))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    parent = subprocess.Popen(
        [sys.executable, "-c", KILLED_PARENT_SCRIPT, str(log_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    info: dict[str, list[int] | int] = {}
    with parent:
        _kill_parent_and_check(parent, info, state, guardian_too=guardian_too)


def _kill_parent_and_check(
    parent: subprocess.Popen[bytes],
    info: dict[str, list[int] | int],
    state: Path,
    *,
    guardian_too: bool,
) -> None:
    from spikegate.harness.reaper import describe, reap_orphans

    try:
        assert parent.stdout is not None and parent.stderr is not None
        line = parent.stdout.readline()
        assert line, parent.stderr.read().decode()
        info = json.loads(line)
        children, grandchild = info["children"], info["grandchild"]
        assert isinstance(children, list) and isinstance(grandchild, int)
        assert info["guardian"], "no guardian while children run"
        assert len(list(state.glob("*.json"))) == 3
        if guardian_too:
            guardian = info["guardian"]
            assert isinstance(guardian, list)
            os.kill(guardian[0], signal.SIGKILL)
            _wait_gone(guardian, 5)
        parent.kill()
        parent.wait(10)
        assert _wait_gone(children, 5) == []
        if guardian_too:
            assert _wait_gone([grandchild], 0.5) == [grandchild]  # survived: nobody watched
            reaped = reap_orphans()
            assert [r.pid for r in reaped] == [grandchild]
            assert f"(harness pid {parent.pid}, killed): forker child" in describe(reaped)
        assert _wait_gone([grandchild], 5) == []
        assert reap_orphans() == []  # nothing left, and the records are gone
        assert list(state.glob("*.json")) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in [*info.get("children", []), info.get("grandchild", 0)]:  # type: ignore[list-item]
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if pid:
                    os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(30)
def test_a_child_started_from_a_short_lived_thread_lives_until_stopped(log_dir: Path) -> None:
    """The parent-death signal fires when the forking *thread* exits: children asked for by
    other threads are forked by a thread that lives as long as the process."""
    ready = log_dir / "ready"
    child = ScriptChild(
        log_dir,
        f"import pathlib, time; pathlib.Path({str(ready)!r}).touch(); time.sleep(60)",
        ready_file=ready,
    )
    worker = threading.Thread(target=child.up)
    worker.start()
    worker.join(20)
    assert not worker.is_alive() and child.alive
    assert _wait_gone([child.pid or 0], 0.5) == [child.pid]  # the thread is gone, the child not
    child.stop()
    _assert_gone(child.pid or 0)


@pytest.mark.timeout(30)
def test_stop_kills_what_a_leader_that_exited_on_its_own_left_in_its_group(
    log_dir: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "grandchild"
    code = f"""
        import os, pathlib, time
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
        pathlib.Path({str(marker)!r}).write_text(str(pid))
    """
    child = ScriptChild(log_dir, code)
    child.start()
    deadline = time.monotonic() + 15
    while (child.returncode is None or not marker.exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child.returncode == 0
    grandchild = int(marker.read_text())
    assert _wait_gone([grandchild], 0.2) == [grandchild]
    child.stop()
    assert _wait_gone([grandchild], 5) == []


@pytest.mark.timeout(30)
def test_each_child_is_recorded_until_it_is_stopped(
    log_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spikegate.harness import lifeline
    from spikegate.harness.reaper import records

    monkeypatch.setenv("SPIKEGATE_STATE_DIR", str(tmp_path / "state"))
    with DspBidders(log_dir, count=1) as bidders:
        [(_, data)] = records()
        assert data["pid"] == data["pgid"] == bidders.pid
        assert data["owner_pid"] == os.getpid() and data["title"] == "DSP bidders"
        assert data["start"] == lifeline.process_start(bidders.pid or 0)
        env = psutil.Process(bidders.pid).environ()
        assert env[lifeline.OWNER_ENV] == lifeline.owner_token()
        assert lifeline.guardian_pids()
    assert records() == []
    assert lifeline.guardian_pids() == []  # the guardian leaves with the last child


@pytest.mark.timeout(30)
def test_a_clean_stop_lets_the_guardian_leave_without_killing_anything(log_dir: Path) -> None:
    """Only a harness that dies unannounced has its token's processes killed: a child started
    by another thread while the last one stops must survive the guardian's exit."""
    from spikegate.harness import lifeline

    other = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env=lifeline.child_env(None),  # carries our token, like a child not yet watched
        start_new_session=True,
    )
    try:
        child = ScriptChild(log_dir, "import time; time.sleep(60)")
        child.start()
        guardian = lifeline.guardian_pids()
        assert guardian
        child.stop()
        assert lifeline.guardian_pids() == [] and not psutil.pid_exists(guardian[0])
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
