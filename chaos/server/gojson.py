"""Decoding request bodies the way Go's encoding/json does, because Toxiproxy clients rely on it.

- One JSON value is read; whatever follows it is ignored. An empty body is ``EOF``.
- Object keys match struct fields exactly first, then case-insensitively; the last one wins.
- Unknown keys are ignored; ``null`` leaves a field untouched (absent).
- Integer fields accept only integer literals in int64 range (not ``100.5``, ``100.0``,
  ``1e3`` nor ``"100"``); float32 fields accept any number that fits.
- Invalid UTF-8 and lone surrogates become U+FFFD.

Errors are ``GoJSONError`` with Go's wording (``json: cannot unmarshal ...``), which the API
prefixes with ``bad request body: ``. Encoding mirrors ``json.Marshal``: compact, HTML-safe.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Literal

Kind = Literal["string", "bool", "int64", "float32", "object"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FLOAT32_MAX = 3.4028234663852886e38
_JSON_SPACE = " \t\r\n"


class GoJSONError(ValueError):
    """A body Go's decoder would reject; ``str()`` is Go's message."""


class Number:
    """A JSON number kept as its literal text, so int and float fields apply Go's rules."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Number({self.text!r})"

    @property
    def is_integer_literal(self) -> bool:
        return not any(c in self.text for c in ".eE")


class Object(list[tuple[str, object]]):
    """A JSON object as its (key, value) pairs in document order (duplicates kept)."""


def _reject_constant(name: str) -> object:
    raise GoJSONError(f"invalid character {name[0]!r} looking for beginning of value")


_DECODER = json.JSONDecoder(
    parse_float=Number,
    parse_int=Number,
    parse_constant=_reject_constant,
    object_pairs_hook=Object,
)


def decode(body: bytes) -> object:
    """The first JSON value in ``body``; raises GoJSONError like Go's ``Decoder.Decode``."""
    text = body.decode("utf-8", "replace")
    start = 0
    while start < len(text) and text[start] in _JSON_SPACE:
        start += 1
    if start == len(text):
        raise GoJSONError("EOF")
    try:
        value, _end = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text):
            raise GoJSONError("unexpected EOF") from None
        what = exc.msg[0].lower() + exc.msg[1:]
        raise GoJSONError(
            f"invalid character {text[exc.pos]!r} at offset {exc.pos}: {what}"
        ) from None
    except RecursionError:
        raise GoJSONError("exceeded max depth") from None
    return value


def kind_of(value: object) -> str:
    """Go's name for a JSON value's kind, as used in UnmarshalTypeError."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Number):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Object):
        return "object"
    if isinstance(value, list):
        return "array"
    return "null"


def _fold(key: str) -> str:
    # Go folds ASCII case plus the Kelvin sign and the long s; field names are ASCII.
    return key.lower().replace("\u017f", "s")


def _clean(text: str) -> str:
    if any("\ud800" <= c <= "\udfff" for c in text):
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def bind(value: object, fields: Mapping[str, Kind], go_type: str) -> dict[str, object]:
    """Decode a JSON object into the named fields; absent and null fields are left out.

    ``go_type`` names the Go struct (``Proxy``, ``LatencyToxic.attributes``) in errors.
    ``object`` fields come back as ``Object`` (or are absent) for a second ``bind``.
    """
    if value is None:
        return {}
    struct_name = go_type.split(".")[0]
    if not isinstance(value, Object):
        raise GoJSONError(
            f"json: cannot unmarshal {kind_of(value)} into Go value of type {struct_name}"
        )
    folded = {_fold(name): name for name in fields}
    out: dict[str, object] = {}
    for key, item in value:
        name = key if key in fields else folded.get(_fold(key))
        if name is None or item is None:
            continue
        out[name] = _convert(item, fields[name], f"{go_type}.{name}")
    return out


def _convert(item: object, kind: Kind, where: str) -> object:
    def mismatch(what: str) -> GoJSONError:
        go_kind = {"int64": "int64", "float32": "float32", "object": "struct"}.get(kind, kind)
        return GoJSONError(
            f"json: cannot unmarshal {what} into Go struct field {where} of type {go_kind}"
        )

    if kind == "string":
        if isinstance(item, str):
            return _clean(item)
    elif kind == "bool":
        if isinstance(item, bool):
            return item
    elif kind == "object":
        if isinstance(item, Object):
            return item
    elif isinstance(item, Number):
        if kind == "int64":
            text = item.text
            if (
                item.is_integer_literal
                and len(text) <= 20
                and _INT64_MIN <= int(text) <= _INT64_MAX
            ):
                return int(text)
        else:
            number = float(item.text)
            if math.isfinite(number) and abs(number) <= _FLOAT32_MAX:
                return float32(number)
        raise mismatch(f"number {item.text}")
    raise mismatch(kind_of(item))


def float32(value: float) -> float:
    """Round to the nearest float32, expressed as the shortest decimal Go would print."""
    single = struct.unpack("f", struct.pack("f", value))[0]
    for digits in range(1, 10):
        shortest = float(f"{single:.{digits}g}")
        if struct.unpack("f", struct.pack("f", shortest))[0] == single:
            return shortest
    return float(single)


def encode(value: object) -> bytes:
    """Compact, HTML-safe JSON like Go's ``json.Marshal``; integral floats print as integers."""
    text = json.dumps(_ints(value), separators=(",", ":"), ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return text.encode("utf-8")


def _ints(value: object) -> object:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value
