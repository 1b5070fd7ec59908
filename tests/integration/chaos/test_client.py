"""ChaosClient against the real embedded server: round trips and error translation."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from toxiproxy.api import APIConsumer

from spikegate.chaos.client import ChaosClient, ProxyInfo, ToxicInfo
from spikegate.chaos.errors import (
    BadResponse,
    ChaosAPIError,
    ChaosError,
    ChaosUnavailable,
    Conflict,
    Forbidden,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    ProxyNotFound,
    ServerError,
    ToxicNotFound,
    error_for_status,
)
from spikegate.harness.services import free_port

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[3]


def round_trip(listen: str, payload: bytes = b"ping") -> bytes:
    host, _, port = listen.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=3) as sock:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


@pytest.fixture
def server_url(tmp_path: Path, start_chaos_server: Any) -> Iterator[str]:
    with start_chaos_server(tmp_path / "chaos-server.log") as url:
        yield url


@pytest.fixture
def client(server_url: str) -> ChaosClient:
    return ChaosClient(server_url, timeout_s=3.0)


# -- round trips -------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_version_and_an_empty_clean_server(client: ChaosClient) -> None:
    assert client.version() == "2.12.0"
    assert client.wait_ready(5) == "2.12.0"
    assert client.proxies() == {}
    assert client.is_clean()


@pytest.mark.timeout(30)
def test_created_proxy_reports_its_real_port_and_carries_traffic(
    client: ChaosClient, upstream: str
) -> None:
    info = client.create_proxy("redis", upstream)
    assert isinstance(info, ProxyInfo)
    assert info.name == "redis" and info.upstream == upstream and info.enabled
    assert info.host == "127.0.0.1" and info.port > 0 and info.toxics == ()
    assert client.get_proxy("redis") == info
    assert client.proxies() == {"redis": info}
    assert round_trip(info.listen, b"hello") == b"hello"


@pytest.mark.timeout(30)
def test_toxic_add_update_list_remove_round_trip(client: ChaosClient, upstream: str) -> None:
    client.create_proxy("dsp-1", upstream)
    added = client.add_toxic("dsp-1", "latency", attributes={"latency": 50})
    assert added == ToxicInfo(
        "latency_downstream", "latency", "downstream", 1.0, {"latency": 50, "jitter": 0}
    )
    assert not client.is_clean()
    up = client.add_toxic("dsp-1", "bandwidth", name="bw", stream="upstream", toxicity=0.5,
                          attributes={"rate": 100})  # fmt: skip
    assert up.stream == "upstream" and up.toxicity == 0.5
    updated = client.update_toxic("dsp-1", "latency_downstream", attributes={"jitter": 5})
    assert updated.attributes == {"latency": 50, "jitter": 5}  # merged, latency kept
    assert client.update_toxic("dsp-1", "bw", toxicity=0.25).toxicity == 0.25
    assert client.get_toxic("dsp-1", "bw").attributes == {"rate": 100}
    assert [t.name for t in client.toxics("dsp-1")] == ["bw", "latency_downstream"]
    assert [t.name for t in client.get_proxy("dsp-1").toxics] == ["bw", "latency_downstream"]
    client.remove_toxic("dsp-1", "bw")
    client.remove_toxic("dsp-1", "latency_downstream")
    assert client.toxics("dsp-1") == []
    assert client.is_clean()


@pytest.mark.timeout(30)
def test_disable_refuses_connections_and_enable_restores_the_same_port(
    client: ChaosClient, upstream: str
) -> None:
    info = client.create_proxy("kafka", upstream)
    down = client.set_enabled("kafka", False)
    assert down.enabled is False and down.listen == info.listen
    assert not client.is_clean()
    with pytest.raises(OSError):
        round_trip(info.listen)
    up = client.set_enabled("kafka", True)
    assert up.enabled and up.listen == info.listen
    assert round_trip(info.listen, b"back") == b"back"
    assert client.is_clean()


@pytest.mark.timeout(30)
def test_update_proxy_changes_upstream(client: ChaosClient, upstream: str) -> None:
    client.create_proxy("p", "127.0.0.1:1")
    info = client.update_proxy("p", upstream=upstream)
    assert info.upstream == upstream
    assert round_trip(info.listen, b"moved") == b"moved"


@pytest.mark.timeout(30)
def test_populate_creates_in_order_and_keeps_identical_proxies(
    client: ChaosClient, upstream: str
) -> None:
    first = client.populate(
        [
            {"name": "redis", "upstream": upstream, "listen": "127.0.0.1:0"},
            {"name": "kafka", "upstream": upstream, "listen": "127.0.0.1:0"},
        ]
    )
    assert [p.name for p in first] == ["redis", "kafka"]
    client.add_toxic("redis", "latency", attributes={"latency": 1})
    again = client.populate([{"name": "redis", "upstream": upstream, "listen": first[0].listen}])
    assert again[0].listen == first[0].listen
    assert [t.type for t in client.toxics("redis")] == ["latency"]


@pytest.mark.timeout(30)
def test_reset_enables_every_proxy_and_removes_every_toxic(
    client: ChaosClient, upstream: str
) -> None:
    a = client.create_proxy("a", upstream)
    client.create_proxy("b", upstream)
    client.add_toxic("a", "timeout", attributes={"timeout": 0})
    client.set_enabled("b", False)
    assert not client.is_clean()
    client.reset()
    assert client.is_clean()
    assert client.get_proxy("a").listen == a.listen


@pytest.mark.timeout(30)
def test_delete_proxy_then_it_is_not_found(client: ChaosClient, upstream: str) -> None:
    client.create_proxy("gone", upstream)
    client.delete_proxy("gone")
    with pytest.raises(ProxyNotFound):
        client.get_proxy("gone")
    with pytest.raises(ProxyNotFound):
        client.delete_proxy("gone")


# -- error translation, one status at a time -----------------------------------------------


@pytest.mark.timeout(30)
def test_duplicate_proxy_and_duplicate_toxic_are_conflicts(
    client: ChaosClient, upstream: str
) -> None:
    client.create_proxy("dup", upstream)
    with pytest.raises(Conflict) as info:
        client.create_proxy("dup", upstream)
    assert info.value.status == 409 and "already exists" in info.value.message
    client.add_toxic("dup", "noop", name="n")
    with pytest.raises(Conflict):
        client.add_toxic("dup", "noop", name="n", stream="upstream")


@pytest.mark.timeout(30)
def test_unknown_proxy_toxic_and_path_are_distinct_not_found_errors(
    client: ChaosClient, upstream: str
) -> None:
    with pytest.raises(ProxyNotFound) as missing_proxy:
        client.get_proxy("nope")
    assert missing_proxy.value.status == 404
    with pytest.raises(ProxyNotFound):
        client.add_toxic("nope", "latency")
    client.create_proxy("here", upstream)
    with pytest.raises(ToxicNotFound):
        client.remove_toxic("here", "nope")
    with pytest.raises(ToxicNotFound):
        client.update_toxic("here", "nope", toxicity=0.5)
    with pytest.raises(NotFound) as unknown_path:
        client._call("GET", "/no/such/path")
    assert type(unknown_path.value) is NotFound


@pytest.mark.timeout(30)
def test_rejected_bodies_are_invalid_requests_with_the_server_message(
    client: ChaosClient, upstream: str
) -> None:
    client.create_proxy("p", upstream)
    with pytest.raises(InvalidRequest, match="invalid toxic type") as info:
        client.add_toxic("p", "no_such_toxic")
    assert info.value.status == 400 and info.value.path == "/proxies/p/toxics"
    with pytest.raises(InvalidRequest):
        client.add_toxic("p", "bandwidth", attributes={"rate": -1})
    with pytest.raises(InvalidRequest):
        client.populate([{"upstream": upstream}])


@pytest.mark.timeout(30)
def test_wrong_method_is_method_not_allowed(client: ChaosClient) -> None:
    with pytest.raises(MethodNotAllowed) as info:
        client._call("DELETE", "/version")
    assert info.value.status == 405


@pytest.mark.timeout(30)
def test_listen_port_in_use_is_a_server_error_and_registers_nothing(
    client: ChaosClient, upstream: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerError) as info:
            client.create_proxy("clash", upstream, listen=f"127.0.0.1:{port}")
    assert info.value.status == 500
    assert "clash" not in client.proxies()


@pytest.mark.parametrize(
    ("status", "message", "cls"),
    [
        (400, "bad request body: EOF", InvalidRequest),
        (403, "User agent not allowed", Forbidden),
        (404, "proxy not found", ProxyNotFound),
        (404, "toxic not found", ToxicNotFound),
        (404, "404 page not found", NotFound),
        (405, "method not allowed", MethodNotAllowed),
        (409, "proxy already exists", Conflict),
        (500, "listen tcp: address already in use", ServerError),
        (503, "unavailable", ServerError),
        (418, "teapot", ChaosAPIError),
    ],
)
def test_error_for_status_maps_each_status_to_its_class(
    status: int, message: str, cls: type[ChaosAPIError]
) -> None:
    error = error_for_status(status, message, method="GET", path="/x")
    assert type(error) is cls
    assert isinstance(error, ChaosError)
    assert error.status == status and error.message == message
    assert str(error) == f"{status} {message} (GET /x)"


# -- transport failures ------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_nothing_listening_is_chaos_unavailable() -> None:
    client = ChaosClient(f"http://127.0.0.1:{free_port()}", timeout_s=1.0)
    with pytest.raises(ChaosUnavailable, match="cannot reach"):
        client.proxies()
    started = time.monotonic()
    with pytest.raises(ChaosUnavailable, match="not ready after"):
        client.wait_ready(0.3)
    assert time.monotonic() - started < 5


@pytest.mark.timeout(30)
def test_server_that_never_answers_times_out_as_chaos_unavailable() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        client = ChaosClient(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(ChaosUnavailable, match=r"did not answer GET /proxies within 0.3 s"):
            client.proxies()
        assert time.monotonic() - started < 5


class _NotToxiproxy(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>hello</html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.timeout(30)
def test_a_server_that_is_not_toxiproxy_gives_bad_response() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotToxiproxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = ChaosClient(f"http://127.0.0.1:{server.server_address[1]}", timeout_s=2.0)
        with pytest.raises(BadResponse, match="not JSON"):
            client.proxies()
    finally:
        server.shutdown()
        server.server_close()


# -- isolation and argument checks ---------------------------------------------------------


@pytest.mark.timeout(60)
def test_two_clients_on_two_servers_do_not_interfere(
    tmp_path: Path, client: ChaosClient, upstream: str, start_chaos_server: Any
) -> None:
    library_defaults = (APIConsumer.host, APIConsumer.port)
    with start_chaos_server(tmp_path / "second.log") as other_url:
        other = ChaosClient(other_url)
        client.create_proxy("only-on-first", upstream)
        other.create_proxy("only-on-second", upstream)
        other.add_toxic("only-on-second", "latency", attributes={"latency": 5})
        assert set(client.proxies()) == {"only-on-first"}
        assert set(other.proxies()) == {"only-on-second"}
        assert client.is_clean() and not other.is_clean()
        other.reset()
        assert client.toxics("only-on-first") == []
    assert (APIConsumer.host, APIConsumer.port) == library_defaults


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"url": "ftp://127.0.0.1:8474"}, "url"),
        ({"url": "127.0.0.1:8474"}, "url"),
        ({"url": "http://127.0.0.1:99999"}, "url"),
        ({"url": "http://127.0.0.1:8474/api"}, "url"),
        ({"url": "http://127.0.0.1:8474", "timeout_s": 0}, "timeout_s"),
        ({"url": "http://127.0.0.1:8474", "timeout_s": float("inf")}, "timeout_s"),
    ],
)
def test_constructor_rejects_bad_arguments_by_name(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ChaosClient(**kwargs)  # type: ignore[arg-type]


def test_url_defaults_to_the_toxiproxy_port() -> None:
    assert ChaosClient("http://localhost").url == "http://localhost:8474"
    assert ChaosClient("http://[::1]:9000/").url == "http://[::1]:9000"


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.add_toxic("p", "latency", stream="both"), "stream"),
        (lambda c: c.add_toxic("p", "latency", toxicity=2), "toxicity"),
        (lambda c: c.add_toxic("p", "latency", attributes={"latency": 1.5}), "latency"),
        (lambda c: c.add_toxic("", "latency"), "proxy"),
        (lambda c: c.get_proxy("a/b"), "name"),
        (lambda c: c.update_toxic("p", "t"), "attributes or toxicity"),
        (lambda c: c.update_proxy("p"), "at least one"),
        (lambda c: c.populate("redis"), "proxies"),
        (lambda c: c.populate([1]), r"proxies\[0\]"),
        (lambda c: c.wait_ready(0), "timeout_s"),
    ],
)
def test_bad_arguments_are_value_errors_before_any_request(call: object, field: str) -> None:
    client = ChaosClient(f"http://127.0.0.1:{free_port()}", timeout_s=0.5)
    with pytest.raises(ValueError, match=field):
        call(client)  # type: ignore[operator]
