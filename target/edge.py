"""The edge: the one pure-ASGI middleware every request crosses.

    request --> EdgeMiddleware --------------------------------------------> FastAPI routes
                 | POST /bid: X-Api-Key -> publisher (401 unknown/missing)
                 |            publisher's token bucket (429 + Retry-After)   [edge.enabled]
                 | every response: X-Spikegate-Decision (derived from the status when the
                 |            route set none), counted by route/status/decision, timed

Rejections here never touch the body, the router or pydantic: they are the cheapest
answers the server gives. Routes tell the edge which publisher is calling through
`scope["spikegate.publisher"]`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from spikegate.contract.outcomes import (
    DECISION_HEADER,
    ERROR,
    INVALID,
    NO_BID,
    NOT_FOUND,
    UNAUTHORIZED,
)
from spikegate.target.backpressure.clock import Clock, monotonic_ns
from spikegate.target.backpressure.decision import ADMITTED, RATE_LIMITED, Decision
from spikegate.target.backpressure.registry import BucketRegistry
from spikegate.target.config import PublisherConfig
from spikegate.target.metrics import Metrics

log = logging.getLogger("target.edge")

PUBLISHER_SCOPE_KEY = "spikegate.publisher"
ARRIVAL_SCOPE_KEY = "spikegate.arrival_ns"
API_KEY_HEADER = b"x-api-key"
_DECISION_HEADER = DECISION_HEADER.lower().encode()
_MAX_RETRY_AFTER_S = 3600  # a bucket that never refills still gets a finite Retry-After
_ROUTES = {"/bid": "/bid", "/impression": "/impression", "/metrics": "/metrics"}

UNKNOWN_KEY = Decision(False, UNAUTHORIZED)


def retry_after_header(decision: Decision) -> str:
    """Whole seconds >= 1, capped (a never-refilling bucket answers math.inf)."""
    if not math.isfinite(decision.retry_after_s):
        return str(_MAX_RETRY_AFTER_S)
    return str(min(_MAX_RETRY_AFTER_S, max(1, math.ceil(decision.retry_after_s))))


def rejection_headers(decision: Decision, *, retry: bool) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", b"application/json"),
        (_DECISION_HEADER, decision.reason.encode()),
    ]
    if retry:
        headers.append((b"retry-after", retry_after_header(decision).encode()))
    return headers


def api_key_of(scope: Scope) -> str | None:
    """The X-Api-Key header's value, or None (the first one, as sent)."""
    for name, value in scope["headers"]:
        if name == API_KEY_HEADER:
            return str(value.decode("latin-1"))
    return None


class Rejections:
    """The edge's 401 and 429 answers, encoded once per (publisher, reason, Retry-After).

    A rejection then builds no JSON and no header values: it sends two small messages. The
    bytes are exactly what `json.dumps` and `rejection_headers` give. Bounded: past
    `max_entries` the cache starts over (publishers come from the config, Retry-After is
    capped, so that is rare)."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._cache: dict[tuple[str | None, str, str], tuple[int, tuple[Any, ...], bytes]] = {}
        self._wired: dict[tuple[int, tuple[Any, ...], bytes], bytes] = {}  # entry -> head

    def encoded(
        self, pub_id: str | None, decision: Decision
    ) -> tuple[int, tuple[tuple[bytes, bytes], ...], bytes]:
        """(status, headers, body) of the answer to a rejected `decision` for `pub_id`."""
        retry = decision.reason == RATE_LIMITED
        key = (pub_id, decision.reason, retry_after_header(decision) if retry else "")
        entry = self._cache.get(key)
        if entry is None:
            status = 401 if decision.reason == UNAUTHORIZED else 429
            detail = (
                "missing or unknown X-Api-Key"
                if status == 401
                else f"publisher {pub_id} is over its rate; retry after the Retry-After"
            )
            body = json.dumps({"decision": decision.reason, "detail": detail}).encode()
            headers = rejection_headers(decision, retry=retry)
            headers.append((b"content-length", str(len(body)).encode()))
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            entry = self._cache[key] = (status, tuple(headers), body)
        return entry

    def wire(self, pub_id: str | None, decision: Decision) -> tuple[int, bytes, bytes]:
        """(status, status line and headers, body) of the same answer as HTTP/1.1 bytes, for
        lean_http; the head ends after the last header line, before the blank line."""
        entry = self.encoded(pub_id, decision)
        status, headers, body = entry
        wired = self._wired.get(entry)  # equal entries are equal answers
        if wired is None:
            wired = b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())
            wired += b"".join(b"%s: %s\r\n" % pair for pair in headers)
            if len(self._wired) >= self.max_entries:
                self._wired.clear()
            self._wired[entry] = wired
        return status, wired, body

    async def send(self, send: Send, pub_id: str | None, decision: Decision) -> int:
        """Answer a rejected `decision`; returns the status sent."""
        status, headers, body = self.encoded(pub_id, decision)
        # Fresh message dicts and header list: a send wrapper may append headers in place.
        await send({"type": "http.response.start", "status": status, "headers": list(headers)})
        await send({"type": "http.response.body", "body": body})
        return status


def state_rejections(state: Any) -> Rejections:
    """The app's `Rejections` (made on first use, so an app built without it still works)."""
    rejections: Rejections | None = getattr(state, "edge_rejections", None)
    if rejections is None:
        rejections = state.edge_rejections = Rejections()
    return rejections


class Edge:
    """API key -> publisher, then that publisher's token bucket.

    Publishers sharing a (rate, burst) share one `BucketRegistry` (one bucket per publisher
    inside it), so each publisher's bucket is its own and the registry stays bounded.
    """

    def __init__(
        self,
        publishers: Mapping[str, PublisherConfig],
        *,
        enabled: bool = True,
        max_keys: int = 10_000,
        clock: Clock = monotonic_ns,
    ) -> None:
        self.enabled = enabled
        registries: dict[tuple[float, int], BucketRegistry] = {}
        self._by_key: dict[str, tuple[str, BucketRegistry]] = {}
        for pub_id, pub in publishers.items():
            shape = (pub.rate_per_s, pub.burst)
            registry = registries.get(shape)
            if registry is None:
                registry = BucketRegistry(pub.rate_per_s, pub.burst, max_keys=max_keys, clock=clock)
                registries[shape] = registry
            self._by_key[pub.api_key] = (pub_id, registry)

    def route(self, api_key: str | None) -> tuple[str, BucketRegistry] | None:
        """(publisher id, the registry holding its bucket) for a known key, else None. Fixed
        for the life of the Edge, so a caller may keep it (lean_http keeps it per request
        head) and, while `enabled`, call `registry.take(publisher id)`: what `check` does."""
        return self._by_key.get(api_key) if api_key else None

    def check(self, api_key: str | None) -> tuple[str | None, Decision]:
        """(publisher id or None, decision): UNAUTHORIZED, RATE_LIMITED or admitted."""
        entry = self._by_key.get(api_key) if api_key else None
        if entry is None:
            return None, UNKNOWN_KEY
        pub_id, registry = entry
        if not self.enabled:
            return pub_id, Decision(True, ADMITTED)
        return pub_id, registry.decide(pub_id)


def _decision_for_status(status: int) -> str:
    if status == 204:
        return NO_BID
    if status < 400:
        return ADMITTED
    if status == 401:
        return UNAUTHORIZED
    if status == 404:
        return NOT_FOUND
    if status in (400, 405, 413, 415, 422):
        return INVALID
    return ERROR


class EdgeMiddleware:
    """Pure ASGI: auth + rate limit for /bid, the decision header and metrics for all."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope["app"].state
        metrics: Metrics = state.metrics
        route = _ROUTES.get(scope["path"], "other")

        # A request the EdgeGate in front already admitted carries its publisher: one check.
        if route == "/bid" and scope["method"] == "POST" and PUBLISHER_SCOPE_KEY not in scope:
            arrival_ns = time.monotonic_ns()  # tmax counts from here, before body parsing
            edge: Edge = state.edge
            pub_id, decision = edge.check(api_key_of(scope))
            if not decision.admitted:
                status = await state_rejections(state).send(send, pub_id, decision)
                metrics.observe(route, status, decision.reason, time.perf_counter() - started)
                return
            scope[PUBLISHER_SCOPE_KEY] = pub_id
            scope[ARRIVAL_SCOPE_KEY] = arrival_ns

        outcome: list[Any] = [500, None]  # status, decision

        async def send_with_decision(message: Message) -> None:
            if message["type"] == "http.response.start":
                status: int = message["status"]
                headers = list(message.get("headers", ()))
                decision = None
                for name, value in headers:
                    if name == _DECISION_HEADER:
                        decision = value.decode("latin-1")
                        break
                if decision is None:
                    decision = _decision_for_status(status)
                    headers.append((_DECISION_HEADER, decision.encode()))
                    message = {**message, "headers": headers}
                outcome[0], outcome[1] = status, decision
            await send(message)

        try:
            await self.app(scope, receive, send_with_decision)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if outcome[1] is None:
                await _send_json(
                    send,
                    500,
                    {"decision": ERROR, "detail": "internal error"},
                    rejection_headers(Decision(False, ERROR), retry=False),
                )
                outcome[0], outcome[1] = 500, ERROR
        metrics.observe(route, outcome[0], outcome[1] or ERROR, time.perf_counter() - started)


async def _send_json(
    send: Send, status: int, body: dict[str, str], headers: list[tuple[bytes, bytes]]
) -> None:
    payload = json.dumps(body).encode()
    headers = [*headers, (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
