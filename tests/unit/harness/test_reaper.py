"""The reaper's pure parts: what it says, and which records it reads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spikegate.harness.lifeline import owner_token, parse_token, process_start
from spikegate.harness.reaper import Reaped, children_dir, describe, records


@pytest.fixture(autouse=True)
def _runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIKEGATE_RUNTIME_DIR", str(tmp_path / "rt"))
    monkeypatch.delenv("SPIKEGATE_STATE_DIR", raising=False)


def test_describe_names_the_dead_harness_and_each_process() -> None:
    reaped = [
        Reaped(11, "chaos server", 7, "/r/logs"),
        Reaped(12, "redis-server", 7, "/r/logs"),
    ]
    assert describe(reaped) == (
        "reaped 2 processes left by an earlier run (harness pid 7, killed): "
        "chaos server (pid 11), redis-server (pid 12)"
    )


def test_describe_one_process_of_several_harnesses_and_nothing() -> None:
    assert describe([Reaped(5, "target (uvicorn)", 1, "")]) == (
        "reaped 1 process left by an earlier run (harness pid 1, killed): target (uvicorn) (pid 5)"
    )
    two = describe([Reaped(5, "locust", 3, ""), Reaped(6, "locust", 2, "")])
    assert "left by earlier runs (harness pids 2, 3, killed)" in two
    assert describe([]) == ""


def test_the_state_dir_follows_the_runtime_dir_or_its_own_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert children_dir() == tmp_path / "rt" / "children"
    monkeypatch.setenv("SPIKEGATE_STATE_DIR", str(tmp_path / "state"))
    assert children_dir() == tmp_path / "state"


def test_unreadable_records_are_dropped() -> None:
    folder = children_dir()
    folder.mkdir(parents=True)
    (folder / "1-2.json").write_text("{not json")
    (folder / "1-3.json").write_text('{"pid": "x"}')
    (folder / "1-4.json").write_text('{"pid": 4, "owner_token": "1.5"}')
    assert [data["pid"] for _, data in records()] == [4]
    assert sorted(p.name for p in folder.iterdir()) == ["1-4.json"]


def test_a_token_names_a_process_by_pid_and_start_time() -> None:
    token = owner_token()
    assert parse_token(token) == (os.getpid(), process_start(os.getpid()))
    assert owner_token(os.getpid()) == token
    assert parse_token("garbage") is None and parse_token("12.") is None
