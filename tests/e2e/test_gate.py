"""The gate can fail: the same short scenario passes with the shedder on and fails with exit 1,
naming the verdict, when the pattern is switched off under the stress it protects against."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import SCENARIOS, finish, spikegate

pytestmark = [pytest.mark.e2e]

SCENARIO = str(SCENARIOS / "kafka-stall-short.toml")
REPORTS = ("report.json", "junit.xml", "summary.md", "report.html")


@pytest.mark.timeout(120)
def test_kafka_stall_with_the_shedder_on_passes_and_writes_the_reports(tmp_path: Path) -> None:
    run_dir = tmp_path / "on"
    code, out = finish(spikegate(["run", SCENARIO, "--no-live", "--out", str(run_dir)]), 100)
    assert code == 0, out
    for name in REPORTS:
        assert (run_dir / name).is_file(), name
    report = json.loads((run_dir / "report.json").read_text())
    assert report["status"] == "pass"
    shed = [v for v in report["verdicts"] if v["name"] == "layer.shedder"]
    assert shed and shed[0]["status"] == "pass"


@pytest.mark.timeout(120)
def test_kafka_stall_with_the_shedder_off_fails_with_exit_1_naming_the_verdict(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "off"
    args = ["run", SCENARIO, "--no-live", "--out", str(run_dir),
            "--set", "target.config.impressions.enabled=false"]  # fmt: skip
    code, out = finish(spikegate(args), 100)
    assert code == 1, out
    assert "layer.shedder" in out and "FAIL" in out
    report = json.loads((run_dir / "report.json").read_text())
    failed = {v["name"] for v in report["verdicts"] if v["status"] == "fail"}
    assert {"layer.shedder", "bounded_resources"} <= failed, failed
    junit = (run_dir / "junit.xml").read_text()
    assert "<failure" in junit and "layer.shedder" in junit
