"""FaultSchedule timing and bookkeeping, with a fake clock and a fake chaos client."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from spikegate.chaos.errors import ChaosUnavailable, ServerError
from spikegate.chaos.faults import FaultSpec
from spikegate.chaos.schedule import FaultSchedule


class FakeClock:
    """Monotonic time that only moves when the schedule sleeps."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.freeze_at: float | None = None
        self.frozen = asyncio.Event()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds
        if self.freeze_at is not None and self.now >= self.freeze_at:
            self.frozen.set()
            await asyncio.Event().wait()  # park here until cancelled
        await asyncio.sleep(0)


class FakeChaos:
    """Keeps proxies' toxics and enabled flags; records each call with the clock's time."""

    def __init__(self, clock: FakeClock, proxies: tuple[str, ...] = ("redis", "kafka")) -> None:
        self.clock = clock
        self.toxics: dict[str, dict[str, str]] = {p: {} for p in proxies}
        self.enabled = dict.fromkeys(proxies, True)
        self.calls: list[tuple[Any, ...]] = []
        self.fail: dict[str, Exception] = {}
        self.resets = 0

    def _maybe_fail(self, op: str) -> None:
        if op in self.fail:
            raise self.fail[op]

    def add_toxic(self, proxy: str, type: str, *, name: str | None = None, **kw: Any) -> None:
        self.calls.append((self.clock.now, "add", proxy, type))
        self._maybe_fail("add_toxic")
        self.toxics[proxy][name or type] = type

    def remove_toxic(self, proxy: str, name: str) -> None:
        self.calls.append((self.clock.now, "remove", proxy, name))
        self._maybe_fail("remove_toxic")
        del self.toxics[proxy][name]

    def set_enabled(self, name: str, enabled: bool) -> None:
        self.calls.append((self.clock.now, "enable" if enabled else "disable", name))
        self._maybe_fail("set_enabled")
        self.enabled[name] = enabled

    def reset(self) -> None:
        self.calls.append((self.clock.now, "reset"))
        self._maybe_fail("reset")
        self.resets += 1
        for proxy in self.toxics:
            self.toxics[proxy].clear()
            self.enabled[proxy] = True

    def clean(self) -> bool:
        return all(self.enabled.values()) and not any(self.toxics.values())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def chaos(clock: FakeClock) -> FakeChaos:
    return FakeChaos(clock)


def make(
    chaos: FakeChaos, clock: FakeClock, specs: list[FaultSpec], events: list[dict[str, Any]]
) -> FaultSchedule:
    return FaultSchedule(chaos, specs, on_event=events.append, clock=clock, sleep=clock.sleep)


def kinds(events: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
    return [(e["kind"], e.get("id", ""), e["t"]) for e in events]


@pytest.mark.timeout(10)
async def test_fault_starts_at_its_offset_and_expires_after_its_duration(
    clock: FakeClock, chaos: FakeChaos
) -> None:
    events: list[dict[str, Any]] = []
    spec = FaultSpec(0.5, 0.5, None, "redis_latency", {"latency_ms": 100})
    await make(chaos, clock, [spec], events).run(clock.now)
    assert chaos.calls == [
        (1000.5, "add", "redis", "latency"),
        (1001.0, "remove", "redis", "spikegate_s1_latency"),
        (1001.0, "reset"),
    ]
    assert kinds(events) == [("fault_start", "s1", 0.5), ("fault_stop", "s1", 1.0)]
    start, stop = events
    assert start["proxy"] == "redis" and start["fault"] == "redis_latency"
    assert start["params"] == {
        "latency_ms": 100, "jitter_ms": 0, "stream": "downstream", "toxicity": 1.0,
    }  # fmt: skip
    assert start["source"] == "schedule" and start["duration_s"] == pytest.approx(0.5)
    assert stop["reason"] == "expired" and stop["params"] == start["params"]
    assert chaos.clean()


@pytest.mark.timeout(10)
async def test_offsets_count_from_the_given_start_not_from_when_run_is_called(
    clock: FakeClock, chaos: FakeChaos
) -> None:
    events: list[dict[str, Any]] = []
    await make(chaos, clock, [FaultSpec(2.0, 1.0, None, "kafka_down")], events).run(clock.now - 1.5)
    assert chaos.calls[0] == (1000.5, "disable", "kafka")
    assert kinds(events) == [("fault_start", "s1", 2.0), ("fault_stop", "s1", 3.0)]


@pytest.mark.timeout(10)
async def test_overlapping_faults_start_and_stop_in_time_order(
    clock: FakeClock, chaos: FakeChaos
) -> None:
    events: list[dict[str, Any]] = []
    specs = [
        FaultSpec(3.0, 1.0, None, "kafka_stall"),
        FaultSpec(1.0, 4.0, None, "redis_latency"),
        FaultSpec(2.0, 1.0, None, "redis_reset"),
    ]
    await make(chaos, clock, specs, events).run(clock.now)
    assert kinds(events) == [
        ("fault_start", "s2", 1.0),
        ("fault_start", "s3", 2.0),
        ("fault_stop", "s3", 3.0),  # a stop due at the same instant goes before a start
        ("fault_start", "s1", 3.0),
        ("fault_stop", "s1", 4.0),
        ("fault_stop", "s2", 5.0),
    ]
    assert chaos.resets == 1 and chaos.clean()


@pytest.mark.timeout(10)
async def test_overlapping_down_faults_reenable_only_when_the_last_one_ends(
    clock: FakeClock, chaos: FakeChaos
) -> None:
    events: list[dict[str, Any]] = []
    specs = [FaultSpec(0.0, 10.0, None, "redis_down"), FaultSpec(2.0, 3.0, None, "redis_down")]
    schedule = make(chaos, clock, specs, events)
    task = asyncio.create_task(schedule.run(clock.now))
    clock.freeze_at = 1000.0 + 6.0
    await asyncio.wait_for(clock.frozen.wait(), 5)
    assert chaos.enabled["redis"] is False  # the second fault ended at 5 s, the first holds
    assert [c[1] for c in chaos.calls] == ["disable", "disable"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert chaos.enabled["redis"] is True


@pytest.mark.timeout(10)
async def test_failure_to_apply_is_recorded_and_the_timeline_goes_on(
    clock: FakeClock, chaos: FakeChaos
) -> None:
    events: list[dict[str, Any]] = []
    chaos.fail["add_toxic"] = ServerError(500, "boom")
    specs = [FaultSpec(1.0, 1.0, None, "redis_latency"), FaultSpec(1.5, 1.0, None, "kafka_down")]
    await make(chaos, clock, specs, events).run(clock.now)
    assert kinds(events) == [
        ("fault_error", "s1", 1.0),
        ("fault_start", "s2", 1.5),
        ("fault_stop", "s2", 2.5),
    ]
    assert events[0]["action"] == "start" and "500 boom" in events[0]["error"]
    assert events[0]["proxy"] == "redis" and events[0]["fault"] == "redis_latency"
    assert chaos.resets == 1


@pytest.mark.timeout(10)
async def test_failure_to_remove_is_recorded_and_the_final_reset_still_runs(
    clock: FakeClock, chaos: FakeChaos
) -> None:
    events: list[dict[str, Any]] = []
    chaos.fail["remove_toxic"] = ChaosUnavailable("gone")
    schedule = make(chaos, clock, [FaultSpec(0.0, 1.0, None, "redis_latency")], events)
    await schedule.run(clock.now)
    assert kinds(events) == [("fault_start", "s1", 0.0), ("fault_error", "s1", 1.0)]
    assert events[1]["action"] == "stop" and events[1]["error"] == "gone"
    assert chaos.resets == 1 and chaos.clean() and schedule.reset_ok is True


@pytest.mark.timeout(10)
async def test_cancelling_the_run_ends_active_faults_and_resets_the_server(
    clock: FakeClock, chaos: FakeChaos
) -> None:
    events: list[dict[str, Any]] = []
    specs = [FaultSpec(0.5, 10.0, None, "redis_latency"), FaultSpec(5.0, 1.0, None, "kafka_down")]
    schedule = make(chaos, clock, specs, events)
    clock.freeze_at = 1000.7
    task = asyncio.create_task(schedule.run(clock.now))
    await asyncio.wait_for(clock.frozen.wait(), 5)
    assert not chaos.clean()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert kinds(events) == [("fault_start", "s1", 0.5), ("fault_stop", "s1", pytest.approx(0.7))]
    assert events[1]["reason"] == "shutdown"
    assert chaos.calls[-1][1] == "reset" and chaos.clean()
    assert schedule.closed and schedule.active() == []
    assert all(c[2] != "kafka" for c in chaos.calls if len(c) > 2)  # s2 never started


@pytest.mark.timeout(10)
async def test_a_runner_cancelled_before_its_first_step_still_resets(
    clock: FakeClock, chaos: FakeChaos
) -> None:
    events: list[dict[str, Any]] = []
    async with make(chaos, clock, [FaultSpec(0.0, 1.0, None, "redis_down")], events):
        pass
    assert chaos.resets == 1 and chaos.clean()


@pytest.mark.timeout(10)
async def test_context_manager_runs_the_timeline_and_resets_on_exit(
    clock: FakeClock, chaos: FakeChaos
) -> None:
    events: list[dict[str, Any]] = []
    clock.freeze_at = 1000.0 + 1.5
    async with make(chaos, clock, [FaultSpec(1.0, 5.0, None, "kafka_down")], events) as sched:
        await asyncio.wait_for(clock.frozen.wait(), 5)
        assert [a.id for a in sched.active()] == ["s1"]
        assert chaos.enabled["kafka"] is False
    assert kinds(events) == [("fault_start", "s1", 1.0), ("fault_stop", "s1", 1.5)]
    assert chaos.clean() and chaos.resets == 1


@pytest.mark.timeout(10)
async def test_exception_in_the_body_still_resets(clock: FakeClock, chaos: FakeChaos) -> None:
    events: list[dict[str, Any]] = []
    sched = make(chaos, clock, [], events)
    with pytest.raises(RuntimeError, match="load crashed"):
        async with sched:
            sched.add("redis_latency", duration_s=None)
            raise RuntimeError("load crashed")
    assert chaos.clean() and events[-1]["kind"] == "fault_stop"
    assert events[-1]["reason"] == "shutdown"


@pytest.mark.timeout(10)
async def test_manual_fault_produces_the_same_events_and_expires_on_schedule(
    clock: FakeClock, chaos: FakeChaos
) -> None:
    events: list[dict[str, Any]] = []
    sched = make(chaos, clock, [], events)
    sched.begin(clock.now - 2.0)
    active = sched.add("latency", "kafka", {"latency_ms": 30}, duration_s=1.5)
    assert active.id == "m1" and active.started_t == 2.0 and active.ends_t == 3.5
    assert chaos.toxics["kafka"] == {"spikegate_m1_latency": "latency"}
    await sched.run()
    assert kinds(events) == [("fault_start", "m1", 2.0), ("fault_stop", "m1", 3.5)]
    assert events[0]["source"] == "manual" and events[0]["params"]["latency_ms"] == 30
    assert events[1]["reason"] == "expired"


@pytest.mark.timeout(10)
async def test_manual_remove_takes_the_fault_off_with_reason_manual(
    clock: FakeClock, chaos: FakeChaos
) -> None:
    events: list[dict[str, Any]] = []
    sched = make(chaos, clock, [], events)
    first = sched.add("redis_down")
    second = sched.add("kafka_stall")
    sched.remove(first.id)
    assert chaos.enabled["redis"] is True and chaos.toxics["kafka"]
    assert [a.id for a in sched.active()] == [second.id]
    sched.clear()
    assert chaos.clean()
    assert [(e["kind"], e.get("reason")) for e in events][-2:] == [
        ("fault_stop", "manual"),
        ("fault_stop", "manual"),
    ]
    with pytest.raises(ValueError, match=r"fault_id 'm9' is not active"):
        sched.remove("m9")
    sched.close()
    with pytest.raises(RuntimeError, match="closed"):
        sched.add("redis_down")


@pytest.mark.timeout(10)
async def test_bad_manual_fault_is_a_value_error_and_touches_nothing(
    clock: FakeClock, chaos: FakeChaos
) -> None:
    events: list[dict[str, Any]] = []
    sched = make(chaos, clock, [], events)
    with pytest.raises(ValueError, match=r"latency\.latency_ms"):
        sched.add("redis_latency", params={"latency_ms": -1})
    with pytest.raises(ValueError, match="duration_s"):
        sched.add("redis_latency", duration_s=0)
    with pytest.raises(ValueError, match="proxy for 'redis_down'"):
        sched.add("redis_down", "kafka")
    assert chaos.calls == [] and events == []


@pytest.mark.timeout(10)
async def test_manual_fault_the_server_rejects_raises_and_is_recorded(
    clock: FakeClock, chaos: FakeChaos
) -> None:
    events: list[dict[str, Any]] = []
    chaos.fail["set_enabled"] = ServerError(500, "nope")
    sched = make(chaos, clock, [], events)
    with pytest.raises(ServerError):
        sched.add("kafka_down")
    assert events[-1]["kind"] == "fault_error" and events[-1]["source"] == "manual"
    assert sched.active() == []


@pytest.mark.timeout(10)
async def test_failed_final_reset_is_recorded_not_raised(
    clock: FakeClock, chaos: FakeChaos
) -> None:
    events: list[dict[str, Any]] = []
    sched = make(chaos, clock, [], events)
    sched.add("redis_down")
    chaos.fail["reset"] = ChaosUnavailable("server died")
    sched.close()
    sched.close()  # idempotent
    assert sched.reset_ok is False
    assert [(e["kind"], e.get("action")) for e in events[1:]] == [
        ("fault_error", "reset"),
        ("fault_error", "stop"),
    ]
    assert sum(1 for c in chaos.calls if c[1] == "reset") == 1


@pytest.mark.timeout(10)
async def test_broken_event_sink_does_not_stop_faults_from_expiring(
    clock: FakeClock, chaos: FakeChaos
) -> None:
    def sink(event: dict[str, Any]) -> None:
        raise OSError("disk full")

    sched = FaultSchedule(
        chaos,
        [FaultSpec(0.0, 1.0, None, "redis_down")],
        on_event=sink,
        clock=clock,
        sleep=clock.sleep,
    )
    await sched.run(clock.now)
    assert [c[1] for c in chaos.calls] == ["disable", "enable", "reset"]


@pytest.mark.timeout(10)
async def test_a_late_start_still_applies_then_expires_a_fault_whose_window_passed(
    clock: FakeClock, chaos: FakeChaos
) -> None:
    events: list[dict[str, Any]] = []
    await make(chaos, clock, [FaultSpec(0.0, 1.0, None, "redis_down")], events).run(clock.now - 5.0)
    assert [e["kind"] for e in events] == ["fault_start", "fault_stop"]
    assert chaos.clean()


def test_constructor_rejects_non_spec_entries_and_bad_tick(
    clock: FakeClock, chaos: FakeChaos
) -> None:
    with pytest.raises(ValueError, match=r"specs\[0\] must be a FaultSpec"):
        FaultSchedule(chaos, [{"at_s": 0}], on_event=print)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="tick_s"):
        FaultSchedule(chaos, [], on_event=print, tick_s=0)


def test_begin_twice_is_an_error(clock: FakeClock, chaos: FakeChaos) -> None:
    sched = FaultSchedule(chaos, [], on_event=print, clock=clock)
    sched.begin()
    with pytest.raises(RuntimeError, match="already started"):
        sched.begin()
