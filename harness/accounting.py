"""Impression loss accounting: the ids the generator saw acknowledged versus the ids in Kafka.

    acked/<pid>.txt (one id per line, from every Locust process) ──┐
                                                                    ├─> ImpressionAccounting
    Kafka topic, every partition from the beginning (read back) ────┘    (impressions.json)

Delivery is at-least-once, so the topic may hold an id more than once (counted as
duplicates, never as loss); an acked id that is absent is a loss. Before reading back, the
target's queue is drained: `wait_drained` polls its /metrics until nothing is queued or in
flight, within a bound.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spikegate.contract.rundir import ACKED_DIR
from spikegate.harness.kafka_util import read_topic_values
from spikegate.harness.sampler import parse_metrics, scrape

__all__ = ["account_impressions", "read_acked", "unavailable", "wait_drained"]

MISSING_SAMPLE = 100


def read_acked(run_dir: Path) -> set[str]:
    """Every id in acked/*.txt (blank lines ignored)."""
    ids: set[str] = set()
    folder = run_dir / ACKED_DIR
    if folder.is_dir():
        for path in sorted(folder.glob("*.txt")):
            text = path.read_text(encoding="utf-8", errors="replace")
            ids.update(line.strip() for line in text.splitlines() if line.strip())
    return ids


def unavailable(acked: int, reason: str) -> dict[str, Any]:
    """An accounting that could not be completed, saying why."""
    return {
        "acked": acked,
        "found": 0,
        "missing": 0,
        "missing_sample": [],
        "duplicates_in_topic": 0,
        "read_back_s": 0.0,
        "complete": False,
        "error": reason,
    }


def account_impressions(
    run_dir: Path, bootstrap: str, topic: str, *, timeout_s: float = 20.0
) -> dict[str, Any]:
    """Read `topic` back from `bootstrap` and compare with the acked ids (never raises)."""
    acked = read_acked(run_dir)
    started = time.monotonic()
    try:
        values = asyncio.run(read_topic_values(bootstrap, topic, timeout_s=timeout_s))
    except TimeoutError as exc:
        if not acked and "not found" in str(exc):
            values = []  # no impression was ever produced: nothing to read, nothing lost
        else:
            result = unavailable(len(acked), f"reading {topic!r} back from {bootstrap}: {exc}")
            result["read_back_s"] = round(time.monotonic() - started, 3)
            return result
    except Exception as exc:  # any client failure: record it, the run itself is not broken
        result = unavailable(len(acked), f"reading {topic!r} back from {bootstrap}: {exc!r}")
        result["read_back_s"] = round(time.monotonic() - started, 3)
        return result
    counts = Counter(
        str(v["impression_id"]) for v in values if isinstance(v, dict) and "impression_id" in v
    )
    missing = sorted(acked - counts.keys())
    return {
        "acked": len(acked),
        "found": len(acked) - len(missing),
        "missing": len(missing),
        "missing_sample": missing[:MISSING_SAMPLE],
        "duplicates_in_topic": sum(n - 1 for n in counts.values() if n > 1),
        "read_back_s": round(time.monotonic() - started, 3),
        "complete": True,
        "error": None,
    }


def wait_drained(
    metrics_url: str,
    *,
    timeout_s: float = 10.0,
    should_stop: Callable[[], bool] = lambda: False,
    poll_s: float = 0.2,
) -> bool:
    """Poll the target until its impression queue is empty and nothing is in flight."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not should_stop():
        try:
            status, body = scrape(metrics_url)
            stats = parse_metrics(body).get("impressions", {}) if status == 200 else {}
        except (OSError, ValueError):
            stats = {}
        if stats and not stats.get("queue_depth") and not stats.get("inflight"):
            return True
        time.sleep(poll_s)
    return False
