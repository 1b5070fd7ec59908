"""The run's watch loop on a fake clock: how each way a run can end is decided and recorded.

`_Run` takes its monotonic clock and its sleep as arguments, so the loop runs here in
microseconds of real time: the fake sleep advances the fake clock, Locust and the stack's
children are stand-ins whose state is a function of that clock, and the events it writes
are read back from events.jsonl.
"""

from __future__ import annotations

import io
import json
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from spikegate.harness.errors import EnvironmentProblem
from spikegate.harness.orchestrator import LOCUST_GRACE_S, TICK_S, _Run
from spikegate.harness.scenario import parse_scenario

SCENARIO = {
    "name": "watch",
    "load": {"duration_s": 20.0, "warmup_s": 2.0, "base_rps": 10.0},
    "faults": [{"at_s": 6.0, "for_s": 4.0, "fault": "redis_latency"}],
    "phases": {"recovery_s": 5.0},
}


@dataclass
class Clock:
    now: float = 1000.0
    ticks: int = 0
    at: dict[int, Any] = field(default_factory=dict)  # tick -> what happens then

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.ticks += 1
        self.now += seconds
        if self.ticks in self.at:
            self.at.pop(self.ticks)()
        assert self.ticks < 10_000, "the watch loop did not end"


class FakeChild:
    """A child whose exit is decided by the test (`ends_at` on the run's clock)."""

    def __init__(self, clock: Clock, name: str, log: Path, *, ends_at: float | None, code: int):
        self.clock, self.name, self.log_path = clock, name, log
        self.ends_at, self.code, self.pid = ends_at, code, 4242

    @property
    def alive(self) -> bool:
        return self.ends_at is None or self.clock() < self.ends_at

    @property
    def returncode(self) -> int | None:
        return None if self.alive else self.code


class FakeStack:
    def __init__(self, child: FakeChild) -> None:
        self.child = child

    def dead_child(self) -> FakeChild | None:
        return None if self.child.alive else self.child


class FakeSampler:
    latest: dict[str, Any] | None = None


def make_run(
    tmp_path: Path, clock: Clock, *, locust_ends: float | None, code: int = 0
) -> tuple[_Run, Console]:
    scenario = parse_scenario(SCENARIO, source="test")
    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True)
    console = Console(file=io.StringIO(), width=200)
    run = _Run(scenario, run_dir, console, False, ["test"], clock=clock, sleep=clock.sleep)
    run.t0_mono = clock() + 1.0  # load starts one second from now
    run.events.set_t0(run.t0_mono)
    log = run_dir / "logs" / "locust.log"
    log.write_text("locust: last words\n", encoding="utf-8")
    ends = None if locust_ends is None else run.t0_mono + locust_ends
    run.locust = FakeChild(clock, "locust", log, ends_at=ends, code=code)  # type: ignore[assignment]
    run.sampler = FakeSampler()  # type: ignore[assignment]
    return run, console


def events(run: _Run) -> list[dict[str, Any]]:
    run.events.close()
    run.samples.close()
    path = run.run_dir / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_complete_run_records_each_phase_at_its_start_and_ends_when_locust_ends(
    tmp_path: Path,
) -> None:
    clock = Clock()
    run, console = make_run(tmp_path, clock, locust_ends=20.6)
    run._watch()
    evs = events(run)
    phases = [(e["name"], e["t"]) for e in evs if e["kind"] == "phase"]
    assert phases == [
        ("warmup", 0.0), ("baseline", 2.0), ("stress", 6.0), ("recovery", 10.0), ("post", 15.0),
    ]  # fmt: skip
    kinds = [e["kind"] for e in evs]
    assert kinds[:2] == ["run_start", "load_start"] and kinds[-1] == "load_stop"
    stop = evs[-1]
    assert stop["reason"] == "done" and 20.6 <= stop["t"] < 20.6 + TICK_S + 1e-9
    assert run.status == "complete" and run.failure is None
    assert "warning" not in kinds
    assert "[  5.0s baseline]" in console.file.getvalue()  # type: ignore[attr-defined]


def test_locust_ending_long_before_the_duration_is_a_warning(tmp_path: Path) -> None:
    clock = Clock()
    run, _ = make_run(tmp_path, clock, locust_ends=8.0)
    run._watch()
    evs = events(run)
    warnings = [e["message"] for e in evs if e["kind"] == "warning"]
    assert len(warnings) == 1 and warnings[0].startswith("Locust ended at 8.")
    assert run.status == "complete"
    assert [e["name"] for e in evs if e["kind"] == "phase"] == ["warmup", "baseline", "stress"]


def test_locust_exiting_with_an_error_fails_the_run_with_its_log(tmp_path: Path) -> None:
    clock = Clock()
    run, _ = make_run(tmp_path, clock, locust_ends=3.0, code=2)
    run._watch()
    crash = [e for e in events(run) if e["kind"] == "component_crash"]
    assert crash and crash[0]["name"] == "locust" and crash[0]["returncode"] == 2
    assert "locust: last words" in crash[0]["log_tail"]
    assert isinstance(run.failure, EnvironmentProblem)
    assert "locust (pid 4242) exited with code 2" in str(run.failure)


def test_a_stack_child_that_dies_ends_the_run_at_the_next_tick(tmp_path: Path) -> None:
    clock = Clock()
    run, _ = make_run(tmp_path, clock, locust_ends=None)
    dies = clock() + 1.0 + 7.0
    log = run.run_dir / "logs" / "redis.log"
    log.write_text("redis: out of memory\n", encoding="utf-8")
    run.stack = FakeStack(FakeChild(clock, "redis", log, ends_at=dies, code=137))  # type: ignore[assignment]
    run._watch()
    evs = events(run)
    crash = next(e for e in evs if e["kind"] == "component_crash")
    assert crash["name"] == "redis" and 7.0 <= crash["t"] < 7.0 + TICK_S + 1e-9
    assert evs[-1]["kind"] == "load_stop" and evs[-1]["reason"] == "component_crash"
    assert "redis: out of memory" in str(run.failure)


def test_a_signal_ends_the_run_as_interrupted_at_the_next_tick(tmp_path: Path) -> None:
    clock = Clock()
    run, _ = make_run(tmp_path, clock, locust_ends=None)
    ticks_to_12s = int((1.0 + 12.0) / TICK_S) + 1
    clock.at[ticks_to_12s] = lambda: run.signals._handle(signal.SIGINT, None)
    run._watch()
    evs = events(run)
    assert run.status == "interrupted"
    assert evs[-1]["kind"] == "load_stop" and evs[-1]["reason"] == "interrupted"
    assert 12.0 <= evs[-1]["t"] <= 12.0 + 2 * TICK_S


def test_locust_that_never_ends_is_stopped_past_the_grace_bound(tmp_path: Path) -> None:
    clock = Clock()
    run, _ = make_run(tmp_path, clock, locust_ends=None)
    run._watch()
    evs = events(run)
    bound = 20.0 + LOCUST_GRACE_S
    assert [e["message"] for e in evs if e["kind"] == "warning"] == [
        f"Locust still ran {LOCUST_GRACE_S:g} s past the end"
    ]
    assert evs[-1]["reason"] == "timeout" and bound <= evs[-1]["t"] <= bound + TICK_S + 1e-9
    assert run.status == "complete"


def test_closing_runs_every_step_newest_first_even_when_one_fails(tmp_path: Path) -> None:
    clock = Clock()
    run, _ = make_run(tmp_path, clock, locust_ends=None)
    done: list[str] = []

    def step(name: str, fail: bool = False) -> Any:
        def go() -> None:
            done.append(name)
            if fail:
                raise RuntimeError(f"{name} broke")

        return go

    with run._resources:
        run._closing("stack", step("stack"))
        run._closing("sampler", step("sampler"))
        run._closing("drain", step("drain", fail=True))
        run._closing("locust", step("locust"))
    assert done == ["locust", "drain", "sampler", "stack"]
    warnings = [e["message"] for e in events(run) if e["kind"] == "warning"]
    assert warnings == ["teardown step drain failed: RuntimeError('drain broke')"]


def test_the_live_feed_gets_each_row_sample_and_event_the_run_writes_then_its_end(
    tmp_path: Path,
) -> None:
    clock = Clock()
    run, _ = make_run(tmp_path, clock, locust_ends=6.0)
    rows = run.run_dir / "requests.jsonl"

    def second(t: float) -> None:  # the recorder appends a row; the sampler takes a sample
        with rows.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"t": t, "intended": 10, "sent": 10, "outcomes": {"ok": 10}}))
            fh.write("\n")
        run.sampler.latest = {"t": t, "auction_inflight": 2.0, "auction_limit": 16.0}  # type: ignore[union-attr]

    for tick, t in ((3, 0.0), (5, 1.0), (7, 2.0)):
        clock.at[tick] = lambda t=t: second(t)
    run._watch()
    run._stop_control()
    msgs = run.feed.after(0)
    got = [(m.kind, json.loads(m.data)) for m in msgs]
    assert [d["t"] for k, d in got if k == "row"] == [0.0, 1.0, 2.0]
    assert all(d["admitted"] == 10 for k, d in got if k == "row")
    assert [(d["t"], d["inflight"], d["limit"]) for k, d in got if k == "sample"] == [
        (0.0, 2.0, 16.0), (1.0, 2.0, 16.0), (2.0, 2.0, 16.0),
    ]  # fmt: skip
    written = [e["kind"] for e in events(run)]
    assert [d["kind"] for k, d in got if k == "event"] == written  # the same rows, in order
    assert got[-1] == ("end", {"status": "complete", "t": got[-1][1]["t"]})
