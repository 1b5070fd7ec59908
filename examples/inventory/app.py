"""A small inventory service: aiohttp in front of Redis. It knows nothing about Spikegate.

    GET  /items/{id}   the item, read from Redis (a cache the service seeds at start-up)
    POST /orders       {"item_id": N, "qty": N}: one Redis transaction (stock, order stream)
    GET  /healthz      200 once the data is seeded (never touches Redis)
    GET  /metrics      Prometheus text: in-flight gauge, requests, rejections, durations

Two variants of the same code, chosen with --mode (or INVENTORY_MODE):

    naive       every request waits for a pooled Redis connection, however long it takes,
                and then for Redis, however slow it is: under a spike on a slow Redis the
                requests queue, latency climbs to the clients' timeout, and they give up.
    protected   a concurrency limit taken without waiting (full -> 503 + Retry-After at
                once), a deadline on every Redis call (-> 503 + Retry-After), and, with
                --rate-per-s, a token bucket in front (-> 429 + Retry-After).

    python app.py --port 8080 --redis redis://127.0.0.1:6379/0 --mode protected
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

ITEMS = 1000  # item ids 1..ITEMS exist; the locustfile asks for these

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Overloaded(Exception):
    """Redis did not answer in time (protected mode): the request gets a 503."""


class TokenBucket:
    """`rate_per_s` tokens a second, at most `burst` saved up; the clock is a parameter."""

    def __init__(
        self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.clock = clock
        self.tokens = float(burst)
        self.stamp = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate_per_s)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Metrics:
    """The service's own Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.inflight = Gauge(
            "inventory_inflight",
            "requests doing Redis work now (admitted and not yet answered)",
            registry=self.registry,
        )
        self.limit = Gauge(
            "inventory_inflight_limit",
            "the concurrency limit (0: none, the naive variant)",
            registry=self.registry,
        )
        self.requests = Counter(
            "inventory_requests",
            "requests answered, by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.rejections = Counter(
            "inventory_rejections",
            "designed rejections, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "inventory_request_duration_seconds",
            "time from arrival to answer, by route",
            ["route"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )


class Inventory:
    """The routes and the protection around them."""

    def __init__(self, args: argparse.Namespace, metrics: Metrics) -> None:
        self.protected = args.mode == "protected"
        self.redis_url: str = args.redis
        self.pool_size: int = args.pool
        self.limit: int = args.limit
        self.redis_timeout_s = args.redis_timeout_ms / 1000.0
        self.metrics = metrics
        self.slots = asyncio.Semaphore(self.limit) if self.protected else None
        self.bucket = (
            TokenBucket(args.rate_per_s, args.burst)
            if self.protected and args.rate_per_s > 0
            else None
        )
        # One pool of `pool` connections; a request that finds them all busy waits for one
        # (timeout=None: forever). The naive variant relies on that wait; the protected one
        # never gets there, since its limit is no larger than the pool.
        self.redis: aioredis.Redis = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                self.redis_url, max_connections=self.pool_size, timeout=None, decode_responses=True
            )
        )
        metrics.limit.set(self.limit if self.protected else 0)

    # --- lifecycle ------------------------------------------------------------------------
    async def seed(self, _app: web.Application) -> None:
        """Put items 1..ITEMS and their stock in Redis (idempotent), then open every pooled
        connection, so that no request pays for a connection's handshake later."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in range(1, ITEMS + 1):
                item = {"id": i, "name": f"item-{i}", "price_cents": 100 + (i * 37) % 5000}
                pipe.set(f"item:{i}", json.dumps(item))
                pipe.setnx(f"stock:{i}", 1_000_000)
            await pipe.execute()
        await asyncio.gather(*(self._hold_connection() for _ in range(self.pool_size)))

    async def _hold_connection(self) -> None:
        """Take one connection and keep it busy a moment, so that the pool opens another."""
        async with self.redis.client() as conn:
            await conn.ping()
            await asyncio.sleep(0.05)

    async def close(self, _app: web.Application) -> None:
        await self.redis.aclose()

    # --- protection -------------------------------------------------------------------------
    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        if name in ("/healthz", "/metrics"):
            return await handler(request)
        start = time.perf_counter()
        status = "500"  # unless an answer comes back: an exception is the framework's 500
        try:
            response = await self._admit(request, handler)
            status = str(response.status)
            return response
        finally:
            self.metrics.requests.labels(name, status).inc()
            self.metrics.duration.labels(name).observe(time.perf_counter() - start)

    async def _admit(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.bucket is not None and not self.bucket.take():
            return self._reject(429, "rate_limited")
        if self.slots is not None:
            if self.slots.locked():  # full: answer now instead of queueing behind it
                return self._reject(503, "concurrency_limit")
            await self.slots.acquire()  # free, so this does not suspend
        self.metrics.inflight.inc()
        try:
            return await handler(request)
        except Overloaded:
            return self._reject(503, "redis_timeout")
        except RedisError:
            if not self.protected:
                raise  # naive: the framework answers 500
            return self._reject(503, "redis_unavailable")
        finally:
            self.metrics.inflight.dec()
            if self.slots is not None:
                self.slots.release()

    def _reject(self, status: int, reason: str) -> web.Response:
        self.metrics.rejections.labels(reason).inc()
        return web.json_response({"error": reason}, status=status, headers={"Retry-After": "1"})

    async def _call(self, work: Awaitable[Any]) -> Any:
        """Await a Redis call: in protected mode within the deadline, else Overloaded."""
        if not self.protected:
            return await work
        try:
            async with asyncio.timeout(self.redis_timeout_s):
                return await work
        except TimeoutError:
            raise Overloaded from None

    # --- routes -----------------------------------------------------------------------------
    async def get_item(self, request: web.Request) -> web.Response:
        item_id = request.match_info["item_id"]
        if not item_id.isdigit():
            return web.json_response({"error": "item id must be a number"}, status=400)
        raw = await self._call(self.redis.get(f"item:{item_id}"))
        if raw is None:
            return web.json_response({"error": f"no item {item_id}"}, status=404)
        return web.Response(text=raw, content_type="application/json")

    async def post_order(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            item_id, qty = int(body["item_id"]), int(body.get("qty", 1))
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": 'expected {"item_id": N, "qty": N}'}, status=400)
        if not 1 <= item_id <= ITEMS or not 1 <= qty <= 100:
            return web.json_response({"error": "item_id 1..1000, qty 1..100"}, status=400)
        order_id = await self._call(self._place(item_id, qty))
        return web.json_response({"order_id": order_id, "item_id": item_id}, status=201)

    async def _place(self, item_id: int, qty: int) -> str:
        """Take the stock and append the order in one transaction (one round trip); the
        order's id is its id in the `orders` stream."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.decrby(f"stock:{item_id}", qty)
            pipe.xadd("orders", {"item_id": item_id, "qty": qty}, maxlen=100_000)
            _stock, order_id = await pipe.execute()
        return str(order_id)

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def metrics_page(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(args: argparse.Namespace) -> web.Application:
    inventory = Inventory(args, Metrics())
    app = web.Application(middlewares=[inventory.guard])
    app.router.add_get("/items/{item_id}", inventory.get_item)
    app.router.add_post("/orders", inventory.post_order)
    app.router.add_get("/healthz", inventory.healthz)
    app.router.add_get("/metrics", inventory.metrics_page)
    app.on_startup.append(inventory.seed)  # before the port opens: ready means seeded
    app.on_cleanup.append(inventory.close)
    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=int(env("PORT", "8080")))
    p.add_argument("--host", default=env("HOST", "127.0.0.1"))
    p.add_argument("--redis", default=env("REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--mode", choices=("naive", "protected"), default=env("INVENTORY_MODE", "naive"))
    p.add_argument("--pool", type=int, default=16, help="Redis connections (both modes)")
    p.add_argument("--limit", type=int, default=16, help="protected: requests in flight")
    p.add_argument("--redis-timeout-ms", type=float, default=250.0, help="protected")
    p.add_argument("--rate-per-s", type=float, default=0.0, help="protected: 0 = no bucket")
    p.add_argument("--burst", type=int, default=50, help="protected: token bucket size")
    args = p.parse_args(argv)
    if args.mode == "protected" and args.limit > args.pool:
        p.error(f"--limit ({args.limit}) must not exceed --pool ({args.pool})")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"inventory: {args.mode} on {args.host}:{args.port}, redis {args.redis}", flush=True)
    web.run_app(build_app(args), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
