"""The LoadTestShape adapter: a fixed user count until the run's end, then None.

The rate is not expressed by users: the open model (adserver.py) sends each process's share
of the arrival schedule whatever the user count, so a spike lands at its instant and dwell
times under a second work. The shape only keeps one user per process alive (max_inflight
per process in the closed benchmark mode) and ends the run: at t0 + duration_s, or a little
later until every process has recorded the outcome of its last request (bounded).

Entry files (`shape_<name>.py`) subclass SpikegateShape with `shape_name`; Locust uses the
first concrete shape class it finds, so this base is abstract.
"""

from __future__ import annotations

import time
from typing import ClassVar

from locust import LoadTestShape

from spikegate.locustfiles.plugin import runtime

__all__ = ["SpikegateShape"]

_SPAWN_RATE = 50.0  # per second; Locust warns above 100 per worker


class SpikegateShape(LoadTestShape):
    abstract: ClassVar[bool] = True
    shape_name: ClassVar[str] = "steady"

    def tick(self) -> tuple[int, float] | None:
        rt = runtime()
        users = rt.users()
        # Spawn every user at once (Locust spaces spawns 1/rate apart, per worker).
        keep = (users, float(max(users, _SPAWN_RATE)))
        if not rt.started or time.time() < rt.end:
            return keep
        if rt.all_done() or time.time() > rt.end + rt.drain_cap_s():
            return None
        return keep
