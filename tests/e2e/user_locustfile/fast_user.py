"""A FastHttpUser with the less common shapes of a locustfile: a tasks dict, a TaskSet,
catch_response with failure(), a helper class imported from its own folder."""

from helpers import Catalog
from locust import FastHttpUser, TaskSet, constant, task


def browse(user):
    user.client.get("/hello")


class Checkout(TaskSet):
    @task
    def pay(self):
        with self.client.get("/world", name="/world (checked)", catch_response=True) as resp:
            if resp.status_code == 200 and b"world" not in (resp.content or b""):
                resp.failure("no world in the answer")

    @task
    def leave(self):
        self.interrupt()


class Shopper(FastHttpUser):
    wait_time = constant(0.05)
    tasks = {browse: 2, Checkout: 1}  # noqa: RUF012 (as users write it)
    catalog = Catalog()

    @task
    def check_item(self):
        item = self.catalog.pick()
        with self.client.get(f"/item?id={item}", name="/item", catch_response=True) as resp:
            if resp.status_code == 200 and resp.text != f"item {item}":
                resp.failure("wrong item")


class NotAUser:
    pass
