"""Request bodies in, response bodies out: the API's JSON shapes, decoded the Go way.

Pure functions (no sockets, no event loop) so the rules are unit-tested directly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import gojson
from .errors import (
    BAD_REQUEST_BODY,
    INVALID_STREAM,
    INVALID_TOXIC_TYPE,
    MISSING_FIELD,
    TOXIC_EXISTS,
    ApiError,
)
from .toxics import GO_TYPE_NAMES, TOXICS, Checked, Toxic

STREAMS = ("upstream", "downstream")
_PROXY_FIELDS: dict[str, gojson.Kind] = {
    "name": "string",
    "listen": "string",
    "upstream": "string",
    "enabled": "bool",
}
_TOXIC_FIELDS: dict[str, gojson.Kind] = {
    "name": "string",
    "type": "string",
    "stream": "string",
    "toxicity": "float32",
    "attributes": "object",
}
_UPDATE_FIELDS: dict[str, gojson.Kind] = {"attributes": "object", "toxicity": "float32"}


@dataclass(frozen=True)
class ProxySpec:
    """What a client asked for: a proxy's name, addresses and whether it should run."""

    name: str
    listen: str
    upstream: str
    enabled: bool = True


@dataclass(eq=False)
class ToxicWrapper:
    """A toxic as the API knows it; identity matters (links key their per-toxic state by it)."""

    name: str
    type: str
    stream: str
    toxicity: float
    toxic: Toxic


def _decode(body: bytes) -> object:
    try:
        return gojson.decode(body)
    except gojson.GoJSONError as exc:
        raise BAD_REQUEST_BODY.wrap(str(exc)) from None


def _bind(value: object, fields: dict[str, gojson.Kind], go_type: str) -> dict[str, Any]:
    try:
        return gojson.bind(value, fields, go_type)
    except gojson.GoJSONError as exc:
        raise BAD_REQUEST_BODY.wrap(str(exc)) from None


def check_upstream(upstream: str) -> None:
    """Reject an upstream no dial could ever use (Go would accept it and fail per client)."""
    host, sep, port = upstream.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ApiError(
            400, f"invalid upstream {upstream!r}: must be host:port with a port between 1 and 65535"
        )


def parse_proxy_create(body: bytes) -> ProxySpec:
    fields = _bind(_decode(body), _PROXY_FIELDS, "Proxy")
    name, upstream = fields.get("name", ""), fields.get("upstream", "")
    if not name:
        raise MISSING_FIELD.wrap("name")
    if not upstream:
        raise MISSING_FIELD.wrap("upstream")
    check_upstream(upstream)
    return ProxySpec(name, fields.get("listen", ""), upstream, fields.get("enabled", True))


def parse_proxy_update(body: bytes, current: ProxySpec) -> ProxySpec:
    fields = _bind(_decode(body), _PROXY_FIELDS, "Proxy")
    upstream = fields.get("upstream", current.upstream)
    if upstream != current.upstream:
        check_upstream(upstream)
    return ProxySpec(
        current.name,
        fields.get("listen", current.listen),
        upstream,
        fields.get("enabled", current.enabled),
    )


def parse_populate(body: bytes) -> list[ProxySpec]:
    """All entries are validated before anything is created."""
    value = _decode(body)
    if value is None:
        return []
    if not isinstance(value, list) or isinstance(value, gojson.Object):
        raise BAD_REQUEST_BODY.wrap(
            f"json: cannot unmarshal {gojson.kind_of(value)} into Go value of type []Proxy"
        )
    specs = []
    for index, item in enumerate(value, start=1):
        fields = _bind(item, _PROXY_FIELDS, "Proxy")
        name, upstream = fields.get("name", ""), fields.get("upstream", "")
        if not name:
            raise MISSING_FIELD.wrap(f"name at proxy {index}")
        if not upstream:
            raise MISSING_FIELD.wrap(f"upstream at proxy {index}")
        check_upstream(upstream)
        specs.append(
            ProxySpec(name, fields.get("listen", ""), upstream, fields.get("enabled", True))
        )
    return specs


def _check_toxicity(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ApiError(400, f"invalid toxicity {value}: must be between 0 and 1")
    return value


def parse_toxic_create(body: bytes, exists: Callable[[str], bool]) -> ToxicWrapper:
    """Upstream's order of checks: body, stream, type, duplicate name, attributes."""
    fields = _bind(_decode(body), _TOXIC_FIELDS, "ToxicWrapper")
    stream = fields.get("stream", "downstream").lower()
    if stream not in STREAMS:
        raise INVALID_STREAM
    type_name = fields.get("type", "")
    name = fields.get("name") or f"{type_name}_{stream}"
    toxic_class = TOXICS.get(type_name)
    if toxic_class is None:
        raise INVALID_TOXIC_TYPE
    if exists(name):
        raise TOXIC_EXISTS
    toxic = toxic_class()
    set_attributes(toxic, type_name, fields.get("attributes"))
    toxicity = _check_toxicity(fields.get("toxicity", 1.0))
    return ToxicWrapper(name, type_name, stream, toxicity, toxic)


def parse_toxic_update(body: bytes, wrapper: ToxicWrapper) -> tuple[dict[str, int], float]:
    """New attribute values (merged over the current ones, validated) and toxicity."""
    fields = _bind(_decode(body), _UPDATE_FIELDS, "ToxicWrapper")
    candidate = dataclasses.replace(wrapper.toxic)  # type: ignore[type-var]
    set_attributes(candidate, wrapper.type, fields.get("attributes"))
    toxicity = _check_toxicity(fields.get("toxicity", wrapper.toxicity))
    return attributes_of(candidate), toxicity


def set_attributes(toxic: Toxic, type_name: str, raw: object) -> None:
    """Decode, range-check and apply attributes; on any error ``toxic`` is left unchanged."""
    specs = {f.name: f for f in dataclasses.fields(toxic)}  # type: ignore[arg-type]
    values = _bind(raw, dict.fromkeys(specs, "int64"), f"{GO_TYPE_NAMES[type_name]}.attributes")
    for name, value in values.items():
        meta = specs[name].metadata
        if not meta["min"] <= value <= meta["max"]:
            raise ApiError(
                400,
                f"invalid attribute {name} for {type_name}: must be an integer between "
                f"{meta['min']} and {meta['max']} ({meta['unit']}), got {value}",
            )
    candidate = dataclasses.replace(toxic, **values)  # type: ignore[type-var]
    if isinstance(candidate, Checked) and (problem := candidate.check()) is not None:
        raise ApiError(400, f"invalid attributes for {type_name}: {problem}")
    for name, value in values.items():
        setattr(toxic, name, value)


def attributes_of(toxic: Toxic) -> dict[str, int]:
    return {f.name: getattr(toxic, f.name) for f in dataclasses.fields(toxic)}  # type: ignore[arg-type]


def toxic_json(wrapper: ToxicWrapper) -> dict[str, object]:
    return {
        "attributes": attributes_of(wrapper.toxic),
        "name": wrapper.name,
        "type": wrapper.type,
        "stream": wrapper.stream,
        "toxicity": wrapper.toxicity,
    }


def proxy_json(
    name: str, listen: str, upstream: str, enabled: bool, toxics: list[ToxicWrapper]
) -> dict[str, object]:
    return {
        "name": name,
        "listen": listen,
        "upstream": upstream,
        "enabled": enabled,
        "toxics": [toxic_json(t) for t in toxics],
    }
