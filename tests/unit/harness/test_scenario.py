"""Scenario loading: validation with precise errors, overrides, derived phases and configs."""

from __future__ import annotations

import itertools
import json
import re
import tomllib
from pathlib import Path

import pytest

from spikegate.harness.errors import ScenarioError
from spikegate.harness.scenario import Scenario, load_scenario, parse_scenario, shipped

SHIPPED = ["dsp-brownout", "failure-paths", "flash-crowd", "hot-publisher", "kafka-stall",
           "perfect-storm", "redis-outage", "smoke"]  # fmt: skip


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_scenario_loads_and_round_trips_through_toml(name: str) -> None:
    s = load_scenario(name)
    assert s.name == name
    again = parse_scenario(tomllib.loads(s.to_toml()), source="resolved")
    assert again == s


def test_shipped_lists_the_scenarios_directory() -> None:
    assert set(SHIPPED) <= set(shipped())


def test_unknown_field_names_the_field_and_its_line(tmp_path: Path) -> None:
    p = write(tmp_path, 'name = "x"\n[load]\nshape = "steady"\npeak_rsp = 10\n')
    with pytest.raises(ScenarioError) as err:
        load_scenario(p)
    msg = str(err.value)
    assert "load.peak_rsp" in msg and "line 4" in msg and "unknown field" in msg
    assert err.value.exit_code == 2


def test_bad_shape_names_the_allowed_values(tmp_path: Path) -> None:
    p = write(tmp_path, 'name = "x"\n[load]\nshape = "spiky"\n')
    with pytest.raises(ScenarioError, match=r"load\.shape \(line 3\).*flash_crowd.*'spiky'"):
        load_scenario(p)


def test_invalid_toml_is_a_scenario_error_with_the_file(tmp_path: Path) -> None:
    p = write(tmp_path, 'name = "x"\n[load\n')
    with pytest.raises(ScenarioError, match=r"s\.toml: invalid TOML"):
        load_scenario(p)


def test_unknown_scenario_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ScenarioError) as err:
        load_scenario("no-such-scenario")
    assert "smoke" in (err.value.hint or "")


def test_fault_past_the_end_of_the_run_is_rejected_with_the_fix(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        'name = "x"\n[load]\nduration_s = 10\n[[faults]]\nat_s = 8\nfor_s = 5\n'
        'fault = "dsp_latency"\nparams = { latency_ms = 10 }\n',
    )
    with pytest.raises(ScenarioError, match=r"faults #1 \(line 4\), for_s: ends at 13 s.*shorten"):
        load_scenario(p)


def test_fault_with_unknown_parameter_is_rejected(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        'name = "x"\n[[faults]]\nat_s = 1\nfor_s = 1\nfault = "dsp_latency"\n'
        "params = { latncy_ms = 10 }\n",
    )
    with pytest.raises(ScenarioError, match=r"faults #1 \(line 2\), params: unknown param"):
        load_scenario(p)


def test_fault_on_a_proxy_that_does_not_exist_is_rejected(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        'name = "x"\n[stack]\ndsp_count = 2\n[[faults]]\nat_s = 1\nfor_s = 1\n'
        'fault = "latency"\nproxy = "dsp-3"\nparams = { latency_ms = 10 }\n',
    )
    with pytest.raises(ScenarioError, match=r"'dsp-3' is not one of redis, kafka, dsp-1, dsp-2"):
        load_scenario(p)


def test_set_overrides_parse_values_as_toml_and_create_tables() -> None:
    s = load_scenario("smoke", ["load.base_rps=75", "seed=99", "target.config.auction.limit=5"])
    assert s.load.base_rps == 75 and s.seed == 99
    assert s.target.config["auction"]["limit"] == 5


def test_set_override_without_equals_is_a_usage_error() -> None:
    with pytest.raises(ScenarioError, match=r"expected key\.path=value"):
        load_scenario("smoke", ["load.base_rps"])


def test_set_override_with_a_bad_value_names_the_field() -> None:
    with pytest.raises(ScenarioError, match=r"load\.base_rps"):
        load_scenario("smoke", ["load.base_rps=-5"])


def test_flash_crowd_needs_peak_above_base(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        'name = "x"\n[load]\nshape = "flash_crowd"\nduration_s = 30\nbase_rps = 100\n'
        "peak_rps = 50\nspike_at_s = 10\nspike_for_s = 5\n",
    )
    with pytest.raises(ScenarioError, match=r"peak_rps \(50.0\) must exceed load.base_rps"):
        load_scenario(p)


def test_phases_cover_the_run_contiguously_from_spike_and_faults() -> None:
    s = load_scenario("perfect-storm")
    phases = s.phase_list()
    assert [p.name for p in phases] == ["warmup", "baseline", "stress", "recovery", "post"]
    assert phases[0].start_s == 0 and phases[-1].end_s == s.load.duration_s
    assert all(a.end_s == b.start_s for a, b in itertools.pairwise(phases))
    stress = phases[2]
    assert (stress.start_s, stress.end_s) == (20.0, 35.0)  # spike 20-35 covers all faults
    assert phases[3].end_s - phases[3].start_s == s.phases.recovery_s


def test_a_steady_run_without_faults_is_all_baseline() -> None:
    s = parse_scenario({"name": "calm", "load": {"duration_s": 20, "warmup_s": 2}}, source="t")
    assert [(p.name, p.start_s, p.end_s) for p in s.phase_list()] == [
        ("warmup", 0.0, 2.0),
        ("baseline", 2.0, 20.0),
    ]


def test_target_config_carries_publishers_dsps_and_overrides() -> None:
    s = load_scenario("perfect-storm")
    cfg = s.target_config(
        redis_url="redis://127.0.0.1:1/0",
        kafka_bootstrap="127.0.0.1:2",
        dsp_urls={"dsp-1": "http://127.0.0.1:3"},
    )
    t = s.target  # the shipped tuning is the scenario's business; the carrying is ours
    assert cfg["publishers"]["pub-1"] == {
        "api_key": "key-pub-1", "rate_per_s": t.publisher_rate_per_s, "burst": t.publisher_burst,
    }  # fmt: skip
    assert cfg["auction"]["limit"] == t.config["auction"]["limit"]
    assert cfg["dsps"][0]["name"] == "dsp-1"
    from spikegate.target.config import TargetConfig

    TargetConfig.model_validate(cfg)  # the reference target accepts what we generate


def test_load_env_is_json_of_the_load_section_and_publishers() -> None:
    s = load_scenario("smoke")
    env = s.load_env()
    assert json.loads(env["SPIKEGATE_LOAD"])["base_rps"] == s.load.base_rps
    assert json.loads(env["SPIKEGATE_PUBLISHERS"]) == s.publishers()
    assert env["SPIKEGATE_SEED"] == str(s.seed)


def test_external_target_needs_a_url_and_knows_loopback() -> None:
    with pytest.raises(ScenarioError, match=r"target\.url is required"):
        parse_scenario({"name": "x", "target": {"kind": "external"}}, source="t")
    local = parse_scenario(
        {"name": "x", "target": {"kind": "external", "url": "http://localhost:9/"}}, source="t"
    )
    remote = parse_scenario(
        {"name": "x", "target": {"kind": "external", "url": "http://10.1.2.3/"}}, source="t"
    )
    assert local.target.is_loopback() and not remote.target.is_loopback()


def test_json_schema_names_every_section() -> None:
    schema = Scenario.model_json_schema()
    assert {"target", "stack", "load", "faults", "phases", "checks", "seed"} <= set(
        schema["properties"]
    )


def test_json_schema_describes_checks_in_the_forms_users_write() -> None:
    schema = Scenario.model_json_schema()
    checks = schema["$defs"]["Thresholds"]
    assert schema["properties"]["checks"]["$ref"] == "#/$defs/Thresholds"
    assert checks["additionalProperties"] is False
    slo = checks["properties"]["slo"]
    assert slo["type"] == "string" and slo["default"] == "p99 < 150ms"
    assert re.fullmatch(slo["pattern"], "p99.9 <= 1s") and "SLO" in slo["description"]
    assert checks["properties"]["hold"]["anyOf"][0]["type"] == "integer"
    for key, prop in checks["properties"].items():  # every threshold is described
        assert prop.get("description"), key


def test_json_schema_describes_target_config_by_the_targets_own_model() -> None:
    target = Scenario.model_json_schema()["$defs"]["TargetSection"]
    config = target["properties"]["config"]
    assert {"auction", "edge", "impressions", "breaker", "publishers"} <= set(config["properties"])
    limit = config["properties"]["auction"]["properties"]["limit"]
    assert limit["type"] == "integer" and limit["minimum"] == 1
    assert config["additionalProperties"] is False
    assert "$ref" not in json.dumps(config) and "required" not in json.dumps(config)


def test_strict_types_keep_integers_valid_for_floats() -> None:
    s = parse_scenario({"name": "x", "load": {"base_rps": 20, "duration_s": 30}}, source="t")
    assert s.load.base_rps == 20.0 and isinstance(s.load.base_rps, float)
    with pytest.raises(ScenarioError, match=r"load\.base_rps: Input should be a valid number"):
        parse_scenario({"name": "x", "load": {"base_rps": "20"}}, source="t")


def test_checks_round_trip_through_the_resolved_toml() -> None:
    s = load_scenario("smoke", ['checks.rss_growth="<= 1GiB"', 'checks.recover="within 500ms"'])
    again = parse_scenario(tomllib.loads(s.to_toml()), source="resolved")
    assert again.checks == s.checks and again.checks.rss_growth.bytes == 2**30


def test_shipped_load_section_is_the_contract_model() -> None:
    from spikegate.contract.load import SHAPES, LoadSection

    assert Scenario.model_fields["load"].annotation is LoadSection
    assert "flash_crowd" in SHAPES and len(SHAPES) == len(set(SHAPES))
