"""Shoppers of the inventory service: mostly browsing items, sometimes ordering one.

A plain Locust file, as you would write it for `locust -f locustfile.py`. Spikegate runs it
with its own arrival schedule: each intended arrival runs one task of `Shopper`, picked by
the task weights, so `wait_time` only matters when you run it with plain Locust.
"""

from __future__ import annotations

import random

from locust import FastHttpUser, between, task

ITEMS = 1000  # the service seeds items 1..1000


class Shopper(FastHttpUser):
    wait_time = between(0.5, 2.0)

    @task(4)
    def view_item(self) -> None:
        # name= groups the per-id URLs into one row of Locust's statistics
        self.client.get(f"/items/{random.randint(1, ITEMS)}", name="/items/[id]")

    @task(1)
    def order(self) -> None:
        body = {"item_id": random.randint(1, ITEMS), "qty": random.randint(1, 3)}
        self.client.post("/orders", json=body, name="/orders")
