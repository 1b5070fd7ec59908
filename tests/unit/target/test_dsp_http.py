"""The fan-out's HTTP/1.1 connection protocol, fed bytes through a fake transport: framing,
keep-alive, resets and malformed answers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from target.dsp_client import _Connection


class FakeTransport:
    def __init__(self, protocol: _Connection) -> None:
        self.protocol = protocol
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.protocol.connection_lost(None)


def _connected() -> tuple[_Connection, FakeTransport]:
    conn = _Connection(asyncio.get_running_loop())
    transport = FakeTransport(conn)
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


def _ok(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    return head + b"".join(extra) + b"Content-Length: %d\r\n\r\n%b" % (len(body), body)


async def test_answer_split_across_reads_resolves_once_complete_and_stays_reusable() -> None:
    conn, transport = _connected()
    answer = conn.exchange(b"POST /bid HTTP/1.1\r\n\r\n")
    raw = _ok(b'{"seatbid": []}')
    for i in range(0, len(raw), 7):
        assert not answer.done()
        conn.data_received(raw[i : i + 7])
    assert answer.result() == (200, b'{"seatbid": []}')
    assert conn.reusable and not transport.closed
    assert transport.written == [b"POST /bid HTTP/1.1\r\n\r\n"]


async def test_no_bid_204_has_an_empty_body() -> None:
    conn, _ = _connected()
    answer = conn.exchange(b"x")
    conn.data_received(b"HTTP/1.1 204 No Content\r\nX-Spikegate-Dsp: d\r\n\r\n")
    assert answer.result() == (204, b"")
    assert conn.reusable


async def test_connection_close_answer_is_not_reused() -> None:
    conn, _ = _connected()
    answer = conn.exchange(b"x")
    conn.data_received(_ok(b"{}", b"Connection: close\r\n"))
    assert answer.result() == (200, b"{}")
    assert not conn.reusable


async def test_chunked_body_is_joined() -> None:
    conn, _ = _connected()
    answer = conn.exchange(b"x")
    conn.data_received(
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{"a\r\n5\r\n": 1}\r\n0\r\n\r\n'
    )
    assert answer.result() == (200, b'{"a": 1}')


async def test_reset_before_the_answer_completes_fails_the_call() -> None:
    conn, _ = _connected()
    answer = conn.exchange(b"x")
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{")
    conn.connection_lost(ConnectionResetError())
    with pytest.raises(ConnectionResetError):
        answer.result()
    assert conn.closed
    with pytest.raises(ConnectionResetError):
        conn.exchange(b"again")  # a closed connection refuses new work


async def test_body_delimited_by_the_end_of_the_connection_is_an_answer() -> None:
    conn, _ = _connected()
    answer = conn.exchange(b"x")
    conn.data_received(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{}")
    conn.connection_lost(None)
    assert answer.result() == (200, b"{}")


async def test_malformed_answer_fails_with_value_error_and_closes() -> None:
    conn, transport = _connected()
    answer = conn.exchange(b"x")
    conn.data_received(b"NOT HTTP AT ALL\r\n\r\n")
    with pytest.raises(ValueError, match="malformed HTTP response"):
        answer.result()
    assert transport.closed


async def test_unsolicited_answer_closes_the_connection() -> None:
    conn, transport = _connected()
    conn.data_received(_ok(b"{}"))
    assert transport.closed and conn.closed


async def test_second_exchange_while_one_is_pending_is_refused() -> None:
    conn, _ = _connected()
    first: Any = conn.exchange(b"x")
    with pytest.raises(ConnectionResetError):
        conn.exchange(b"y")
    first.cancel()
