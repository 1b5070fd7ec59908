"""`spikegate init`: a commented starter scenario and locustfile for your own service.

    spikegate init [DIR] [--url URL] [--force]
        DIR/spikegate.toml   kind = "external" at URL, a small flash crowd, every section
                             explained; the kind = "command" variant and [[dependencies]]
                             commented out
        DIR/locustfile.py    one HttpUser with one GET / task

Both run as written (`spikegate run spikegate.toml` against a service answering GET / at
URL). Existing files are never overwritten without --force.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from spikegate.harness.errors import UsageError
from spikegate.harness.scenario import TargetSection

__all__ = [
    "DEFAULT_URL",
    "LOCUSTFILE",
    "SCENARIO_FILE",
    "Starter",
    "starter_files",
    "write_starter",
]

DEFAULT_URL = "http://127.0.0.1:8000"
SCENARIO_FILE = "spikegate.toml"
LOCUSTFILE = "locustfile.py"

_SCENARIO = """\
# Spikegate scenario for your own service, written by `spikegate init`. Edit it freely.
#
#   spikegate run spikegate.toml          run, judge, write the reports; exit code:
#     0 every verdict passed   1 a verdict failed (CI: the build fails)
#     2 a mistake in this file (the message names the line and the fix)
#     3 inconclusive (the load generator could not hold the rate)   4 environment
#   spikegate schema                      every key, as a JSON Schema for your editor
name = {name}
description = "flash crowd against my service"
seed = 1  # the seed of every random choice: the same seed, the same run

[target]
# A service that is already running (you started it, or docker compose did). Spikegate only
# sends it traffic; it must answer on loopback (allow_remote = true lets it be elsewhere).
kind = "external"
url = {url}
#
# Or let Spikegate start your service (and stop it afterwards): replace the two lines above
# with these. {{port}} is the port it must listen on (127.0.0.1); {{proxy.NAME}} is the
# address of the chaos proxy in front of dependency NAME (see [[dependencies]]).
# kind = "command"
# command = ["{{python}}", "app.py", "--port", "{{port}}", "--redis", "redis://{{proxy.cache}}/0"]
# cwd = "."              # relative to this file
# env = {{ LOG_LEVEL = "warning" }}
# ready = "/healthz"     # polled until it answers 2xx (within stack.start_timeout_s)
# metrics = "/metrics"   # its Prometheus text, if it has one (see [metrics])

# Your service's dependencies. Each one sits behind a chaos proxy that [[faults]] can name.
# [[dependencies]]
# name = "cache"
# start = "redis"                 # Spikegate starts a redis-server for it ("redis" | "kafka")
#
# [[dependencies]]
# name = "db"
# upstream = "127.0.0.1:5432"     # one you run yourself
# listen = "127.0.0.1:15432"      # kind = "external" only: point your service at this port

[load]
# Open model: requests arrive on schedule whatever the answers, as real users do. Each
# arrival runs one task of the User class in the locustfile (weights respected).
locustfile = "locustfile.py"     # relative to this file
# user = "WebsiteUser"           # needed when the file has several User classes
shape = "flash_crowd"            # also: steady, step, sawtooth, ramp_to_knee
duration_s = 40
warmup_s = 5                     # never judged
base_rps = 10
peak_rps = 40                    # from spike_at_s for spike_for_s seconds
spike_at_s = 15
spike_for_s = 10
client_timeout_s = 2.0           # a slower answer is a timeout: a failure

# Faults on the dependencies' proxies (needs [[dependencies]]).
# [[faults]]
# at_s = 15
# for_s = 10
# fault = "latency"              # also: down, reset, timeout, bandwidth, slicer, limit_data
# proxy = "cache"
# params = {{ latency_ms = 100 }}

[outcomes]
# How answers are counted. A designed rejection is your service saying "not now" on
# purpose; it must carry Retry-After and be fast. Anything else that is not admitted
# (500, 404, a timeout, a reset) is a failure.
admitted = ["2xx"]
rejected = [429, 503]
# decision_header = "X-Decision"  # when set, a 429/503 without it is a failure

[metrics]
# Your service's own Prometheus metrics (needs target.metrics), mapped to what Spikegate
# judges. Unmapped, those checks are skipped with their reason, never passed.
# inflight = "myservice_requests_in_flight"   # gauge: bounded_resources, with inflight_max
# queue_depth = "myservice_queue_depth"       # gauge: bounded_resources, with queue_max
# breaker_state = "myservice_breaker_state"   # gauge: 0 closed, 1 open, 0.5 half-open

[phases]
recovery_s = 10  # after the last disturbance, how long recovery is judged

[checks]
# The verdicts' thresholds (the README's "Checks" section has every key).
slo = "p99 < 150ms"              # admitted latency at base load and after recovery
error_rate = "rate < 1%"         # failures at base load and after recovery
unexpected_errors = "rate < 1%"  # failures during the spike and the faults
goodput_floor = ">= 80%"         # admitted/s during stress, against capacity
recover = "within 15s"           # end of the disturbance -> healthy again
# inflight_max = 64              # with [metrics] inflight: the most ever in flight
"""


@dataclass(frozen=True)
class Starter:
    """The files `init` writes: name -> text."""

    files: dict[str, str]


def starter_files(*, url: str = DEFAULT_URL, name: str = "my-service") -> Starter:
    """The starter scenario (for an external service at `url`) and its locustfile."""
    try:
        TargetSection(kind="external", url=url)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise UsageError(
            f"--url {url!r}: {reason}", hint="e.g. --url http://127.0.0.1:8000"
        ) from None
    scenario = _SCENARIO.format(name=json.dumps(name), url=json.dumps(url))
    return Starter({SCENARIO_FILE: scenario, LOCUSTFILE: _starter_locustfile()})


def _starter_locustfile() -> str:
    """The starter locustfile's text (locustfiles/starter_locustfile.py.txt: a locustfile
    `init` writes, kept with the others and never imported here)."""
    pkg = resources.files("spikegate.locustfiles")
    return pkg.joinpath("starter_locustfile.py.txt").read_text(encoding="utf-8")


def _name_for(directory: Path) -> str:
    """A scenario name from the folder's name (letters, digits, `_.-`), else my-service."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", directory.resolve().name).strip("-_.")[:64]
    return name if name and name[0].isalnum() else "my-service"


def write_starter(
    directory: Path, *, url: str = DEFAULT_URL, force: bool = False, console: Console
) -> list[Path]:
    """Write the starter files into `directory` (created if missing); refuse to overwrite
    an existing file unless `force`. Returns the paths written."""
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} is a file, not a directory", hint="give a folder")
    starter = starter_files(url=url, name=_name_for(directory))
    paths = [directory / name for name in starter.files]
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        names = ", ".join(str(p) for p in existing)
        raise UsageError(
            f"{names} already exist{'s' if len(existing) == 1 else ''}: nothing was written",
            hint="spikegate init --force overwrites them (keep a copy of your edits first)",
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for path in paths:
            path.write_text(starter.files[path.name], encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{directory}: cannot write ({exc.strerror or exc})") from None
    for path in paths:
        console.print(f"wrote {escape(str(path))}", highlight=False)
    scenario = paths[0]
    console.print(
        f"next: start your service at {escape(url)} (it must answer GET /), then\n"
        f"  spikegate run {escape(str(scenario))}\n"
        f'edit {escape(str(scenario))} to let Spikegate start it (kind = "command"), '
        "to add dependencies and faults, and to set your thresholds",
        highlight=False,
    )
    return paths
