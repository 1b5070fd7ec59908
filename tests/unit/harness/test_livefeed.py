"""The live page's feed (harness/livefeed.py) and its server-sent event stream on a real
ControlServer over loopback: what the page charts comes from the rows the run writes, a late
page gets the history, a reconnect resumes, the end reaches an open page, foreign origins and
too many pages are refused."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from spikegate.chaos.schedule import FaultSchedule
from spikegate.harness.control import MAX_STREAMS, ControlApi, ControlServer, Request
from spikegate.harness.livefeed import LiveFeed, compact_row, compact_sample

from .test_control import PROXIES, FakeChaos, FakeClock

ROW = {
    "t": 7.0,
    "intended": 300,
    "sent": 298,
    "outcomes": {"ok": 200, "accepted": 180, "no_bid": 5, "rate_limited": 60, "shed": 33},
    "decisions": {"admitted": 205, "no_bid": 5},
    "admitted_p50_ms": 2.5,
    "admitted_p99_ms": 41.0,
    "rejected_p99_ms": 0.4,
    "hist_admitted": "HISTF...",
    "publishers": {"pub-1": {"sent": 10}},
}
SAMPLE = {
    "t": 8.0,
    "auction_inflight": 16.0,
    "auction_limit": 16.0,
    "queue_depth": 190.0,
    "queue_max_depth": 200.0,
    "breakers": {"dsp-1": "open", "dsp-2": "closed"},
    "requests_total": {"/bid:200:admitted": 1300.0, "/metrics:200:admitted": 9.0},
}


# --- what the page charts ----------------------------------------------------------------------
def test_a_row_keeps_offered_sent_admitted_outcomes_and_latency_not_the_histograms() -> None:
    out = compact_row(ROW)
    assert out == {
        "t": 7.0,
        "intended": 300,
        "sent": 298,
        "admitted": 205,
        "outcomes": ROW["outcomes"],
        "admitted_p50_ms": 2.5,
        "admitted_p99_ms": 41.0,
        "rejected_p99_ms": 0.4,
    }


def test_without_a_decision_count_admitted_is_the_admitted_outcomes() -> None:
    row = {k: v for k, v in ROW.items() if k != "decisions"}
    assert compact_row(row)["admitted"] == 200 + 180 + 5


def test_a_sample_gives_inflight_against_limit_queue_against_cap_and_breakers() -> None:
    prev = {"t": 7.0, "requests_total": {"/bid:200:admitted": 1000.0, "/metrics:200:admitted": 8.0}}
    out = compact_sample(SAMPLE, prev)
    assert out == {
        "t": 8.0,
        "inflight": 16.0,
        "limit": 16.0,
        "queue_depth": 190.0,
        "queue_cap": 200.0,
        "breakers": {"dsp-1": "open", "dsp-2": "closed"},
        "target_rps": 300.0,  # the scrapes themselves are not the target's traffic
    }


def test_a_mapped_black_box_sample_has_no_limit_of_its_own() -> None:
    out = compact_sample({"t": 3.0, "auction_inflight": 4.0})
    assert out["inflight"] == 4.0 and out["limit"] is None and out["queue_cap"] is None
    assert out["breakers"] == {} and out["target_rps"] is None


# --- the feed ----------------------------------------------------------------------------------
def test_readers_get_what_is_newer_than_their_last_message() -> None:
    feed = LiveFeed()
    feed.publish_row(ROW)
    feed.publish_sample(SAMPLE)
    feed.publish_event({"t": 9.0, "kind": "fault_start", "id": "m1"})
    assert [m.kind for m in feed.after(0)] == ["row", "sample", "event"]
    assert [m.seq for m in feed.after(2)] == [3]
    assert feed.after(3) == []
    assert json.loads(feed.after(2)[0].data) == {"t": 9.0, "kind": "fault_start", "id": "m1"}


def test_the_log_is_bounded_and_keeps_the_newest() -> None:
    feed = LiveFeed(max_messages=5)
    for i in range(12):
        feed.publish_event({"t": float(i), "kind": "x"})
    kept = feed.after(0)
    assert [m.seq for m in kept] == [8, 9, 10, 11, 12]
    assert [m.seq for m in feed.after(10)] == [11, 12]


def test_close_ends_every_reader_once_and_nothing_follows() -> None:
    feed = LiveFeed()
    feed.publish_event({"t": 1.0, "kind": "x"})
    feed.close("complete", 30.0)
    feed.close("interrupted", 31.0)  # idempotent: the first status stands
    feed.publish_event({"t": 2.0, "kind": "late"})
    msgs = feed.after(0)
    assert [m.kind for m in msgs] == ["event", "end"]
    assert json.loads(msgs[-1].data) == {"status": "complete", "t": 30.0}
    assert feed.after(msgs[-1].seq) == [] and feed.closed


def test_wait_wakes_on_a_publish_from_another_thread() -> None:
    feed = LiveFeed()
    got: list[str] = []

    def reader() -> None:
        got.extend(m.kind for m in feed.wait(0, timeout=30.0))

    thread = threading.Thread(target=reader)
    thread.start()
    feed.publish_event({"t": 0.0, "kind": "x"})
    thread.join(timeout=30.0)
    assert got == ["event"]


def test_hello_carries_the_run_and_its_limits() -> None:
    feed = LiveFeed()
    feed.set_hello(run={"scenario": "s"}, base_rps=60.0, limits={"inflight": 16, "queue": None})
    data = json.loads(feed.hello(4.5).data)
    assert data == {
        "run": {"scenario": "s"},
        "base_rps": 60.0,
        "limits": {"inflight": 16, "queue": None},
        "t": 4.5,
    }


# --- the stream over HTTP ----------------------------------------------------------------------
class Stream:
    """One GET /stream connection, read event by event."""

    def __init__(self, port: int, **headers: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.conn.request("GET", "/stream", headers=headers)
        self.resp = self.conn.getresponse()

    def events(self) -> Iterator[tuple[str, dict[str, Any], str | None]]:
        kind, data, ident = "", "", None
        while True:
            line = self.resp.fp.readline()
            if not line:
                return
            text = line.decode().rstrip("\n")
            if text.startswith("event: "):
                kind = text[7:]
            elif text.startswith("data: "):
                data = text[6:]
            elif text.startswith("id: "):
                ident = text[4:]
            elif text == "" and kind:
                yield kind, json.loads(data), ident
                kind, data, ident = "", "", None

    def take(self, n: int) -> list[tuple[str, dict[str, Any], str | None]]:
        it = self.events()
        return [next(it) for _ in range(n)]

    def close(self) -> None:
        self.conn.close()


def _host(server: ControlServer) -> dict[str, str]:
    return {"Host": f"127.0.0.1:{server.port}"}


@pytest.fixture
def served() -> Iterator[tuple[ControlServer, LiveFeed]]:
    clock = FakeClock()
    schedule = FaultSchedule(FakeChaos(), on_event=lambda row: None, clock=clock)
    schedule.begin(clock.now - 10.0)
    feed = LiveFeed()
    feed.set_hello(run={"scenario": "s"}, base_rps=60.0)
    api = ControlApi(schedule, lambda: PROXIES, info={"scenario": "s"}, feed=feed)
    with ControlServer(api) as server:
        yield server, feed


def test_a_page_gets_hello_the_history_then_each_new_row_and_the_end(
    served: tuple[ControlServer, LiveFeed],
) -> None:
    server, feed = served
    feed.publish_row(ROW)
    stream = Stream(server.port)
    assert stream.resp.status == 200
    assert stream.resp.getheader("Content-Type", "").startswith("text/event-stream")
    it = stream.events()
    kind, hello, ident = next(it)
    assert kind == "hello" and hello["base_rps"] == 60.0 and hello["t"] == 10.0 and ident is None
    assert next(it) == ("row", compact_row(ROW), "1")
    feed.publish_sample(SAMPLE)  # pushed as it lands
    assert next(it)[0:2] == ("sample", compact_sample(SAMPLE))
    feed.close("complete", 12.0)
    assert next(it) == ("end", {"status": "complete", "t": 12.0}, "3")
    assert list(it) == []  # the server closed the stream
    stream.close()


def test_a_reconnect_resumes_after_its_last_event_id(
    served: tuple[ControlServer, LiveFeed],
) -> None:
    server, feed = served
    for i in range(4):
        feed.publish_event({"t": float(i), "kind": "x", "i": i})
    stream = Stream(server.port, **{"Last-Event-ID": "2"})
    got = stream.take(3)
    assert [k for k, _, _ in got] == ["hello", "event", "event"]
    assert [d["i"] for _, d, _ in got[1:]] == [2, 3]
    stream.close()


def test_a_foreign_origin_gets_no_stream(served: tuple[ControlServer, LiveFeed]) -> None:
    server, _ = served
    stream = Stream(server.port, Origin="http://evil.example")
    assert stream.resp.status == 403
    assert "Origin" in json.loads(stream.resp.read())["error"]
    stream.close()


def test_more_pages_than_the_cap_are_refused_and_a_closed_page_frees_its_slot(
    served: tuple[ControlServer, LiveFeed],
) -> None:
    server, feed = served
    open_ = [Stream(server.port) for _ in range(MAX_STREAMS)]
    for s in open_:
        assert s.take(1)[0][0] == "hello"
    extra = Stream(server.port)
    assert extra.resp.status == 429 and "close one" in json.loads(extra.resp.read())["error"]
    extra.close()
    feed.close("complete", 1.0)  # every open page ends
    for s in open_:
        assert [k for k, _, _ in s.events()] == ["end"]
        s.close()


def test_the_stream_is_only_a_get(served: tuple[ControlServer, LiveFeed]) -> None:
    server, _ = served
    resp = server.api.handle(Request("POST", "/stream", headers=_host(server)))
    assert resp.status == 405


def test_the_vendored_chart_library_is_served_and_nothing_else_is(
    served: tuple[ControlServer, LiveFeed],
) -> None:
    server, _ = served
    host = _host(server)
    js = server.api.handle(Request("GET", "/static/uplot.min.js", headers=host))
    assert js.status == 200 and js.content_type.startswith("text/javascript")
    assert js.body.startswith(b"/*! https://github.com/leeoniya/uPlot")
    css = server.api.handle(Request("GET", "/static/uplot.min.css", headers=host))
    assert css.status == 200 and css.content_type.startswith("text/css")
    assert server.api.handle(Request("GET", "/favicon.ico", headers=host)).status == 204
    for path in ("/static/../control.py", "/static/VENDORED.md", "/static/control.html"):
        assert server.api.handle(Request("GET", path, headers=host)).status == 404
