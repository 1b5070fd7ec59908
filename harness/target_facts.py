"""What the checker knows of the reference target: its resolved configuration, as data.

    scenario [target] + [target.config] --resolve (the target's own model, once)--> target.json
    target.json (run directory) ----------------------------------------------> TargetFacts

The orchestrator writes the target's whole effective configuration (every default applied)
to the run directory when it starts the target, so the checker judges a run against the
limits that run really had, and never imports the target's code: `TargetFacts` reads the
few numbers the verdicts need from that JSON. A run directory written before target.json
existed is resolved from its scenario instead (`resolve_target_config`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spikegate.harness.scenario import Scenario

__all__ = ["TargetFacts", "resolve_target_config"]

# Addresses in a configuration resolved only to learn its limits (never dialled).
_NOWHERE = {"redis_url": "redis://127.0.0.1:1/0", "kafka_bootstrap": "127.0.0.1:1"}


def resolve_target_config(
    scenario: Scenario, data: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The reference target's effective configuration (JSON-ready, defaults applied), from
    `data` (the merged config the target was started with) or from the scenario alone.
    None for a user's own service (kind "command" or "external": it has a configuration of
    its own, not this one), or a configuration the target's model refuses."""
    if scenario.target.kind != "reference":
        return None
    if data is None:
        data = scenario.target_config(
            redis_url=_NOWHERE["redis_url"],
            kafka_bootstrap=_NOWHERE["kafka_bootstrap"],
            dsp_urls=dict.fromkeys(scenario.dsp_names(), "http://127.0.0.1:1"),
        )
    from spikegate.target.config import TargetConfig  # resolving needs the target's model

    try:
        model = TargetConfig.model_validate_json(json.dumps(dict(data), default=str))
    except ValueError:
        return None
    return dict(model.model_dump(mode="json"))


def _section(cfg: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = cfg.get(name)
    return value if isinstance(value, Mapping) else {}


def _num(section: Mapping[str, Any], key: str, default: float) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


@dataclass(frozen=True, slots=True)
class TargetFacts:
    """The limits and switches of the reference target that the verdicts judge against."""

    enabled: Mapping[str, bool] = field(default_factory=dict)  # edge/auction/impressions/breaker
    auction_limit: float = 64.0
    auction_max_wait_ms: float = 5.0
    redis_timeout_ms: float = 50.0
    max_tmax_ms: float = 1000.0
    queue_max_depth: float = 10_000.0
    producer_workers: float = 2.0
    codel: bool = True
    codel_window_ms: float = 105.0  # CoDel's target + interval: how long a queue may stand
    producer_batch_size: float = 500.0
    breaker_max_wait_open_s: float = 5.0
    breaker_half_open_probes: float = 3.0
    publishers: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # rate/s, burst

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> TargetFacts:
        auction, imp = _section(cfg, "auction"), _section(cfg, "impressions")
        breaker, pubs = _section(cfg, "breaker"), _section(cfg, "publishers")
        enabled = {
            name: bool(_section(cfg, name).get("enabled", True))
            for name in ("edge", "auction", "impressions", "breaker")
        }
        publishers = {
            str(pid): (_num(p, "rate_per_s", 0.0), _num(p, "burst", 0.0))
            for pid, p in pubs.items()
            if isinstance(p, Mapping)
        }
        return cls(
            enabled=enabled,
            auction_limit=_num(auction, "limit", 64.0),
            auction_max_wait_ms=_num(auction, "max_wait_ms", 5.0),
            redis_timeout_ms=_num(auction, "redis_timeout_ms", 50.0),
            max_tmax_ms=_num(auction, "max_tmax_ms", 1000.0),
            queue_max_depth=_num(imp, "max_depth", 10_000.0),
            producer_workers=_num(imp, "workers", 2.0),
            codel=bool(imp.get("codel", True)) and bool(imp.get("enabled", True)),
            codel_window_ms=_num(imp, "target_ms", 5.0) + _num(imp, "interval_ms", 100.0),
            producer_batch_size=_num(imp, "batch_size", 500.0),
            breaker_max_wait_open_s=_num(breaker, "max_wait_open_s", 5.0),
            breaker_half_open_probes=_num(breaker, "half_open_probes", 3.0),
            publishers=publishers,
        )

    def off(self, section: str) -> bool:
        """The pattern `section` is switched off (ablation)."""
        return not self.enabled.get(section, True)

    @property
    def in_production(self) -> float:
        """Impressions a logger may hold outside its queue: one batch per producer worker."""
        return self.producer_workers * self.producer_batch_size
