"""The client wrapper: one per-instance handle on a Toxiproxy-compatible server.

toxiproxy-python keeps the server's host and port in class attributes of its ``APIConsumer``,
so two servers cannot be used at once through it. Each ``ChaosClient`` builds its own
subclass of that consumer bound to its own URL, so instances never share state::

    ChaosClient ──_call()──> _BoundConsumer(APIConsumer) ──requests──> server
                    │
                    └── the only place library / requests errors become chaos.errors

What the library lacks (toxic update, proxy update, populate, a parsed version) goes through
the same consumer and the same boundary.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import requests
from toxiproxy import api as _toxiproxy_api
from toxiproxy import exceptions as _toxiproxy_exc

from spikegate.chaos.errors import BadResponse, ChaosError, ChaosUnavailable, error_for_status

__all__ = ["STREAMS", "ChaosClient", "ProxyInfo", "ToxicInfo"]

STREAMS: Final = ("upstream", "downstream")
_DEFAULT_PORT: Final = 8474


@dataclass(frozen=True)
class ToxicInfo:
    """A toxic as the server reports it."""

    name: str
    type: str
    stream: str
    toxicity: float
    attributes: Mapping[str, int] = field(default_factory=dict, hash=False)

    @classmethod
    def from_json(cls, body: Any) -> ToxicInfo:
        try:
            return cls(
                name=str(body["name"]),
                type=str(body["type"]),
                stream=str(body.get("stream") or "downstream"),
                toxicity=float(body.get("toxicity", 1.0)),
                attributes=dict(body.get("attributes") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadResponse(f"not a toxic object: {body!r}") from exc


@dataclass(frozen=True)
class ProxyInfo:
    """A proxy as the server reports it; ``listen`` is the bound ``host:port``."""

    name: str
    listen: str
    upstream: str
    enabled: bool
    toxics: tuple[ToxicInfo, ...] = ()

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @classmethod
    def from_json(cls, body: Any) -> ProxyInfo:
        try:
            return cls(
                name=str(body["name"]),
                listen=str(body["listen"]),
                upstream=str(body["upstream"]),
                enabled=bool(body["enabled"]),
                toxics=tuple(ToxicInfo.from_json(t) for t in body.get("toxics") or ()),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadResponse(f"not a proxy object: {body!r}") from exc


def _parse_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"url must look like http://HOST:PORT (got {url!r})")
    try:
        port = parts.port or _DEFAULT_PORT
    except ValueError as exc:
        raise ValueError(f"url has an invalid port, use 1-65535 (got {url!r})") from exc
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"url must have no path, query or fragment (got {url!r})")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return host, port


def _require_name(param: str, value: object) -> str:
    if not isinstance(value, str) or not value or "/" in value:
        raise ValueError(f"{param} must be a non-empty string without '/' (got {value!r})")
    return value


def _require_stream(stream: object) -> str:
    if stream not in STREAMS:
        raise ValueError(f"stream must be 'upstream' or 'downstream' (got {stream!r})")
    return str(stream)


def _require_toxicity(toxicity: object) -> float:
    ok = isinstance(toxicity, int | float) and not isinstance(toxicity, bool)
    if not ok or not 0.0 <= float(toxicity) <= 1.0:  # type: ignore[arg-type]
        raise ValueError(f"toxicity must be a number in [0, 1] (got {toxicity!r})")
    return float(toxicity)  # type: ignore[arg-type]


def _require_attributes(attributes: object) -> dict[str, int]:
    if not isinstance(attributes, Mapping):
        raise ValueError(f"attributes must be a mapping of name -> int (got {attributes!r})")
    for key, value in attributes.items():
        if not isinstance(key, str) or not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"attributes[{key!r}] must be an integer (got {value!r})")
    return dict(attributes)


def _error_message(content: object) -> str:
    text = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return text.strip()


class ChaosClient:
    """A Toxiproxy API client bound to one server URL, with request timeouts."""

    def __init__(self, url: str, *, timeout_s: float = 2.0) -> None:
        if not isinstance(timeout_s, int | float) or not (0 < timeout_s < math.inf):
            raise ValueError(f"timeout_s must be a positive number of seconds (got {timeout_s!r})")
        host, port = _parse_url(url)
        self._url = f"http://{host}:{port}"
        self._timeout_s = float(timeout_s)
        # A subclass per instance holds this instance's host/port; the library's own class
        # attributes (and every other instance) stay untouched.
        self._consumer: type[Any] = type(
            "_BoundConsumer", (_toxiproxy_api.APIConsumer,), {"host": host, "port": port}
        )

    @property
    def url(self) -> str:
        return self._url

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    def __repr__(self) -> str:
        return f"ChaosClient({self._url!r}, timeout_s={self._timeout_s})"

    # -- the one boundary ----------------------------------------------------------------

    def _call(self, method: str, path: str, body: object = None) -> Any:
        """Send one request; return the decoded JSON body (None when empty)."""
        kwargs: dict[str, Any] = {"timeout": self._timeout_s}
        if body is not None:
            kwargs["json"] = body
        try:
            if method == "GET":
                response = self._consumer.get(path, **kwargs)
            elif method == "DELETE":
                response = self._consumer.delete(path, **kwargs)
            else:
                response = self._consumer.post(path, **kwargs)
        except _toxiproxy_exc.ProxyExists as exc:
            raise self._api_error(409, exc, method, path) from None
        except _toxiproxy_exc.NotFound as exc:
            raise self._api_error(404, exc, method, path) from None
        except _toxiproxy_exc.InvalidToxic as exc:
            raise self._api_error(400, exc, method, path) from None
        except requests.Timeout as exc:
            raise ChaosUnavailable(
                f"{self._url} did not answer {method} {path} within {self._timeout_s} s"
            ) from exc
        except requests.ConnectionError as exc:
            raise ChaosUnavailable(f"cannot reach {self._url} ({method} {path}): {exc}") from exc
        except requests.RequestException as exc:
            raise ChaosError(f"{method} {path} on {self._url} failed: {exc}") from exc
        status = int(response.status_code)
        if status >= 400:
            raise error_for_status(
                status, _error_message(response.content), method=method, path=path
            )
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            text = response.text.strip()
            if path == "/version":
                return text  # old servers answer the version as plain text
            raise BadResponse(f"{method} {path}: body is not JSON: {text[:200]!r}") from None

    @staticmethod
    def _api_error(status: int, exc: Exception, method: str, path: str) -> ChaosError:
        content = exc.args[0] if exc.args else b""
        return error_for_status(status, _error_message(content), method=method, path=path)

    # -- server ------------------------------------------------------------------------

    def version(self) -> str:
        body = self._call("GET", "/version")
        if isinstance(body, dict) and isinstance(body.get("version"), str):
            return str(body["version"])
        if isinstance(body, str) and body:
            return body
        raise BadResponse(f"GET /version: unexpected body {body!r}")

    def wait_ready(self, timeout_s: float = 10.0) -> str:
        """Poll ``/version`` until the server answers; return the version."""
        if not isinstance(timeout_s, int | float) or not (0 < timeout_s < math.inf):
            raise ValueError(f"timeout_s must be a positive number of seconds (got {timeout_s!r})")
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.version()
            except ChaosUnavailable as exc:
                if time.monotonic() >= deadline:
                    raise ChaosUnavailable(
                        f"{self._url} not ready after {timeout_s} s: {exc}"
                    ) from exc
            time.sleep(0.05)

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        self._call("POST", "/reset")

    def is_clean(self) -> bool:
        """True when every proxy is enabled and no proxy has a toxic."""
        return all(p.enabled and not p.toxics for p in self.proxies().values())

    # -- proxies -----------------------------------------------------------------------

    def proxies(self) -> dict[str, ProxyInfo]:
        body = self._call("GET", "/proxies")
        if not isinstance(body, dict):
            raise BadResponse(f"GET /proxies: expected an object, got {body!r}")
        return {name: ProxyInfo.from_json(p) for name, p in body.items()}

    def create_proxy(
        self, name: str, upstream: str, listen: str = "127.0.0.1:0", enabled: bool = True
    ) -> ProxyInfo:
        body = {
            "name": _require_name("name", name),
            "upstream": _require_name("upstream", upstream),
            "listen": _require_name("listen", listen),
            "enabled": bool(enabled),
        }
        return ProxyInfo.from_json(self._call("POST", "/proxies", body))

    def populate(self, proxies: Sequence[Mapping[str, object]]) -> list[ProxyInfo]:
        """Create or replace many proxies at once; identical existing ones keep their toxics."""
        if isinstance(proxies, str | bytes) or not isinstance(proxies, Sequence):
            raise ValueError("proxies must be a list of {name, upstream, listen?, enabled?}")
        entries: list[dict[str, object]] = []
        for i, proxy in enumerate(proxies):
            if not isinstance(proxy, Mapping):
                raise ValueError(f"proxies[{i}] must be a mapping (got {proxy!r})")
            entries.append(dict(proxy))
        body = self._call("POST", "/populate", entries)
        items = body.get("proxies") if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise BadResponse(f"POST /populate: unexpected body {body!r}")
        return [ProxyInfo.from_json(p) for p in items]

    def get_proxy(self, name: str) -> ProxyInfo:
        path = f"/proxies/{_require_name('name', name)}"
        return ProxyInfo.from_json(self._call("GET", path))

    def update_proxy(
        self,
        name: str,
        *,
        listen: str | None = None,
        upstream: str | None = None,
        enabled: bool | None = None,
    ) -> ProxyInfo:
        body: dict[str, object] = {}
        if listen is not None:
            body["listen"] = _require_name("listen", listen)
        if upstream is not None:
            body["upstream"] = _require_name("upstream", upstream)
        if enabled is not None:
            body["enabled"] = bool(enabled)
        if not body:
            raise ValueError("update_proxy needs at least one of listen, upstream, enabled")
        path = f"/proxies/{_require_name('name', name)}"
        return ProxyInfo.from_json(self._call("POST", path, body))

    def set_enabled(self, name: str, enabled: bool) -> ProxyInfo:
        return self.update_proxy(name, enabled=enabled)

    def delete_proxy(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{_require_name('name', name)}")

    # -- toxics ------------------------------------------------------------------------

    def toxics(self, proxy: str) -> list[ToxicInfo]:
        body = self._call("GET", f"/proxies/{_require_name('proxy', proxy)}/toxics")
        if not isinstance(body, list):
            raise BadResponse(f"GET toxics of {proxy}: expected a list, got {body!r}")
        return [ToxicInfo.from_json(t) for t in body]

    def get_toxic(self, proxy: str, name: str) -> ToxicInfo:
        path = f"/proxies/{_require_name('proxy', proxy)}/toxics/{_require_name('name', name)}"
        return ToxicInfo.from_json(self._call("GET", path))

    def add_toxic(
        self,
        proxy: str,
        type: str,
        *,
        name: str | None = None,
        stream: str = "downstream",
        toxicity: float = 1.0,
        attributes: Mapping[str, int] | None = None,
    ) -> ToxicInfo:
        body: dict[str, object] = {
            "type": _require_name("type", type),
            "stream": _require_stream(stream),
            "toxicity": _require_toxicity(toxicity),
            "attributes": _require_attributes(attributes or {}),
        }
        if name is not None:
            body["name"] = _require_name("name", name)
        path = f"/proxies/{_require_name('proxy', proxy)}/toxics"
        return ToxicInfo.from_json(self._call("POST", path, body))

    def update_toxic(
        self,
        proxy: str,
        name: str,
        *,
        attributes: Mapping[str, int] | None = None,
        toxicity: float | None = None,
    ) -> ToxicInfo:
        """Change a toxic in place; attributes not given keep their values."""
        body: dict[str, object] = {}
        if attributes is not None:
            body["attributes"] = _require_attributes(attributes)
        if toxicity is not None:
            body["toxicity"] = _require_toxicity(toxicity)
        if not body:
            raise ValueError("update_toxic needs attributes or toxicity")
        path = f"/proxies/{_require_name('proxy', proxy)}/toxics/{_require_name('name', name)}"
        return ToxicInfo.from_json(self._call("POST", path, body))

    def remove_toxic(self, proxy: str, name: str) -> None:
        path = f"/proxies/{_require_name('proxy', proxy)}/toxics/{_require_name('name', name)}"
        self._call("DELETE", path)
