"""The offered load: the scenario's `[load]` section, as the harness and Locust both read it.

    scenario.toml [load] --LoadSection--> harness (phases, stress window)
                              |
                              +--model_dump(mode="json") as SPIKEGATE_LOAD--> Locust shapes

One model, strict (a TOML string is not a number; an integer is a valid float), frozen,
unknown keys refused. Rules that tie fields together raise errors located at the field
that has to change (`load.peak_rps`, `load.steps.1.at_s`), so a scenario error can name its
line. Imports only pydantic and the standard library.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

__all__ = [
    "ARRIVALS",
    "MAX_RPS",
    "MODES",
    "SHAPES",
    "Arrivals",
    "LoadSection",
    "Mode",
    "Problem",
    "Shape",
    "Step",
    "StrictModel",
    "problems_error",
]

Shape = Literal["steady", "step", "flash_crowd", "hot_publisher", "sawtooth", "ramp_to_knee"]
Arrivals = Literal["uniform", "poisson"]
Mode = Literal["open", "closed"]
SHAPES: tuple[str, ...] = get_args(Shape)
ARRIVALS: tuple[str, ...] = get_args(Arrivals)
MODES: tuple[str, ...] = get_args(Mode)
MAX_RPS = 1_000_000.0

SPIKY: tuple[str, ...] = ("flash_crowd", "hot_publisher")  # a spike window of their own
RISING: tuple[str, ...] = (*SPIKY, "sawtooth", "ramp_to_knee")  # they rise to peak_rps

Problem = tuple[tuple[str | int, ...], str]
"""A rule broken: where (a location inside the model being validated) and why."""


class StrictModel(BaseModel):
    """Frozen, no unknown keys, no coercion from strings, no NaN or infinity."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def problems_error(title: str, problems: Sequence[Problem]) -> ValidationError:
    """A ValidationError carrying each problem at its own location. Raised from a model
    validator, pydantic prefixes the locations with the field path of the model."""
    return ValidationError.from_exception_data(
        title,
        [
            InitErrorDetails(
                type=PydanticCustomError("scenario_rule", "{message}", {"message": message}),
                loc=loc,
                input=None,
            )
            for loc, message in problems
        ],
    )


class Step(StrictModel):
    """From `at_s` on (until the next step), the arrival rate is `rps`."""

    at_s: float = Field(ge=0)
    rps: float = Field(ge=0, le=MAX_RPS)


class LoadSection(StrictModel):
    """The offered load: an arrival rate over time (open model), from one named shape."""

    shape: Shape = "steady"
    duration_s: float = Field(default=30.0, gt=0, le=86_400, description="whole run")
    warmup_s: float = Field(default=5.0, ge=0)
    base_rps: float = Field(default=50.0, ge=0, le=MAX_RPS)
    peak_rps: float = Field(default=0.0, ge=0, le=MAX_RPS)
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
    workers: int = Field(
        default=0,
        ge=0,
        le=256,
        description="Locust workers to wait for (`spikegate worker --master HOST:PORT`, on "
        "this or other machines); 0: the load runs in this machine's `processes`",
    )
    workers_wait_s: float = Field(
        default=30.0, gt=0, le=3600, description="how long the run waits for its workers"
    )
    master_bind: str = Field(
        default="127.0.0.1:0",
        description="HOST:PORT the Locust master listens on for workers (port 0: any free)",
    )
    arrivals: Arrivals = Field(
        default="uniform", description="intended send instants: evenly spaced or Poisson"
    )
    mode: Mode = Field(
        default="open", description="open: send on schedule whatever the answers (default)"
    )
    locustfile: str | None = Field(
        default=None,
        description="your own Locust file (relative to the scenario file): each intended "
        "arrival runs one task of its user class",
    )
    user: str | None = Field(
        default=None, description="the User class in load.locustfile (default: the only one)"
    )

    @model_validator(mode="after")
    def _check(self) -> LoadSection:
        problems = [*self._timing(), *self._shape_rules()]
        if problems:
            raise problems_error("LoadSection", problems)
        return self

    def _timing(self) -> list[Problem]:
        out: list[Problem] = []
        if self.warmup_s >= self.duration_s:
            out.append(
                (
                    ("warmup_s",),
                    f"load.warmup_s ({self.warmup_s:g}) must be less than load.duration_s "
                    f"({self.duration_s:g})",
                )
            )
        last = -1.0
        for i, step in enumerate(self.steps):
            if step.at_s >= self.duration_s:
                msg = f"starts at {step.at_s:g} s, not before load.duration_s ({self.duration_s:g})"
                out.append((("steps", i, "at_s"), msg))
            elif step.at_s <= last:
                msg = f"must be greater than the previous step's at_s ({last:g})"
                out.append((("steps", i, "at_s"), msg))
            last = step.at_s
        ids = [f"pub-{i}" for i in range(1, self.publishers + 1)]
        if self.hot_publisher not in ids:
            out.append(
                (
                    ("hot_publisher",),
                    f"{self.hot_publisher!r} is not one of pub-1..pub-{self.publishers} "
                    "(load.publishers)",
                )
            )
        return out

    def _shape_rules(self) -> list[Problem]:
        out: list[Problem] = []
        shape = self.shape
        if shape in SPIKY:
            if self.spike_for_s <= 0:
                out.append((("spike_for_s",), f"load.spike_for_s must be > 0 for shape {shape!r}"))
            elif self.spike_at_s + self.spike_for_s > self.duration_s:
                out.append(
                    (
                        ("spike_for_s",),
                        "load.spike_at_s + load.spike_for_s must end within load.duration_s "
                        f"({self.spike_at_s:g} + {self.spike_for_s:g} > {self.duration_s:g})",
                    )
                )
            if self.spike_at_s < self.warmup_s:
                out.append(
                    (
                        ("spike_at_s",),
                        f"load.spike_at_s ({self.spike_at_s:g}) must not start before "
                        f"load.warmup_s ({self.warmup_s:g}) ends",
                    )
                )
        if shape in RISING and self.peak_rps <= self.base_rps:
            out.append(
                (
                    ("peak_rps",),
                    f"load.peak_rps ({self.peak_rps}) must exceed load.base_rps "
                    f"({self.base_rps}) for shape {shape!r}",
                )
            )
        if self.user is not None and self.locustfile is None:
            msg = "load.user names a class in load.locustfile: set load.locustfile too"
            out.append((("user",), msg))
        if self.user is not None and not self.user.isidentifier():
            out.append((("user",), f"{self.user!r} is not a Python class name"))
        if self.locustfile is not None and not self.locustfile.strip():
            out.append((("locustfile",), "load.locustfile is empty: give a path to a .py file"))
        out += self._worker_rules()
        if shape == "step" and not self.steps:
            msg = "load.steps must list at least one {at_s, rps} for shape 'step'"
            out.append((("steps",), msg))
        return out

    def _worker_rules(self) -> list[Problem]:
        out: list[Problem] = []
        if self.workers and self.processes > 1:
            msg = (
                "load.processes must be 1 with load.workers: give each worker its processes "
                "(spikegate worker --master HOST:PORT --processes N)"
            )
            out.append((("processes",), msg))
        if self.workers and self.locustfile is not None:
            msg = (
                "load.workers does not run load.locustfile yet (a worker imports your "
                "locustfile before it hears from the master): use load.processes on this machine"
            )
            out.append((("workers",), msg))
        host, _, port = self.master_bind.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            msg = (
                "load.master_bind must be HOST:PORT, e.g. 127.0.0.1:5557 "
                f"(got {self.master_bind!r})"
            )
            out.append((("master_bind",), msg))
        return out

    def disturbance(self) -> tuple[float, float] | None:
        """The load's own stress window (a spike), if the shape has one."""
        if self.shape in SPIKY:
            return (self.spike_at_s, self.spike_at_s + self.spike_for_s)
        if self.shape in ("sawtooth", "ramp_to_knee"):
            return (self.warmup_s, self.duration_s)
        if self.shape == "step" and self.steps:
            return (max(self.warmup_s, self.steps[0].at_s), self.duration_s)
        return None
