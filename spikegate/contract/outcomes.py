"""Outcomes: the one terminal class of every request, and the decision header it rests on.

    response --(status code, X-Spikegate-Decision)--> classify() --> OUTCOME

The target names each protective decision in a response header; the generator records the
outcome of every request it sent; the checker counts outcomes per second. A service that
sets no decision header is classified by its status code alone (a bare 503 is error_5xx).
Standard library only: the target's backpressure primitives import the decision values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ACCEPTED",
    "ADMITTED",
    "ADMITTED_OUTCOMES",
    "ALL_DECISIONS",
    "BREAKER_OPEN",
    "BREAKER_OPEN_FALLBACK",
    "BULKHEAD_FULL",
    "CLIENT_ERROR",
    "CONN_ERROR",
    "DEADLINE_EXCEEDED",
    "DECISION_HEADER",
    "DESIGNED_REJECTIONS",
    "ERROR",
    "ERROR_5XX",
    "FAILURES",
    "FORBIDDEN",
    "INVALID",
    "NOT_FOUND",
    "NO_BID",
    "NO_DECISION",
    "OK",
    "OUTCOMES",
    "OVERLOADED",
    "RATE_LIMITED",
    "REDIS_UNAVAILABLE",
    "SHED",
    "TIMEOUT",
    "UNAUTHORIZED",
    "OutcomeRules",
    "classify",
]

# --- the decision header and its values ------------------------------------------------------
DECISION_HEADER = "X-Spikegate-Decision"
NO_DECISION = "none"  # how a response without the header is counted in a row's `decisions`

# the backpressure primitives' reasons
ADMITTED = "admitted"
RATE_LIMITED = "rate_limited"  # edge token bucket: 429
BULKHEAD_FULL = "bulkhead_full"  # auction concurrency limit: 503
SHED = "shed"  # impression logger's load shedder: 503
BREAKER_OPEN = "breaker_open"  # a DSP's circuit breaker (inside the auction, not a response)
# the server's own
NO_BID = "no_bid"
BREAKER_OPEN_FALLBACK = "breaker_open_fallback"
REDIS_UNAVAILABLE = "redis_unavailable"
DEADLINE_EXCEEDED = "deadline_exceeded"
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
INVALID = "invalid"
NOT_FOUND = "not_found"
ERROR = "error"
ALL_DECISIONS = (
    ADMITTED,
    RATE_LIMITED,
    BULKHEAD_FULL,
    SHED,
    NO_BID,
    BREAKER_OPEN_FALLBACK,
    REDIS_UNAVAILABLE,
    DEADLINE_EXCEEDED,
    UNAUTHORIZED,
    FORBIDDEN,
    INVALID,
    NOT_FOUND,
    ERROR,
)

# --- outcomes -----------------------------------------------------------------------------------
# ok (200 with a bid), no_bid (204), accepted (202, impressions), rate_limited (429),
# overloaded (503 with a decision header other than shed), shed (503 with decision "shed"),
# error_5xx (5xx without a decision header), client_error (other 4xx), timeout (client
# timeout), conn_error (refused / reset / other I/O).
OK = "ok"
ACCEPTED = "accepted"
OVERLOADED = "overloaded"
ERROR_5XX = "error_5xx"
CLIENT_ERROR = "client_error"
TIMEOUT = "timeout"
CONN_ERROR = "conn_error"
# no_bid, rate_limited and shed are outcomes with the same names as their decisions
OUTCOMES = (
    OK,
    NO_BID,
    ACCEPTED,
    RATE_LIMITED,
    OVERLOADED,
    SHED,
    ERROR_5XX,
    CLIENT_ERROR,
    TIMEOUT,
    CONN_ERROR,
)
ADMITTED_OUTCOMES = frozenset({OK, NO_BID, ACCEPTED})
DESIGNED_REJECTIONS = frozenset({RATE_LIMITED, OVERLOADED, SHED})
FAILURES = frozenset({ERROR_5XX, CLIENT_ERROR, TIMEOUT, CONN_ERROR})


def classify(status: int, decision: str | None, *, timed_out: bool = False) -> str:
    """The one OUTCOME of a response: status code plus X-Spikegate-Decision (may be None).

    status <= 0 means no response (timeout or connection error). A service without the
    decision header is classified by status alone (a bare 503 is then error_5xx)."""
    if status <= 0:
        return TIMEOUT if timed_out else CONN_ERROR
    if status == 204:
        return NO_BID
    if status == 202:
        return ACCEPTED
    if 200 <= status < 300:
        return OK
    if status == 429:
        return RATE_LIMITED
    if status == 503 and decision:
        return SHED if decision == SHED else OVERLOADED
    if status >= 500:
        return ERROR_5XX
    return CLIENT_ERROR  # 4xx, and 1xx/3xx a client cannot use


# --- a user's service: its own rules ----------------------------------------------------------
_CLASSES = {"1xx": 1, "2xx": 2, "3xx": 3, "4xx": 4, "5xx": 5}


def _status_set(items: Sequence[int | str], where: str) -> frozenset[int]:
    """[200, "2xx", 204] -> the status codes they name (a class names its hundred codes)."""
    out: set[int] = set()
    for item in items:
        if isinstance(item, str) and item.lower() in _CLASSES:
            base = _CLASSES[item.lower()] * 100
            out.update(range(base, base + 100))
        elif isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599:
            out.add(item)
        else:
            raise ValueError(
                f'{where}: {item!r} is not a status code (100..599) nor a class like "2xx"'
            )
    return frozenset(out)


@dataclass(frozen=True)
class OutcomeRules:
    """How a service that sets no X-Spikegate-Decision is classified (scenario [outcomes]).

    admitted statuses -> ok; designed rejections -> rate_limited (429) or overloaded (any
    other, `shed` when the decision header says so); when `decision_header` is set, a
    rejection status without that header is not designed (error_5xx / client_error);
    everything else as classify() does for the reference target."""

    admitted: Sequence[int | str] = ("2xx",)
    rejected: Sequence[int | str] = (429, 503)
    decision_header: str | None = None
    _admitted: frozenset[int] = field(init=False, repr=False, compare=False)
    _rejected: frozenset[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        admitted = _status_set(self.admitted, "outcomes.admitted")
        rejected = _status_set(self.rejected, "outcomes.rejected")
        both = sorted(admitted & rejected)
        if both:
            raise ValueError(
                f"outcomes: status {both[0]} is both admitted and rejected: list it in one"
            )
        object.__setattr__(self, "_admitted", admitted)
        object.__setattr__(self, "_rejected", rejected)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> OutcomeRules:
        return cls(
            admitted=tuple(data.get("admitted", ("2xx",))),
            rejected=tuple(data.get("rejected", (429, 503))),
            decision_header=data.get("decision_header"),
        )

    @classmethod
    def from_json(cls, text: str) -> OutcomeRules:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("the outcome rules must be a JSON object")
        return cls.from_mapping(data)

    def to_json(self) -> str:
        return json.dumps(
            {
                "admitted": list(self.admitted),
                "rejected": list(self.rejected),
                "decision_header": self.decision_header,
            },
            sort_keys=True,
        )

    def is_rejection(self, status: int) -> bool:
        return status in self._rejected

    def classify(self, status: int, decision: str | None, *, timed_out: bool = False) -> str:
        """The one OUTCOME of a response under these rules (`decision`: the header's value,
        None when absent or when no decision header is configured)."""
        if status <= 0:
            return TIMEOUT if timed_out else CONN_ERROR
        if status in self._admitted:
            return OK
        if status in self._rejected and (self.decision_header is None or decision):
            if status == 429:
                return RATE_LIMITED
            return SHED if decision == SHED else OVERLOADED
        if status >= 500:
            return ERROR_5XX
        return CLIENT_ERROR
