"""The one value every backpressure primitive answers with.

Routine rejection is a value, not an exception: a primitive returns a `Decision`, and the
server's edge turns a rejected one into 429/503 with `Retry-After` and the
`X-Spikegate-Decision` header.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Reasons, as they appear in the X-Spikegate-Decision header and in metric labels.
ADMITTED = "admitted"
RATE_LIMITED = "rate_limited"
BULKHEAD_FULL = "bulkhead_full"
SHED = "shed"
BREAKER_OPEN = "breaker_open"


@dataclass(frozen=True, slots=True)
class Decision:
    """`admitted` or not, why (`reason`), and when a retry may succeed (`retry_after_s`)."""

    admitted: bool
    reason: str
    retry_after_s: float = 0.0

    @property
    def retry_after_header(self) -> str:
        """`Retry-After` value: whole seconds, at least 1 (RFC 9110 allows no fractions)."""
        return str(max(1, math.ceil(self.retry_after_s)))


ADMIT = Decision(True, ADMITTED)
