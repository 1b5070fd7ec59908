"""Auction layer against real redis-server: the concurrency limit answers 503 fast, and a slow,
paused or dead Redis never holds a request past its tmax."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

MARGIN_S = 0.3  # loose: a busy 2-core machine, several test runs at once


async def _pause_redis(url: str, seconds: float) -> None:
    """CLIENT PAUSE: Redis holds every other client's commands for `seconds`."""
    admin = aioredis.from_url(url)
    try:
        await admin.execute_command("CLIENT", "PAUSE", str(round(seconds * 1000)), "ALL")
    finally:
        await admin.aclose()


async def test_auctions_above_the_limit_get_503_bulkhead_full_quickly(
    make_config, kit, redis_server
):
    config = make_config(
        auction={"limit": 2, "max_wait_ms": 0, "redis_timeout_ms": 2000, "max_tmax_ms": 3000}
    )
    async with kit.serve(config) as client:
        await kit.timed_bid(client, kit.bid_body())  # warm: script loaded, pool open
        await _pause_redis(redis_server.url, 1.0)
        results = await kit.gather_bids(
            client, [kit.bid_body(user=f"u{i}", tmax=2500) for i in range(10)]
        )
    full = [(r, t) for r, t in results if r.status_code == 503]
    assert len(full) == 8, [r.status_code for r, _ in results]
    for r, elapsed in full:
        assert r.headers[kit.DECISION] == "bulkhead_full"
        assert int(r.headers["retry-after"]) >= 1
        assert elapsed < 0.5  # the two permit holders wait ~1 s on Redis; the rest must not
    held = [r for r, _ in results if r.status_code != 503]
    assert {r.status_code for r in held} <= {200, 204}


async def test_bounded_wait_admits_when_a_permit_frees_in_time(make_config, kit):
    config = make_config(auction={"limit": 1, "max_wait_ms": 500})
    async with kit.serve(config) as client:
        results = await kit.gather_bids(client, [kit.bid_body(user=f"u{i}") for i in range(4)])
    assert [r.status_code for r, _ in results].count(503) == 0


async def test_paused_redis_never_holds_a_request_past_tmax(make_config, kit, redis_server):
    tmax_ms = 200
    config = make_config(auction={"limit": 50, "max_wait_ms": 1000, "redis_timeout_ms": 5000})
    async with kit.serve(config) as client:
        await kit.timed_bid(client, kit.bid_body())
        redis_server.pause()
        try:
            results = await kit.gather_bids(
                client, [kit.bid_body(user=f"u{i}", tmax=tmax_ms) for i in range(20)]
            )
        finally:
            redis_server.resume()
        after, _ = await kit.timed_bid(client, kit.bid_body(user="after"))
    summary = [(r.status_code, r.headers[kit.DECISION], round(t, 3)) for r, t in results]
    for r, elapsed in results:
        assert r.status_code == 503, summary
        assert r.headers[kit.DECISION] == "redis_unavailable", summary
        assert elapsed < tmax_ms / 1000 + MARGIN_S, summary
    assert after.status_code in (200, 204)  # recovered once Redis is back


async def test_dead_redis_answers_fast_503_redis_unavailable(make_config, kit, redis_server):
    config = make_config()
    async with kit.serve(config) as client:
        redis_server.stop()
        results = [await kit.timed_bid(client, kit.bid_body(tmax=1000)) for _ in range(5)]
    for r, elapsed in results:
        assert r.status_code == 503
        assert r.headers[kit.DECISION] == "redis_unavailable"
        assert "retry-after" in r.headers
        assert elapsed < 0.3


async def test_redis_failure_status_204_gives_fast_no_bid(make_config, kit, redis_server):
    config = make_config(auction={"redis_failure_status": 204})
    async with kit.serve(config) as client:
        redis_server.stop()
        resp, elapsed = await kit.timed_bid(client, kit.bid_body(tmax=1000))
    assert resp.status_code == 204
    assert resp.headers[kit.DECISION] == "redis_unavailable"
    assert elapsed < 0.3


async def test_frequency_cap_turns_the_nth_auction_for_a_user_into_no_bid(make_config, kit):
    config = make_config(auction={"frequency_cap": 3})
    async with kit.serve(config) as client:
        first = [(await kit.timed_bid(client, kit.bid_body(user="u-cap")))[0] for _ in range(3)]
        capped, _ = await kit.timed_bid(client, kit.bid_body(user="u-cap"))
        other, _ = await kit.timed_bid(client, kit.bid_body(user="u-other"))
    assert all(r.status_code in (200, 204) for r in first)
    assert capped.status_code == 204
    assert capped.headers[kit.DECISION] == "no_bid"
    assert other.status_code in (200, 204)


async def test_budget_exhausted_gives_no_bid_without_asking_dsps(make_config, kit):
    # floor 0.5 reserves 500_000 micros; a budget of 1_000_000 covers two auctions
    config = make_config(auction={"budget_micros": 1_000_000})
    async with kit.serve(config) as client:
        results = [await kit.timed_bid(client, kit.bid_body(user=f"u{i}")) for i in range(4)]
        metrics = (await client.get("/metrics")).text
    assert [r.status_code for r, _ in results][2:] == [204, 204]
    asked = kit.metric_value(metrics, "spikegate_requests_total", route="/bid", status="200")
    assert asked is None or asked <= 2


async def test_redis_that_lost_its_scripts_is_given_the_script_again(
    make_config, kit, redis_server
):
    """A restarted Redis (empty script cache) still runs auctions: NOSCRIPT reloads once."""
    async with kit.serve(make_config()) as client:
        await kit.timed_bid(client, kit.bid_body())
        admin = aioredis.from_url(redis_server.url)
        try:
            await admin.script_flush()
        finally:
            await admin.aclose()
        resp, _ = await kit.timed_bid(client, kit.bid_body(user="after-flush"))
        again, _ = await kit.timed_bid(client, kit.bid_body(user="after-flush-2"))
    assert resp.status_code in (200, 204), resp.headers[kit.DECISION]
    assert resp.headers[kit.DECISION] != "redis_unavailable"
    assert again.status_code in (200, 204)


async def test_a_switched_off_limit_still_exports_redis_work_in_flight(
    make_config, kit, redis_server
):
    """Ablation judges a missing bulkhead by behaviour: with the limit off, every auction goes
    to a stalled Redis at once and /metrics shows in-flight work above the unenforced limit."""
    config = make_config(
        auction={"enabled": False, "limit": 2, "redis_timeout_ms": 2000, "max_tmax_ms": 3000}
    )
    async with kit.serve(config) as client:
        await kit.timed_bid(client, kit.bid_body())  # warm: script loaded, pool open
        await _pause_redis(redis_server.url, 1.0)
        bids = asyncio.ensure_future(
            kit.gather_bids(client, [kit.bid_body(user=f"u{i}", tmax=2500) for i in range(6)])
        )
        await asyncio.sleep(0.4)
        text = (await client.get("/metrics")).text
        results = await bids
        after = (await client.get("/metrics")).text  # the burst is over: only its peak remains
    assert kit.metric_value(text, "spikegate_auction_limit_ceiling") == 2.0
    assert kit.metric_value(text, "spikegate_auction_inflight") == 6.0
    assert all(r.status_code != 503 for r, _ in results)  # nothing bounded them
    assert kit.metric_value(after, "spikegate_auction_inflight") == 0.0
    assert kit.metric_value(after, "spikegate_auction_inflight_max") == 6.0
