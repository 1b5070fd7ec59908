"""Helpers for the target's integration tests: a config over the real fixtures, an in-process
client that runs the app's lifespan, and small timing/metrics helpers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from spikegate.harness.services import DspBidders, KafkaBroker, RedisServer
from spikegate.target.app import create_app
from spikegate.target.config import TargetConfig

HOT_KEY = "key-hot"
COLD_KEY = "key-cold"
DECISION = "x-spikegate-decision"


def bid_body(
    *, publisher: str = "pub-hot", user: str = "user-1", tmax: int = 200, floor: float = 0.5
) -> dict[str, Any]:
    return {
        "id": f"req-{time.monotonic_ns()}",
        "imp": [{"id": "1", "bidfloor": floor}],
        "site": {"publisher": {"id": publisher}},
        "user": {"id": user},
        "tmax": tmax,
    }


ConfigFactory = Callable[..., TargetConfig]


@pytest.fixture
def make_config(
    redis_server: RedisServer,
    kafka_broker: KafkaBroker,
    dsp_bidders: DspBidders,
    tmp_path: Path,
) -> ConfigFactory:
    """Build a TargetConfig over the live fixtures; keyword sections override the defaults."""

    def build(**sections: Any) -> TargetConfig:
        data: dict[str, Any] = {
            "publishers": {
                "pub-hot": {"api_key": HOT_KEY, "rate_per_s": 1000, "burst": 1000},
                "pub-cold": {"api_key": COLD_KEY, "rate_per_s": 1000, "burst": 1000},
            },
            "dsps": [
                {"name": n, "url": u}
                for n, u in zip(dsp_bidders.names, dsp_bidders.urls, strict=True)
            ],
            "redis_url": redis_server.url,
            "kafka_bootstrap": kafka_broker.bootstrap,
            # generous: other test runs share the 2 cores; tests of Redis timeouts set their own
            "auction": {"redis_timeout_ms": 1000},
            "impressions": {"spool_dir": str(tmp_path / "spool"), "flush_timeout_s": 2.0},
        }
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return TargetConfig.model_validate(data)

    return build


@asynccontextmanager
async def serve(config: TargetConfig) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process with its lifespan running, behind an httpx client."""
    app = create_app(config)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://target", timeout=10.0
        ) as client:
            yield client


async def timed_bid(
    client: httpx.AsyncClient, body: dict[str, Any], key: str = HOT_KEY
) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    resp = await client.post("/bid", json=body, headers={"X-Api-Key": key})
    return resp, time.perf_counter() - started


async def set_dsp_mode(url: str, mode: str, delay_ms: int = 0) -> None:
    async with httpx.AsyncClient(timeout=5.0) as c:
        resp = await c.post(f"{url}/control", json={"mode": mode, "delay_ms": delay_ms})
        resp.raise_for_status()


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus exposition, or None when absent."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        metric, _, rest = sample.partition("{")
        if metric != name:
            continue
        if (
            want
            and rest.rstrip("}") != want
            and not all(f'{k}="{v}"' in rest for k, v in labels.items())
        ):
            continue
        return float(value)
    return None


async def gather_bids(
    client: httpx.AsyncClient, bodies: list[dict[str, Any]], key: str = HOT_KEY
) -> list[tuple[httpx.Response, float]]:
    return list(await asyncio.gather(*(timed_bid(client, b, key) for b in bodies)))


class Kit:
    """The helpers above, handed to tests as a fixture (test modules cannot import conftest)."""

    HOT_KEY = HOT_KEY
    COLD_KEY = COLD_KEY
    DECISION = DECISION
    bid_body = staticmethod(bid_body)
    serve = staticmethod(serve)
    timed_bid = staticmethod(timed_bid)
    gather_bids = staticmethod(gather_bids)
    set_dsp_mode = staticmethod(set_dsp_mode)
    metric_value = staticmethod(metric_value)


@pytest.fixture
def kit() -> type[Kit]:
    return Kit
