"""toxiproxy-python, used exactly as its README shows, works against the server under test."""

from __future__ import annotations

import urllib.parse

import pytest
from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


@pytest.fixture
def toxiproxy_client(server, api):
    """The library keeps host/port in class attributes: point them at us, restore after."""
    saved = (APIConsumer.host, APIConsumer.port)
    parsed = urllib.parse.urlsplit(server.url)
    client = Toxiproxy()
    client.update_api_consumer(parsed.hostname, parsed.port)
    try:
        yield client
    finally:
        APIConsumer.host, APIConsumer.port = saved


def test_readme_workflow(toxiproxy_client, echo_server, net):
    server = toxiproxy_client
    assert server.running()
    assert server.version() is not None

    proxy = server.create(upstream=echo_server.address, name="readme", listen="127.0.0.1:0")
    assert proxy.name == "readme" and proxy.enabled is True
    assert sorted(server.proxies()) == ["readme"]
    assert server.get_proxy("readme").listen == proxy.listen

    proxy.add_toxic(type="latency", attributes={"latency": 100})
    assert list(proxy.toxics()) == ["latency_downstream"]
    assert proxy.get_toxic("latency_downstream").attributes == {"latency": 100, "jitter": 0}
    with net.connect(proxy.listen) as sock:
        sock.sendall(b"x")
        assert net.recv_exactly(sock, 1) == b"x"
    proxy.destroy_toxic("latency_downstream")
    assert proxy.toxics() == {}

    proxy.disable()
    assert not net.port_open(proxy.listen)
    proxy.enable()
    assert net.port_open(proxy.listen)
    with proxy.down():
        assert not net.port_open(proxy.listen)
    assert net.port_open(proxy.listen)

    proxy.add_toxic(type="bandwidth", stream="upstream", attributes={"rate": 1})
    proxy.disable()
    assert server.reset()
    assert server.get_proxy("readme").enabled is True
    assert proxy.toxics() == {}

    assert proxy.destroy()
    assert server.proxies() == {}


def test_readme_populate_and_destroy_all(toxiproxy_client, echo_server):
    server = toxiproxy_client
    server.populate(
        [
            {"name": "one", "upstream": echo_server.address, "listen": "127.0.0.1:0"},
            {"name": "two", "upstream": echo_server.address, "listen": "127.0.0.1:0"},
        ]
    )
    assert sorted(server.proxies()) == ["one", "two"]
    server.destroy_all()
    assert server.proxies() == {}
