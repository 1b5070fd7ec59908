"""`spikegate mutate`: the catalog applies to the current source, the copy leaves the repo
alone and compiles, children import the copy, and the exit code (fake runner and checker:
no stack, no sleeping)."""

from __future__ import annotations

import hashlib
import io
import os
import py_compile
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from spikegate.contract.env import LOCUSTFILES_ENV
from spikegate.harness.cli import main
from spikegate.harness.errors import EnvironmentProblem
from spikegate.harness.mutants import CATALOG, Mutant, by_id
from spikegate.harness.mutate import (
    MUTABLE,
    apply_mutant,
    child_env,
    drift,
    mutant_tree,
    mutate,
    package_sources,
)
from spikegate.harness.scenario import Scenario
from spikegate.harness.verdicts import FAIL, PASS, CheckResult, Verdict

SMALL_TOML = """
name = "mut"
[load]
shape = "steady"
duration_s = 30
warmup_s = 2
base_rps = 60
publishers = 1
[phases]
recovery_s = 5
"""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _source(file: str) -> Path:
    sub, _, rest = file.partition("/")
    return package_sources()[sub] / rest


@pytest.fixture(scope="module")
def pristine() -> object:
    with mutant_tree() as root:
        yield root


def test_catalog_has_unique_ids_and_covers_every_pattern() -> None:
    ids = [m.id for m in CATALOG]
    assert len(ids) == len(set(ids)) >= 18
    files = {e.file for m in CATALOG for e in m.edits}
    for part in ("token_bucket", "concurrency", "shedder", "breaker", "impressions.py",
                 "metrics.py", "locustfiles/"):  # fmt: skip
        assert any(part in f for f in files), part
    assert all(m.expect and m.description and m.klass for m in CATALOG)


@pytest.mark.parametrize("mutant", CATALOG, ids=lambda m: m.id)
def test_mutant_applies_exactly_once_to_current_source(mutant: Mutant) -> None:
    """Guards against drift: the failure names the mutant and the file to update."""
    problems = drift(mutant)
    assert not problems, f"mutant {mutant.id}: {problems}"
    assert all(e.file.startswith(MUTABLE) and e.old != e.new for e in mutant.edits)


@pytest.mark.parametrize("mutant", CATALOG, ids=lambda m: m.id)
def test_mutant_copy_compiles_and_leaves_repo_untouched(
    mutant: Mutant, pristine: Path, tmp_path: Path
) -> None:
    import shutil

    files = sorted({e.file for e in mutant.edits})
    before = {f: _digest(_source(f)) for f in files}
    root = tmp_path / "copy"
    shutil.copytree(pristine, root)
    touched = apply_mutant(mutant, root)
    assert touched
    for path in touched:
        py_compile.compile(str(path), cfile=str(tmp_path / "x.pyc"), doraise=True)
    for e in mutant.edits:
        text = (root / "spikegate" / e.file).read_text(encoding="utf-8")
        assert e.new in text
    assert {f: _digest(_source(f)) for f in files} == before
    for f in files:  # the copy differs from the repo exactly where the mutant says
        assert _digest(root / "spikegate" / f) != before[f]


def test_mutant_tree_is_removed_whatever_happens() -> None:
    with pytest.raises(RuntimeError), mutant_tree(by_id("shed-off-by-one")) as root:
        assert (root / "spikegate" / "target" / "edge.py").is_file()
        raise RuntimeError("boom")
    assert not root.exists()


def test_child_env_puts_the_copy_first(tmp_path: Path) -> None:
    env = child_env(tmp_path, {"PYTHONPATH": "/elsewhere", "KEEP": "1"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(tmp_path), "/elsewhere"]
    assert env[LOCUSTFILES_ENV] == str(tmp_path / "spikegate" / "locustfiles")
    assert env["KEEP"] == "1"
    assert child_env(tmp_path, {})["PYTHONPATH"] == str(tmp_path)


def test_a_child_imports_the_mutant_even_with_the_checkout_first_on_sys_path() -> None:
    """uvicorn and Locust put the working directory (a checkout's real `spikegate/`) at
    sys.path[0]; the copy's sitecustomize still wins. The harness keeps its own import."""
    mutant = by_id("edge-refill-us")
    assert mutant is not None
    checkout = package_sources()[""].parent
    probe = (
        "import sys; sys.path.insert(0, ''); "
        "import spikegate.target.backpressure.token_bucket as tb; print(tb.__file__)"
    )
    with mutant_tree(mutant) as root:
        out = subprocess.run(
            [sys.executable, "-c", probe],
            env=child_env(root, os.environ),
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
        assert Path(out).is_relative_to(root)
        assert "// 1000" in Path(out).read_text(encoding="utf-8")
    import spikegate.target.backpressure.token_bucket as ours

    assert not Path(ours.__file__).is_relative_to(root)


# --- the exit code, with a fake runner and checker -------------------------------------------


def _result(*failed: str) -> CheckResult:
    verdicts = [Verdict(n, "stress", FAIL, "bad") for n in failed]
    return CheckResult([*verdicts, Verdict("steady_state", "baseline", PASS, "ok")], {})


def _run(
    tmp_path: Path,
    only: tuple[str, ...],
    outcomes: dict[str, CheckResult | Exception],
) -> tuple[int, list[tuple[str, str | None]], str]:
    scenario = tmp_path / "mut.toml"
    scenario.write_text(SMALL_TOML)
    seen: list[tuple[str, str | None]] = []

    def runner(sc: Scenario, out: Path, console: Console) -> Path:
        seen.append((out.name, os.environ.get(LOCUSTFILES_ENV)))
        outcome = outcomes[out.name]
        if isinstance(outcome, Exception):
            raise outcome
        out.mkdir(parents=True)
        return out

    def checker(run_dir: Path, console: Console) -> CheckResult:
        outcome = outcomes[run_dir.name]
        assert isinstance(outcome, CheckResult)
        return outcome

    buf = io.StringIO()
    code = mutate(
        scenario, [], Console(file=buf, width=200), tmp_path / "out",
        only=only, runner=runner, checker=checker, clock=lambda: 0.0,
    )  # fmt: skip
    return code, seen, buf.getvalue()


def test_all_caught_exits_0_and_mutants_ran_on_the_copy(tmp_path: Path) -> None:
    before = os.environ.get(LOCUSTFILES_ENV)
    code, seen, text = _run(
        tmp_path,
        ("shed-off-by-one", "edge-reject-spends"),
        {"control": _result(), "shed-off-by-one": _result("layer.shedder"),
         "edge-reject-spends": _result("layer.edge")},
    )  # fmt: skip
    assert code == 0
    assert [name for name, _ in seen] == ["control", "edge-reject-spends", "shed-off-by-one"]
    assert seen[0][1] == before  # the control runs the unmutated install
    for _, folder in seen[1:]:
        assert folder is not None and "spikegate-mutant-" in folder
        assert not Path(folder).exists()  # cleaned up after its run
    assert os.environ.get(LOCUSTFILES_ENV) == before
    assert "2/2 caught" in text and "[1/3]" in text
    import json

    report = json.loads((tmp_path / "out" / "mutate.json").read_text())
    assert report["ok"] and report["mutants"][0]["failed_verdicts"] == ["layer.edge"]


def test_a_survivor_exits_1(tmp_path: Path) -> None:
    code, _, text = _run(
        tmp_path,
        ("shed-off-by-one", "edge-reject-spends"),
        {"control": _result(), "shed-off-by-one": _result(),
         "edge-reject-spends": _result("layer.edge")},
    )  # fmt: skip
    assert code == 1
    assert "SURVIVED" in text and "not caught: shed-off-by-one" in text


def test_a_failing_control_exits_1_and_runs_no_mutant(tmp_path: Path) -> None:
    code, seen, text = _run(
        tmp_path, ("shed-off-by-one",), {"control": _result("graceful_degradation")}
    )
    assert code == 1
    assert [name for name, _ in seen] == ["control"]
    assert "control did not pass" in text


def test_an_environment_error_keeps_its_exit_code(tmp_path: Path) -> None:
    code, _, _ = _run(
        tmp_path,
        ("shed-off-by-one",),
        {"control": _result(), "shed-off-by-one": EnvironmentProblem("redis-server missing")},
    )
    assert code == 4


# --- the CLI ----------------------------------------------------------------------------------


def test_cli_list_prints_the_catalog_and_runs_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mutate", "--list"]) == 0
    out = capsys.readouterr().out
    for m in CATALOG:
        assert m.id in out


def test_cli_only_unknown_is_a_usage_error_listing_valid_ids() -> None:
    buf = io.StringIO()
    assert main(["mutate", "--only", "no-such-mutant"], Console(file=buf, width=2000)) == 2
    text = buf.getvalue()
    assert "no-such-mutant" in text
    assert all(m.id in text for m in CATALOG)
