"""The built wheel, installed into a fresh virtualenv, runs a shipped scenario by name from
any directory, and gates a user's own service the way the README says: the worked example
copied out of the repository (slow: it installs every dependency;
`pytest -m slow tests/e2e/test_wheel.py`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(900)]


def _install(tmp_path: Path) -> Path:
    """The wheel of this tree in a fresh virtualenv; returns the venv's folder."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(ROOT)],
        check=True, timeout=300,
    )  # fmt: skip
    (whl,) = wheels.glob("spikegate-*.whl")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([py, "-m", "pip", "install", "-q", str(whl)], check=True, timeout=600)
    return env_dir


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """No source tree, no activated venv: PATH has only the system's folders."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    env["SPIKEGATE_RUNTIME_DIR"] = str(tmp_path / "runtime")
    return env


def test_the_installed_wheel_runs_smoke_from_another_directory(tmp_path: Path) -> None:
    env_dir = _install(tmp_path)
    py = env_dir / "bin" / "python"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["SPIKEGATE_RUNTIME_DIR"] = str(tmp_path / "runtime")
    version = subprocess.run(
        [env_dir / "bin" / "spikegate", "--version"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert version.returncode == 0 and version.stdout.startswith("spikegate "), version
    run = subprocess.run(
        [env_dir / "bin" / "spikegate", "run", "smoke", "--no-live", "--out",
         str(tmp_path / "run")],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (tmp_path / "run" / "report.json").is_file()
    # nothing of the source tree was on the path: the run used the installed package
    probe = subprocess.run(
        [py, "-c", "import spikegate.harness, sys; print(spikegate.harness.__file__)"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert str(env_dir) in probe.stdout


def test_the_installed_wheel_gates_the_example_outside_the_repository(tmp_path: Path) -> None:
    """examples/inventory copied elsewhere: the naive service fails naming the verdict its
    missing limit should fail, the protected one passes."""
    env_dir = _install(tmp_path)
    project = tmp_path / "project"
    shutil.copytree(ROOT / "examples" / "inventory", project)
    env = _clean_env(tmp_path)
    results = {}
    for variant in ("naive", "protected"):
        run = subprocess.run(
            [env_dir / "bin" / "spikegate", "run", f"{variant}.toml", "--no-live", "--out",
             str(tmp_path / variant)],
            cwd=project, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        report = json.loads((tmp_path / variant / "report.json").read_text())
        failed = {v["name"] for v in report["verdicts"] if v["status"] == "fail"}
        results[variant] = (run.returncode, failed, run.stdout[-3000:] + run.stderr[-2000:])
    code, failed, out = results["naive"]
    assert code == 1 and {"no_unexpected_errors", "layer.bulkhead"} <= failed, out
    code, failed, out = results["protected"]
    assert code == 0 and not failed, out
