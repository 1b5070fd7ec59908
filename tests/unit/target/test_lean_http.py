"""lean_http's EdgeProtocol under a real uvicorn on a loopback port: the edge's 401/429
answered inside the HTTP protocol with EdgeGate's bytes, the framework never entered for them,
the bucket charged once, keep-alive, pipelining, split bodies and `Connection: close` kept."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from spikegate.target import lean_http
from spikegate.target.backpressure.clock import FakeClock
from spikegate.target.config import PublisherConfig
from spikegate.target.edge import Edge
from spikegate.target.lean_http import EdgeProtocol, protocol_for
from tests.unit.target.test_edge_gate import _app, assert_counted

pytestmark = pytest.mark.timeout(20)


class _Served:
    """`app` under uvicorn in a thread; `calls` counts the requests uvicorn handed to ASGI."""

    def __init__(self, app: Starlette, lean: bool, keep_alive_s: int = 5) -> None:
        self.app = app
        self.calls = 0

        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                self.calls += 1
            await app(scope, receive, send)

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.protocol = protocol_for(app)
        config = uvicorn.Config(
            counted,
            http=self.protocol if lean else "httptools",
            lifespan="off",
            log_level="warning",
            timeout_keep_alive=keep_alive_s,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]})
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def served() -> Iterator[_Served]:
    app, reached, entered = _app()
    app.state.reached, app.state.entered = reached, entered
    s = _Served(app, lean=True)
    try:
        yield s
    finally:
        s.stop()


def _bid(key: str | None = "k", body: bytes = b"{}", close: bool = False) -> bytes:
    head = b"POST /bid HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
    if key is not None:
        head += b"x-api-key: " + key.encode() + b"\r\n"
    if close:
        head += b"connection: close\r\n"
    return head + b"content-length: %d\r\n\r\n" % len(body) + body


def _read(sock: socket.socket, n: int) -> list[tuple[int, dict[str, str], bytes]]:
    """The next `n` responses on `sock`: (status, headers, body)."""
    buf, out = b"", []
    while len(out) < n:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(out)} of {n} responses"
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        size = int(headers["content-length"])
        while len(buf) < size:
            chunk = sock.recv(65536)
            assert chunk, "connection closed inside a body"
            buf += chunk
        out.append((int(lines[0].split()[1]), headers, buf[:size]))
        buf = buf[size:]
    return out


def _each(sock: socket.socket, requests: list[bytes]) -> list[tuple[int, dict[str, str], bytes]]:
    """Each request after the previous answer, as an HTTP/1.1 client does."""
    out = []
    for request in requests:
        sock.sendall(request)
        out += _read(sock, 1)
    return out


def _conn(s: _Served) -> socket.socket:
    return socket.create_connection(("127.0.0.1", s.port), timeout=5)


def test_rejections_are_answered_in_the_protocol_and_admissions_reach_the_route(
    served: _Served,
) -> None:
    with _conn(served) as sock:
        got = _each(sock, [_bid()] * 4)
    assert [g[0] for g in got] == [200, 200, 429, 429]
    assert served.app.state.reached == ["p", "p"]  # one token per admission, checked once
    assert served.app.state.entered == ["/bid", "/bid"]  # the 429s never entered the app
    assert served.calls == 2  # nor ASGI at all: no task, no scope, no cycle
    _, headers, body = got[-1]
    assert headers["x-spikegate-decision"] == "rate_limited"
    assert headers["retry-after"].isdigit() and int(headers["retry-after"]) >= 1
    assert b'"decision": "rate_limited"' in body
    assert "date" in headers and headers["server"] == "uvicorn"
    assert_counted(served.app.state.metrics, rejected=2)


def test_the_answers_are_edge_gates_answers_byte_for_byte() -> None:
    """Same status, headers (date aside) and body as the ASGI path, for 401s and 429s."""
    answers, calls = [], []
    for lean in (True, False):
        app, _, _ = _app()
        s = _Served(app, lean=lean)
        try:
            with _conn(s) as sock:
                got = _each(sock, [_bid(key) for key in ("k", "k", "k", None, "unknown")])
        finally:
            s.stop()
        calls.append(s.calls)
        answers.append([(st, {k: v for k, v in h.items() if k != "date"}, b) for st, h, b in got])
    assert [a[0] for a in answers[0]] == [200, 200, 429, 401, 401]
    assert answers[0] == answers[1]
    assert calls == [2, 5]  # lean: the 3 rejections never became ASGI requests


def test_pipelined_requests_are_answered_in_order(served: _Served) -> None:
    """Admitted, then rejected, in one packet: the 429 must not overtake the running 200."""
    with _conn(served) as sock:
        sock.sendall(_bid() + _bid() + _bid() + _bid("unknown"))
        got = _read(sock, 4)
    assert [g[0] for g in got] == [200, 200, 429, 401]
    assert served.app.state.reached == ["p", "p"]


def test_a_rejected_body_split_across_packets_is_read_and_dropped(served: _Served) -> None:
    with _conn(served) as sock:
        _each(sock, [_bid(), _bid()])
        request = _bid(body=b'{"id": "' + b"x" * 5000 + b'"}')
        cut = request.index(b"\r\n\r\n") + 10
        sock.sendall(request[:cut])
        time.sleep(0.05)
        sock.sendall(request[cut:])
        assert _read(sock, 1)[0][0] == 429
        assert _each(sock, [_bid("unknown")])[0][0] == 401  # still in step after it
    assert served.calls == 2


def test_connection_close_is_honoured(served: _Served) -> None:
    with _conn(served) as sock:
        _each(sock, [_bid(), _bid()])
        sock.sendall(_bid(close=True))
        [(status, headers, _)] = _read(sock, 1)
        assert status == 429 and headers["connection"] == "close"
        assert sock.recv(10) == b""  # closed by the server


def test_a_query_string_goes_the_asgi_way_with_the_same_decision(served: _Served) -> None:
    with _conn(served) as sock:
        got = _each(sock, [_bid().replace(b"/bid ", b"/bid?x=1 ", 1)] * 3)
    assert [g[0] for g in got] == [200, 200, 429]  # EdgeGate decided the third
    assert served.calls == 3


def test_protocol_for_binds_the_app_to_its_own_class() -> None:
    a, b = Starlette(), Starlette()
    pa, pb = protocol_for(a), protocol_for(b)
    assert issubclass(pa, EdgeProtocol) and pa.app_for_edge is a and pb.app_for_edge is b


def _served(keep_alive_s: int = 5) -> _Served:
    app, reached, entered = _app()
    app.state.reached, app.state.entered = reached, entered
    return _Served(app, lean=True, keep_alive_s=keep_alive_s)


@pytest.mark.parametrize(
    "variant",
    [
        "X-API-KEY: k",  # header names in any case
        "x-api-key:    k  ",  # optional whitespace around the value
        "X-Api-Key: k\r\nX-Api-Key: other",  # the first one counts, as in api_key_of
        "X-Api-Key: k\r\nExpect: 100-continue",  # left to the parser: the same decision
    ],
)
def test_whole_requests_are_read_like_the_parser_reads_them(variant: str) -> None:
    s = _served()
    try:
        request = _bid(key=None).replace(b"\r\n\r\n", b"\r\n" + variant.encode() + b"\r\n\r\n")
        with _conn(s) as sock:
            got = _each(sock, [request] * 4)
    finally:
        s.stop()
    assert [g[0] for g in got] == [200, 200, 429, 429]
    assert s.app.state.reached == ["p", "p"]
    assert s.calls == 2


def test_a_chunked_request_goes_to_the_parser_and_gets_the_same_answer(served: _Served) -> None:
    chunked = (
        b"POST /bid HTTP/1.1\r\nhost: t\r\nx-api-key: k\r\ntransfer-encoding: chunked\r\n\r\n"
        b"2\r\n{}\r\n0\r\n\r\n"
    )
    with _conn(served) as sock:
        got = _each(sock, [_bid(), _bid(), chunked, _bid()])
    assert [g[0] for g in got] == [200, 200, 429, 429]
    assert served.calls == 2


def test_a_connection_answered_only_in_the_protocol_stays_open_while_used() -> None:
    """uvicorn arms its keep-alive timer after an ASGI answer; requests answered without one
    must not be cut by it while they keep coming, and the idle connection still closes."""
    s = _served(keep_alive_s=1)
    try:
        with _conn(s) as sock:
            _each(sock, [_bid(), _bid()])  # the last ASGI answer arms the 1 s timer
            until = time.monotonic() + 2.5
            while time.monotonic() < until:  # 429s only, every 0.1 s, past the timer
                assert _each(sock, [_bid()])[0][0] == 429
                time.sleep(0.1)
            sock.settimeout(10)
            assert sock.recv(10) == b""  # idle for 1 s: closed by the server
    finally:
        s.stop()


def test_retry_after_follows_the_bucket_while_the_head_and_answers_are_reused() -> None:
    """The same head each time (read once, kept), and answers kept per Retry-After second:
    each 429 still says when this publisher's tokens come back."""
    app, reached, _ = _app()
    clock = FakeClock()
    app.state.edge = Edge(
        {"p": PublisherConfig(api_key="k", rate_per_s=0.25, burst=1)}, clock=clock
    )
    app.state.reached, app.state.entered = reached, []
    s = _Served(app, lean=True)
    try:
        with _conn(s) as sock:
            got = []
            for advance_s in (0, 0, 1.5, 0, 2.4, 0.1):  # waits: -, 4, 2.5, 2.5, 0.1, 0
                clock.advance(advance_s)
                got += _each(sock, [_bid()])
    finally:
        s.stop()
    statuses = [status for status, _, _ in got]
    assert statuses == [200, 429, 429, 429, 429, 200]
    assert [h.get("retry-after") for _, h, _ in got[1:5]] == ["4", "3", "3", "1"]
    assert s.calls == 2 and reached == ["p", "p"]
    assert len(s.protocol.lean.heads) == 1  # one head, read once


def test_answers_carry_uvicorns_current_default_headers() -> None:
    """uvicorn renews its date header each second: a kept answer must not keep the old one."""
    s = _served()
    try:
        with _conn(s) as sock:
            first = _each(sock, [_bid(), _bid(), _bid()])[-1]
            state = s.server.server_state
            state.default_headers = [
                (b"date", b"Thu, 01 Jan 2026 00:00:00 GMT"),
                *[(n, v) for n, v in state.default_headers if n != b"date"],
            ]
            second = _each(sock, [_bid()])[0]
    finally:
        s.stop()
    assert first[0] == second[0] == 429
    assert first[1]["date"] != "Thu, 01 Jan 2026 00:00:00 GMT"
    assert second[1]["date"] == "Thu, 01 Jan 2026 00:00:00 GMT"
    assert second[1]["server"] == "uvicorn"


def test_an_edge_switched_off_while_serving_admits_on_the_lean_path(served: _Served) -> None:
    with _conn(served) as sock:
        assert [g[0] for g in _each(sock, [_bid()] * 3)] == [200, 200, 429]
        served.app.state.edge.enabled = False
        assert [g[0] for g in _each(sock, [_bid()] * 2)] == [200, 200]
        assert _each(sock, [_bid("unknown")])[0][0] == 401  # still an unknown key
    assert served.app.state.reached == ["p"] * 4


def test_the_kept_heads_and_answers_stay_bounded(
    served: _Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Heads differ by Content-Length (and by any header a client varies): the cache starts
    over past its bound instead of growing with them."""
    monkeypatch.setattr(lean_http, "_MAX_ENTRIES", 4)
    with _conn(served) as sock:
        bodies = [b'{"id": "%s"}' % (b"x" * i) for i in range(12)]
        got = _each(sock, [_bid(body=body) for body in bodies])
    assert [g[0] for g in got] == [200, 200] + [429] * 10
    assert 0 < len(served.protocol.lean.heads) <= 4
    assert 0 < len(served.protocol.lean.answers) <= 4


def test_a_long_head_is_answered_alike_but_not_kept(served: _Served) -> None:
    """Heads past _MAX_HEAD_KEPT are read each time: big, ever-different heads cannot fill
    the cache (4096 x up to 256 KiB per read)."""
    pad = b"x-pad: " + b"p" * (lean_http._MAX_HEAD_KEPT) + b"\r\n"
    long_bid = _bid().replace(b"\r\n\r\n", b"\r\n" + pad + b"\r\n", 1)
    with _conn(served) as sock:
        got = _each(sock, [long_bid] * 4)
    assert [g[0] for g in got] == [200, 200, 429, 429]
    assert served.calls == 2  # the 429s were still answered in the protocol
    assert not served.protocol.lean.heads
