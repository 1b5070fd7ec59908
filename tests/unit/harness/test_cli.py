"""The CLI runs in-process: exit codes, help, and no tracebacks for user mistakes."""

from __future__ import annotations

import io

from rich.console import Console

from spikegate.harness import __version__
from spikegate.harness.cli import main


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=120), buf


def test_version_prints_and_exits_zero(capsys) -> None:
    console, _ = _console()
    assert main(["version"], console) == 0
    assert __version__ in capsys.readouterr().out


def test_help_exits_zero_and_lists_commands(capsys) -> None:
    console, _ = _console()
    assert main(["--help"], console) == 0
    assert "version" in capsys.readouterr().out


def test_unknown_command_is_usage_error_exit_2(capsys) -> None:
    console, _ = _console()
    assert main(["no-such-command"], console) == 2
    err = capsys.readouterr().err
    assert "no-such-command" in err
    assert "Traceback" not in err
