"""The reference ad server: `create_app(config)` builds it, the lifespan owns every resource.

    EdgeGate (POST /bid: auth + token bucket, 401/429 before the framework)   (edge_gate.py)
    EdgeMiddleware (decision header, metrics; the same checks if the gate is absent)
      POST /bid         -> Auction: limit -> Redis -> DSP fan-out -> winner    (auction.py)
      POST /impression  -> ImpressionLogger.offer: 202 acknowledged or 503 shed (impressions.py)
      GET  /healthz /readyz /metrics, and FastAPI's /docs and /openapi.json

Nothing is created at import time: Redis, the DSP session and breakers, the impression
logger, the metrics registry and the loop-lag monitor are built in the lifespan and kept
on `app.state`; `uvicorn --factory target.app:create_app_from_env` serves it.
"""

from __future__ import annotations

import asyncio
import email.message
import inspect
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from spikegate.contract.outcomes import DECISION_HEADER
from spikegate.target import edge_gate
from spikegate.target.auction import Auction, AuctionOutcome, make_limit, make_redis
from spikegate.target.backpressure.decision import ADMITTED, Decision
from spikegate.target.config import TargetConfig, load_config
from spikegate.target.dsp_client import DspClient
from spikegate.target.edge import ARRIVAL_SCOPE_KEY, PUBLISHER_SCOPE_KEY, Edge, EdgeMiddleware
from spikegate.target.edge import retry_after_header as _retry_after
from spikegate.target.impressions import ImpressionLogger
from spikegate.target.metrics import CONTENT_TYPE, LevelsCollector, LoopLagMonitor, Metrics
from spikegate.target.models import (
    BidRequest,
    BidResponse,
    ErrorBody,
    Impression,
    ImpressionAck,
)

_READY_TIMEOUT_S = 0.5
_Model = TypeVar("_Model", bound=BaseModel)
# Bodies are parsed by the routes themselves (`_parse_body`), so the spec is told about them.
_BODY_MODELS: tuple[type[BaseModel], ...] = (BidRequest, Impression)

_REJECTIONS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing or unknown X-Api-Key (`unauthorized`)"},
    429: {"model": ErrorBody, "description": "publisher over its rate (`rate_limited`)"},
    503: {
        "model": ErrorBody,
        "description": "overloaded: `bulkhead_full`, `redis_unavailable` (with Retry-After)",
    },
}


def _json(status: int, decision: str, body: Any, retry_after_s: float | None = None) -> Response:
    headers = {DECISION_HEADER: decision}
    if retry_after_s is not None:
        headers["Retry-After"] = _retry_after(Decision(False, decision, retry_after_s))
    if body is None:
        return Response(status_code=status, headers=headers)
    return Response(
        json.dumps(body).encode(),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _render(outcome: AuctionOutcome) -> Response:
    if outcome.status == 204:
        return _json(204, outcome.decision, None)
    body = outcome.body
    if body is None:
        body = {"decision": outcome.decision, "detail": outcome.detail}
    return _json(outcome.status, outcome.decision, body, outcome.retry_after_s)


def _lifespan(
    config: TargetConfig,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics = Metrics()
        lag = LoopLagMonitor(config.event_loop_lag_interval_s)
        redis = make_redis(config.redis_url, config.auction)
        dsps = DspClient(config.dsps, config.breaker, config.dsp_client)
        limit = make_limit(config.auction)
        logger = ImpressionLogger(config.impressions, bootstrap=config.kafka_bootstrap)
        app.state.config = config
        app.state.metrics = metrics
        app.state.edge = Edge(
            config.publishers, enabled=config.edge.enabled, max_keys=config.edge.max_keys
        )
        app.state.redis = redis
        auction = Auction(config.auction, redis, dsps, limit=limit)
        app.state.auction = auction
        app.state.impressions = logger
        metrics.registry.register(
            LevelsCollector(
                limit=lambda: limit if limit is not None else auction.unlimited,
                breakers=lambda: dsps.breakers,
                impression_stats=logger.stats,
                loop_lag=lag.snapshot,
                inflight_peak=auction.inflight_peak,
                permits=lambda: auction.permits,
            )
        )
        await dsps.start()
        await auction.warm_up()
        try:
            await logger.start()
            lag.start()
            yield
        finally:
            await lag.stop()
            try:
                await logger.stop()
            finally:
                await dsps.close()
                await redis.aclose(close_connection_pool=True)

    return lifespan


def create_app(config: TargetConfig) -> FastAPI:
    """The ad server for `config`; its resources come to life in the lifespan."""
    app = FastAPI(
        title="Spikegate reference ad server",
        version="0.1.0",
        description="An OpenRTB 2.x subset ad server that layers four backpressure patterns. "
        "Every response carries `X-Spikegate-Decision`.",
        lifespan=_lifespan(config),
        **_NO_TELEMETRY,
    )
    app.state.config = config  # before the lifespan too: `python -m spikegate.target` reads it
    app.add_middleware(EdgeMiddleware)
    edge_gate.install(app)  # 401/429 answered before any of FastAPI's layers

    @app.post(
        "/bid",
        status_code=200,
        response_model=BidResponse,
        responses={
            204: {"description": "no bid (`no_bid`, `breaker_open_fallback`)"},
            **_REJECTIONS,
        },
        openapi_extra={
            "parameters": [
                {
                    "name": "X-Api-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "title": "X-Api-Key"},
                }
            ],
            **_json_body(BidRequest),
        },
    )
    async def bid(request: Request) -> Response:
        """Run an auction: edge bucket -> concurrency limit -> Redis -> DSP fan-out."""
        body = await _parse_body(request, BidRequest)
        scope = request.scope
        auction: Auction = request.app.state.auction
        deadline = auction.deadline_ns(scope[ARRIVAL_SCOPE_KEY], body.tmax)
        return _render(await auction.run(body, scope[PUBLISHER_SCOPE_KEY], deadline))

    @app.post(
        "/impression",
        status_code=202,
        response_model=ImpressionAck,
        responses={503: {"model": ErrorBody, "description": "shed (Retry-After)"}},
        openapi_extra=_json_body(Impression),
    )
    async def impression(request: Request) -> Response:
        """Acknowledge a win notice (202) or shed it (503) before touching Kafka."""
        body = await _parse_body(request, Impression)
        logger: ImpressionLogger = request.app.state.impressions
        decision = logger.offer(body.model_dump())
        if decision.admitted:
            return _json(202, ADMITTED, {"impression_id": body.impression_id, "decision": ADMITTED})
        return _json(
            503,
            decision.reason,
            {"decision": decision.reason, "detail": "impression queue is shedding"},
            decision.retry_after_s,
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "Redis or Kafka unreachable"}})
    async def readyz(request: Request) -> Response:
        """Readiness: Redis answers PING and the Kafka bootstrap accepts a connection."""
        redis_ok, kafka_ok = await asyncio.gather(
            _redis_ok(request), _tcp_ok(request.app.state.config.kafka_bootstrap)
        )
        ok = redis_ok and kafka_ok
        body = {"status": "ready" if ok else "not_ready", "redis": redis_ok, "kafka": kafka_ok}
        return _json(200 if ok else 503, ADMITTED if ok else "not_ready", body)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Prometheus exposition of this app's registry."""
        return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)

    app.openapi = _openapi_with_bodies(app)  # type: ignore[method-assign]
    return app


# FastAPI >= 0.13x traces every request through OpenTelemetry when a provider is set, and
# asks for the global providers on every request when none is: a measurable share of a
# /bid here. The ad server reports through /metrics; older FastAPIs have no such option.
_NO_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


async def _parse_body(request: Request, model: type[_Model]) -> _Model:
    """The JSON body validated in one pass from the raw bytes (pydantic's JSON mode).

    FastAPI's own body handling decodes to dicts and then validates them, several times
    the cost on the hot path. Errors keep FastAPI's 422 shape: `loc` starts with "body",
    a body that is not JSON is `json_invalid`, one without a JSON content type is refused
    as not an object, as FastAPI does."""
    raw = await request.body()
    content_type = request.headers.get("content-type", "")
    if not _is_json(content_type):
        raise RequestValidationError(
            [
                {
                    "type": "model_attributes_type",
                    "loc": ("body",),
                    "msg": "Input should be a valid dictionary or object to extract fields "
                    "from (send Content-Type: application/json)",
                    "input": {},
                }
            ]
        )
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors: list[dict[str, Any]] = []
        for err in exc.errors(include_url=False):
            if err["type"] == "json_invalid":  # its input is the raw bytes: not echoed back
                err = {**err, "msg": "JSON decode error", "input": {}}
            errors.append({**err, "loc": ("body", *err["loc"])})
        raise RequestValidationError(errors) from None


def _is_json(content_type: str) -> bool:
    if content_type.startswith("application/json"):
        return True
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The `requestBody` a route that parses its own body declares in the spec."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def _openapi_with_bodies(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI's spec plus the schemas of the bodies the routes parse themselves."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=app.routes,
            )
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            for model in _BODY_MODELS:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
            app.openapi_schema = spec
        return app.openapi_schema

    return openapi


async def _redis_ok(request: Request) -> bool:
    try:
        async with asyncio.timeout(_READY_TIMEOUT_S):
            return bool(await request.app.state.redis.ping())
    except Exception:
        return False


async def _tcp_ok(bootstrap: str) -> bool:
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    try:
        async with asyncio.timeout(_READY_TIMEOUT_S):
            _, writer = await asyncio.open_connection(host or "127.0.0.1", int(port))
    except (OSError, ValueError, TimeoutError):
        return False
    writer.close()
    with suppress(OSError):
        await writer.wait_closed()
    return True


def create_app_from_env() -> FastAPI:
    """Zero-arg factory for `uvicorn --factory`: config from SPIKEGATE_TARGET_CONFIG + env.

    uvicorn's per-request access log is switched off unless `access_log = true`: at the
    rates the harness drives, logging every request costs more than the four layers do."""
    config = load_config()
    logging.getLogger("uvicorn.access").disabled = not config.access_log
    return create_app(config)
