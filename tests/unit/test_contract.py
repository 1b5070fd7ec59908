"""One contract between the processes: nothing outside spikegate/contract/ defines its names.

The harness, the Locust processes and the target agree on environment names, outcome names,
the decision header, the shape list, event kinds and the run directory's row fields. These
tests read every module's syntax tree and fail on a second definition: a string literal that
is an environment name or the decision header, or a tuple/list/set/Literal that spells out
two or more outcome names, shape names, event kinds or row fields.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from spikegate.contract import env, load, outcomes, rundir

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("harness", "target", "chaos", "locustfiles", "spikegate")
CONTRACT = ROOT / "spikegate" / "contract"

ENV_NAME = re.compile(r"SPIKEGATE_[A-Z0-9_]*")
VOCABULARIES: dict[str, frozenset[str]] = {
    "outcome names": frozenset(outcomes.OUTCOMES),
    "decision values": frozenset(outcomes.ALL_DECISIONS),
    "shape names": frozenset(load.SHAPES),
    "event kinds": frozenset(rundir.EVENT_KINDS),
    # the row's own keys; `t`, `sent` and the percentile copies are common words elsewhere
    "request-row fields": frozenset(rundir.REQUEST_ROW_FIELDS)
    - {"t", "sent", "admitted_p50_ms", "admitted_p99_ms", "rejected_p99_ms"},
}
# A dict literal keyed by these is a definition too (a per-outcome table); one keyed by row
# fields or decision values is a row being written or a label being looked up.
DICT_KEYED = frozenset({"outcome names", "shape names", "event kinds"})


def _modules() -> Iterator[Path]:
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if CONTRACT not in path.parents:
                yield path


def _strings(node: ast.AST, *, keys: bool) -> list[str]:
    """The string constants a collection literal spells out (a dict's keys if `keys`)."""
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        items = node.elts
    elif isinstance(node, ast.Dict) and keys:
        items = [k for k in node.keys if k is not None]
    else:
        return []
    return [i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)]


def _literal_args(node: ast.Subscript) -> list[str]:
    name = node.value
    ident = name.id if isinstance(name, ast.Name) else getattr(name, "attr", "")
    if ident != "Literal":
        return []
    sl = node.slice
    elts = sl.elts if isinstance(sl, ast.Tuple) else [sl]
    return [e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if ROOT in path.parents else path.name


def _copies(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    slots = {
        id(n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__slots__" for t in n.targets)
    }
    for node in ast.walk(tree):
        if id(node) in slots:
            continue  # a class's own attribute names
        where = f"{_rel(path)}:{getattr(node, 'lineno', '?')}"
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            if ENV_NAME.fullmatch(node.value):
                found.append(f"{where}: environment name {node.value!r}")
            if node.value.lower() == outcomes.DECISION_HEADER.lower():
                found.append(f"{where}: the decision header {node.value!r}")
        literal = _literal_args(node) if isinstance(node, ast.Subscript) else []
        for what, vocabulary in VOCABULARIES.items():
            words = _strings(node, keys=what in DICT_KEYED) or literal
            hits = sorted(set(words) & vocabulary)
            if len(hits) >= 2:
                found.append(f"{where}: {what} {', '.join(hits)}")
    return found


def test_the_contract_is_the_only_definition() -> None:
    copies = [c for path in _modules() for c in _copies(path)]
    assert not copies, "defined outside spikegate/contract:\n" + "\n".join(copies)


@pytest.mark.parametrize(
    "source",
    [
        'LOAD = "SPIKEGATE_LOAD"',
        'H = "x-spikegate-decision"',
        'DESIGNED = ("rate_limited", "shed")',
        'COLOURS = {"ok": "green", "timeout": "red"}',
        'def f(s: Literal["steady", "step"]) -> None: ...',
        'KINDS = {"fault_start", "fault_stop"}',
        'FIELDS = ["intended", "outcomes", "decisions"]',
    ],
)
def test_a_copy_is_found(tmp_path: Path, source: str) -> None:
    """The grep is not blind: each kind of copy, planted in a module, is reported."""
    planted = tmp_path / "planted.py"
    planted.write_text(f"from typing import Literal\n{source}\n", encoding="utf-8")
    assert _copies(planted)


def test_docstrings_and_single_uses_are_not_copies(tmp_path: Path) -> None:
    """Naming one outcome, or an env name in prose, is a use, not a definition."""
    path = tmp_path / "use.py"
    path.write_text('"""Reads SPIKEGATE_LOAD."""\nx = counts.get("shed", 0)\n', encoding="utf-8")
    assert _copies(path) == []


def test_no_module_outside_locustfiles_imports_harness_from_locustfiles() -> None:
    """The Locust processes import the contract, never the harness."""
    offenders = []
    for path in sorted((ROOT / "locustfiles").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if re.search(r"^\s*(from|import) spikegate\.harness\b", text, re.MULTILINE):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_env_names_are_distinct() -> None:
    names = [getattr(env, n) for n in env.__all__]
    assert len(names) == len(set(names))
    assert all(ENV_NAME.fullmatch(n) for n in names)
