"""/metrics, /healthz, /readyz and the decision header on every response."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_metrics_exposes_levels_and_decision_counters(make_config, kit):
    async with kit.serve(make_config(auction={"limit": 7})) as client:
        await kit.timed_bid(client, kit.bid_body())
        await client.post("/bid", json=kit.bid_body(), headers={"X-Api-Key": "bad"})
        resp = await client.get("/metrics")
    assert resp.status_code == 200
    text = resp.text
    assert kit.metric_value(text, "spikegate_auction_limit") == 7.0
    assert kit.metric_value(text, "spikegate_auction_limit_ceiling") == 7.0
    assert kit.metric_value(text, "spikegate_auction_inflight") == 0.0
    assert kit.metric_value(text, "spikegate_auction_waiting") == 0.0
    for dsp in ("dsp-1", "dsp-2", "dsp-3"):
        assert kit.metric_value(text, "spikegate_breaker_state", dsp=dsp, state="closed") == 1.0
    assert kit.metric_value(text, "spikegate_event_loop_lag_seconds") is not None
    assert kit.metric_value(text, "spikegate_process_rss_bytes") > 10_000_000
    assert any(line.startswith("spikegate_impressions_") for line in text.splitlines())
    assert (
        kit.metric_value(text, "spikegate_decisions_total", layer="edge", reason="unauthorized")
        == 1.0
    )
    assert kit.metric_value(text, "spikegate_rejection_seconds_count", layer="edge") is None
    assert "spikegate_request_duration_seconds_bucket" in text


async def test_rejections_are_timed_in_the_rejection_histogram(make_config, kit):
    config = make_config(
        publishers={"pub-hot": {"api_key": kit.HOT_KEY, "rate_per_s": 0.001, "burst": 1}}
    )
    async with kit.serve(config) as client:
        for _ in range(4):
            await kit.timed_bid(client, kit.bid_body())
        text = (await client.get("/metrics")).text
    assert kit.metric_value(text, "spikegate_rejection_seconds_count", layer="edge") == 3.0


async def test_every_response_carries_a_decision_header(make_config, kit):
    async with kit.serve(make_config()) as client:
        health = await client.get("/healthz")
        missing = await client.get("/nowhere")
        wrong_method = await client.get("/bid")
        docs = await client.get("/openapi.json")
    assert health.headers[kit.DECISION] == "admitted"
    assert missing.status_code == 404
    assert missing.headers[kit.DECISION] == "not_found"
    assert wrong_method.status_code == 405
    assert wrong_method.headers[kit.DECISION] == "invalid"
    assert docs.status_code == 200
    assert "/bid" in docs.json()["paths"]


async def test_readyz_reports_redis_and_kafka_reachable_then_not(make_config, kit, redis_server):
    async with kit.serve(make_config()) as client:
        ready = await client.get("/readyz")
        redis_server.stop()
        not_ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "redis": True, "kafka": True}
    assert not_ready.status_code == 503
    assert not_ready.json()["redis"] is False
    assert not_ready.json()["kafka"] is True


async def test_impression_is_acknowledged_202_admitted(make_config, kit):
    body = {
        "impression_id": "imp-1",
        "request_id": "r1",
        "bid_id": "b1",
        "publisher_id": "pub-hot",
        "dsp": "dsp-1",
        "price": 1.25,
    }
    async with kit.serve(make_config()) as client:
        resp = await client.post("/impression", json=body)
    assert resp.status_code == 202
    assert resp.headers[kit.DECISION] == "admitted"
    assert resp.json() == {"impression_id": "imp-1", "decision": "admitted"}


async def test_impressions_are_shed_503_with_retry_after_when_kafka_stalls(
    make_config, kit, kafka_broker
):
    config = make_config(
        impressions={"max_depth": 5, "codel": False, "workers": 1, "flush_timeout_s": 3.0}
    )
    async with kit.serve(config) as client:
        kafka_broker.pause()
        try:
            responses = [
                await client.post(
                    "/impression",
                    json={
                        "impression_id": f"imp-{i}",
                        "request_id": "r",
                        "bid_id": "b",
                        "publisher_id": "pub-hot",
                        "dsp": "dsp-1",
                        "price": 1.0,
                    },
                )
                for i in range(60)
            ]
            text = (await client.get("/metrics")).text
        finally:
            kafka_broker.resume()
    shed = [r for r in responses if r.status_code == 503]
    assert len(shed) >= 30
    assert all(r.headers[kit.DECISION] == "shed" for r in shed)
    assert all(int(r.headers["retry-after"]) >= 1 for r in shed)
    assert {r.status_code for r in responses} == {202, 503}
    assert kit.metric_value(text, "spikegate_impressions_queue_depth") <= 5
    assert kit.metric_value(text, "spikegate_decisions_total", layer="impressions", reason="shed")


async def test_adaptive_limit_stays_within_its_ceiling(make_config, kit):
    config = make_config(auction={"limit": 16, "adaptive": True, "adaptive_min_limit": 2})
    async with kit.serve(config) as client:
        for i in range(30):
            await kit.timed_bid(client, kit.bid_body(user=f"u{i}"))
        text = (await client.get("/metrics")).text
    limit = kit.metric_value(text, "spikegate_auction_limit")
    assert 2 <= limit <= 16
    assert kit.metric_value(text, "spikegate_auction_limit_ceiling") == 16.0
