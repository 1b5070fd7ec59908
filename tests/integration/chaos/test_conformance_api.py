"""Conformance of the HTTP API with Toxiproxy 2.12 (TOXIPROXY_API.md items 1-7, plus bad input).

Runs against the embedded server, or a real toxiproxy-server when TOXIPROXY_URL is set.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


def _error(resp, status: int, message: str) -> None:
    assert resp.status == status, resp.body
    assert resp.headers["content-type"] == "text/plain; charset=utf-8"
    assert resp.body.endswith(b"\n")
    assert resp.json() == {"error": message, "status": status}


# --- 1. create --------------------------------------------------------------------------------
def test_create_without_listen_binds_a_real_port(api, echo_server, net, server):
    resp = api.post("/proxies", {"name": "nolisten", "upstream": echo_server.address})
    assert resp.status == 201
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["name"] == "nolisten" and body["enabled"] is True and body["toxics"] == []
    assert _port(body["listen"]) > 0
    if server.embedded:
        assert body["listen"].startswith("127.0.0.1:")
    with net.connect(body["listen"]) as sock:
        sock.sendall(b"ping")
        assert net.recv_exactly(sock, 4) == b"ping"


def test_create_reports_localhost_as_127_0_0_1(api, echo_server):
    port = _free_port()
    body = api.create_proxy("lh", echo_server.address, listen=f"localhost:{port}")
    assert body["listen"] == f"127.0.0.1:{port}"
    assert api.get("/proxies/lh").json()["listen"] == f"127.0.0.1:{port}"


def test_create_on_port_0_reports_the_real_port_and_proxies(api, echo_server, net):
    body = api.create_proxy("zero", echo_server.address, listen="127.0.0.1:0")
    assert body == {
        "name": "zero",
        "listen": body["listen"],
        "upstream": echo_server.address,
        "enabled": True,
        "toxics": [],
    }
    assert body["listen"].startswith("127.0.0.1:") and _port(body["listen"]) > 0
    with net.connect(body["listen"]) as sock:
        sock.sendall(b"hello")
        assert net.recv_exactly(sock, 5) == b"hello"


# --- 2. create errors ---------------------------------------------------------------------------
def test_duplicate_proxy_is_409(api, echo_server):
    api.create_proxy("dup", echo_server.address)
    _error(
        api.post("/proxies", {"name": "dup", "upstream": echo_server.address}),
        409,
        "proxy already exists",
    )


def test_missing_name_is_checked_before_upstream(api):
    _error(api.post("/proxies", {}), 400, "missing required field: name")
    _error(api.post("/proxies", {"upstream": "127.0.0.1:1"}), 400, "missing required field: name")
    _error(api.post("/proxies", {"name": "x"}), 400, "missing required field: upstream")
    assert api.get("/proxies").json() == {}


def test_port_in_use_is_500_and_registers_nothing(api, echo_server):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        resp = api.post(
            "/proxies",
            {"name": "busy", "upstream": echo_server.address, "listen": f"127.0.0.1:{port}"},
        )
        assert resp.status == 500
        assert "address already in use" in resp.json()["error"].lower()
    _error(api.get("/proxies/busy"), 404, "proxy not found")
    assert "busy" not in api.get("/proxies").json()


# --- 3. disabled create, enable/disable ---------------------------------------------------------
def test_disabled_create_echoes_listen_and_does_not_listen(api, echo_server, net):
    port = _free_port()
    body = api.create_proxy("off", echo_server.address, listen=f"127.0.0.1:{port}", enabled=False)
    assert body["enabled"] is False and body["listen"] == f"127.0.0.1:{port}"
    assert not net.port_open(f"127.0.0.1:{port}")
    zero = api.create_proxy("off0", echo_server.address, listen="127.0.0.1:0", enabled=False)
    assert zero["listen"] == "127.0.0.1:0"


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_enable_disable_toggles_reachability_on_the_same_port(api, echo_server, net, method):
    listen = api.create_proxy("tog", echo_server.address)["listen"]
    for _ in range(2):
        resp = api.request(method, "/proxies/tog", {"enabled": False})
        assert resp.status == 200 and resp.json()["enabled"] is False
        assert resp.json()["listen"] == listen
        assert not net.port_open(listen)
        resp = api.request(method, "/proxies/tog", {"enabled": True})
        assert resp.status == 200 and resp.json() == {
            **resp.json(),
            "enabled": True,
            "listen": listen,
        }
        with net.connect(listen) as sock:
            sock.sendall(b"up")
            assert net.recv_exactly(sock, 2) == b"up"


def test_enabling_a_proxy_created_disabled_on_port_0_binds_and_keeps_a_port(api, echo_server, net):
    api.create_proxy("late", echo_server.address, listen="127.0.0.1:0", enabled=False)
    listen = api.post("/proxies/late", {"enabled": True}).json()["listen"]
    assert _port(listen) > 0 and net.port_open(listen)
    api.post("/proxies/late", {"enabled": False})
    assert api.post("/proxies/late", {"enabled": True}).json()["listen"] == listen


def test_disable_closes_open_connections(api, echo_server, net):
    listen = api.create_proxy("drop", echo_server.address)["listen"]
    with net.connect(listen, timeout_s=10) as sock:  # left open, the read would take 10 s
        sock.sendall(b"a")
        assert net.recv_exactly(sock, 1) == b"a"
        started = time.monotonic()
        api.post("/proxies/drop", {"enabled": False})
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(10) == b""
        assert time.monotonic() - started < 3.0


def test_changing_upstream_drops_open_connections(api, echo_server, tcp_server, net):
    listen = api.create_proxy("move", echo_server.address)["listen"]
    other = tcp_server(net.echo)
    with net.connect(listen, timeout_s=2) as sock:
        sock.sendall(b"a")
        assert net.recv_exactly(sock, 1) == b"a"
        resp = api.post("/proxies/move", {"upstream": other.address})
        assert resp.status == 200 and resp.json()["upstream"] == other.address
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(10) == b""
    with net.connect(resp.json()["listen"]) as sock:
        sock.sendall(b"b")
        assert net.recv_exactly(sock, 1) == b"b"
    assert other.accepted == 1


# --- 4. delete ----------------------------------------------------------------------------------
def test_delete_is_204_releases_the_port_and_second_delete_is_404(api, echo_server, net):
    listen = api.create_proxy("gone", echo_server.address)["listen"]
    resp = api.delete("/proxies/gone")
    assert resp.status == 204 and resp.body == b""
    assert not net.port_open(listen)
    with socket.create_server(("127.0.0.1", _port(listen))):
        pass  # the port is free to bind again
    _error(api.delete("/proxies/gone"), 404, "proxy not found")


# --- 5. reset -----------------------------------------------------------------------------------
def test_reset_enables_all_and_removes_all_toxics(api, echo_server):
    a = api.create_proxy("ra", echo_server.address)
    b = api.create_proxy("rb", echo_server.address)
    api.add_toxic("ra", "latency", latency=1000)
    api.add_toxic("rb", "bandwidth", stream="upstream", rate=1)
    api.post("/proxies/rb", {"enabled": False})
    resp = api.post("/reset")
    assert resp.status == 204 and resp.body == b""
    proxies = api.get("/proxies").json()
    assert proxies["ra"] == {**a, "enabled": True, "toxics": []}
    assert proxies["rb"] == {**b, "enabled": True, "toxics": []}


# --- 6. toxics ----------------------------------------------------------------------------------
def test_toxic_create_defaults_and_body_shape(api, echo_server):
    api.create_proxy("tx", echo_server.address)
    resp = api.post("/proxies/tx/toxics", {"type": "latency", "attributes": {"latency": 50}})
    assert resp.status == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {
        "attributes": {"latency": 50, "jitter": 0},
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1,
    }
    assert resp.body.startswith(b'{"attributes":{"latency":50,"jitter":0},"name":')


@pytest.mark.parametrize(
    ("type_", "attributes"),
    [
        ("latency", {"latency": 0, "jitter": 0}),
        ("bandwidth", {"rate": 0}),
        ("slow_close", {"delay": 0}),
        ("timeout", {"timeout": 0}),
        ("reset_peer", {"timeout": 0}),
        ("limit_data", {"bytes": 0}),
        ("noop", {}),
    ],
)
def test_every_toxic_type_is_creatable_with_zeros_filled_in(api, echo_server, type_, attributes):
    api.create_proxy("types", echo_server.address)
    resp = api.post("/proxies/types/toxics", {"type": type_, "stream": "upstream"})
    assert resp.status == 200, resp.body
    assert resp.json()["attributes"] == attributes
    assert resp.json()["name"] == f"{type_}_upstream"


def test_slicer_is_creatable_with_valid_attributes(api, echo_server):
    api.create_proxy("sl", echo_server.address)
    body = api.add_toxic("sl", "slicer", average_size=10, size_variation=5, delay=100)
    assert body["attributes"] == {"average_size": 10, "size_variation": 5, "delay": 100}


def test_toxic_get_list_update_delete(api, echo_server):
    api.create_proxy("crud", echo_server.address)
    api.add_toxic("crud", "latency", latency=10, jitter=5)
    api.post(
        "/proxies/crud/toxics",
        {"type": "noop", "name": "n1", "stream": "upstream", "toxicity": 0.5},
    )
    api.add_toxic("crud", "bandwidth", stream="upstream", rate=100)
    names = [t["name"] for t in api.get("/proxies/crud/toxics").json()]
    assert names == ["n1", "bandwidth_upstream", "latency_downstream"]

    shown = api.get("/proxies/crud/toxics/n1")
    assert shown.status == 200 and shown.json()["toxicity"] == 0.5

    resp = api.post("/proxies/crud/toxics/latency_downstream", {"attributes": {"latency": 20}})
    assert resp.status == 200
    assert resp.json()["attributes"] == {"latency": 20, "jitter": 5}  # merged
    resp = api.request("PATCH", "/proxies/crud/toxics/latency_downstream", {"toxicity": 0.25})
    assert resp.json()["toxicity"] == 0.25 and resp.json()["attributes"]["latency"] == 20

    resp = api.delete("/proxies/crud/toxics/n1")
    assert resp.status == 204 and resp.body == b""
    _error(api.delete("/proxies/crud/toxics/n1"), 404, "toxic not found")
    _error(api.get("/proxies/crud/toxics/n1"), 404, "toxic not found")
    _error(api.post("/proxies/crud/toxics/n1", {"toxicity": 1}), 404, "toxic not found")
    assert [t["name"] for t in api.get("/proxies/crud/toxics").json()] == [
        "bandwidth_upstream",
        "latency_downstream",
    ]


def test_toxic_names_are_unique_across_streams(api, echo_server):
    api.create_proxy("uniq", echo_server.address)
    api.post("/proxies/uniq/toxics", {"type": "latency", "name": "same", "stream": "upstream"})
    resp = api.post(
        "/proxies/uniq/toxics", {"type": "noop", "name": "same", "stream": "downstream"}
    )
    _error(resp, 409, "toxic already exists")


def test_toxic_errors_invalid_stream_type_and_unknown_proxy(api, echo_server):
    api.create_proxy("terr", echo_server.address)
    _error(
        api.post("/proxies/terr/toxics", {"type": "latency", "stream": "sideways"}),
        400,
        "stream was invalid, can be either upstream or downstream",
    )
    _error(api.post("/proxies/terr/toxics", {"type": "earthquake"}), 400, "invalid toxic type")
    _error(api.post("/proxies/terr/toxics", {}), 400, "invalid toxic type")
    _error(api.post("/proxies/nope/toxics", {"type": "latency"}), 404, "proxy not found")
    _error(api.get("/proxies/nope/toxics"), 404, "proxy not found")
    _error(api.get("/proxies/nope/toxics/x"), 404, "proxy not found")


# --- 7. routing, user agents, error shape -------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/proxies"), ("GET", "/version"), ("POST", "/reset")]
)
def test_browser_user_agents_get_403(api, method, path):
    resp = api.request(method, path, headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"})
    assert resp.status == 403
    assert b"User agent not allowed" in resp.body


def test_unknown_path_is_404_and_wrong_method_is_405(api):
    assert api.get("/nope").status == 404
    assert api.get("/proxies/a/b").status == 404
    assert api.request("PUT", "/proxies").status == 405
    assert api.request("DELETE", "/version").status == 405
    assert api.request("GET", "/reset").status == 405


def test_routed_responses_carry_a_request_id(api, echo_server):
    ids = set()
    for resp in (
        api.get("/version"),
        api.get("/proxies"),
        api.get("/proxies/missing"),
        api.post(
            "/proxies", {"name": "rid", "upstream": echo_server.address, "listen": "127.0.0.1:0"}
        ),
    ):
        assert resp.headers.get("x-toxiproxy-request-id")
        ids.add(resp.headers["x-toxiproxy-request-id"])
    assert len(ids) == 4


def test_version_parses_as_at_least_2_6(api, server):
    resp = api.get("/version")
    assert resp.status == 200
    version = resp.json()["version"]
    assert tuple(int(p) for p in version.lstrip("v").split(".")[:2]) >= (2, 6)
    if server.embedded:
        assert resp.body == b'{"version": "2.12.0"}\n'


# --- Go-like JSON decoding ----------------------------------------------------------------------
def test_keys_match_case_insensitively_and_unknown_keys_and_nulls_are_ignored(api, echo_server):
    resp = api.post(
        "/proxies",
        {
            "NAME": "ci",
            "Upstream": echo_server.address,
            "listen": "127.0.0.1:0",
            "enabled": None,
            "x": 1,
        },
    )
    assert resp.status == 201
    assert resp.json()["enabled"] is True and resp.json()["name"] == "ci"
    resp = api.post(
        "/proxies/ci/toxics", {"TYPE": "latency", "Attributes": {"LATENCY": 7}, "junk": []}
    )
    assert resp.status == 200 and resp.json()["attributes"]["latency"] == 7


@pytest.mark.parametrize("value", ["100.5", "100.0", '"100"', "1e3", "true", "[1]"])
def test_integer_attributes_reject_non_integers(api, echo_server, value):
    api.create_proxy("ints", echo_server.address)
    raw = b'{"type":"latency","attributes":{"latency":' + value.encode() + b"}}"
    resp = api.post("/proxies/ints/toxics", raw=raw)
    assert resp.status == 400
    assert resp.json()["error"].startswith("bad request body: ")
    assert api.get("/proxies/ints/toxics").json() == []


@pytest.mark.parametrize("path", ["/proxies", "/proxies/emp/toxics", "/proxies/emp", "/populate"])
def test_empty_body_is_400_eof(api, echo_server, path):
    api.create_proxy("emp", echo_server.address)
    _error(api.post(path, raw=b""), 400, "bad request body: EOF")


# --- populate -----------------------------------------------------------------------------------
def test_populate_creates_in_input_order(api, echo_server):
    entries = [
        {"name": "p2", "upstream": echo_server.address, "listen": "127.0.0.1:0"},
        {"name": "p1", "upstream": echo_server.address, "listen": "127.0.0.1:0", "enabled": False},
    ]
    resp = api.post("/populate", entries)
    assert resp.status == 201
    proxies = resp.json()["proxies"]
    assert [p["name"] for p in proxies] == ["p2", "p1"]
    assert [p["enabled"] for p in proxies] == [True, False]


def test_populate_validates_every_entry_before_creating_any(api, echo_server):
    entries = [{"name": "v1", "upstream": echo_server.address}, {"upstream": echo_server.address}]
    resp = api.post("/populate", entries)
    assert resp.status == 400
    assert resp.json()["error"] == "missing required field: name at proxy 2"
    assert api.get("/proxies").json() == {}


def test_populate_keeps_an_identical_proxy_and_replaces_a_changed_one(
    api, echo_server, tcp_server, net
):
    kept = api.create_proxy("keep", echo_server.address)
    changed = api.create_proxy("change", echo_server.address)
    api.add_toxic("keep", "latency", latency=5)
    api.add_toxic("change", "latency", latency=5)
    other = tcp_server(net.echo)
    resp = api.post(
        "/populate",
        [
            {"name": "keep", "upstream": echo_server.address, "listen": kept["listen"]},
            {"name": "change", "upstream": other.address, "listen": changed["listen"]},
        ],
    )
    assert resp.status == 201
    assert [t["name"] for t in api.get("/proxies/keep/toxics").json()] == ["latency_downstream"]
    after = api.get("/proxies/change").json()
    assert after["upstream"] == other.address and after["toxics"] == []


# --- bad input never stops the server -----------------------------------------------------------
def _bad_requests(server_embedded: bool) -> list[tuple[str, str, bytes, int]]:
    cases = [
        ("POST", "/proxies", b"{not json", 400),
        ("POST", "/proxies", b'{"name": "x", "upstream": ', 400),
        ("POST", "/proxies", b"[1, 2]", 400),
        ("POST", "/proxies/live/toxics", b'{"type": "earthquake"}', 400),
        (
            "POST",
            "/proxies/live/toxics",
            b'{"type": "latency", "attributes": {"latency": "x"}}',
            400,
        ),
        ("POST", "/proxies/live/toxics", b'{"type": "latency", "attributes": 5}', 400),
        ("POST", "/proxies/live/toxics", b'{"type": "latency", "toxicity": "high"}', 400),
        ("POST", "/proxies/ghost/toxics", b'{"type": "latency"}', 404),
        ("GET", "/proxies/ghost", b"", 404),
        ("DELETE", "/proxies/ghost", b"", 404),
        ("POST", "/proxies/live", b'{"enabled": "yes"}', 400),
        ("POST", "/populate", b'{"name": "x"}', 400),
        ("POST", "/proxies/live/toxics/ghost", b'{"toxicity": 1}', 404),
    ]
    if server_embedded:  # out-of-range values upstream would hang or crash on
        cases += [
            (
                "POST",
                "/proxies/live/toxics",
                b'{"type": "bandwidth", "attributes": {"rate": -1}}',
                400,
            ),
            (
                "POST",
                "/proxies/live/toxics",
                b'{"type": "slicer", "attributes": {"average_size": 0}}',
                400,
            ),
            (
                "POST",
                "/proxies/live/toxics",
                b'{"type": "slicer", "attributes": {"average_size": 10, "size_variation": 10}}',
                400,
            ),
            (
                "POST",
                "/proxies/live/toxics",
                b'{"type": "latency", "attributes": {"latency": -5}}',
                400,
            ),
            ("POST", "/proxies/live/toxics", b'{"type": "latency", "toxicity": 1.5}', 400),
            ("POST", "/proxies", b'{"name": "u", "upstream": "no-port"}', 400),
        ]
    return cases


def test_bad_input_gets_4xx_while_proxied_traffic_keeps_flowing(api, echo_server, net, server):
    listen = api.create_proxy("live", echo_server.address)["listen"]
    stop = threading.Event()
    errors: list[BaseException] = []
    rounds = [0]

    def traffic() -> None:
        try:
            with net.connect(listen, timeout_s=5) as sock:
                while not stop.is_set() and rounds[0] < 100_000:
                    payload = rounds[0].to_bytes(4, "big")
                    sock.sendall(payload)
                    assert net.recv_exactly(sock, 4) == payload
                    rounds[0] += 1
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        for method, path, body, status in _bad_requests(server.embedded):
            before = rounds[0]
            resp = api.request(method, path, raw=body if body else None)
            assert resp.status == status, (method, path, body, resp.body)
            if resp.status != 404 or path.startswith("/proxies/"):
                assert resp.json()["status"] == status
            deadline = time.monotonic() + 5
            while rounds[0] == before and time.monotonic() < deadline and not errors:
                time.sleep(0.001)
            assert rounds[0] > before, "proxied traffic stalled"
        assert [t["name"] for t in api.get("/proxies/live/toxics").json()] == []
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not errors, errors
    assert api.get("/version").status == 200


def test_garbage_http_gets_400_and_the_api_keeps_serving(server, api):
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    for garbage in (b"NOT HTTP AT ALL\r\n\r\n", b"GET /proxies HTTP/1.1\r\nbad header\r\n\r\n"):
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(garbage)
            assert sock.recv(100).startswith(b"HTTP/1.1 400")
    assert api.get("/proxies").status == 200


# --- metrics -------------------------------------------------------------------------------------
def test_metrics_count_bytes_per_proxy_and_direction(api, echo_server, net, embedded):
    listen = api.create_proxy("met", echo_server.address)["listen"]
    with net.connect(listen) as sock:
        sock.sendall(b"x" * 1000)
        assert len(net.recv_exactly(sock, 1000)) == 1000
    resp = api.get("/metrics")
    assert resp.status == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.body.decode()
    for metric in ("received", "sent"):
        for direction in ("upstream", "downstream"):
            labels = f'direction="{direction}",listener="{listen}",proxy="met"'
            prefix = f"toxiproxy_proxy_{metric}_bytes_total{{{labels}"
            line = next(line for line in text.splitlines() if line.startswith(prefix))
            assert int(line.rsplit(" ", 1)[1]) == 1000
