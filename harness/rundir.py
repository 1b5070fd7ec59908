"""The run directory's format, as the harness imports it: see spikegate.contract.rundir.

Re-exports only; the format, the outcome names and the environment names are defined once,
in the contract package.
"""

from __future__ import annotations

from spikegate.contract.env import RUN_DIR_ENV, T0_ENV
from spikegate.contract.outcomes import (
    ADMITTED_OUTCOMES,
    DESIGNED_REJECTIONS,
    FAILURES,
    OUTCOMES,
)
from spikegate.contract.rundir import (
    ACKED_DIR,
    EVENTS_FILE,
    IMPRESSIONS_FILE,
    LOGS_DIR,
    META_FILE,
    REQUESTS_FILE,
    SAMPLES_FILE,
    SCENARIO_FILE,
    JsonlWriter,
    read_jsonl,
)

__all__ = [
    "ACKED_DIR",
    "ADMITTED_OUTCOMES",
    "DESIGNED_REJECTIONS",
    "EVENTS_FILE",
    "FAILURES",
    "IMPRESSIONS_FILE",
    "LOGS_DIR",
    "META_FILE",
    "OUTCOMES",
    "REQUESTS_FILE",
    "RUN_DIR_ENV",
    "SAMPLES_FILE",
    "SCENARIO_FILE",
    "T0_ENV",
    "JsonlWriter",
    "read_jsonl",
]
