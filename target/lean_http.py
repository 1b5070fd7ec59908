"""The edge's 401s and 429s answered inside the HTTP protocol, before any ASGI machinery.

    socket -> httptools parser -> EdgeProtocol.on_headers_complete
                 POST /bid: X-Api-Key -> Edge.check (the publisher's token bucket)
                   rejected: the body is read and dropped, then the pre-encoded answer is
                             written from on_message_complete (no task, no scope, no ASGI)
                   admitted: the publisher and arrival time go into the scope, which tells
                             EdgeGate and EdgeMiddleware the check is done -> uvicorn's cycle
                 anything else: uvicorn's own path, unchanged

Why (issue 14): goodput at k x capacity is at most (1 - k r/a) / (1 - r/a) of capacity, with r
the CPU per designed rejection and a per admission. Under uvicorn the decision itself is a
microsecond, but an ASGI request costs 120-140 us before any app code runs (a task, a scope,
a cycle, two send() calls, a keep-alive timer). Here a rejection costs the parser callbacks
and one write.

The answer is byte for byte what EdgeGate sends (edge.Rejections: status, headers, body),
plus uvicorn's default `date` and `server` headers, and `connection: close` when the request
did not keep the connection alive. The same metrics are recorded (`Metrics.observe`). A
request this path cannot answer alone (a pipelined request behind one still running, a query
string, an upgrade) goes down uvicorn's path, where EdgeGate makes the same decision.

`python -m spikegate.target` serves with this protocol (`protocol_for(app)`); plain
`uvicorn --factory spikegate.target.app:create_app_from_env` still works through EdgeGate.
"""

from __future__ import annotations

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


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the edge's rejections answered in place.

    `app` is the Starlette app whose `state.edge`, `state.metrics` serve the decision; it is a
    class attribute, set by `protocol_for`, because uvicorn builds one protocol per connection
    from the class alone."""

    app_for_edge: Starlette

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # the rejection being answered: (status, reason, head, body, started), else None
        self._rejecting: tuple[int, str, bytes, bytes, float] | None = None
        self._defaults: list[tuple[bytes, bytes]] | None = None
        self._defaults_wire = b""

    def on_headers_complete(self) -> None:
        if (
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
        defaults = self.server_state.default_headers  # a new list each second (the date)
        if defaults is not self._defaults:
            self._defaults = defaults
            self._defaults_wire = b"".join(b"%s: %s\r\n" % pair for pair in defaults)
        self.transport.write(
            b"".join((head, self._defaults_wire, b"" if keep_alive else _CLOSE, b"\r\n", body))
        )
        metrics: Metrics = self.app_for_edge.state.metrics
        metrics.observe("/bid", status, reason, time.perf_counter() - started)
        if keep_alive:
            self.on_response_complete()  # resume reading, next pipelined request or keep-alive
        else:
            self.server_state.total_requests += 1
            self.transport.close()


def protocol_for(app: Starlette) -> type[EdgeProtocol]:
    """An EdgeProtocol class bound to `app` (uvicorn's `http=`)."""
    return type("EdgeProtocol", (EdgeProtocol,), {"app_for_edge": app})
