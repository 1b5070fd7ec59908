"""The scenario: one TOML file that says what to run, what to break, and how to judge it.

    scenario.toml --tomllib--> dict --(--set overrides)--> pydantic models --> Scenario
                                                                 |
               errors name the file, the line and the field -----+

Sections: target (reference ad server or the user's own service), stack (embedded defaults
or external URLs), load (shape and rates), faults (timeline), phases (derived, adjustable),
checks (thresholds, read by the checker), seed. A JSON Schema (`spikegate schema`) lets
editors validate and complete scenario files.
"""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from spikegate.chaos.faults import FaultSpec
from spikegate.harness.errors import ScenarioError

SCENARIO_DIRS = (Path.cwd() / "scenarios", Path(__file__).resolve().parents[1] / "scenarios")

Shape = Literal["steady", "step", "flash_crowd", "hot_publisher", "sawtooth", "ramp_to_knee"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetSection(_Model):
    """What is loaded: the reference ad server (started by the harness) or your own service."""

    kind: Literal["reference", "external"] = "reference"
    url: str | None = Field(default=None, description="base URL of an external target")
    allow_remote: bool = Field(
        default=False, description="allow a non-loopback external target (off: refused)"
    )
    publisher_rate_per_s: float = Field(
        default=200.0, ge=0, description="edge token bucket rate per publisher"
    )
    publisher_burst: int = Field(default=50, ge=0, description="edge token bucket burst")
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="overrides merged over the reference target's config (target/config.py)",
    )

    @model_validator(mode="after")
    def _check(self) -> TargetSection:
        if self.kind == "external":
            if not self.url:
                raise ValueError("target.url is required when target.kind = 'external'")
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"target.url must be http(s)://host[:port], got {self.url!r}")
        return self

    def is_loopback(self) -> bool:
        host = urlsplit(self.url or "http://127.0.0.1").hostname or ""
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


class StackSection(_Model):
    """The dependencies: embedded and local by default, or external URLs."""

    dsp_count: int = Field(default=3, ge=1, le=16)
    redis_url: str | None = Field(default=None, pattern=r"^rediss?://")
    kafka_bootstrap: str | None = None
    toxiproxy_url: str | None = Field(default=None, pattern=r"^https?://")
    start_timeout_s: float = Field(default=30.0, gt=0, le=600)


class Step(_Model):
    at_s: float = Field(ge=0)
    rps: float = Field(ge=0)


class LoadSection(_Model):
    """The offered load: an arrival rate over time (open model), from one named shape."""

    shape: Shape = "steady"
    duration_s: float = Field(default=30.0, gt=0, le=86_400, description="whole run")
    warmup_s: float = Field(default=5.0, ge=0)
    base_rps: float = Field(default=50.0, ge=0, le=1_000_000)
    peak_rps: float = Field(default=0.0, ge=0, le=1_000_000)
    spike_at_s: float = Field(default=0.0, ge=0)
    spike_for_s: float = Field(default=0.0, ge=0)
    steps: list[Step] = Field(default_factory=list)
    period_s: float = Field(default=10.0, gt=0)
    publishers: int = Field(default=4, ge=1, le=1000)
    hot_publisher: str = "pub-1"
    hot_share: float = Field(default=0.8, ge=0, le=1)
    impression_rate: float = Field(default=0.5, ge=0, le=1)
    tmax_ms: int = Field(default=150, ge=1, le=60_000)
    client_timeout_s: float = Field(default=2.0, gt=0, le=120)
    max_inflight: int = Field(default=2000, ge=1, le=100_000)
    processes: int = Field(default=1, ge=1, le=64)
    arrivals: Literal["uniform", "poisson"] = Field(
        default="uniform", description="intended send instants: evenly spaced or Poisson"
    )
    mode: Literal["open", "closed"] = Field(
        default="open", description="open: send on schedule whatever the answers (default)"
    )

    @model_validator(mode="after")
    def _check(self) -> LoadSection:
        if self.warmup_s >= self.duration_s:
            raise ValueError(
                f"load.warmup_s ({self.warmup_s}) must be less than load.duration_s "
                f"({self.duration_s})"
            )
        spiky = self.shape in ("flash_crowd", "hot_publisher")
        if spiky:
            if self.spike_for_s <= 0:
                raise ValueError(f"load.spike_for_s must be > 0 for shape {self.shape!r}")
            if self.spike_at_s + self.spike_for_s > self.duration_s:
                raise ValueError(
                    "load.spike_at_s + load.spike_for_s must end within load.duration_s"
                )
            if self.spike_at_s < self.warmup_s:
                raise ValueError("load.spike_at_s must not start before load.warmup_s ends")
        rising = self.shape in ("flash_crowd", "hot_publisher", "sawtooth", "ramp_to_knee")
        if rising and self.peak_rps <= self.base_rps:
            raise ValueError(
                f"load.peak_rps ({self.peak_rps}) must exceed load.base_rps "
                f"({self.base_rps}) for shape {self.shape!r}"
            )
        if self.shape == "step" and not self.steps:
            raise ValueError("load.steps must list at least one {at_s, rps} for shape 'step'")
        if self.shape == "hot_publisher":
            ids = {f"pub-{i}" for i in range(1, self.publishers + 1)}
            if self.hot_publisher not in ids:
                raise ValueError(
                    f"load.hot_publisher {self.hot_publisher!r} is not one of pub-1..pub-"
                    f"{self.publishers}"
                )
        return self

    def disturbance(self) -> tuple[float, float] | None:
        """The load's own stress window (a spike), if the shape has one."""
        if self.shape in ("flash_crowd", "hot_publisher"):
            return (self.spike_at_s, self.spike_at_s + self.spike_for_s)
        if self.shape in ("sawtooth", "ramp_to_knee"):
            return (self.warmup_s, self.duration_s)
        if self.shape == "step" and self.steps:
            return (max(self.warmup_s, self.steps[0].at_s), self.duration_s)
        return None


class FaultEntry(_Model):
    """One fault of the timeline: `fault` on `proxy` from `at_s` for `for_s` seconds."""

    at_s: float = Field(ge=0)
    for_s: float = Field(gt=0)
    fault: str
    proxy: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    def to_spec(self) -> FaultSpec:
        return FaultSpec(
            at_s=self.at_s,
            duration_s=self.for_s,
            proxy=self.proxy,
            fault=self.fault,
            params=dict(self.params),
        )


class PhasesSection(_Model):
    """How the run is cut into phases; derived from load and faults unless set here."""

    recovery_s: float = Field(default=10.0, ge=0, description="recovery window length")
    stress_start_s: float | None = Field(default=None, ge=0)
    stress_end_s: float | None = Field(default=None, ge=0)


@dataclass(frozen=True, slots=True)
class Phase:
    name: Literal["warmup", "baseline", "stress", "recovery", "post"]
    start_s: float
    end_s: float


class Scenario(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    description: str = ""
    seed: int = Field(default=1, ge=0, le=2**63 - 1)
    target: TargetSection = TargetSection()
    stack: StackSection = StackSection()
    load: LoadSection = LoadSection()
    faults: list[FaultEntry] = Field(default_factory=list)
    phases: PhasesSection = PhasesSection()
    checks: dict[str, Any] = Field(
        default_factory=dict, description="thresholds read by the checker"
    )

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        dsps = [f"dsp-{i}" for i in range(1, self.stack.dsp_count + 1)]
        for i, f in enumerate(self.faults):
            if f.at_s + f.for_s > self.load.duration_s:
                raise ValueError(
                    f"faults[{i}] ends at {f.at_s + f.for_s:g} s, after load.duration_s "
                    f"({self.load.duration_s:g} s): shorten for_s or start earlier"
                )
            if f.proxy is not None and f.proxy not in ("redis", "kafka", *dsps):
                raise ValueError(
                    f"faults[{i}].proxy {f.proxy!r} is not one of redis, kafka, {', '.join(dsps)}"
                )
            try:
                f.to_spec()
            except ValueError as exc:
                raise ValueError(f"faults[{i}]: {exc}") from None
        if self.faults and self.target.kind == "external" and self.stack.toxiproxy_url is None:
            raise ValueError(
                "faults need proxies in front of the dependencies: with target.kind = "
                "'external', set stack.toxiproxy_url or remove the faults"
            )
        return self

    # --- derived values ---------------------------------------------------------------------
    def fault_specs(self) -> list[FaultSpec]:
        return [f.to_spec() for f in self.faults]

    def publishers(self) -> dict[str, str]:
        """Publisher id -> API key, as the generator and the reference target share them."""
        return {f"pub-{i}": f"key-pub-{i}" for i in range(1, self.load.publishers + 1)}

    def dsp_names(self) -> list[str]:
        return [f"dsp-{i}" for i in range(1, self.stack.dsp_count + 1)]

    def stress_window(self) -> tuple[float, float] | None:
        """From the first disturbance (spike or fault) to the end of the last one."""
        windows = [(f.at_s, f.at_s + f.for_s) for f in self.faults]
        spike = self.load.disturbance()
        if spike is not None:
            windows.append(spike)
        start = self.phases.stress_start_s
        end = self.phases.stress_end_s
        if windows:
            start = min(w[0] for w in windows) if start is None else start
            end = max(w[1] for w in windows) if end is None else end
        if start is None or end is None:
            return None
        return (start, end)

    def phase_list(self) -> list[Phase]:
        """warmup, baseline, stress, recovery, post: contiguous, clipped to the run."""
        total, warm = self.load.duration_s, self.load.warmup_s
        out = [Phase("warmup", 0.0, warm)]
        stress = self.stress_window()
        if stress is None:
            out.append(Phase("baseline", warm, total))
            return out
        s0, s1 = max(warm, stress[0]), min(total, stress[1])
        if s0 > warm:
            out.append(Phase("baseline", warm, s0))
        out.append(Phase("stress", s0, s1))
        r1 = min(total, s1 + self.phases.recovery_s)
        if r1 > s1:
            out.append(Phase("recovery", s1, r1))
        if total > r1:
            out.append(Phase("post", r1, total))
        return out

    def target_config(
        self,
        *,
        redis_url: str,
        kafka_bootstrap: str,
        dsp_urls: Mapping[str, str],
        spool_dir: str | None = None,
    ) -> dict[str, Any]:
        """The reference target's whole config (target/config.py), overrides applied."""
        base: dict[str, Any] = {
            "publishers": {
                pid: {
                    "api_key": key,
                    "rate_per_s": self.target.publisher_rate_per_s,
                    "burst": self.target.publisher_burst,
                }
                for pid, key in self.publishers().items()
            },
            "dsps": [{"name": n, "url": u} for n, u in dsp_urls.items()],
            "redis_url": redis_url,
            "kafka_bootstrap": kafka_bootstrap,
        }
        if spool_dir is not None:
            base["impressions"] = {"spool_dir": spool_dir}
        from spikegate.target.config import deep_merge  # the target's own merge, loaded when needed

        return deep_merge(base, self.target.config)

    def load_env(self) -> dict[str, str]:
        """Environment for the Locust subprocess (read by locustfiles/)."""
        return {
            "SPIKEGATE_LOAD": json.dumps(self.load.model_dump(mode="json"), sort_keys=True),
            "SPIKEGATE_PUBLISHERS": json.dumps(self.publishers(), sort_keys=True),
            "SPIKEGATE_SEED": str(self.seed),
        }

    def to_toml(self) -> str:
        """The resolved scenario as TOML (every default filled in, None left out)."""
        return tomli_w.dumps(_drop_none(self.model_dump(mode="json")))


# --- loading --------------------------------------------------------------------------------
def resolve_path(ref: str | Path) -> Path:
    """A path to a file, or the name of a shipped scenario (`smoke`, `perfect-storm`, ...)."""
    p = Path(ref)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise ScenarioError(f"scenario file {p} does not exist", hint=_shipped_hint())
        return p
    for d in SCENARIO_DIRS:
        candidate = d / f"{ref}.toml"
        if candidate.is_file():
            return candidate
    raise ScenarioError(f"no scenario named {str(ref)!r}", hint=_shipped_hint())


def shipped() -> list[str]:
    names: set[str] = set()
    for d in SCENARIO_DIRS:
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.toml"))
    return sorted(names)


def load_scenario(ref: str | Path, overrides: Sequence[str] = ()) -> Scenario:
    """Load, override (`key.path=value`, value parsed as TOML, else a string), validate."""
    path = resolve_path(ref)
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: invalid TOML: {exc}") from None
    for item in overrides:
        _apply_override(data, item)
    data.setdefault("name", path.stem)
    return parse_scenario(data, source=str(path), text=text)


def parse_scenario(data: Mapping[str, Any], *, source: str, text: str = "") -> Scenario:
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(_format(exc, source, text)) from None


def _apply_override(data: dict[str, Any], item: str) -> None:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(r"[A-Za-z0-9_.\-]+", key):
        raise ScenarioError(
            f"--set {item!r}: expected key.path=value (e.g. --set load.peak_rps=800)"
        )
    try:
        value: Any = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ScenarioError(f"--set {item!r}: {part!r} is not a table in the scenario")
        node = child
    node[parts[-1]] = value


def _format(err: ValidationError, source: str, text: str) -> str:
    lines = [f"{source}: the scenario is not valid:"]
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        where = ".".join(loc) or "(top level)"
        line = _line_of(text, loc)
        at = f" (line {line})" if line else ""
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field: check its spelling against `spikegate schema`"
        elif e["type"] == "literal_error":
            msg = f"{msg}, got {e.get('input')!r}"
        lines.append(f"  {where}{at}: {msg}")
    return "\n".join(lines)


def _line_of(text: str, loc: Sequence[str]) -> int | None:
    """Best effort: the line where the last named key of `loc` is written."""
    keys = [k for k in loc if not k.isdigit()]
    if not text or not keys:
        return None
    key = keys[-1]
    section = ".".join(keys[:-1])
    current = ""
    for i, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        header = re.fullmatch(r"\[\[?\s*([^\]]+?)\s*\]\]?", stripped)
        if header:
            current = header.group(1)
            if current == ".".join(keys):
                return i
            continue
        if re.match(rf"{re.escape(key)}\s*=", stripped) and (current == section or not section):
            return i
    return None


def _shipped_hint() -> str:
    names = shipped()
    return "shipped scenarios: " + (", ".join(names) if names else "(none found)")


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value
