"""Mutation testing of the gate: small realistic defects, each run through the gate scenario.

    installed spikegate --copy--> tmp/spikegate/{__init__,contract,harness,target,chaos,...}
                                       | apply one mutant's edits (target/, locustfiles/, chaos/)
                                       v
    control (unpatched) --------------------------> run -> check -> must PASS
    mutant i: children import tmp/spikegate ------> run -> check -> must FAIL (caught)
                                                      -> table (rich) + mutate.json

Only the run's CHILD processes (target, DSP bidders, chaos server, Locust) see the mutant:
they inherit PYTHONPATH with the copy first and a `sitecustomize` there that puts a finder
ahead of every other for the top-level `spikegate` (uvicorn and Locust insert the working
directory at sys.path[0], which in a checkout holds the real `spikegate/`). Locust is given
the copied locustfiles through SPIKEGATE_LOCUSTFILES. The harness process keeps its own
imports, so the checker that judges each mutant is never mutated. The copy is removed after
each run, whatever happens.

Exit code: 0 only when every control passes and every mutant is caught (its run fails the
check); 1 for a survivor or a failed control; or the exit code of the error that stopped a
run (e.g. 4 for the environment), like `spikegate ablate`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from spikegate.contract.env import LOCUSTFILES_ENV
from spikegate.harness.ablate import Runner, _orchestrator_runner, _worst
from spikegate.harness.checkcmd import check_run
from spikegate.harness.errors import SpikegateError, UsageError
from spikegate.harness.mutants import CATALOG, GATE_SCENARIO, Mutant
from spikegate.harness.scenario import Scenario, load_scenario, shipped
from spikegate.harness.verdicts import FAIL, PASS, CheckResult

__all__ = [
    "MUTABLE",
    "SUBPACKAGES",
    "MutantError",
    "apply_mutant",
    "child_env",
    "drift",
    "mutant_tree",
    "mutate",
    "package_sources",
    "select",
]

SUBPACKAGES = ("contract", "harness", "target", "chaos", "locustfiles", "scenarios")
MUTABLE = ("target/", "locustfiles/", "chaos/")  # never the harness (it judges) or the contract

Checker = Callable[[Path, Console], CheckResult]

_SITECUSTOMIZE = '''\
"""Written by `spikegate mutate`: import `spikegate` from this folder, whatever sys.path says."""
import os
import sys
from importlib.machinery import PathFinder

_ROOT = os.path.dirname(os.path.abspath(__file__))


class _MutantFirst:
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname == "spikegate":
            return PathFinder.find_spec(fullname, [_ROOT])
        return None


sys.meta_path.insert(0, _MutantFirst)
'''


class MutantError(SpikegateError):
    """A mutant that does not apply to the current source (it drifted): a catalog bug."""

    exit_code = 2


def package_sources() -> dict[str, Path]:
    """Where the installed package's parts live ("" = the `spikegate` folder itself), found
    through the import system: a checkout's package-dir mapping or a wheel alike."""
    spec = importlib.util.find_spec("spikegate")
    if spec is None or spec.origin is None:
        raise SpikegateError("the spikegate package cannot be found by the import system")
    out = {"": Path(spec.origin).parent}
    for name in SUBPACKAGES:
        sub = importlib.util.find_spec(f"spikegate.{name}")
        if sub is None or not sub.submodule_search_locations:
            continue
        out[name] = Path(next(iter(sub.submodule_search_locations)))
    return out


def drift(mutant: Mutant, sources: Mapping[str, Path] | None = None) -> list[str]:
    """What keeps `mutant` from applying to the installed source (empty: it applies)."""
    sources = sources or package_sources()
    problems: list[str] = []
    for edit in mutant.edits:
        if not edit.file.startswith(MUTABLE):
            problems.append(f"{edit.file}: only {', '.join(MUTABLE)} may be mutated")
            continue
        sub, _, rest = edit.file.partition("/")
        path = sources[sub] / rest if sub in sources else None
        if path is None or not path.is_file():
            problems.append(f"{edit.file}: no such file in the package")
            continue
        n = path.read_text(encoding="utf-8").count(edit.old)
        if n != 1:
            problems.append(f"{edit.file}: the text to replace occurs {n} times, not once")
    return problems


def _copy_package(root: Path, sources: Mapping[str, Path]) -> Path:
    pkg = root / "spikegate"
    pkg.mkdir(parents=True)
    top = sources[""]
    for item in top.iterdir():
        if item.is_file() and item.suffix in (".py", ".typed"):
            shutil.copy2(item, pkg / item.name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name, src in sources.items():
        if name:
            shutil.copytree(src, pkg / name, ignore=ignore)
    (root / "sitecustomize.py").write_text(_SITECUSTOMIZE, encoding="utf-8")
    return pkg


def apply_mutant(mutant: Mutant, root: Path) -> list[Path]:
    """Apply `mutant`'s edits to the package copy under `root`; each mutated file compiles."""
    problems = drift(mutant, {"": root / "spikegate", **_copied(root)})
    if problems:
        raise MutantError(
            f"mutant {mutant.id} does not apply: " + "; ".join(problems),
            hint="the source changed under it: update its edits in harness/mutants.py",
        )
    touched: list[Path] = []
    for edit in mutant.edits:
        path = root / "spikegate" / edit.file
        text = path.read_text(encoding="utf-8").replace(edit.old, edit.new, 1)
        try:
            compile(text, str(path), "exec")
        except SyntaxError as exc:
            raise MutantError(
                f"mutant {mutant.id} breaks the syntax of {edit.file}: {exc}"
            ) from exc
        path.write_text(text, encoding="utf-8")
        touched.append(path)
    return touched


def _copied(root: Path) -> dict[str, Path]:
    pkg = root / "spikegate"
    return {p.name: p for p in pkg.iterdir() if p.is_dir()} if pkg.is_dir() else {}


@contextlib.contextmanager
def mutant_tree(mutant: Mutant | None = None) -> Iterator[Path]:
    """A temporary copy of the installed package (with `mutant` applied); removed on exit."""
    root = Path(tempfile.mkdtemp(prefix="spikegate-mutant-"))
    try:
        _copy_package(root, package_sources())
        if mutant is not None:
            apply_mutant(mutant, root)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def child_env(root: Path, base: Mapping[str, str]) -> dict[str, str]:
    """`base` with the copy under `root` first on PYTHONPATH and Locust on its locustfiles."""
    env = dict(base)
    rest = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(root) + (os.pathsep + rest if rest else "")
    env[LOCUSTFILES_ENV] = str(root / "spikegate" / "locustfiles")
    return env


@contextlib.contextmanager
def _children_import_from(root: Path) -> Iterator[None]:
    """Children inherit os.environ (stack.python_env): set it for one run, then restore.
    Our own sys.path is fixed at start-up, so the harness keeps the unmutated package."""
    keys = ("PYTHONPATH", LOCUSTFILES_ENV)
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: v for k, v in child_env(root, os.environ).items() if k in keys})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def select(only: Sequence[str] = ()) -> list[Mutant]:
    """The catalog, or the mutants named in `only` (in catalog order); UsageError if unknown."""
    known = {m.id for m in CATALOG}
    unknown = [i for i in only if i not in known]
    if unknown:
        raise UsageError(
            f"unknown mutant {', '.join(repr(i) for i in unknown)}",
            hint="valid ids: " + ", ".join(m.id for m in CATALOG),
        )
    return [m for m in CATALOG if not only or m.id in only]


def _scenario_for(
    mutant: Mutant, chosen: str | Path | None, names: Sequence[str]
) -> tuple[str, bool]:
    """(scenario ref, fallback?): the user's choice, else the mutant's if shipped."""
    if chosen is not None:
        return str(chosen), False
    if mutant.scenario in names:
        return mutant.scenario, False
    return mutant.fallback or GATE_SCENARIO, True


def _default_checker(run_dir: Path, console: Console) -> CheckResult:
    return check_run(run_dir, (), console)


def mutate(
    scenario_ref: str | Path | None,
    overrides: Sequence[str],
    console: Console,
    out_dir: Path,
    *,
    only: Sequence[str] = (),
    runner: Runner | None = None,
    checker: Checker | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run each scenario's control, then each mutant; print and write the table; 0 iff all
    controls pass and every mutant is caught."""
    mutants = select(only)
    run = runner or _orchestrator_runner
    check = checker or _default_checker
    names = shipped()
    planned = [(m, *_scenario_for(m, scenario_ref, names)) for m in mutants]
    loaded: dict[str, Scenario] = {}
    for _, ref, _ in planned:
        if ref not in loaded:
            loaded[ref] = load_scenario(ref, overrides)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    total = len(loaded) + len(planned)
    started = clock()
    step = 0

    def progress(label: str, sc: Scenario) -> None:
        nonlocal step
        step += 1
        console.print(
            f"[bold]mutate[/] [{step}/{total}] {escape(label)} on {escape(sc.name)} "
            f"(elapsed {clock() - started:.0f}s)"
        )

    error_code = 0
    controls: list[dict[str, Any]] = []
    for ref, sc in loaded.items():
        label = "control" if len(loaded) == 1 else f"control-{sc.name}"
        progress(label, sc)
        entry = _one_run(run, check, sc, out_dir / label, console, None)
        entry.update(label=label, scenario=ref, ok=entry["status"] == PASS)
        controls.append(entry)
        if entry["status"] == "error":
            error_code = error_code or entry.pop("exit_code")
    results: list[dict[str, Any]] = []
    if all(c["ok"] for c in controls):
        for m, ref, fallback in planned:
            progress(f"mutant {m.id}", loaded[ref])
            entry = _one_run(run, check, loaded[ref], out_dir / m.id, console, m)
            if entry["status"] == "error":
                error_code = error_code or entry.pop("exit_code")
            failed = entry.get("failed_verdicts", [])
            entry.update(
                {
                    "id": m.id, "description": m.description, "class": m.klass,
                    "expect": list(m.expect), "scenario": ref, "fallback": fallback,
                    "caught": entry["status"] == FAIL,
                    "by_expected": any(v in m.expect for v in failed),
                }
            )  # fmt: skip
            results.append(entry)
    controls_ok = all(c["ok"] for c in controls)
    ok = controls_ok and all(r["caught"] for r in results)
    report = {
        "scenario": None if scenario_ref is None else str(scenario_ref),
        "controls": controls, "mutants": results, "ok": ok,
        "elapsed_s": round(clock() - started, 1),
    }  # fmt: skip
    (out_dir / "mutate.json").write_text(json.dumps(report, indent=2) + "\n")
    if results:
        _print_table(console, results)
    if not controls_ok:
        bad = ", ".join(f"{c['label']} ({c['status']})" for c in controls if not c["ok"])
        console.print(
            f"[bold red]control did not pass[/]: {escape(bad)}. The unmutated gate is not "
            "green, so no mutant can be judged: fix that first (see its run directory)."
        )
    else:
        survivors = [r["id"] for r in results if not r["caught"]]
        console.print(
            f"mutate: {len(results) - len(survivors)}/{len(results)} caught"
            + (f", [bold red]not caught: {', '.join(survivors)}[/]" if survivors else "")
            + f"; table in {out_dir / 'mutate.json'}"
        )
    if ok:
        return 0
    return error_code or 1


def _one_run(
    run: Runner, check: Checker, sc: Scenario, out: Path, console: Console, mutant: Mutant | None
) -> dict[str, Any]:
    try:
        if mutant is None:
            run_dir = run(sc, out, console)
        else:
            with mutant_tree(mutant) as root, _children_import_from(root):
                run_dir = run(sc, out, console)
        result = check(run_dir, console)
    except SpikegateError as exc:
        return {"status": "error", "error": str(exc), "exit_code": exc.exit_code, "verdicts": {}}
    return {
        "run_dir": str(run_dir),
        "status": result.status,
        "verdicts": _worst(result),
        "failed_verdicts": sorted({v.name for v in result.failed()}),
        "failed": [f"{v.name}/{v.phase}: {v.message}" for v in result.failed()],
    }


def _print_table(console: Console, results: list[dict[str, Any]]) -> None:
    """One row per mutant, the defect under its id: it stays readable in an 80-column log."""
    table = Table(
        title="mutants",
        caption="caught by: the verdicts that failed (* = expected to own the mutant); "
        "† = ran on a fallback scenario (its own is not shipped yet)",
        show_lines=True,
    )
    table.add_column("mutant / defect")
    table.add_column("caught by", no_wrap=True)
    table.add_column("result", no_wrap=True)
    for r in results:
        by = "\n".join(v + ("*" if v in r["expect"] else "") for v in r.get("failed_verdicts", []))
        if r["status"] == "error":
            result = "[yellow]error[/]"
            by = "\n".join(textwrap.wrap(r.get("error", ""), 24)[:3])
        elif r["caught"]:
            result = "[green]caught[/]"
        else:
            result = f"[bold red]SURVIVED[/]\n({r['status']})"
        mark = "†" if r["fallback"] else ""
        table.add_row(
            f"[bold]{r['id']}{mark}[/] [dim]({r['class']})[/]\n{escape(r['description'])}",
            escape(by) or "-",
            result,
        )
    console.print(table)


def print_catalog(console: Console) -> None:
    """`spikegate mutate --list`: the catalog, nothing run."""
    names = shipped()
    table = Table(title=f"mutant catalog ({len(CATALOG)})", show_lines=True)
    table.add_column("id / class", no_wrap=True)
    table.add_column("defect, files; expected catcher(s) @ scenario")
    for m in CATALOG:
        ref, fallback = _scenario_for(m, None, names)
        where = f"{m.scenario} (not shipped yet: {ref})" if fallback else ref
        files = ", ".join(sorted({e.file for e in m.edits}))
        table.add_row(
            f"{m.id}\n[dim]{m.klass}[/]",
            f"{escape(m.description)}\n[dim]{files}; {', '.join(m.expect)} @ {where}[/]",
        )
    console.print(table)
