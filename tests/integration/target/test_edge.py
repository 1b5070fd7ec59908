"""Edge layer against the real stack: auth (401), per-publisher token bucket (429), and 422s
that name the field."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_hot_publisher_gets_429_while_another_publisher_is_unaffected(make_config, kit):
    config = make_config(
        publishers={
            # one token per 1000 s: no refill while the test runs, however slow the machine
            "pub-hot": {"api_key": kit.HOT_KEY, "rate_per_s": 0.001, "burst": 5},
            "pub-cold": {"api_key": kit.COLD_KEY, "rate_per_s": 0.001, "burst": 5},
        }
    )
    async with kit.serve(config) as client:
        hot = [await kit.timed_bid(client, kit.bid_body(user=f"u{i}")) for i in range(20)]
        cold = [
            await kit.timed_bid(client, kit.bid_body(publisher="pub-cold"), kit.COLD_KEY)
            for _ in range(5)
        ]
    hot_limited = [r for r, _ in hot if r.status_code == 429]
    assert len(hot_limited) == 15  # the burst of 5 admitted, the other 15 limited
    for r in hot_limited:
        assert r.headers[kit.DECISION] == "rate_limited"
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["decision"] == "rate_limited"
    assert [r.status_code for r, _ in cold].count(429) == 0
    assert all(r.headers[kit.DECISION] != "rate_limited" for r, _ in cold)


async def test_edge_switch_off_admits_a_hot_publisher(make_config, kit):
    config = make_config(
        publishers={"pub-hot": {"api_key": kit.HOT_KEY, "rate_per_s": 0.5, "burst": 1}},
        edge={"enabled": False},
    )
    async with kit.serve(config) as client:
        statuses = [(await kit.timed_bid(client, kit.bid_body()))[0].status_code for _ in range(5)]
    assert 429 not in statuses


@pytest.mark.parametrize("headers", [{}, {"X-Api-Key": "nope"}], ids=["missing", "unknown"])
async def test_missing_or_unknown_api_key_is_401_unauthorized(make_config, kit, headers):
    async with kit.serve(make_config()) as client:
        resp = await client.post("/bid", json=kit.bid_body(), headers=headers)
    assert resp.status_code == 401
    assert resp.headers[kit.DECISION] == "unauthorized"
    assert "X-Api-Key" in resp.json()["detail"]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.pop("imp"), "imp"),
        (lambda b: b["imp"][0].update(bidfloor="cheap"), "bidfloor"),
        (lambda b: b["imp"].clear(), "imp"),
        (lambda b: b.update(tmax=-5), "tmax"),
        (lambda b: b["user"].pop("id"), "user"),
        (lambda b: b["site"].update(publisher=7), "publisher"),
    ],
    ids=["no-imp", "floor-not-number", "empty-imp", "negative-tmax", "no-user-id", "bad-site"],
)
async def test_malformed_bid_body_is_422_naming_the_field(make_config, kit, mutate, field):
    body = kit.bid_body()
    mutate(body)
    async with kit.serve(make_config()) as client:
        resp = await client.post("/bid", json=body, headers={"X-Api-Key": kit.HOT_KEY})
    assert resp.status_code == 422
    assert resp.headers[kit.DECISION] == "invalid"
    locs = [err["loc"] for err in resp.json()["detail"]]
    assert any(field in loc for loc in locs), locs


async def test_body_that_is_not_json_is_422_json(make_config, kit):
    async with kit.serve(make_config()) as client:
        resp = await client.post(
            "/bid",
            content=b"{not json",
            headers={"X-Api-Key": kit.HOT_KEY, "Content-Type": "application/json"},
        )
    assert resp.status_code == 422
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.headers[kit.DECISION] == "invalid"


async def test_malformed_impression_is_422_naming_the_field(make_config, kit):
    body = {"impression_id": "i1", "request_id": "r", "bid_id": "b", "publisher_id": "p"}
    async with kit.serve(make_config()) as client:
        resp = await client.post("/impression", json={**body, "dsp": "d", "price": "x"})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "price"]
