"""A user's service's own metrics through [metrics]: any names, any labels, summed levels,
breaker states in the gauge convention (0 closed, 1 open, 0.5 half-open) or a state label."""

from __future__ import annotations

from typing import Any

import pytest

from spikegate.harness.mapped_metrics import (
    breaker_key,
    breaker_state,
    check_mapping,
    parse_mapped,
)

SERVICE = """\
# HELP http_inflight Requests being served.
# TYPE http_inflight gauge
http_inflight{route="/orders"} 3
http_inflight{route="/users"} 4
# HELP work_queue Jobs waiting.
# TYPE work_queue gauge
work_queue 12
# HELP cb_state Circuit breaker: 0 closed, 1 open, 0.5 half-open.
# TYPE cb_state gauge
cb_state{dependency="db"} 1
cb_state{dependency="payments"} 0.5
cb_state{dependency="search"} 0
# HELP requests_total Requests.
# TYPE requests_total counter
requests_total{code="200"} 1000
"""


def test_each_mapped_metric_fills_its_field_summed_over_label_sets() -> None:
    fields, problems = parse_mapped(
        SERVICE, {"inflight": "http_inflight", "queue_depth": "work_queue"}
    )
    assert fields == {"auction_inflight": 7.0, "queue_depth": 12.0}
    assert problems == {}


def test_a_breaker_gauge_reads_0_closed_1_open_half_half_open_keyed_by_its_labels() -> None:
    fields, problems = parse_mapped(SERVICE, {"breaker_state": "cb_state"})
    assert fields == {"breakers": {"db": "open", "payments": "half_open", "search": "closed"}}
    assert problems == {}


STATE_LABELS = """\
# TYPE breaker gauge
breaker{dsp="db",state="closed"} 0
breaker{dsp="db",state="open"} 1
breaker{dsp="db",state="Half-Open"} 0
breaker{dsp="cache",state="closed"} 1
breaker{dsp="cache",state="open"} 0
breaker{dsp="idle",state="open"} 0
"""


def test_a_state_label_names_the_state_whose_sample_is_not_zero() -> None:
    fields, _ = parse_mapped(STATE_LABELS, {"breaker_state": "breaker"})
    assert fields == {"breakers": {"cache": "closed", "db": "open"}}  # idle: no state is 1


@pytest.mark.parametrize(
    ("label", "state"),
    [("open", "open"), ("HALF_OPEN", "half_open"), ("half-open", "half_open"),
     ("halfopen", "half_open"), ("forced open", "forced_open"), ("closed", "closed")],
)  # fmt: skip
def test_state_label_values_are_put_in_our_words(label: str, state: str) -> None:
    assert breaker_state(label) == state


@pytest.mark.parametrize(
    ("labels", "key"),
    [
        ({}, "cb"),  # no labels: the metric's name
        ({"dependency": "db"}, "db"),
        ({"state": "open", "dsp": "db"}, "db"),  # the state label is not part of the key
        ({"zone": "eu", "dependency": "db"}, "db,eu"),  # label-name order, not text order
    ],
)
def test_a_breakers_key_is_its_label_values_in_label_name_order(
    labels: dict[str, str], key: str
) -> None:
    assert breaker_key("cb", labels) == key


def test_a_breaker_value_outside_the_convention_is_a_problem_and_not_a_state() -> None:
    text = 'cb_state{dependency="db"} 2\ncb_state{dependency="cache"} 1\n'
    fields, problems = parse_mapped(text, {"breaker_state": "cb_state"})
    assert fields == {"breakers": {"cache": "open"}}
    assert "2" in problems["breaker_state"] and "'db'" in problems["breaker_state"]


def test_a_mapped_metric_absent_from_the_exposition_is_a_problem_and_no_field() -> None:
    fields, problems = parse_mapped(SERVICE, {"inflight": "http_inflight", "queue_depth": "jobs"})
    assert fields == {"auction_inflight": 7.0}
    assert set(problems) == {"queue_depth"} and "'jobs'" in problems["queue_depth"]


def test_a_counter_family_name_finds_its_total_sample() -> None:
    fields, _ = parse_mapped(SERVICE, {"inflight": "requests"})
    assert fields == {"auction_inflight": 1000.0}


def test_histogram_parts_and_other_names_that_merely_start_alike_are_not_read() -> None:
    text = (
        "# TYPE http_inflight_seconds histogram\n"
        'http_inflight_seconds_bucket{le="+Inf"} 5\n'
        "http_inflight_seconds_count 5\n"
        "http_inflight_seconds_sum 1\n"
    )
    fields, problems = parse_mapped(text, {"inflight": "http_inflight"})
    assert fields == {} and "inflight" in problems


def test_non_finite_values_are_ignored() -> None:
    fields, _ = parse_mapped('q 3\nq{x="a"} NaN\n', {"queue_depth": "q"})
    assert fields == {"queue_depth": 3.0}


def test_garbage_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_mapped("this is { not prometheus\n", {"inflight": "x"})


@pytest.mark.parametrize(
    ("mapping", "message"),
    [({"inflights": "x"}, "unknown key 'inflights'"), ({"inflight": ""}, "must name a metric")],
)
def test_a_mapping_that_names_nothing_we_read_is_refused(
    mapping: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check_mapping(mapping)
