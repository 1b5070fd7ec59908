"""Locust entry file: the ad-server user (open model) and, by import, the recorder plugin.

    locust -f locustfiles/adserver.py,locustfiles/shape_<shape>.py --headless --host URL

    dispatch loop (one per user; users share the process's arrival schedule)
       next intended instant -> sleep until it -> count intended
         -> later than MAX_LATENESS_S, or max_inflight requests in flight: not sent (shortfall)
         -> else spawn a greenlet: POST /bid  -> classify -> record
                                    200 and impression_rate: POST /impression -> 202: acked id

Each request runs in its own greenlet, so a slow target does not lower the offered load:
the shortfall shows up as intended > sent and as lateness. Designed rejections (429/503
with X-Spikegate-Decision) are marked successes in Locust's own stats; everything else that
is not admitted is a Locust failure named by its outcome. Latency is measured from the
actual send; client_timeout_s bounds the connect and each socket read (Locust's
network_timeout / connection_timeout, not its 60 s default).
"""

from __future__ import annotations

import time
from typing import Any

import gevent
from gevent import GreenletExit
from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser
from locust.user.task import LOCUST_STATE_STOPPING

from harness.rundir import ADMITTED_OUTCOMES, DESIGNED_REJECTIONS
from locustfiles.plugin import MAX_LATENESS_S, runtime
from locustfiles.recorder import (
    BID,
    DECISION_HEADER,
    IMPRESSION,
    OUTCOME_INDEX,
    classify,
)

__all__ = ["AdServerUser"]

_OK = OUTCOME_INDEX["ok"]
_ACCEPTED = OUTCOME_INDEX["accepted"]
_TIMEOUT = OUTCOME_INDEX["timeout"]
_CONN_ERROR = OUTCOME_INDEX["conn_error"]
_SUCCESS = frozenset(ADMITTED_OUTCOMES | DESIGNED_REJECTIONS)
_TIMEOUTS = (TimeoutError, gevent.Timeout)  # socket timeouts are TimeoutError
_YIELD_EVERY = 32  # sends between forced yields when the loop runs behind schedule
_IDLE_SLEEP_S = 0.25


class AdServerUser(FastHttpUser):
    """Sends this process's share of the intended arrivals to POST /bid (+ /impression)."""

    wait_time = constant(0)

    def __init__(self, environment: Any) -> None:
        rt = runtime()
        self.network_timeout = rt.params.client_timeout_s
        self.connection_timeout = rt.params.client_timeout_s
        self.concurrency = rt.params.max_inflight
        self.client_pool = rt.client_pool()
        super().__init__(environment)
        self.rt = rt

    @task
    def dispatch(self) -> None:
        if self.rt.params.mode == "closed":
            self._closed_once()
        else:
            self._open_loop()

    def _stopping(self) -> bool:
        return self._state == LOCUST_STATE_STOPPING or not self.rt.dispatching

    # --- open model --------------------------------------------------------------------------
    def _open_loop(self) -> None:
        rt = self.rt
        rec, t0, shape = rt.recorder, rt.t0, rt.shape
        if rec is None:
            gevent.sleep(_IDLE_SLEEP_S)
            return
        limit = rt.params.max_inflight
        spawn = rt.group.spawn
        burst = 0
        while not self._stopping():
            rel = next(rt.arrivals, None)
            if rel is None:
                rt.schedule_done = True
                while not self._stopping():
                    gevent.sleep(_IDLE_SLEEP_S)
                return
            at = t0 + rel
            delay = at - time.time()
            if delay > 0:
                burst = 0
                while delay > 0:
                    gevent.sleep(min(delay, _IDLE_SLEEP_S))
                    if self._stopping():
                        return
                    delay = at - time.time()
            else:
                burst += 1
                if burst >= _YIELD_EVERY:
                    burst = 0
                    gevent.sleep(0)
            late = time.time() - at
            second = int(rel)
            b = rec.bucket(second)
            b.intended += 1
            if late > MAX_LATENESS_S or rt.inflight >= limit:
                continue  # the shortfall: intended, not sent
            b.sent += 1
            if late > b.max_lateness_s:
                b.max_lateness_s = late
            rt.inflight += 1
            spawn(self._bid, second, shape.hot_share_at(rel))

    # --- closed (benchmark) mode -------------------------------------------------------------
    def _closed_once(self) -> None:
        rt = self.rt
        if rt.recorder is None:
            gevent.sleep(_IDLE_SLEEP_S)
            return
        second = rt.recorder.second_of(time.time())
        b = rt.recorder.bucket(second)
        b.intended += 1
        b.sent += 1
        rt.inflight += 1
        self._bid(second, 0.0)

    # --- requests ------------------------------------------------------------------------------
    def _bid(self, second: int, hot_share: float) -> None:
        rt = self.rt
        traffic = rt.traffic
        assert traffic is not None
        pub = traffic.publisher(hot_share)
        try:
            outcome, body = self._send(BID, "/bid", traffic.bid_body(pub), pub, second)
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
        second = rec.second_of(time.time())
        b = rec.bucket(second)
        b.intended += 1
        if rt.inflight >= rt.params.max_inflight:
            return
        b.sent += 1
        rt.inflight += 1
        try:
            outcome, _ = self._send(IMPRESSION, "/impression", body, pub, second)
        finally:
            rt.inflight -= 1
        if outcome == _ACCEPTED:
            rt.acked.append(impression_id)

    def _send(
        self, endpoint: int, path: str, body: bytes, pub: str, second: int
    ) -> tuple[int, bytes | None]:
        """POST, classify and record one request; (outcome index, body of a 200 bid)."""
        rt = self.rt
        traffic, rec = rt.traffic, rt.recorder
        assert traffic is not None and rec is not None
        start = time.perf_counter()
        decision: str | None = None
        content: bytes | None = None
        cut = False
        try:
            with self.client.request(
                "POST",
                path,
                data=body,  # type: ignore[arg-type]  # geventhttpclient sends bytes as is
                headers=traffic.headers[pub],
                name=path,
                catch_response=True,
            ) as resp:
                status = resp.status_code or 0
                if resp.headers is not None:
                    decision = resp.headers.get(DECISION_HEADER)
                error = getattr(resp, "error", None)
                name = classify(status, decision, timed_out=_is_timeout(error))
                if name in _SUCCESS:
                    resp.success()
                    if status == 200 and endpoint == BID:
                        content = resp.content
                elif status > 0:
                    resp.failure(f"{name} (HTTP {status}, decision {decision or 'none'})")
                outcome = OUTCOME_INDEX[name]
        except GreenletExit:
            outcome, cut = _TIMEOUT, True  # killed at shutdown: it never got an answer
        except Exception:
            outcome = _CONN_ERROR
        latency_us = int((time.perf_counter() - start) * 1e6)
        rec.bucket(second).record(endpoint, pub, outcome, decision, latency_us)
        if cut:
            raise GreenletExit
        return outcome, content


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
