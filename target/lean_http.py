"""The edge's 401s and 429s answered inside the HTTP protocol, before any ASGI machinery.

    socket -> EdgeProtocol.data_received
                exactly one whole POST /bid in the read (the usual case: a small request on a
                keep-alive connection, the previous answer sent): the head's X-Api-Key and
                Content-Length, read once per distinct head (kept) -> the publisher's
                registry.take (its token bucket)
                  rejected: the kept answer for (publisher, Retry-After) written at once
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
one write (tests/bench/rejection_cost.py gives the figures: at 300 requests/s, where each
request wakes a cold process, a 429 costs ~50 us of the target's CPU, of which ~30 us is the
wake-up, read and write that any uvloop server pays).

The answer is byte for byte what EdgeGate sends (edge.Rejections: status, headers, body),
plus uvicorn's default `date` and `server` headers, and `connection: close` when the request
did not keep the connection alive. The same metrics are recorded (`Metrics.batch`). A
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

from spikegate.target.backpressure.clock import NS_PER_S
from spikegate.target.backpressure.decision import RATE_LIMITED, Decision
from spikegate.target.backpressure.registry import BucketRegistry
from spikegate.target.backpressure.token_bucket import wait_after_s
from spikegate.target.edge import (
    ARRIVAL_SCOPE_KEY,
    PUBLISHER_SCOPE_KEY,
    UNKNOWN_KEY,
    Edge,
    api_key_of,
    state_rejections,
)
from spikegate.target.metrics import FLUSH_AT, Metrics

_BID_PATH = b"/bid"
_POST = b"POST"
_CLOSE = b"connection: close\r\n"
_REQUEST_LINE = b"POST /bid HTTP/1.1\r\n"
_LINE_END = len(_REQUEST_LINE) - 2  # the request line's own CRLF starts the header block
_LEFT_TO_UVICORN = re.compile(rb"\r\n(?:transfer-encoding|connection|expect|upgrade):")
_MAX_RETRY_S = 3600  # edge.retry_after_header's cap: the answers differ below it only
_MAX_ENTRIES = 4096  # each cache starts over past this (heads vary by Content-Length)
_MAX_HEAD_KEPT = 2048  # a longer head is read each time, so the kept heads hold <= 8 MiB

# A request head read whole: (the whole message's length, the publisher or None for a
# missing/unknown key, its registry). _LEAVE (never a read's length) hands it to the parser.
_Head = tuple[int, str | None, BucketRegistry | None]
_LEAVE: _Head = (-1, None, None)


class _Lean:
    """What the whole-message path keeps for one app, shared by all its connections.

    heads    request head bytes -> _Head: equal heads read equally, and a client repeats
             its head (only Content-Length varies), so a head is read once, not per request
             (heads up to _MAX_HEAD_KEPT bytes: a client sending big, ever-different heads
             gets them read each time, not kept)
    answers  (publisher, Retry-After seconds) -> (the whole answer's bytes, its metrics
             batch); the bytes hold uvicorn's default headers, so the cache starts over
             when uvicorn renews them (each second, for the date)

    A rejection then costs a few dict lookups, `registry.take`, one write and one append:
    at a few hundred requests per second every touched object is cold, so each one counts
    (tests/bench/rejection_cost.py)."""

    __slots__ = ("answers", "defaults", "defaults_wire", "edge", "heads", "metrics")

    def __init__(self) -> None:
        self.heads: dict[bytes, _Head] = {}
        self.answers: dict[tuple[str | None, int], tuple[bytes, list[float]]] = {}
        self.defaults: list[tuple[bytes, bytes]] | None = None
        self.defaults_wire = b""
        self.edge: Edge | None = None
        self.metrics: Metrics | None = None

    def renew(self, defaults: list[tuple[bytes, bytes]]) -> None:
        """Take uvicorn's renewed default headers; the kept answers, built with the old ones,
        start over."""
        self.defaults = defaults
        self.defaults_wire = b"".join(b"%s: %s\r\n" % pair for pair in defaults)
        self.answers.clear()

    def wire(self, defaults: list[tuple[bytes, bytes]], head: bytes, body: bytes, *,
             keep_alive: bool) -> bytes:  # fmt: skip
        """The answer's bytes: `head` (status line and headers), uvicorn's `defaults`, and
        `connection: close` when the connection is not kept, then `body`."""
        if defaults is not self.defaults:
            self.renew(defaults)
        end = b"\r\n" if keep_alive else _CLOSE + b"\r\n"
        return b"".join((head, self.defaults_wire, end, body))


def _read_head(head: bytes) -> tuple[int, str | None] | None:
    """(the whole message's length, X-Api-Key or None) of a POST /bid head without its
    blank line, or None to hand it to the parser (see EdgeProtocol.data_received)."""
    block = head[_LINE_END:].lower() + b"\r\n"  # "\r\nname: value\r\n...\r\n"
    if _LEFT_TO_UVICORN.search(block):
        return None
    at = block.find(b"\r\ncontent-length:")
    if at < 0 or block.find(b"\r\ncontent-length:", at + 1) >= 0:
        return None
    value = block[at + 17 : block.index(b"\r\n", at + 2)].strip(b" \t")
    if not value.isdigit():
        return None
    key = None
    at = block.find(b"\r\nx-api-key:")  # the first, as api_key_of
    if at >= 0:
        stop = block.index(b"\r\n", at + 2)
        key = head[_LINE_END + at + 12 : _LINE_END + stop].strip(b" \t").decode("latin-1")
    return len(head) + 4 + int(value), key


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the edge's rejections answered in place.

    `app_for_edge` is the Starlette app whose `state.edge`, `state.metrics` serve the
    decision, and `lean` its caches; both are class attributes, set by `protocol_for`,
    because uvicorn builds one protocol per connection from the class alone."""

    app_for_edge: Starlette
    lean: _Lean

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # the rejection being answered from the parser's callbacks: (status, reason, head,
        # body, started), else None
        self._rejecting: tuple[int, str, bytes, bytes, float] | None = None
        # an admission decided on the whole message, handed to on_headers_complete
        self._admitted: tuple[str | None, int] | None = None
        self._whole_at = 0.0  # loop time of the latest answer from data_received

    # -- a whole POST /bid in one read: decided without the parser ----------------------------
    def data_received(self, data: bytes) -> None:
        """Answer `data` here when it is exactly one POST /bid the edge rejects; else hand it
        to the parser (a partial or pipelined read, a header this path leaves to uvicorn).

        Only a rejection is answered here; an admission is handed on with its decision, so
        the parser validates every request that reaches the app, and the bucket is charged
        once. The head is read only for Content-Length and X-Api-Key (the first, as
        `api_key_of`): a head with Transfer-Encoding, Connection, Expect or Upgrade goes to the
        parser, so keep-alive and framing are never guessed. Kept in one function: each
        call costs, cold (see _Lean)."""
        if (
            data.startswith(_REQUEST_LINE)
            and self._rejecting is None
            and not self.pipeline
            and (self.cycle is None or self.cycle.response_complete)
        ):
            end = data.find(b"\r\n\r\n")
            lean = self.lean
            head = lean.heads.get(data[:end]) if end > 0 else _LEAVE
            if head is None:
                head = self._learn_head(data[:end])
            length, pub_id, registry = head
            if length == len(data):
                started = time.perf_counter()
                if pub_id is None:
                    wait_ns = -1  # a missing or unknown key
                elif registry is not None and lean.edge.enabled:  # type: ignore[union-attr]
                    wait_ns = registry.take(pub_id)
                else:
                    wait_ns = 0
                if not wait_ns:
                    self._admitted = (pub_id, time.monotonic_ns())
                else:
                    secs = -(-wait_ns // NS_PER_S) if wait_ns > 0 else 0
                    if secs > _MAX_RETRY_S:
                        secs = _MAX_RETRY_S
                    defaults = self.server_state.default_headers
                    if defaults is not lean.defaults:
                        lean.renew(defaults)
                    answer = lean.answers.get((pub_id, secs))
                    if answer is None:
                        answer = self._learn_answer(pub_id, wait_ns, secs)
                    self.transport.write(answer[0])
                    batch = answer[1]
                    batch.append(time.perf_counter() - started)
                    if len(batch) >= FLUSH_AT:
                        lean.metrics.flush()  # type: ignore[union-attr]
                    self.server_state.total_requests += 1
                    self._whole_at = self.loop.time()
                    if self.timeout_keep_alive_task is None:  # the connection's first request
                        self.timeout_keep_alive_task = self.loop.call_later(
                            self.timeout_keep_alive, self.timeout_keep_alive_handler
                        )
                    return
        super().data_received(data)
        self._admitted = None  # used by now, unless the parser refused the request (400)

    def _learn_head(self, head: bytes) -> _Head:
        """Read `head` (a cache miss) and keep what it gives."""
        lean = self.lean
        state = self.app_for_edge.state
        lean.edge, lean.metrics = state.edge, state.metrics
        read = _read_head(head)
        entry = _LEAVE
        if read is not None:
            length, key = read
            route = lean.edge.route(key)  # type: ignore[union-attr]
            entry = (length, None, None) if route is None else (length, *route)
        if len(head) <= _MAX_HEAD_KEPT:
            if len(lean.heads) >= _MAX_ENTRIES:
                lean.heads.clear()
            lean.heads[head] = entry
        return entry

    def _learn_answer(
        self, pub_id: str | None, wait_ns: int, secs: int
    ) -> tuple[bytes, list[float]]:
        """The answer to a rejection (a cache miss): EdgeGate's bytes (Rejections.wire) with
        uvicorn's default headers, kept alive, and the metrics batch it is counted in."""
        lean = self.lean
        state = self.app_for_edge.state
        decision = (
            UNKNOWN_KEY if pub_id is None else Decision(False, RATE_LIMITED, wait_after_s(wait_ns))
        )
        status, head, body = state_rejections(state).wire(pub_id, decision)
        wire = lean.wire(self.server_state.default_headers, head, body, keep_alive=True)
        answer = (wire, lean.metrics.batch("/bid", status, decision.reason))  # type: ignore[union-attr]
        if len(lean.answers) >= _MAX_ENTRIES:
            lean.answers.clear()
        lean.answers[pub_id, secs] = answer
        return answer

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
        wire = self.lean.wire(self.server_state.default_headers, head, body, keep_alive=keep_alive)
        self.transport.write(wire)


def protocol_for(app: Starlette) -> type[EdgeProtocol]:
    """An EdgeProtocol class bound to `app` (uvicorn's `http=`)."""
    return type("EdgeProtocol", (EdgeProtocol,), {"app_for_edge": app, "lean": _Lean()})
