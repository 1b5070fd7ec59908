"""r/a on the target alone (harness/rejection_cost.py) against a real stack: redis-server,
Tansu, three DSP fakes and two reference targets. The figures' size is a benchmark's business
(tests/bench/rejection_cost.py); here, that each window is answered as the kind it measures
and that every figure is there, so a window that measured the wrong path cannot pass."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from spikegate.harness.rejection_cost import measure


@pytest.mark.timeout(150)
def test_each_kind_is_answered_as_what_it_measures_and_the_stack_stops(tmp_path: Path) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    said: list[str] = []
    out = measure(40.0, 1.0, 1, tmp_path / "cost", progress=said.append)
    tree = out["this_tree"]
    per = tree["per_kind"]
    assert set(per["admitted"]["statuses"]) <= {"200", "204"}
    assert per["429"]["statuses"] == {"429": 40}
    assert per["shed"]["statuses"] == {"503": 40}
    for kind in ("admitted", "429", "shed"):
        assert sum(per[kind]["statuses"].values()) == 40
        assert per[kind]["cpu_us_per_request"] > 0
        assert len(per[kind]["rounds_us"]) == 1
    assert tree["r_over_a"] == pytest.approx(
        per["429"]["cpu_us_per_request"] / per["admitted"]["cpu_us_per_request"], rel=0.01
    )
    assert 0.0 <= tree["idle_cpu_share_of_core"] < 1.0
    assert said == ["round 1 of 1: admitted, 429, shed, idle, 1 s each"]
    after = {p.pid for p in psutil.Process().children(recursive=True)}
    assert after <= before, "the cost stack left children running"


@pytest.mark.timeout(60)
def test_a_load_process_that_fails_is_an_environment_problem_naming_its_window() -> None:
    """A window whose load process dies (here: the target pid it reads is gone) stops the
    measurement with exit 4 and the process's last line, never a traceback or a bad figure."""
    from spikegate.harness.errors import EnvironmentProblem
    from spikegate.harness.rejection_cost import _window

    with pytest.raises(EnvironmentProblem, match=r"the 429 window's load process exited 1: ") as e:
        _window("http://127.0.0.1:9", "429", 2**22 + 7, 10.0, 0.2)
    assert e.value.exit_code == 4
