"""The target's configuration: one validated pydantic model, loaded from TOML plus env overrides.

Every limit, rate, window and threshold lives here, with a switch per backpressure pattern
(`edge.enabled`, `auction.enabled`, `impressions.enabled`, `breaker.enabled`) that ablation
flips. Sources, later wins:

    defaults  <-  TOML file (SPIKEGATE_TARGET_CONFIG)  <-  env SPIKEGATE__SECTION__KEY=value

Validation errors name the field (`auction.limit: Input should be greater than 0`).
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from spikegate.contract.env import TARGET_CONFIG_ENV, TARGET_OVERRIDE_PREFIX
from spikegate.target.backpressure.breaker import BreakerConfig
from spikegate.target.impressions import ImpressionLoggerSettings

CONFIG_ENV = TARGET_CONFIG_ENV
ENV_PREFIX = TARGET_OVERRIDE_PREFIX


class ConfigError(ValueError):
    """The configuration is invalid; the message names the field and the allowed values."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PublisherConfig(_Section):
    """One publisher: its API key and its edge token bucket."""

    api_key: str = Field(min_length=1)
    rate_per_s: float = Field(default=1000.0, ge=0)
    burst: int = Field(default=100, ge=0)


class EdgeConfig(_Section):
    """Edge layer: API key auth (always on) and the per-publisher token bucket (switchable)."""

    enabled: bool = True
    max_keys: int = Field(default=10_000, ge=1)


class AuctionConfig(_Section):
    """The auction: concurrency limit around the Redis work, the Redis work, the deadline."""

    enabled: bool = True  # the concurrency limit (bulkhead) around the Redis work
    limit: int = Field(default=64, ge=1, le=100_000)
    max_wait_ms: float = Field(default=5.0, ge=0, le=60_000)
    adaptive: bool = False
    adaptive_min_limit: int = Field(default=4, ge=1)
    redis_timeout_ms: float = Field(default=50.0, gt=0, le=60_000)
    redis_max_connections: int = Field(default=256, ge=1)
    warm_connections: int = Field(default=32, ge=0, description="opened at startup")
    # 503 (default) or 204 when Redis is slow or down: both are fast, neither hangs.
    redis_failure_status: Literal[503, 204] = 503
    # Frequency cap: at most `frequency_cap` auctions per user per window.
    frequency_cap: int = Field(default=1_000_000, ge=1)
    frequency_window_s: int = Field(default=60, ge=1)
    # Campaign budget (micro-currency, reserved at the floor) and pacing (auctions/s).
    budget_micros: int = Field(default=10**15, ge=0)
    pacing_per_s: int = Field(default=10**9, ge=1)
    default_tmax_ms: int = Field(default=150, ge=1, le=60_000)
    max_tmax_ms: int = Field(default=1_000, ge=1, le=60_000)
    # Kept back from tmax to write the response; DSPs get what is left.
    deadline_margin_ms: float = Field(default=5.0, ge=0, le=1_000)

    @model_validator(mode="after")
    def _check(self) -> AuctionConfig:
        if self.adaptive and self.adaptive_min_limit > self.limit:
            raise ValueError(
                f"adaptive_min_limit ({self.adaptive_min_limit}) must be <= limit ({self.limit})"
            )
        if self.default_tmax_ms > self.max_tmax_ms:
            raise ValueError(
                f"default_tmax_ms ({self.default_tmax_ms}) must be <= max_tmax_ms "
                f"({self.max_tmax_ms})"
            )
        return self


class DspConfig(_Section):
    """One DSP partner."""

    name: str = Field(min_length=1)
    url: str = Field(pattern=r"^https?://", description="base URL; the bid goes to <url>/bid")


class DspClientConfig(_Section):
    """The HTTP client shared by the DSP fan-out."""

    pool_per_host: int = Field(default=256, ge=1)
    keepalive_s: float = Field(default=30.0, gt=0)


class BreakerSection(_Section):
    """One circuit breaker per DSP; the fields are `BreakerConfig`'s (validated by it)."""

    enabled: bool = True
    window_type: Literal["count", "time"] = "count"
    window_size: int = Field(default=20, ge=1)
    minimum_calls: int = Field(default=10, ge=1)
    failure_rate_threshold: float = Field(default=0.5, gt=0, le=1)
    slow_call_rate_threshold: float = Field(default=0.8, gt=0, le=1)
    slow_call_duration_s: float = Field(default=0.08, gt=0)
    consecutive_failures: int | None = Field(default=None, ge=1)
    wait_open_s: float = Field(default=1.0, gt=0)
    backoff_multiplier: float = Field(default=2.0, ge=1)
    max_wait_open_s: float = Field(default=5.0, gt=0)  # a DSP recovers in seconds: probe often
    jitter: float = Field(default=0.1, ge=0, le=1)
    half_open_probes: int = Field(default=3, ge=1)
    half_open_max_wait_s: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> BreakerSection:
        self.to_breaker_config()  # BreakerConfig's own checks, reported against this section
        return self

    def to_breaker_config(self) -> BreakerConfig:
        fields = self.model_dump(exclude={"enabled"})
        return BreakerConfig(**fields)


class TargetConfig(_Section):
    """The whole target configuration."""

    publishers: dict[str, PublisherConfig] = Field(
        default_factory=lambda: {"pub-1": PublisherConfig(api_key="key-1")}
    )
    edge: EdgeConfig = EdgeConfig()
    auction: AuctionConfig = AuctionConfig()
    dsps: list[DspConfig] = Field(default_factory=list)
    dsp_client: DspClientConfig = DspClientConfig()
    breaker: BreakerSection = BreakerSection()
    impressions: ImpressionLoggerSettings = Field(
        default_factory=lambda: ImpressionLoggerSettings.model_validate({})
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", pattern=r"^rediss?://")
    kafka_bootstrap: str = Field(default="127.0.0.1:9092", min_length=3)
    event_loop_lag_interval_s: float = Field(default=0.1, gt=0, le=10)
    access_log: bool = False  # uvicorn's per-request log line, off on the hot path

    @model_validator(mode="after")
    def _check(self) -> TargetConfig:
        keys: dict[str, str] = {}
        for pub_id, pub in self.publishers.items():
            other = keys.setdefault(pub.api_key, pub_id)
            if other != pub_id:
                raise ValueError(f"publishers.{pub_id}.api_key is already used by {other!r}")
        names = [d.name for d in self.dsps]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"dsps: names must be unique, repeated: {', '.join(dupes)}")
        return self

    def with_patterns(self, enabled: bool) -> TargetConfig:
        """This config with every pattern switched on or off (ablation, benchmarks)."""
        data = self.model_dump()
        for section in ("edge", "auction", "breaker", "impressions"):
            data[section]["enabled"] = enabled
        return TargetConfig.model_validate(data)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """`SPIKEGATE__AUCTION__LIMIT=32` -> {"auction": {"limit": 32}} (values parsed as JSON
    when they parse, else kept as strings; pydantic coerces the rest)."""
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not path:
            continue
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: {'.'.join(path)} conflicts with another override")
            node = child
        node[path[-1]] = value
    return out


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `over` laid on top, tables merged key by key (neither is changed)."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid target configuration ({source}):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        lines.append(f"  {loc}: {e['msg']}")
    return "\n".join(lines)


def load_config(
    path: Path | str | None = None, *, environ: Mapping[str, str] | None = None
) -> TargetConfig:
    """Load TOML at `path` (or `$SPIKEGATE_TARGET_CONFIG`, or none: defaults), then apply
    `SPIKEGATE__SECTION__KEY` env overrides. Raises ConfigError naming the field."""
    env = os.environ if environ is None else environ
    if path is None:
        path = env.get(CONFIG_ENV) or None
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        source = str(p)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{CONFIG_ENV}: no such file {p}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: invalid TOML: {exc}") from exc
    data = deep_merge(data, _env_overrides(env))
    try:
        return TargetConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None
