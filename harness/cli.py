"""The `spikegate` command line: thin typer commands over the harness's library API.

`main(argv, console)` runs in-process (tests call it); `run()` is the console script.
Every SpikegateError is printed through rich and turned into its exit code; user mistakes
never show a traceback.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from spikegate.harness import __version__
from spikegate.harness.errors import SpikegateError, UsageError

if TYPE_CHECKING:
    from spikegate.harness.orchestrator import RunResult


class _FlagsShownAsFlags:
    """typer prints a type beside every option, a flag's too (`--no-live <bool>`), as if it
    took a value: a flag shows none."""

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False):
                param.metavar = ""
        return params


class _Command(_FlagsShownAsFlags, TyperCommand):
    pass


class _Group(_FlagsShownAsFlags, TyperGroup):
    pass


app = typer.Typer(
    name="spikegate",
    cls=_Group,
    help="Load-testing and chaos harness: prove a service degrades gracefully and recovers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"spikegate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Load-testing and chaos harness: prove a service degrades gracefully and recovers."""


_SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY.PATH=VALUE",
        help="override a scenario value, e.g. --set load.peak_rps=800 (repeatable)",
    ),
]


@app.command(cls=_Command)
def version() -> None:
    """Print the Spikegate version."""
    typer.echo(f"spikegate {__version__}")


@app.command("run", cls=_Command)
def run_command(
    scenario: Annotated[
        str,
        typer.Argument(metavar="SCENARIO", help="a scenario file, or a shipped name (smoke)"),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="DIR", help="run directory (default runs/<UTC>-<name>)"),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", metavar="INT", help="override the scenario's seed")
    ] = None,
    set_: _SetOption = None,
    no_live: Annotated[
        bool, typer.Option("--no-live", help="plain progress lines instead of the live view")
    ] = False,
    allow_remote_target: Annotated[
        bool, typer.Option("--allow-remote-target", help="allow a non-loopback external target")
    ] = False,
    expect_workers: Annotated[
        int | None,
        typer.Option(
            "--expect-workers",
            metavar="N",
            help="wait for N `spikegate worker --master HOST:PORT` (= --set load.workers=N)",
        ),
    ] = None,
) -> None:
    """Run a spike test end to end and record its history in a run directory."""
    from spikegate.harness.orchestrator import run_scenario
    from spikegate.harness.scenario import load_scenario

    overrides = list(set_ or [])
    if expect_workers is not None:
        overrides.append(f"load.workers={expect_workers}")
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


@app.command("up", cls=_Command)
def up_command(
    scenario: Annotated[
        str,
        typer.Argument(
            metavar="[SCENARIO]", help="a scenario file, or a shipped name (default: smoke)"
        ),
    ] = "smoke",
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="DIR", help="run directory (default runs/<UTC>-<name>)"),
    ] = None,
    set_: _SetOption = None,
    max_s: Annotated[
        float,
        typer.Option("--max-s", metavar="SECONDS", help="the session ends itself after this"),
    ] = 3600.0,
    idle: Annotated[
        bool, typer.Option("--idle", help="start with no load (then: spikegate load set)")
    ] = False,
    no_live: Annotated[
        bool, typer.Option("--no-live", help="plain progress lines instead of the live view")
    ] = False,
    allow_remote_target: Annotated[
        bool, typer.Option("--allow-remote-target", help="allow a non-loopback external target")
    ] = False,
) -> None:
    """Bring the stack up under the scenario's base load and keep it up until Ctrl-C (faults
    and load by hand: `spikegate fault`, `spikegate load`); then judge the session."""
    from spikegate.harness.orchestrator import run_scenario
    from spikegate.harness.scenario import load_scenario, session_scenario

    if not 10.0 <= max_s <= 86_400.0:
        raise UsageError(f"--max-s must be between 10 and 86400 seconds (got {max_s:g})")
    overrides = list(set_ or [])
    if allow_remote_target:
        overrides.append("target.allow_remote=true")
    loaded = session_scenario(load_scenario(scenario, overrides), max_s)
    console = Console()
    console.print(
        "session: Ctrl-C ends it (then it is judged); faults and load by hand from another "
        "terminal: spikegate fault add|rm|ls|clear, spikegate load set|spike|stop|start",
        highlight=False,
    )
    result = run_scenario(
        loaded,
        out_dir=out,
        console=console,
        live=not no_live,
        argv=["spikegate", *sys.argv[1:]],
        session=True,
        idle=idle,
    )
    _print_summary(result, console)
    code = check_run(result, console)
    if code:
        raise typer.Exit(code)


@app.command("worker", cls=_Command)
def worker_command(
    master: Annotated[
        str,
        typer.Option(
            "--master", metavar="HOST:PORT", help="the run's master (printed by spikegate run)"
        ),
    ],
    processes: Annotated[
        int, typer.Option("--processes", metavar="N", help="Locust processes on this machine")
    ] = 1,
    log_dir: Annotated[
        Path | None,
        typer.Option("--log-dir", metavar="DIR", help="the worker's log (default: a temp dir)"),
    ] = None,
) -> None:
    """Join a run as a Locust worker (this or another machine); ends when the run ends."""
    from spikegate.harness.worker import run_worker

    code = run_worker(master, processes=processes, log_dir=log_dir, console=Console())
    if code:
        raise typer.Exit(code)


def _print_summary(result: RunResult, console: Console) -> None:
    """Where the run directory is and what happened, in a few lines."""
    totals = result.totals
    sent, intended = totals.get("sent", 0), totals.get("intended", 0)
    outcomes = {k: v for k, v in totals.items() if k not in ("sent", "intended") and v}
    console.print(f"[bold]run directory:[/] {escape(str(result.run_dir))}", highlight=False)
    colour = "green" if result.status == "complete" else "yellow"
    extra = f" ({escape(str(result.signal))})" if result.signal else ""
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
        console.print(f"[red]left behind:[/] {escape(str(result.cleanup))}", highlight=False)


def check_run(result: RunResult, console: Console) -> int:
    """Judge a finished run and write its reports; an interrupted run keeps its own code."""
    if result.status != "complete":
        return int(result.exit_code)
    from spikegate.harness.checkcmd import check_run as judge_and_report

    return int(judge_and_report(result.run_dir, (), console).exit_code)


@app.command("check", cls=_Command)
def check_command(
    run_dir: Annotated[
        Path,
        typer.Argument(metavar="RUN_DIR", help="a run directory written by `spikegate run`"),
    ],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="checks.KEY=VALUE",
            help='override a threshold: checks.slo="p99 < 100ms" (repeatable)',
        ),
    ] = None,
) -> None:
    """Re-judge a stored run offline (optionally with other thresholds); rewrite its reports."""
    from spikegate.harness.checkcmd import check_run as judge_and_report

    code = judge_and_report(run_dir, list(set_ or []), Console()).exit_code
    if code:
        raise typer.Exit(code)


@app.command("compare", cls=_Command)
def compare_command(
    run_a: Annotated[
        Path, typer.Argument(metavar="RUN_A", help="the reference run directory (before)")
    ],
    run_b: Annotated[
        Path, typer.Argument(metavar="RUN_B", help="the run directory to compare (after)")
    ],
    json_out: Annotated[
        Path | None,
        typer.Option("--json", metavar="FILE", help="also write the deltas as JSON here"),
    ] = None,
) -> None:
    """Show the deltas between two runs; exit 1 when B fails a verdict that A passed."""
    from spikegate.harness.checkcmd import compare_runs

    code = compare_runs(run_a, run_b, Console(), json_out)
    if code:
        raise typer.Exit(code)


@app.command("ablate", cls=_Command)
def ablate_command(
    scenario: Annotated[
        str, typer.Argument(metavar="SCENARIO", help="a scenario file, or a shipped name")
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="DIR", help="directory for the runs and ablation.json"),
    ] = None,
    set_: _SetOption = None,
    pattern: Annotated[
        list[str] | None,
        typer.Option(
            "--pattern", metavar="NAME", help="ablate only these patterns (edge, auction, ...)"
        ),
    ] = None,
) -> None:
    """Run all patterns on, then each off in turn; exit 0 only if each ablation fails its check."""
    from spikegate.harness.ablate import PATTERNS, ablate

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out_dir = out or Path("runs") / f"{stamp}-ablate-{Path(scenario).stem}"
    code = ablate(
        scenario, list(set_ or []), Console(), out_dir, patterns=tuple(pattern or PATTERNS)
    )
    if code:
        raise typer.Exit(code)


@app.command("curve", cls=_Command)
def curve_command(
    scenario: Annotated[
        str, typer.Argument(metavar="SCENARIO", help="a scenario file, or a shipped name")
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="DIR", help="directory for the runs and the curve"),
    ] = None,
    set_: _SetOption = None,
    levels: Annotated[
        str,
        typer.Option("--levels", metavar="K,K,...", help="offered loads, x measured capacity"),
    ] = "0.5,1,2,3,5,10",
    run_s: Annotated[
        float, typer.Option("--run-s", metavar="SECONDS", help="length of each level's run")
    ] = 20.0,
    warmup_s: Annotated[
        float, typer.Option("--warmup-s", metavar="SECONDS", help="not judged, in each run")
    ] = 5.0,
    ramp_s: Annotated[
        float, typer.Option("--ramp-s", metavar="SECONDS", help="length of the capacity ramp")
    ] = 40.0,
    ramp_to: Annotated[
        float | None,
        typer.Option("--ramp-to", metavar="RPS", help="the ramp's top (default 3x the peak)"),
    ] = None,
    keep_edge: Annotated[
        bool,
        typer.Option(
            "--keep-edge",
            help="keep the scenario's edge rate (default: calibrated at 2x the capacity)",
        ),
    ] = False,
    keep_limits: Annotated[
        bool,
        typer.Option(
            "--keep-limits",
            help="keep the scenario's auction concurrency limit (default: sized from the knee)",
        ),
    ] = False,
) -> None:
    """Goodput and admitted p99 from 0.5x to 10x the measured capacity, patterns on vs off,
    with r/a measured on the target alone."""
    from spikegate.harness.curve import curve, parse_levels

    parsed = parse_levels(levels)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out_dir = out or Path("runs") / f"{stamp}-curve-{Path(scenario).stem}"
    code = curve(
        scenario,
        list(set_ or []),
        Console(),
        out_dir,
        levels=parsed,
        run_s=run_s,
        warmup_s=warmup_s,
        ramp_s=ramp_s,
        ramp_to=ramp_to,
        keep_edge=keep_edge,
        keep_limits=keep_limits,
    )
    if code:
        raise typer.Exit(code)


@app.command("mutate", cls=_Command)
def mutate_command(
    scenario: Annotated[
        str | None,
        typer.Argument(
            metavar="[SCENARIO]",
            help="run every mutant on this scenario (default: each mutant's own, perfect-storm)",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="DIR", help="directory for the runs and mutate.json"),
    ] = None,
    set_: _SetOption = None,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", metavar="ID", help="run only this mutant (repeatable)"),
    ] = None,
    list_: Annotated[
        bool, typer.Option("--list", help="print the mutant catalog and run nothing")
    ] = False,
) -> None:
    """Run the gate on realistic defects of the target, recorder and logger; exit 0 only if
    the unmutated control passes and every mutant fails its check."""
    from spikegate.harness.mutate import mutate, print_catalog, select

    if list_:
        print_catalog(Console())
        return
    select(only or ())  # an unknown --only is a usage error before anything runs
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out_dir = out or Path("runs") / f"{stamp}-mutate-{Path(scenario or 'gate').stem}"
    code = mutate(scenario, list(set_ or []), Console(), out_dir, only=tuple(only or ()))
    if code:
        raise typer.Exit(code)


@app.command("replay", cls=_Command)
def replay_command(
    run_dir: Annotated[
        Path,
        typer.Argument(metavar="RUN_DIR", help="a session's run directory (`spikegate up`)"),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", metavar="FILE", help="where to write it (default RUN_DIR/replay.toml)"
        ),
    ] = None,
) -> None:
    """Write the scenario file that reproduces a hand-made session as a timeline."""
    from spikegate.harness.replay import replay

    path, _ = replay(run_dir, out)
    typer.echo(f"wrote {path} (run it with: spikegate run {path})")


@app.command("schema", cls=_Command)
def schema_command(
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="write the JSON Schema here instead of stdout"),
    ] = None,
) -> None:
    """Print the JSON Schema of scenario files (for editors)."""
    from spikegate.harness.scenario import Scenario

    text = json.dumps(Scenario.model_json_schema(), indent=2, sort_keys=True) + "\n"
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write ({exc.strerror or exc})") from exc
    typer.echo(f"wrote {out}")


@app.command("init", cls=_Command)
def init_command(
    directory: Annotated[
        Path,
        typer.Argument(metavar="DIR", help="where to write them (default: here)"),
    ] = Path("."),
    url: Annotated[
        str,
        typer.Option("--url", metavar="URL", help="your running service's base URL"),
    ] = "http://127.0.0.1:8000",
    force: Annotated[bool, typer.Option("--force", help="overwrite existing files")] = False,
) -> None:
    """Write a commented starter spikegate.toml and locustfile.py for your own service."""
    from spikegate.harness.init import write_starter

    write_starter(directory, url=url, force=force, console=Console())


fault_app = typer.Typer(
    name="fault",
    cls=_Group,
    help="Add and remove faults by hand while `spikegate run` runs (they always expire).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(fault_app)

_RunOption = Annotated[
    Path | None,
    typer.Option(
        "--run", metavar="RUN_DIR", help="the live run's directory (default: the one live run)"
    ),
]


@fault_app.command("ls", cls=_Command)
def fault_ls_command(
    run_dir: _RunOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the control API's JSON")] = False,
) -> None:
    """List the active faults of the live run and its proxies."""
    from spikegate.harness.faultcmd import list_faults

    list_faults(run_dir, Console(), as_json=as_json)


@fault_app.command("add", cls=_Command)
def fault_add_command(
    fault: Annotated[
        str,
        typer.Argument(
            metavar="FAULT", help="redis_latency, dsp_down, latency, ... (`fault ls` lists them)"
        ),
    ],
    proxy: Annotated[
        str | None,
        typer.Option("--proxy", metavar="NAME", help="redis, kafka, dsp-N (shorthands imply one)"),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", metavar="KEY=VALUE", help="a fault parameter, e.g. latency_ms=50"),
    ] = None,
    for_s: Annotated[
        float | None,
        typer.Option(
            "--for", metavar="SECONDS", help="seconds until it expires (default 30, at most 600)"
        ),
    ] = None,
    run_dir: _RunOption = None,
) -> None:
    """Put a fault on a proxy of the live run now; it expires after --for seconds."""
    from spikegate.harness.faultcmd import add_fault

    add_fault(run_dir, Console(), fault, proxy=proxy, params=list(param or []), for_s=for_s)


@fault_app.command("rm", cls=_Command)
def fault_rm_command(
    fault_id: Annotated[
        list[str], typer.Argument(metavar="ID...", help="fault ids as `fault ls` shows (m1)")
    ],
    run_dir: _RunOption = None,
) -> None:
    """Take faults off now (manual or scheduled ones)."""
    from spikegate.harness.faultcmd import remove_faults

    remove_faults(run_dir, Console(), fault_id)


@fault_app.command("clear", cls=_Command)
def fault_clear_command(run_dir: _RunOption = None) -> None:
    """Take every active fault off now (scheduled ones still to come will start)."""
    from spikegate.harness.faultcmd import clear_faults

    clear_faults(run_dir, Console())


load_app = typer.Typer(
    name="load",
    cls=_Group,
    help="Change the offered load by hand while `spikegate run` runs (open model).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(load_app)
_RateHelp = "arrivals/s, or Nx: N times the scenario's base_rps (e.g. 300, 3x)"


@load_app.command("set", cls=_Command)
def load_set_command(
    rate: Annotated[str, typer.Argument(metavar="RATE", help=_RateHelp)],
    run_dir: _RunOption = None,
) -> None:
    """Hold RATE arrivals/s from now (until another change or the run's end)."""
    from spikegate.harness.loadcmd import set_load

    set_load(run_dir, Console(), rate)


@load_app.command("stop", cls=_Command)
def load_stop_command(run_dir: _RunOption = None) -> None:
    """Rate 0 from now (the run goes on; `load start` resumes)."""
    from spikegate.harness.loadcmd import stop_load

    stop_load(run_dir, Console())


@load_app.command("start", cls=_Command)
def load_start_command(run_dir: _RunOption = None) -> None:
    """Back to the scenario's load shape from now."""
    from spikegate.harness.loadcmd import start_load

    start_load(run_dir, Console())


@load_app.command("spike", cls=_Command)
def load_spike_command(
    peak: Annotated[str, typer.Option("--peak", metavar="RATE", help=_RateHelp)],
    for_s: Annotated[
        float, typer.Option("--for", metavar="SECONDS", help="how long (at most 600 s)")
    ],
    run_dir: _RunOption = None,
) -> None:
    """A flash crowd: --peak arrivals/s from now for --for seconds, then back."""
    from spikegate.harness.loadcmd import spike_load

    spike_load(run_dir, Console(), peak, for_s)


@load_app.command("halt", cls=_Command)
def load_halt_command(run_dir: _RunOption = None) -> None:
    """Halt: every active fault off and the load back at base_rps, at once."""
    from spikegate.harness.loadcmd import halt_run

    halt_run(run_dir, Console())


@load_app.command("show", cls=_Command)
def load_show_command(
    run_dir: _RunOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the control API's JSON")] = False,
) -> None:
    """The offered load now: the rate, whether it is held by hand, a running spike."""
    from spikegate.harness.loadcmd import show_load

    show_load(run_dir, Console(), as_json=as_json)


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    """Run the CLI with `argv`; return the exit code instead of exiting."""
    console = console or Console(stderr=True)
    args = list(sys.argv[1:] if argv is None else argv) or ["--help"]
    try:
        # without standalone mode, click returns a typer.Exit's code instead of raising it
        code = app(args=args, prog_name="spikegate", standalone_mode=False)
    except SpikegateError as exc:
        # user text (paths, values, TOML section names) is never read as rich markup
        console.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False)
        if exc.hint:
            console.print(f"  [yellow]hint:[/] {escape(exc.hint)}", highlight=False)
        return int(exc.exit_code)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        console.print("[yellow]aborted[/]")
        return 130
    except typer.TyperException as exc:  # click-level usage errors (unknown option, ...)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `spikegate fault`: help shown, exit 0
            return 0
        show = getattr(exc, "show", None)
        if callable(show):
            show(file=sys.stderr)
        else:
            console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return int(getattr(exc, "exit_code", 2))
    return code if isinstance(code, int) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
