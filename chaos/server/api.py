"""The Toxiproxy 2.x HTTP API: routing, handlers and upstream's response shapes.

Success bodies are compact JSON (``application/json``); errors are upstream's
``{"error": ..., "status": ...}`` plus a newline as ``text/plain; charset=utf-8``. Mutations
are serialised by one lock and never wait on proxied data.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import time
import urllib.parse
from collections.abc import Awaitable, Callable

from . import gojson, metrics, schema
from .errors import TOXIC_NOT_FOUND, ApiError
from .httpd import Request, Response
from .proxy import Proxy, ProxyCollection

log = logging.getLogger("chaos.server")

VERSION = "2.12.0"
JSON = "application/json"

Params = list[str]
Route = Callable[["Api", Request, Params], Awaitable[Response]]


def _json(value: object, status: int = 200) -> Response:
    return Response(status, gojson.encode(value), JSON)


def error_response(status: int, message: str) -> Response:
    body = gojson.encode({"error": message, "status": status}) + b"\n"
    return Response(
        status, body, "text/plain; charset=utf-8", [("X-Content-Type-Options", "nosniff")]
    )


def _proxy_json(proxy: Proxy) -> dict[str, object]:
    return schema.proxy_json(
        proxy.name, proxy.listen, proxy.upstream, proxy.enabled, proxy.toxics()
    )


class _RequestIds:
    """xid-like ids (time, machine, pid, counter), 20 characters of base32hex."""

    _ALPHABET = "0123456789abcdefghijklmnopqrstuv"

    def __init__(self) -> None:
        self._machine = random.Random().getrandbits(24)
        self._counter = itertools.count(random.Random().getrandbits(24))

    def next(self) -> str:
        raw = (
            (int(time.time()) & 0xFFFFFFFF) << 64
            | self._machine << 40
            | (os.getpid() & 0xFFFF) << 24
            | next(self._counter) & 0xFFFFFF
        )
        raw <<= 4  # 96 bits -> 100 bits, 20 characters of 5 bits
        return "".join(self._ALPHABET[(raw >> shift) & 31] for shift in range(95, -5, -5))


class Api:
    def __init__(self, proxies: ProxyCollection) -> None:
        self.proxies = proxies
        self._lock = asyncio.Lock()
        self._ids = _RequestIds()

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        response = await self._dispatch(request)
        log.info(
            "api: %s %s -> %d (%.1f ms)",
            request.method,
            request.path,
            response.status,
            (time.perf_counter() - started) * 1000,
        )
        return response

    async def _dispatch(self, request: Request) -> Response:
        parts = urllib.parse.unquote(request.path).split("/")
        shape = tuple(p if i % 2 else "{}" for i, p in enumerate(parts[1:], start=1))
        params = [p for i, p in enumerate(parts[1:], start=1) if not i % 2]
        methods = _ROUTES.get(shape)
        if methods is None or any(not p for p in params):
            return Response(
                404, b"404 page not found\n", "text/plain; charset=utf-8",
                [("X-Content-Type-Options", "nosniff")],
            )  # fmt: skip
        route = methods.get(request.method)
        if route is None:
            return Response(405)
        request_id = ("X-Toxiproxy-Request-Id", self._ids.next())
        if request.headers.get("user-agent", "").startswith("Mozilla/"):
            response = Response(
                403, b"User agent not allowed\n", "text/plain; charset=utf-8",
                [("X-Content-Type-Options", "nosniff")],
            )  # fmt: skip
        else:
            try:
                response = await route(self, request, params)
            except ApiError as exc:
                response = error_response(exc.status, exc.message)
        response.headers.append(request_id)
        return response

    # --- handlers ------------------------------------------------------------------------------
    async def version(self, request: Request, params: Params) -> Response:
        body = f'{{"version": "{VERSION}"}}\n'.encode()
        return Response(200, body, "application/json;charset=utf-8")

    async def metrics(self, request: Request, params: Params) -> Response:
        return Response(200, metrics.render(self.proxies.proxies.values()), metrics.CONTENT_TYPE)

    async def reset(self, request: Request, params: Params) -> Response:
        async with self._lock:
            await self.proxies.reset()
        return Response(204)

    async def proxy_index(self, request: Request, params: Params) -> Response:
        return _json({name: _proxy_json(p) for name, p in self.proxies.proxies.items()})

    async def proxy_create(self, request: Request, params: Params) -> Response:
        spec = schema.parse_proxy_create(request.body)
        async with self._lock:
            proxy = await self.proxies.add(spec)
        return _json(_proxy_json(proxy), 201)

    async def populate(self, request: Request, params: Params) -> Response:
        specs = schema.parse_populate(request.body)
        done: list[Proxy] = []
        async with self._lock:
            try:
                for spec in specs:
                    done.append(await self.proxies.add_or_replace(spec))
            except ApiError as exc:  # upstream answers with the proxies created so far
                body = {
                    "error": exc.message,
                    "status": exc.status,
                    "proxies": [_proxy_json(p) for p in done],
                }
                return _json(body, exc.status)
        return _json({"proxies": [_proxy_json(p) for p in done]}, 201)

    async def proxy_show(self, request: Request, params: Params) -> Response:
        return _json(_proxy_json(self.proxies.get(params[0])))

    async def proxy_update(self, request: Request, params: Params) -> Response:
        async with self._lock:
            proxy = self.proxies.get(params[0])
            current = schema.ProxySpec(proxy.name, proxy.listen, proxy.upstream, proxy.enabled)
            spec = schema.parse_proxy_update(request.body, current)
            await self.proxies.update(proxy, spec)
        return _json(_proxy_json(proxy))

    async def proxy_delete(self, request: Request, params: Params) -> Response:
        async with self._lock:
            self.proxies.remove(params[0])
        return Response(204)

    async def toxic_index(self, request: Request, params: Params) -> Response:
        proxy = self.proxies.get(params[0])
        return _json([schema.toxic_json(t) for t in proxy.toxics()])

    async def toxic_create(self, request: Request, params: Params) -> Response:
        async with self._lock:
            proxy = self.proxies.get(params[0])
            wrapper = schema.parse_toxic_create(
                request.body, lambda name: proxy.find_toxic(name) is not None
            )
            proxy.add_toxic(wrapper)
        return _json(schema.toxic_json(wrapper))

    def _toxic(self, params: Params) -> tuple[Proxy, schema.ToxicWrapper]:
        proxy = self.proxies.get(params[0])
        wrapper = proxy.find_toxic(params[1])
        if wrapper is None:
            raise TOXIC_NOT_FOUND
        return proxy, wrapper

    async def toxic_show(self, request: Request, params: Params) -> Response:
        return _json(schema.toxic_json(self._toxic(params)[1]))

    async def toxic_update(self, request: Request, params: Params) -> Response:
        async with self._lock:
            proxy, wrapper = self._toxic(params)
            attributes, toxicity = schema.parse_toxic_update(request.body, wrapper)
            proxy.update_toxic(wrapper, attributes, toxicity)
        return _json(schema.toxic_json(wrapper))

    async def toxic_delete(self, request: Request, params: Params) -> Response:
        async with self._lock:
            proxy, wrapper = self._toxic(params)
            proxy.remove_toxic(wrapper)
        return Response(204)


# Path shape ("{}" = a name) -> method -> handler.
_ROUTES: dict[tuple[str, ...], dict[str, Route]] = {
    ("reset",): {"POST": Api.reset},
    ("version",): {"GET": Api.version},
    ("metrics",): {"GET": Api.metrics},
    ("populate",): {"POST": Api.populate},
    ("proxies",): {"GET": Api.proxy_index, "POST": Api.proxy_create},
    ("proxies", "{}"): {
        "GET": Api.proxy_show,
        "POST": Api.proxy_update,
        "PATCH": Api.proxy_update,
        "DELETE": Api.proxy_delete,
    },
    ("proxies", "{}", "toxics"): {"GET": Api.toxic_index, "POST": Api.toxic_create},
    ("proxies", "{}", "toxics", "{}"): {
        "GET": Api.toxic_show,
        "POST": Api.toxic_update,
        "PATCH": Api.toxic_update,
        "DELETE": Api.toxic_delete,
    },
}
