"""Thresholds: k6-like strings parsed precisely; errors name the key and the accepted form."""

from __future__ import annotations

from typing import Any

import pytest

from spikegate.harness.errors import UsageError
from spikegate.harness.scenario import load_scenario
from spikegate.harness.thresholds import (
    Floor,
    LatencyBound,
    RateBound,
    SizeBound,
    Thresholds,
    Within,
    apply_check_overrides,
    parse_floor,
    parse_latency,
    parse_rate,
    parse_size,
    parse_within,
    thresholds_from_checks,
)

PARSED: list[tuple[Any, str, Any]] = [
    (parse_latency, "p99 < 150ms", LatencyBound(99.0, "<", 150.0)),
    (parse_latency, "p99.9 <= 1s", LatencyBound(99.9, "<=", 1000.0)),
    (parse_latency, "p(95)<200ms", LatencyBound(95.0, "<", 200.0)),
    (parse_latency, "p50 < 750us", LatencyBound(50.0, "<", 0.75)),
    (parse_latency, "  P100 <= 2.5S ", LatencyBound(100.0, "<=", 2500.0)),
    (parse_rate, "rate < 1%", RateBound("<", 0.01)),
    (parse_rate, "rate<=0.5%", RateBound("<=", 0.005)),
    (parse_floor, ">= 80%", Floor(">=", 0.8)),
    (parse_floor, "> 99.5%", Floor(">", 0.995)),
    (parse_within, "within 10s", Within(10.0)),
    (parse_within, "within 500ms", Within(0.5)),
    (parse_within, "within 2m", Within(120.0)),
    (parse_size, "< 200MB", SizeBound("<", 200e6)),
    (parse_size, "<= 1GiB", SizeBound("<=", 2**30)),
    (parse_size, "< 512 kb", SizeBound("<", 512e3)),
]


@pytest.mark.parametrize(("parse", "text", "expected"), PARSED, ids=[p[1] for p in PARSED])
def test_readable_forms_parse_exactly(parse: Any, text: str, expected: Any) -> None:
    assert parse(text) == expected


REJECTED: list[tuple[Any, Any]] = [
    (parse_latency, "p99 150ms"),
    (parse_latency, "p99 < 150"),
    (parse_latency, "p99 > 150ms"),
    (parse_latency, "p0 < 1ms"),
    (parse_latency, "p101 < 1ms"),
    (parse_latency, 150),
    (parse_rate, "< 1%"),
    (parse_rate, "rate < 101%"),
    (parse_rate, "rate < 1"),
    (parse_floor, "80%"),
    (parse_floor, ">= 120%"),
    (parse_within, "10s"),
    (parse_within, "within 10"),
    (parse_size, "< 200"),
    (parse_size, "200MB"),
]


@pytest.mark.parametrize(("parse", "text"), REJECTED, ids=[str(r[1]) for r in REJECTED])
def test_malformed_forms_are_rejected_with_the_accepted_form(parse: Any, text: Any) -> None:
    with pytest.raises(ValueError, match=r"expected|percentile") as info:
        parse(text)
    assert repr(text) in str(info.value)


def test_comparisons_respect_strictness() -> None:
    assert parse_latency("p99 < 150ms").ok(149.9) and not parse_latency("p99 < 150ms").ok(150)
    assert parse_latency("p99 <= 150ms").ok(150)
    assert parse_rate("rate < 1%").ok(0.0099) and not parse_rate("rate < 1%").ok(0.01)
    assert parse_floor(">= 80%").ok(0.8) and not parse_floor("> 80%").ok(0.8)
    assert parse_within("within 10s").ok(10.0) and not parse_within("within 10s").ok(10.01)
    assert not parse_size("< 200MB").ok(200e6)


def test_defaults_are_documented_values() -> None:
    th = Thresholds()
    assert str(th.slo) == "p99 < 150ms"
    assert th.error_rate == RateBound("<", 0.01)
    assert th.goodput_floor == Floor(">=", 0.8)
    assert th.recover == Within(15.0) and th.detect == Within(5.0) and th.hold == 3
    assert th.reject_bound == LatencyBound(99.0, "<", 75.0)  # half the SLO
    assert th.generator_min == Floor(">=", 0.95)
    assert th.steady_rejections == RateBound("<", 0.01)


def test_steady_rejections_is_a_rate_and_errors_name_its_form() -> None:
    assert thresholds_from_checks({"steady_rejections": "rate <= 0.5%"}).steady_rejections == (
        RateBound("<=", 0.005)
    )
    with pytest.raises(UsageError, match=r"checks\.steady_rejections.*rate < 1%"):
        thresholds_from_checks({"steady_rejections": "1%"})


def test_every_key_is_in_the_docstring_table() -> None:
    import spikegate.harness.thresholds as mod

    assert mod.__doc__ is not None
    for key in Thresholds.model_fields:
        assert f"| `{key}`" in mod.__doc__, key


def test_to_json_round_trips_through_validation() -> None:
    th = thresholds_from_checks({"slo": "p99.9 <= 1s", "hold": "5s", "generator_cpu": "< 80%"})
    data = th.to_json()
    assert data["slo"] == "p99.9 <= 1000ms" and data["hold"] == 5
    assert data["generator_cpu"] == "< 80%"
    data["fast_reject"] = None
    assert thresholds_from_checks(data) == th


def test_errors_name_every_bad_key_and_the_accepted_form() -> None:
    with pytest.raises(UsageError) as info:
        thresholds_from_checks(
            {"slo": "p99 150", "recover": "10s", "hold": 0, "sloo": 1, "goodput_floor": "80"}
        )
    text = str(info.value)
    assert info.value.exit_code == 2
    assert 'checks.slo: expected a latency bound like "p99 < 150ms"' in text
    assert 'checks.recover: expected a duration budget like "within 10s"' in text
    assert "checks.hold" in text and "1..3600" in text
    assert "checks.sloo: unknown key" in text and "slo" in text
    assert 'checks.goodput_floor: expected a floor like ">= 80%"' in text


def test_check_overrides_parse_toml_or_keep_strings() -> None:
    out = apply_check_overrides(
        {"slo": "p99 < 150ms"},
        ['checks.slo="p99 < 100ms"', "recover=within 20s", "checks.hold=5", "layers=false"],
    )
    assert out == {"slo": "p99 < 100ms", "recover": "within 20s", "hold": 5, "layers": False}
    assert thresholds_from_checks(out).slo.bound_ms == 100.0


@pytest.mark.parametrize("bad", ["slo", "checks.=1", "load.duration_s=5", "a b=1"])
def test_bad_check_override_is_a_usage_error(bad: str) -> None:
    with pytest.raises(UsageError, match=r"checks\.KEY=VALUE"):
        apply_check_overrides({}, [bad])


def test_scenario_set_override_reaches_the_thresholds() -> None:
    """`spikegate run smoke --set checks.slo="p99 < 100ms"` goes through Scenario overrides."""
    sc = load_scenario("smoke", ['checks.slo="p99 < 100ms"'])
    assert thresholds_from_checks(sc.checks).slo == LatencyBound(99.0, "<", 100.0)


@pytest.mark.parametrize(
    "name",
    ["smoke", "perfect-storm", "flash-crowd", "hot-publisher", "dsp-brownout", "redis-outage",
     "kafka-stall"],
)  # fmt: skip
def test_shipped_scenarios_have_valid_checks(name: str) -> None:
    thresholds_from_checks(load_scenario(name).checks)


def test_server_reject_defaults_to_p99_under_5ms_and_is_settable() -> None:
    assert Thresholds().server_reject == LatencyBound(99.0, "<", 5.0)
    th = thresholds_from_checks(apply_check_overrides({}, ['checks.server_reject="p99.9 <= 2ms"']))
    assert th.server_reject == LatencyBound(99.9, "<=", 2.0)
    assert th.to_json()["server_reject"] == "p99.9 <= 2ms"


def test_bad_server_reject_names_the_key_and_the_form() -> None:
    with pytest.raises(UsageError) as info:
        thresholds_from_checks({"server_reject": "5ms"})
    assert 'checks.server_reject: expected a latency bound like "p99 < 150ms"' in str(info.value)


def test_client_reject_defaults_to_p90_under_10ms_and_is_settable() -> None:
    """Tight enough that a rejection delayed by 20 ms fails (healthy runs: p90 <= 0.8 ms)."""
    assert Thresholds().client_reject == LatencyBound(90.0, "<", 10.0)
    assert not Thresholds().client_reject.ok(20.0)
    th = thresholds_from_checks(apply_check_overrides({}, ['checks.client_reject="p95 < 5ms"']))
    assert th.client_reject == LatencyBound(95.0, "<", 5.0)
    assert th.to_json()["client_reject"] == "p95 < 5ms"
    with pytest.raises(UsageError, match=r"checks\.client_reject.*latency bound"):
        thresholds_from_checks({"client_reject": "10ms"})


def test_generator_lateness_p99_defaults_to_10ms_and_is_settable() -> None:
    assert Thresholds().generator_lateness_p99_ms == 10.0
    th = thresholds_from_checks({"generator_lateness_p99_ms": 20})
    assert th.generator_lateness_p99_ms == 20.0
    assert th.to_json()["generator_lateness_p99_ms"] == 20.0


@pytest.mark.parametrize("bad", [0.5, 0, -3, "10ms", True])
def test_bad_generator_lateness_p99_names_the_key_and_the_form(bad: Any) -> None:
    """Below 1 ms the recorder's counts cannot tell (its smallest bound is 1 ms)."""
    with pytest.raises(UsageError) as info:
        thresholds_from_checks({"generator_lateness_p99_ms": bad})
    assert "checks.generator_lateness_p99_ms" in info.value.message
