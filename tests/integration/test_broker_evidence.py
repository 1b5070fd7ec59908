"""BrokerRecords against a real Tansu broker: counts, the proxy bypass, failures bounded.

The broker advertises the chaos proxy's address (as in a run); BrokerRecords reads the
broker's own listener, so a disabled proxy takes nothing from it, while a normal client
bootstrapping to the same listener is sent to the proxy.

The producers here batch (send all, then await), as the target's impression logger does:
Tansu's ListOffsets then reports the last batch's first offset + 1, not the log end, and
the counts below only come out right because BrokerRecords reads where the last batch ends.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spikegate.chaos.client import ChaosClient
from spikegate.harness.broker_evidence import BrokerRecords
from spikegate.harness.kafka_util import create_topic
from spikegate.harness.services import KafkaBroker, free_port
from spikegate.harness.stack import ChaosServerProcess

pytestmark = [pytest.mark.integration]


async def produce(bootstrap: str, topic: str, n: int, *, prefix: str = "r") -> None:
    """`n` keyed records (spread over the partitions), acks=all, each acknowledged."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        request_timeout_ms=10_000,
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, f"v-{i}".encode(), key=f"{prefix}-{i}".encode())
            for i in range(n)
        ]
        for fut in futures:
            await fut
    finally:
        await producer.stop()


@pytest.fixture
def proxied_broker(log_dir: Path) -> Iterator[tuple[KafkaBroker, ChaosClient, str]]:
    """A Tansu broker that advertises a chaos proxy in front of it, as Stack.up() does:
    (broker, chaos client, proxy listen address); the proxy is named "kafka"."""
    with ChaosServerProcess(log_dir) as chaos_proc:
        chaos = ChaosClient(chaos_proc.url)
        port = free_port()
        listen = chaos.create_proxy("kafka", f"127.0.0.1:{port}").listen
        with KafkaBroker(log_dir, port=port, advertised=listen) as broker:
            yield broker, chaos, listen  # type: ignore[misc]


@pytest.mark.timeout(60)
async def test_counts_every_record_over_all_partitions(kafka_broker: KafkaBroker) -> None:
    await produce(kafka_broker.bootstrap, "impressions", 37)  # auto-created: 4 partitions
    with BrokerRecords(kafka_broker.bootstrap, "impressions", timeout_s=2.0) as reader:
        assert reader() == {"broker_records": 37}
        assert reader.partitions == [0, 1, 2, 3]
        await produce(kafka_broker.bootstrap, "impressions", 5, prefix="more")
        assert reader() == {"broker_records": 42}  # same connection, fresh offsets


@pytest.mark.timeout(60)
async def test_a_missing_topic_is_zero_and_is_not_created(kafka_broker: KafkaBroker) -> None:
    with BrokerRecords(kafka_broker.bootstrap, "later", timeout_s=2.0) as reader:
        assert reader() == {"broker_records": 0}
        assert reader() == {"broker_records": 0}
        assert reader.partitions is None
        # Had the reader auto-created the topic, it would have 4 partitions, not 2.
        await create_topic(kafka_broker.bootstrap, "later", partitions=2)
        assert reader() == {"broker_records": 0}
        assert reader.partitions == [0, 1]
        await produce(kafka_broker.bootstrap, "later", 9)
        assert reader() == {"broker_records": 9}


@pytest.mark.timeout(90)
async def test_reads_the_real_listener_while_the_proxy_is_down(
    proxied_broker: tuple[KafkaBroker, ChaosClient, str],
) -> None:
    from aiokafka import AIOKafkaConsumer

    broker, chaos, listen = proxied_broker
    await produce(listen, "impressions", 25)  # through the proxy, as the target does
    reader = BrokerRecords(broker.bootstrap, "impressions", timeout_s=1.0)
    try:
        assert reader() == {"broker_records": 25}
        chaos.set_enabled("kafka", False)
        # A normal client bootstrapping to the same real listener is sent to the proxy
        # (the advertised address) and cannot read anything now.
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, request_timeout_ms=1500)
        await consumer.start()
        try:
            with pytest.raises(Exception):  # noqa: B017 - any failure to reach it will do
                from aiokafka import TopicPartition

                await consumer.end_offsets([TopicPartition("impressions", 0)])
        finally:
            await consumer.stop()
        # The reader, on its own connection and on a fresh one, still counts.
        assert reader() == {"broker_records": 25}
        reader.close()
        assert reader() == {"broker_records": 25}
        chaos.set_enabled("kafka", True)
        await produce(listen, "impressions", 3, prefix="after")
        assert reader() == {"broker_records": 28}
    finally:
        reader.close()


@pytest.mark.timeout(60)
async def test_a_paused_broker_fails_within_the_bound_then_recovers(
    kafka_broker: KafkaBroker,
) -> None:
    await produce(kafka_broker.bootstrap, "t", 11)
    reader = BrokerRecords(kafka_broker.bootstrap, "t", timeout_s=0.3)
    try:
        assert reader() == {"broker_records": 11}
        kafka_broker.pause()
        try:
            for _ in range(2):  # the open connection, then a fresh one
                started = time.monotonic()
                with pytest.raises(OSError, match=r"no answer within 0\.3 s"):
                    reader()
                assert time.monotonic() - started < 1.0
        finally:
            kafka_broker.resume()
        assert reader() == {"broker_records": 11}  # the late answers are never misread
    finally:
        reader.close()


@pytest.mark.timeout(60)
async def test_a_stopped_broker_raises_oserror_naming_it(kafka_broker: KafkaBroker) -> None:
    await produce(kafka_broker.bootstrap, "t", 4)
    reader = BrokerRecords(kafka_broker.bootstrap, "t", timeout_s=0.3)
    try:
        assert reader() == {"broker_records": 4}
        kafka_broker.stop(timeout_s=1.0)
        for _ in range(2):  # the dead connection, then a refused one
            started = time.monotonic()
            with pytest.raises(OSError, match=f"broker {kafka_broker.bootstrap}") as info:
                reader()
            assert "'t'" in str(info.value)
            assert time.monotonic() - started < 1.0
    finally:
        reader.close()


def test_nothing_listening_raises_oserror_not_a_hang() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(OSError, match=f"broker 127.0.0.1:{port}"):
        BrokerRecords(f"127.0.0.1:{port}", "impressions", timeout_s=0.3)()
    assert time.monotonic() - started < 1.0


def test_rejects_a_bad_address_or_bound() -> None:
    with pytest.raises(ValueError, match="host:port"):
        BrokerRecords("localhost", "t")
    with pytest.raises(ValueError, match="timeout_s"):
        BrokerRecords("127.0.0.1:9092", "t", timeout_s=0)
    with pytest.raises(ValueError, match="topic"):
        BrokerRecords("127.0.0.1:9092", "")
