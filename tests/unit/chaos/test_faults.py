"""Fault catalog: parameter validation, shorthands, what each fault does to a proxy."""

from __future__ import annotations

import json
from typing import Any

import pytest

from spikegate.chaos.errors import ProxyNotFound, ToxicNotFound
from spikegate.chaos.faults import (
    FAULTS,
    SHORTHANDS,
    Down,
    FaultSpec,
    Undo,
    build_fault,
    fault_params,
    resolve_fault,
)


class RecordingClient:
    """Records the fault calls; optionally fails removals with a given error."""

    def __init__(self, remove_error: Exception | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.remove_error = remove_error

    def add_toxic(self, proxy: str, type: str, **kwargs: Any) -> None:
        self.calls.append(("add_toxic", proxy, type, kwargs))

    def remove_toxic(self, proxy: str, name: str) -> None:
        self.calls.append(("remove_toxic", proxy, name))
        if self.remove_error is not None:
            raise self.remove_error

    def set_enabled(self, name: str, enabled: bool) -> None:
        self.calls.append(("set_enabled", name, enabled))
        if self.remove_error is not None and enabled:
            raise ProxyNotFound(404, "proxy not found")


TOXIC_FAULTS = [
    # (fault, params, toxic type, attributes sent)
    ("latency", {"latency_ms": 250, "jitter_ms": 20}, "latency", {"latency": 250, "jitter": 20}),
    ("reset", {"timeout_ms": 5}, "reset_peer", {"timeout": 5}),
    ("timeout", {"timeout_ms": 0}, "timeout", {"timeout": 0}),
    ("bandwidth", {"rate_kb_s": 0}, "bandwidth", {"rate": 0}),
    (
        "slicer",
        {"average_size_bytes": 10, "size_variation_bytes": 9, "delay_us": 7},
        "slicer",
        {"average_size": 10, "size_variation": 9, "delay": 7},
    ),
    ("limit_data", {"limit_bytes": 100}, "limit_data", {"bytes": 100}),
]


@pytest.mark.parametrize(("fault", "params", "toxic_type", "attributes"), TOXIC_FAULTS)
def test_toxic_fault_adds_one_named_toxic_and_undo_removes_it(
    fault: str, params: dict[str, Any], toxic_type: str, attributes: dict[str, int]
) -> None:
    client = RecordingClient()
    built = build_fault(fault, {**params, "stream": "upstream", "toxicity": 0.5})
    undo = built.apply(client, "redis", "tox-1")
    assert client.calls == [
        (
            "add_toxic",
            "redis",
            toxic_type,
            {"name": "tox-1", "stream": "upstream", "toxicity": 0.5, "attributes": attributes},
        )
    ]
    assert undo == Undo("redis", toxics=("tox-1",))
    undo.revert(client)
    assert client.calls[-1] == ("remove_toxic", "redis", "tox-1")


def test_catalog_lists_exactly_the_documented_faults() -> None:
    assert set(FAULTS) == {
        "latency", "down", "reset", "timeout", "bandwidth", "slicer", "limit_data",
    }  # fmt: skip
    assert set(SHORTHANDS) == {
        "dsp_latency", "dsp_down", "redis_latency", "redis_down", "redis_reset",
        "kafka_stall", "kafka_down",
    }  # fmt: skip
    assert all(sh.base in FAULTS for sh in SHORTHANDS.values())
    assert all(cls.name == key for key, cls in FAULTS.items())


def test_every_fault_builds_with_defaults_and_has_json_params() -> None:
    for name in FAULTS:
        json.dumps(fault_params(build_fault(name)))


def test_down_disables_the_proxy_and_undo_reenables_it() -> None:
    client = RecordingClient()
    undo = Down().apply(client, "dsp-2", "unused")
    assert client.calls == [("set_enabled", "dsp-2", False)]
    assert undo == Undo("dsp-2", reenable=True)
    undo.revert(client)
    assert client.calls[-1] == ("set_enabled", "dsp-2", True)


@pytest.mark.parametrize(
    "error", [ToxicNotFound(404, "toxic not found"), ProxyNotFound(404, "proxy not found")]
)
def test_undo_treats_an_already_removed_toxic_or_proxy_as_undone(error: Exception) -> None:
    client = RecordingClient(remove_error=error)
    Undo("redis", toxics=("a", "b"), reenable=True).revert(client)
    assert [c[0] for c in client.calls] == ["remove_toxic", "remove_toxic", "set_enabled"]


@pytest.mark.parametrize(
    ("fault", "params", "field"),
    [
        ("latency", {"latency_ms": -1}, "latency.latency_ms"),
        ("latency", {"latency_ms": 100.5}, "latency.latency_ms"),
        ("latency", {"latency_ms": "100"}, "latency.latency_ms"),
        ("latency", {"latency_ms": True}, "latency.latency_ms"),
        ("latency", {"latency_ms": 3_600_001}, "latency.latency_ms"),
        ("latency", {"jitter_ms": -5}, "latency.jitter_ms"),
        ("latency", {"stream": "sideways"}, "latency.stream"),
        ("latency", {"toxicity": 1.5}, "latency.toxicity"),
        ("latency", {"toxicity": -0.1}, "latency.toxicity"),
        ("reset", {"timeout_ms": -1}, "reset.timeout_ms"),
        ("timeout", {"timeout_ms": None}, "timeout.timeout_ms"),
        ("bandwidth", {"rate_kb_s": -1}, "bandwidth.rate_kb_s"),
        ("slicer", {"average_size_bytes": 0}, "slicer.average_size_bytes"),
        (
            "slicer",
            {"average_size_bytes": 10, "size_variation_bytes": 10},
            "slicer.size_variation_bytes",
        ),
        ("slicer", {"delay_us": -1}, "slicer.delay_us"),
        ("limit_data", {"limit_bytes": -1}, "limit_data.limit_bytes"),
        ("redis_latency", {"latency_ms": -3}, "latency.latency_ms"),
    ],
)
def test_bad_parameter_is_a_value_error_naming_the_field_and_range(
    fault: str, params: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=field) as info:
        build_fault(fault, params)
    assert "must be" in str(info.value)


def test_unknown_parameter_names_it_and_lists_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"latency_msec.*allowed: latency_ms, jitter_ms"):
        build_fault("latency", {"latency_msec": 5})
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) x.*allowed: none"):
        build_fault("down", {"x": 1})


def test_unknown_fault_name_lists_every_known_fault() -> None:
    with pytest.raises(ValueError, match=r"fault must be one of .*kafka_stall.*latency"):
        build_fault("latencyy")


@pytest.mark.parametrize(
    ("fault", "proxy", "expected_proxy", "expected_type"),
    [
        ("dsp_latency", None, "dsp-1", "latency"),
        ("dsp_latency", "dsp-12", "dsp-12", "latency"),
        ("dsp_down", "dsp-3", "dsp-3", "down"),
        ("redis_latency", None, "redis", "latency"),
        ("redis_down", "redis", "redis", "down"),
        ("redis_reset", None, "redis", "reset"),
        ("kafka_stall", None, "kafka", "bandwidth"),
        ("kafka_down", None, "kafka", "down"),
    ],
)
def test_shorthand_maps_to_base_fault_on_its_role_proxy(
    fault: str, proxy: str | None, expected_proxy: str, expected_type: str
) -> None:
    resolved_proxy, built = resolve_fault(fault, proxy)
    assert resolved_proxy == expected_proxy
    assert built.name == expected_type


def test_kafka_stall_freezes_the_stream_with_bandwidth_zero_unless_overridden() -> None:
    _, built = resolve_fault("kafka_stall", None)
    assert fault_params(built)["rate_kb_s"] == 0
    _, slowed = resolve_fault("kafka_stall", None, {"rate_kb_s": 5})
    assert fault_params(slowed)["rate_kb_s"] == 5


@pytest.mark.parametrize(
    ("fault", "proxy"),
    [("redis_down", "kafka"), ("dsp_latency", "dsp-0"), ("dsp_down", "dsp"), ("kafka_down", "")],
)
def test_shorthand_on_a_proxy_of_another_role_is_rejected(fault: str, proxy: str) -> None:
    with pytest.raises(ValueError, match=rf"proxy for '{fault}' must be"):
        resolve_fault(fault, proxy)


def test_base_fault_requires_an_explicit_proxy() -> None:
    with pytest.raises(ValueError, match="proxy is required"):
        resolve_fault("latency", None)
    assert resolve_fault("latency", "my-service")[0] == "my-service"


def test_fault_spec_validates_everything_at_construction() -> None:
    spec = FaultSpec(1.5, 2.0, None, "redis_latency", {"latency_ms": 50})
    assert spec.end_s == 3.5
    assert spec == FaultSpec(1.5, 2.0, None, "redis_latency", {"latency_ms": 50})
    assert hash(spec) == hash(FaultSpec(1.5, 2.0, None, "redis_latency", {"latency_ms": 50}))
    proxy, fault = spec.resolve()
    assert proxy == "redis" and fault_params(fault)["latency_ms"] == 50


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"at_s": -1}, "at_s"),
        ({"at_s": float("nan")}, "at_s"),
        ({"at_s": True}, "at_s"),
        ({"duration_s": 0}, "duration_s"),
        ({"duration_s": float("inf")}, "duration_s"),
        ({"duration_s": "5"}, "duration_s"),
        ({"fault": "nope"}, "fault must be one of"),
        ({"params": {"latency_ms": -1}}, "latency_ms"),
        ({"params": [1]}, "params must be a mapping"),
        ({"proxy": "kafka"}, "proxy for 'redis_latency'"),
    ],
)
def test_fault_spec_rejects_bad_fields_by_name(kwargs: dict[str, Any], field: str) -> None:
    base: dict[str, Any] = {
        "at_s": 0.0, "duration_s": 1.0, "proxy": None, "fault": "redis_latency", "params": {},
    }  # fmt: skip
    with pytest.raises(ValueError, match=field):
        FaultSpec(**{**base, **kwargs})


def test_fault_spec_params_are_copied_not_aliased() -> None:
    params: dict[str, Any] = {"latency_ms": 50}
    spec = FaultSpec(0, 1, "redis", "latency", params)
    params["latency_ms"] = -1
    assert spec.params == {"latency_ms": 50}
