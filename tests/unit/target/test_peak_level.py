"""The auction's in-flight peak is kept until it is read: no scrape, however late, loses it.

`PeakLevel` itself has no clock; the tests through `Auction` run it on a FakeClock that jumps
seconds ahead between the burst and the scrape, to show that no window exists to pass.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from spikegate.harness.sampler import Sampler
from spikegate.target.auction import Auction, PeakLevel
from spikegate.target.backpressure.clock import FakeClock
from spikegate.target.config import AuctionConfig
from spikegate.target.metrics import LevelsCollector, Metrics


def test_a_peak_between_two_reads_is_seen_by_the_next_read() -> None:
    peak = PeakLevel()
    peak.note(1)
    peak.note(7)  # a burst of a few milliseconds
    assert peak.read(level_now=0).peak == 7


def test_a_read_resets_the_mark_to_the_level_now() -> None:
    peak = PeakLevel()
    peak.note(7)
    assert peak.read(level_now=3).peak == 7
    assert peak.read(level_now=0).peak == 3  # the 3 held at the previous read still counted
    assert peak.read(level_now=0).peak == 0
    peak.note(2)
    assert peak.read(level_now=1).peak == 2


def test_the_peak_is_never_below_the_level_now() -> None:
    peak = PeakLevel()
    peak.note(2)
    assert peak.read(level_now=4).peak == 4


def test_reached_counts_every_start_by_its_level_and_only_grows() -> None:
    peak = PeakLevel()
    for level in (1, 2, 3, 2, 3):
        peak.note(level)
    first = peak.read(level_now=0).reached
    assert first == (0, 1, 2, 2)
    peak.note(5)
    second = peak.read(level_now=0).reached
    assert second == (0, 1, 2, 2, 0, 1)
    assert all(b >= a for a, b in zip(first, second, strict=False))


def test_a_level_below_one_is_not_a_start() -> None:
    peak = PeakLevel()
    peak.note(0)
    peak.note(-3)
    assert peak.read(level_now=0) == (0, (0,))


# --- through the auction, its /metrics exposition and the sampler, on a fake clock ---------


class _StalledRedis:
    """Enough of redis.asyncio.Redis for Auction: the script call waits for `go`."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.started = 0

    def register_script(self, _lua: str) -> Any:
        async def call(*, keys: list[str], args: list[Any]) -> int:
            self.started += 1
            await self.go.wait()
            return 1  # frequency capped: a no-bid without asking a DSP

        return call


def _request(user: str) -> Any:
    imp = SimpleNamespace(id="1", bidfloor=0.5)
    return SimpleNamespace(id=f"r-{user}", imp=[imp], user=SimpleNamespace(id=user))


def _target(clock: FakeClock, **cfg: Any) -> tuple[Auction, _StalledRedis, Metrics]:
    redis = _StalledRedis()
    config = AuctionConfig(redis_timeout_ms=60_000, max_tmax_ms=60_000, **cfg)
    auction = Auction(config, redis, dsps=None, limit=None, clock=clock)  # type: ignore[arg-type]
    metrics = Metrics()
    metrics.registry.register(
        LevelsCollector(
            limit=lambda: auction.unlimited,
            breakers=dict,
            impression_stats=lambda: None,
            loop_lag=lambda: (0.0, 0.0),
            inflight_peak=auction.inflight_peak,
        )
    )
    return auction, redis, metrics


async def _burst(auction: Auction, redis: _StalledRedis, clock: FakeClock, n: int) -> None:
    """n auctions in Redis work at once, then all of them done."""
    deadline = clock() + 30 * 1_000_000_000
    runs = [
        asyncio.ensure_future(auction.run(_request(f"u{i}"), "pub", deadline))  # type: ignore[arg-type]
        for i in range(n)
    ]
    while redis.started < n:  # each run reaches Redis within a few loop turns
        await asyncio.sleep(0)
    assert auction.unlimited is not None and auction.unlimited.inflight == n
    redis.go.set()
    outcomes = await asyncio.gather(*runs)
    assert {o.decision for o in outcomes} == {"no_bid"}
    redis.go.clear()
    redis.started = 0


def _value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the exposition")


@pytest.mark.parametrize("late_s", [0.0, 1.0, 10.0, 3600.0])
async def test_a_scrape_any_seconds_late_still_sees_the_peak(late_s: float) -> None:
    clock = FakeClock()
    auction, redis, metrics = _target(clock, enabled=False, limit=2)
    metrics.render()  # a scrape before the burst
    await _burst(auction, redis, clock, 6)
    clock.advance(late_s)
    text = metrics.render().decode()
    assert _value(text, "spikegate_auction_inflight") == 0.0
    assert _value(text, "spikegate_auction_inflight_max") == 6.0
    assert 'spikegate_auction_inflight_reached_total{level="6"} 1.0' in text
    # ...and once read, it is gone for the next scrape: only the level now is left.
    assert _value(metrics.render().decode(), "spikegate_auction_inflight_max") == 0.0


async def test_two_scrapers_each_get_their_own_peak_from_the_counter() -> None:
    """A user's Prometheus scraping between two sampler scrapes resets the gauge; the
    sampler's own peak, from the monotonic counter, still has the burst."""
    clock = FakeClock()
    auction, redis, metrics = _target(clock, enabled=False, limit=2)
    rows: list[dict[str, Any]] = []

    def fetch(_url: str) -> tuple[int, str]:
        return 200, metrics.render().decode()

    sampler = Sampler("http://127.0.0.1:1/metrics", on_row=rows.append, fetch=fetch)
    rows.append(sampler.sample(0))
    await _burst(auction, redis, clock, 5)
    clock.advance(0.5)
    other = metrics.render().decode()  # the other scraper takes the gauge's peak
    assert _value(other, "spikegate_auction_inflight_max") == 5.0
    clock.advance(10.0)  # and the sampler comes ten seconds late
    rows.append(sampler.sample(1))
    assert rows[1]["auction_inflight_max"] == 5.0
    await _burst(auction, redis, clock, 3)
    rows.append(sampler.sample(2))
    assert rows[2]["auction_inflight_max"] == 3.0  # its own interval only: not the old 5
    rows.append(sampler.sample(3))
    assert rows[3]["auction_inflight_max"] == 0.0
