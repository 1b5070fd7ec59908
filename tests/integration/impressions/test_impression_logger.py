"""ImpressionLogger against a real Tansu broker: delivery, outages, shedding, spool, ablation.

Loss is checked by id (delivery is at-least-once): every acknowledged impression_id must be
in the topic. Broker outages are SIGSTOP pauses (the broker keeps its log in memory).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from spikegate.harness.kafka_util import read_topic_ids
from spikegate.harness.services import KafkaBroker
from spikegate.target.backpressure.decision import SHED
from spikegate.target.backpressure.shedder import SHED_CODEL, SHED_QUEUE_FULL, ShedDecision
from spikegate.target.impressions import SHED_STOPPING, ImpressionLogger, ImpressionLoggerSettings

pytestmark = [pytest.mark.integration]


def impression(n: int = 0) -> dict[str, Any]:
    return {
        "impression_id": f"imp-{uuid.uuid4().hex}",
        "request_id": f"req-{n}",
        "bid_id": f"bid-{n}",
        "publisher_id": "pub-1",
        "dsp": "dsp-1",
        "price": 1.25,
    }


def settings(tmp_path: Path, **overrides: Any) -> ImpressionLoggerSettings:
    base: dict[str, Any] = {
        "spool_dir": tmp_path / "spool",
        "request_timeout_ms": 3_000,
        "retry_backoff_ms": 50,
        "max_retry_backoff_ms": 500,
        "flush_timeout_s": 5.0,
    }
    base.update(overrides)
    return ImpressionLoggerSettings(**base)


async def until(pred: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


def all_delivered(logger: ImpressionLogger) -> Callable[[], bool]:
    def pred() -> bool:
        s = logger.stats()
        return (
            s["delivered"] >= s["accepted"]
            and s["queue_depth"] == 0
            and s["inflight"] == 0
            and s["replay_pending"] == 0
        )

    return pred


async def offer_many(logger: ImpressionLogger, count: int) -> tuple[set[str], int, list[int]]:
    """Offer `count` impressions, yielding to the loop every 50 as concurrent requests would.

    Returns (acked ids, shed count, per-offer cost in ns).
    """
    acked: set[str] = set()
    shed = 0
    costs: list[int] = []
    for n in range(count):
        if n and n % 50 == 0:
            await asyncio.sleep(0)
        imp = impression(n)
        t0 = time.perf_counter_ns()
        decision = logger.offer(imp)
        costs.append(time.perf_counter_ns() - t0)
        if decision.admitted:
            acked.add(imp["impression_id"])
        else:
            assert decision.reason == SHED and decision.retry_after_s > 0
            shed += 1
    return acked, shed, costs


def p99(values: list[int]) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


@pytest.mark.timeout(90)
async def test_acked_impressions_all_reach_the_topic(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    logger = ImpressionLogger(
        settings(tmp_path, codel=False),  # about delivery: nothing may be shed here
        bootstrap=kafka_broker.bootstrap,
    )
    await logger.start()
    try:
        assert await logger.wait_ready(30)
        acked, shed, _ = await offer_many(logger, 2_000)
        assert shed == 0 and len(acked) == 2_000
        await until(all_delivered(logger), 30, "delivery of 2000 impressions")
    finally:
        await logger.stop()
    stats = logger.stats()
    assert stats["delivered"] == 2_000 and stats["spooled"] == 0
    ids = await read_topic_ids(kafka_broker.bootstrap, "impressions", timeout_s=30)
    assert acked <= ids


@pytest.mark.timeout(120)
async def test_impressions_acked_during_a_10s_broker_pause_all_reach_the_topic(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    logger = ImpressionLogger(settings(tmp_path, max_depth=3_000), bootstrap=kafka_broker.bootstrap)
    await logger.start()
    acked: set[str] = set()
    try:
        assert await logger.wait_ready(30)
        first, _, _ = await offer_many(logger, 200)
        acked |= first
        await until(all_delivered(logger), 30, "delivery before the pause")
        kafka_broker.pause()
        paused_at = time.monotonic()
        costs: list[int] = []
        shed_total = 0
        try:
            while time.monotonic() - paused_at < 10.0:
                more, shed, c = await offer_many(logger, 50)
                acked |= more
                shed_total += shed
                costs += c
                await asyncio.sleep(0.05)
            delivered_during_pause = logger.stats()["delivered"]
        finally:
            kafka_broker.resume()
        # offer() never waits for Kafka: even with the broker stopped it answers at once
        assert p99(costs) < 2_000_000
        assert delivered_during_pause <= 200 + 2 * 500  # at most the batches already sent
        assert shed_total > 0  # ~10,000 offers against a 3,000-deep queue
        await until(all_delivered(logger), 60, "delivery after the broker resumed")
    finally:
        await logger.stop()
    assert logger.stats()["spooled"] == 0
    ids = await read_topic_ids(kafka_broker.bootstrap, "impressions", timeout_s=30)
    missing = acked - ids
    assert not missing, f"{len(missing)} of {len(acked)} acked impressions lost"


@pytest.mark.timeout(90)
async def test_a_deep_queue_sheds_at_once_without_kafka_io(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    """Broker stopped before start: start() returns, the queue fills, then offers SHED fast."""
    kafka_broker.pause()
    # Kafka requests time out after 30 s here: a start() that waited for the hung broker
    # would take that long, far above the bound a busy machine needs.
    logger = ImpressionLogger(
        settings(tmp_path, max_depth=100, codel=False, request_timeout_ms=30_000),
        bootstrap=kafka_broker.bootstrap,
    )
    try:
        t0 = time.monotonic()
        await logger.start()
        assert time.monotonic() - t0 < 5.0  # a hung Kafka does not block startup
        acked, shed, costs = await offer_many(logger, 1_000)
        assert len(acked) == 100 and shed == 900
        assert p99(costs) < 2_000_000
        decision = logger.offer(impression())
        assert isinstance(decision, ShedDecision) and decision.cause == SHED_QUEUE_FULL
        assert logger.last_shed_cause == SHED_QUEUE_FULL
        assert decision.retry_after_header >= "1"
        stats = logger.stats()
        assert stats["shed_queue_full"] == 901 and stats["queue_depth"] == 100
        assert stats["kafka_up"] == 0.0 and stats["delivered"] == 0
    finally:
        kafka_broker.resume()
    try:
        assert await logger.wait_ready(30)
        await until(all_delivered(logger), 30, "delivery after resume")
    finally:
        await logger.stop()
    ids = await read_topic_ids(kafka_broker.bootstrap, "impressions", timeout_s=30)
    assert acked <= ids


@pytest.mark.timeout(90)
async def test_codel_sheds_when_kafka_stalls_with_a_standing_queue(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    logger = ImpressionLogger(
        settings(tmp_path, workers=1, batch_size=10, max_depth=10_000),
        bootstrap=kafka_broker.bootstrap,
    )
    await logger.start()
    acked: set[str] = set()
    try:
        assert await logger.wait_ready(30)
        kafka_broker.pause()
        try:
            more, shed, _ = await offer_many(logger, 30)  # the worker takes 10 and hangs on Kafka
            acked |= more
            assert shed == 0
            await asyncio.sleep(0.35)  # > 2 CoDel intervals of a standing queue
            decision = logger.offer(impression())
            assert not decision.admitted
            assert isinstance(decision, ShedDecision) and decision.cause == SHED_CODEL
            assert logger.stats()["shedding"] == 1.0
            assert logger.stats()["shed_codel"] >= 1
        finally:
            kafka_broker.resume()
        await until(all_delivered(logger), 30, "delivery after resume")
    finally:
        await logger.stop()
    ids = await read_topic_ids(kafka_broker.bootstrap, "impressions", timeout_s=30)
    assert acked <= ids


@pytest.mark.timeout(120)
async def test_stop_with_kafka_paused_spools_and_the_next_start_replays_with_zero_loss(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    # about the spool, not about shedding; a Kafka request against the paused broker would
    # take 30 s, so a stop() that waited for one stands far above the flush bound
    conf = settings(tmp_path, codel=False, request_timeout_ms=30_000)
    first = ImpressionLogger(conf, bootstrap=kafka_broker.bootstrap)
    await first.start()
    assert await first.wait_ready(30)
    acked, _, _ = await offer_many(first, 300)
    await until(all_delivered(first), 30, "delivery before the pause")
    kafka_broker.pause()
    try:
        late, shed, _ = await offer_many(first, 500)
        assert shed == 0
        acked |= late
        t0 = time.monotonic()
        await first.stop(timeout_s=2.0)
        assert time.monotonic() - t0 < 2.0 + 3.0  # flush stays within its bound
        stats = first.stats()
        assert stats["delivered"] == 300 and stats["spooled"] == 500
        spool = conf.spool_dir / "impressions.jsonl"
        lines = spool.read_bytes().splitlines()
        assert len(lines) == stats["spooled"]
        assert {json.loads(line)["impression_id"] for line in lines} >= late
        after = first.offer(impression())  # stopped: no more acks
        assert isinstance(after, ShedDecision) and after.detail == SHED_STOPPING
        assert first.last_shed_cause == SHED_STOPPING
        assert first.stats()["shed_stopping"] == 1
    finally:
        kafka_broker.resume()
    second = ImpressionLogger(conf, bootstrap=kafka_broker.bootstrap)
    await second.start()
    try:
        assert await second.wait_ready(30)
        assert second.stats()["replayed"] == len(lines)
        assert not spool.exists()
    finally:
        await second.stop()
    ids = await read_topic_ids(kafka_broker.bootstrap, "impressions", timeout_s=30)
    missing = acked - ids
    assert not missing, f"{len(missing)} of {len(acked)} acked impressions lost"


@pytest.mark.timeout(90)
async def test_disabled_mode_never_sheds_and_the_queue_grows_unbounded(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    kafka_broker.pause()
    logger = ImpressionLogger(
        settings(tmp_path, enabled=False, max_depth=10, threshold=5),
        bootstrap=kafka_broker.bootstrap,
    )
    try:
        await logger.start()
        acked, shed, _ = await offer_many(logger, 5_000)
        await asyncio.sleep(0.3)  # a CoDel interval would have passed
        more, shed_more, _ = await offer_many(logger, 100)
        acked |= more
        assert shed == 0 and shed_more == 0 and len(acked) == 5_100
        stats = logger.stats()
        assert stats["queue_depth"] == 5_100 and stats["queue_max_depth"] == float("inf")
    finally:
        kafka_broker.resume()
    try:
        assert await logger.wait_ready(30)
        await until(all_delivered(logger), 60, "delivery after resume")
    finally:
        await logger.stop()
    ids = await read_topic_ids(kafka_broker.bootstrap, "impressions", timeout_s=30)
    assert acked <= ids


# -- no broker needed ------------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_stop_without_a_reachable_kafka_spools_every_acked_impression(
    tmp_path: Path,
) -> None:
    from spikegate.harness.services import free_port

    conf = settings(tmp_path, request_timeout_ms=500)
    logger = ImpressionLogger(conf, bootstrap=f"127.0.0.1:{free_port()}")
    await logger.start()  # returns although nothing listens there
    acked, _, _ = await offer_many(logger, 50)
    assert not await logger.wait_ready(0.5)
    await logger.stop(timeout_s=1.0)
    lines = (conf.spool_dir / "impressions.jsonl").read_bytes().splitlines()
    assert {json.loads(line)["impression_id"] for line in lines} == acked
    assert logger.stats()["spooled"] == 50


@pytest.mark.timeout(30)
async def test_a_second_logger_on_the_same_spool_is_refused(tmp_path: Path) -> None:
    from spikegate.harness.services import free_port

    conf = settings(tmp_path)
    bootstrap = f"127.0.0.1:{free_port()}"
    first = ImpressionLogger(conf, bootstrap=bootstrap)
    await first.start()
    try:
        with pytest.raises(RuntimeError, match="in use by another impression logger"):
            await ImpressionLogger(conf, bootstrap=bootstrap).start()
    finally:
        await first.stop(timeout_s=0.5)


@pytest.mark.timeout(30)
async def test_unreadable_spool_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    from spikegate.harness.services import free_port

    conf = settings(tmp_path)
    conf.spool_dir.mkdir(parents=True)
    good = impression()
    (conf.spool_dir / "impressions.jsonl").write_text(
        json.dumps(good) + "\n{torn line\n" + json.dumps({"no": "id"}) + "\n"
    )
    logger = ImpressionLogger(conf, bootstrap=f"127.0.0.1:{free_port()}")
    await logger.start()
    stats = logger.stats()
    assert stats["spool_corrupt"] == 2 and stats["replay_pending"] == 1
    await logger.stop(timeout_s=0.5)
    lines = (conf.spool_dir / "impressions.jsonl").read_bytes().splitlines()
    assert [json.loads(line)["impression_id"] for line in lines] == [good["impression_id"]]


async def test_stop_without_start_spools_acked_items_and_creates_nothing_when_empty(
    tmp_path: Path,
) -> None:
    idle = ImpressionLogger(settings(tmp_path / "a"), bootstrap="127.0.0.1:9")
    await idle.stop(timeout_s=0.1)
    assert not (tmp_path / "a").exists()
    conf = settings(tmp_path / "b")
    busy = ImpressionLogger(conf, bootstrap="127.0.0.1:9")
    acked, _, _ = await offer_many(busy, 3)
    await busy.stop(timeout_s=0.1)
    lines = (conf.spool_dir / "impressions.jsonl").read_bytes().splitlines()
    assert {json.loads(line)["impression_id"] for line in lines} == acked


def test_offer_rejects_an_impression_without_an_id_or_not_json(tmp_path: Path) -> None:
    logger = ImpressionLogger(settings(tmp_path), bootstrap="127.0.0.1:9")
    with pytest.raises(ValueError, match="impression_id"):
        logger.offer({"request_id": "r"})
    with pytest.raises(ValueError, match="not JSON-serializable"):
        logger.offer({"impression_id": "i", "price": object()})
    assert logger.stats()["accepted"] == 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"max_depth": 0}, "max_depth"),
        ({"workers": 0}, "workers"),
        ({"threshold": 20, "max_depth": 10}, "threshold"),
        ({"target_ms": 100, "interval_ms": 100}, "target_ms"),
        ({"topic": "bad topic!"}, "topic"),
        ({"flush_timeout_s": 0}, "flush_timeout_s"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_settings_name_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ImpressionLoggerSettings(**overrides)


def test_bad_constructor_arguments_name_the_parameter(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bootstrap"):
        ImpressionLogger(settings(tmp_path), bootstrap="")
    with pytest.raises(ValueError, match="settings must be an ImpressionLoggerSettings"):
        ImpressionLogger({"enabled": True}, bootstrap="127.0.0.1:9")  # type: ignore[arg-type]


@pytest.mark.timeout(30)
async def test_stop_ends_the_kafka_retries_even_when_a_cancel_is_swallowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiokafka's producer.stop() can absorb the cancel that stop() sends the connect task;
    the retry loop must end anyway, so stop() keeps its bound (a suite once hung 30 s here)."""
    from spikegate.harness.services import free_port
    from spikegate.target import impressions as mod

    real = mod._stop_producer

    async def swallowing(producer: Any, timeout_s: float, *, abort: bool = False) -> None:
        try:  # where the retry loop spends its time: a cancel lands here and is lost
            await real(producer, timeout_s, abort=abort)
            await asyncio.sleep(0.5)
        except asyncio.CancelledError:
            pass  # as a library that shields its cleanup would

    monkeypatch.setattr(mod, "_stop_producer", swallowing)
    logger = ImpressionLogger(settings(tmp_path), bootstrap=f"127.0.0.1:{free_port()}")
    monkeypatch.setattr(logger, "_backoff_s", lambda attempt: 0.0)
    await logger.start()
    await asyncio.sleep(1.2)  # the connect task is in its retries
    await asyncio.wait_for(logger.stop(timeout_s=0.5), 10)
    assert all(t.done() for t in logger._tasks)
