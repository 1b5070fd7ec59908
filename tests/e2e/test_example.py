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
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from spikegate.chaos.client import ChaosClient
from spikegate.harness.services import ManagedProcess, RedisServer, free_port
from spikegate.harness.stack import ChaosServerProcess
from tests.e2e.conftest import ROOT

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
