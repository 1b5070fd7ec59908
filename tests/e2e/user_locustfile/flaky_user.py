"""A locustfile whose code raises: half of its tasks after their request, and a user class
that is rarely defined (a wait_time of its own is ignored in the open model)."""

from locust import HttpUser, constant, task


class Flaky(HttpUser):
    wait_time = constant(0.02)

    @task
    def fine(self):
        self.client.get("/hello")

    @task
    def broken(self):
        self.client.get("/world")
        raise RuntimeError("the locustfile's own bug")
