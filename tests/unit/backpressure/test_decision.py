"""Decision: the value every primitive answers with, and its Retry-After rendering."""

from __future__ import annotations

import math

import pytest

from spikegate.target.backpressure.decision import ADMIT, MAX_RETRY_AFTER_S, Decision


@pytest.mark.parametrize(
    ("retry_after_s", "header"),
    [(0.0, "1"), (0.2, "1"), (1.0, "1"), (1.01, "2"), (59.5, "60"), (math.inf, "3600"),
     (1e9, str(MAX_RETRY_AFTER_S))],
)  # fmt: skip
def test_retry_after_header_is_whole_seconds_at_least_one_and_capped(
    retry_after_s: float, header: str
) -> None:
    assert Decision(False, "rate_limited", retry_after_s).retry_after_header == header


def test_decision_is_immutable() -> None:
    with pytest.raises(AttributeError):
        ADMIT.admitted = False  # type: ignore[misc]


def test_admit_is_admitted_with_reason_admitted() -> None:
    assert ADMIT.admitted and ADMIT.reason == "admitted" and ADMIT.retry_after_s == 0.0
