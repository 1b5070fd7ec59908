"""Go-like JSON decoding of request bodies (chaos.server.gojson)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spikegate.chaos.server import gojson

FIELDS: dict[str, gojson.Kind] = {
    "name": "string",
    "enabled": "bool",
    "latency": "int64",
    "toxicity": "float32",
}


def bind(body: bytes) -> dict[str, object]:
    return gojson.bind(gojson.decode(body), FIELDS, "T")


@pytest.mark.parametrize("body", [b"", b"  \n\t "])
def test_an_empty_body_is_eof(body):
    with pytest.raises(gojson.GoJSONError, match=r"^EOF$"):
        gojson.decode(body)


def test_a_truncated_body_is_unexpected_eof():
    with pytest.raises(gojson.GoJSONError, match=r"^unexpected EOF$"):
        gojson.decode(b'{"name": "x", ')


def test_malformed_json_names_the_offending_character():
    with pytest.raises(gojson.GoJSONError, match="invalid character 'n'"):
        gojson.decode(b"{name}")


def test_nan_and_infinity_are_rejected():
    for body in (b"NaN", b'{"toxicity": Infinity}'):
        with pytest.raises(gojson.GoJSONError):
            gojson.decode(body)


def test_only_the_first_value_is_read():
    assert bind(b'{"name": "a"} trailing garbage') == {"name": "a"}


def test_keys_match_case_insensitively_and_the_last_one_wins():
    assert bind(b'{"name": "a", "NAME": "b", "Name": "c"}') == {"name": "c"}


def test_an_exact_key_match_beats_nothing_and_unknown_keys_are_ignored():
    assert bind(b'{"latency": 5, "extra": {"deep": [1, 2]}}') == {"latency": 5}


def test_null_means_absent():
    assert bind(b'{"name": null, "enabled": null, "latency": null}') == {}
    assert bind(b"null") == {}


@pytest.mark.parametrize("literal", ["100.5", "100.0", "1e3", '"100"', "true", "[]", "{}"])
def test_integer_fields_reject_everything_but_integer_literals(literal):
    with pytest.raises(gojson.GoJSONError, match=r"T\.latency of type int64"):
        bind(b'{"latency": ' + literal.encode() + b"}")


def test_integer_fields_are_bounded_to_int64():
    assert bind(b'{"latency": 9223372036854775807}') == {"latency": 2**63 - 1}
    with pytest.raises(gojson.GoJSONError, match="number 9223372036854775808"):
        bind(b'{"latency": 9223372036854775808}')


def test_float32_fields_accept_integers_and_round_like_go():
    assert bind(b'{"toxicity": 1}') == {"toxicity": 1.0}
    assert bind(b'{"toxicity": 0.123456789}') == {"toxicity": 0.12345679}
    with pytest.raises(gojson.GoJSONError, match="float32"):
        bind(b'{"toxicity": 1e39}')
    with pytest.raises(gojson.GoJSONError, match="string"):
        bind(b'{"toxicity": "0.5"}')


def test_strings_and_bools_are_type_checked():
    with pytest.raises(
        gojson.GoJSONError, match=r"cannot unmarshal number into Go struct field T\.name"
    ):
        bind(b'{"name": 5}')
    with pytest.raises(gojson.GoJSONError, match=r"T\.enabled of type bool"):
        bind(b'{"enabled": "yes"}')


def test_a_non_object_is_a_type_error():
    with pytest.raises(gojson.GoJSONError, match="cannot unmarshal array into Go value of type T"):
        bind(b"[1]")


def test_invalid_utf8_and_lone_surrogates_become_replacement_characters():
    assert bind(b'{"name": "a\xffb"}') == {"name": "a\ufffdb"}
    assert bind(b'{"name": "x\\ud800y"}') == {"name": "x\ufffdy"}


def test_encode_is_compact_html_safe_and_prints_integral_floats_as_integers():
    assert gojson.encode({"a": "<&>", "t": 1.0, "u": 0.5, "l": [2.0]}) == (
        b'{"a":"\\u003c\\u0026\\u003e","t":1,"u":0.5,"l":[2]}'
    )


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_every_int64_round_trips(value):
    assert bind(b'{"latency": %d}' % value) == {"latency": value}


@given(st.binary(max_size=200))
def test_decode_never_raises_anything_but_gojsonerror(body):
    with contextlib.suppress(gojson.GoJSONError):
        gojson.decode(body)
