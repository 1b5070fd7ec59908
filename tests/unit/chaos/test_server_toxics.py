"""Each toxic's one method against a fake stub with a fake clock (no sockets, no sleeping)."""

from __future__ import annotations

import random

from spikegate.chaos.server.toxics import (
    BandwidthToxic,
    Chunk,
    LatencyToxic,
    LimitDataToxic,
    ResetPeerToxic,
    SlicerToxic,
    SlowCloseToxic,
    TimeoutToxic,
)


class FakeStub:
    """Sleeping advances a fake clock; emitted chunks and actions are recorded."""

    def __init__(self, now: float = 100.0, seed: int = 1) -> None:
        self.clock = now
        self.rng = random.Random(seed)
        self.state: dict[str, float] = {}
        self.alive = True
        self.emitted: list[tuple[float, bytes, bool]] = []
        self.actions: list[str] = []
        self.timer: float | None = None

    def now(self) -> float:
        return self.clock

    async def emit(self, chunk: Chunk) -> None:
        self.emitted.append((self.clock, chunk.data, chunk.eof))

    async def sleep_until(self, deadline: float) -> bool:
        self.clock = max(self.clock, deadline)
        return True

    def set_timer(self, delay_s, callback) -> None:
        self.timer = delay_s

    def close(self) -> None:
        self.actions.append("close")

    def reset(self) -> None:
        self.actions.append("reset")


async def test_latency_releases_at_arrival_plus_latency_and_moves_the_stamp():
    stub = FakeStub(now=100.0)
    chunk = Chunk(b"x", stamp=100.0)
    await LatencyToxic(latency=250).pipe(chunk, stub)
    assert stub.emitted == [(100.25, b"x", False)]
    assert chunk.stamp == 100.25


async def test_latency_does_not_delay_a_chunk_that_already_waited():
    stub = FakeStub(now=101.0)
    await LatencyToxic(latency=250).pipe(Chunk(b"x", stamp=100.0), stub)
    assert stub.emitted == [(101.0, b"x", False)]


async def test_latency_jitter_stays_within_bounds():
    stub = FakeStub(now=0.0)
    for _ in range(200):
        stub.clock = 0.0
        await LatencyToxic(latency=100, jitter=20).pipe(Chunk(b"x", stamp=0.0), stub)
    releases = [t for t, _, _ in stub.emitted]
    assert all(0.080 <= t <= 0.120 for t in releases)
    assert max(releases) - min(releases) > 0.02


async def test_bandwidth_paces_bytes_to_the_rate():
    stub = FakeStub(now=0.0)
    toxic = BandwidthToxic(rate=1000)
    for _ in range(15):
        await toxic.pipe(Chunk(b"b" * 32_000, stamp=stub.clock), stub)
    assert sum(len(d) for _, d, _ in stub.emitted) == 480_000
    assert abs(stub.clock - 0.480) < 1e-9


async def test_bandwidth_slices_big_chunks_into_100ms_pieces():
    stub = FakeStub(now=0.0)
    await BandwidthToxic(rate=10).pipe(Chunk(b"b" * 2500, stamp=0.0), stub)
    assert [len(d) for _, d, _ in stub.emitted] == [1000, 1000, 500]
    assert [round(t, 6) for t, _, _ in stub.emitted] == [0.1, 0.2, 0.25]


async def test_slow_close_delays_only_the_eof():
    stub = FakeStub(now=0.0)
    toxic = SlowCloseToxic(delay=300)
    await toxic.pipe(Chunk(b"data", stamp=0.0), stub)
    await toxic.pipe(Chunk(b"", stamp=0.0, eof=True), stub)
    assert stub.emitted == [(0.0, b"data", False), (0.3, b"", True)]


async def test_timeout_drops_data_and_rearms_its_timer():
    stub = FakeStub()
    toxic = TimeoutToxic(timeout=100)
    toxic.attach(stub)
    assert stub.timer == 0.1
    stub.timer = None
    await toxic.pipe(Chunk(b"lost", stamp=0.0), stub)
    assert stub.emitted == [] and stub.timer == 0.1
    toxic.cleanup(stub)
    assert stub.actions == ["close"]


async def test_timeout_0_never_arms_a_timer():
    stub = FakeStub()
    TimeoutToxic(timeout=0).attach(stub)
    assert stub.timer is None


async def test_reset_peer_drops_the_chunk_waits_then_resets():
    stub = FakeStub(now=5.0)
    await ResetPeerToxic(timeout=200).pipe(Chunk(b"x", stamp=5.0), stub)
    assert stub.emitted == [] and stub.actions == ["reset"] and stub.clock == 5.2


async def test_slicer_preserves_bytes_and_respects_sizes():
    stub = FakeStub()
    data = bytes(range(256)) * 40
    await SlicerToxic(average_size=50, size_variation=20, delay=10).pipe(Chunk(data, 0.0), stub)
    pieces = [d for _, d, _ in stub.emitted]
    assert b"".join(pieces) == data
    assert all(30 <= len(p) <= 70 for p in pieces[:-1])


async def test_limit_data_forwards_exactly_the_limit_then_closes():
    stub = FakeStub()
    toxic = LimitDataToxic(bytes=100)
    await toxic.pipe(Chunk(b"a" * 60, 0.0), stub)
    assert stub.actions == []
    await toxic.pipe(Chunk(b"b" * 90, 0.0), stub)
    assert b"".join(d for _, d, _ in stub.emitted) == b"a" * 60 + b"b" * 40
    assert stub.actions == ["close"]


async def test_a_removed_latency_toxic_hands_its_chunk_on_at_once():
    stub = FakeStub(now=0.0)
    stub.alive = False
    await LatencyToxic(latency=10_000).pipe(Chunk(b"x", 0.0), stub)
    assert stub.emitted == [(0.0, b"x", False)]
