"""The edge's 401s and 429s answered inside the HTTP protocol, before any ASGI machinery.

    socket -> EdgeProtocol.data_received
                exactly one whole POST /bid in the read (the usual case: a small request on a
                keep-alive connection, the previous answer sent): X-Api-Key and Content-Length
                read from the head -> Edge.check (the publisher's token bucket)
                  rejected: the pre-encoded answer written at once (no parser callbacks)
                  admitted: handed to the parser with its decision (checked once)
           -> httptools parser -> on_headers_complete (a request split over reads, pipelined,
                or with Transfer-Encoding / Connection / Expect / Upgrade)
                POST /bid: Edge.check; rejected: the body read and dropped, the answer written
                from on_message_complete; admitted: the publisher and arrival time go into the
                scope, which tells EdgeGate and EdgeMiddleware the check is done
           -> uvicorn's cycle and the app, for everything else (unchanged)

Why (issue 14): goodput at k x capacity is at most (1 - k r/a) / (1 - r/a) of capacity, with r
the CPU per designed rejection and a per admission. Under uvicorn the decision itself is a
microsecond, but an ASGI request costs 120-140 us before any app code runs (a task, a scope,
a cycle, two send() calls, a keep-alive timer). Here a rejection costs one read, one check and
one write (tests/bench/rejection_cost.py gives the figures).

The answer is byte for byte what EdgeGate sends (edge.Rejections: status, headers, body),
plus uvicorn's default `date` and `server` headers, and `connection: close` when the request
did not keep the connection alive. The same metrics are recorded (`Metrics.observe`). A
request this path cannot answer alone (a pipelined request behind one still running, a query
string, an upgrade) goes down uvicorn's path, where EdgeGate makes the same decision. Only
rejections are answered without the parser: every request that reaches the app was parsed
(and validated) by httptools.

`python -m spikegate.target` serves with this protocol (`protocol_for(app)`); plain
`uvicorn --factory spikegate.target.app:create_app_from_env` still works through EdgeGate.
"""

from __future__ import annotations

import re
import time
from typing import Any

from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from spikegate.target.edge import (
    ARRIVAL_SCOPE_KEY,
    PUBLISHER_SCOPE_KEY,
    Edge,
    api_key_of,
    state_rejections,
)
from spikegate.target.metrics import Metrics

_BID_PATH = b"/bid"
_POST = b"POST"
_CLOSE = b"connection: close\r\n"
_REQUEST_LINE = b"POST /bid HTTP/1.1\r\n"
_LINE_END = len(_REQUEST_LINE) - 2  # the request line's own CRLF starts the header block
_LEFT_TO_UVICORN = re.compile(rb"\r\n(?:transfer-encoding|connection|expect|upgrade):")


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the edge's rejections answered in place.

    `app_for_edge` is the Starlette app whose `state.edge`, `state.metrics` serve the
    decision; it is a class attribute, set by `protocol_for`, because uvicorn builds one
    protocol per connection from the class alone."""

    app_for_edge: Starlette

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # the rejection being answered from the parser's callbacks: (status, reason, head,
        # body, started), else None
        self._rejecting: tuple[int, str, bytes, bytes, float] | None = None
        # an admission decided on the whole message, handed to on_headers_complete
        self._admitted: tuple[str | None, int] | None = None
        self._defaults: list[tuple[bytes, bytes]] | None = None
        self._defaults_wire = b""
        self._whole_at = 0.0  # loop time of the latest answer from data_received

    # -- a whole POST /bid in one read: decided without the parser ----------------------------
    def data_received(self, data: bytes) -> None:
        if (
            data.startswith(_REQUEST_LINE)
            and self._rejecting is None
            and not self.pipeline
            and (self.cycle is None or self.cycle.response_complete)
            and self._answer_whole(data)
        ):
            return
        super().data_received(data)
        self._admitted = None  # used by now, unless the parser refused the request (400)

    def _answer_whole(self, data: bytes) -> bool:
        """Answer `data` here when it is exactly one POST /bid the edge rejects; False to hand
        it to the parser (a partial or pipelined read, a header this path leaves to uvicorn).

        Only a rejection is answered here; an admission is handed on with its decision, so
        the parser validates every request that reaches the app, and the bucket is charged
        once. The head is read only for Content-Length and X-Api-Key (the first, as
        `api_key_of`): a head with Transfer-Encoding, Connection, Expect or Upgrade goes to the
        parser, so keep-alive and framing are never guessed."""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return False
        block = data[_LINE_END : end + 2].lower()  # "\r\nname: value\r\n...\r\n"
        if _LEFT_TO_UVICORN.search(block):
            return False
        at = block.find(b"\r\ncontent-length:")
        if at < 0 or block.find(b"\r\ncontent-length:", at + 1) >= 0:
            return False
        value = block[at + 17 : block.index(b"\r\n", at + 2)].strip(b" \t")
        if not value.isdigit() or end + 4 + int(value) != len(data):
            return False
        started = time.perf_counter()
        arrival_ns = time.monotonic_ns()
        at = block.find(b"\r\nx-api-key:")
        key = None
        if at >= 0:
            stop = block.index(b"\r\n", at + 2)
            key = data[_LINE_END + at + 12 : _LINE_END + stop].strip(b" \t").decode("latin-1")
        state = self.app_for_edge.state
        edge: Edge = state.edge
        pub_id, decision = edge.check(key)
        if decision.admitted:
            self._admitted = (pub_id, arrival_ns)
            return False
        status, head, body = state_rejections(state).wire(pub_id, decision)
        self._write(head, body, keep_alive=True)
        metrics: Metrics = state.metrics
        metrics.observe("/bid", status, decision.reason, time.perf_counter() - started)
        self.server_state.total_requests += 1
        self._whole_at = self.loop.time()
        if self.timeout_keep_alive_task is None:  # the first request on this connection
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )
        return True

    def timeout_keep_alive_handler(self) -> None:
        """A connection answered from data_received was not idle: wait out the rest."""
        idle = self.loop.time() - self._whole_at
        if idle < self.timeout_keep_alive:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive - idle, self.timeout_keep_alive_handler
            )
            return
        super().timeout_keep_alive_handler()

    # -- through the parser: a request split over reads, or pipelined -------------------------
    def on_headers_complete(self) -> None:
        admitted, self._admitted = self._admitted, None
        if admitted is not None:  # decided on the whole message in data_received
            self.scope[PUBLISHER_SCOPE_KEY], self.scope[ARRIVAL_SCOPE_KEY] = admitted  # type: ignore[literal-required]
        elif (
            self.url == _BID_PATH
            and self.parser.get_method() == _POST
            and not self.pipeline
            and (self.cycle is None or self.cycle.response_complete)
            and not self.parser.should_upgrade()
        ):
            started = time.perf_counter()
            arrival_ns = time.monotonic_ns()  # tmax counts from here, before the body
            state = self.app_for_edge.state
            edge: Edge = state.edge
            pub_id, decision = edge.check(api_key_of(self.scope))  # type: ignore[arg-type]
            if not decision.admitted:
                status, head, body = state_rejections(state).wire(pub_id, decision)
                self._rejecting = (status, decision.reason, head, body, started)
                return
            self.scope[PUBLISHER_SCOPE_KEY] = pub_id  # type: ignore[literal-required]
            self.scope[ARRIVAL_SCOPE_KEY] = arrival_ns  # type: ignore[literal-required]
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._rejecting is None:
            super().on_body(body)  # a rejected request's body is read and dropped

    def on_message_complete(self) -> None:
        rejecting = self._rejecting
        if rejecting is None:
            super().on_message_complete()
            return
        self._rejecting = None
        status, reason, head, body, started = rejecting
        keep_alive = self.parser.should_keep_alive()
        self._write(head, body, keep_alive=keep_alive)
        metrics: Metrics = self.app_for_edge.state.metrics
        metrics.observe("/bid", status, reason, time.perf_counter() - started)
        if keep_alive:
            self.on_response_complete()  # resume reading, next pipelined request or keep-alive
        else:
            self.server_state.total_requests += 1
            self.transport.close()

    def _write(self, head: bytes, body: bytes, *, keep_alive: bool) -> None:
        defaults = self.server_state.default_headers  # a new list each second (the date)
        if defaults is not self._defaults:
            self._defaults = defaults
            self._defaults_wire = b"".join(b"%s: %s\r\n" % pair for pair in defaults)
        end = b"\r\n" if keep_alive else _CLOSE + b"\r\n"
        self.transport.write(b"".join((head, self._defaults_wire, end, body)))


def protocol_for(app: Starlette) -> type[EdgeProtocol]:
    """An EdgeProtocol class bound to `app` (uvicorn's `http=`)."""
    return type("EdgeProtocol", (EdgeProtocol,), {"app_for_edge": app})
