"""DSP fan-out against real simulated bidders: a failing DSP opens its own breaker while the
others keep bidding, all-open answers a fast fallback, a hanging DSP never holds a request
past tmax."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

MARGIN_S = 0.3  # loose: a busy 2-core machine, several test runs at once
BREAKER = {"window_size": 10, "minimum_calls": 5, "wait_open_s": 30, "max_wait_open_s": 60}


async def test_failing_dsp_opens_its_breaker_and_auctions_finish_inside_tmax(
    make_config, kit, dsp_bidders
):
    tmax_ms = 200
    config = make_config(breaker=BREAKER)
    await kit.set_dsp_mode(dsp_bidders.urls[0], "error")
    async with kit.serve(config) as client:
        results = [
            await kit.timed_bid(client, kit.bid_body(user=f"u{i}", tmax=tmax_ms)) for i in range(30)
        ]
        text = (await client.get("/metrics")).text
    assert {r.status_code for r, _ in results} <= {200, 204}
    assert max(t for _, t in results) < tmax_ms / 1000 + MARGIN_S
    assert sum(r.status_code == 200 for r, _ in results) > 0  # the other DSPs still win
    assert kit.metric_value(text, "spikegate_breaker_state_code", dsp="dsp-1") == 1.0
    assert kit.metric_value(text, "spikegate_breaker_state_code", dsp="dsp-2") == 0.0
    assert kit.metric_value(text, "spikegate_breaker_state_code", dsp="dsp-3") == 0.0
    winners = {r.json()["seatbid"][0]["seat"] for r, _ in results if r.status_code == 200}
    assert "dsp-1" not in winners


async def test_all_breakers_open_answers_fast_204_breaker_open_fallback(
    make_config, kit, dsp_bidders
):
    config = make_config(breaker=BREAKER)
    for url in dsp_bidders.urls:
        await kit.set_dsp_mode(url, "error")
    async with kit.serve(config) as client:
        for i in range(8):  # enough failures to trip every breaker
            await kit.timed_bid(client, kit.bid_body(user=f"u{i}"))
        results = [await kit.timed_bid(client, kit.bid_body(user=f"v{i}")) for i in range(5)]
    for r, elapsed in results:
        assert r.status_code == 204
        assert r.headers[kit.DECISION] == "breaker_open_fallback"
        assert elapsed < 0.1


async def test_breaker_switch_off_keeps_asking_a_failing_dsp(make_config, kit, dsp_bidders):
    config = make_config(breaker={**BREAKER, "enabled": False})
    for url in dsp_bidders.urls:
        await kit.set_dsp_mode(url, "error")
    async with kit.serve(config) as client:
        results = [await kit.timed_bid(client, kit.bid_body(user=f"u{i}")) for i in range(10)]
        text = (await client.get("/metrics")).text
    assert all(r.headers[kit.DECISION] == "no_bid" for r, _ in results)
    assert kit.metric_value(text, "spikegate_breaker_state_code", dsp="dsp-1") == 4.0


async def test_hanging_dsp_never_holds_a_request_past_tmax(make_config, kit, dsp_bidders):
    tmax_ms = 150
    # Redis may take up to the deadline here (a busy machine): this test is about the DSP
    config = make_config(breaker=BREAKER, auction={"redis_timeout_ms": 1000})
    await kit.set_dsp_mode(dsp_bidders.urls[0], "hang")
    try:
        async with kit.serve(config) as client:
            await kit.timed_bid(client, kit.bid_body(user="warm", tmax=tmax_ms))
            results = await kit.gather_bids(
                client, [kit.bid_body(user=f"u{i}", tmax=tmax_ms) for i in range(10)]
            )
    finally:
        await kit.set_dsp_mode(dsp_bidders.urls[0], "ok")
    for r, elapsed in results:
        assert r.status_code in (200, 204), (r.status_code, r.headers[kit.DECISION])
        assert elapsed < tmax_ms / 1000 + MARGIN_S
    assert any(r.status_code == 200 for r, _ in results)  # dsp-2/3 answered in time


async def test_slow_dsp_trips_on_slow_calls_alone(make_config, kit, dsp_bidders):
    breaker = {**BREAKER, "slow_call_duration_s": 0.03, "slow_call_rate_threshold": 0.5}
    config = make_config(breaker=breaker)
    await kit.set_dsp_mode(dsp_bidders.urls[1], "slow", 60)
    try:
        async with kit.serve(config) as client:
            for i in range(8):
                await kit.timed_bid(client, kit.bid_body(user=f"u{i}", tmax=300))
            text = (await client.get("/metrics")).text
    finally:
        await kit.set_dsp_mode(dsp_bidders.urls[1], "ok")
    assert kit.metric_value(text, "spikegate_breaker_state_code", dsp="dsp-2") == 1.0
    assert kit.metric_value(text, "spikegate_breaker_state_code", dsp="dsp-1") == 0.0
