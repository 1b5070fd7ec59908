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
from pydantic import (
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from spikegate.chaos.faults import FaultSpec
from spikegate.contract.env import LOAD_ENV, OUTCOMES_ENV, PUBLISHERS_ENV, SEED_ENV
from spikegate.contract.load import (
    SPIKY,
    LoadSection,
    Problem,
    Step,
    StrictModel,
    problems_error,
)
from spikegate.contract.outcomes import OutcomeRules
from spikegate.harness.errors import ScenarioError, describe
from spikegate.harness.thresholds import Thresholds

SCENARIO_DIRS = (Path.cwd() / "scenarios", Path(__file__).resolve().parents[1] / "scenarios")

PLACEHOLDER_REDIS = "redis://127.0.0.1:6379/0"  # the URLs the harness fills in at start-up;
PLACEHOLDER_KAFKA = "127.0.0.1:9092"  # [target.config] is validated with these stand-ins
PLACEHOLDER_DSP = "http://127.0.0.1:1"
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)$")


def _check_url(value: str | None, schemes: tuple[str, ...], form: str) -> str | None:
    """A URL with one of `schemes`, a host and, if given, a port in 1..65535."""
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        ok = parts.scheme in schemes and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is no number or beyond 65535, a broken IPv6 address
        ok = False
    if not ok:
        raise ValueError(f"expected {form} (port 1..65535), got {value!r}")
    return value


def _check_bootstrap(value: str | None) -> str | None:
    """`host:port[,host:port...]`, each port in 1..65535."""
    if value is None:
        return None
    form = "expected host:port[,host:port...] with ports 1..65535"
    for item in value.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not _HOST.match(host) or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{form}, got {value!r}")
    return value


def _describe_target_config(schema: dict[str, Any]) -> None:
    """`spikegate schema`: [target.config] is described by the reference target's own model
    (every key optional: it is laid over the config the harness generates)."""
    from spikegate.target.config import TargetConfig

    config = _inline_refs(TargetConfig.model_json_schema())
    config.pop("title", None)
    schema["properties"]["config"] = {**schema["properties"]["config"], **config}


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with its `$defs` written in place, and no key required."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return walk({**defs[ref.removeprefix("#/$defs/")], **rest})
            return {k: walk(v) for k, v in node.items() if k != "required"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    out: dict[str, Any] = walk(schema)
    return out


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_DEP_NAME = r"^[a-z][a-z0-9_-]{0,31}$"


def placeholders(text: str) -> list[str]:
    """The `{...}` names in `text` ({port}, {proxy.db}); `{{` and `}}` are literal braces."""
    return _PLACEHOLDER.findall(text.replace("{{", "").replace("}}", ""))


def fill_placeholders(text: str, values: Mapping[str, str]) -> str:
    """`text` with each {name} replaced from `values` ({{ and }} stand for { and })."""

    def sub(m: re.Match[str]) -> str:
        return values[m.group(1)]

    parts = text.split("{{")
    out = []
    for part in parts:
        pieces = part.split("}}")
        out.append("}".join(_PLACEHOLDER.sub(sub, piece) for piece in pieces))
    return "{".join(out)


class TargetSection(StrictModel):
    """What is loaded: the reference ad server (started by the harness), your own service
    started by the harness (`command`), or a service already running (`external`, a URL)."""

    model_config = ConfigDict(json_schema_extra=_describe_target_config)

    kind: Literal["reference", "external", "command"] = "reference"
    url: str | None = Field(default=None, description="base URL of an external target")
    allow_remote: bool = Field(
        default=False, description="allow a non-loopback external target (off: refused)"
    )
    command: list[str] | None = Field(
        default=None,
        description="kind = 'command': the service's argv; {port} is the port it must listen "
        "on (127.0.0.1), {proxy.NAME} the host:port of dependency NAME's proxy, {python} the "
        "interpreter that runs spikegate",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="kind = 'command': extra environment (placeholders too)"
    )
    cwd: str | None = Field(
        default=None, description="kind = 'command': working directory (relative to the scenario)"
    )
    ready: str | None = Field(
        default=None,
        description="an HTTP path polled until it answers 2xx (within stack.start_timeout_s); "
        "default: the port accepts connections",
    )
    metrics: str | None = Field(
        default=None, description="the service's Prometheus path (e.g. /metrics), if it has one"
    )
    publisher_rate_per_s: float = Field(
        default=200.0, ge=0, description="edge token bucket rate per publisher"
    )
    publisher_burst: int = Field(default=50, ge=0, description="edge token bucket burst")
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="overrides merged over the reference target's config (target/config.py)",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _check_url(value, ("http", "https"), "http(s)://host[:port]")

    @field_validator("ready", "metrics")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or any(c.isspace() for c in value)):
            raise ValueError(f"expected an HTTP path starting with '/', got {value!r}")
        return value

    @model_validator(mode="after")
    def _check(self) -> TargetSection:
        problems: list[Problem] = []
        if self.kind == "external" and not self.url:
            problems.append((("url",), "target.url is required when kind = 'external'"))
        if self.kind == "command":
            if not self.command or not self.command[0].strip():
                msg = (
                    "target.command is required when kind = 'command': the argv that starts "
                    'your service, e.g. ["python", "app.py", "--port", "{port}"]'
                )
                problems.append((("command",), msg))
            if self.url is not None:
                msg = "target.url is for kind = 'external'; a command target is on {port}"
                problems.append((("url",), msg))
        else:
            for key in ("command", "cwd", "ready"):
                if getattr(self, key) not in (None, [], {}):
                    problems.append(((key,), f"target.{key} is only for kind = 'command'"))
            if self.env:
                problems.append((("env",), "target.env is only for kind = 'command'"))
        if self.kind != "reference" and self.config:
            msg = "target.config configures the reference target; your service has its own"
            problems.append((("config",), msg))
        if problems:
            raise problems_error("TargetSection", problems)
        return self

    def is_loopback(self) -> bool:
        host = urlsplit(self.url or "http://127.0.0.1").hostname or ""
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


class DependencySection(StrictModel):
    """One dependency of your service, reached through a chaos proxy the faults can name."""

    name: str = Field(pattern=_DEP_NAME, description="the proxy's name: faults say proxy = NAME")
    upstream: str | None = Field(
        default=None, description="host:port of your own dependency (Redis, Postgres, an API)"
    )
    start: Literal["redis", "kafka"] | None = Field(
        default=None, description="the harness starts redis-server or the Kafka-protocol broker"
    )
    listen: str | None = Field(
        default=None,
        description="a fixed 127.0.0.1:PORT for the proxy (needed when the harness does not "
        "start the service: kind = 'external'); default: a free port",
    )

    @field_validator("upstream", "listen")
    @classmethod
    def _addr(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ok = "," not in value and _check_bootstrap(value) is not None
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"expected host:port with a port in 1..65535, got {value!r}")
        return value

    @model_validator(mode="after")
    def _check(self) -> DependencySection:
        if (self.upstream is None) == (self.start is None):
            msg = (
                f'dependency {self.name!r}: give exactly one of upstream = "host:port" (yours) '
                'or start = "redis" | "kafka" (started by the harness)'
            )
            raise problems_error("DependencySection", [(("upstream",), msg)])
        if self.listen is not None:
            host = self.listen.rpartition(":")[0]
            if host not in ("127.0.0.1", "localhost"):
                msg = f"the proxy listens on loopback only: 127.0.0.1:PORT, got {self.listen!r}"
                raise problems_error("DependencySection", [(("listen",), msg)])
        return self


class OutcomesSection(StrictModel):
    """How responses of your service are counted (the reference target names its decisions
    in X-Spikegate-Decision; a service without it is classified by status)."""

    admitted: list[int | str] = Field(
        default_factory=lambda: list[int | str](["2xx"]),
        description='statuses counted as admitted ("2xx", 200)',
    )
    rejected: list[int | str] = Field(
        default_factory=lambda: list[int | str]([429, 503]),
        description="statuses that are designed rejections (Retry-After is checked)",
    )
    decision_header: str | None = Field(
        default=None,
        description="a response header naming the decision; when set, a rejection status "
        "without it is a failure",
    )

    @model_validator(mode="after")
    def _check(self) -> OutcomesSection:
        try:
            self.rules()
        except ValueError as exc:
            key = "rejected" if str(exc).startswith("outcomes.rejected") else "admitted"
            raise problems_error("OutcomesSection", [((key,), str(exc))]) from None
        return self

    def rules(self) -> OutcomeRules:
        return OutcomeRules(
            admitted=tuple(self.admitted),
            rejected=tuple(self.rejected),
            decision_header=self.decision_header,
        )


class MetricsSection(StrictModel):
    """Your service's own Prometheus metrics mapped to what the layer signatures judge
    (target.metrics must be set). Unmapped: those signatures are skipped, never passed."""

    inflight: str | None = Field(default=None, description="gauge: requests in flight")
    queue_depth: str | None = Field(default=None, description="gauge: queued work items")
    breaker_state: str | None = Field(
        default=None, description="gauge: 0 closed, 1 open, 0.5 half-open (per label set)"
    )

    def mapped(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v}


class StackSection(StrictModel):
    """The dependencies: embedded and local by default, or external URLs."""

    dsp_count: int = Field(default=3, ge=1, le=16)
    redis_url: str | None = Field(default=None, description="redis[s]://host[:port][/db]")
    kafka_bootstrap: str | None = Field(default=None, description="host:port[,host:port...]")
    toxiproxy_url: str | None = Field(default=None, description="http(s)://host:port")
    start_timeout_s: float = Field(default=30.0, gt=0, le=600)

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str | None) -> str | None:
        return _check_url(value, ("redis", "rediss"), "redis[s]://host[:port][/db]")

    @field_validator("toxiproxy_url")
    @classmethod
    def _toxiproxy(cls, value: str | None) -> str | None:
        return _check_url(value, ("http", "https"), "http(s)://host:port")

    @field_validator("kafka_bootstrap")
    @classmethod
    def _kafka(cls, value: str | None) -> str | None:
        return _check_bootstrap(value)


class FaultEntry(StrictModel):
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


class PhasesSection(StrictModel):
    """How the run is cut into phases; derived from load and faults unless set here."""

    recovery_s: float = Field(default=10.0, ge=0, description="recovery window length")
    stress_start_s: float | None = Field(default=None, ge=0)
    stress_end_s: float | None = Field(default=None, ge=0)
    each_disturbance: bool = Field(
        default=False,
        description="a stress and a recovery phase per disturbance (fault, spike, load above "
        "base_rps; close ones merge), numbered stress-2, recovery-2, ... as in a session "
        "(`spikegate replay` writes this); default: one stress window over all of them",
    )

    @model_validator(mode="after")
    def _check(self) -> PhasesSection:
        if self.each_disturbance and (
            self.stress_start_s is not None or self.stress_end_s is not None
        ):
            msg = "phases.each_disturbance derives every stress window: drop stress_start_s/_end_s"
            raise problems_error("PhasesSection", [(("each_disturbance",), msg)])
        return self


@dataclass(frozen=True, slots=True)
class Phase:
    name: Literal["warmup", "baseline", "stress", "recovery", "post"]
    start_s: float
    end_s: float


class Scenario(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    description: str = ""
    seed: int = Field(default=1, ge=0, le=2**63 - 1)
    target: TargetSection = TargetSection()
    stack: StackSection = StackSection()
    dependencies: list[DependencySection] = Field(
        default_factory=list, description="your service's dependencies, each behind a proxy"
    )
    load: LoadSection = LoadSection()
    outcomes: OutcomesSection = OutcomesSection()
    metrics: MetricsSection = MetricsSection()
    faults: list[FaultEntry] = Field(default_factory=list)
    phases: PhasesSection = PhasesSection()
    checks: Thresholds = Field(default=Thresholds(), description="thresholds read by the checker")

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        problems = [
            *self._dependency_problems(),
            *self._fault_problems(),
            *self._phase_problems(),
        ]
        if not problems and self.target.kind == "reference":
            problems = self._target_config_problems()
        if problems:
            raise problems_error("Scenario", problems)
        return self

    def _dependency_problems(self) -> list[Problem]:
        out: list[Problem] = []
        kind = self.target.kind
        if kind == "reference" and self.dependencies:
            msg = (
                "the reference target declares its own dependencies (redis, kafka, dsp-N): "
                "[[dependencies]] are for target.kind = 'command' or 'external'"
            )
            out.append((("dependencies",), msg))
            return out
        seen: set[str] = set()
        for i, dep in enumerate(self.dependencies):
            if dep.name in seen:
                msg = f"{dep.name!r} is declared twice: each dependency needs its own name"
                out.append((("dependencies", i, "name"), msg))
            seen.add(dep.name)
            if kind == "external" and dep.listen is None:
                msg = (
                    f"dependency {dep.name!r}: with target.kind = 'external' the harness does "
                    "not start your service, so it cannot hand it the proxy's address: set "
                    'listen = "127.0.0.1:PORT" and point your service there'
                )
                out.append((("dependencies", i, "listen"), msg))
        names = {d.name for d in self.dependencies}
        fields: list[tuple[tuple[str | int, ...], str]] = [
            (("target", "command", i), arg) for i, arg in enumerate(self.target.command or [])
        ]
        fields += [(("target", "env", k), v) for k, v in self.target.env.items()]
        for loc, text in fields:
            for name in placeholders(text):
                if name in ("port", "python") or (name.startswith("proxy.") and name[6:] in names):
                    continue
                known = ", ".join(
                    ["{port}", "{python}", *(f"{{proxy.{n}}}" for n in sorted(names))]
                )
                msg = f"unknown placeholder {{{name}}} in {text!r}: known are {known}"
                out.append((loc, msg))
        if self.metrics.mapped() and self.target.metrics is None and kind != "reference":
            msg = '[metrics] maps your service\'s metrics: set target.metrics (e.g. "/metrics")'
            out.append((("target", "metrics"), msg))
        if kind == "reference" and self.metrics.mapped():
            msg = "[metrics] maps a user's service's metrics; the reference target has its own"
            out.append((("metrics",), msg))
        if kind == "reference" and self.load.locustfile is not None:
            msg = (
                "load.locustfile drives your own service; the reference target has its own "
                "traffic (set target.kind = 'command' or 'external')"
            )
            out.append((("load", "locustfile"), msg))
        return out

    def _fault_problems(self) -> list[Problem]:
        out: list[Problem] = []
        proxies: tuple[str, ...] | None = tuple(self.proxy_names())
        if self.target.kind == "external" and self.stack.toxiproxy_url and not self.dependencies:
            proxies = None  # proxies the user made on their own toxiproxy: not ours to list
        load = self.load
        for i, f in enumerate(self.faults):
            end = f.at_s + f.for_s
            if end > load.duration_s:
                msg = (
                    f"ends at {end:g} s, after load.duration_s ({load.duration_s:g} s): "
                    "shorten for_s or start earlier"
                )
                out.append((("faults", i, "for_s"), msg))
            elif end <= load.warmup_s:
                msg = (
                    f"ends at {end:g} s, inside the warmup (load.warmup_s = "
                    f"{load.warmup_s:g} s), which is never judged: start it later"
                )
                out.append((("faults", i, "at_s"), msg))
            if f.proxy is not None and proxies is not None and f.proxy not in proxies:
                if proxies:
                    msg = f"{f.proxy!r} is not one of {', '.join(proxies)}"
                else:
                    msg = (
                        f"{f.proxy!r}: no dependency is declared; add [[dependencies]] "
                        f'name = "{f.proxy}" (upstream = "host:port" or start = "redis")'
                    )
                out.append((("faults", i, "proxy"), msg))
                continue
            try:
                f.to_spec()
            except (ValueError, TypeError) as exc:
                out.append((("faults", i, *_fault_field(f, str(exc))), str(exc)))
        if (
            self.faults
            and self.target.kind != "reference"
            and not self.dependencies
            and not (self.target.kind == "external" and self.stack.toxiproxy_url)
        ):
            msg = (
                "faults need proxies in front of your service's dependencies: declare them "
                'as [[dependencies]] (name, upstream = "host:port" or start = "redis"|"kafka")'
            )
            out.append((("faults",), msg))
        return out

    def _phase_problems(self) -> list[Problem]:
        ph, warm, total = self.phases, self.load.warmup_s, self.load.duration_s
        start, end = ph.stress_start_s, ph.stress_end_s
        out: list[Problem] = []
        for key, value in (("stress_start_s", start), ("stress_end_s", end)):
            if value is not None and value > total:
                msg = f"{value:g} s is after the end of the run (load.duration_s = {total:g})"
                out.append((("phases", key), msg))
        if start is not None and start < warm:
            msg = f"{start:g} s is inside the warmup (load.warmup_s = {warm:g}), never judged"
            out.append((("phases", "stress_start_s"), msg))
        if start is not None and end is not None and end <= start:
            msg = f"{end:g} s must be after phases.stress_start_s ({start:g} s)"
            out.append((("phases", "stress_end_s"), msg))
        if out or (start is None and end is None):
            return out
        window = self.stress_window()
        key = "stress_start_s" if end is None else "stress_end_s"
        if window is None:
            msg = (
                f"phases.{key} is set, but the scenario has no spike or fault to take the "
                "other end of the stress window from: set both"
            )
            out.append((("phases", key), msg))
        elif window[1] <= max(window[0], warm):
            msg = (
                f"the stress window would be {window[0]:g}..{window[1]:g} s (the other end "
                "comes from the spike and the faults): set both ends"
            )
            out.append((("phases", key), msg))
        return out

    def _target_config_problems(self) -> list[Problem]:
        """[target.config] against the reference target's own model, merged as at start-up."""
        from spikegate.target.config import TargetConfig

        merged = self.target_config(
            redis_url=PLACEHOLDER_REDIS,
            kafka_bootstrap=PLACEHOLDER_KAFKA,
            dsp_urls=dict.fromkeys(self.dsp_names(), PLACEHOLDER_DSP),
        )
        try:  # JSON mode: strict types, and a path may be a string
            TargetConfig.model_validate_json(json.dumps(merged, default=str), strict=True)
        except ValidationError as exc:
            return [
                (("target", "config", *e["loc"]), describe(e, TargetConfig)) for e in exc.errors()
            ]
        return []

    # --- derived values ---------------------------------------------------------------------
    def fault_specs(self) -> list[FaultSpec]:
        return [f.to_spec() for f in self.faults]

    def publishers(self) -> dict[str, str]:
        """Publisher id -> API key, as the generator and the reference target share them."""
        return {f"pub-{i}": f"key-pub-{i}" for i in range(1, self.load.publishers + 1)}

    def dsp_names(self) -> list[str]:
        return [f"dsp-{i}" for i in range(1, self.stack.dsp_count + 1)]

    def proxy_names(self) -> list[str]:
        """The proxies faults can name: the reference target's, or the declared dependencies."""
        if self.target.kind == "reference":
            return ["redis", "kafka", *self.dsp_names()]
        return [d.name for d in self.dependencies]

    def outcome_rules(self) -> OutcomeRules:
        return self.outcomes.rules()

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
        """warmup, baseline, stress, recovery, post: contiguous, clipped to the run (with
        phases.each_disturbance: a stress, recovery and post per disturbance, numbered)."""
        if self.phases.each_disturbance:
            return self._phases_per_disturbance()
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

    def _phases_per_disturbance(self) -> list[Phase]:
        from spikegate.harness.session import Disturbance, session_phases  # imports us

        load = self.load
        found = [Disturbance(f.at_s, f.at_s + f.for_s, f.fault) for f in self.faults]
        spike = load.disturbance() if load.shape in SPIKY else None
        if spike is not None:
            found.append(Disturbance(spike[0], spike[1], "a load spike"))
        if load.shape == "step":
            rate, since = load.base_rps, 0.0
            for step in [*load.steps, Step(at_s=load.duration_s, rps=load.base_rps)]:
                if rate > load.base_rps and step.at_s > since:
                    found.append(Disturbance(since, step.at_s, "load above base"))
                rate, since = step.rps, step.at_s
        phases = session_phases(load.warmup_s, self.phases.recovery_s, found, load.duration_s)
        return list(phases)

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

        merged: dict[str, Any] = deep_merge(base, self.target.config)
        return merged

    def load_env(self) -> dict[str, str]:
        """Environment for the Locust subprocess (read by locustfiles/)."""
        return {
            LOAD_ENV: json.dumps(self.load.model_dump(mode="json"), sort_keys=True),
            PUBLISHERS_ENV: json.dumps(self.publishers(), sort_keys=True),
            SEED_ENV: str(self.seed),
            OUTCOMES_ENV: self.outcome_rules().to_json(),
        }

    def to_toml(self) -> str:
        """The resolved scenario as TOML (every default filled in, None left out)."""
        return tomli_w.dumps(_drop_none(self.model_dump(mode="json")))


SESSION_MAX_S = 3600.0  # `spikegate up` ends itself after this long (a loop is always bounded)


def session_scenario(scenario: Scenario, max_s: float = SESSION_MAX_S) -> Scenario:
    """The scenario of an interactive session (`spikegate up`): the same target, stack and
    checks, its base rate steady for up to `max_s` seconds, no fault timeline (faults and
    load changes come by hand, and the session's phases from what happened)."""
    data = scenario.model_dump(mode="json")
    load = data["load"]
    load.update(
        shape="steady",
        duration_s=float(max_s),
        peak_rps=0.0,
        spike_at_s=0.0,
        spike_for_s=0.0,
        steps=[],
    )
    data["faults"] = []
    data["phases"] = {"recovery_s": data["phases"]["recovery_s"]}
    return parse_scenario(data, source=f"{scenario.name} (session)")


# --- loading --------------------------------------------------------------------------------
def resolve_path(ref: str | Path) -> Path:
    """A path to a file, or the name of a shipped scenario (`smoke`, `perfect-storm`, ...)."""
    p = Path(ref)
    if p.is_dir():
        found = sorted(x.name for x in p.glob("*.toml"))[:8]
        hint = f"scenario files in it: {', '.join(found)}" if found else _shipped_hint()
        raise ScenarioError(f"scenario {p} is a directory, not a TOML file", hint=hint)
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
    text = _read_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: invalid TOML: {exc}") from None
    if not data:
        raise ScenarioError(
            f"{path}: the scenario is empty (no keys, no sections)",
            hint="a scenario needs at least a [load] section; `spikegate schema` lists every "
            "key, and scenarios/smoke.toml is a short example",
        )
    sets = {_apply_override(data, item): item for item in overrides}
    named = "name" in data
    data.setdefault("name", path.stem)
    scenario = parse_scenario(data, source=str(path), text=text, sets=sets, named=named)
    return anchored(scenario, path.resolve().parent)


def anchored(scenario: Scenario, base: Path) -> Scenario:
    """`scenario` with its relative file paths (load.locustfile, target.cwd) made absolute
    against `base`, the scenario file's folder: the run does not depend on where it starts."""

    def absolute(value: str | None) -> str | None:
        if value is None or Path(value).is_absolute():
            return value
        return str((base / value).resolve())

    load, target = scenario.load, scenario.target
    updates: dict[str, Any] = {}
    if load.locustfile is not None and absolute(load.locustfile) != load.locustfile:
        updates["load"] = load.model_copy(update={"locustfile": absolute(load.locustfile)})
    if target.kind == "command" and absolute(target.cwd or ".") != target.cwd:
        updates["target"] = target.model_copy(update={"cwd": absolute(target.cwd or ".")})
    return scenario.model_copy(update=updates) if updates else scenario


def parse_scenario(
    data: Mapping[str, Any],
    *,
    source: str,
    text: str = "",
    sets: Mapping[tuple[str, ...], str] | None = None,
    named: bool = True,
) -> Scenario:
    """Validate a scenario mapping; ScenarioError names each problem's line or its --set.
    `sets` maps each overridden key path to its `--set` item; `named` is False when the
    name comes from the file name."""
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError.invalid(
            exc, source=source, root=Scenario, text=text, sets=sets, named=named
        ) from None


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ScenarioError(
            f"{path}: not a UTF-8 text file (byte 0x{raw[exc.start]:02x} at line {line})",
            hint="a scenario is a TOML file saved as UTF-8",
        ) from None


_OVERRIDE_KEY = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")


def _apply_override(data: dict[str, Any], item: str) -> tuple[str, ...]:
    """Apply `key.path=value` to `data`; return the key path."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not _OVERRIDE_KEY.fullmatch(key):
        raise ScenarioError(
            f"--set {item!r}: expected key.path=value (e.g. --set load.peak_rps=800)"
        )
    try:
        value: Any = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    node = data
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise ScenarioError(f"--set {item}: {where} is not a table in the scenario")
        node = child
    node[parts[-1]] = value
    return tuple(parts)


def _fault_field(fault: FaultEntry, message: str) -> tuple[str, ...]:
    """Which field of a [[faults]] entry a FaultSpec error is about."""
    if message.startswith("fault must be one of"):
        return ("fault",)
    param = re.match(r"^\w+\.(\w+) must", message)
    if param and param.group(1) in fault.params:
        return ("params", param.group(1))
    if "parameter" in message or "params" in message:
        return ("params",)
    return ("proxy",) if "proxy" in message else ()


def _shipped_hint() -> str:
    names = shipped()
    return "shipped scenarios: " + (", ".join(names) if names else "(none found)")


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value
