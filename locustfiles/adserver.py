"""Locust entry file: the ad-server user (open model) and, by import, the recorder plugin.

    locust -f locustfiles/adserver.py,locustfiles/shape_<shape>.py --headless --host URL

    open loop (one per user; users share the process's arrival schedule)
       next intended instant -> sleep until it -> count intended
         -> later than MAX_LATENESS_S, or max_inflight requests in flight: not sent (shortfall)
         -> else a sender of the pool (sender.py): lateness as of the send, POST /bid
              -> classify -> record + Locust request event
              200 and impression_rate: POST /impression -> 202: acked id
    closed loop (benchmark mode; max_inflight users): POST /bid back to back, no greenlet

Each open-model arrival runs on its own sender greenlet (a bounded pool of long-lived ones,
max_inflight at most, instead of a new greenlet per arrival), so a slow target does not lower the
offered load: the shortfall shows up as intended > sent and as lateness. Designed
rejections (429/503 with X-Spikegate-Decision) are successes in Locust's own stats;
everything else that is not admitted is a Locust failure named by its outcome. Latency is
measured from the actual send; client_timeout_s bounds the connect and each socket read.

The hot path talks to geventhttpclient's connection pool and response parser through
wire.py (the request head built once per publisher, no per-request header merging) and
fires Locust's `request` event itself, instead of going through FastHttpSession +
catch_response: that layer parses the URL, copies and merges headers, consults a cookie
jar, wraps the response twice and builds a context manager per request, which cost more
CPU than the request itself. What it offered and this user does not need: cookies,
redirects and gzip decoding (the target sets no cookies, never redirects and is not asked
to compress). Basic auth in the host URL is honoured as FastHttpSession would.
"""

from __future__ import annotations

import base64
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import gevent
from gevent import GreenletExit
from geventhttpclient.url import URL
from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser
from locust.exception import CatchResponseError
from locust.user.task import LOCUST_STATE_STOPPING

from spikegate.contract.outcomes import (
    ACCEPTED,
    ADMITTED_OUTCOMES,
    CONN_ERROR,
    DECISION_HEADER,
    DESIGNED_REJECTIONS,
    OK,
    TIMEOUT,
    classify,
)
from spikegate.locustfiles.plugin import (
    IDLE_SLEEP_S,
    MAX_LATENESS_S,
    YIELD_EVERY,
    paced,
    runtime,
)
from spikegate.locustfiles.recorder import BID, IMPRESSION, OUTCOME_INDEX, valid_retry_after
from spikegate.locustfiles.sender import SenderPool
from spikegate.locustfiles.wire import Wire

__all__ = ["AdServerUser"]

_ACCEPTED = OUTCOME_INDEX[ACCEPTED]
_OK = OUTCOME_INDEX[OK]
_TIMEOUT = OUTCOME_INDEX[TIMEOUT]
_CONN_ERROR = OUTCOME_INDEX[CONN_ERROR]
_SUCCESS = frozenset(OUTCOME_INDEX[o] for o in ADMITTED_OUTCOMES | DESIGNED_REJECTIONS)
_DESIGNED = frozenset(OUTCOME_INDEX[o] for o in DESIGNED_REJECTIONS)
_TIMEOUTS = (TimeoutError, gevent.Timeout)  # socket timeouts are TimeoutError
_DECISION = DECISION_HEADER.lower()  # Reply's header names are lower-cased
_NAMES = ("/bid", "/impression")  # by endpoint (BID, IMPRESSION): Locust's request names
perf_counter = time.perf_counter
wall = time.time


class AdServerUser(FastHttpUser):
    """Sends this process's share of the intended arrivals to POST /bid (+ /impression)."""

    wait_time = constant(0)

    def __init__(self, environment: Any) -> None:
        rt = runtime()
        self.network_timeout = rt.params.client_timeout_s
        self.connection_timeout = rt.params.client_timeout_s
        self.concurrency = rt.params.max_inflight
        self.client_pool = rt.client_pool()
        super().__init__(environment)  # checks the host; self.client stays usable
        self.rt = rt
        host = self.host
        assert host is not None  # FastHttpUser stops the test without one
        base = URL(host)
        prefix = base.path.rstrip("/")
        self._http = self.client_pool.get_client(base)
        self._wire = Wire(self._http)
        self._paths = tuple(prefix + name for name in _NAMES)
        split = urlsplit(host)
        origin = f"{split.scheme}://{split.netloc.rpartition('@')[2]}"
        self._urls = tuple(origin + prefix + name for name in _NAMES)  # no credentials
        self._auth: dict[str, str] = {}
        if base.user or base.password:
            token = f"{unquote(base.user or '')}:{unquote(base.password or '')}"
            self._auth = {"Authorization": "Basic " + base64.b64encode(token.encode()).decode()}
        self._headers: dict[str, dict[str, str]] = {}
        self._fire = environment.events.request.fire

    @task
    def dispatch(self) -> None:
        if not self.rt.dispatching:
            gevent.sleep(IDLE_SLEEP_S)  # before test_start, after the process finished
        elif self.rt.params.mode == "closed":
            self._closed_loop()
        else:
            self._open_loop()

    def _stopping(self) -> bool:
        return self._state == LOCUST_STATE_STOPPING or not self.rt.dispatching

    # --- open model --------------------------------------------------------------------------
    def _open_loop(self) -> None:
        rt = self.rt
        rec, t0 = rt.recorder, rt.t0
        assert rec is not None
        limit = rt.params.max_inflight
        pool: SenderPool[tuple[Any, float]] = SenderPool(self._arrival, limit, rt.group)
        submit = pool.submit
        try:
            for rel, late in paced(rt.arrivals, t0, self._stopping):
                b = rec.bucket(int(rel))
                b.intended += 1
                if late > MAX_LATENESS_S or rt.inflight >= limit:
                    continue  # the shortfall: intended, not sent
                rt.inflight += 1
                if submit((b, rel)):
                    b.sent += 1
                else:
                    rt.inflight -= 1  # every sender busy (an impression holds one)
        finally:
            pool.close()  # parked senders end; busy ones after their request
        if not self._stopping():  # the schedule ended
            rt.schedule_done = True
            while not self._stopping():
                gevent.sleep(IDLE_SLEEP_S)

    def _arrival(self, job: tuple[Any, float]) -> None:
        """One arrival on a sender: its lateness as of the send (the pool's handoff
        included), then the bid."""
        b, rel = job
        rt = self.rt
        late = wall() - (rt.t0 + rel)
        b.note_late(late)
        self._bid(b.second, rt.shape.hot_share_at(rel))

    # --- closed (benchmark) mode -------------------------------------------------------------
    def _closed_loop(self) -> None:
        """Back to back in this user's greenlet until the schedule's end: one request in
        flight per user, intended = sent."""
        rt = self.rt
        rec, end = rt.recorder, rt.end
        assert rec is not None
        n = 0
        while not self._stopping():
            now = wall()
            if now >= end:
                rt.schedule_done = True
                while not self._stopping():
                    gevent.sleep(IDLE_SLEEP_S)
                return
            second = rec.second_of(now)
            b = rec.bucket(second)
            b.intended += 1
            b.sent += 1
            rt.inflight += 1
            self._bid(second, 0.0)
            n += 1
            if n >= YIELD_EVERY:  # a target that always answers at once never makes us wait
                n = 0
                gevent.sleep(0)

    # --- requests ------------------------------------------------------------------------------
    def _bid(self, second: int, hot_share: float) -> None:
        rt = self.rt
        traffic = rt.traffic
        assert traffic is not None
        pub = traffic.publisher(hot_share)
        try:
            outcome, body = self._send(BID, traffic.bid_body(pub), pub, second)
        finally:
            rt.inflight -= 1
        if outcome == _OK and rt.dispatching and traffic.wants_impression():
            self._impression(body, pub)

    def _impression(self, bid_body: bytes | None, pub: str) -> None:
        rt = self.rt
        rec, traffic = rt.recorder, rt.traffic
        assert rec is not None and traffic is not None
        notice = traffic.impression(bid_body, pub)
        if notice is None:
            return  # a 200 without a bid (not the reference target): nothing to notify
        impression_id, body = notice
        second = rec.second_of(wall())
        b = rec.bucket(second)
        b.intended += 1
        if rt.inflight >= rt.params.max_inflight:
            return
        b.sent += 1
        rt.inflight += 1
        try:
            outcome, _ = self._send(IMPRESSION, body, pub, second)
        finally:
            rt.inflight -= 1
        if outcome == _ACCEPTED:
            rt.acked.append(impression_id)

    def _publisher_headers(self, pub: str) -> dict[str, str]:
        traffic = self.rt.traffic
        assert traffic is not None
        headers = self._headers[pub] = {**traffic.headers[pub], **self._auth}
        return headers

    def _send(self, endpoint: int, body: bytes, pub: str, second: int) -> tuple[int, bytes | None]:
        """POST, classify, record and report one request; (outcome index, body of a 200 bid)."""
        rec = self.rt.recorder
        assert rec is not None
        headers = self._headers.get(pub) or self._publisher_headers(pub)
        decision: Any = None
        retry_after: Any = None
        content = b""
        status = 0
        error: BaseException | None = None
        resp: Any = None
        start_time = wall()
        start = perf_counter()
        try:
            resp = self._wire.post(self._paths[endpoint], headers, body)
            content = resp.content
            status = resp.status_code
            decision = resp.headers.get(_DECISION)
            retry_after = resp.headers.get("retry-after") if status in (429, 503) else None
        except GreenletExit:
            # killed at shutdown: it never got an answer (and Locust never hears of it)
            latency_us = int((perf_counter() - start) * 1e6)
            rec.bucket(second).record(endpoint, pub, _TIMEOUT, None, latency_us)
            raise
        except Exception as exc:
            error = exc
        elapsed = perf_counter() - start
        if error is None:
            outcome = OUTCOME_INDEX[classify(status, decision)]
        else:
            outcome = _TIMEOUT if _is_timeout(error) else _CONN_ERROR
        bucket = rec.bucket(second)
        bucket.record(endpoint, pub, outcome, decision, int(elapsed * 1e6))
        if outcome in _DESIGNED and not valid_retry_after(retry_after):
            bucket.bad_retry_after(outcome)
        if outcome in _SUCCESS:
            exception: BaseException | None = None
        elif error is not None:
            exception = error
        else:
            name = classify(status, decision)
            exception = CatchResponseError(f"{name} (HTTP {status}, decision {decision or 'none'})")
        self._fire(
            request_type="POST",
            name=_NAMES[endpoint],
            response_time=elapsed * 1000.0,
            response_length=len(content),
            response=resp,
            context={},
            exception=exception,
            start_time=start_time,
            url=self._urls[endpoint],
        )
        return outcome, (content if outcome == _OK and endpoint == BID else None)


def _is_timeout(error: object) -> bool:
    """A client timeout, also when geventhttpclient wraps it (RetriesExceeded(original=...))."""
    if error is None:
        return False
    original = getattr(error, "original", None)
    return (
        isinstance(error, _TIMEOUTS)
        or isinstance(original, _TIMEOUTS)
        or "timed out" in str(original if original is not None else error)
    )
