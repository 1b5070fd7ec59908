"""The request mix (no locust): publishers with their keys, bid bodies, impression notices.

Bid bodies are spliced from byte templates built once per publisher and floor: only the
request id and the user id are formatted per bid (no json.dumps, no float formatting, no
str.encode on the hot path). Every random choice
comes from one `random.Random` seeded from (seed, process index), so the mix is the same
for the same seed; only impression ids are uuid4 (unique across runs, as the downstream
loss accounting counts by id).
"""

from __future__ import annotations

import json
import os
import random
import uuid
from collections.abc import Mapping
from typing import Any

from spikegate.contract.load import LoadSection

__all__ = ["FLOORS", "Traffic", "default_publishers"]

FLOORS = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0)
_N_FLOORS = len(FLOORS)
USER_POOL = 50_000
# {"id":"<prefix><n>","imp":[{"id":"1","bidfloor":<floor>}],"site":{"publisher":{"id":<pub>}},
#  "user":{"id":"u-<user>"},"tmax":<tmax_ms>}
_BID_MIDDLE = '","imp":[{"id":"1","bidfloor":%s}],"site":{"publisher":{"id":%s}},"user":{"id":"u-'
_BID_TAIL = '"},"tmax":%d}'


def default_publishers(count: int) -> dict[str, str]:
    """pub-1..pub-N with keys key-pub-1..key-pub-N (the scenario model's convention)."""
    return {f"pub-{i}": f"key-pub-{i}" for i in range(1, count + 1)}


class Traffic:
    """One process's request mix over `publishers` (id -> API key)."""

    def __init__(
        self,
        params: LoadSection,
        publishers: Mapping[str, str],
        *,
        seed: int = 0,
        index: int = 0,
    ) -> None:
        if not publishers:
            raise ValueError("publishers must map at least one publisher id to its API key")
        self.params = params
        self.rng = random.Random(f"spikegate-traffic:{seed}:{index}")
        self.ids = sorted(publishers, key=_natural)
        self.hot = params.hot_publisher if params.hot_publisher in publishers else self.ids[0]
        self.cold = [p for p in self.ids if p != self.hot] or [self.hot]
        self.headers = {
            pid: {"X-Api-Key": key, "Content-Type": "application/json"}
            for pid, key in publishers.items()
        }
        self._prefix = f"r{index}-{os.getpid()}-"
        self._n = 0
        self._head = ('{"id":"' + self._prefix).encode()
        self._tail = (_BID_TAIL % params.tmax_ms).encode()
        # publisher -> one middle part per floor (publisher ids JSON-escaped once)
        self._middles = {
            pid: [(_BID_MIDDLE % (floor, json.dumps(pid))).encode() for floor in FLOORS]
            for pid in publishers
        }

    def publisher(self, hot_share: float) -> str:
        """A publisher: the hot one with probability hot_share (then the rest uniformly),
        or uniformly among all when hot_share is 0."""
        rng = self.rng.random
        if hot_share <= 0.0:
            return self.ids[int(rng() * len(self.ids))]
        if rng() < hot_share:
            return self.hot
        return self.cold[int(rng() * len(self.cold))]

    def bid_body(self, publisher: str) -> bytes:
        """A bid request for `publisher`: fresh id, random floor (FLOORS) and user."""
        self._n += 1
        rng = self.rng.random
        middle = self._middles[publisher][int(rng() * _N_FLOORS)]
        user = int(rng() * USER_POOL)
        return b"%b%d%b%d%b" % (self._head, self._n, middle, user, self._tail)

    def wants_impression(self) -> bool:
        """Whether a won bid is followed by an impression notice (impression_rate)."""
        return self.rng.random() < self.params.impression_rate

    @staticmethod
    def impression(response_body: bytes | str | None, publisher: str) -> tuple[str, bytes] | None:
        """(impression_id, body) for the win in a 200 bid response; None if it holds no bid."""
        try:
            data: Any = json.loads(response_body or b"")
            seat = data["seatbid"][0]
            bid = seat["bid"][0]
            impression_id = str(uuid.uuid4())
            notice = {
                "impression_id": impression_id,
                "request_id": str(data["id"]),
                "bid_id": str(bid["id"]),
                "publisher_id": publisher,
                "dsp": str(seat["seat"]),
                "price": float(bid["price"]),
            }
        except (ValueError, KeyError, IndexError, TypeError):
            return None
        return impression_id, json.dumps(notice, separators=(",", ":")).encode()


def _natural(pid: str) -> tuple[str, int]:
    head, _, tail = pid.rpartition("-")
    return (head, int(tail)) if tail.isdigit() else (pid, 0)
