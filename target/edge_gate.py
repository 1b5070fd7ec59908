"""The edge gate: the edge's 401s and 429s answered before FastAPI sees the request.

    uvicorn --> EdgeGate --(admitted, or anything but POST /bid)--> FastAPI's stack:
                  |                   ServerErrorMiddleware -> ... -> EdgeMiddleware -> routes
                  | POST /bid: X-Api-Key -> Edge.check (the publisher's token bucket)
                  '-> 401 / 429 from pre-encoded bytes (edge.Rejections), counted and timed

Why: a designed rejection must be cheap next to an admission, or overload spends the CPU on
saying no (issue 14: goodput at k x capacity is at most (1 - k r/a) / (1 - r/a)). The decision
itself is a microsecond; FastAPI's middleware layers, a JSON encode and a header list per
answer are what cost. The gate makes the same `Edge.check`, sends the same bytes, records the
same metrics (`Metrics.observe`: requests, decisions, rejection histogram) and hands an admitted
request on with its publisher and arrival time in the scope, which tells EdgeMiddleware the
check is done. Everything else (decision header on other answers, 500s, metrics of admitted
requests) stays in EdgeMiddleware.
"""

from __future__ import annotations

import time

from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from spikegate.target.edge import (
    ARRIVAL_SCOPE_KEY,
    PUBLISHER_SCOPE_KEY,
    Edge,
    api_key_of,
    state_rejections,
)
from spikegate.target.metrics import Metrics


class EdgeGate:
    """Pure ASGI, outermost: rejects at the edge without entering the framework."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != "/bid"
            or scope["method"] != "POST"
            or PUBLISHER_SCOPE_KEY in scope  # lean_http's protocol admitted it already
        ):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        arrival_ns = time.monotonic_ns()  # tmax counts from here, before body parsing
        state = scope["app"].state
        edge: Edge = state.edge
        pub_id, decision = edge.check(api_key_of(scope))
        if decision.admitted:
            scope[PUBLISHER_SCOPE_KEY] = pub_id
            scope[ARRIVAL_SCOPE_KEY] = arrival_ns
            await self.app(scope, receive, send)
            return
        status = await state_rejections(state).send(send, pub_id, decision)
        metrics: Metrics = state.metrics
        metrics.observe("/bid", status, decision.reason, time.perf_counter() - started)


def install(app: Starlette) -> None:
    """Put an EdgeGate in front of the whole stack `app` builds (FastAPI's error and body-limit
    layers included), inside `app.__call__`, which sets `scope["app"]` the gate reads."""
    build_stack = app.build_middleware_stack
    app.build_middleware_stack = lambda: EdgeGate(build_stack())  # type: ignore[method-assign]
