"""Master/worker runs (load.workers): the worker command's address, the master's command line,
the bounded wait for workers, the missing workers the master reports, and the merge that stops
waiting for a lost worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spikegate.contract.load import LoadSection
from spikegate.contract.rundir import T0_FILE, WORKERS_FILE
from spikegate.harness.errors import EnvironmentProblem, UsageError
from spikegate.harness.loadgen import locust_command
from spikegate.harness.worker import LocustWorker, parse_master
from spikegate.harness.workers import (
    await_workers,
    joined_workers,
    master_address,
    missing_workers,
    write_t0,
)
from spikegate.locustfiles.recorder import OUTCOME_INDEX, Merger, SecondStats


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def write_workers(run_dir: Path, workers: dict[str, dict[str, object]]) -> None:
    (run_dir / WORKERS_FILE).write_text(json.dumps({"expected": 2, "workers": workers}))


def test_parse_master_takes_host_port_and_refuses_the_rest() -> None:
    assert parse_master("127.0.0.1:5557") == ("127.0.0.1", 5557)
    assert parse_master("[::1]:5557") == ("::1", 5557)
    for bad in ("127.0.0.1", ":5557", "host:port", "host:0", "host:70000"):
        with pytest.raises(UsageError, match="HOST:PORT"):
            parse_master(bad)


def test_the_worker_fetches_the_locustfiles_from_the_master(tmp_path: Path) -> None:
    cmd = LocustWorker(tmp_path, master=("10.0.0.1", 5557), processes=2).command()
    assert cmd[cmd.index("-f") + 1] == "-"
    assert "--worker" in cmd
    assert cmd[cmd.index("--master-host") + 1] == "10.0.0.1"
    assert cmd[cmd.index("--master-port") + 1] == "5557"
    assert cmd[cmd.index("--processes") + 1] == "2"


def test_the_master_listens_where_told_and_expects_the_workers() -> None:
    cmd = locust_command("http://127.0.0.1:9", "steady", workers=2, master_bind=("127.0.0.1", 6001))
    assert "--master" in cmd
    assert cmd[cmd.index("--master-bind-host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--master-bind-port") + 1] == "6001"
    assert cmd[cmd.index("--expect-workers") + 1] == "2"
    assert "--master" not in locust_command("http://127.0.0.1:9", "steady")


def test_master_address_picks_a_free_port_for_port_zero() -> None:
    host, port = master_address("127.0.0.1:0")
    assert host == "127.0.0.1" and port > 0
    assert master_address("10.9.0.1:5557") == ("10.9.0.1", 5557)


def test_load_workers_rules() -> None:
    assert LoadSection(workers=2).workers == 2
    with pytest.raises(ValueError, match=r"load\.processes must be 1 with load\.workers"):
        LoadSection(workers=2, processes=2)
    with pytest.raises(ValueError, match=r"load\.master_bind must be HOST:PORT"):
        LoadSection(workers=1, master_bind="localhost")
    with pytest.raises(ValueError, match=r"load\.workers does not run load\.locustfile yet"):
        LoadSection(workers=1, locustfile="mine.py")


def test_await_workers_returns_once_all_joined(tmp_path: Path) -> None:
    clock = FakeClock()
    polls: list[float] = []

    def check() -> None:
        polls.append(clock.now)
        if len(polls) == 3:
            write_workers(tmp_path, {"a": {"state": "joined"}, "b": {"state": "running"}})

    await_workers(
        tmp_path, 2, address=("127.0.0.1", 1), timeout_s=30, clock=clock, sleep=clock.sleep,
        check=check,
    )  # fmt: skip
    assert len(polls) == 3 and clock.now < 1.0


def test_await_workers_gives_up_with_the_command_that_starts_one(tmp_path: Path) -> None:
    write_workers(tmp_path, {"a": {"state": "joined"}, "b": {"state": "missing"}})
    clock = FakeClock()
    with pytest.raises(EnvironmentProblem) as err:
        await_workers(
            tmp_path, 2, address=("127.0.0.1", 4321), timeout_s=30, clock=clock,
            sleep=clock.sleep,
        )  # fmt: skip
    assert err.value.exit_code == 4
    assert str(err.value.message) == (
        "expected 2 workers, 1 joined within 30 s: start them with "
        "`spikegate worker --master 127.0.0.1:4321`"
    )
    assert 30.0 <= clock.now < 30.5


def test_missing_workers_are_named_with_host_pid_and_reason(tmp_path: Path) -> None:
    assert missing_workers(tmp_path) == []  # no file yet
    write_workers(
        tmp_path,
        {
            "h_1": {"state": "done", "host": "h", "pid": 1},
            "h_2": {
                "state": "missing", "host": "h", "pid": 2, "t": 9.5,
                "reason": "it stopped sending heartbeats",
            },
        },
    )  # fmt: skip
    (w,) = missing_workers(tmp_path)
    assert w.id == "h_2"
    assert w.describe() == "worker h_2 (h, pid 2) at t=9.5s: it stopped sending heartbeats"
    assert joined_workers(tmp_path) == 1


def test_write_t0_is_what_the_master_reads(tmp_path: Path) -> None:
    write_t0(tmp_path, 1234.5)
    assert json.loads((tmp_path / T0_FILE).read_text()) == {"t0_epoch": 1234.5}


def second(s: int, sent: int) -> SecondStats:
    out = SecondStats(s)
    out.intended = out.sent = sent
    for _ in range(sent):
        out.record(0, "pub-1", OUTCOME_INDEX["ok"], "admitted", 1_000)
    return out.seal()


def test_the_merge_adds_workers_exactly_and_stops_waiting_for_a_lost_one() -> None:
    m = Merger()
    m.add("w1", [second(0, 3).wire(), second(1, 4).wire()], watermark=2)
    m.add("w2", [second(0, 5).wire()], watermark=1)
    (s0,) = m.ready(expected_workers=2)
    assert (s0.second, s0.sent, s0.outcomes[OUTCOME_INDEX["ok"]], s0.processes) == (0, 8, 8, 2)
    assert m.ready(expected_workers=2) == []  # second 1 waits for w2
    m.lost("w2")
    assert [(s.second, s.sent, s.processes) for s in m.ready(expected_workers=2)] == [(1, 4, 1)]
    m.add("w2", [second(2, 1).wire()], watermark=3)  # a late report does not reopen the wait
    m.add("w1", [second(2, 2).wire()], watermark=None)
    assert m.done(2)
    assert [(s.second, s.sent) for s in m.ready(expected_workers=2)] == [(2, 3)]


def test_a_lost_worker_turns_every_failure_inconclusive_naming_it() -> None:
    """The generator lost a worker: what it sent is missing from its record, so the service
    cannot fail on it; the run is inconclusive (exit 3), never a pass."""
    import dataclasses

    from spikegate.harness.checker import check
    from spikegate.harness.history import Event, ImpressionAccounting
    from tests.unit.harness.test_checker import healthy_rows, history

    lossy = ImpressionAccounting(acked=500, found=497, missing=3, missing_sample=("a", "b", "c"))
    assert check(history(impressions=lossy)).exit_code == 1  # alone: a failure
    crash = Event(9.0, "component_crash", {"name": "locust worker vm_1", "returncode": None})
    rows = [
        dataclasses.replace(r, intended=r.intended * 2) if r.t > 9 else r for r in healthy_rows()
    ]
    result = check(history(rows=rows, impressions=lossy, events=[crash]))
    assert result.exit_code == 3
    assert not result.failed()
    loss = next(v for v in result.verdicts if v.name == "no_silent_loss")
    assert loss.status == "inconclusive"
    assert loss.message.startswith("the generator lost locust worker vm_1 mid-run")
