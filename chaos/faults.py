"""The fault catalog: named, parameterised faults built from toxics.

Each fault is a small frozen class whose fields are its parameters (validated on
construction, errors name the field and the allowed range) and whose one method, ``apply``,
puts it on a proxy and returns the ``Undo`` that takes it off again. ``FAULTS`` lists them
by name; ``SHORTHANDS`` maps the scenario shorthands (``redis_latency``, ``dsp_down``, ...) to
a base fault on a proxy role. ``FaultSpec`` is one timed entry of a scenario's fault timeline.

    FaultSpec(at_s, duration_s, proxy, fault, params)
        └── resolve() -> (proxy name, Fault) ── apply(client, proxy, toxic_name) -> Undo
                                                                     Undo.revert(client)
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Final, Protocol

from spikegate.chaos.errors import ProxyNotFound, ToxicNotFound

__all__ = [
    "FAULTS",
    "SHORTHANDS",
    "Bandwidth",
    "Down",
    "Fault",
    "FaultSpec",
    "FaultTarget",
    "Latency",
    "LimitData",
    "ResetPeer",
    "Shorthand",
    "Slicer",
    "Timeout",
    "Undo",
    "build_fault",
    "fault_params",
    "resolve_fault",
]

_MAX_MS: Final = 3_600_000  # one hour: longer is a typo, not a fault
_MAX_US: Final = 60_000_000
_MAX_BYTES: Final = 2**62
_MAX_RATE_KB_S: Final = 100_000_000


class FaultTarget(Protocol):
    """The part of ``ChaosClient`` that faults use (a fake implements it in unit tests)."""

    def add_toxic(
        self,
        proxy: str,
        type: str,
        *,
        name: str | None = ...,
        stream: str = ...,
        toxicity: float = ...,
        attributes: Mapping[str, int] | None = ...,
    ) -> object: ...

    def remove_toxic(self, proxy: str, name: str) -> None: ...

    def set_enabled(self, name: str, enabled: bool) -> object: ...


@dataclass(frozen=True)
class Undo:
    """What ``apply`` changed on one proxy: toxics to remove, whether to re-enable it."""

    proxy: str
    toxics: tuple[str, ...] = ()
    reenable: bool = False

    def revert(self, client: FaultTarget) -> None:
        """Take the fault off; a toxic or proxy already gone counts as undone."""
        for name in self.toxics:
            with contextlib.suppress(ToxicNotFound, ProxyNotFound):
                client.remove_toxic(self.proxy, name)
        if self.reenable:
            with contextlib.suppress(ProxyNotFound):
                client.set_enabled(self.proxy, True)


class Fault(Protocol):
    """A parameterised fault; ``name`` is its catalog key."""

    name: ClassVar[str]

    def apply(self, client: FaultTarget, proxy: str, toxic_name: str) -> Undo: ...


# -- parameter checks -------------------------------------------------------------------


def _check_int(fault: str, param: str, value: object, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{fault}.{param} must be an integer in [{lo}, {hi}] (got {value!r})")


def _check_stream(fault: str, value: object) -> None:
    if value not in ("upstream", "downstream"):
        raise ValueError(f"{fault}.stream must be 'upstream' or 'downstream' (got {value!r})")


def _check_toxicity(fault: str, value: object) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not 0.0 <= value <= 1.0:  # type: ignore[operator]
        raise ValueError(f"{fault}.toxicity must be a number in [0, 1] (got {value!r})")


def _add(client: FaultTarget, proxy: str, toxic_name: str, fault: _ToxicFault) -> Undo:
    client.add_toxic(
        proxy,
        fault.toxic_type,
        name=toxic_name,
        stream=fault.stream,
        toxicity=float(fault.toxicity),
        attributes=fault.attributes(),
    )
    return Undo(proxy, toxics=(toxic_name,))


class _ToxicFault:
    """Shared shape of the faults that are one toxic (not a fault itself)."""

    name: ClassVar[str]
    toxic_type: ClassVar[str]
    stream: str
    toxicity: float

    def attributes(self) -> dict[str, int]:
        raise NotImplementedError

    def _check_common(self) -> None:
        _check_stream(self.name, self.stream)
        _check_toxicity(self.name, self.toxicity)

    def apply(self, client: FaultTarget, proxy: str, toxic_name: str) -> Undo:
        return _add(client, proxy, toxic_name, self)


# -- the faults -------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency(_ToxicFault):
    """Delay every chunk by latency_ms ± jitter_ms."""

    name: ClassVar[str] = "latency"
    toxic_type: ClassVar[str] = "latency"
    latency_ms: int = 100
    jitter_ms: int = 0
    stream: str = "downstream"
    toxicity: float = 1.0

    def __post_init__(self) -> None:
        _check_int(self.name, "latency_ms", self.latency_ms, 0, _MAX_MS)
        _check_int(self.name, "jitter_ms", self.jitter_ms, 0, _MAX_MS)
        self._check_common()

    def attributes(self) -> dict[str, int]:
        return {"latency": self.latency_ms, "jitter": self.jitter_ms}


@dataclass(frozen=True)
class Down:
    """Disable the proxy: its port refuses connections and open ones are closed."""

    name: ClassVar[str] = "down"

    def apply(self, client: FaultTarget, proxy: str, toxic_name: str) -> Undo:
        client.set_enabled(proxy, False)
        return Undo(proxy, reenable=True)


@dataclass(frozen=True)
class _TimedToxicFault(_ToxicFault):
    """A toxic whose one attribute is `timeout` (ms): reset_peer and timeout."""

    timeout_ms: int = 0
    stream: str = "downstream"
    toxicity: float = 1.0

    def __post_init__(self) -> None:
        _check_int(self.name, "timeout_ms", self.timeout_ms, 0, _MAX_MS)
        self._check_common()

    def attributes(self) -> dict[str, int]:
        return {"timeout": self.timeout_ms}


@dataclass(frozen=True)
class ResetPeer(_TimedToxicFault):
    """Reset connections (RST) timeout_ms after they carry data (0 = at once)."""

    name: ClassVar[str] = "reset"
    toxic_type: ClassVar[str] = "reset_peer"


@dataclass(frozen=True)
class Timeout(_TimedToxicFault):
    """Drop all data; close after timeout_ms (0 = hold the connection open, silent)."""

    name: ClassVar[str] = "timeout"
    toxic_type: ClassVar[str] = "timeout"


@dataclass(frozen=True)
class Bandwidth(_ToxicFault):
    """Pace the stream to rate_kb_s kilobytes (1000 B) per second; 0 freezes it."""

    name: ClassVar[str] = "bandwidth"
    toxic_type: ClassVar[str] = "bandwidth"
    rate_kb_s: int = 100
    stream: str = "downstream"
    toxicity: float = 1.0

    def __post_init__(self) -> None:
        _check_int(self.name, "rate_kb_s", self.rate_kb_s, 0, _MAX_RATE_KB_S)
        self._check_common()

    def attributes(self) -> dict[str, int]:
        return {"rate": self.rate_kb_s}


@dataclass(frozen=True)
class Slicer(_ToxicFault):
    """Split chunks into slices of about average_size_bytes, delay_us apart."""

    name: ClassVar[str] = "slicer"
    toxic_type: ClassVar[str] = "slicer"
    average_size_bytes: int = 64
    size_variation_bytes: int = 0
    delay_us: int = 0
    stream: str = "downstream"
    toxicity: float = 1.0

    def __post_init__(self) -> None:
        _check_int(self.name, "average_size_bytes", self.average_size_bytes, 1, _MAX_BYTES)
        _check_int(
            self.name,
            "size_variation_bytes",
            self.size_variation_bytes,
            0,
            self.average_size_bytes - 1,
        )
        _check_int(self.name, "delay_us", self.delay_us, 0, _MAX_US)
        self._check_common()

    def attributes(self) -> dict[str, int]:
        return {
            "average_size": self.average_size_bytes,
            "size_variation": self.size_variation_bytes,
            "delay": self.delay_us,
        }


@dataclass(frozen=True)
class LimitData(_ToxicFault):
    """Close each connection after limit_bytes in this direction."""

    name: ClassVar[str] = "limit_data"
    toxic_type: ClassVar[str] = "limit_data"
    limit_bytes: int = 0
    stream: str = "downstream"
    toxicity: float = 1.0

    def __post_init__(self) -> None:
        _check_int(self.name, "limit_bytes", self.limit_bytes, 0, _MAX_BYTES)
        self._check_common()

    def attributes(self) -> dict[str, int]:
        return {"bytes": self.limit_bytes}


FAULTS: Final[dict[str, type[Fault]]] = {
    "latency": Latency,
    "down": Down,
    "reset": ResetPeer,
    "timeout": Timeout,
    "bandwidth": Bandwidth,
    "slicer": Slicer,
    "limit_data": LimitData,
}


# -- scenario shorthands ----------------------------------------------------------------

_ROLE_PATTERNS: Final = {
    "redis": re.compile(r"redis"),
    "kafka": re.compile(r"kafka"),
    "dsp": re.compile(r"dsp-[1-9][0-9]*"),
}
_ROLE_DEFAULT_PROXY: Final = {"redis": "redis", "kafka": "kafka", "dsp": "dsp-1"}
_ROLE_HINT: Final = {"redis": "'redis'", "kafka": "'kafka'", "dsp": "'dsp-1'..'dsp-N'"}


@dataclass(frozen=True)
class Shorthand:
    """A scenario shorthand: a base fault with its own defaults, on proxies of one role."""

    base: str
    role: str
    defaults: Mapping[str, object] = field(default_factory=dict, hash=False)


SHORTHANDS: Final[dict[str, Shorthand]] = {
    "dsp_latency": Shorthand("latency", "dsp"),
    "dsp_down": Shorthand("down", "dsp"),
    "redis_latency": Shorthand("latency", "redis"),
    "redis_down": Shorthand("down", "redis"),
    "redis_reset": Shorthand("reset", "redis"),
    # A stall freezes the broker's answers without closing anything; traffic resumes (and
    # buffered responses arrive) when it ends. The `timeout` base fault drops data instead.
    "kafka_stall": Shorthand("bandwidth", "kafka", {"rate_kb_s": 0}),
    "kafka_down": Shorthand("down", "kafka"),
}


def _known_faults() -> str:
    return ", ".join(sorted([*FAULTS, *SHORTHANDS]))


def build_fault(fault: str, params: Mapping[str, object] | None = None) -> Fault:
    """Build a base fault or a shorthand's base fault from its parameters."""
    params = dict(params or {})
    shorthand = SHORTHANDS.get(fault)
    if shorthand is not None:
        params = {**shorthand.defaults, **params}
    cls = FAULTS.get(shorthand.base if shorthand else fault)
    if cls is None:
        raise ValueError(f"fault must be one of {_known_faults()} (got {fault!r})")
    allowed = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(k for k in params if k not in allowed)
    if unknown:
        hint = ", ".join(allowed) if allowed else "none"
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for fault {fault!r}; allowed: {hint}"
        )
    return cls(**params)


def resolve_fault(
    fault: str, proxy: str | None, params: Mapping[str, object] | None = None
) -> tuple[str, Fault]:
    """Return (proxy name, fault) for a base fault or a shorthand.

    A shorthand fills in its role's proxy when ``proxy`` is None and rejects a proxy of
    another role; a base fault needs an explicit proxy.
    """
    built = build_fault(fault, params)
    shorthand = SHORTHANDS.get(fault)
    if shorthand is None:
        if not isinstance(proxy, str) or not proxy:
            raise ValueError(f"proxy is required for fault {fault!r} (e.g. 'redis', 'dsp-1')")
        return proxy, built
    if proxy is None:
        return _ROLE_DEFAULT_PROXY[shorthand.role], built
    if not isinstance(proxy, str) or not _ROLE_PATTERNS[shorthand.role].fullmatch(proxy):
        raise ValueError(
            f"proxy for {fault!r} must be {_ROLE_HINT[shorthand.role]} (got {proxy!r})"
        )
    return proxy, built


def fault_params(fault: Fault) -> dict[str, Any]:
    """The fault's parameters as a JSON-ready dict (for events and reports)."""
    return asdict(fault)  # type: ignore[call-overload, no-any-return]


def _check_seconds(param: str, value: object, *, positive: bool) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0 or (positive and value == 0):  # type: ignore[arg-type, operator]
        rule = "> 0" if positive else ">= 0"
        raise ValueError(f"{param} must be a finite number of seconds {rule} (got {value!r})")
    return float(value)  # type: ignore[arg-type]


@dataclass(frozen=True)
class FaultSpec:
    """One entry of a fault timeline: ``fault`` on ``proxy`` from at_s for duration_s."""

    at_s: float
    duration_s: float
    proxy: str | None
    fault: str
    params: Mapping[str, object] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        _check_seconds("at_s", self.at_s, positive=False)
        _check_seconds("duration_s", self.duration_s, positive=True)
        if not isinstance(self.params, Mapping):
            raise ValueError(f"params must be a mapping (got {self.params!r})")
        object.__setattr__(self, "params", dict(self.params))
        self.resolve()  # validates fault name, proxy and parameters now, not mid-run

    @property
    def end_s(self) -> float:
        return self.at_s + self.duration_s

    def resolve(self) -> tuple[str, Fault]:
        return resolve_fault(self.fault, self.proxy, self.params)
