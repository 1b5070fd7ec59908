"""Malformed input never starts anything: exit 2 and one clear message that names the file,
the line and the field (or the `--set`, `--param`, `--for`), never a traceback.

Every case goes through the in-process CLI (`cli.main`). The orchestrator, the ablation
runner and the live-run lookup of `spikegate fault` fail the test if they are entered."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from spikegate.harness import faultcmd, orchestrator
from spikegate.harness.cli import main
from tests.unit.harness.test_history import write_run


@pytest.fixture(autouse=True)
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a malformed input got as far as starting something")

    monkeypatch.setattr(orchestrator, "run_scenario", refuse)
    monkeypatch.setattr(faultcmd, "find_run", refuse)


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the CLI in-process; return its code and everything it printed."""
    buf = io.StringIO()
    code = main(args, Console(file=buf, width=1000))
    captured = capsys.readouterr()
    out = buf.getvalue() + captured.out + captured.err
    assert "Traceback" not in out
    return code, out


# --- scenario files ----------------------------------------------------------------------------
# (id, file text, what the message must say: the field and its line, then the problem)
FILES = [
    ("checks-typo", '[load]\nduration_s = 20\n[checks]\nsloo = "p99 < 150ms"\n',
     ["checks.sloo (line 4)", "did you mean 'slo'"]),
    ("checks-slo-form", '[checks]\nslo = "p 99 < 150ms"\n',
     ["checks.slo (line 2)", 'expected a latency bound like "p99 < 150ms"', "'p 99 < 150ms'"]),
    ("checks-hold-word", '[checks]\nhold = "three"\n',
     ["checks.hold (line 2)", 'whole seconds like 3 or "3s"', "'three'"]),
    ("checks-rate-form", '[checks]\nerror_rate = "1%"\n',
     ["checks.error_rate (line 2)", 'like "rate < 1%"']),
    ("checks-bool-string", '[checks]\nlayers = "yes"\n',
     ["checks.layers (line 2)", "valid boolean", "'yes'"]),
    ("checks-number-string", '[checks]\nlatency_factor = "3"\n',
     ["checks.latency_factor (line 2)", "write the value without quotes"]),
    ("target-config-section-typo", "[target.config.auctoin]\nlimit = 4\n",
     ["target.config.auctoin (line 1)", "did you mean 'auction'"]),
    ("target-config-key-typo", '[load]\nbase_rps = 10\n[target.config.auction]\nlimt = 4\n',
     ["target.config.auction.limt (line 4)", "did you mean 'limit'"]),
    ("target-config-wrong-type", '[target.config.auction]\nlimit = "four"\n',
     ["target.config.auction.limit (line 2)", "valid integer", "'four'"]),
    ("target-config-out-of-range", "[target.config.auction]\nlimit = 0\n",
     ["target.config.auction.limit (line 2)", "greater than or equal to 1"]),
    ("target-config-inline", "[target]\nconfig = { impressions = { max_dept = 5 } }\n",
     ["target.config.impressions.max_dept (line 2)", "did you mean 'max_depth'"]),
    ("phases-inverted", "[phases]\nstress_start_s = 20\nstress_end_s = 10\n",
     ["phases.stress_end_s (line 3)", "must be after phases.stress_start_s"]),
    ("phases-beyond-run", "[load]\nduration_s = 30\n[phases]\nstress_start_s = 10\n"
     "stress_end_s = 40\n", ["phases.stress_end_s (line 5)", "after the end of the run"]),
    ("phases-in-warmup", "[phases]\nstress_start_s = 1\nstress_end_s = 10\n",
     ["phases.stress_start_s (line 2)", "inside the warmup"]),
    ("phases-one-end", "[phases]\nstress_start_s = 10\n",
     ["phases.stress_start_s (line 2)", "set both"]),
    ("kafka-not-host-port", '[stack]\nkafka_bootstrap = "not a host port"\n',
     ["stack.kafka_bootstrap (line 2)", "host:port"]),
    ("kafka-port-range", '[stack]\nkafka_bootstrap = "127.0.0.1:99999"\n',
     ["stack.kafka_bootstrap (line 2)", "1..65535"]),
    ("kafka-list-entry", '[stack]\nkafka_bootstrap = "a:9092,b"\n',
     ["stack.kafka_bootstrap (line 2)", "'a:9092,b'"]),
    ("redis-port-range", '[stack]\nredis_url = "redis://127.0.0.1:70000"\n',
     ["stack.redis_url (line 2)", "1..65535"]),
    ("number-as-string", '[load]\nbase_rps = "20"\n',
     ["load.base_rps (line 2)", "valid number", "write the value without quotes"]),
    ("float-for-int", "[load]\npublishers = 2.5\n",
     ["load.publishers (line 2)", "valid integer", "2.5"]),
    ("nan", "[load]\nbase_rps = nan\n", ["load.base_rps (line 2)", "finite number"]),
    ("unknown-shape", '[load]\nshape = "spiky"\n',
     ["load.shape (line 2)", "flash_crowd", "'spiky'"]),
    ("markup-in-value", '[load]\nshape = "[/b][red]x"\n', ["load.shape (line 2)", "'[/b][red]x'"]),
    ("unknown-section", "[lode]\nbase_rps = 10\n", ["lode (line 1)", "did you mean 'load'"]),
    ("spike-past-end", '[load]\nshape = "flash_crowd"\nduration_s = 30\npeak_rps = 200\n'
     "spike_at_s = 20\nspike_for_s = 15\n",
     ["load.spike_for_s (line 6)", "must end within load.duration_s"]),
    ("steps-out-of-order", '[load]\nshape = "step"\n'
     "steps = [{ at_s = 10, rps = 5 }, { at_s = 8, rps = 6 }]\n",
     ["load.steps.1.at_s (line 3)", "greater than the previous step"]),
    ("external-url-port", '[target]\nkind = "external"\nurl = "http://127.0.0.1:99999"\n',
     ["target.url (line 3)", "http(s)://host[:port]"]),
    ("fault-past-end", '[load]\nduration_s = 20\n\n[[faults]]\nat_s = 6\nfor_s = 2\n'
     'fault = "redis_down"\n\n[[faults]]\nat_s = 8\nfor_s = 30\nfault = "redis_down"\n',
     ["faults #2 (line 9), for_s", "ends at 38 s, after load.duration_s"]),
    ("fault-unknown-name", '[[faults]]\nat_s = 6\nfor_s = 2\nfault = "dsp_lag"\n',
     ["faults #1 (line 1), fault", "fault must be one of", "'dsp_lag'"]),
    ("fault-param-type", 'name = "p"\n[[faults]]\nat_s = 6\nfor_s = 2\nfault = "redis_latency"\n'
     'params = { latency_ms = "x" }\n', ["faults #1 (line 2), params.latency_ms", "(got 'x')"]),
    ("fault-unknown-proxy", '[[faults]]\nat_s = 6\nfor_s = 2\nfault = "latency"\n'
     'proxy = "dsp-9"\n', ["faults #1 (line 1), proxy", "'dsp-9' is not one of"]),
    ("fault-in-warmup", '[[faults]]\nat_s = 0\nfor_s = 2\nfault = "kafka_stall"\n',
     ["faults #1 (line 1), at_s", "inside the warmup"]),
    ("invalid-toml", 'name = "x"\n[load\n', ["invalid TOML", "line 2"]),
    ("empty", "", ["the scenario is empty"]),
    ("only-comments", "# a scenario, some day\n\n", ["the scenario is empty"]),
    # your own service: [target] kind = "command", [[dependencies]], [outcomes], [metrics]
    ("command-missing", '[target]\nkind = "command"\n',
     ["target.command (line 1)", "required when kind = 'command'"]),
    ("command-unknown-placeholder",
     '[target]\nkind = "command"\ncommand = ["app", "{prot}"]\n',
     ["target.command.1 (line 3)", "unknown placeholder {prot}", "known are {port}, {python}"]),
    ("command-undeclared-proxy",
     '[target]\nkind = "command"\ncommand = ["app"]\nenv = { DB = "{proxy.db}" }\n',
     ["target.env.DB (line 4)", "unknown placeholder {proxy.db}"]),
    ("dependency-neither",
     '[target]\nkind = "command"\ncommand = ["app"]\n[[dependencies]]\nname = "db"\n',
     ["dependencies #1", "exactly one of upstream", 'start = "redis" | "kafka"']),
    ("dependency-both",
     '[target]\nkind = "command"\ncommand = ["app"]\n[[dependencies]]\nname = "db"\n'
     'start = "redis"\nupstream = "127.0.0.1:5432"\n',
     ["exactly one of upstream"]),
    ("dependency-start-kind",
     '[target]\nkind = "command"\ncommand = ["app"]\n[[dependencies]]\nname = "db"\n'
     'start = "postgres"\n', ["dependencies #1 (line 4), start", "'redis' or 'kafka'"]),
    ("dependency-twice",
     '[target]\nkind = "command"\ncommand = ["app"]\n[[dependencies]]\nname = "db"\n'
     'start = "redis"\n[[dependencies]]\nname = "db"\nstart = "kafka"\n',
     ["dependencies #2", "declared twice"]),
    ("dependency-upstream-form",
     '[target]\nkind = "command"\ncommand = ["app"]\n[[dependencies]]\nname = "db"\n'
     'upstream = "localhost"\n',
     ["dependencies #1 (line 4), upstream", "expected host:port with a port"]),
    ("dependency-external-needs-listen",
     '[target]\nkind = "external"\nurl = "http://127.0.0.1:8000"\n[[dependencies]]\n'
     'name = "db"\nstart = "redis"\n', ["listen", 'set listen = "127.0.0.1:PORT"']),
    ("dependency-on-reference",
     '[[dependencies]]\nname = "db"\nstart = "redis"\n',
     ["dependencies (line 1)", "reference target declares its own"]),
    ("fault-on-undeclared-dependency",
     '[target]\nkind = "command"\ncommand = ["app"]\n[[dependencies]]\nname = "db"\n'
     'start = "redis"\n[load]\nduration_s = 20\n[[faults]]\nat_s = 8\nfor_s = 2\n'
     'fault = "down"\nproxy = "cache"\n', ["faults #1", "'cache' is not one of db"]),
    ("faults-without-dependencies",
     '[target]\nkind = "command"\ncommand = ["app"]\n[load]\nduration_s = 20\n'
     '[[faults]]\nat_s = 8\nfor_s = 2\nfault = "down"\nproxy = "db"\n',
     ["no dependency is declared", "[[dependencies]]"]),
    ("outcomes-overlap", '[outcomes]\nadmitted = ["2xx"]\nrejected = [200]\n',
     ["outcomes.admitted", "status 200 is both admitted and rejected"]),
    ("outcomes-bad-status", '[outcomes]\nrejected = [429, 999]\n',
     ["outcomes.rejected", "999 is not a status code"]),
    ("metrics-without-path",
     '[target]\nkind = "command"\ncommand = ["app"]\n[metrics]\ninflight = "x"\n',
     ["target.metrics", "set target.metrics"]),
    ("user-without-locustfile", '[load]\nuser = "Shopper"\n',
     ["load.user (line 2)", "set load.locustfile too"]),
    ("locustfile-on-reference", '[load]\nlocustfile = "l.py"\n',
     ["load.locustfile (line 2)", "the reference target has its own traffic"]),
    ("target-config-on-command",
     '[target]\nkind = "command"\ncommand = ["app"]\n[target.config.auction]\nlimit = 4\n',
     ["target.config", "your service has its own"]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in FILES], ids=[c[0] for c in FILES])
def test_malformed_scenario_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: list[str]
) -> None:
    path = tmp_path / "scenario.toml"
    path.write_text(text, encoding="utf-8")
    code, out = cli(["run", str(path), "--no-live", "--out", str(tmp_path / "run")], capsys)
    assert code == 2
    assert str(path) in out
    for fragment in expected:
        assert fragment in out
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ('name = "caf\xe9"\n[load]\n'.encode("latin-1"), "byte 0xe9 at line 1"),
        (b"[load]\nbase_rps = 10\n\x89PNG\r\n\x1a\n\x00\x00", "byte 0x89 at line 3"),
    ],
    ids=["latin-1", "binary"],
)
def test_a_scenario_that_is_not_utf8_is_named_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes, expected: str
) -> None:
    path = tmp_path / "s.toml"
    path.write_bytes(data)
    code, out = cli(["run", str(path), "--no-live"], capsys)
    assert code == 2 and f"{path}: not a UTF-8 text file" in out and expected in out


def test_a_directory_as_scenario_is_called_a_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "[b]scenarios"
    d.mkdir()
    (d / "mine.toml").write_text('name = "mine"\n')
    code, out = cli(["run", str(d), "--no-live"], capsys)
    assert code == 2 and f"{d} is a directory" in out and "mine.toml" in out


def test_brackets_in_a_missing_path_are_printed_as_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rich markup in user text is escaped: `[/b]` neither crashes the printer nor vanishes."""
    path = tmp_path / "nope[/b][red].toml"
    code, out = cli(["run", str(path), "--no-live"], capsys)
    assert code == 2 and f"{path} does not exist" in out


def test_a_name_from_an_unusable_file_name_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "my scenario.toml"
    path.write_text("[load]\nbase_rps = 10\n")
    code, out = cli(["run", str(path), "--no-live"], capsys)
    assert code == 2 and "name (from the file name" in out and "'my scenario'" in out


# --- --set -------------------------------------------------------------------------------------
SETS = [
    ("load.peak_rps=abc", ["--set load.peak_rps=abc: ", "valid number, got 'abc'"]),
    ('load.base_rps="20"', ['--set load.base_rps="20": ', "without quotes"]),
    ("checks.sloo=1", ["--set checks.sloo=1: ", "did you mean 'slo'"]),
    ('checks.slo="fast"', ['--set checks.slo="fast": ', "expected a latency bound"]),
    ("load=3", ["--set load=3: ", "expected a table"]),
    ("target.config.auction.limit=abc", ["--set target.config.auction.limit=abc: ", "'abc'"]),
    ("target.config.auction={limt=3}",
     ["--set target.config.auction={limt=3}, target.config.auction.limt: ", "'limit'"]),
    ("nosuch.key=1", ["--set nosuch.key=1, nosuch: ", "unknown field 'nosuch'"]),
    ("stack.kafka_bootstrap=somehost", ["--set stack.kafka_bootstrap=somehost: ", "host:port"]),
    ("load.base_rps", ["--set 'load.base_rps'", "expected key.path=value"]),
    ("load..base_rps=1", ["--set 'load..base_rps=1'", "expected key.path=value"]),
    ("faults.0.at_s=3", ["--set faults.0.at_s=3: faults is not a table"]),
]  # fmt: skip


@pytest.mark.parametrize(("item", "expected"), SETS, ids=[s[0] for s in SETS])
def test_malformed_set_is_named_not_a_line_of_the_file(
    capsys: pytest.CaptureFixture[str], item: str, expected: list[str]
) -> None:
    code, out = cli(["run", "smoke", "--set", item, "--no-live"], capsys)
    assert code == 2
    for fragment in expected:
        assert fragment in out
    assert "(line " not in out


def test_a_rule_broken_through_a_set_names_the_line_and_the_set(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = cli(["run", "flash-crowd", "--set", "load.base_rps=900", "--no-live"], capsys)
    assert code == 2
    assert "load.peak_rps (line 24) (with --set load.base_rps=900): " in out


# --- check RUN_DIR -----------------------------------------------------------------------------
CHECK_SETS = [
    ('checks.slo="fast"', ['--set checks.slo="fast": expected a latency bound like']),
    ("checks.sloo=1", ["--set checks.sloo=1: unknown key; did you mean 'slo'?"]),
    ("checks.hold=0", ["--set checks.hold=0: ", "1..3600"]),
    ("checks.layers=maybe", ["--set checks.layers=maybe: ", "valid boolean", "'maybe'"]),
    ("load.duration_s=5", ["--set 'load.duration_s=5'", "checks.KEY=VALUE", "only checks.*"]),
]  # fmt: skip


@pytest.mark.parametrize(("item", "expected"), CHECK_SETS, ids=[s[0] for s in CHECK_SETS])
def test_check_with_a_bad_set_names_the_set_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], item: str, expected: list[str]
) -> None:
    run = write_run(tmp_path / "run")
    code, out = cli(["check", str(run), "--set", item], capsys)
    assert code == 2
    for fragment in expected:
        assert fragment in out
    assert not (run / "report.json").exists()


def test_check_with_a_good_set_rejudges_the_stored_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = write_run(tmp_path / "run")
    code, _ = cli(["check", str(run), "--set", 'checks.slo="p99 < 100ms"'], capsys)
    assert code in (0, 1, 3)
    report = json.loads((run / "report.json").read_text())
    assert "p99 < 100ms" in json.dumps(report)


def test_check_of_an_absent_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = cli(["check", str(tmp_path / "[red]gone")], capsys)
    assert code == 2 and f"{tmp_path / '[red]gone'} is not a run directory" in out


def test_check_of_an_incomplete_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = write_run(tmp_path / "run")
    (run / "samples.jsonl").unlink()
    code, out = cli(["check", str(run)], capsys)
    assert code == 2 and "missing samples.jsonl" in out


def test_check_of_a_run_whose_scenario_is_not_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = write_run(tmp_path / "run")
    (run / "scenario.toml").write_bytes(b'name = "caf\xe9"\n')
    code, out = cli(["check", str(run)], capsys)
    assert code == 2 and str(run / "scenario.toml") in out and "not a UTF-8 text file" in out


def test_check_of_a_run_with_a_corrupt_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = write_run(tmp_path / "run")
    with (run / "requests.jsonl").open("a") as f:
        f.write("{not json\n")
    code, out = cli(["check", str(run)], capsys)
    assert code == 2 and f"{run / 'requests.jsonl'}:21: not valid JSON" in out


# --- fault add ---------------------------------------------------------------------------------
FAULT_ADDS = [
    (["nosuch"], ["fault 'nosuch': fault must be one of"]),
    (["redis_latency", "--param", "latency_ms=abc"], ["--param latency_ms=abc: ", "(got 'abc')"]),
    (["redis_latency", "--param", "latncy_ms=5"], ["--param latncy_ms=5: unknown parameter"]),
    (["redis_latency", "--param", "latency_ms"], ["--param 'latency_ms' is not key=value"]),
    (["redis_latency", "--for", "0"], ["--for 0: expected seconds in (0, 600]"]),
    (["redis_latency", "--for", "100000"], ["--for 100000: expected seconds in (0, 600]"]),
    (["redis_latency", "--for", "nan"], ["--for nan: expected seconds"]),
    (["redis_latency", "--for", "abc"], ["Invalid value for '--for'"]),
    (["latency", "--param", "latency_ms=5"], ["--proxy (not given): proxy is required"]),
    (["redis_latency", "--proxy", "dsp-1"], ["--proxy dsp-1: proxy for 'redis_latency'"]),
]  # fmt: skip


@pytest.mark.parametrize(("args", "expected"), FAULT_ADDS, ids=[" ".join(a) for a, _ in FAULT_ADDS])
def test_fault_add_with_bad_input_is_refused_before_any_run_is_looked_for(
    capsys: pytest.CaptureFixture[str], args: list[str], expected: list[str]
) -> None:
    code, out = cli(["fault", "add", *args], capsys)
    assert code == 2
    for fragment in expected:
        assert fragment in out


# --- the command line itself -------------------------------------------------------------------
def test_no_arguments_prints_the_help_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = cli([], capsys)
    assert code == 0 and "Usage: spikegate" in out and "run" in out


def test_a_group_without_a_command_prints_its_help_and_exits_0(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = cli(["fault"], capsys)
    assert code == 0 and "Usage: spikegate fault" in out


def test_version_flag_and_command(capsys: pytest.CaptureFixture[str]) -> None:
    from spikegate.harness import __version__

    for args in (["--version"], ["version"]):
        code, out = cli(args, capsys)
        assert code == 0 and f"spikegate {__version__}" in out


@pytest.mark.parametrize("command", [["run"], ["fault", "ls"], ["--"]])
def test_help_shows_flags_as_flags(capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    args = [c for c in command if c != "--"]
    code, out = cli([*args, "--help"], capsys)
    assert code == 0
    assert "<bool>" not in out
    assert "--help" in out
