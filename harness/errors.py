"""The harness's exception tree; each class carries the CLI exit code it maps to.

    SpikegateError (exit 1)
     +-- UsageError (exit 2)            bad flags, bad --set, unknown scenario name
     |    +-- ScenarioError (exit 2)    a scenario file that does not validate
     +-- VerdictFailed (exit 1)         a verdict failed (raised only by the CLI layer)
     +-- InconclusiveRun (exit 3)       the run cannot be judged (starved generator, few samples)
     +-- EnvironmentProblem (exit 4)    missing binary, port in use, component crashed

Routine outcomes are values; these are for what stops a command. `cli.main` has the one
`except` that prints them and returns their code.
"""

from __future__ import annotations


class SpikegateError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}\n  hint: {self.hint}"


class UsageError(SpikegateError):
    exit_code = 2


class ScenarioError(UsageError):
    exit_code = 2


class VerdictFailed(SpikegateError):
    exit_code = 1


class InconclusiveRun(SpikegateError):
    exit_code = 3


class EnvironmentProblem(SpikegateError):
    exit_code = 4
