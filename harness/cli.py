"""The `spikegate` command line: thin typer commands over the harness's library API.

`main(argv, console)` runs in-process (tests call it); `run()` is the console script.
Every SpikegateError is printed through rich and turned into its exit code; user mistakes
never show a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from harness import __version__
from harness.errors import SpikegateError, UsageError

if TYPE_CHECKING:
    from harness.orchestrator import RunResult

app = typer.Typer(
    name="spikegate",
    help="Load-testing and chaos harness: prove a service degrades gracefully and recovers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Load-testing and chaos harness: prove a service degrades gracefully and recovers."""


@app.command()
def version() -> None:
    """Print the Spikegate version."""
    typer.echo(f"spikegate {__version__}")


@app.command("run")
def run_command(
    scenario: Annotated[str, typer.Argument(help="a scenario file, or a shipped name (smoke)")],
    out: Annotated[
        Path | None, typer.Option("--out", help="run directory (default runs/<UTC>-<name>)")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="override the scenario's seed")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="override a scenario value: key.path=value (repeatable)"),
    ] = None,
    no_live: Annotated[
        bool, typer.Option("--no-live", help="plain progress lines instead of the live view")
    ] = False,
    allow_remote_target: Annotated[
        bool, typer.Option("--allow-remote-target", help="allow a non-loopback external target")
    ] = False,
) -> None:
    """Run a spike test end to end and record its history in a run directory."""
    from harness.orchestrator import run_scenario
    from harness.scenario import load_scenario

    overrides = list(set_ or [])
    if seed is not None:
        if seed < 0:
            raise UsageError(f"--seed must be >= 0 (got {seed})")
        overrides.append(f"seed={seed}")
    if allow_remote_target:
        overrides.append("target.allow_remote=true")
    loaded = load_scenario(scenario, overrides)
    console = Console()
    result = run_scenario(
        loaded, out_dir=out, console=console, live=not no_live, argv=["spikegate", *sys.argv[1:]]
    )
    _print_summary(result, console)
    code = check_run(result, console)
    if code:
        raise typer.Exit(code)


def _print_summary(result: RunResult, console: Console) -> None:
    """Where the run directory is and what happened, in a few lines."""
    totals = result.totals
    sent, intended = totals.get("sent", 0), totals.get("intended", 0)
    outcomes = {k: v for k, v in totals.items() if k not in ("sent", "intended") and v}
    console.print(f"[bold]run directory:[/] {result.run_dir}", highlight=False)
    colour = "green" if result.status == "complete" else "yellow"
    extra = f" ({result.signal})" if result.signal else ""
    console.print(f"status: [{colour}]{result.status}[/]{extra}", highlight=False)
    console.print(
        f"stack start-up {result.startup_s:.2f} s; {result.requests_rows} request rows, "
        f"{result.sample_rows} sample rows; sent {sent} of {intended} intended",
        highlight=False,
    )
    if outcomes:
        console.print(
            "outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())),
            highlight=False,
        )
    imp = result.impressions
    if imp.get("complete"):
        console.print(
            f"impressions: {imp['acked']} acked, {imp['found']} found in Kafka, "
            f"{imp['missing']} missing",
            highlight=False,
        )
    if result.cleanup and not result.cleanup.get("clean", True):
        console.print(f"[red]left behind:[/] {result.cleanup}", highlight=False)


def check_run(result: RunResult, console: Console) -> int:
    """The hook for the checker (next issue): judge the run, return the exit code.

    Until the checker lands: checks come with the checker; the run's own code is returned
    (0 complete, 130/143 interrupted).
    """
    if result.status == "complete":
        console.print("checks: not run yet (the checker comes with the next issue)")
    return result.exit_code


@app.command("schema")
def schema_command(
    out: Annotated[
        Path | None, typer.Option("--out", help="write the JSON Schema here instead of stdout")
    ] = None,
) -> None:
    """Print the JSON Schema of scenario files (for editors)."""
    from harness.scenario import Scenario

    text = json.dumps(Scenario.model_json_schema(), indent=2, sort_keys=True) + "\n"
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write ({exc.strerror or exc})") from exc
    typer.echo(f"wrote {out}")


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    """Run the CLI with `argv`; return the exit code instead of exiting."""
    console = console or Console(stderr=True)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        # without standalone mode, click returns a typer.Exit's code instead of raising it
        code = app(args=args, prog_name="spikegate", standalone_mode=False)
    except SpikegateError as exc:
        console.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        if exc.hint:
            console.print(f"  [yellow]hint:[/] {exc.hint}", highlight=False)
        return exc.exit_code
    except typer.Exit as exc:
        return int(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        console.print("[yellow]aborted[/]")
        return 130
    except typer.TyperException as exc:  # click-level usage errors (unknown option, ...)
        show = getattr(exc, "show", None)
        if callable(show):
            show(file=sys.stderr)
        else:
            console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return int(getattr(exc, "exit_code", 2))
    return code if isinstance(code, int) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
