"""What `spikegate fault ls|add|rm|clear` do: find the live run, call its control server.

    --run RUN_DIR -> RUN_DIR/control.json ─┐
    (none)        -> live_runs(): exactly one ┴─> LiveRun.control_url ─> HTTP (urllib) ─> print

A malformed `fault add` (unknown fault, bad --param, --proxy or --for) is a UsageError (exit 2)
found here, before any live run is looked for. No live run is an EnvironmentProblem (exit 4);
several without --run, or a 4xx from the control server, a UsageError (exit 2) carrying the
server's message; a 5xx (the chaos server failed) an EnvironmentProblem.
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from spikegate.chaos.faults import build_fault, fault_params, resolve_fault
from spikegate.harness.control import MAX_FOR_S
from spikegate.harness.errors import EnvironmentProblem, UsageError
from spikegate.harness.liverun import CONTROL_FILE, LiveRun, live_runs, read_live_run

__all__ = [
    "add_fault",
    "check_fault",
    "clear_faults",
    "find_run",
    "list_faults",
    "parse_params",
    "remove_faults",
]

HTTP_TIMEOUT_S = 10.0  # a fault goes on in one chaos call (2 s bound); room for a busy box
NO_RUN = "no live spikegate run: start one with `spikegate run SCENARIO`"
# The control server is on loopback: an http_proxy from the environment must not be used.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def find_run(run_dir: Path | None) -> LiveRun:
    """The run named by --run, else the one live run of this user."""
    if run_dir is not None:
        return _run_in(run_dir)
    runs = live_runs()
    if not runs:
        raise EnvironmentProblem(NO_RUN)
    if len(runs) > 1:
        listed = "\n".join(f"  {r.run_dir}  ({r.scenario}, pid {r.pid})" for r in runs)
        raise UsageError(
            f"{len(runs)} live spikegate runs:\n{listed}",
            hint="choose one with --run RUN_DIR",
        )
    return runs[0]


def _run_in(run_dir: Path) -> LiveRun:
    if not run_dir.is_dir():
        raise UsageError(f"--run {run_dir}: no such directory", hint="pass a run directory")
    path = run_dir / CONTROL_FILE
    try:
        run = read_live_run(path)
    except FileNotFoundError:
        raise EnvironmentProblem(
            f"--run {run_dir}: the run is not live (no {CONTROL_FILE})",
            hint="faults can change only while `spikegate run` runs",
        ) from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"--run {run_dir}: {path} is unreadable ({exc})") from None
    if not run.alive:
        raise EnvironmentProblem(
            f"--run {run_dir}: the run is not live (its process {run.pid} is gone)",
            hint="faults can change only while `spikegate run` runs",
        )
    return run


def parse_params(items: Sequence[str]) -> dict[str, object]:
    """`k=v` pairs; a value is an int or a float when it reads as one, else a string."""
    out: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(
                f"--param {item!r} is not key=value", hint="e.g. --param latency_ms=50"
            )
        if key in out:
            raise UsageError(f"--param {key} is given twice", hint="give each parameter once")
        out[key] = _value(raw.strip())
    return out


def check_fault(
    fault: str, proxy: str | None, params: Sequence[str], for_s: float | None
) -> dict[str, object]:
    """The request as the control server would judge it, judged here first; returns the
    parsed parameters. UsageError names the argument, --param, --proxy or --for at fault."""
    parsed = parse_params(params)
    if for_s is not None and not (math.isfinite(for_s) and 0 < for_s <= MAX_FOR_S):
        raise UsageError(
            f"--for {for_s:g}: expected seconds in (0, {MAX_FOR_S:g}]",
            hint="a manual fault always expires: e.g. --for 30",
        )
    try:
        resolve_fault(fault, proxy, parsed)
    except (ValueError, TypeError) as exc:
        given = {item.partition("=")[0].strip(): item for item in params}
        raise UsageError(
            f"{_culprit(str(exc), fault, proxy, given)}: {exc}",
            hint="`spikegate fault ls` lists the faults; `--param key=value` sets a parameter",
        ) from None
    return parsed


def _culprit(message: str, fault: str, proxy: str | None, given: Mapping[str, str]) -> str:
    """The command-line argument an error from the fault catalog is about."""
    if message.startswith("fault must be one of"):
        return f"fault {fault!r}"
    named = [given[k] for k in given if re.search(rf"\b{re.escape(k)}\b", message)]
    if named:
        return ", ".join(f"--param {item}" for item in named)
    if "proxy" in message:
        return f"--proxy {proxy}" if proxy is not None else "--proxy (not given)"
    return f"fault {fault!r}"


def _value(raw: str) -> object:
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        number = float(raw)
    except ValueError:
        return raw
    return number if math.isfinite(number) else raw


# --- talking to the control server --------------------------------------------------------------
def _call(run: LiveRun, method: str, path: str, body: object = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{run.control_url}{path}", data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(req, timeout=HTTP_TIMEOUT_S) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        message = _error_message(exc)
        if exc.code < 500:
            raise UsageError(message) from None
        raise EnvironmentProblem(message, hint=f"see {run.run_dir}/logs/chaos.log") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise EnvironmentProblem(
            f"the run in {run.run_dir} does not answer at {run.control_url} ({exc})",
            hint="it may have just ended; `spikegate fault ls` shows the live runs",
        ) from None


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        data = json.loads(exc.read())
    except (OSError, ValueError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])
    return f"{exc.code} {exc.reason}"


# --- the commands -------------------------------------------------------------------------------
def _params_text(fault: str, params: Mapping[str, Any]) -> str:
    """The parameters that differ from the fault's defaults (all of them, `-` if none)."""
    try:
        defaults = fault_params(build_fault(fault))
    except ValueError:
        defaults = {}
    shown = [f"{k}={v}" for k, v in params.items() if k not in defaults or defaults[k] != v]
    return " ".join(shown) or "-"


def _ends_text(fault: Mapping[str, Any]) -> str:
    remaining = fault.get("remaining_s")
    return "-" if remaining is None else f"{remaining:.1f} s"


def list_faults(run_dir: Path | None, console: Console, *, as_json: bool = False) -> None:
    run = find_run(run_dir)
    data = _call(run, "GET", "/faults")
    if as_json:
        console.print_json(data=data)
        return
    console.print(
        escape(
            f"run {run.run_dir} ({run.scenario}, pid {run.pid}) at t={data.get('t', 0):.1f} s; "
            f"control page {run.control_url}/"
        ),
        highlight=False,
        soft_wrap=True,
    )
    active = data.get("active") or []
    if not active:
        console.print("no active faults")
    else:
        table = Table("id", "fault", "proxy", "params", "source", "since t", "ends in")
        for f in active:
            cells = (
                f["id"], f["fault"], f["proxy"], _params_text(f["fault"], f.get("params") or {}),
                f["source"], f"{f['started_t']:.1f} s", _ends_text(f),
            )  # fmt: skip
            table.add_row(*(escape(str(c)) for c in cells))
        console.print(table)
    proxies = ", ".join(data.get("proxies") or []) or "none"
    console.print(escape(f"proxies: {proxies}"), highlight=False, soft_wrap=True)
    names = ", ".join(c["name"] for c in data.get("catalog") or [])
    console.print(escape(f"faults: {names}"), highlight=False, soft_wrap=True)


def add_fault(
    run_dir: Path | None,
    console: Console,
    fault: str,
    *,
    proxy: str | None,
    params: Sequence[str],
    for_s: float | None,
) -> None:
    body: dict[str, Any] = {"fault": fault, "params": check_fault(fault, proxy, params, for_s)}
    if proxy is not None:
        body["proxy"] = proxy
    if for_s is not None:
        body["for_s"] = for_s
    run = find_run(run_dir)
    added = _call(run, "POST", "/faults", body)
    console.print(
        escape(
            f"added {added['id']}: {added['fault']} on {added['proxy']} "
            f"({_params_text(added['fault'], added.get('params') or {})}), "
            f"ends in {_ends_text(added)}"
        ),
        highlight=False,
        soft_wrap=True,
    )


def remove_faults(run_dir: Path | None, console: Console, ids: Sequence[str]) -> None:
    run = find_run(run_dir)
    for fault_id in ids:
        _call(run, "DELETE", f"/faults/{urllib.parse.quote(fault_id, safe='')}")
        console.print(escape(f"removed {fault_id}"), highlight=False)


def clear_faults(run_dir: Path | None, console: Console) -> None:
    run = find_run(run_dir)
    data = _call(run, "POST", "/faults/clear")
    removed = data.get("removed") or []
    console.print(escape(f"removed {', '.join(removed) or 'nothing'}"), highlight=False)
