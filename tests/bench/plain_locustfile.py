"""A plain FastHttpUser for tests/bench/generator.py: the same POST /bid, nothing else.

Closed loop, no wait, no recorder, Locust's own stats only; timeouts like our user's.
"""

from __future__ import annotations

from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser

BODY = (
    b'{"id":"r-1","imp":[{"id":"1","bidfloor":0.1}],"site":{"publisher":{"id":"pub-1"}},'
    b'"user":{"id":"u-1"},"tmax":150}'
)
HEADERS = {"X-Api-Key": "key-pub-1", "Content-Type": "application/json"}


class PlainUser(FastHttpUser):
    wait_time = constant(0)
    network_timeout = 2.0
    connection_timeout = 2.0

    @task
    def bid(self) -> None:
        self.client.post("/bid", data=BODY, headers=HEADERS, name="/bid")  # type: ignore[arg-type]
