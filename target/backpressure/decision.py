"""The one value every backpressure primitive answers with.

Routine rejection is a value, not an exception: a primitive returns a `Decision`, and the
server's edge turns a rejected one into 429/503 with `Retry-After` and the
`X-Spikegate-Decision` header.
"""

from __future__ import annotations

import math
from typing import NamedTuple

# Reasons, as they appear in the X-Spikegate-Decision header and in metric labels: defined in
# the contract that the generator and the checker read them by.
from spikegate.contract.outcomes import ADMITTED, BREAKER_OPEN, BULKHEAD_FULL, RATE_LIMITED, SHED

__all__ = [
    "ADMIT",
    "ADMITTED",
    "BREAKER_OPEN",
    "BULKHEAD_FULL",
    "MAX_RETRY_AFTER_S",
    "RATE_LIMITED",
    "SHED",
    "Decision",
]

# A "never" (math.inf) retry hint is sent as this many seconds: a client should back off hard.
MAX_RETRY_AFTER_S = 3600


class Decision(NamedTuple):
    """`admitted` or not, why (`reason`), and when a retry may succeed (`retry_after_s`).

    A NamedTuple rather than a frozen dataclass: it is immutable all the same, and building
    one costs a quarter as much, which is most of the cost of a rejection under overload.
    """

    admitted: bool
    reason: str
    retry_after_s: float = 0.0
    detail: str = ""
    """Optional sub-reason for counters (e.g. the shedder's "queue_full" vs "codel")."""

    @property
    def retry_after_header(self) -> str:
        """`Retry-After` value: whole seconds, at least 1 (RFC 9110 allows no fractions)."""
        if not math.isfinite(self.retry_after_s):
            return str(MAX_RETRY_AFTER_S)
        return str(min(MAX_RETRY_AFTER_S, max(1, math.ceil(self.retry_after_s))))


ADMIT = Decision(True, ADMITTED)
