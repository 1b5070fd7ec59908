"""LocustProcess for the user's own locustfile: the entry file, Locust's CSV stats, and the
locustfile path in SPIKEGATE_LOAD (nothing started here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spikegate.contract.env import LOAD_ENV, RUN_DIR_ENV
from spikegate.harness.loadgen import LocustProcess


def process(tmp_path: Path, env: dict[str, str], locustfile: str | None) -> LocustProcess:
    return LocustProcess(
        tmp_path / "logs",
        host="http://127.0.0.1:9",
        shape="flash_crowd",
        processes=1,
        env=env,
        run_dir=tmp_path,
        t0_epoch=1000.0,
        locustfile=locustfile,
    )


def test_a_user_locustfile_runs_through_user_py_with_locusts_csv_stats(tmp_path: Path) -> None:
    load = {"shape": "flash_crowd", "locustfile": "relative.py", "user": "Shopper"}
    target = tmp_path / "mine" / "locustfile.py"
    p = process(tmp_path, {LOAD_ENV: json.dumps(load)}, str(target))
    cmd = p.command()
    files = cmd[cmd.index("-f") + 1].split(",")
    assert files[0].endswith("locustfiles/user.py")
    assert files[1].endswith("locustfiles/shape_flash_crowd.py")
    assert cmd[cmd.index("--csv") + 1] == str(tmp_path / "logs" / "locust")
    env = p.env()
    sent = json.loads(env[LOAD_ENV])
    assert sent["locustfile"] == str(target.resolve())  # the one given wins, absolute
    assert sent["user"] == "Shopper" and sent["shape"] == "flash_crowd"
    assert env[RUN_DIR_ENV] == str(tmp_path)


def test_without_a_locustfile_the_reference_user_runs_as_before(tmp_path: Path) -> None:
    p = process(tmp_path, {LOAD_ENV: '{"shape": "flash_crowd"}'}, None)
    cmd = p.command()
    assert cmd[cmd.index("-f") + 1].split(",")[0].endswith("locustfiles/adserver.py")
    assert "--csv" not in cmd
    assert json.loads(p.env()[LOAD_ENV]) == {"shape": "flash_crowd"}


def test_a_load_env_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="JSON object"):
        process(tmp_path, {LOAD_ENV: "[1]"}, "/x/locustfile.py")
