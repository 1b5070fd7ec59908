"""Recording the user's own locustfile: classification of what Locust reports, per-name
counts, the arrivals (tasks) of the open model, merging across processes (no locust here:
the Locust side runs only as a subprocess, tests/e2e/test_user_locustfile.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram

from spikegate.contract.outcomes import OUTCOMES, OutcomeRules
from spikegate.contract.rundir import REQUEST_ROW_FIELDS
from spikegate.locustfiles.recorder import (
    NAMES_CAP,
    OTHER_NAME,
    OUTCOME_INDEX,
    Merger,
    Recorder,
    SecondStats,
    classify_response,
    is_timeout,
)

RULES = OutcomeRules()
WITH_HEADER = OutcomeRules(decision_header="X-Decision")


class Headers(dict[str, Any]):
    """Case-insensitive get, like requests' and geventhttpclient's headers."""

    def get(self, key: str, default: Any = None) -> Any:
        for k, v in self.items():
            if k.lower() == key.lower():
                return v
        return default


class Response:
    def __init__(self, status: int, headers: dict[str, Any] | None = None, error: Any = None):
        self.status_code = status
        self.headers = Headers(headers or {})
        self.error = error


class ReadTimeout(OSError):
    """Named like requests.exceptions.ReadTimeout."""


class RetriesExceeded(Exception):
    def __init__(self, original: BaseException) -> None:
        super().__init__("retries exceeded")
        self.original = original


class HTTPError(Exception):
    """What Locust's HttpSession reports for a 4xx/5xx status."""


@pytest.mark.parametrize(
    ("rules", "response", "exception", "outcome"),
    [
        (RULES, Response(200), None, "ok"),
        (RULES, Response(204), None, "ok"),  # the user's 2xx are all admitted
        (RULES, Response(200), AssertionError("wrong body"), "error_5xx"),  # failure()
        (RULES, Response(429), HTTPError("429"), "rate_limited"),  # Locust's failure kept
        (RULES, Response(503), HTTPError("503"), "overloaded"),
        (RULES, Response(503, {"x-decision": "shed"}), None, "overloaded"),  # header unused
        (WITH_HEADER, Response(503, {"X-Decision": "shed"}), None, "shed"),
        (WITH_HEADER, Response(503), None, "error_5xx"),  # no decision: not designed
        (RULES, Response(500), HTTPError("500"), "error_5xx"),
        (RULES, Response(404), None, "client_error"),  # marked success: the status decides
        (RULES, Response(0, error=ReadTimeout("read")), ReadTimeout("read"), "timeout"),
        (RULES, Response(0), TimeoutError("timed out"), "timeout"),
        (RULES, Response(0), RetriesExceeded(TimeoutError()), "timeout"),
        (RULES, Response(0), ConnectionRefusedError(111, "refused"), "conn_error"),
        (RULES, Response(0, error=ConnectionResetError()), None, "conn_error"),
        (RULES, None, None, "ok"),  # a custom client's event without a response
        (RULES, None, RuntimeError("rpc failed"), "conn_error"),
        (RULES, object(), ReadTimeout(), "timeout"),  # a non-HTTP response object
    ],
)
def test_every_reported_request_gets_one_outcome(
    rules: OutcomeRules, response: Any, exception: BaseException | None, outcome: str
) -> None:
    assert classify_response(rules, response, exception)[0] == outcome


def test_decision_and_retry_after_come_from_the_headers_the_last_of_repeats() -> None:
    resp = Response(429, {"X-Decision": ["a", "rate_limited"], "retry-after": "2"})
    assert classify_response(WITH_HEADER, resp, None) == ("rate_limited", "rate_limited", "2")
    # no decision header configured: no decision recorded, Retry-After still read
    assert classify_response(RULES, resp, None) == ("rate_limited", None, "2")
    # Retry-After matters only on designed rejections
    assert classify_response(RULES, Response(200, {"Retry-After": "1"}), None)[2] is None


def test_is_timeout_follows_wrapped_errors_and_stops() -> None:
    try:
        try:
            raise TimeoutError
        except TimeoutError as inner:
            raise ConnectionError("gave up") from inner
    except ConnectionError as exc:
        assert is_timeout(exc)
    assert not is_timeout(ConnectionResetError())
    assert not is_timeout(None)


def user_second(second: int = 4) -> SecondStats:
    s = SecondStats(second)
    s.record_request("/hello", OUTCOME_INDEX["ok"], None, 1_000)
    s.record_request("/hello", OUTCOME_INDEX["ok"], None, 3_000)
    s.record_request("/item", OUTCOME_INDEX["rate_limited"], "rate_limited", 400)
    s.record_request("/item", OUTCOME_INDEX["timeout"], None, 2_000_000)
    s.intended += 1  # a skipped arrival
    s.task_counts[:] = [4, 3, 1, 0]
    return s.seal()


def test_each_request_counts_intended_sent_and_one_outcome_by_name() -> None:
    row = user_second().row()
    assert tuple(row) == REQUEST_ROW_FIELDS
    assert row["intended"] == 5 and row["sent"] == 4 == sum(row["outcomes"].values())
    assert row["decisions"] == {"none": 3, "rate_limited": 1}
    assert row["names"]["/hello"] == {
        "outcomes": {"ok": 2},
        "admitted_p50_ms": pytest.approx(1.0, rel=0.01),
        "admitted_p99_ms": pytest.approx(3.0, rel=0.01),
    }
    assert row["names"]["/item"] == {
        "outcomes": {"rate_limited": 1, "timeout": 1},
        "admitted_p50_ms": None,
        "admitted_p99_ms": None,
    }
    assert row["tasks"] == {"intended": 4, "run": 3, "errors": 1, "unfinished": 0}
    assert row["endpoints"] == {"bid": {}, "impression": {}} and row["publishers"] == {}
    assert HdrHistogram.decode(row["hist_admitted"]).get_total_count() == 2
    assert HdrHistogram.decode(row["hist_rejected"]).get_total_count() == 1
    json.dumps(row)


def test_the_reference_targets_rows_carry_the_new_fields_empty() -> None:
    row = SecondStats(0).seal().row()
    assert row["names"] == {}
    assert row["tasks"] == {"intended": 0, "run": 0, "errors": 0, "unfinished": 0}


def test_user_seconds_merge_across_processes_names_and_tasks_included() -> None:
    a = SecondStats.from_wire(json.loads(json.dumps(user_second().wire())))
    b = SecondStats.from_wire(json.loads(json.dumps(user_second().wire())))
    a.merge(b)
    row = a.row()
    assert row["processes"] == 2 and row["sent"] == 8 == sum(row["outcomes"].values())
    assert row["names"]["/hello"]["outcomes"] == {"ok": 4}
    assert row["names"]["/hello"]["admitted_p99_ms"] == pytest.approx(3.0, rel=0.01)
    assert row["tasks"] == {"intended": 8, "run": 6, "errors": 2, "unfinished": 0}


def test_the_merger_writes_merged_user_rows_in_order() -> None:
    m = Merger()
    m.add("w1", [user_second(0).wire(), user_second(1).wire()], watermark=None)
    m.add("w2", [user_second(1).wire()], watermark=None)
    out = m.ready(expected_workers=2)
    assert [(s.second, s.sent, s.task_counts[0]) for s in out] == [(0, 4, 4), (1, 8, 8)]


def test_a_process_keeps_at_most_the_cap_of_names_apart() -> None:
    rec = Recorder(t0=0.0, first_second=0, settle_s=1.0)
    keys = [rec.name_key(f"/p/{i}") for i in range(NAMES_CAP + 20)]
    assert len(set(keys)) == NAMES_CAP  # NAMES_CAP - 1 own names + OTHER_NAME
    assert keys[: NAMES_CAP - 1] == [f"/p/{i}" for i in range(NAMES_CAP - 1)]
    assert set(keys[NAMES_CAP - 1 :]) == {OTHER_NAME}
    assert rec.name_key("/p/3") == "/p/3"  # a known name stays itself


def test_a_merged_row_folds_the_least_used_names_over_the_cap_into_other() -> None:
    s = SecondStats(0)
    for i in range(NAMES_CAP + 10):
        for _ in range(1 + (i < 5)):  # the first five names are the busiest
            s.record_request(f"/n/{i}", OUTCOME_INDEX["ok"], None, 1_000)
    row = s.seal().row()
    assert len(row["names"]) == NAMES_CAP
    assert all(f"/n/{i}" in row["names"] for i in range(5))
    assert sum(sum(e["outcomes"].values()) for e in row["names"].values()) == row["sent"]
    assert row["names"][OTHER_NAME]["outcomes"]["ok"] == 11


def test_a_second_with_a_task_still_running_is_not_handed_out_until_the_hard_limit() -> None:
    rec = Recorder(t0=0.0, first_second=0, settle_s=1.0, hard_s=5.0)
    b = rec.bucket(0)
    b.task_counts[0] = b.task_counts[1] = 1
    b.tasks_open = 1  # an arrival of second 0 still running its task
    assert rec.complete(now=2.5) == []  # settled (0 + 1 + settle_s), but a task runs
    b.tasks_open = 0
    rec.bucket(0).record_request("/slow", OUTCOME_INDEX["ok"], None, 2_500_000)
    out = rec.complete(now=2.5)
    assert [(s.second, s.sent, s.outcomes[OUTCOME_INDEX["ok"]]) for s in out] == [(0, 1, 1)]
    stuck = rec.bucket(1)
    stuck.tasks_open = 1
    assert rec.complete(now=6.5) == []  # 1 + 1 + hard_s = 7: not yet
    assert [s.second for s in rec.complete(now=7.5)] == [1, 2, 3, 4, 5]  # sealed anyway


def test_outcome_names_in_rows_are_the_contracts() -> None:
    assert set(user_second().row()["outcomes"]) == set(OUTCOMES)
