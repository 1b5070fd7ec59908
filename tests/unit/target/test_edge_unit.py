"""Edge decisions with a fake clock, the Retry-After rendering, and winner selection."""

from __future__ import annotations

import math

from spikegate.target.auction import choose_winner
from spikegate.target.backpressure.clock import FakeClock
from spikegate.target.backpressure.decision import Decision
from spikegate.target.config import PublisherConfig
from spikegate.target.dsp_client import DspBid, _parse_bids
from spikegate.target.edge import Edge, retry_after_header
from spikegate.target.models import BidRequest

PUBS = {
    "a": PublisherConfig(api_key="ka", rate_per_s=10, burst=5),
    "b": PublisherConfig(api_key="kb", rate_per_s=10, burst=5),
    "c": PublisherConfig(api_key="kc", rate_per_s=1, burst=1),
}


def test_unknown_or_missing_key_is_unauthorized() -> None:
    edge = Edge(PUBS, clock=FakeClock())
    assert edge.check(None) == (None, Decision(False, "unauthorized"))
    assert edge.check("") == (None, Decision(False, "unauthorized"))
    assert edge.check("nope")[1].reason == "unauthorized"


def test_hot_publisher_is_limited_and_its_neighbour_is_not() -> None:
    clock = FakeClock()
    edge = Edge(PUBS, clock=clock)
    hot = [edge.check("ka")[1] for _ in range(50)]
    assert sum(d.admitted for d in hot) == 5
    assert all(d.reason == "rate_limited" for d in hot[5:])
    assert all(edge.check("kb")[1].admitted for _ in range(5))  # same shape, own bucket
    clock.advance(0.1)
    assert edge.check("ka")[1].admitted  # one token back after 1/r


def test_rate_limited_decision_says_when_to_retry() -> None:
    edge = Edge(PUBS, clock=FakeClock())
    edge.check("kc")
    pub, decision = edge.check("kc")
    assert pub == "c"
    assert not decision.admitted
    assert 0 < decision.retry_after_s <= 1.0
    assert retry_after_header(decision) == "1"


def test_disabled_edge_still_authenticates_but_never_limits() -> None:
    edge = Edge(PUBS, enabled=False, clock=FakeClock())
    assert all(edge.check("kc")[1].admitted for _ in range(100))
    assert not edge.check("zz")[1].admitted


def test_route_resolves_the_registry_check_decides_on() -> None:
    """lean_http answers through `route`, the ASGI path through `check`: one bucket, so a
    publisher is charged once per request whichever path served it."""
    clock = FakeClock()
    edge = Edge(PUBS, clock=clock)
    route = edge.route("kc")  # 1/s, burst 1
    assert route is not None and edge.route("nope") is None and edge.route(None) is None
    pub_id, registry = route
    assert pub_id == "c"
    assert registry.take(pub_id) == 0
    assert not edge.check("kc")[1].admitted  # the token went to take()
    clock.advance(1.0)
    assert edge.check("kc")[1].admitted
    assert registry.take(pub_id) == 1_000_000_000  # ... and this one to check()


def test_retry_after_header_is_whole_seconds_at_least_one_and_finite() -> None:
    assert retry_after_header(Decision(False, "x", 0.0)) == "1"
    assert retry_after_header(Decision(False, "x", 1.2)) == "2"
    assert retry_after_header(Decision(False, "x", math.inf)) == "3600"


def _req() -> BidRequest:
    return BidRequest.model_validate(
        {
            "id": "r",
            "imp": [{"id": "1", "bidfloor": 1.0}, {"id": "2", "bidfloor": 0.1}],
            "site": {"publisher": {"id": "p"}},
            "user": {"id": "u"},
        }
    )


def test_winner_is_the_highest_bid_at_or_above_its_floor() -> None:
    bids = [
        DspBid("d1", {"impid": "1", "price": 0.9}, 0.9),  # under its floor
        DspBid("d2", {"impid": "2", "price": 0.5}, 0.5),
        DspBid("d3", {"impid": "9", "price": 5.0}, 5.0),  # unknown impression
        DspBid("d4", {"impid": "1", "price": 1.0}, 1.0),
    ]
    winner = choose_winner(_req(), bids)
    assert winner is not None and winner.dsp == "d4"
    assert choose_winner(_req(), bids[:1]) is None


def test_dsp_payload_parsing_drops_zero_and_non_finite_prices() -> None:
    body = (
        b'{"seatbid": [{"seat": "d", "bid": [{"impid": "1", "price": 2.5},'
        b' {"impid": "1", "price": 0}, {"impid": "1", "price": 1e999}]}]}'
    )
    assert [b.price for b in _parse_bids("d", body)] == [2.5]
    assert _parse_bids("d", b"") == []
    assert _parse_bids("d", b'{"seatbid": []}') == []
