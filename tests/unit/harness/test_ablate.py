"""Ablation: the matrix and its exit code, with a fake runner that writes the run directory a
target with that pattern switched off would produce (no stack, no sleeping)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from spikegate.harness.ablate import PATTERNS, PROTECTS, ablate, ablated, expectation_met
from spikegate.harness.errors import EnvironmentProblem
from spikegate.harness.scenario import Scenario, load_scenario
from spikegate.harness.verdicts import CheckResult, Verdict
from tests.unit.harness.test_history import hist, request_row, sample_row, write_run

# Phases: warmup [0,2) baseline [2,10) stress [10,18) recovery [18,23) post [23,30)
ABL_TOML = """
name = "abl"
[target]
publisher_rate_per_s = 100
publisher_burst = 20
[load]
shape = "steady"
duration_s = 30
warmup_s = 2
base_rps = 60
publishers = 1
[[faults]]
at_s = 10
for_s = 8
fault = "dsp_latency"
proxy = "dsp-1"
params = { latency_ms = 250 }
[[faults]]
at_s = 10
for_s = 8
fault = "redis_latency"
params = { latency_ms = 15 }
[[faults]]
at_s = 10
for_s = 8
fault = "kafka_stall"
[phases]
recovery_s = 5
"""


def _off(sc: Scenario) -> set[str]:
    return {p for p in PATTERNS if sc.target.config.get(p, {}).get("enabled") is False}


def _requests(edge_off: bool) -> list[dict[str, Any]]:
    rows = []
    for t in range(30):
        if 10 <= t < 18:
            row = request_row(t, ok=300 if edge_off else 60, shed=10)
            row["outcomes"]["rate_limited"] = 0 if edge_off else 5
            row["sent"] = row["intended"] = sum(row["outcomes"].values())
            row["hist_rejected"] = hist(2.0, 10 + row["outcomes"]["rate_limited"])
            row["publishers"]["pub-1"]["sent"] = row["sent"]
        else:
            row = request_row(t)
        rows.append(row)
    return rows


def _samples(off: set[str]) -> list[dict[str, Any]]:
    out = []
    for t in range(30):
        state = "disabled" if "breaker" in off else ("open" if 11 <= t < 18 else "closed")
        depth = 20_000.0 if "impressions" in off and 10 <= t < 18 else 5.0
        row = sample_row(t, state=state, depth=depth)
        if "auction" in off:  # no limit: only the inflight count is exported, and it soars
            row.pop("auction_limit")
            row.pop("auction_limit_ceiling")
            row["auction_inflight"] = 300.0 if 10 <= t < 18 else 4.0
        out.append(row)
    return out


def fake_runner(honest: bool = True) -> Any:
    """A runner whose run directories show each switched-off pattern's damage (honest), or
    look healthy whatever is switched off (a gate that cannot tell)."""

    def run(sc: Scenario, out: Path, console: Console) -> Path:
        off = _off(sc) if honest else set()
        return write_run(out, sc, requests=_requests("edge" in off), samples=_samples(off))

    return run


@pytest.fixture
def scenario_file(tmp_path: Path) -> Path:
    p = tmp_path / "abl.toml"
    p.write_text(ABL_TOML)
    return p


def _console() -> Console:
    return Console(record=True, width=250, force_terminal=False)


def test_each_ablation_fails_its_own_verdict_and_all_on_passes(
    scenario_file: Path, tmp_path: Path
) -> None:
    console = _console()
    code = ablate(scenario_file, [], console, tmp_path / "out", runner=fake_runner())
    report = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert code == 0, report
    assert report["ok"] is True
    assert [r["label"] for r in report["runs"]] == [
        "all-on", "no-edge", "no-auction", "no-impressions", "no-breaker",
    ]  # fmt: skip
    by = {r["label"]: r for r in report["runs"]}
    assert by["all-on"]["status"] == "pass"
    assert by["no-edge"]["verdicts"]["layer.edge"] == "fail"
    assert by["no-auction"]["verdicts"]["layer.bulkhead"] == "fail"
    assert by["no-impressions"]["verdicts"]["layer.shedder"] == "fail"
    assert by["no-breaker"]["verdicts"]["layer.breaker"] == "fail"
    text = console.export_text()
    assert "ablation matrix" in text and "as expected" in text


def test_a_gate_that_cannot_tell_exits_1(scenario_file: Path, tmp_path: Path) -> None:
    code = ablate(scenario_file, [], _console(), tmp_path / "out", runner=fake_runner(False))
    report = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert code == 1
    assert report["ok"] is False
    assert [r["met"] for r in report["runs"]] == [True, False, False, False, False]


def test_a_run_that_cannot_start_is_reported_with_its_exit_code(
    scenario_file: Path, tmp_path: Path
) -> None:
    honest = fake_runner()

    def run(sc: Scenario, out: Path, console: Console) -> Path:
        if "breaker" in _off(sc):
            raise EnvironmentProblem("redis-server not found")
        return honest(sc, out, console)  # type: ignore[no-any-return]

    code = ablate(scenario_file, [], _console(), tmp_path / "out", runner=run)
    report = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert code == 4
    assert report["runs"][-1]["status"] == "error"
    assert "redis-server" in report["runs"][-1]["error"]


def test_only_the_named_patterns_run(scenario_file: Path, tmp_path: Path) -> None:
    code = ablate(
        scenario_file, [], _console(), tmp_path / "out", patterns=["edge"], runner=fake_runner()
    )
    report = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert code == 0
    assert [r["label"] for r in report["runs"]] == ["all-on", "no-edge"]


def test_ablated_switches_one_pattern_off_and_keeps_the_rest(scenario_file: Path) -> None:
    base = load_scenario(scenario_file, ["target.config.auction.limit=12"])
    sc = ablated(base, "auction")
    assert sc.target.config["auction"] == {"limit": 12, "enabled": False}
    assert sc.name == "abl-no-auction"
    assert base.target.config["auction"] == {"limit": 12}
    with pytest.raises(ValueError, match="pattern must be one of"):
        ablated(base, "cache")


def test_every_pattern_has_protecting_verdicts() -> None:
    assert set(PROTECTS) == set(PATTERNS)
    assert all(PROTECTS[p] for p in PATTERNS)


def test_all_on_must_pass_not_merely_avoid_failing() -> None:
    inconclusive = CheckResult([Verdict("valid_run", "run", "inconclusive", "few")], {})
    assert not expectation_met(None, inconclusive)
    unrelated = CheckResult([Verdict("no_silent_loss", "run", "fail", "lost")], {})
    assert not expectation_met("edge", unrelated)
    assert expectation_met("impressions", unrelated)


def test_the_matrix_reads_in_an_80_column_log(scenario_file: Path, tmp_path: Path) -> None:
    console = Console(record=True, width=80, force_terminal=False)
    ablate(scenario_file, [], console, tmp_path / "out", runner=fake_runner())
    text = console.export_text()
    lines = text[text.index("ablation matrix") :].splitlines()
    row = next(line for line in lines if "layer.edge" in line)
    # one row per verdict, one column per run (all-on, no-edge, ...), nothing folded
    cells = [c.strip() for c in row.split("│")[1:-1]]
    assert cells[:3] == ["layer.edge", "pass", "fail*"]
    assert max(len(line) for line in lines) <= 80
    verdict = next(line for line in lines if "as expected" in line and "│" in line)
    assert verdict.count("yes") == 5
