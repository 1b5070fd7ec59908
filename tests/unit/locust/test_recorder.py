"""The per-second recorder, classification, worker->master merging and the request mix."""

from __future__ import annotations

import json

import pytest
from hdrh.histogram import HdrHistogram

from spikegate.contract.load import LoadSection
from spikegate.contract.outcomes import OUTCOMES
from spikegate.contract.rundir import REQUEST_ROW_FIELDS
from spikegate.locustfiles.recorder import (
    BID,
    IMPRESSION,
    OUTCOME_INDEX,
    Merger,
    Recorder,
    SecondStats,
    classify,
    quantize_us,
    valid_retry_after,
)
from spikegate.locustfiles.shapes import load_params
from spikegate.locustfiles.traffic import FLOORS, USER_POOL, Traffic, default_publishers


@pytest.mark.parametrize(
    ("status", "decision", "timed_out", "outcome"),
    [
        (200, "admitted", False, "ok"),
        (204, "no_bid", False, "no_bid"),
        (204, "breaker_open_fallback", False, "no_bid"),
        (202, "admitted", False, "accepted"),
        (429, "rate_limited", False, "rate_limited"),
        (429, None, False, "rate_limited"),
        (503, "shed", False, "shed"),
        (503, "bulkhead_full", False, "overloaded"),
        (503, "redis_unavailable", False, "overloaded"),
        (503, None, False, "error_5xx"),
        (500, "error", False, "error_5xx"),
        (502, None, False, "error_5xx"),
        (401, "unauthorized", False, "client_error"),
        (422, "invalid", False, "client_error"),
        (0, None, True, "timeout"),
        (0, None, False, "conn_error"),
    ],
)
def test_every_response_gets_exactly_one_outcome(
    status: int, decision: str | None, timed_out: bool, outcome: str
) -> None:
    assert classify(status, decision, timed_out=timed_out) == outcome


@pytest.mark.parametrize("value", [1, 7, 511, 512, 513, 1000, 123_456, 9_999_999])
def test_quantized_latency_is_within_a_fifth_of_a_percent(value: int) -> None:
    assert abs(quantize_us(value) - value) <= value / 500


def filled(second: int = 3) -> SecondStats:
    s = SecondStats(second)
    s.intended, s.sent = 5, 4
    s.record(BID, "pub-1", OUTCOME_INDEX["ok"], "admitted", 1_000)
    s.record(BID, "pub-1", OUTCOME_INDEX["rate_limited"], "rate_limited", 200)
    s.record(BID, "pub-2", OUTCOME_INDEX["timeout"], None, 2_000_000)
    s.record(IMPRESSION, "pub-2", OUTCOME_INDEX["accepted"], "admitted", 3_000)
    s.max_lateness_s = 0.004
    return s.seal()


def test_row_has_the_rundir_fields_and_outcomes_sum_to_the_recorded_requests() -> None:
    row = filled().row()
    assert tuple(row) == REQUEST_ROW_FIELDS  # the contract's fields, in its order
    assert row["t"] == 3.0
    assert set(row["outcomes"]) == set(OUTCOMES)
    assert sum(row["outcomes"].values()) == 4
    assert row["decisions"] == {"admitted": 2, "none": 1, "rate_limited": 1}
    assert row["endpoints"] == {
        "bid": {"ok": 1, "rate_limited": 1, "timeout": 1},
        "impression": {"accepted": 1},
    }
    assert row["publishers"]["pub-1"] == {"sent": 2, "admitted": 1, "rate_limited": 1}
    assert row["max_lateness_ms"] == 4.0
    json.dumps(row)  # JSON-able as is


def test_histograms_keep_admitted_and_rejected_apart_and_skip_failures() -> None:
    row = filled().row()
    admitted = HdrHistogram.decode(row["hist_admitted"])
    rejected = HdrHistogram.decode(row["hist_rejected"])
    assert admitted.get_total_count() == 2  # ok + accepted; the timeout is in neither
    assert rejected.get_total_count() == 1
    assert row["admitted_p99_ms"] == pytest.approx(3.0, rel=0.01)
    assert row["rejected_p99_ms"] == pytest.approx(0.2, rel=0.01)


def test_an_empty_second_has_null_histograms_and_percentiles() -> None:
    row = SecondStats(0).seal().row()
    assert row["hist_admitted"] is None and row["admitted_p99_ms"] is None
    assert row["intended"] == row["sent"] == 0


def test_recorder_hands_out_seconds_in_order_without_gaps_once_settled() -> None:
    rec = Recorder(t0=1000.0, first_second=2, settle_s=3.0)
    rec.bucket(2).intended = 1
    rec.bucket(5).intended = 1
    assert rec.complete(now=1000.0 + 2 + 1 + 3.0 - 0.01) == []
    done = rec.complete(now=1000.0 + 4 + 1 + 3.0 + 0.01)
    assert [s.second for s in done] == [2, 3, 4]
    assert [s.second for s in rec.drain()] == [5]


def test_a_record_for_a_second_already_handed_out_goes_to_the_oldest_open_one() -> None:
    rec = Recorder(t0=0.0, first_second=0, settle_s=0.0)
    rec.complete(now=2.5)  # seconds 0..1 are out
    rec.bucket(0).sent += 1
    assert [(s.second, s.sent) for s in rec.drain()] == [(2, 1)]


def test_worker_seconds_survive_the_wire_and_merge_into_one_row() -> None:
    a, b = filled(), filled()
    merged = SecondStats.from_wire(json.loads(json.dumps(a.wire())))
    merged.merge(SecondStats.from_wire(json.loads(json.dumps(b.wire()))))
    row = merged.row()
    assert row["processes"] == 2
    assert row["intended"] == 10 and row["sent"] == 8
    assert row["outcomes"]["ok"] == 2
    assert HdrHistogram.decode(row["hist_admitted"]).get_total_count() == 4


def test_merger_writes_a_second_only_when_every_worker_has_passed_it() -> None:
    m = Merger()
    m.add("w1", [filled(0).wire(), filled(1).wire()], watermark=2)
    assert m.ready(expected_workers=2) == []  # w2 has not reported yet
    m.add("w2", [filled(0).wire()], watermark=1)
    assert [(s.second, s.processes) for s in m.ready(expected_workers=2)] == [(0, 2)]
    m.add("w2", [filled(1).wire(), filled(2).wire()], watermark=None)
    assert not m.done(2)
    m.add("w1", [], watermark=None)
    assert m.done(2)
    assert [(s.second, s.processes) for s in m.ready(expected_workers=2)] == [(1, 2), (2, 1)]


def test_merger_drain_fills_gaps_so_there_is_one_row_per_second() -> None:
    m = Merger()
    m.add("w1", [filled(0).wire(), filled(3).wire()], watermark=None)
    assert [s.second for s in m.drain()] == [0, 1, 2, 3]


# --- the request mix --------------------------------------------------------------------------


def traffic(**kw: object) -> Traffic:
    p = load_params({"publishers": 4, **kw})
    return Traffic(p, default_publishers(4), seed=1)


def test_publishers_are_uniform_without_a_hot_share() -> None:
    t = traffic()
    picks = [t.publisher(0.0) for _ in range(4000)]
    assert {p: picks.count(p) for p in set(picks)}.keys() == {"pub-1", "pub-2", "pub-3", "pub-4"}
    assert all(900 < picks.count(p) < 1100 for p in set(picks))


def test_the_hot_publisher_gets_its_share_and_the_others_split_the_rest() -> None:
    t = traffic(hot_publisher="pub-3")
    picks = [t.publisher(0.8) for _ in range(5000)]
    assert 0.77 < picks.count("pub-3") / 5000 < 0.83
    assert all(picks.count(p) > 250 for p in ("pub-1", "pub-2", "pub-4"))


def test_bid_bodies_are_valid_openrtb_subset_json_with_tmax_and_unique_ids() -> None:
    t = traffic(tmax_ms=120)
    bodies = [json.loads(t.bid_body("pub-2")) for _ in range(50)]
    assert {b["tmax"] for b in bodies} == {120}
    assert {b["site"]["publisher"]["id"] for b in bodies} == {"pub-2"}
    assert len({b["id"] for b in bodies}) == 50
    assert all(b["imp"][0]["bidfloor"] >= 0 and b["user"]["id"] for b in bodies)


def test_the_mix_is_the_same_for_the_same_seed() -> None:
    a, b = traffic(), traffic()
    assert [a.publisher(0.3) for _ in range(100)] == [b.publisher(0.3) for _ in range(100)]


def test_impression_notice_is_built_from_the_winning_bid_with_a_fresh_id() -> None:
    resp = {"id": "r1", "seatbid": [{"seat": "dsp-2", "bid": [{"id": "b9", "price": 1.25}]}]}
    made = Traffic.impression(json.dumps(resp).encode(), "pub-1")
    assert made is not None
    impression_id, body = made
    notice = json.loads(body)
    assert notice == {
        "impression_id": impression_id,
        "request_id": "r1",
        "bid_id": "b9",
        "publisher_id": "pub-1",
        "dsp": "dsp-2",
        "price": 1.25,
    }
    again = Traffic.impression(json.dumps(resp).encode(), "pub-1")
    assert again is not None and again[0] != impression_id


@pytest.mark.parametrize("body", [b"", b"{}", b"not json", b'{"seatbid": []}'])
def test_a_200_without_a_bid_gives_no_impression(body: bytes) -> None:
    assert Traffic.impression(body, "pub-1") is None


def test_a_second_with_requests_still_running_is_not_sealed_until_they_finish() -> None:
    """Sealing early would move late outcomes into later rows (outcomes != sent per row)."""
    rec = Recorder(t0=0.0, first_second=0, settle_s=2.0, hard_s=10.0)
    b = rec.bucket(0)
    b.intended = b.sent = 2
    b.record(0, "pub-1", OUTCOME_INDEX["ok"], "admitted", 1000)
    assert rec.complete(now=4.0) == []  # past settle, one request still running
    b.record(0, "pub-1", OUTCOME_INDEX["timeout"], None, 4_000_000)
    rows = rec.complete(now=4.5)  # second 0 and the idle second 1 are now complete
    assert [r.second for r in rows] == [0, 1]
    assert sum(rows[0].outcomes) == rows[0].sent == 2


def test_a_second_is_sealed_after_the_hard_limit_even_with_requests_running() -> None:
    rec = Recorder(t0=0.0, first_second=0, settle_s=2.0, hard_s=5.0)
    b = rec.bucket(0)
    b.intended = b.sent = 1
    assert rec.complete(now=5.5) == []
    assert [r.second for r in rec.complete(now=6.5)] == [0, 1, 2, 3]


def test_publisher_counts_meter_bids_only_as_the_edge_buckets_do() -> None:
    """Impression notices are not rate-limited per publisher, so they are not counted there."""
    b = SecondStats(0)
    b.record(BID, "pub-1", OUTCOME_INDEX["ok"], "admitted", 1000)
    b.record(IMPRESSION, "pub-1", OUTCOME_INDEX["accepted"], "admitted", 500)
    b.record(BID, "pub-1", OUTCOME_INDEX["rate_limited"], "rate_limited", 100)
    assert b.publishers == {"pub-1": [2, 1, 1]}
    assert sum(b.outcomes) == 3


def test_bid_bodies_stay_valid_json_for_publisher_ids_that_need_escaping() -> None:
    pub = 'pub "7"\\x'
    t = Traffic(LoadSection(), {pub: "key-7"}, seed=1)
    body = json.loads(t.bid_body(pub))
    assert body["site"]["publisher"]["id"] == pub


def test_bid_floors_and_users_are_drawn_from_their_sets_and_vary() -> None:
    t = traffic()
    bodies = [json.loads(t.bid_body("pub-1")) for _ in range(300)]
    floors = {b["imp"][0]["bidfloor"] for b in bodies}
    assert floors == set(FLOORS)
    users = {b["user"]["id"] for b in bodies}
    assert len(users) > 250 and all(0 <= int(u[2:]) < USER_POOL for u in users)


def test_bid_bodies_are_the_same_for_the_same_seed() -> None:
    a, b = traffic(), traffic()
    assert [a.bid_body("pub-3") for _ in range(20)] == [b.bid_body("pub-3") for _ in range(20)]


@pytest.mark.parametrize(
    ("value", "valid"),
    [("1", True), ("30", True), (" 2 ", True), (["0", "3"], True), ("0", False), (None, False),
     ("", False), ("1.5", False), ("-1", False), ("Wed, 21 Oct 2026 07:28:00 GMT", False)],
)  # fmt: skip
def test_retry_after_must_be_integer_seconds_of_at_least_one(value: object, valid: bool) -> None:
    assert valid_retry_after(value) is valid


def test_rejections_without_a_valid_retry_after_survive_the_wire_and_merge() -> None:
    a, b = SecondStats(4), SecondStats(4)
    rl = OUTCOME_INDEX["rate_limited"]
    for s, n in ((a, 2), (b, 3)):
        for _ in range(n):
            s.record(BID, "pub-1", rl, "rate_limited", 300)
            s.bad_retry_after(rl)
    merged = SecondStats.from_wire(json.loads(json.dumps(a.seal().wire())))
    merged.merge(SecondStats.from_wire(json.loads(json.dumps(b.seal().wire()))))
    assert merged.row()["retry_after_invalid"] == {"rate_limited": 5}
    assert SecondStats(5).seal().row()["retry_after_invalid"] == {}


# --- send lateness ----------------------------------------------------------------------------


def late_second(second: int, lates_ms: list[float]) -> SecondStats:
    s = SecondStats(second)
    for ms in lates_ms:
        s.note_late(ms / 1000.0)
    return s.seal()


def test_note_late_counts_sends_over_each_bound_and_keeps_the_maximum() -> None:
    """A send exactly on a bound is not over it; the maximum is still kept for the row."""
    s = late_second(0, [0.0, 0.4, 1.0, 3.0, 10.0, 12.0, 2500.0])
    row = s.row()
    assert row["max_lateness_ms"] == 2500.0
    assert row["lateness"] == {
        "sends": 7,
        "over_ms": {
            "1": 4,
            "2": 4,
            "5": 3,
            "10": 2,
            "20": 1,
            "50": 1,
            "100": 1,
            "200": 1,
            "500": 1,
            "1000": 1,
        },
    }


def test_a_second_with_every_send_on_time_has_sends_and_no_over_counts() -> None:
    row = late_second(0, [0.1] * 5).row()
    assert row["lateness"] == {"sends": 5, "over_ms": {}}
    assert SecondStats(1).seal().row()["lateness"] == {"sends": 0, "over_ms": {}}


def test_lateness_of_two_processes_adds_exactly_over_the_wire() -> None:
    """A per-process maximum or p99 cannot be merged; the counts add, so the merged second
    says exactly how many of all sends were late (here 3 of 200 over 10 ms)."""
    a = late_second(4, [0.5] * 99 + [15.0])
    b = late_second(4, [2.0] * 98 + [11.0, 60.0])
    merged = SecondStats.from_wire(json.loads(json.dumps(a.wire())))
    merged.merge(SecondStats.from_wire(json.loads(json.dumps(b.wire()))))
    row = merged.row()
    assert row["lateness"]["sends"] == 200
    assert row["lateness"]["over_ms"]["10"] == 3
    assert row["lateness"]["over_ms"]["1"] == 101
    assert row["lateness"]["over_ms"]["50"] == 1
    assert row["max_lateness_ms"] == 60.0


def test_a_wire_second_from_an_older_worker_without_lateness_counts_still_merges() -> None:
    old = late_second(2, [30.0]).wire()
    del old["late_counts"]
    s = SecondStats.from_wire(old)
    assert s.row()["lateness"] == {"sends": 0, "over_ms": {}}
    assert s.row()["max_lateness_ms"] == 30.0
    s.merge(late_second(2, [30.0]))
    assert s.row()["lateness"] == {
        "sends": 1,
        "over_ms": {"1": 1, "2": 1, "5": 1, "10": 1, "20": 1},
    }
