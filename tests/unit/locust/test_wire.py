"""Wire: the open model's POST sends the bytes HTTPClient.request sends, over the same
keep-alive pool (a real socket on 127.0.0.1:0, gevent's own server; hard timeouts)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import gevent
import pytest
from gevent.server import StreamServer
from geventhttpclient import HTTPClient

from spikegate.locustfiles.wire import Wire, read_reply

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Spikegate-Decision: admit\r\n\r\nok"


class Recorder:
    """A server that answers every request with ANSWER and keeps what it received."""

    def __init__(self, close_after_answer: bool = False) -> None:
        self.requests: list[bytes] = []
        self.connections = 0
        self.close_after_answer = close_after_answer

    def handle(self, sock: gevent.socket.socket, _addr: object) -> None:
        self.connections += 1
        buf = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return
            buf += chunk
            while b"\r\n\r\n" in buf:
                head, _, rest = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if len(rest) < length:
                    break
                self.requests.append(head + b"\r\n\r\n" + rest[:length])
                buf = rest[length:]
                sock.sendall(ANSWER)
                if self.close_after_answer:
                    sock.close()  # keep-alive in the answer, then a FIN while idle
                    return


@pytest.fixture
def server() -> Iterator[tuple[Recorder, int]]:
    rec = Recorder()
    srv = StreamServer(("127.0.0.1", 0), rec.handle)
    srv.start()
    try:
        yield rec, srv.server_port
    finally:
        srv.stop(timeout=1)


@pytest.fixture
def clients() -> Iterator[list[HTTPClient]]:
    made: list[HTTPClient] = []
    try:
        yield made
    finally:
        for http in made:
            http.close()


def client(clients: list[HTTPClient], port: int, concurrency: int = 2) -> HTTPClient:
    http = HTTPClient(
        "127.0.0.1", port, concurrency=concurrency, network_timeout=2, connection_timeout=2
    )
    clients.append(http)
    return http


def test_a_post_sends_the_bytes_httpclient_sends_and_reads_the_answer(
    server: tuple[Recorder, int], clients: list[HTTPClient]
) -> None:
    rec, port = server
    http = client(clients, port)
    headers = {"Content-Type": "application/json", "X-Publisher": "pub-1"}
    wire = Wire(http)
    with gevent.Timeout(5):
        ref = http.request("POST", "/bid", body=b'{"id": 1}', headers=headers)
        ref.read()
        ref.release()
        resp = wire.post("/bid", headers, b'{"id": 1}')
        assert resp.read() == b"ok"
        resp.release()
        assert resp.status_code == 200 and resp.get("x-spikegate-decision") == "admit"
    assert rec.requests[0] == rec.requests[1]


def test_posts_reuse_one_keep_alive_connection_with_each_length_right(
    server: tuple[Recorder, int], clients: list[HTTPClient]
) -> None:
    rec, port = server
    http = client(clients, port)
    wire = Wire(http)
    headers = {"Content-Type": "application/json"}
    bodies = [b"x" * n for n in (0, 1, 9, 10, 5000)]
    with gevent.Timeout(5):
        for body in bodies:
            resp = wire.post("/p", headers, body)
            assert resp.read() == b"ok"
            resp.release()
    assert rec.connections == 1
    assert [r.partition(b"\r\n\r\n")[2] for r in rec.requests] == bodies
    assert all(
        f"Content-Length: {len(b)}\r\n".encode() in r
        for r, b in zip(rec.requests, bodies, strict=True)
    )


def test_without_the_client_internals_it_is_httpclient_request(
    server: tuple[Recorder, int], clients: list[HTTPClient]
) -> None:
    rec, port = server
    http = client(clients, port, 1)
    http.version = "HTTP/1.0"  # not the head this module builds: fall back
    wire = Wire(http)
    with gevent.Timeout(5):
        resp = wire.post("/p", {}, b"abc")
        assert resp.read() == b"ok"
        resp.release()
    assert rec.requests[0].startswith(b"POST /p HTTP/1.0\r\n")


def test_an_idle_socket_the_server_closed_is_not_reused(
    server: tuple[Recorder, int], clients: list[HTTPClient]
) -> None:
    rec, port = server
    rec.close_after_answer = True
    wire = Wire(client(clients, port, 1))
    with gevent.Timeout(5):
        for _ in range(3):
            resp = wire.post("/p", {}, b"abc")
            assert resp.read() == b"ok"
            resp.release()
            gevent.sleep(0.01)  # let the FIN arrive while the socket sits in the pool
    assert rec.connections == 3 and len(rec.requests) == 3


def feeder(*chunks: bytes) -> Callable[[int], bytes]:
    """A recv() that hands out `chunks` one per call, then b"" (the peer's close)."""
    queue = list(chunks)

    def recv(_size: int) -> bytes:
        return queue.pop(0) if queue else b""

    return recv


@pytest.mark.parametrize(
    ("chunks", "content", "reusable"),
    [
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"], b"ok", True),
        ([b"HTTP/1.1 200 OK\r\nCont", b"ent-Length: 5\r\n\r", b"\nab", b"cde"], b"abcde", True),
        (
            [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"],
            b"x",
            True,
        ),
        ([b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx"], b"x", False),
        ([b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx"], b"x", False),
        ([b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx"], b"x", True),
        ([b"HTTP/1.1 200 OK\r\n\r\nto the ", b"close"], b"to the close", False),
        ([b"HTTP/1.1 204 No Content\r\n\r\n"], b"", True),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxy"], b"x", False),  # stray bytes
        (
            [
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
                b"2;x=1\r\nde\r\n0\r\n\r\n",
            ],
            b"abcde",
            True,
        ),
        (
            [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nT: 1\r\n\r\n"],
            b"a",
            True,
        ),
    ],
)
def test_read_reply_takes_the_body_by_its_framing_and_says_if_the_connection_is_reusable(
    chunks: list[bytes], content: bytes, reusable: bool
) -> None:
    reply, keep = read_reply(feeder(*chunks))
    assert (reply.content, keep) == (content, reusable)


def test_read_reply_lower_cases_header_names_and_a_repeated_header_keeps_its_last_value() -> None:
    head = b"HTTP/1.1 429 Too Many\r\nX-Spikegate-Decision: a\r\nx-spikegate-decision: shed\r\n"
    reply, _ = read_reply(feeder(head + b"Retry-After:  2 \r\nContent-Length: 0\r\n\r\n"))
    assert reply.status_code == 429
    assert reply.headers == {
        "x-spikegate-decision": "shed",
        "retry-after": "2",
        "content-length": "0",
    }
    assert reply.get("Retry-After") == "2" and reply.read() == b""


@pytest.mark.parametrize(
    "chunks",
    [
        [],
        [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"],
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"],
    ],
)
def test_read_reply_raises_connection_error_when_the_peer_closes_early(chunks: list[bytes]) -> None:
    with pytest.raises(ConnectionError):
        read_reply(feeder(*chunks))


def test_read_reply_refuses_what_is_not_an_http_answer() -> None:
    with pytest.raises(ValueError, match="status line"):
        read_reply(feeder(b"SSH-2.0-OpenSSH\r\n\r\n"))
