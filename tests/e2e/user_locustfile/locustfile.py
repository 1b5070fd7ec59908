"""A plain locustfile in the style of Locust's documentation (its quick-start shape).

Used unchanged by tests/e2e/test_user_locustfile.py: an HttpUser that logs in once, then
runs two tasks, one weighted 3 (the intended arrival rate is not Locust's business here).
"""

import time

from locust import HttpUser, between, task


class ShopVisitor(HttpUser):
    wait_time = between(1, 5)

    def on_start(self):
        self.client.post("/login", json={"username": "demo", "password": "secret"})

    @task
    def hello_world(self):
        self.client.get("/hello")
        self.client.get("/world")

    @task(3)
    def view_items(self):
        for item_id in range(5):
            self.client.get(f"/item?id={item_id}", name="/item")
            time.sleep(0.2)
