"""EdgeGate on a tiny inline app: the edge's 401/429 answered before the framework, with the
same bytes EdgeMiddleware sends, counted and timed exactly, and each request checked once."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from spikegate.target import edge_gate
from spikegate.target.backpressure.clock import FakeClock
from spikegate.target.config import PublisherConfig
from spikegate.target.edge import PUBLISHER_SCOPE_KEY, Edge, EdgeMiddleware, Rejections
from spikegate.target.metrics import Metrics

pytestmark = pytest.mark.timeout(10)


class _Spy:
    """Innermost layer: records every request that entered the framework."""

    def __init__(self, app: ASGIApp, seen: list[str]) -> None:
        self.app, self.seen = app, seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(scope["path"])
        await self.app(scope, receive, send)


def _app(*, gate: bool = True) -> tuple[Starlette, list[str], list[str]]:
    """(app, publishers the /bid route saw, paths that entered the framework)."""
    reached: list[str] = []
    entered: list[str] = []

    async def bid(request: Request) -> Response:
        reached.append(request.scope[PUBLISHER_SCOPE_KEY])
        return JSONResponse({}, headers={"X-Spikegate-Decision": "no_bid"})

    app = Starlette(routes=[Route("/bid", bid, methods=["POST"])])
    app.add_middleware(_Spy, seen=entered)
    app.add_middleware(EdgeMiddleware)
    app.state.metrics = Metrics()
    app.state.edge = Edge(
        {"p": PublisherConfig(api_key="k", rate_per_s=1, burst=2)}, clock=FakeClock()
    )
    if gate:
        edge_gate.install(app)
    return app, reached, entered


def _client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def _statuses(app: Starlette, n: int, key: str | None = "k") -> list[httpx.Response]:
    headers = {"X-Api-Key": key} if key else {}
    async with _client(app) as c:
        return [await c.post("/bid", headers=headers, content=b"{}") for _ in range(n)]


def assert_designed_429(resp: httpx.Response) -> None:
    """What the checker relies on for an edge rejection (harness layer.edge, outcomes)."""
    assert resp.status_code == 429
    assert resp.headers["x-spikegate-decision"] == "rate_limited"
    retry_after = resp.headers.get("retry-after", "")
    assert retry_after.isdigit() and int(retry_after) >= 1, retry_after
    assert resp.json()["decision"] == "rate_limited"
    assert int(resp.headers["content-length"]) == len(resp.content)


def assert_counted(metrics: Metrics, rejected: int) -> None:
    text = metrics.render().decode()
    lines = (
        'spikegate_requests_total{decision="rate_limited",route="/bid",status="429"}',
        'spikegate_decisions_total{layer="edge",reason="rate_limited"}',
        'spikegate_rejection_seconds_count{layer="edge"}',
    )
    for line in lines:
        assert f"{line} {float(rejected)}" in text, line


async def test_a_hot_publisher_gets_429_from_the_gate_before_the_framework() -> None:
    app, reached, entered = _app()
    responses = await _statuses(app, 4)
    assert [r.status_code for r in responses] == [200, 200, 429, 429]
    assert reached == ["p", "p"]  # the route ran for the admitted two only
    assert entered == ["/bid", "/bid"]  # the rejected two never entered the framework
    for resp in responses[2:]:
        assert_designed_429(resp)
    assert_counted(app.state.metrics, rejected=2)


async def test_the_bucket_is_charged_once_per_request_not_by_gate_and_middleware() -> None:
    """A double check would spend two tokens per admission: burst 2 would admit one."""
    app, reached, _ = _app()
    assert [r.status_code for r in await _statuses(app, 3)] == [200, 200, 429]
    assert reached == ["p", "p"]


async def test_gate_answers_are_byte_for_byte_the_middleware_answers() -> None:
    gated, _, _ = _app(gate=True)
    plain, _, _ = _app(gate=False)
    for key in ("k", None, "unknown"):
        ours = (await _statuses(gated, 3, key))[-1]
        theirs = (await _statuses(plain, 3, key))[-1]
        assert ours.status_code == theirs.status_code
        assert ours.headers.multi_items() == theirs.headers.multi_items()
        assert ours.content == theirs.content
    text = gated.state.metrics.render().decode()
    assert 'spikegate_decisions_total{layer="edge",reason="unauthorized"} 6.0' in text
    assert 'spikegate_rejection_seconds_count{layer="edge"} 1.0' in text  # 401s are not timed


async def test_other_paths_and_methods_pass_through_the_gate_untouched() -> None:
    app, _, entered = _app()
    async with _client(app) as c:
        wrong_method = await c.get("/bid", headers={"X-Api-Key": "k"})
        missing = await c.post("/elsewhere")
    assert wrong_method.status_code == 405
    assert missing.status_code == 404
    assert missing.headers["x-spikegate-decision"] == "not_found"
    assert entered == ["/bid", "/elsewhere"]


def test_rejections_cache_is_bounded_and_gives_fresh_header_lists() -> None:
    from spikegate.target.backpressure.decision import Decision

    cache = Rejections(max_entries=3)
    for i in range(10):
        cache.encoded(f"p{i}", Decision(False, "rate_limited", 1.0))
    assert len(cache._cache) <= 3
    status, headers, body = cache.encoded("p", Decision(False, "rate_limited", 2.5))
    assert status == 429
    assert (b"retry-after", b"3") in headers
    assert (b"content-length", str(len(body)).encode()) in headers


# -- the defects these tests catch: a mutant gate fails them -----------------------------------


def _mutant(app: Starlette, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    if name == "forgets_retry_after":
        real: Callable[..., tuple[int, tuple[tuple[bytes, bytes], ...], bytes]]
        real = Rejections.encoded

        def encoded(self: Rejections, pub_id: str | None, decision: object) -> object:
            status, headers, body = real(self, pub_id, decision)
            return status, tuple(h for h in headers if h[0] != b"retry-after"), body

        monkeypatch.setattr(Rejections, "encoded", encoded)
    elif name == "does_not_count":
        monkeypatch.setattr(app.state, "metrics", _Uncounted())


class _Uncounted(Metrics):
    """A gate that forgets to record: the rejection is answered but never observed."""

    def observe(self, route: str, status: int, decision: str, elapsed_s: float) -> None:
        if status != 429:
            super().observe(route, status, decision, elapsed_s)


@pytest.mark.parametrize("defect", ["forgets_retry_after", "does_not_count"])
async def test_a_broken_fast_path_is_caught(defect: str, monkeypatch: pytest.MonkeyPatch) -> None:
    app, _, _ = _app()
    _mutant(app, monkeypatch, defect)
    responses = await _statuses(app, 4)
    with pytest.raises(AssertionError):
        for resp in responses[2:]:
            assert_designed_429(resp)
        assert_counted(app.state.metrics, rejected=2)
