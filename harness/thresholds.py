"""Thresholds: the scenario's `[checks]` section, parsed from readable k6-like strings.

    [checks]                         Thresholds (pydantic, frozen)
    slo = "p99 < 150ms"    ---->     slo = LatencyBound(percentile=99.0, op="<", bound_ms=150.0)
    recover = "within 15s" ---->     recover = Within(seconds=15.0)

Every key, its default and its meaning (the README copies this table):

| key                 | default         | meaning                                                  |
|---------------------|-----------------|----------------------------------------------------------|
| `slo`               | `"p99 < 150ms"` | admitted-latency SLO: baseline, post, recovery           |
| `error_rate`        | `"rate < 1%"`   | failed share of sent, baseline/post/recovered (1)        |
| `unexpected_errors` | `"rate < 1%"`   | failed share of sent during stress (1)                   |
| `steady_rejections` | `"rate < 1%"`   | designed-rejection share of sent, baseline and post (9)  |
| `goodput_floor`     | `">= 80%"`      | stress goodput / capacity (2)                            |
| `capacity_rps`      | none            | declared capacity in admitted/s (2)                      |
| `latency_factor`    | `3.0`           | stress admitted p99 <= max(SLO bound, factor x baseline) |
| `fast_reject`       | half the SLO    | stress rejected pNN, all kinds (graceful_degradation)    |
| `server_reject`     | `"p99 < 5ms"`   | server-side cost of 429s, bulkhead_full, sheds (8)       |
| `client_reject`     | `"p90 < 10ms"`  | client-side latency of the same, per layer (8) (11)      |
| `inflight_max`      | the target's    | auction inflight ceiling (3) (11)                        |
| `queue_max`         | the target's    | impression queue depth cap (4) (11)                      |
| `rss_growth`        | `"< 200MB"`     | target RSS growth over its baseline level                |
| `detect`            | `"within 5s"`   | first second of need -> first protective decision (5)    |
| `settle`            | `"within 1s"`   | latencies right after each onset not judged (7)          |
| `recover`           | `"within 15s"`  | end of last disturbance -> recovered (6)                 |
| `hold`              | `3`             | healthy seconds that count as recovered; relapse (6)     |
| `generator_min`     | `">= 95%"`      | sent / intended per judged phase, else inconclusive      |
| `generator_cpu`     | `"< 90%"`       | generator CPU p90 (one core = 100%), else inconclusive   |
| `generator_lateness_p99_ms` | `10` | generator p99 send lateness (ms), else inconclusive (12) |
| `min_seconds`       | `3`             | seconds of data a judged phase needs, else inconclusive  |
| `min_requests`      | `50`            | samples a latency percentile needs, else inconclusive    |
| `isolation`         | `"rate < 5%"`   | non-admitted share of each non-hot publisher in a spike  |
| `lost_impressions`  | `0`             | acked impressions allowed to be missing from Kafka       |
| `layers`            | `true`          | judge layer signatures (your service: see (11))          |

(1) failures: 5xx without a decision header, other 4xx, timeouts, connection errors;
    designed rejections (rate_limited, overloaded, shed) never count.
(2) goodput = admitted responses (ok, no_bid, accepted) per second over the stress window;
    capacity = min(offered rate in stress, `capacity_rps` or else the admitted rate
    measured in baseline; without a baseline, the offered rate).
(3) none = the ceiling the target exports, else target.config auction.limit (64).
(4) none = target.config impressions.max_depth (10000).
(5) protection is first needed at the earliest of: the onset of a hard fault (down,
    reset, timeout, stall, or a bandwidth of 0); the onset of any other disturbance (a
    latency fault, the load spike) whose window holds a second over the SLO, or that drew
    a protective decision within `settle` of its onset (measured, it cannot fail); the
    first stress second over the SLO. An onset is the first whole second a disturbance
    touches. A second is over the SLO when load was sent and its
    admitted pNN breaks `slo` or its failures break `unexpected_errors` (a second that
    admitted nothing and failed is over it). A protective decision is a designed rejection
    or a breaker not closed, from that second on. Never needed (the SLO held every stress
    second, no hard fault) passes as "no protection needed"; needed, none taken, passes
    only if no second broke the SLO (a hard fault absorbed).
(7) graceful_degradation judges stress latencies once protection had time to engage: the
    first `settle` after the stress start and after each fault start is left out (a breaker
    needs a few slow calls as evidence); time_to_detect judges that moment instead.
(6) a healthy second: load was sent, admitted p99 meets `slo`, failures meet
    `error_rate`, and the admitted share meets `goodput_floor`. Recovered: `hold`
    consecutive healthy seconds. After that, any later window of `hold` consecutive
    seconds (to the end of the run) whose merged figures break the same bounds is a
    relapse and fails time_to_recover, naming its first and worst second.
(8) layer.edge (429 rate_limited), layer.bulkhead (bulkhead_full) and layer.shedder
    (shed) judge "answered fast" twice, over the run after warmup, and fail on either:
    server-side on the target's own `spikegate_rejection_seconds{layer}` histogram
    (sampled each second; layers edge, auction, impressions) against `server_reject`, and
    client-side on the rejected latency of the seconds whose rejections were >= 90% that
    decision against `client_reject`, so a target whose histogram lies fails too. The
    server pNN is the upper edge of the bucket holding it (an upper bound); a bucket's edge
    equal to a `<` bound counts as within it, since the bucket holds values <= its edge. A
    bulkhead_full may wait for a permit by design, so both its bounds get the target's
    auction.max_wait_ms added. Healthy runs measure p99 <= 0.75 ms server-side and p90
    <= 0.8 ms client-side; a rejection delayed by 20 ms fails both. Without server-side data
    (an older run directory) or without pure seconds, the other side decides alone.
(9) designed rejections (429, 503 with a decision header) at base load: a target that
    rate-limits or sheds outside a disturbance is broken. Judged by steady_state on the
    whole phase, beside `slo` and `error_rate`, which it does not count towards.
(10) layer.edge bounds each publisher's admissions both ways, in every load shape. From
    above: in any window, admitted <= burst + rate x (t + 1 s). From below: what got past
    the edge (sent - 429s) falls short of what its own bucket owes it by at most burst +
    rate x 1 s in any window. Owed is a fluid bucket (full at the start, each second's
    requests spread over it) fed the publisher's sends: all it sent while under its rate,
    about its rate while over it. A bucket shared by all publishers, or refilling too
    slowly, fails. Healthy runs fall short by <= 7 requests against a slack of 55..190.
(11) your own service (target kind "command" or "external") is judged from outside: the
    client-side latency of every designed rejection in stress against `client_reject`
    (graceful_degradation); its in-flight and queue depth only where [metrics] maps them
    (inflight, queue_depth) and `inflight_max` / `queue_max` bound them (bounded_resources,
    layer.bulkhead, layer.shedder), its breakers only where [metrics] breaker_state maps
    them and a fault hits a dependency (layer.breaker); layer.edge has no mapping. What
    cannot be judged is reported skipped with its reason: never passed, never deciding the
    run. No default bound: the service's limits are its own.
(12) read per judged phase from the generator's per-second lateness counts (sends later
    than 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000 ms, summed over its processes and
    workers): the p99 is over the bound when more than 1% of the phase's sends were later
    than it. A bound between those is read at the nearest one below, which can only
    overstate lateness (a generator that may not have held is never taken to have held);
    the least accepted is 1. Rows without the counts (an older run directory, a recorder of
    your own) leave this part out, saying so in the evidence.

Accepted forms: a latency bound `pNN[.N] (<|<=) N(us|ms|s)` (also `p(99)`), a rate
`rate (<|<=) N%`, a floor `(>=|>) N%`, a duration `within N(ms|s|m)`, a size
`(<|<=) N(B|KB|MB|GB|KiB|MiB|GiB)`. Errors name the key and the accepted form. Types
are strict (`hold = "three"` and `layers = "yes"` are errors); `[checks]` is validated when
the scenario loads, before anything starts, and `spikegate schema` describes every key in
these forms. `spikegate check RUN --set checks.KEY=VALUE` checks each override on its own.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
)

from spikegate.harness.errors import UsageError

__all__ = [
    "Floor",
    "LatencyBound",
    "RateBound",
    "SizeBound",
    "Thresholds",
    "Within",
    "apply_check_overrides",
    "parse_check_overrides",
    "parse_floor",
    "parse_latency",
    "parse_rate",
    "parse_size",
    "parse_within",
    "thresholds_from_checks",
]

Op = Literal["<", "<="]


def _holds(value: float, op: str, bound: float) -> bool:
    if op == "<":
        return value < bound
    if op == "<=":
        return value <= bound
    if op == ">":
        return value > bound
    return value >= bound


def _num(text: str) -> str:
    return f"{float(text):g}"


@dataclass(frozen=True, slots=True)
class LatencyBound:
    """`p99 < 150ms`: the given percentile of a latency distribution stays under a bound."""

    percentile: float
    op: Op
    bound_ms: float

    def ok(self, value_ms: float) -> bool:
        return _holds(value_ms, self.op, self.bound_ms)

    def __str__(self) -> str:
        return f"p{self.percentile:g} {self.op} {self.bound_ms:g}ms"


@dataclass(frozen=True, slots=True)
class RateBound:
    """`rate < 1%`: a share stays under a bound (fraction in [0, 1])."""

    op: Op
    fraction: float

    def ok(self, value: float) -> bool:
        return _holds(value, self.op, self.fraction)

    def __str__(self) -> str:
        return f"rate {self.op} {self.fraction * 100:g}%"


@dataclass(frozen=True, slots=True)
class Floor:
    """`>= 80%`: a share reaches at least a floor (fraction in [0, 1])."""

    op: Literal[">", ">="]
    fraction: float

    def ok(self, value: float) -> bool:
        return _holds(value, self.op, self.fraction)

    def __str__(self) -> str:
        return f"{self.op} {self.fraction * 100:g}%"


@dataclass(frozen=True, slots=True)
class Within:
    """`within 10s`: a duration budget (inclusive)."""

    seconds: float

    def ok(self, value_s: float) -> bool:
        return value_s <= self.seconds

    def __str__(self) -> str:
        return f"within {self.seconds:g}s"


@dataclass(frozen=True, slots=True)
class SizeBound:
    """`< 200MB`: a size stays under a bound, in bytes."""

    op: Op
    bytes: float

    def ok(self, value: float) -> bool:
        return _holds(value, self.op, self.bytes)

    def __str__(self) -> str:
        mb = f"{self.bytes / 1e6:g}"
        if abs(float(mb) * 1e6 - self.bytes) < 0.5:  # MB reads better, when exact
            return f"{self.op} {mb}MB"
        return f"{self.op} {self.bytes:.0f}B"


_LATENCY = re.compile(
    r"^p\(?(\d{1,2}(?:\.\d+)?|100)\)?\s*(<=|<)\s*(\d+(?:\.\d+)?)\s*(us|µs|ms|s)$", re.I
)
_RATE = re.compile(r"^rate\s*(<=|<)\s*(\d+(?:\.\d+)?)\s*%$", re.I)
_FLOOR = re.compile(r"^(>=|>)\s*(\d+(?:\.\d+)?)\s*%$")
_WITHIN = re.compile(r"^within\s+(\d+(?:\.\d+)?)\s*(ms|s|m)$", re.I)
_SIZE = re.compile(r"^(<=|<)\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|kib|mib|gib)$", re.I)
_DURATION = re.compile(r"^(\d+)\s*s?$", re.I)

_TIME_MS = {"us": 0.001, "µs": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_BYTES = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def _text(value: Any, form: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string like {form}, got {value!r}")
    return value.strip()


def parse_latency(value: Any) -> LatencyBound:
    """`"p99 < 150ms"`, `"p99.9 <= 1s"`, `"p(95)<200ms"` -> LatencyBound."""
    if isinstance(value, LatencyBound):
        return value
    form = '"p99 < 150ms" (percentile p0..p100, < or <=, a number with us, ms or s)'
    m = _LATENCY.match(_text(value, form))
    if not m:
        raise ValueError(f"expected a latency bound like {form}, got {value!r}")
    pct = float(m.group(1))
    if not 0 < pct <= 100:
        raise ValueError(f"the percentile must be in (0, 100], got {value!r}")
    op: Op = "<=" if m.group(2) == "<=" else "<"
    return LatencyBound(pct, op, float(m.group(3)) * _TIME_MS[m.group(4).lower()])


def parse_rate(value: Any) -> RateBound:
    """`"rate < 1%"`, `"rate <= 0.5%"` -> RateBound."""
    if isinstance(value, RateBound):
        return value
    form = '"rate < 1%" (< or <=, a percentage 0..100)'
    m = _RATE.match(_text(value, form))
    if not m or float(m.group(2)) > 100:
        raise ValueError(f"expected a rate like {form}, got {value!r}")
    op: Op = "<=" if m.group(1) == "<=" else "<"
    return RateBound(op, float(m.group(2)) / 100)


def parse_floor(value: Any) -> Floor:
    """`">= 80%"` -> Floor."""
    if isinstance(value, Floor):
        return value
    form = '">= 80%" (>= or >, a percentage 0..100)'
    m = _FLOOR.match(_text(value, form))
    if not m or float(m.group(2)) > 100:
        raise ValueError(f"expected a floor like {form}, got {value!r}")
    op: Literal[">", ">="] = ">" if m.group(1) == ">" else ">="
    return Floor(op, float(m.group(2)) / 100)


def parse_within(value: Any) -> Within:
    """`"within 10s"`, `"within 500ms"`, `"within 2m"` -> Within."""
    if isinstance(value, Within):
        return value
    form = '"within 10s" (a number with ms, s or m)'
    m = _WITHIN.match(_text(value, form))
    if not m:
        raise ValueError(f"expected a duration budget like {form}, got {value!r}")
    return Within(float(m.group(1)) * _TIME_MS[m.group(2).lower()] / 1000)


def parse_size(value: Any) -> SizeBound:
    """`"< 200MB"`, `"<= 1GiB"` -> SizeBound."""
    if isinstance(value, SizeBound):
        return value
    form = '"< 200MB" (< or <=, a number with B, KB, MB, GB, KiB, MiB or GiB)'
    m = _SIZE.match(_text(value, form))
    if not m:
        raise ValueError(f"expected a size bound like {form}, got {value!r}")
    op: Op = "<=" if m.group(1) == "<=" else "<"
    return SizeBound(op, float(m.group(2)) * _BYTES[m.group(3).lower()])


def _parse_hold(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f'expected whole seconds like 3 or "3s" (1..3600), got {value!r}')
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and _DURATION.match(value.strip()):
        n = int(_DURATION.match(value.strip()).group(1))  # type: ignore[union-attr]
    else:
        raise ValueError(f'expected whole seconds like 3 or "3s" (1..3600), got {value!r}')
    if not 1 <= n <= 3600:
        raise ValueError(f'expected whole seconds like 3 or "3s" (1..3600), got {value!r}')
    return n


def _ser(v: object) -> str:
    return str(v)


def _ser_cpu(v: RateBound) -> str:
    return f"{v.op} {v.fraction * 100:g}%"


_CPU = re.compile(r"^(<=|<)\s*(\d+(?:\.\d+)?)\s*%$")


def _parse_cpu(value: Any) -> RateBound:
    if isinstance(value, RateBound):
        return value
    form = '"< 90%" (< or <=, a percentage of one core, 1..100)'
    m = _CPU.match(_text(value, form))
    if not m or not 0 < float(m.group(2)) <= 100:
        raise ValueError(f"expected a CPU bound like {form}, got {value!r}")
    return RateBound("<=" if m.group(1) == "<=" else "<", float(m.group(2)) / 100)


def _form(pattern: str, *examples: str) -> WithJsonSchema:
    """What an editor sees: a string of this form (JSON Schema regex, case as written)."""
    return WithJsonSchema({"type": "string", "pattern": pattern, "examples": list(examples)})


_NUM = r"\d+(\.\d+)?"
Latency = Annotated[
    LatencyBound,
    BeforeValidator(parse_latency),
    PlainSerializer(_ser),
    _form(rf"^[pP]\(?{_NUM}\)?\s*<=?\s*{_NUM}\s*(us|µs|ms|s)$", "p99 < 150ms", "p99.9 <= 1s"),
]
Rate = Annotated[
    RateBound,
    BeforeValidator(parse_rate),
    PlainSerializer(_ser),
    _form(rf"^rate\s*<=?\s*{_NUM}\s*%$", "rate < 1%"),
]
FloorT = Annotated[
    Floor,
    BeforeValidator(parse_floor),
    PlainSerializer(_ser),
    _form(rf"^>=?\s*{_NUM}\s*%$", ">= 80%"),
]
WithinT = Annotated[
    Within,
    BeforeValidator(parse_within),
    PlainSerializer(_ser),
    _form(rf"^within\s+{_NUM}\s*(ms|s|m)$", "within 15s"),
]
Size = Annotated[
    SizeBound,
    BeforeValidator(parse_size),
    PlainSerializer(_ser),
    _form(rf"^<=?\s*{_NUM}\s*([kKmMgG]i?)?[bB]$", "< 200MB"),
]
_HOLD_FORM = WithJsonSchema(
    {
        "anyOf": [
            {"type": "integer", "minimum": 1, "maximum": 3600},
            {"type": "string", "pattern": r"^\d+\s*s?$"},
        ],
        "examples": [3, "3s"],
    }
)
Hold = Annotated[int, BeforeValidator(_parse_hold), _HOLD_FORM]
Cpu = Annotated[
    RateBound,
    BeforeValidator(_parse_cpu),
    PlainSerializer(_ser_cpu),
    _form(rf"^<=?\s*{_NUM}\s*%$", "< 90%"),
]


def _describe(schema: dict[str, Any]) -> None:
    """Each key's JSON Schema description is its row of the module docstring's table, and
    its default is written in the form a scenario uses (`"p99 < 150ms"`)."""
    props = schema.get("properties", {})
    rows = re.findall(r"^\| `(\w+)` +\| (.+?) +\| (.+?) +\|$", __doc__ or "", re.M)
    for key, default, meaning in rows:
        if key in props:
            text = re.sub(r"\s*\(\d\)$", "", meaning.strip())
            props[key]["description"] = f"{text} (default: {default.strip().strip('`')})"
    for key, value in Thresholds().model_dump(mode="json").items():
        if key in props and value is not None:
            props[key]["default"] = value


class Thresholds(BaseModel):
    """The resolved `[checks]` (see the module docstring for every key and default)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        allow_inf_nan=False,
        arbitrary_types_allowed=True,
        json_schema_extra=_describe,
    )

    slo: Latency = parse_latency("p99 < 150ms")
    error_rate: Rate = parse_rate("rate < 1%")
    unexpected_errors: Rate = parse_rate("rate < 1%")
    steady_rejections: Rate = parse_rate("rate < 1%")
    goodput_floor: FloorT = parse_floor(">= 80%")
    capacity_rps: float | None = Field(default=None, gt=0)
    latency_factor: float = Field(default=3.0, ge=1, le=1000)
    fast_reject: Latency | None = None
    server_reject: Latency = parse_latency("p99 < 5ms")
    client_reject: Latency = parse_latency("p90 < 10ms")
    inflight_max: int | None = Field(default=None, ge=1)
    queue_max: int | None = Field(default=None, ge=1)
    rss_growth: Size = parse_size("< 200MB")
    detect: WithinT = parse_within("within 5s")
    settle: WithinT = parse_within("within 1s")
    recover: WithinT = parse_within("within 15s")
    hold: Hold = 3
    generator_min: FloorT = parse_floor(">= 95%")
    generator_cpu: Cpu = RateBound("<", 0.90)
    generator_lateness_p99_ms: float = Field(default=10.0, ge=1, le=60_000)
    min_seconds: int = Field(default=3, ge=1, le=86_400)
    min_requests: int = Field(default=50, ge=1)
    isolation: Rate = parse_rate("rate < 5%")
    lost_impressions: int = Field(default=0, ge=0)
    layers: bool = True

    @property
    def reject_bound(self) -> LatencyBound:
        """The fast-reject bound: `fast_reject`, or half the SLO bound at the SLO's percentile."""
        if self.fast_reject is not None:
            return self.fast_reject
        return LatencyBound(self.slo.percentile, self.slo.op, self.slo.bound_ms / 2)

    @property
    def cpu_max_percent(self) -> float:
        return self.generator_cpu.fraction * 100

    def to_json(self) -> dict[str, Any]:
        out = self.model_dump(mode="json")
        out["fast_reject"] = str(self.reject_bound) + (
            "" if self.fast_reject is not None else " (half the SLO)"
        )
        return out


_FORMS = {
    "slo": '"p99 < 150ms"',
    "fast_reject": '"p99 < 50ms"',
    "server_reject": '"p99 < 5ms"',
    "client_reject": '"p90 < 10ms"',
    "error_rate": '"rate < 1%"',
    "unexpected_errors": '"rate < 1%"',
    "steady_rejections": '"rate < 1%"',
    "isolation": '"rate < 5%"',
    "goodput_floor": '">= 80%"',
    "generator_min": '">= 95%"',
    "generator_cpu": '"< 90%"',
    "generator_lateness_p99_ms": "a number of ms, at least 1 (the least lateness counted), e.g. 10",
    "detect": '"within 5s"',
    "settle": '"within 1s"',
    "recover": '"within 15s"',
    "rss_growth": '"< 200MB"',
    "hold": '3 or "3s"',
}


def thresholds_from_checks(
    checks: Mapping[str, Any] | Thresholds, *, source: str = "[checks]"
) -> Thresholds:
    """Validate a `[checks]` mapping; UsageError names the key, the problem and the form."""
    if isinstance(checks, Thresholds):
        return checks
    try:
        return Thresholds.model_validate(dict(checks))
    except ValidationError as exc:
        problems = [f"  checks.{_key(e)}: {_problem(e)}" for e in exc.errors()]
    raise UsageError(f"{source}: invalid thresholds:\n" + "\n".join(problems))


def _key(e: Any) -> str:
    return ".".join(str(p) for p in e["loc"]) or "(top level)"


def _problem(e: Any) -> str:
    key = _key(e)
    msg = str(e["msg"]).removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key, list(Thresholds.model_fields), n=1)
        guess = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key; {guess}known keys: " + ", ".join(sorted(Thresholds.model_fields))
    if "expected" not in msg:
        msg = f"{msg}, got {e.get('input')!r}"
        if key in _FORMS:
            msg = f"{msg} (accepted form: {_FORMS[key]})"
    return msg


def parse_check_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """`checks.slo=p99 < 100ms` (or `slo=...`) items, each key and value checked on its own:
    UsageError names the `--set`. A value is read as TOML when it parses (`"p99 < 100ms"`,
    `3`, `true`), else kept as a string."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().removeprefix("checks.")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise UsageError(
                f'--set {item!r}: expected checks.KEY=VALUE, e.g. --set checks.slo="p99 < 100ms"',
                hint="a stored run is re-judged offline: only checks.* can change",
            )
        try:
            value: Any = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        try:
            Thresholds.model_validate({key: value})
        except ValidationError as exc:
            raise UsageError(f"--set {item}: {_problem(exc.errors()[0])}") from None
        out[key] = value
    return out


def apply_check_overrides(
    checks: Mapping[str, Any] | Thresholds, overrides: Sequence[str]
) -> dict[str, Any]:
    """`checks` (a `[checks]` mapping or resolved Thresholds) with `--set checks.*` laid over
    it; each override is checked (see parse_check_overrides)."""
    return {**dict(checks), **parse_check_overrides(overrides)}
