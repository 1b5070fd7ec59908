"""examples/inventory: a service that imports nothing from Spikegate, on its own and gated.

On its own (real redis-server behind the embedded chaos proxy, a latency toxic on it): the
protected variant answers what it cannot serve with 503 + Retry-After and never holds more
than its limit; the naive one admits everything and queues it behind its Redis pool.
Gated: `spikegate run` on the example's scenarios exits 1 naming the verdicts the naive
variant breaks, and 0 on the protected one.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import tomli_w

from spikegate.chaos.client import ChaosClient
from spikegate.harness.services import ManagedProcess, RedisServer, free_port
from spikegate.harness.stack import ChaosServerProcess
from tests.e2e.conftest import ROOT, finish, leftovers, spikegate

EXAMPLE = ROOT / "examples" / "inventory"

pytestmark = [pytest.mark.e2e]


class InventoryApp(ManagedProcess):
    """examples/inventory/app.py as a child process, ready when /healthz answers 200."""

    name = "inventory"

    def __init__(self, log_dir: Path, redis_addr: str, *args: str) -> None:
        super().__init__(log_dir)
        self.redis_addr = redis_addr
        self.args = args
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def choose_ports(self) -> None:
        self.port = free_port()

    def command(self) -> list[str]:
        return [
            sys.executable, str(EXAMPLE / "app.py"), "--port", str(self.port),
            "--redis", f"redis://{self.redis_addr}/0", *self.args,
        ]  # fmt: skip

    def is_ready(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1.0)
        try:
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        finally:
            conn.close()


@dataclass
class Cache:
    """redis-server behind a chaos proxy named `cache`."""

    addr: str  # the proxy's host:port, what the service is given
    chaos: ChaosClient

    def slow_down(self, latency_ms: int) -> None:
        self.chaos.add_toxic("cache", "latency", attributes={"latency": latency_ms})


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Cache]:
    with RedisServer(tmp_path) as redis, ChaosServerProcess(tmp_path) as chaos_proc:
        assert isinstance(redis, RedisServer) and isinstance(chaos_proc, ChaosServerProcess)
        chaos = ChaosClient(chaos_proc.url)
        proxy = chaos.create_proxy("cache", upstream=f"127.0.0.1:{redis.port}")
        yield Cache(proxy.listen, chaos)


@dataclass(frozen=True)
class Answer:
    status: int
    retry_after: str | None
    body: str
    elapsed_s: float


async def _burst(url: str, count: int) -> tuple[list[Answer], float]:
    """`count` concurrent GET /items/N; the answers, and the most requests the service
    reported in flight (its /metrics, polled while the burst is out)."""
    peak = 0.0
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(i: int) -> Answer:
            start = time.monotonic()
            async with session.get(f"{url}/items/{i}") as resp:
                body = await resp.text()
            return Answer(
                resp.status, resp.headers.get("Retry-After"), body, time.monotonic() - start
            )

        async def watch() -> None:
            nonlocal peak
            while True:
                async with session.get(f"{url}/metrics") as resp:
                    found = re.search(r"^inventory_inflight (\S+)$", await resp.text(), re.M)
                assert found is not None
                peak = max(peak, float(found.group(1)))
                await asyncio.sleep(0.02)

        watcher = asyncio.create_task(watch())
        try:
            answers = await asyncio.gather(*(one(i) for i in range(1, count + 1)))
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
    return answers, peak


@pytest.mark.integration
@pytest.mark.timeout(60)
async def test_protected_answers_503_with_retry_after_instead_of_waiting_on_a_slow_redis(
    cache: Cache, tmp_path: Path
) -> None:
    args = ("--mode", "protected", "--pool", "4", "--limit", "4", "--redis-timeout-ms", "500")
    with InventoryApp(tmp_path, cache.addr, *args) as app:
        assert isinstance(app, InventoryApp)
        cache.slow_down(5_000)  # no answer from Redis within the service's 500 ms deadline
        answers, peak = await _burst(app.url, 20)
    # nobody waited for Redis: a 200 could only come 5 s later
    assert [a.status for a in answers] == [503] * 20, answers
    assert all(a.retry_after == "1" for a in answers), answers
    reasons = {a.body for a in answers}
    assert reasons <= {'{"error": "concurrency_limit"}', '{"error": "redis_timeout"}'}, reasons
    assert '{"error": "concurrency_limit"}' in reasons  # the limit turned requests away
    assert peak <= 4  # never more in flight than the limit


@pytest.mark.integration
@pytest.mark.timeout(60)
async def test_naive_admits_everything_and_queues_it_behind_its_redis_pool(
    cache: Cache, tmp_path: Path
) -> None:
    with InventoryApp(tmp_path, cache.addr, "--mode", "naive", "--pool", "4") as app:
        assert isinstance(app, InventoryApp)
        cache.slow_down(400)
        answers, peak = await _burst(app.url, 16)
    assert [a.status for a in answers] == [200] * 16, answers  # all served, eventually
    assert peak == 16  # all of them in flight at once, 4 on Redis, 12 waiting for a connection
    # 16 requests through 4 connections at >= 400 ms each: the last waited 3 rounds first
    assert max(a.elapsed_s for a in answers) >= 4 * 0.4 * 0.95


def test_example_imports_nothing_from_spikegate() -> None:
    for path in EXAMPLE.glob("*.py"):
        text = path.read_text()
        assert "spikegate" not in re.sub(r'""".*?"""|#.*', "", text, flags=re.S), path


# --- under the gate ---------------------------------------------------------------------------
def _short_scenario(variant: str, tmp_path: Path) -> Path:
    """examples/inventory/VARIANT.toml, shortened to about 30 s: the same load and fault,
    the spike and the fault both 8 s long (paths made absolute: the copy lives elsewhere)."""
    data = tomllib.loads((EXAMPLE / f"{variant}.toml").read_text())
    data["target"]["cwd"] = str(EXAMPLE)
    data["load"].update(
        locustfile=str(EXAMPLE / "locustfile.py"),
        duration_s=30,
        warmup_s=3,
        spike_at_s=10,
        spike_for_s=8,
    )
    (fault,) = data["faults"]
    fault.update(at_s=10, for_s=8)
    data["phases"]["recovery_s"] = 6
    path = tmp_path / f"{variant}.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def _gate(variant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, Path]:
    # the scenario starts the service with `python`: this interpreter's, as in an active venv
    monkeypatch.setenv(
        "PATH", os.pathsep.join((str(Path(sys.executable).parent), os.environ["PATH"]))
    )
    run_dir = tmp_path / "run"
    proc = spikegate(
        ["run", str(_short_scenario(variant, tmp_path)), "--no-live", "--out", str(run_dir)]
    )
    code, out = finish(proc, 110)
    assert leftovers(run_dir, proc.pid) == []
    return code, out, run_dir


def _statuses(run_dir: Path) -> dict[tuple[str, str], str]:
    report = json.loads((run_dir / "report.json").read_text())
    return {(v["name"], v["phase"]): v["status"] for v in report["verdicts"]}


@pytest.mark.timeout(120)
def test_naive_inventory_fails_the_gate_naming_what_its_missing_protection_breaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, run_dir = _gate("naive", tmp_path, monkeypatch)
    assert code == 1, out
    statuses = _statuses(run_dir)
    # queued behind the Redis pool until the clients' timeout: failures, slow admissions
    assert statuses[("no_unexpected_errors", "stress")] == "fail", out
    assert statuses[("graceful_degradation", "stress")] == "fail", out
    assert statuses[("bounded_resources", "run")] == "fail", out  # inventory_inflight > 16
    assert statuses[("steady_state", "baseline")] == "pass", out  # fine until the spike
    summary = (run_dir / "summary.md").read_text()
    assert "| no_unexpected_errors | stress | **FAIL** |" in summary


@pytest.mark.timeout(120)
def test_protected_inventory_passes_the_gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, run_dir = _gate("protected", tmp_path, monkeypatch)
    assert code == 0, out
    statuses = _statuses(run_dir)
    assert "fail" not in statuses.values() and "inconclusive" not in statuses.values(), statuses
    for verdict in ("no_unexpected_errors", "graceful_degradation", "time_to_detect"):
        assert statuses[(verdict, "stress")] == "pass", out
    assert statuses[("bounded_resources", "run")] == "pass", out
    assert statuses[("time_to_recover", "recovery")] == "pass", out


@pytest.mark.timeout(90)
def test_the_init_starter_gates_a_running_service_as_written(tmp_path: Path) -> None:
    """`spikegate init --url URL` then `spikegate run spikegate.toml` against a plain
    http.server: exit 0 (timings shortened with --set; the files themselves unchanged)."""
    port = free_port()
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("hello\n")
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=site,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        init = spikegate(["init", str(tmp_path / "svc"), "--url", url])
        code, out = finish(init, 30)
        assert code == 0, out
        # shorter, at twice the rates, so that each phase still has the samples it needs
        shorter = ["load.duration_s=22", "load.warmup_s=3", "load.spike_at_s=8",
                   "load.spike_for_s=5", "phases.recovery_s=4", "load.base_rps=20",
                   "load.peak_rps=60"]  # fmt: skip
        run_dir = tmp_path / "run"
        args = ["run", str(tmp_path / "svc" / "spikegate.toml"), "--no-live", "--out", str(run_dir)]
        proc = spikegate([*args, *(x for s in shorter for x in ("--set", s))])
        code, out = finish(proc, 80)
        assert code == 0, out
        statuses = _statuses(run_dir)
        assert statuses[("no_unexpected_errors", "stress")] == "pass"
        assert statuses[("graceful_degradation", "stress")] == "pass"
        assert leftovers(run_dir, proc.pid) == []
    finally:
        server.terminate()
        server.wait(10)
