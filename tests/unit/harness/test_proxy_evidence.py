"""ProxyOutstanding and ProxyCounters: the per-proxy outstanding peak, bytes and connections
since the previous call, from exposition text (a fake fetch), including restarts, servers
without the metrics and I/O failures. Against the real chaos server:
tests/integration/chaos/test_proxy_counters.py."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest

from spikegate.chaos.server import metrics
from spikegate.chaos.server.link import Counters
from spikegate.chaos.server.outstanding import Outstanding
from spikegate.harness.proxy_evidence import (
    ProxyCounters,
    ProxyOutstanding,
    counter_deltas,
    parse_outstanding,
    parse_proxy_metrics,
)
from spikegate.harness.sampler import Sampler

URL = "http://127.0.0.1:8474"
TOXIPROXY_ONLY = (
    "# HELP toxiproxy_proxy_received_bytes_total Bytes read.\n"
    "# TYPE toxiproxy_proxy_received_bytes_total counter\n"
    'toxiproxy_proxy_received_bytes_total{direction="upstream",proxy="redis"} 10\n'
)


def exposition(proxies: dict[str, tuple[int, dict[int, int]]]) -> str:
    """The chaos server's text for {proxy: (outstanding now, reached counts by level)}."""
    lines = [
        TOXIPROXY_ONLY.rstrip("\n"),
        "# HELP spikegate_proxy_outstanding Connections waiting for an answer.",
        "# TYPE spikegate_proxy_outstanding gauge",
    ]
    lines += [f'spikegate_proxy_outstanding{{proxy="{p}"}} {n}' for p, (n, _) in proxies.items()]
    lines += [
        "# HELP spikegate_proxy_outstanding_reached_total Rises to level.",
        "# TYPE spikegate_proxy_outstanding_reached_total counter",
    ]
    for proxy, (_, reached) in proxies.items():
        lines += [
            f'spikegate_proxy_outstanding_reached_total{{level="{level}",proxy="{proxy}"}} {c}'
            for level, c in reached.items()
        ]
    return "\n".join(lines) + "\n"


class FakeFetch:
    """Answers each call with the next (status, text) or raises the next exception."""

    def __init__(self, *answers: tuple[int, str] | Exception) -> None:
        self.answers = list(answers)
        self.urls: list[str] = []

    def __call__(self, url: str) -> tuple[int, str]:
        self.urls.append(url)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def readings(*texts: dict[str, tuple[int, dict[int, int]]]) -> list[dict[str, int]]:
    """The `proxy_outstanding_max` of successive calls over these server states."""
    source = ProxyOutstanding(URL, fetch=FakeFetch(*((200, exposition(t)) for t in texts)))
    return [source()["proxy_outstanding_max"] for _ in texts]


def test_the_first_call_gives_the_current_level_of_each_proxy() -> None:
    first = {"redis": (2, {1: 9, 2: 4, 3: 1}), "kafka": (0, {1: 3})}
    assert readings(first) == [{"kafka": 0, "redis": 2}]


@pytest.mark.parametrize(
    ("then", "now", "peak"),
    [
        ((1, {1: 3, 2: 1}), (0, {1: 4, 2: 2, 3: 1}), 3),  # the highest level whose count rose
        ((5, {1: 1, 5: 1}), (2, {1: 1, 5: 1}), 5),  # nothing rose: the level then
        ((0, {1: 1}), (4, {1: 2, 2: 1, 3: 1, 4: 1}), 4),  # the level now
        ((2, {1: 8, 2: 5, 3: 2}), (2, {1: 8, 2: 5, 3: 2}), 2),  # idle at a level
        ((0, {}), (0, {1: 1, 2: 1}), 2),  # a burst that came and went between two calls
    ],
)
def test_the_peak_is_the_level_then_every_level_that_rose_and_the_level_now(
    then: tuple[int, dict[int, int]], now: tuple[int, dict[int, int]], peak: int
) -> None:
    assert readings({"redis": then}, {"redis": now})[1] == {"redis": peak}


def test_counters_that_went_backwards_start_that_proxy_over() -> None:
    then = {"redis": (7, {k: 10 for k in range(1, 8)}), "kafka": (1, {1: 4})}
    now = {"redis": (1, {1: 2, 2: 1}), "kafka": (1, {1: 4})}  # redis re-created, kafka idle
    assert readings(then, now)[1] == {"kafka": 1, "redis": 2}


def test_a_level_that_vanished_means_a_restart_too() -> None:
    then = {"redis": (3, {1: 1, 2: 1, 3: 1})}
    now = {"redis": (1, {1: 5})}  # count 5 > 1 at level 1, but levels 2 and 3 are gone
    assert readings(then, now)[1] == {"redis": 1}


def test_a_proxy_created_since_the_previous_call_reached_all_its_levels_since_then() -> None:
    then = {"redis": (0, {1: 1})}
    now = {"redis": (0, {1: 1}), "dsp-1": (1, {1: 2, 2: 1, 3: 1})}
    assert readings(then, now)[1] == {"dsp-1": 3, "redis": 0}


def test_a_failed_call_takes_nothing_from_the_next_peak() -> None:
    fetch = FakeFetch(
        (200, exposition({"redis": (0, {1: 1})})),
        TimeoutError("timed out"),
        (200, exposition({"redis": (0, {1: 2, 2: 1, 3: 1, 4: 1})})),
    )
    source = ProxyOutstanding(URL, fetch=fetch)
    assert source() == {"proxy_outstanding_max": {"redis": 0}}
    with pytest.raises(OSError, match="timed out"):
        source()
    assert source() == {"proxy_outstanding_max": {"redis": 4}}


def test_a_server_without_proxies_yet_gives_an_empty_mapping() -> None:
    assert readings({}) == [{}]


@pytest.mark.parametrize("answer", [(404, "404 page not found\n"), (200, TOXIPROXY_ONLY)])
def test_a_server_without_these_metrics_gives_nothing_and_is_asked_once(
    answer: tuple[int, str],
) -> None:
    fetch = FakeFetch(answer)
    source = ProxyOutstanding(URL, fetch=fetch)
    assert source() == {} and source() == {}
    assert fetch.urls == [f"{URL}/metrics"] and source.exported is False


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "Connection refused"),
        (TimeoutError("timed out"), "timed out"),
        ((500, "oops"), "HTTP 500"),
        ((200, 'spikegate_proxy_outstanding{proxy="redis" 1\n'), "not a Prometheus exposition"),
    ],
)
def test_io_failures_raise_oserror_naming_the_url(
    answer: tuple[int, str] | Exception, message: str
) -> None:
    source = ProxyOutstanding(URL + "/", fetch=FakeFetch(answer))
    with pytest.raises(OSError, match=message) as info:
        source()
    assert f"{URL}/metrics" in str(info.value)


def test_the_default_fetch_raises_oserror_when_nothing_listens() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: the connect is refused
        with pytest.raises(OSError, match="chaos proxy metrics"):
            ProxyOutstanding(f"http://127.0.0.1:{port}", timeout_s=0.3)()


def test_a_url_that_is_not_http_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="http://HOST:PORT"):
        ProxyOutstanding("127.0.0.1:8474")


def test_reads_what_the_embedded_server_renders() -> None:
    """The names the chaos server writes are the names the harness reads."""
    counts = Outstanding()
    for _ in range(3):
        counts.rise()
    counts.fall()
    proxy = SimpleNamespace(
        name="dsp-1",
        listen="127.0.0.1:1",
        upstream="127.0.0.1:2",
        counters={"upstream": Counters(), "downstream": Counters()},
        outstanding=counts,
        accepted=0,
        connections=set(),
    )
    text = metrics.render([proxy]).decode()  # type: ignore[list-item]
    assert parse_outstanding(text) == {"dsp-1": (2.0, {1: 1.0, 2: 1.0, 3: 1.0})}
    source = ProxyOutstanding(URL, fetch=FakeFetch((200, text), (200, text)))
    assert source() == {"proxy_outstanding_max": {"dsp-1": 2}}
    assert source() == {"proxy_outstanding_max": {"dsp-1": 2}}  # level then = level now


def test_the_sampler_merges_it_into_each_row_and_records_its_failures() -> None:
    evidence = ProxyOutstanding(
        URL,
        fetch=FakeFetch(
            (200, exposition({"redis": (1, {1: 1})})), ConnectionResetError("reset by peer")
        ),
    )
    sampler = Sampler(
        "http://127.0.0.1:1/metrics",
        on_row=lambda _row: None,
        fetch=lambda _url: (200, ""),
        evidence=[evidence],
    )
    assert sampler.sample(0)["proxy_outstanding_max"] == {"redis": 1}
    row = sampler.sample(1)
    assert "proxy_outstanding_max" not in row
    assert any("reset by peer" in error for error in row["evidence_errors"])


# --- ProxyCounters: bytes and connections beside the outstanding peak ---------------------------
def counters_text(proxies: dict[str, tuple[int, int, int, int]], *, ours: bool = True) -> str:
    """A chaos server's text for {proxy: (received upstream, sent downstream, accepted, open)};
    the other direction of each byte counter carries noise that must not be read."""
    lines = [
        "# HELP toxiproxy_proxy_received_bytes_total Bytes read from the source socket.",
        "# TYPE toxiproxy_proxy_received_bytes_total counter",
    ]
    for p, (rx, _, _, _) in proxies.items():
        labels = f'listener="127.0.0.1:1",proxy="{p}",upstream="127.0.0.1:2"'
        lines.append(f'toxiproxy_proxy_received_bytes_total{{direction="upstream",{labels}}} {rx}')
        lines.append(f'toxiproxy_proxy_received_bytes_total{{direction="downstream",{labels}}} 7')
    lines += [
        "# HELP toxiproxy_proxy_sent_bytes_total Bytes written to the destination socket.",
        "# TYPE toxiproxy_proxy_sent_bytes_total counter",
    ]
    for p, (_, tx, _, _) in proxies.items():
        labels = f'listener="127.0.0.1:1",proxy="{p}",upstream="127.0.0.1:2"'
        lines.append(f'toxiproxy_proxy_sent_bytes_total{{direction="upstream",{labels}}} 9')
        lines.append(f'toxiproxy_proxy_sent_bytes_total{{direction="downstream",{labels}}} {tx}')
    if ours:
        lines += [
            "# TYPE spikegate_proxy_outstanding gauge",
            *(f'spikegate_proxy_outstanding{{proxy="{p}"}} 0' for p in proxies),
            "# TYPE spikegate_proxy_connections_accepted_total counter",
            *(
                f'spikegate_proxy_connections_accepted_total{{proxy="{p}"}} {a}'
                for p, (_, _, a, _) in proxies.items()
            ),
            "# TYPE spikegate_proxy_connections_open gauge",
            *(
                f'spikegate_proxy_connections_open{{proxy="{p}"}} {o}'
                for p, (*_, o) in proxies.items()
            ),
        ]
    return "\n".join(lines) + "\n"


def counter_rows(*states: dict[str, tuple[int, int, int, int]], ours: bool = True) -> list[dict]:
    source = ProxyCounters(
        URL, fetch=FakeFetch(*((200, counters_text(s, ours=ours)) for s in states))
    )
    return [source() for _ in states]


def test_parse_reads_the_service_facing_bytes_and_the_connections() -> None:
    readings = parse_proxy_metrics(counters_text({"db": (100, 40, 3, 2)}))
    assert readings.bytes == {"db": {"received": 100.0, "sent": 40.0}}
    assert readings.connections == {"db": {"accepted": 3.0, "open": 2.0}}
    assert readings.outstanding == {"db": (0.0, {})}


def test_parse_sums_byte_counters_over_label_sets_of_one_proxy() -> None:
    text = (
        "# TYPE toxiproxy_proxy_received_bytes_total counter\n"
        'toxiproxy_proxy_received_bytes_total{direction="upstream",listener="a",proxy="db"} 10\n'
        'toxiproxy_proxy_received_bytes_total{direction="upstream",listener="b",proxy="db"} 5\n'
    )
    assert parse_proxy_metrics(text).bytes == {"db": {"received": 15.0, "sent": 0.0}}


def test_parse_without_a_type_line_still_finds_the_counters() -> None:
    text = 'spikegate_proxy_connections_accepted_total{proxy="db"} 4\n'
    assert parse_proxy_metrics(text).connections == {"db": {"accepted": 4.0, "open": 0.0}}


def test_parse_of_a_foreign_exposition_finds_nothing() -> None:
    assert parse_proxy_metrics("# TYPE up gauge\nup 1\n") == parse_proxy_metrics("")
    assert parse_proxy_metrics("").bytes is None


@pytest.mark.parametrize(
    ("now", "before", "delta"),
    [
        ({"rx": 150.0, "tx": 60.0}, {"rx": 100.0, "tx": 40.0}, {"rx": 50, "tx": 20}),
        ({"rx": 150.0, "tx": 60.0}, None, {"rx": 150, "tx": 60}),  # never seen: from zero
        ({"rx": 30.0, "tx": 60.0}, {"rx": 100.0, "tx": 40.0}, {"rx": 30, "tx": 60}),  # one back
        ({"rx": 100.0}, {"rx": 100.0, "tx": 40.0}, {"rx": 100}),  # one vanished: restarted
        ({"rx": 100.0, "tx": 40.0}, {"rx": 100.0, "tx": 40.0}, {"rx": 0, "tx": 0}),  # idle
    ],
)
def test_counter_deltas_difference_and_start_over_when_any_counter_went_backwards(
    now: dict[str, float], before: dict[str, float] | None, delta: dict[str, int]
) -> None:
    assert counter_deltas(now, before) == delta


def test_each_call_gives_bytes_and_accepted_since_the_previous_call_and_open_now() -> None:
    rows = counter_rows(
        {"db": (100, 40, 3, 2)},
        {"db": (160, 70, 5, 1)},
        {"db": (160, 70, 5, 0)},
    )
    assert [r["proxy_bytes"] for r in rows] == [
        {"db": {"received": 100, "sent": 40}},  # the first call: since the proxy was created
        {"db": {"received": 60, "sent": 30}},
        {"db": {"received": 0, "sent": 0}},
    ]
    assert [r["proxy_connections"] for r in rows] == [
        {"db": {"accepted": 3, "open": 2}},
        {"db": {"accepted": 2, "open": 1}},
        {"db": {"accepted": 0, "open": 0}},
    ]
    assert all(r["proxy_outstanding_max"] == {"db": 0} for r in rows)  # one GET serves all


def test_a_recreated_proxy_starts_over_and_the_others_keep_differencing() -> None:
    rows = counter_rows(
        {"db": (1000, 500, 10, 1), "cache": (50, 50, 1, 1)},
        {"db": (30, 12, 1, 1), "cache": (80, 60, 1, 1)},  # db re-created: all went back
    )
    assert rows[1]["proxy_bytes"] == {
        "cache": {"received": 30, "sent": 10},
        "db": {"received": 30, "sent": 12},
    }
    assert rows[1]["proxy_connections"]["db"] == {"accepted": 1, "open": 1}


def test_a_proxy_created_between_calls_counts_from_zero() -> None:
    rows = counter_rows({"db": (10, 10, 1, 1)}, {"db": (10, 10, 1, 1), "new": (7, 3, 2, 2)})
    assert rows[1]["proxy_bytes"]["new"] == {"received": 7, "sent": 3}
    assert rows[1]["proxy_connections"]["new"] == {"accepted": 2, "open": 2}


def test_a_real_toxiproxy_server_gives_bytes_only() -> None:
    rows = counter_rows({"db": (10, 4, 0, 0)}, {"db": (25, 9, 0, 0)}, ours=False)
    assert rows == [
        {"proxy_bytes": {"db": {"received": 10, "sent": 4}}},
        {"proxy_bytes": {"db": {"received": 15, "sent": 5}}},
    ]


def test_counters_without_metrics_give_nothing_and_are_asked_once() -> None:
    fetch = FakeFetch((404, "404 page not found\n"))
    source = ProxyCounters(URL, fetch=fetch)
    assert source() == {} and source() == {}
    assert fetch.urls == [f"{URL}/metrics"] and source.exported is False


def test_a_failed_call_leaves_the_next_delta_covering_both_seconds() -> None:
    fetch = FakeFetch(
        (200, counters_text({"db": (10, 4, 1, 1)})),
        TimeoutError("timed out"),
        (200, counters_text({"db": (40, 9, 3, 1)})),
    )
    source = ProxyCounters(URL, fetch=fetch)
    source()
    with pytest.raises(OSError, match=f"{URL}/metrics: timed out"):
        source()
    assert source()["proxy_bytes"] == {"db": {"received": 30, "sent": 5}}


def test_counters_read_what_the_embedded_server_renders() -> None:
    """The names and directions the chaos server writes are the ones the harness reads."""
    up, down = Counters(received=120, piped_in=20, piped_out=20), Counters(received=80)
    proxy = SimpleNamespace(
        name="db",
        listen="127.0.0.1:1",
        upstream="127.0.0.1:2",
        counters={"upstream": up, "downstream": down},
        outstanding=Outstanding(),
        accepted=4,
        connections={object(), object()},
    )
    text = metrics.render([proxy]).decode()  # type: ignore[list-item]
    readings = parse_proxy_metrics(text)
    assert readings.bytes == {"db": {"received": 120.0, "sent": 80.0}}
    assert readings.connections == {"db": {"accepted": 4.0, "open": 2.0}}


def test_one_counter_going_back_starts_every_counter_of_that_proxy_over() -> None:
    """Re-created with as many connections as before: the bytes tell it was re-created."""
    rows = counter_rows({"db": (1000, 500, 1, 0)}, {"db": (10, 10, 1, 1)})
    assert rows[1]["proxy_bytes"]["db"] == {"received": 10, "sent": 10}
    assert rows[1]["proxy_connections"]["db"] == {"accepted": 1, "open": 1}
