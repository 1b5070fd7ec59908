"""The built wheel, installed into a fresh virtualenv, runs a shipped scenario by name from
any directory (slow: it installs every dependency; `pytest -m slow tests/e2e/test_wheel.py`)."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(900)]


def test_the_installed_wheel_runs_smoke_from_another_directory(tmp_path: Path) -> None:
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
