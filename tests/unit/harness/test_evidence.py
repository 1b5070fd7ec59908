"""Every verdict that reads the target's own numbers, against independent evidence that
disagrees: the chaos proxy's count of Redis requests outstanding (layer.bulkhead), the
broker's records against the generator's 202s (layer.shedder), the generator's ack log
against its 202 count (no_silent_loss), and per-window breaker judging with the bid fill
rate (layer.breaker). Each row is a defect the target's own numbers would hide."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from spikegate.harness.checker import check
from spikegate.harness.evidence import impression_backlog, inflight_tolerance, proxy_peak
from spikegate.harness.history import History, ImpressionAccounting, RequestSecond, Sample
from tests.unit.harness.test_checker import (
    healthy_rows,
    healthy_samples,
    history,
    scenario,
    verdict,
)

# STORM: auction.limit 12, impressions.max_depth 400, stress [20, 35), kafka_stall [24, 32),
# dsp-1 latency [20, 35); the fixture's target reports in-flight 8 and queue depth 10.


def _with(samples: list[Sample], make: Callable[[Sample], Sample]) -> list[Sample]:
    return [make(s) for s in samples]


def _redis(level: Callable[[float], float]) -> list[Sample]:
    return _with(
        healthy_samples(),
        lambda s: dataclasses.replace(s, proxy_outstanding_max={"redis": level(s.t)}),
    )


def _impressions_rows(per_s: int = 100) -> list[RequestSecond]:
    """The healthy rows plus `per_s` impressions answered 202 each second."""
    out = []
    for r in healthy_rows():
        outcomes = {**r.outcomes, "accepted": per_s}
        out.append(
            dataclasses.replace(
                r,
                intended=r.intended + per_s,
                sent=r.sent + per_s,
                outcomes=outcomes,
                admitted=r.admitted + per_s,
                endpoints={"impression": {"accepted": per_s}},
                max_lateness_ms=5.0,
            )
        )
    return out


def _broker(records: Callable[[float], float], depth: float = 10.0) -> list[Sample]:
    """Samples whose broker holds records(t) and whose target says its queue holds `depth`."""
    return _with(
        healthy_samples(),
        lambda s: dataclasses.replace(
            s, broker_records=records(s.t), queue_depth=depth, impressions={"inflight": 0.0}
        ),
    )


def _shifted_peak() -> History:
    """Redis saw 9 at once in the second sampled at 30 s; the target's own peak of 9 fell
    on the tick after (the two scrapes straddle it)."""
    out = []
    for s in healthy_samples():
        peak = 9.0 if s.t == 31 else s.auction_inflight_max
        redis = {"redis": 9.0 if s.t == 30 else 8.0}
        out.append(dataclasses.replace(s, proxy_outstanding_max=redis, auction_inflight_max=peak))
    return history(samples=out)


def _delivered_by(t: float, per_s: int = 100, lag: float = 2.0) -> float:
    """A broker that holds every impression answered `lag` seconds ago (a healthy logger)."""
    return max(0.0, (t - lag) * per_s)


def _stalled(t: float) -> float:
    """Nothing reaches Kafka from t=24 s on (the stall), everything before did."""
    return _delivered_by(min(t, 24.0))


# Depth-only shedding (no CoDel): a queue may stand up to its cap of 400.
DEPTH_ONLY = scenario(
    target={"config": {"auction": {"limit": 12},
                       "impressions": {"max_depth": 400, "codel": False}}}
)  # fmt: skip


def _imp_history(
    samples: list[Sample], rows: list[RequestSecond] | None = None, sc: Any = None
) -> History:
    rows = rows if rows is not None else _impressions_rows()
    n = sum(r.outcomes.get("accepted", 0) for r in rows)
    imp = ImpressionAccounting(acked=n, found=n, missing=0)
    return history(sc, rows=rows, samples=samples, impressions=imp)


# STORM with its Redis latency raised past the target's Redis timeout (50 ms by default):
# the auction abandons each Redis call at 50 ms and frees its permit, the call stays
# outstanding at the proxy until its answer comes 80 ms after it was sent.
SLOW_REDIS = scenario(
    faults=[
        {"at_s": 20, "for_s": 15, "fault": "dsp_latency", "proxy": "dsp-1",
         "params": {"latency_ms": 250}},
        {"at_s": 22, "for_s": 10, "fault": "redis_latency", "params": {"latency_ms": 80}},
        {"at_s": 24, "for_s": 8, "fault": "kafka_stall"},
    ]
)  # fmt: skip


# Redis connections reset from 22 s for 8 s: the client reconnects through the proxy at over
# a hundred a second, and on a loaded machine a call can outlast the auction's timeout there.
RESET_REDIS = scenario(
    faults=[{"at_s": 22, "for_s": 8, "fault": "redis_reset", "params": {"timeout_ms": 0}}]
)


def _abandoned(sc: Any, *, at: tuple[float, float]) -> History:
    """Redis saw 12 at once (8 auctions in flight + 4 abandoned calls) in [at)."""
    return history(sc, samples=_redis(lambda t: 12.0 if at[0] <= t < at[1] else 8.0))


CASES: list[tuple[str, Callable[[], History], str, str, str]] = [
    # layer.bulkhead against the chaos proxy
    ("Redis outstanding agrees with in-flight", lambda: history(samples=_redis(lambda t: 8.0)),
     "layer.bulkhead", "pass", "agrees"),
    ("in-flight clamped: Redis saw 30 at once", lambda: history(samples=_redis(lambda t: 30.0)),
     "layer.bulkhead", "fail", "requests outstanding at once"),
    ("in-flight under-reported: Redis saw 12, target said 8",
     lambda: history(samples=_redis(lambda t: 12.0)), "layer.bulkhead", "fail",
     "disagrees with the chaos proxy"),
    ("off by one: Redis saw 9, the target said 8",
     lambda: history(samples=_redis(lambda t: 9.0 if t == 30 else 8.0)), "layer.bulkhead",
     "fail", "at t=30s Redis had 9 requests outstanding"),
    ("a scrape apart: Redis saw 9 at 30 s, the target 9 in the next second",
     _shifted_peak, "layer.bulkhead", "pass", "agrees"),
    ("Redis slower than the auction's Redis timeout: abandoned calls are not in-flight",
     lambda: _abandoned(SLOW_REDIS, at=(22, 34)), "layer.bulkhead", "pass",
     "abandons those calls by design"),
    ("the same gap while Redis answers within the timeout: in-flight under-reported",
     lambda: _abandoned(None, at=(22, 34)), "layer.bulkhead", "fail",
     "disagrees with the chaos proxy"),
    ("Redis connections reset: a call held past the timeout in the reconnect churn",
     lambda: _abandoned(RESET_REDIS, at=(22, 30)), "layer.bulkhead", "pass",
     "abandons those calls by design"),
    ("the same gap after the resets ended: in-flight under-reported",
     lambda: _abandoned(RESET_REDIS, at=(40, 44)), "layer.bulkhead", "fail",
     "at t=40s Redis had 12 requests outstanding"),
    ("the same gap after the slow Redis ended: in-flight under-reported",
     lambda: _abandoned(SLOW_REDIS, at=(40, 44)), "layer.bulkhead", "fail",
     "at t=40s Redis had 12 requests outstanding"),
    # layer.shedder against the broker
    ("broker keeps up: backlog agrees", lambda: _imp_history(_broker(_delivered_by)),
     "layer.shedder", "pass", "agrees"),
    ("queue depth clamped: 800 not in Kafka, target says 10",
     lambda: _imp_history(_broker(_stalled)), "layer.shedder", "fail", "more than the cap"),
    ("queue depth under-reported within the cap: 300 not in Kafka, target says 10",
     lambda: _imp_history(_broker(lambda t: _delivered_by(t, lag=8.0))),
     "layer.shedder", "fail", "disagrees with the broker"),
    ("queue depth reported in full: agrees",
     lambda: _imp_history(_broker(lambda t: _delivered_by(t, lag=8.0), depth=300.0),
                          sc=DEPTH_ONLY), "layer.shedder", "pass", "agrees"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "make", "name", "status", "words"), CASES,
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_independent_evidence_against_the_targets_numbers(
    case: str, make: Callable[[], History], name: str, status: str, words: str
) -> None:
    v = verdict(check(make()), name, "stress")
    assert v.status == status, v.message
    assert words in v.message


def test_a_proxy_that_reports_nothing_leaves_the_bulkhead_to_the_targets_numbers() -> None:
    v = verdict(check(history()), "layer.bulkhead", "stress")
    assert v.status == "pass"
    assert v.evidence["redis_outstanding_max"] is None


def test_the_bulkhead_names_both_figures() -> None:
    v = verdict(check(history(samples=_redis(lambda t: 30.0))), "layer.bulkhead", "stress")
    assert "30" in v.message and "at most 8" in v.message
    assert v.evidence["redis_outstanding_max"] == 30.0
    assert v.evidence["evidence_tolerance"] == inflight_tolerance(12.0)


def test_proxy_peak_is_the_highest_reading() -> None:
    samples = _redis(lambda t: 3.0 if t != 30 else 11.0)
    peak = proxy_peak(samples, "redis")
    assert peak is not None and (peak.value, peak.t) == (11.0, 30.0)
    assert proxy_peak(samples, "dsp-1") is None


def test_backlog_counts_only_202s_certainly_received_and_this_runs_records() -> None:
    rows = _impressions_rows()
    samples = _broker(lambda t: 5_000.0 + _delivered_by(t))  # 5000 records from before
    h = _imp_history(samples, rows)
    points, lag = impression_backlog(h)
    assert lag == pytest.approx(1.0 + 0.005 + 2 * h.scenario.load.client_timeout_s)
    by_t = {b.t: b for b in points}
    # at t=30 the 202s of rows 0..24 (t + lag <= 30) count: 2500; the broker has 2800 of
    # this run's records (some answered within the lag): no backlog at all
    assert by_t[30.0].acked_by == 2_500
    assert by_t[30.0].in_kafka == pytest.approx(2_800.0)
    assert max(b.items for b in points) <= 0


def test_loss_is_left_to_no_silent_loss_not_blamed_on_the_queue() -> None:
    def lossy(t: float) -> float:
        return _delivered_by(t) - (1_000.0 if t >= 30 else 0.0)

    samples = _broker(lambda t: max(0.0, lossy(t)))
    rows = _impressions_rows()
    n = sum(r.outcomes.get("accepted", 0) for r in rows)
    h = history(
        rows=rows, samples=samples,
        impressions=ImpressionAccounting(acked=n, found=n - 1_000, missing=1_000),
    )  # fmt: skip
    result = check(h)
    assert verdict(result, "layer.shedder", "stress").status == "pass"
    assert verdict(result, "no_silent_loss", "run").status == "fail"


# --- no_silent_loss: the generator's ack log against its own 202 count ----------------------
ACKS: list[tuple[str, int, str, str]] = [
    ("every 202 in the ack log", 6_000, "pass", "all 6000 acked"),
    ("ack log lost ids", 86, "fail", "ack log lost"),
    ("ack log holds ids never answered 202", 6_100, "fail", "never answered 202"),
]


@pytest.mark.parametrize(("case", "acked", "status", "words"), ACKS, ids=[a[0] for a in ACKS])
def test_the_ack_log_must_match_the_202_count(
    case: str, acked: int, status: str, words: str
) -> None:
    rows = _impressions_rows()  # 100 202s a second for 60 s
    imp = ImpressionAccounting(acked=acked, found=acked, missing=0)
    v = verdict(check(history(rows=rows, impressions=imp)), "no_silent_loss", "run")
    assert v.status == status, v.message
    assert words in v.message


# --- layer.breaker: every window judged on its own; the fill rate comes back ---------------
TWICE = scenario(
    faults=[
        {"at_s": 20, "for_s": 5, "fault": "dsp_latency", "proxy": "dsp-1",
         "params": {"latency_ms": 250}},
        {"at_s": 30, "for_s": 5, "fault": "dsp_down", "proxy": "dsp-1"},
    ]
)  # fmt: skip


def _states(opened: set[int]) -> list[Sample]:
    out = []
    for s in healthy_samples():
        state = "open" if int(s.t) in opened else "closed"
        breakers = {"dsp-1": state, "dsp-2": "closed", "dsp-3": "closed"}
        out.append(dataclasses.replace(s, breakers=breakers))
    return out


def _calls(samples: list[Sample], n: float) -> list[Sample]:
    """The chaos proxy saw `n` requests outstanding to dsp-1 at once, every second."""
    return [dataclasses.replace(s, proxy_outstanding_max={"dsp-1": n}) for s in samples]


def _bids(fill_after: float, since: int = 40) -> list[RequestSecond]:
    """100 admitted bids a second, a 97% fill rate, `fill_after` from t=`since`."""
    out = []
    for r in healthy_rows():
        fill = fill_after if r.t >= since else 0.97
        ok = round(100 * fill)
        out.append(dataclasses.replace(r, endpoints={"bid": {"ok": ok, "no_bid": 100 - ok}}))
    return out


BREAKER: list[tuple[str, Callable[[], History], str, str]] = [
    ("opens and closes in each window",
     lambda: history(TWICE, samples=_states(set(range(21, 26)) | set(range(31, 36)))),
     "pass", "dsp-1's window [30, 35) s: opened"),
    ("second window never opens (breaker never trips again)",
     lambda: history(TWICE, samples=_states(set(range(21, 26)))),
     "fail", "dsp-1's window [30, 35) s: its breaker never opened"),
    ("stays open between the windows",
     lambda: history(TWICE, samples=_states(set(range(21, 36)))),
     "fail", "still open at t=30s (next window on it)"),
    ("opens late in the first window",
     lambda: history(TWICE, samples=_states({25} | set(range(31, 36)))),
     "pass", "opened at t=25s"),
    ("open and the proxy agrees: only probes reach dsp-1",
     lambda: history(TWICE, samples=_calls(_states(set(range(21, 26)) | set(range(31, 36))), 3)),
     "pass", "dsp-1's window [30, 35) s: opened"),
    ("says open yet calls dsp-1: 40 outstanding at the proxy",
     lambda: history(TWICE, samples=_calls(_states(set(range(21, 26)) | set(range(31, 36))), 40)),
     "fail", "yet the chaos proxy saw 40 requests outstanding to dsp-1"),
    ("fill rate back after the last close",
     lambda: history(rows=_bids(0.97)), "pass", "bid fill rate back"),
    ("a DSP's bids never come back (reported closed)",
     lambda: history(rows=_bids(0.91)), "fail", "some DSP's bids never came back"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "make", "status", "words"), BREAKER,
                         ids=[b[0] for b in BREAKER])  # fmt: skip
def test_the_breaker_per_window_and_the_fill_rate(
    case: str, make: Callable[[], History], status: str, words: str
) -> None:
    v = verdict(check(make()), "layer.breaker", "stress")
    assert v.status == status, v.message
    assert words in v.message


# --- valid_run: the generator's intended arrivals against the harness's own schedule ---------
def _recorded(share: float) -> list[RequestSecond]:
    """The healthy rows with `share` of each stress second's requests gone from the record
    (intended, sent and outcomes alike: a recorder that drops timed-out requests)."""
    out = []
    for r in healthy_rows():
        if 20 <= r.t < 35:
            keep = round(r.outcomes["ok"] * share)
            out.append(dataclasses.replace(
                r, intended=r.intended - r.outcomes["ok"] + keep,
                sent=r.sent - r.outcomes["ok"] + keep,
                outcomes={**r.outcomes, "ok": keep}, admitted=keep,
            ))  # fmt: skip
        else:
            out.append(r)
    return out


SCHEDULE: list[tuple[str, float, str, str]] = [
    ("every scheduled arrival recorded", 1.0, "pass", "schedule kept"),
    ("a tenth of the stress arrivals missing from the record", 0.9, "fail",
     "missing from the generator's own record"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "share", "status", "words"), SCHEDULE,
                         ids=[s[0] for s in SCHEDULE])  # fmt: skip
def test_the_generators_intended_count_must_meet_the_schedule(
    case: str, share: float, status: str, words: str
) -> None:
    v = verdict(check(history(rows=_recorded(share))), "valid_run", "stress")
    assert v.status == status, v.message
    assert words in v.message
    assert v.evidence["schedule_expected"] == pytest.approx(15 * 300)


# --- layer.edge: every 429 says when to come back ------------------------------------------
@pytest.mark.parametrize(("bad", "status"), [(0, "pass"), (3, "fail")])
def test_429s_must_carry_retry_after_of_at_least_a_second(bad: int, status: str) -> None:
    """A Retry-After rounded down to 0 (a sub-second wait truncated) tells every client to
    retry at once: the recorder counts such 429s and layer.edge fails on any."""
    rows = [
        dataclasses.replace(r, retry_after_invalid={"rate_limited": bad} if r.t == 25 else {})
        for r in healthy_rows()
    ]
    v = verdict(check(history(rows=rows)), "layer.edge", "stress")
    assert v.status == status, v.message
    assert v.evidence["retry_after_invalid"] == bad
    if bad:
        assert "3 of 600 429s carried no Retry-After" in v.message


# --- layer.bulkhead: the auction fails closed while Redis is down ---------------------------
REDIS_DOWN = scenario(
    faults=[{"at_s": 24, "for_s": 8, "fault": "redis_down"}]
)  # fmt: skip


@pytest.mark.parametrize(("filled", "status", "words"), [
    (0, "pass", "failed closed while Redis was down"),
    (90, "fail", "ran without its Redis checks"),
])  # fmt: skip
def test_the_auction_fails_closed_while_redis_is_down(filled: int, status: str, words: str) -> None:
    """A Redis error taken as "go" keeps bidding blind (no frequency cap, budget, pacing):
    while Redis is down the bids must be redis_unavailable, not seat bids."""
    rows = []
    for r in healthy_rows():
        down = 24 <= r.t < 32
        ok = filled if down else 97
        rows.append(dataclasses.replace(r, endpoints={"bid": {"ok": ok, "no_bid": 100 - ok}}))
    v = verdict(check(history(REDIS_DOWN, rows=rows)), "layer.bulkhead", "stress")
    assert v.status == status, v.message
    assert words in v.message


# --- the target's rejection-cost histogram must time what the generator received -----------
@pytest.mark.parametrize(("edge_timed", "status"), [(40, "pass"), (0, "fail"), (20, "fail")])
def test_the_rejection_histogram_must_time_every_429(edge_timed: int, status: str) -> None:
    """A histogram that observes 503s only (or half the 429s) leaves the edge's rejection
    cost unjudgeable server-side: the generator's own 429 count shows it."""
    from tests.unit.harness.test_checker import FAST, _pure, served

    costs = {**FAST, "edge": [(edge_timed, 0.0002)] if edge_timed else []}
    v = verdict(check(history(rows=_pure("rate_limited", 0.4), samples=served(costs))),
                "layer.edge", "stress")  # fmt: skip
    assert v.status == status, v.message
    if status == "fail":
        assert "the target does not measure what it answers" in v.message


# --- valid_run: the generator's histograms hold what it counted ----------------------------
def test_rejections_filed_under_admitted_latencies_fail_the_record() -> None:
    """A recorder that puts 429s' latencies in the admitted histogram dilutes the admitted
    p99 with fast rejections: the histograms no longer hold what the outcomes count."""
    from tests.unit.harness.test_checker import hist

    def mixed(r: RequestSecond) -> RequestSecond:
        if not r.rejected:
            return r
        return dataclasses.replace(
            r, hist_admitted=hist(20.0, r.admitted + r.rejected), hist_rejected=None
        )

    v = verdict(check(history(rows=[mixed(r) for r in healthy_rows()])), "valid_run", "stress")
    assert v.status == "fail", v.message
    assert "admitted latency histogram holds 300 responses but it counted 200" in v.message
    healthy = verdict(check(history()), "valid_run", "stress")
    assert healthy.status == "pass", healthy.message


# --- valid_run: the generator's clock against the target's own time -------------------------
def _timed(rows: list[RequestSecond], slow_share: float) -> list[Sample]:
    """The target's duration histogram for `rows`' admitted responses (a sample at t has
    counted the seconds before t), `slow_share` of them over 10 ms, none under 1 ms."""
    inf = float("inf")
    out = []
    for s in healthy_samples():
        done = sum(r.admitted for r in rows if r.t < s.t)
        fast = round(done * (1 - slow_share))
        buckets = ((0.001, 0), (0.01, fast), (0.1, done), (inf, done))
        out.append(dataclasses.replace(s, duration_buckets={"admitted": buckets}))
    return out


@pytest.mark.parametrize(("client_ms", "status"), [(20.0, "pass"), (0.05, "fail")])
def test_the_generators_clock_cannot_be_faster_than_the_target(
    client_ms: float, status: str
) -> None:
    """The target spent over 10 ms on 20 admitted responses a second; a generator that times
    them from the headers' arrival says they took 0.05 ms: its clock starts late."""
    rows = [dataclasses.replace(r, hist_admitted=hist_of(client_ms, r.admitted)) for r in
            healthy_rows()]  # fmt: skip
    v = verdict(check(history(rows=rows, samples=_timed(rows, 0.1))), "valid_run", "run")
    assert v.status == status, v.message
    if status == "fail":
        assert "the generator timed only 0 that slow" in v.message


def hist_of(ms: float, n: int) -> str | None:
    from tests.unit.harness.test_checker import hist

    return hist(ms, n) if n else None


# --- layer.bulkhead: the bulkhead's own wait and hold times ---------------------------------
def _permits(wait_ms: float, hold_ms: float, per_s: int = 100) -> list[Sample]:
    """Permit histograms: `per_s` auctions a second, each waiting `wait_ms`, holding
    `hold_ms` (a sample at t has counted the seconds before t)."""
    edges = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0)
    out = []
    for s in healthy_samples():
        n = per_s * int(s.t)

        def cum(ms: float, n: int = n) -> tuple[tuple[float, int], ...]:
            return (*((le, n if ms <= le * 1000 else 0) for le in edges), (float("inf"), n))

        out.append(dataclasses.replace(s, permit_buckets={"wait": cum(wait_ms),
                                                          "hold": cum(hold_ms)}))  # fmt: skip
    return out


PERMITS: list[tuple[str, float, float, str, str]] = [
    ("waits within max_wait, holds within the Redis timeout", 0.3, 20.0, "pass",
     "permits hold within 75 ms"),
    ("waits out the deadline instead of rejecting", 120.0, 20.0, "fail",
     "waited over 50 ms (max_wait_ms 5 ms + 25 ms of loop lag): the bulkhead queues"),
    ("holds the permit across the DSP fan-out", 0.3, 140.0, "fail",
     "held a permit over 75 ms (redis_timeout_ms 50 ms + 25 ms of loop lag)"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "wait_ms", "hold_ms", "status", "words"), PERMITS,
                         ids=[p[0] for p in PERMITS])  # fmt: skip
def test_the_bulkhead_keeps_its_permit_promise(
    case: str, wait_ms: float, hold_ms: float, status: str, words: str
) -> None:
    v = verdict(check(history(samples=_permits(wait_ms, hold_ms))), "layer.bulkhead", "stress")
    assert v.status == status, v.message
    assert words in v.message


# --- layer.breaker: the fan-out keeps the auction's deadline --------------------------------
@pytest.mark.parametrize(("late", "status", "words"), [
    (0, "pass", "deadline kept"),
    (150, "fail", "150 of 7400 admitted responses took the target over 200 ms (tmax 150 ms"),
])  # fmt: skip
def test_the_fan_out_keeps_the_auctions_deadline(late: int, status: str, words: str) -> None:
    """A fan-out that waits a slow DSP out (a timeout in the wrong unit) answers bids after
    tmax: the target's own time on admitted responses shows it, whatever it reports."""
    rows = healthy_rows()
    inf = float("inf")
    samples = []
    for s in healthy_samples():
        done = sum(r.admitted for r in rows if r.t < s.t)
        slow = min(late, done)
        buckets = ((0.15, done - slow), (0.2, done - slow), (0.5, done), (inf, done))
        samples.append(dataclasses.replace(s, duration_buckets={"admitted": buckets}))
    v = verdict(check(history(rows=rows, samples=samples)), "layer.breaker", "stress")
    assert v.status == status, v.message
    assert words in v.message


# --- layer.shedder: with CoDel on, a queue never stands --------------------------------------
@pytest.mark.parametrize(("depth", "status", "words"), [
    (12.0, "pass", "CoDel kept the queue short"),
    (390.0, "fail", "the shedder let a queue stand"),
])  # fmt: skip
def test_codel_keeps_the_queue_far_below_its_cap(depth: float, status: str, words: str) -> None:
    """100 impressions a second and CoDel's 105 ms window: a queue of 12 is CoDel at work;
    one of 390 (under the cap of 400) is a shedder whose test is inverted."""
    rows = [dataclasses.replace(r, endpoints={"impression": {"accepted": 100}})
            for r in healthy_rows()]  # fmt: skip
    samples = [dataclasses.replace(s, queue_depth=depth if s.t == 28 else 5.0)
               for s in healthy_samples()]  # fmt: skip
    imp = ImpressionAccounting(acked=6000, found=6000, missing=0)
    v = verdict(check(history(rows=rows, samples=samples, impressions=imp)), "layer.shedder",
                "stress")  # fmt: skip
    assert v.status == status, v.message
    assert words in v.message


def test_with_no_designed_wait_any_wait_is_queueing() -> None:
    """max_wait_ms = 0: an admitted auction never suspends for its permit, so a 3 ms wait
    (the bulkhead waiting out the deadline instead of rejecting) fails; 0.3 ms does not."""
    no_wait = scenario(
        target={"config": {"auction": {"limit": 12, "max_wait_ms": 0},
                           "impressions": {"max_depth": 400}}}
    )  # fmt: skip
    bad = verdict(check(history(no_wait, samples=_permits(3.0, 20.0))), "layer.bulkhead")
    assert bad.status == "fail" and "waited over 0.5 ms (max_wait_ms 0 ms + 0 ms" in bad.message
    good = verdict(check(history(no_wait, samples=_permits(0.3, 20.0))), "layer.bulkhead")
    assert good.status == "pass", good.message
