"""The shipped `failure-paths` scenario: it loads, validates, and still covers its four paths.

The scenario is the second gate scenario (`make gate`); these tests pin down its structure
so that a later tuning cannot quietly drop a failure path: produces that fail (Kafka refused
or reset, not only stalled), an impression queue that can reach its cap, two separate fault
windows on one DSP with a recovery gap, and Redis down for several seconds.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest

from spikegate.chaos.faults import resolve_fault
from spikegate.harness.scenario import FaultEntry, Scenario, load_scenario, parse_scenario, shipped
from spikegate.target.config import TargetConfig

NAME = "failure-paths"
REDIS_DOWN_MIN_S = 5.0  # several seconds: broken pooled connections, then refused reconnects
DSP_GAP_MIN_S = 10.0  # the breaker's open wait tops out at 5 s (+jitter): room to close again
KAFKA_DOWN, KAFKA_RESET = ("kafka", "down"), ("kafka", "reset")
MAKEFILE = Path(__file__).resolve().parents[3] / "Makefile"


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return load_scenario(NAME)


def _kind(f: FaultEntry) -> tuple[str, str]:
    """(proxy, base fault kind) with shorthands resolved: ("kafka", "down"), ("dsp-1", ...)."""
    proxy, fault = resolve_fault(f.fault, f.proxy, f.params)
    return proxy, fault.name


def _config(s: Scenario) -> TargetConfig:
    merged = s.target_config(
        redis_url="redis://127.0.0.1:6379/0",
        kafka_bootstrap="127.0.0.1:9092",
        dsp_urls=dict.fromkeys(s.dsp_names(), "http://127.0.0.1:1"),
    )
    return TargetConfig.model_validate(merged)


def test_is_shipped_loads_and_round_trips(scenario: Scenario) -> None:
    assert NAME in shipped()
    assert scenario.name == NAME
    assert scenario.target.kind == "reference"
    again = parse_scenario(tomllib.loads(scenario.to_toml()), source="resolved")
    assert again == scenario


def test_load_is_short_and_every_fault_is_judged(scenario: Scenario) -> None:
    load = scenario.load
    assert load.duration_s <= 70
    assert load.impression_rate > 0  # impressions must flow for the Kafka paths to run
    for f in scenario.faults:
        assert f.at_s >= load.warmup_s
        assert f.at_s + f.for_s <= load.duration_s
    stress = scenario.stress_window()
    assert stress is not None
    # a recovery window after the last fault, inside the run
    assert stress[1] + scenario.phases.recovery_s <= load.duration_s


def test_kafka_produces_fail_not_only_stall(scenario: Scenario) -> None:
    kafka = [(f, _kind(f)[1]) for f in scenario.faults if _kind(f)[0] == "kafka"]
    failing = [f for f, kind in kafka if ("kafka", kind) in {KAFKA_DOWN, KAFKA_RESET}]
    assert failing, "no kafka fault of kind down or reset"
    # long enough for aiokafka to fail a batch (request_timeout_ms) and the logger to retry
    timeout_s = _config(scenario).impressions.request_timeout_ms / 1000
    assert max(f.for_s for f in failing) >= 2 * timeout_s


def test_one_dsp_is_faulted_twice_with_a_recovery_gap(scenario: Scenario) -> None:
    windows: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for f in scenario.faults:
        proxy, _ = _kind(f)
        if proxy.startswith("dsp-"):
            windows[proxy].append((f.at_s, f.at_s + f.for_s))
    twice = {dsp: sorted(w) for dsp, w in windows.items() if len(w) >= 2}
    assert twice, f"no DSP with two fault windows: {dict(windows)}"
    breaker = _config(scenario).breaker
    need = max(DSP_GAP_MIN_S, 2 * breaker.max_wait_open_s)
    for dsp, ws in twice.items():
        gaps = [b[0] - a[1] for a, b in itertools.pairwise(ws)]
        assert all(g >= need for g in gaps), f"{dsp}: windows {ws} leave gaps {gaps} < {need}"


def test_redis_is_down_for_several_seconds(scenario: Scenario) -> None:
    down = [f.for_s for f in scenario.faults if _kind(f) == ("redis", "down")]
    assert down and max(down) >= REDIS_DOWN_MIN_S


def test_queue_cap_is_set_and_reachable(scenario: Scenario) -> None:
    raw = scenario.target.config.get("impressions", {})
    assert "max_depth" in raw, "the scenario sets no impression queue cap"
    imp = _config(scenario).impressions
    assert imp.enabled  # shedding on: the cap is what is judged
    # CoDel sheds as soon as the queue stands (~one interval of arrivals), far below any
    # sensible cap; the depth-only rule lets the queue reach the cap.
    assert not imp.codel
    # the cap fills well within the longest failing Kafka window at the offered rate
    load = scenario.load
    per_s = load.base_rps * load.impression_rate
    failing = [f.for_s for f in scenario.faults if _kind(f) in {KAFKA_DOWN, KAFKA_RESET}]
    assert imp.max_depth / per_s < max(failing) / 2


def test_make_gate_runs_both_gate_scenarios() -> None:
    text = MAKEFILE.read_text()
    m = re.search(r"^GATE_SCENARIOS \?= (.+)$", text, re.M)
    assert m is not None
    assert m.group(1).split() == ["perfect-storm", NAME]
