"""The `spikegate` command line: thin typer commands over the harness's library API.

`main(argv, console)` runs in-process (tests call it); `run()` is the console script.
Every SpikegateError is printed through rich and turned into its exit code; user mistakes
never show a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer
from rich.console import Console

from harness import __version__
from harness.errors import SpikegateError

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


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    """Run the CLI with `argv`; return the exit code instead of exiting."""
    console = console or Console(stderr=True)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=args, prog_name="spikegate", standalone_mode=False)
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
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
