"""Conformance of the data path with Toxiproxy 2.12 (TOXIPROXY_API.md items 8-16).

Behaviours are asserted exactly; timings carry slack for a busy 2-core machine (a lower bound
of the configured delay minus timer granularity, a generous upper bound). An upper bound is
checked on the best of a few measurements wherever one is enough to show it (a stall only
ever adds time, a wrong delay is wrong every time); where every measurement must hold, the
wrong behaviour is made seconds slower than the bound.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

EARLY_S = 0.003  # timers may fire up to this much early (1 ms event-loop timers, clock reads)
SLACK_S = 0.150  # a loaded 2-core machine


def _round_trip(sock: socket.socket, net, payload: bytes = b"ping") -> float:
    started = time.perf_counter()
    sock.sendall(payload)
    assert net.recv_exactly(sock, len(payload)) == payload
    return time.perf_counter() - started


def _best_rtt(sock: socket.socket, net, n: int = 3) -> float:
    """The fastest of `n` round trips: each is >= the configured delay, and a busy machine
    cannot make all of them late."""
    return min(_round_trip(sock, net) for _ in range(n))


@pytest.fixture
def echo_proxy(api, echo_server):
    return api.create_proxy("echo", echo_server.address)["listen"]


# --- 8. no toxics: bytes identical ---------------------------------------------------------------
def test_64k_message_arrives_byte_identical(echo_proxy, net):
    payload = os.urandom(64 * 1024)
    with net.connect(echo_proxy) as sock:
        sock.sendall(payload)
        assert net.recv_exactly(sock, len(payload)) == payload


def test_multi_write_messages_arrive_byte_identical_and_in_order(echo_proxy, net):
    pieces = [os.urandom(size) for size in (1, 7, 100, 1500, 4096, 65536, 3, 200_000, 17)]
    expected = b"".join(pieces)
    with net.connect(echo_proxy) as sock:
        received: list[bytes] = []
        reader = threading.Thread(
            target=lambda: received.append(net.recv_exactly(sock, len(expected))), daemon=True
        )
        reader.start()
        for piece in pieces:
            sock.sendall(piece)
        reader.join(timeout=20)
    assert received == [expected]


def test_a_failed_dial_closes_the_client_quickly(api, net):
    with socket.create_server(("127.0.0.1", 0)) as closed:
        dead = f"127.0.0.1:{closed.getsockname()[1]}"
    listen = api.create_proxy("dead", dead)["listen"]
    with net.connect(listen, timeout_s=10) as sock:  # a proxy that kept it open: 10 s
        started = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(10) == b""
        assert time.monotonic() - started < 3.0


# --- 9. latency ----------------------------------------------------------------------------------
def test_downstream_latency_delays_a_round_trip(api, echo_proxy, net):
    api.add_toxic("echo", "latency", latency=100)
    with net.connect(echo_proxy) as sock:
        rtt = _best_rtt(sock, net)
    assert 0.100 - EARLY_S <= rtt <= 0.100 + SLACK_S


def test_upstream_and_downstream_latency_add_up(api, echo_proxy, net):
    api.add_toxic("echo", "latency", stream="upstream", latency=100)
    api.add_toxic("echo", "latency", stream="downstream", latency=100)
    with net.connect(echo_proxy) as sock:
        rtt = _best_rtt(sock, net)
    assert 0.200 - EARLY_S <= rtt <= 0.200 + SLACK_S


def test_two_upstream_latency_toxics_add_up(api, echo_proxy, net):
    for name in ("slow1", "slow2"):
        body = {
            "type": "latency",
            "name": name,
            "stream": "upstream",
            "attributes": {"latency": 500},
        }
        assert api.post("/proxies/echo/toxics", body).status == 200
    with net.connect(echo_proxy) as sock:
        rtt = _best_rtt(sock, net, 2)
    assert 1.000 - EARLY_S <= rtt <= 1.000 + SLACK_S


def test_latency_does_not_accumulate_across_a_burst(api, echo_proxy, net):
    api.add_toxic("echo", "latency", latency=100)
    with net.connect(echo_proxy) as sock:
        started = time.perf_counter()
        for i in range(20):
            sock.sendall(bytes([i]) * 100)
            time.sleep(0.002)
        last_sent = time.perf_counter()
        assert net.recv_exactly(sock, 2000) == b"".join(bytes([i]) * 100 for i in range(20))
        done = time.perf_counter()
    assert done - started >= 0.100 + 0.038 - EARLY_S
    # the last message waits its own 100 ms after it was sent, however long sending took;
    # accumulated latency would make it wait 20 x 100 ms
    assert done - last_sent <= 0.100 + SLACK_S


# --- 10. toxics apply to open connections ------------------------------------------------------
def test_latency_added_mid_connection_delays_the_next_message(api, echo_proxy, net):
    with net.connect(echo_proxy) as sock:
        assert _best_rtt(sock, net) < 0.1
        api.add_toxic("echo", "latency", latency=200)
        assert 0.200 - EARLY_S <= _best_rtt(sock, net) <= 0.200 + SLACK_S
        assert api.delete("/proxies/echo/toxics/latency_downstream").status == 204
        assert _best_rtt(sock, net) < 0.1


def test_removing_a_toxic_releases_held_data_at_once(api, echo_proxy, net):
    api.add_toxic("echo", "latency", stream="upstream", latency=10_000)
    with net.connect(echo_proxy) as sock:
        sock.sendall(b"held")
        time.sleep(0.1)
        started = time.perf_counter()
        assert api.delete("/proxies/echo/toxics/latency_upstream").status == 204
        assert net.recv_exactly(sock, 4) == b"held"
        assert time.perf_counter() - started < 3.0  # held, it would take 10 s


def test_updating_latency_applies_to_an_open_connection(api, echo_proxy, net):
    api.add_toxic("echo", "latency", latency=50)
    with net.connect(echo_proxy) as sock:
        assert _round_trip(sock, net) >= 0.050 - EARLY_S
        resp = api.post("/proxies/echo/toxics/latency_downstream", {"attributes": {"latency": 250}})
        assert resp.status == 200
        assert 0.250 - EARLY_S <= _best_rtt(sock, net) <= 0.250 + SLACK_S


# --- 11. bandwidth -------------------------------------------------------------------------------
def _blob_server(tcp_server, size: int):
    def handler(conn: socket.socket) -> None:
        while conn.recv(1):
            conn.sendall(b"b" * size)

    return tcp_server(handler)


def test_bandwidth_paces_480000_bytes_at_1000_kbps_to_480_ms(api, tcp_server, net):
    upstream = _blob_server(tcp_server, 480_000)
    listen = api.create_proxy("bw", upstream.address)["listen"]
    api.add_toxic("bw", "bandwidth", rate=1000)
    elapsed = []
    with net.connect(listen) as sock:
        for _ in range(2):  # the best of two (see the module doc)
            started = time.perf_counter()
            sock.sendall(b"g")
            assert net.recv_exactly(sock, 480_000) == b"b" * 480_000
            elapsed.append(time.perf_counter() - started)
    assert 0.480 - 0.050 <= min(elapsed) <= 0.480 + 0.050 + SLACK_S


def test_bandwidth_rate_0_holds_data_until_removed(api, echo_proxy, net, embedded):
    api.add_toxic("echo", "bandwidth", stream="upstream", rate=0)
    with net.connect(echo_proxy, timeout_s=0.3) as sock:
        sock.sendall(b"frozen")
        with pytest.raises(TimeoutError):
            sock.recv(10)
        sock.settimeout(5)
        assert api.delete("/proxies/echo/toxics/bandwidth_upstream").status == 204
        assert net.recv_exactly(sock, 6) == b"frozen"


# --- 12. timeout ---------------------------------------------------------------------------------
class _Recorder:
    """An upstream that records what it receives and when it sees EOF."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.eof = threading.Event()

    def __call__(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := conn.recv(65536):
                self.data += chunk
        self.eof.set()


def test_timeout_0_drops_data_keeps_the_connection_and_removal_closes_both_sides(
    api, tcp_server, net
):
    recorder = _Recorder()
    upstream = tcp_server(recorder)
    listen = api.create_proxy("to", upstream.address)["listen"]
    api.add_toxic("to", "timeout", stream="upstream", timeout=0)
    with net.connect(listen, timeout_s=0.5) as sock:
        sock.sendall(b"dropped")
        with pytest.raises(TimeoutError):
            sock.recv(10)  # no EOF: the connection stays
        assert bytes(recorder.data) == b""
        sock.settimeout(10)  # a proxy that kept it open: 10 s
        started = time.monotonic()
        assert api.delete("/proxies/to/toxics/timeout_upstream").status == 204
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(10) == b""
        assert recorder.eof.wait(3.0)
        assert time.monotonic() - started < 3.0
    assert bytes(recorder.data) == b""


def test_timeout_100_closes_about_100_ms_after_it_applies(api, echo_proxy, net):
    api.add_toxic("echo", "timeout", timeout=100)
    elapsed = []
    for _ in range(3):  # every connection closes, the best of three is timed
        with net.connect(echo_proxy, timeout_s=2) as sock:
            started = time.perf_counter()
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(10) == b""
            elapsed.append(time.perf_counter() - started)
    assert 0.100 - 0.020 <= min(elapsed) <= 0.100 + SLACK_S


# --- 13. reset_peer ------------------------------------------------------------------------------
def test_reset_peer_upstream_makes_the_clients_next_read_fail_with_econnreset(api, echo_proxy, net):
    api.add_toxic("echo", "reset_peer", stream="upstream", timeout=0)
    with net.connect(echo_proxy, timeout_s=2) as sock:
        sock.sendall(b"boom")
        with pytest.raises(ConnectionResetError):
            sock.recv(10)


def test_reset_peer_at_toxicity_0_leaves_ordinary_closes_alone(api, tcp_server, net, embedded):
    def reply_and_close(conn: socket.socket) -> None:
        conn.recv(10)
        conn.sendall(b"bye")

    upstream = tcp_server(reply_and_close)
    listen = api.create_proxy("rp0", upstream.address)["listen"]
    for stream in ("upstream", "downstream"):
        body = {"type": "reset_peer", "stream": stream, "toxicity": 0, "attributes": {"timeout": 0}}
        assert api.post("/proxies/rp0/toxics", body).status == 200
    for _ in range(3):
        with net.connect(listen, timeout_s=2) as sock:
            sock.sendall(b"hi")
            assert net.recv_until_eof(sock) == b"bye"  # a FIN, not ECONNRESET


# --- 14. limit_data ------------------------------------------------------------------------------
def test_limit_data_100_downstream_passes_exactly_100_of_150_bytes_then_eof(api, tcp_server, net):
    payload = bytes(range(150))

    def send_150(conn: socket.socket) -> None:
        conn.recv(1)
        conn.sendall(payload)
        time.sleep(1)

    upstream = tcp_server(send_150)
    listen = api.create_proxy("lim", upstream.address)["listen"]
    api.add_toxic("lim", "limit_data", bytes=100)
    with net.connect(listen, timeout_s=3) as sock:
        sock.sendall(b"g")
        assert net.recv_until_eof(sock) == payload[:100]


# --- 15. toxicity 0, slicer, slow_close ----------------------------------------------------------
def test_toxicity_0_never_affects_traffic(api, echo_proxy, net):
    # 5 s each way: a connection the latency touched would take 5-10 s, far above the bound
    for stream in ("upstream", "downstream"):
        body = {"type": "latency", "stream": stream, "toxicity": 0, "attributes": {"latency": 5000}}
        assert api.post("/proxies/echo/toxics", body).status == 200
    body = {"type": "limit_data", "toxicity": 0, "attributes": {"bytes": 1}}
    assert api.post("/proxies/echo/toxics", body).status == 200
    for _ in range(5):
        with net.connect(echo_proxy, timeout_s=15) as sock:
            payload = os.urandom(10_000)
            started = time.perf_counter()
            sock.sendall(payload)
            assert net.recv_exactly(sock, len(payload)) == payload
            assert time.perf_counter() - started < 2.5


def test_slicer_preserves_every_byte_in_order(api, echo_proxy, net):
    body = {
        "type": "slicer",
        "stream": "upstream",
        "attributes": {"average_size": 64, "size_variation": 32, "delay": 10},
    }
    assert api.post("/proxies/echo/toxics", body).status == 200
    payload = os.urandom(64 * 1024)
    with net.connect(echo_proxy, timeout_s=10) as sock:
        sock.sendall(payload)
        assert net.recv_exactly(sock, len(payload)) == payload


def test_slicer_splits_writes_into_small_slices(api, tcp_server, net, embedded):
    """200 bytes in slices of 5-15 bytes, 20 ms apart: at least 14 slices, so the last byte
    arrives >= 13 x 20 ms after the send. Judged by when the last byte arrives, a lower bound
    a busy machine only makes larger, not by how the receiver's reads happen to split the
    bytes (a receiver that a busy machine stalls reads several slices at once)."""
    sizes: list[int] = []
    arrivals: list[float] = []

    def record_sizes(conn: socket.socket) -> None:
        while chunk := conn.recv(65536):
            arrivals.append(time.perf_counter())
            sizes.append(len(chunk))

    upstream = tcp_server(record_sizes)
    listen = api.create_proxy("slices", upstream.address)["listen"]
    body = {
        "type": "slicer",
        "stream": "upstream",
        "attributes": {"average_size": 10, "size_variation": 5, "delay": 20_000},
    }
    assert api.post("/proxies/slices/toxics", body).status == 200
    with net.connect(listen) as sock:
        sent = time.perf_counter()
        sock.sendall(b"x" * 200)
        deadline = time.monotonic() + 10
        while sum(sizes) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert sum(sizes) == 200
    assert arrivals[-1] - sent >= 13 * 0.020 - EARLY_S, sizes


def test_slow_close_delays_the_close_and_keeps_every_byte(api, tcp_server, net):
    payload = os.urandom(50_000)

    def send_and_close(conn: socket.socket) -> None:
        conn.recv(1)
        conn.sendall(payload)

    upstream = tcp_server(send_and_close)
    listen = api.create_proxy("sc", upstream.address)["listen"]
    api.add_toxic("sc", "slow_close", delay=300)
    elapsed = []
    for _ in range(2):  # every connection closes late, the best of two is timed
        with net.connect(listen, timeout_s=3) as sock:
            sock.sendall(b"g")
            data = net.recv_exactly(sock, len(payload))
            got_data = time.perf_counter()
            assert data == payload
            assert net.recv_until_eof(sock) == b""
            elapsed.append(time.perf_counter() - got_data)
    assert 0.300 - 0.050 <= min(elapsed) <= 0.300 + SLACK_S


# --- 16. toxic churn under sequenced writes ------------------------------------------------------
@pytest.mark.timeout(60)
def test_toxic_churn_loses_and_reorders_nothing_and_the_api_stays_responsive(api, echo_proxy, net):
    count = 65_535
    expected = b"".join(i.to_bytes(2, "big") for i in range(count))
    received: list[bytes] = []
    errors: list[BaseException] = []
    sock = net.connect(echo_proxy, timeout_s=20)

    def writer() -> None:
        try:
            for i in range(count):
                sock.sendall(i.to_bytes(2, "big"))
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            received.append(net.recv_exactly(sock, len(expected)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=t, daemon=True) for t in (reader, writer)]
    for thread in threads:
        thread.start()
    slowest, calls, i = 0.0, 0, 0
    deadline = time.monotonic() + 40
    while threads[0].is_alive() and time.monotonic() < deadline:
        stream = ("upstream", "downstream")[i % 2]
        name = f"churn{i % 3}"
        body = {"type": "latency", "name": name, "stream": stream, "attributes": {"latency": i % 5}}
        for resp in (
            api.post("/proxies/echo/toxics", body),
            api.delete(f"/proxies/echo/toxics/{name}"),
        ):
            assert resp.status in (200, 204), resp.body
            slowest = max(slowest, resp.elapsed_s)
            calls += 1
        i += 1
    for thread in threads:
        thread.join(timeout=10)
    sock.close()
    assert not errors, errors
    assert received and len(received[0]) == len(expected)
    assert received[0] == expected, "bytes lost or reordered"
    assert calls >= 20, "the loop should have churned toxics while data flowed"
    assert slowest < 1.0


# --- byte counters across the fast path and the toxic pipeline (embedded: upstream needs a flag) --
def _counters(api, proxy: str) -> dict[tuple[str, str], int]:
    """{(metric, direction): bytes} for one proxy, from /metrics."""
    out: dict[tuple[str, str], int] = {}
    for line in api.get("/metrics").body.decode().splitlines():
        if line.startswith("toxiproxy_proxy_") and f'proxy="{proxy}"' in line:
            metric = line.split("{", 1)[0].removeprefix("toxiproxy_proxy_")
            direction = line.split('direction="', 1)[1].split('"', 1)[0]
            out[(metric.removesuffix("_bytes_total"), direction)] = int(line.rsplit(" ", 1)[1])
    return out


def test_metrics_count_every_byte_once_while_toxics_come_and_go(api, echo_server, net, embedded):
    listen = api.create_proxy("cnt", echo_server.address)["listen"]
    with net.connect(listen) as sock:
        sock.sendall(b"a" * 1000)  # at once: may be read before the upstream dial completes
        assert net.recv_exactly(sock, 1000) == b"a" * 1000
        api.add_toxic("cnt", "noop", stream="upstream")
        api.add_toxic("cnt", "noop", stream="downstream")
        _round_trip(sock, net, b"b" * 1000)  # asserts the echo is byte-identical
        for name in ("noop_upstream", "noop_downstream"):
            assert api.delete(f"/proxies/cnt/toxics/{name}").status == 204
        _round_trip(sock, net, b"c" * 1000)
    counters = _counters(api, "cnt")
    assert counters == {
        (metric, direction): 3000
        for metric in ("received", "sent")
        for direction in ("upstream", "downstream")
    }


def test_metrics_count_bytes_a_toxic_dropped_as_received_not_sent(api, tcp_server, net, embedded):
    def send_150(conn: socket.socket) -> None:
        conn.recv(1)
        conn.sendall(bytes(150))
        time.sleep(1)

    listen = api.create_proxy("drop", tcp_server(send_150).address)["listen"]
    api.add_toxic("drop", "limit_data", bytes=100)
    with net.connect(listen, timeout_s=3) as sock:
        sock.sendall(b"g")
        assert len(net.recv_until_eof(sock)) == 100
    deadline = time.monotonic() + 2
    while _counters(api, "drop")[("received", "downstream")] < 150:
        assert time.monotonic() < deadline, _counters(api, "drop")
        time.sleep(0.02)
    counters = _counters(api, "drop")
    assert counters[("sent", "downstream")] == 100
    assert counters[("received", "upstream")] == counters[("sent", "upstream")] == 1
