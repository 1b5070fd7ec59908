"""The harness's exception tree; each class carries the CLI exit code it maps to.

    SpikegateError (exit 1)
     +-- UsageError (exit 2)            bad flags, bad --set, unknown scenario name
     |    +-- ScenarioError (exit 2)    a scenario file that does not validate
     +-- VerdictFailed (exit 1)         a verdict failed (raised only by the CLI layer)
     +-- InconclusiveRun (exit 3)       the run cannot be judged (starved generator, few samples)
     +-- EnvironmentProblem (exit 4)    missing binary, port in use, component crashed

Routine outcomes are values; these are for what stops a command. `cli.main` has the one
`except` that prints them and returns their code.

A ScenarioError made from pydantic's ValidationError (`ScenarioError.invalid`) says where
each problem is, then what is wrong, in words:

    load.peak_rps (line 12): Input should be a valid number, got '20' (a quoted string: ...)
    faults #2 (line 30), for_s: ends at 65 s, after load.duration_s (60 s): ...
    --set load.peak_rps=abc: Input should be a valid number, got 'abc'
    checks.sloo (line 41): unknown field 'sloo'; did you mean 'slo'?
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping, Sequence
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError


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

    @classmethod
    def invalid(
        cls,
        err: ValidationError,
        *,
        source: str,
        root: type[BaseModel],
        text: str = "",
        sets: Mapping[tuple[str, ...], str] | None = None,
        named: bool = True,
    ) -> ScenarioError:
        """`err` (from validating `root`) as one line per problem. `text` is the file, for
        line numbers; `sets` maps each key path given by `--set` to its item; `named` is
        False when the scenario's name was taken from the file name."""
        where = _Locator(text, sets or {}, named)
        lines = [where(e["loc"], describe(e, root)) for e in err.errors()]
        return cls(f"{source}: the scenario is not valid:\n" + "\n".join(lines))


class VerdictFailed(SpikegateError):
    exit_code = 1


class InconclusiveRun(SpikegateError):
    exit_code = 3


class EnvironmentProblem(SpikegateError):
    exit_code = 4


# --- what is wrong -------------------------------------------------------------------------
def describe(e: Any, root: type[BaseModel]) -> str:
    """One pydantic error (of validating `root`) as a sentence: an unknown key gets the
    closest known one, a wrong value or type says what it got."""
    loc = [str(p) for p in e["loc"]]
    if e["type"] == "extra_forbidden":
        return _unknown_key(loc[-1], _fields_at(root, loc[:-1]))
    msg = str(e["msg"]).removeprefix("Value error, ")
    value = e.get("input")
    if e["type"] in ("model_type", "dict_type", "model_attributes_type"):
        return f"expected a table ([section] or {{ key = value }}), got {_show(value)}"
    if e["type"] in ("scenario_rule", "value_error", "assertion_error", "missing"):
        return msg  # our own sentences say what they got
    if isinstance(value, dict | list):
        return f"{msg}, got a {'table' if isinstance(value, dict) else 'list'}"
    msg = f"{msg}, got {_show(value)}"
    if isinstance(value, str) and e["type"].endswith("_type") and _toml_scalar(value):
        msg += " (a quoted string: write the value without quotes)"
    return msg


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _toml_scalar(text: str) -> bool:
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return False
    return isinstance(value, int | float | bool)


def _unknown_key(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown field {key!r}; did you mean {close[0]!r}?"
    listed = f"; known: {', '.join(known)}" if known else ""
    return f"unknown field {key!r} (check its spelling against `spikegate schema`){listed}"


def _fields_at(root: type[BaseModel], path: Sequence[str]) -> list[str]:
    """The field names of the model at `path` under `root` (list items, dict values and
    optional types are looked through); [] when there is no model there."""
    tp: Any = root
    for part in path:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part)
            tp = field.annotation if field is not None else None
        elif get_origin(tp) in (list, dict):
            tp = get_args(tp)[-1]
        else:
            return []
    tp = _unwrap(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _unwrap(tp: Any) -> Any:
    args = [a for a in get_args(tp) if a is not type(None)]
    if get_origin(tp) in (Union, UnionType, Annotated) and args:
        return args[0]
    return tp


# --- where it is -----------------------------------------------------------------------------
_KEY = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_PATH = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_HEADER = re.compile(rf"^\s*(\[\[?)\s*({_PATH})\s*\]\]?\s*(?:#.*)?$")
_ASSIGN = re.compile(rf"^\s*({_PATH})\s*=")


class _Locator:
    """Prefixes a problem with where it is: the --set that gave the value, else the file's
    line (a [[faults]] or [[dependencies]] entry as `faults #N`, counted from 1, at its
    header's line)."""

    def __init__(self, text: str, sets: Mapping[tuple[str, ...], str], named: bool) -> None:
        self.lines = _key_lines(text)
        self.sets = sets
        self.named = named

    def __call__(self, loc: Sequence[str | int], message: str) -> str:
        path = tuple(str(p) for p in loc)
        dotted = ".".join(path) or "(top level)"
        for key, item in sorted(self.sets.items(), key=lambda kv: -len(kv[0])):
            made = key[: len(path)] == path and path not in self.lines  # a table it created
            if path[: len(key)] == key or made:
                field = "" if path == key else f", {dotted}"
                return f"  --set {item}{field}: {message}"
        # a rule broken by a --set elsewhere (peak_rps <= a base_rps given by --set)
        involved = [
            item
            for key, item in self.sets.items()
            if key[: len(path)] == path or ".".join(key) in message
        ]
        also = f" (with --set {', --set '.join(involved)})" if involved else ""
        if path == ("name",) and not self.named:
            return f'  name (from the file name; set name = "..." in the file): {message}'
        if len(path) >= 2 and path[0] in ("faults", "dependencies") and path[1].isdigit():
            line = self.lines.get(path[:2]) or self.lines.get(path[:1])
            at = f" (line {line})" if line else ""
            field = f", {'.'.join(path[2:])}" if len(path) > 2 else ""
            return f"  {path[0]} #{int(path[1]) + 1}{at}{field}{also}: {message}"
        line = next(
            (self.lines[path[:n]] for n in range(len(path), 0, -1) if path[:n] in self.lines),
            None,
        )
        return f"  {dotted}{f' (line {line})' if line else ''}{also}: {message}"


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """The line where each table, array-of-tables entry and key is first written
    (`[[faults]]` entries as ("faults", "0"), ("faults", "1"), ...). Best effort: keys
    inside inline tables and arrays are found through the line of their parent key."""
    out: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    counts: dict[tuple[str, ...], int] = {}
    in_string = False
    for n, line in enumerate(text.splitlines(), start=1):
        inside = in_string  # a line that starts inside a multi-line string holds no key
        if (line.count('"""') + line.count("'''")) % 2:
            in_string = not in_string
        if inside:
            continue
        header = _HEADER.match(line)
        if header:
            table = _split_path(header.group(2))
            if header.group(1) == "[[":
                out.setdefault(table, n)
                counts[table] = counts.get(table, -1) + 1
                table = (*table, str(counts[table]))
            out.setdefault(table, n)
            continue
        assign = _ASSIGN.match(line)
        if assign:
            out.setdefault((*table, *_split_path(assign.group(1))), n)
    return out


def _split_path(path: str) -> tuple[str, ...]:
    return tuple(k.strip().strip("\"'") for k in re.findall(_KEY, path))
