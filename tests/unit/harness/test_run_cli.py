"""`spikegate run` / `schema` in-process: usage errors exit 2 and name the field; no stack."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from spikegate.harness.cli import main
from spikegate.harness.errors import UsageError
from spikegate.harness.loadgen import locust_command
from spikegate.harness.orchestrator import check_target_allowed, new_run_dir
from spikegate.harness.scenario import load_scenario


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=200), buf


def test_malformed_scenario_exits_2_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[load]\nshape = "steady"\nbase_rps = -5\n', encoding="utf-8")
    console, buf = _console()
    assert main(["run", str(bad), "--no-live", "--out", str(tmp_path / "run")], console) == 2
    out = buf.getvalue()
    assert "load.base_rps" in out and "line 4" in out
    assert "Traceback" not in out
    assert not (tmp_path / "run").exists()  # nothing started, no run directory


def test_unknown_field_exits_2_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "typo.toml"
    bad.write_text('name = "typo"\n[load]\nduraton_s = 5\n', encoding="utf-8")
    console, buf = _console()
    assert main(["run", str(bad), "--no-live"], console) == 2
    assert "load.duraton_s" in buf.getvalue()


def test_bad_set_override_exits_2(tmp_path: Path) -> None:
    console, buf = _console()
    assert main(["run", "smoke", "--set", "load.duration_s=-1", "--no-live"], console) == 2
    assert "load.duration_s" in buf.getvalue()


def test_negative_seed_exits_2() -> None:
    console, buf = _console()
    assert main(["run", "smoke", "--seed", "-3", "--no-live"], console) == 2
    assert "--seed" in buf.getvalue()


def test_remote_external_target_is_refused_with_exit_2(tmp_path: Path) -> None:
    sc = tmp_path / "remote.toml"
    sc.write_text(
        'name = "remote"\n[target]\nkind = "external"\nurl = "http://203.0.113.9:8080"\n',
        encoding="utf-8",
    )
    console, buf = _console()
    assert main(["run", str(sc), "--no-live", "--out", str(tmp_path / "r")], console) == 2
    assert "--allow-remote-target" in buf.getvalue()
    assert not (tmp_path / "r").exists()


def test_allow_remote_flag_lifts_the_refusal(tmp_path: Path) -> None:
    sc = tmp_path / "remote.toml"
    sc.write_text(
        'name = "remote"\n[target]\nkind = "external"\nurl = "http://203.0.113.9:8080"\n',
        encoding="utf-8",
    )
    with pytest.raises(UsageError):
        check_target_allowed(load_scenario(sc))
    check_target_allowed(load_scenario(sc, ["target.allow_remote=true"]))  # no error
    check_target_allowed(load_scenario(sc, ["target.url='http://127.0.0.1:9'"]))


def test_schema_prints_a_json_schema_with_the_sections(capsys: pytest.CaptureFixture[str]) -> None:
    console, _ = _console()
    assert main(["schema"], console) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"target", "stack", "load", "faults", "checks", "seed"} <= set(schema["properties"])


def test_schema_out_writes_the_file(tmp_path: Path) -> None:
    console, _ = _console()
    out = tmp_path / "scenario.schema.json"
    assert main(["schema", "--out", str(out)], console) == 0
    assert json.loads(out.read_text())["title"] == "Scenario"


def test_out_dir_holding_a_run_is_refused(tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text("{}")
    with pytest.raises(UsageError, match="already holds a run"):
        new_run_dir("smoke", tmp_path)


def test_default_run_dirs_are_unique_per_run(tmp_path: Path) -> None:
    a = new_run_dir("smoke", None, root=tmp_path)
    b = new_run_dir("smoke", None, root=tmp_path)
    assert a != b and a.name.endswith("-smoke") and b.name.startswith(a.name)


def test_locust_command_follows_the_contract() -> None:
    cmd = locust_command("http://127.0.0.1:9", "flash_crowd", processes=2)
    files = cmd[cmd.index("-f") + 1].split(",")
    assert files[0].endswith("locustfiles/adserver.py")
    assert files[1].endswith("locustfiles/shape_flash_crowd.py")
    for flag in ("--headless", "--only-summary", "--exit-code-on-error", "--stop-timeout"):
        assert flag in cmd
    assert cmd[cmd.index("--processes") + 1] == "2"
    assert "--processes" not in locust_command("http://127.0.0.1:9", "steady")
    with pytest.raises(ValueError, match="shape must be one of"):
        locust_command("http://127.0.0.1:9", "zigzag")
