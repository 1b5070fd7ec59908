"""A tiny ad-server stand-in for the generator's tests (run as a script, aiohttp).

    python fake_target.py --port P [--delay-ms D]

POST /bid answers by a fixed cycle of 10 requests: 7 x 200 with a bid (decision admitted),
2 x 204 (no_bid), 1 x 429 (rate_limited), each after `delay_ms`; a missing X-Api-Key is a
401. POST /impression answers 202 (admitted). GET /healthz 200, GET /stats the counters.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json

from aiohttp import web

CYCLE = (200, 200, 204, 200, 200, 429, 200, 200, 204, 200)
DECISIONS = {200: "admitted", 204: "no_bid", 429: "rate_limited"}


def make_app(delay_ms: float) -> web.Application:
    counter = itertools.count()
    stats = {"bid": 0, "impression": 0}

    async def bid(request: web.Request) -> web.Response:
        body = await request.json()
        stats["bid"] += 1
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000.0)
        if not request.headers.get("X-Api-Key"):
            return web.json_response({"decision": "unauthorized"}, status=401)
        status = CYCLE[next(counter) % len(CYCLE)]
        headers = {"X-Spikegate-Decision": DECISIONS[status]}
        if status == 200:
            payload = {
                "id": body["id"],
                "seatbid": [{"seat": "dsp-1", "bid": [{"id": "b1", "impid": "1", "price": 1.5}]}],
                "cur": "USD",
            }
            return web.json_response(payload, headers=headers)
        if status == 204:
            return web.Response(status=204, headers=headers)
        return web.json_response({"decision": "rate_limited"}, status=429, headers=headers)

    async def impression(request: web.Request) -> web.Response:
        body = await request.json()
        stats["impression"] += 1
        return web.json_response(
            {"impression_id": body["impression_id"], "decision": "admitted"},
            status=202,
            headers={"X-Spikegate-Decision": "admitted"},
        )

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def get_stats(_request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(stats), content_type="application/json")

    app = web.Application()
    app.router.add_post("/bid", bid)
    app.router.add_post("/impression", impression)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/stats", get_stats)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    web.run_app(
        make_app(args.delay_ms), host="127.0.0.1", port=args.port, print=None, access_log=None
    )


if __name__ == "__main__":
    main()
