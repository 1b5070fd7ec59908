"""Integration fixtures: real redis-server, the Tansu broker and DSP bidders on 127.0.0.1.

Each fixture starts its child on an ephemeral port, waits for readiness with a bound, and
stops (SIGTERM, then SIGKILL) and reaps it after the test, pass or fail. Logs go to
`log_dir` (a per-test tmp dir), whose path pytest shows on failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from spikegate.harness.services import DspBidders, KafkaBroker, RedisServer


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """Per-test directory for the children's logs."""
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
def redis_server(log_dir: Path) -> Iterator[RedisServer]:
    """A fresh redis-server (persistence off); `.url` is redis://127.0.0.1:P/0."""
    with RedisServer(log_dir) as server:
        yield server  # type: ignore[misc]


@pytest.fixture
def kafka_broker(log_dir: Path) -> Iterator[KafkaBroker]:
    """A fresh Tansu broker (memory storage, empty log); `.bootstrap` is 127.0.0.1:P."""
    with KafkaBroker(log_dir) as broker:
        yield broker  # type: ignore[misc]


@pytest.fixture
def dsp_bidders(log_dir: Path) -> Iterator[DspBidders]:
    """Three simulated bidders dsp-1..dsp-3 (seed 0) in one process; `.urls`, `.names`."""
    with DspBidders(log_dir, count=3, seed=0) as bidders:
        yield bidders  # type: ignore[misc]
