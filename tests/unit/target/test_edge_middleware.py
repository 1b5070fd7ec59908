"""EdgeMiddleware on a tiny inline app: the decision header on every response, rejections
before routing, and a JSON 500 (with its header) when a route crashes."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from spikegate.target.backpressure.clock import FakeClock
from spikegate.target.config import PublisherConfig
from spikegate.target.edge import PUBLISHER_SCOPE_KEY, Edge, EdgeMiddleware
from spikegate.target.metrics import Metrics


def _app() -> tuple[Starlette, list[str]]:
    reached: list[str] = []

    async def bid(request: Request) -> Response:
        reached.append(request.scope[PUBLISHER_SCOPE_KEY])
        return JSONResponse({}, headers={"X-Spikegate-Decision": "no_bid"}, status_code=200)

    async def plain(request: Request) -> Response:
        return Response(status_code=204)

    async def boom(request: Request) -> Response:
        raise RuntimeError("route bug")

    app = Starlette(
        routes=[
            Route("/bid", bid, methods=["POST"]),
            Route("/plain", plain),
            Route("/boom", boom),
        ]
    )
    app.add_middleware(EdgeMiddleware)
    app.state.metrics = Metrics()
    app.state.edge = Edge(
        {"p": PublisherConfig(api_key="k", rate_per_s=1, burst=2)}, clock=FakeClock()
    )
    return app, reached


async def _client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_route_decision_is_kept_and_missing_ones_are_derived() -> None:
    app, reached = _app()
    async with await _client(app) as c:
        kept = await c.post("/bid", headers={"X-Api-Key": "k"})
        derived = await c.get("/plain")
        missing = await c.get("/absent")
    assert kept.headers["x-spikegate-decision"] == "no_bid"
    assert reached == ["p"]
    assert derived.headers["x-spikegate-decision"] == "no_bid"  # a 204 is a no-bid
    assert missing.headers["x-spikegate-decision"] == "not_found"


async def test_rejections_happen_before_the_route_runs() -> None:
    app, reached = _app()
    async with await _client(app) as c:
        unauthorized = await c.post("/bid")
        statuses = [
            (await c.post("/bid", headers={"X-Api-Key": "k"})).status_code for _ in range(4)
        ]
    assert unauthorized.status_code == 401
    assert statuses == [200, 200, 429, 429]
    assert reached == ["p", "p"]
    text = app.state.metrics.render().decode()
    assert 'spikegate_decisions_total{layer="edge",reason="rate_limited"} 2.0' in text
    assert 'spikegate_rejection_seconds_count{layer="edge"} 2.0' in text


async def test_a_crashing_route_answers_json_500_with_decision_error() -> None:
    app, _ = _app()
    async with await _client(app) as c:
        resp = await c.get("/boom")
    assert resp.status_code == 500
    assert resp.headers["x-spikegate-decision"] == "error"
    assert resp.json()["decision"] == "error"
