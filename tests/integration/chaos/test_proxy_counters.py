"""The proxies' own counters on the real embedded chaos server, with real connections, and
the harness reading them once a tick (ProxyCounters) as the sampler does.

    net.connect ──> proxy "pc" (the chaos server, a subprocess) ──> echo server
                        │
    ProxyCounters(url)() / Sampler(None, evidence=[...]).sample(t)  <── GET /metrics

Every wait is a bounded loop on a condition, never a timed window.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from spikegate.harness.proxy_evidence import ProxyCounters
from spikegate.harness.sampler import NO_METRICS_PATH, Sampler

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def _connections(api, proxy: str) -> tuple[float, float]:
    """(accepted, open) of one proxy, from the server's own exposition."""
    values = {}
    for family in text_string_to_metric_families(api.get("/metrics").body.decode()):
        for sample in family.samples:
            if sample.labels.get("proxy") == proxy and sample.name.startswith(
                "spikegate_proxy_connections"
            ):
                values[sample.name] = sample.value
    return (
        values["spikegate_proxy_connections_accepted_total"],
        values["spikegate_proxy_connections_open"],
    )


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


def test_the_server_counts_accepted_and_open_client_connections(api, echo_server, net, embedded):
    listen = api.create_proxy("pc", echo_server.address)["listen"]
    assert _connections(api, "pc") == (0, 0)
    socks = [net.connect(listen) for _ in range(3)]
    try:
        for sock in socks:  # a round trip each: the proxy has accepted it
            sock.sendall(b"hi")
            assert net.recv_exactly(sock, 2) == b"hi"
        assert _connections(api, "pc") == (3, 3)
        for sock in socks[:2]:
            sock.close()
        _until(lambda: _connections(api, "pc")[1] == 1, "two closed connections forgotten")
        assert _connections(api, "pc")[0] == 3  # accepted never goes down
    finally:
        for sock in socks:
            sock.close()
    _until(lambda: _connections(api, "pc") == (3, 0), "every connection closed")


def test_a_recreated_proxy_counts_its_connections_from_zero(api, echo_server, net, embedded):
    listen = api.create_proxy("pc", echo_server.address)["listen"]
    with net.connect(listen) as sock:
        sock.sendall(b"x")
        assert net.recv_exactly(sock, 1) == b"x"
    assert _connections(api, "pc")[0] == 1
    assert api.delete("/proxies/pc").status == 204
    api.create_proxy("pc", echo_server.address)
    assert _connections(api, "pc") == (0, 0)


def test_proxy_counters_give_bytes_and_connections_per_tick(
    api, server, echo_server, net, embedded
):
    """The harness's evidence source against the real server: one tick before any traffic,
    one after a real round trip, one idle, one after the proxy was re-created."""
    listen = api.create_proxy("pc", echo_server.address)["listen"]
    source = ProxyCounters(server.url, timeout_s=5.0)
    first = source()
    assert first["proxy_bytes"]["pc"] == {"received": 0, "sent": 0}
    assert first["proxy_connections"]["pc"] == {"accepted": 0, "open": 0}
    sock = net.connect(listen)
    try:
        sock.sendall(b"a" * 1000)
        assert len(net.recv_exactly(sock, 1000)) == 1000
        busy = source()
        assert busy["proxy_bytes"]["pc"] == {"received": 1000, "sent": 1000}
        assert busy["proxy_connections"]["pc"] == {"accepted": 1, "open": 1}
        assert busy["proxy_outstanding_max"]["pc"] == 1  # one request, answered since
        idle = source()
        assert idle["proxy_bytes"]["pc"] == {"received": 0, "sent": 0}
        assert idle["proxy_connections"]["pc"] == {"accepted": 0, "open": 1}
    finally:
        sock.close()
    assert api.delete("/proxies/pc").status == 204
    listen = api.create_proxy("pc", echo_server.address)["listen"]
    with net.connect(listen) as sock:
        sock.sendall(b"b" * 10)
        assert net.recv_exactly(sock, 10) == b"b" * 10
    again = source()  # counters went backwards: this proxy starts over
    assert again["proxy_bytes"]["pc"] == {"received": 10, "sent": 10}
    assert again["proxy_connections"]["pc"]["accepted"] == 1


def test_a_service_without_metrics_gets_the_proxy_evidence_every_tick(
    api, server, echo_server, net, embedded
):
    listen = api.create_proxy("pc", echo_server.address)["listen"]
    sampler = Sampler(None, on_row=lambda _r: None, evidence=[ProxyCounters(server.url)])
    sampler.sample(0.0)
    with net.connect(listen) as sock:
        sock.sendall(b"c" * 100)
        assert net.recv_exactly(sock, 100) == b"c" * 100
    row = sampler.sample(1.0)
    assert row["ok"] is False and row["scraped"] is False and row["error"] == NO_METRICS_PATH
    assert row["proxy_bytes"]["pc"] == {"received": 100, "sent": 100}
    assert row["proxy_connections"]["pc"]["accepted"] == 1
    assert "evidence_errors" not in row
