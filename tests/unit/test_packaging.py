"""The distribution: one import name, every package folder listed, the scenarios inside.

A wheel is built from the source tree (no network: `--no-deps --no-build-isolation`) and its
file list read: nothing installs as a top-level `harness`, `target`, `chaos` or
`locustfiles`, and what runs from the installed package (shipped scenarios, locustfiles,
templates) is in it. Installing that wheel into a fresh virtualenv and running a scenario
from another directory is tests/e2e/test_wheel.py (slow).
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
TOOL = PYPROJECT["tool"]["setuptools"]


def _package_folders() -> set[str]:
    """Every folder with an __init__.py under the mapped roots, as a dotted spikegate name."""
    names = {"spikegate.scenarios"}  # data only, no __init__.py
    for dotted, folder in TOOL["package-dir"].items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base).parts
            names.add(".".join((dotted, *rel)))
    return names


def test_every_package_folder_is_listed() -> None:
    assert set(TOOL["packages"]) == _package_folders()


def test_the_license_is_an_spdx_expression() -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=240,
    )  # fmt: skip
    (whl,) = out.glob("spikegate-*.whl")
    return zipfile.ZipFile(whl)


def test_the_wheel_installs_one_import_name(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"spikegate"}


def test_the_wheel_ships_what_runs_from_it(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    shipped = {p.name for p in (ROOT / "scenarios").glob("*.toml")}
    assert shipped and {n.split("/")[-1] for n in names if "/scenarios/" in n} == shipped
    for needed in (
        "spikegate/locustfiles/adserver.py",
        "spikegate/locustfiles/shape_steady.py",
        "spikegate/harness/templates/control.html",
        "spikegate/harness/templates/report.html.j2",
        "spikegate/harness/templates/uplot.min.js",
        "spikegate/harness/templates/uplot.min.css",
        "spikegate/locustfiles/starter_locustfile.py.txt",
        "spikegate/contract/outcomes.py",
        "spikegate/chaos/server/__main__.py",
        "spikegate/target/dsp.py",
    ):
        assert needed in names, needed


def test_the_console_script_points_into_the_package(wheel: zipfile.ZipFile) -> None:
    (entry,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    text = wheel.read(entry).decode()
    assert "spikegate = spikegate.harness.cli:run" in text
