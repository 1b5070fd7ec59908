"""A user's service's own Prometheus metrics, read into SampleRow fields through [metrics].

    [metrics]                                  SampleRow
    inflight = "http_requests_inflight"   -->  "auction_inflight": n   (sum over label sets)
    queue_depth = "jobs_waiting"          -->  "queue_depth": n        (sum over label sets)
    breaker_state = "breaker_state"       -->  "breakers": {key: "closed"|"open"|"half_open"}

Any metric name and any labels: a mapped name matches the exposition's samples of that exact
name (for a counter family, also its `_total` sample). Non-finite values are ignored.

A breaker's key is its label values joined by "," in label-name order ("db" for
`breaker_state{dependency="db"}`), or the metric name when it has no labels. Its state is
read in either of two conventions:

- a gauge per breaker: 0 closed, 1 open, 0.5 half-open (any other value is a problem);
- a `state` label, as our own target exports: `breaker{dsp="db",state="open"} 1` with the
  other states at 0; the state whose sample is non-zero is the breaker's (the key leaves the
  `state` label out; the name is lower-cased, "-" and " " become "_", "halfopen" half_open).

`parse_mapped` returns the fields and a problem per mapped metric that is absent from the
exposition or unreadable (the sampler reports each once as a warning and leaves its field out).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["MAPPED_FIELDS", "breaker_key", "breaker_state", "check_mapping", "parse_mapped"]

# [metrics] key -> the SampleRow field it fills
MAPPED_FIELDS = {
    "inflight": "auction_inflight",
    "queue_depth": "queue_depth",
    "breaker_state": "breakers",
}
_GAUGE_STATES = {0.0: "closed", 1.0: "open", 0.5: "half_open"}


def check_mapping(mapping: Mapping[str, str]) -> dict[str, str]:
    """The mapping as a dict; raises ValueError naming a key that maps to nothing we read."""
    for key, name in mapping.items():
        if key not in MAPPED_FIELDS:
            known = ", ".join(MAPPED_FIELDS)
            raise ValueError(f"metrics mapping: unknown key {key!r} (known: {known})")
        if not isinstance(name, str) or not name:
            raise ValueError(f"metrics mapping: {key} must name a metric (got {name!r})")
    return dict(mapping)


def breaker_key(name: str, labels: Mapping[str, str]) -> str:
    """A breaker's readable, stable key: its label values (but `state`) in label order."""
    values = [labels[k] for k in sorted(labels) if k != "state"]
    return ",".join(values) if values else name


def breaker_state(label: str) -> str:
    """A `state` label value in our words (open, closed, half_open, or as it is)."""
    state = label.strip().lower().replace("-", "_").replace(" ", "_")
    return "half_open" if state == "halfopen" else state


def parse_mapped(text: str, mapping: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(SampleRow fields, {mapping key: problem}) for the mapped metrics in `text`.

    Raises ValueError when the text is not a Prometheus exposition.
    """
    wanted = {name: key for key, name in mapping.items()}
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if name not in wanted and family.name in wanted and name == family.name + "_total":
                name = family.name
            if name in wanted and math.isfinite(float(sample.value)):
                samples.setdefault(name, []).append((dict(sample.labels), float(sample.value)))
    fields: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for key, name in mapping.items():
        found = samples.get(name)
        if not found:
            problems[key] = f"mapped metric {name!r} ([metrics] {key}) is not in the exposition"
        elif key == "breaker_state":
            breakers, problem = _breakers(name, found)
            if breakers:
                fields["breakers"] = breakers
            if problem:
                problems[key] = problem
        else:
            fields[MAPPED_FIELDS[key]] = sum(value for _, value in found)
    return fields, problems


def _breakers(
    name: str, found: list[tuple[dict[str, str], float]]
) -> tuple[dict[str, str], str | None]:
    breakers: dict[str, str] = {}
    problem = None
    for labels, value in found:
        key = breaker_key(name, labels)
        if "state" in labels:
            if value != 0:
                breakers[key] = breaker_state(labels["state"])
        elif value in _GAUGE_STATES:
            breakers[key] = _GAUGE_STATES[value]
        else:
            problem = (
                f"mapped breaker metric {name!r} is {value:g} for {key!r}: expected 0 (closed), "
                "1 (open), 0.5 (half-open), or a state label"
            )
    return dict(sorted(breakers.items())), problem
