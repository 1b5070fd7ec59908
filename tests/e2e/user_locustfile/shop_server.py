"""The service under test for tests/e2e/test_user_locustfile.py (aiohttp, run as a script).

    python shop_server.py --port P [--redis HOST:PORT]

POST /login 200. GET /hello 200. GET /world: 200 "world", every 5th a 503 with
Retry-After: 1 (a designed rejection). GET /item?id=N: 200 "item N"; id 3 is a 429 with
Retry-After: 1, id 4 a 429 without it; id 8 answers 200 "item ?" (a wrong answer a
locustfile's check can catch). GET /healthz 200, GET /stats the counts by path. With
--redis, GET /item first reads the item from that Redis (a dependency behind a proxy),
with a 1 s deadline: past it, a 503 with Retry-After: 1.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json

from aiohttp import web
from redis.exceptions import RedisError


def make_app(redis_addr: str | None = None) -> web.Application:
    world = itertools.count(1)
    counts: dict[str, int] = {}

    @web.middleware
    async def count(request: web.Request, handler):  # type: ignore[no-untyped-def]
        if request.path not in ("/healthz", "/stats"):
            counts[request.path] = counts.get(request.path, 0) + 1
        return await handler(request)

    async def login(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"token": "t"})

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def world_(_request: web.Request) -> web.Response:
        if next(world) % 5 == 0:
            return web.Response(status=503, text="busy", headers={"Retry-After": "1"})
        return web.Response(text="world")

    store = None
    if redis_addr is not None:
        import redis.asyncio as aioredis

        host, port = redis_addr.rsplit(":", 1)
        store = aioredis.Redis(host=host, port=int(port), socket_timeout=2.0)

    async def item(request: web.Request) -> web.Response:
        item_id = request.query.get("id", "0")
        if store is not None:
            try:
                await asyncio.wait_for(store.get(f"item:{item_id}"), 1.0)
            except (TimeoutError, OSError, RedisError):
                return web.Response(status=503, text="store slow", headers={"Retry-After": "1"})
        if item_id == "3":
            return web.Response(status=429, text="slow down", headers={"Retry-After": "1"})
        if item_id == "4":
            return web.Response(status=429, text="slow down")
        if item_id == "8":
            return web.Response(text="item ?")
        return web.Response(text=f"item {item_id}")

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def stats(_request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(counts), content_type="application/json")

    app = web.Application(middlewares=[count])
    app.router.add_post("/login", login)
    app.router.add_get("/hello", hello)
    app.router.add_get("/world", world_)
    app.router.add_get("/item", item)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/stats", stats)
    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--redis", default=None, help="HOST:PORT of the item store")
    args = ap.parse_args()
    web.run_app(make_app(args.redis), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
