"""The live rate (locustfiles/live_rate.py): a rate set by hand mid-run replaces the shape's.

A simulated clock stands in for the wall: the consumer advances it to each instant (as
plugin.paced sleeps until it), the schedule's own sleeps advance it too, and the documents
of `changes` become visible when the clock passes their wall time, as the poller would."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spikegate.locustfiles.live_rate import (
    HORIZON_S,
    LiveLoad,
    LoadDoc,
    Spike,
    parse_doc,
    read_doc,
    write_doc,
)
from spikegate.locustfiles.shapes import ArrivalSchedule, load_params, make_shape


class Sim:
    def __init__(self, live: LiveLoad, changes: list[tuple[float, LoadDoc]]) -> None:
        self.t = 0.0
        self.live = live
        self.changes = sorted(changes, key=lambda c: c[0])
        self.sleeps = 0
        self.stopped = False

    def now(self) -> float:
        return self.t

    def advance(self, to: float) -> None:
        self.t = max(self.t, to)
        while self.changes and self.changes[0][0] <= self.t:
            self.live.set(self.changes.pop(0)[1])

    def sleep(self, d: float) -> None:
        assert d > 0
        self.sleeps += 1
        self.advance(self.t + d)

    def stop(self) -> bool:
        return self.stopped

    def consume(self, it: Iterator[float], until: float = math.inf) -> list[float]:
        out = []
        for at in it:
            self.advance(at)
            out.append(at)
            if at >= until:
                self.stopped = True
        return out


def schedule(index: int = 0, count: int = 1, **load: Any) -> ArrivalSchedule:
    raw: dict[str, Any] = {"duration_s": 20, "warmup_s": 2, "base_rps": 100}
    raw.update(load)
    params = load_params(raw)
    return ArrivalSchedule(make_shape(params), seed=7, index=index, count=count)


def run(sched: ArrivalSchedule, changes: list[tuple[float, LoadDoc]]) -> tuple[list[float], Sim]:
    live = LiveLoad(None)
    sim = Sim(live, changes)
    it = sched.live(live, now=sim.now, sleep=sim.sleep, stop=sim.stop)
    return sim.consume(it), sim


def per_second(instants: list[float]) -> Counter[int]:
    return Counter(int(a) for a in instants)


@pytest.mark.parametrize(
    "load",
    [
        {},
        {"arrivals": "poisson"},
        {"shape": "flash_crowd", "peak_rps": 400, "spike_at_s": 5, "spike_for_s": 3},
        {"shape": "sawtooth", "peak_rps": 300, "period_s": 4},
    ],
)
@pytest.mark.parametrize(("index", "count"), [(0, 1), (2, 3)])
def test_without_a_document_the_instants_are_the_seeded_schedule(
    load: dict[str, Any], index: int, count: int
) -> None:
    sched = schedule(index, count, **load)
    got, _ = run(sched, [])
    assert got == list(sched)  # identical floats: the same arithmetic, the same thresholds
    assert len(got) > 100


def test_a_new_rate_is_held_from_the_instant_it_is_read() -> None:
    w = 5.37
    got, _ = run(schedule(), [(w, LoadDoc(version=1, rate=300.0))])
    seconds = per_second(got)
    assert all(seconds[s] == 100 for s in range(5))
    assert all(seconds[s] == 300 for s in range(6, 20)), seconds
    # at the old spacing up to the instant read, at the new one from w + HORIZON_S on
    before = [a for a in got if a < w]
    after = [a for a in got if a > w + HORIZON_S + 0.01]
    assert all(b - a == pytest.approx(1 / 100) for a, b in itertools_pairs(before))
    assert all(b - a == pytest.approx(1 / 300) for a, b in itertools_pairs(after))
    assert 100 < seconds[5] < 300


def itertools_pairs(xs: list[float]) -> list[tuple[float, float]]:
    return list(itertools.pairwise(xs))


def test_stop_then_start_returns_to_the_shape_and_the_schedule_sleeps_meanwhile() -> None:
    changes = [(4.0, LoadDoc(version=1, rate=0.0)), (9.5, LoadDoc(version=2, rate=None))]
    got, sim = run(
        schedule(shape="flash_crowd", peak_rps=400, spike_at_s=12, spike_for_s=3), changes
    )
    seconds = per_second(got)
    assert all(seconds[s] == 100 for s in range(4))
    assert not [a for a in got if 4.0 + HORIZON_S + 0.001 < a < 9.5]
    assert all(seconds[s] == 100 for s in (10, 11, 15, 16))
    assert all(seconds[s] == 400 for s in (12, 13, 14))  # the shape's own spike again
    # while stopped it waited for the clock in steps of at most HORIZON_S, no busy loop
    assert sim.sleeps >= (9.5 - 4.0) / HORIZON_S - 2


def test_a_spike_starts_and_ends_on_its_own_over_the_current_rate() -> None:
    spike = Spike(peak=500.0, from_s=8.0, until_s=11.0)
    changes = [
        (3.0, LoadDoc(version=1, rate=200.0)),
        (7.9, LoadDoc(version=2, rate=200.0, spike=spike)),
    ]
    got, _ = run(schedule(), changes)
    seconds = per_second(got)
    assert [seconds[s] for s in (5, 6, 7)] == [200, 200, 200]
    assert [seconds[s] for s in (8, 9, 10)] == [500, 500, 500]
    assert [seconds[s] for s in (11, 12, 19)] == [200, 200, 200]


def test_processes_share_the_live_rate() -> None:
    changes = [(6.0, LoadDoc(version=1, rate=600.0))]
    total: Counter[int] = Counter()
    for index in range(3):
        got, _ = run(schedule(index, 3), list(changes))
        total.update(per_second(got))
    assert all(total[s] == 100 for s in range(6))
    assert all(total[s] == 600 for s in range(7, 20))


def test_stop_ends_the_iteration_even_at_rate_zero() -> None:
    live = LiveLoad(None)
    sim = Sim(live, [(2.0, LoadDoc(version=1, rate=0.0))])
    it = schedule().live(live, now=sim.now, sleep=sim.sleep, stop=sim.stop)
    got = []
    for at in it:
        sim.advance(at)
        got.append(at)
    # nothing after the stop: the iterator slept to the end of the run (20 s), bounded
    assert sim.t == pytest.approx(20.0, abs=0.2)
    sim2 = Sim(LiveLoad(None), [(2.0, LoadDoc(version=1, rate=0.0))])
    it2 = schedule().live(sim2.live, now=sim2.now, sleep=sim2.sleep, stop=lambda: sim2.t > 3.0)
    list(it2)
    assert sim2.t < 3.5  # stopping honoured within a horizon step while nothing is due


def test_the_document_round_trips_and_only_newer_versions_apply(tmp_path: Path) -> None:
    path = tmp_path / "control" / "load.json"
    live = LiveLoad(path)
    assert live.poll() is False and live.doc == LoadDoc()
    doc = LoadDoc(version=2, rate=250.0, spike=Spike(peak=900.0, from_s=3.0, until_s=13.0))
    write_doc(path, doc)
    assert read_doc(path) == doc
    assert live.poll() is True and live.doc == doc
    assert live.poll() is False  # unchanged stat: not read again
    write_doc(path, LoadDoc(version=1, rate=5.0))
    assert live.poll() is False and live.doc == doc  # older: ignored
    path.write_text('{"version": 3, "rate": -1}')
    assert live.poll() is False and live.doc == doc
    assert live.error is not None and "rate must be in [0" in live.error
    assert [p.name for p in path.parent.iterdir()] == ["load.json"]  # no temporary left


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ([], "must be an object"),
        ({"rate": 1}, "version"),
        ({"version": True}, "version"),
        ({"version": 1, "rate": "3x"}, "rate must be a number"),
        ({"version": 1, "rate": 2e6}, "rate must be in"),
        ({"version": 1, "spike": 5}, "spike must be an object"),
        ({"version": 1, "spike": {"peak": 1, "from_s": 2}}, "spike.until_s"),
        ({"version": 1, "spike": {"peak": -1, "from_s": 2, "until_s": 3}}, "spike.peak"),
        ({"version": 1, "spike": {"peak": 1, "from_s": 4, "until_s": 3}}, "spike.until_s"),
    ],
)
def test_a_malformed_document_names_the_field(data: object, field: str) -> None:
    with pytest.raises(ValueError, match=field.replace("[", r"\[")):
        parse_doc(json.loads(json.dumps(data)))
