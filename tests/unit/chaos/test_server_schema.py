"""Request validation of the chaos server's API shapes (chaos.server.schema)."""

from __future__ import annotations

import json

import pytest

from spikegate.chaos.server import schema
from spikegate.chaos.server.errors import ApiError
from spikegate.chaos.server.toxics import TOXICS


def body(value: object) -> bytes:
    return json.dumps(value).encode()


def error_of(fn, *args) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args)
    return info.value


def never(name: str) -> bool:
    return False


def test_proxy_create_checks_name_before_upstream():
    assert error_of(schema.parse_proxy_create, b"{}").message == "missing required field: name"
    err = error_of(schema.parse_proxy_create, body({"name": "a"}))
    assert (err.status, err.message) == (400, "missing required field: upstream")


def test_proxy_create_defaults_enabled_and_keeps_listen_as_given():
    spec = schema.parse_proxy_create(body({"name": "a", "upstream": "h:1", "enabled": None}))
    assert spec == schema.ProxySpec("a", "", "h:1", True)


@pytest.mark.parametrize("upstream", ["redis", "h:", ":80", "h:0", "h:65536", "h:http"])
def test_an_upstream_without_a_usable_port_is_400(upstream):
    err = error_of(schema.parse_proxy_create, body({"name": "a", "upstream": upstream}))
    assert err.status == 400 and "host:port" in err.message


def test_proxy_update_keeps_what_is_not_given():
    current = schema.ProxySpec("a", "127.0.0.1:5", "h:1", True)
    assert schema.parse_proxy_update(body({"enabled": False}), current) == schema.ProxySpec(
        "a", "127.0.0.1:5", "h:1", False
    )
    assert error_of(schema.parse_proxy_update, b"", current).message == "bad request body: EOF"


def test_populate_validates_all_entries_with_1_based_positions():
    err = error_of(schema.parse_populate, body([{"name": "a", "upstream": "h:1"}, {"name": "b"}]))
    assert err.message == "missing required field: upstream at proxy 2"
    assert error_of(schema.parse_populate, body({"name": "a"})).status == 400
    assert schema.parse_populate(b"null") == []


def test_toxic_create_fills_defaults():
    wrapper = schema.parse_toxic_create(body({"type": "latency"}), never)
    assert schema.toxic_json(wrapper) == {
        "attributes": {"latency": 0, "jitter": 0},
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1.0,
    }


def test_toxic_create_lowercases_the_stream_and_rejects_unknown_ones():
    assert schema.parse_toxic_create(
        body({"type": "noop", "stream": "UpStream"}), never
    ).stream == ("upstream")
    err = error_of(schema.parse_toxic_create, body({"type": "noop", "stream": "x"}), never)
    assert err.message == "stream was invalid, can be either upstream or downstream"


def test_toxic_create_order_of_checks_type_then_duplicate():
    assert error_of(schema.parse_toxic_create, body({"type": "x"}), never).message == (
        "invalid toxic type"
    )
    err = error_of(schema.parse_toxic_create, body({"type": "noop"}), lambda name: True)
    assert (err.status, err.message) == (409, "toxic already exists")


@pytest.mark.parametrize(
    ("type_", "attributes", "needle"),
    [
        ("bandwidth", {"rate": -1}, "rate"),
        ("latency", {"latency": -1}, "latency"),
        ("latency", {"jitter": 2**31}, "jitter"),
        ("slicer", {"average_size": 0}, "average_size"),
        ("slicer", {"average_size": 10, "size_variation": 10}, "size_variation"),
        ("limit_data", {"bytes": -5}, "bytes"),
        ("timeout", {"timeout": -1}, "timeout"),
    ],
)
def test_out_of_range_attributes_are_400_naming_the_attribute(type_, attributes, needle):
    err = error_of(
        schema.parse_toxic_create, body({"type": type_, "attributes": attributes}), never
    )
    assert err.status == 400 and needle in err.message


def test_bandwidth_rate_0_is_allowed():
    wrapper = schema.parse_toxic_create(
        body({"type": "bandwidth", "attributes": {"rate": 0}}), never
    )
    assert schema.attributes_of(wrapper.toxic) == {"rate": 0}


@pytest.mark.parametrize("toxicity", [-0.1, 1.5])
def test_toxicity_outside_0_1_is_400(toxicity):
    err = error_of(schema.parse_toxic_create, body({"type": "noop", "toxicity": toxicity}), never)
    assert err.status == 400 and "toxicity" in err.message


def test_toxic_update_merges_attributes_and_leaves_the_toxic_untouched_on_error():
    wrapper = schema.parse_toxic_create(
        body({"type": "latency", "attributes": {"latency": 10, "jitter": 3}}), never
    )
    attributes, toxicity = schema.parse_toxic_update(body({"attributes": {"latency": 20}}), wrapper)
    assert attributes == {"latency": 20, "jitter": 3} and toxicity == 1.0
    error_of(schema.parse_toxic_update, body({"attributes": {"latency": -1}}), wrapper)
    error_of(schema.parse_toxic_update, body({"attributes": {"latency": 1.5}}), wrapper)
    assert schema.attributes_of(wrapper.toxic) == {"latency": 10, "jitter": 3}


def test_every_registered_toxic_has_integer_attributes_with_ranges():
    assert sorted(TOXICS) == [
        "bandwidth",
        "latency",
        "limit_data",
        "noop",
        "reset_peer",
        "slicer",
        "slow_close",
        "timeout",
    ]
    for name, cls in TOXICS.items():
        for value in schema.attributes_of(cls()).values():
            assert value == 0, name
