"""`spikegate init`: the starter files validate as written, and nothing is clobbered."""

from __future__ import annotations

import ast
import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from spikegate.harness.cli import main
from spikegate.harness.init import DEFAULT_URL, SCENARIO_FILE, starter_files
from spikegate.harness.scenario import load_scenario


def _init(*args: str) -> tuple[int, str]:
    buf = io.StringIO()
    code = main(["init", *args], Console(file=buf, width=200))
    return code, buf.getvalue()


def test_init_writes_a_scenario_that_loads_for_an_external_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = _init(str(tmp_path))
    assert code == 0
    out = capsys.readouterr().out
    assert "spikegate.toml" in out and "spikegate run" in out
    scenario = load_scenario(tmp_path / "spikegate.toml")
    assert scenario.target.kind == "external"
    assert scenario.target.url == DEFAULT_URL
    assert scenario.load.locustfile == str(tmp_path / "locustfile.py")
    assert scenario.load.shape == "flash_crowd"
    assert scenario.load.peak_rps > scenario.load.base_rps
    assert [p.name for p in scenario.phase_list()] == [
        "warmup", "baseline", "stress", "recovery", "post",
    ]  # fmt: skip
    assert scenario.dependencies == [] and scenario.faults == []
    assert scenario.outcome_rules().classify(503, None) != scenario.outcome_rules().classify(
        200, None
    )


def test_init_url_and_a_name_from_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "Shop API"
    code, _ = _init(str(folder), "--url", "http://localhost:9090")
    assert code == 0
    scenario = load_scenario(folder / "spikegate.toml")
    assert scenario.target.url == "http://localhost:9090"
    assert scenario.name == "Shop-API"


def test_init_refuses_to_overwrite_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "spikegate.toml"
    mine.write_text("# my own scenario\n")
    code, err = _init(str(tmp_path))
    assert code == 2
    assert mine.read_text() == "# my own scenario\n"
    assert not (tmp_path / "locustfile.py").exists()  # not even the file that was missing
    assert "already exists" in err and "--force" in err and str(mine) in err
    assert "Traceback" not in err + capsys.readouterr().err


def test_init_names_every_existing_file(tmp_path: Path) -> None:
    (tmp_path / "spikegate.toml").write_text("a")
    (tmp_path / "locustfile.py").write_text("b")
    code, err = _init(str(tmp_path))
    assert code == 2
    assert "spikegate.toml" in err and "locustfile.py" in err and "already exist:" in err
    assert (tmp_path / "locustfile.py").read_text() == "b"


def test_init_force_overwrites(tmp_path: Path) -> None:
    (tmp_path / "locustfile.py").write_text("old")
    code, _ = _init(str(tmp_path), "--force")
    assert code == 0
    assert "class WebsiteUser(HttpUser)" in (tmp_path / "locustfile.py").read_text()
    load_scenario(tmp_path / "spikegate.toml")


@pytest.mark.parametrize("url", ["ftp://example.com", "127.0.0.1:8000", "http://:80", "http://h:0"])
def test_init_bad_url_is_a_usage_error_naming_it(tmp_path: Path, url: str) -> None:
    code, err = _init(str(tmp_path), "--url", url)
    assert code == 2
    assert f"--url {url!r}" in err
    assert list(tmp_path.iterdir()) == []


def test_init_into_a_file_is_a_usage_error(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("x")
    code, err = _init(str(target))
    assert code == 2 and "is a file" in err


def test_init_writes_into_the_current_directory_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _ = _init()
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locustfile.py", "spikegate.toml"]


def _uncomment(text: str, keys: tuple[str, ...]) -> str:
    """`text` with the commented-out lines that set `keys` (or open [[dependencies]] /
    [[faults]]) made live."""
    pattern = re.compile(r"^# (\[\[\w+\]\]|(\w+) = .*)$")
    out = []
    for line in text.splitlines():
        m = pattern.match(line)
        if m and (m.group(2) in keys or (m.group(2) is None and m.group(1))):
            line = line[2:]
        out.append(line)
    return "\n".join(out) + "\n"


def test_the_commented_command_variant_with_dependencies_and_faults_validates(
    tmp_path: Path,
) -> None:
    """Uncommenting the kind = "command" lines, the [[dependencies]] and the [[faults]]
    (minus the external-only `listen`) gives a valid scenario."""
    text = starter_files().files["spikegate.toml"]
    text = re.sub(r'^kind = "external"\nurl = .*\n', "", text, flags=re.M)
    keys = ("kind", "command", "cwd", "env", "ready", "metrics", "name", "start", "upstream",
            "at_s", "for_s", "fault", "proxy", "params", "inflight")  # fmt: skip
    text = _uncomment(text, keys)
    (tmp_path / "spikegate.toml").write_text(text)
    (tmp_path / "locustfile.py").write_text(starter_files().files["locustfile.py"])
    scenario = load_scenario(tmp_path / "spikegate.toml")
    assert scenario.target.kind == "command"
    assert scenario.target.command is not None and "{port}" in scenario.target.command
    assert [d.name for d in scenario.dependencies] == ["cache", "db"]
    assert scenario.faults[0].proxy == "cache"
    assert scenario.metrics.mapped() == {"inflight": "myservice_requests_in_flight"}


def test_the_starter_locustfile_has_one_http_user_with_a_get_on_root() -> None:
    tree = ast.parse(starter_files().files["locustfile.py"])
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    assert [c.name for c in classes] == ["WebsiteUser"]
    assert [b.id for b in classes[0].bases if isinstance(b, ast.Name)] == ["HttpUser"]
    calls = [
        n
        for n in ast.walk(classes[0])
        if isinstance(n, ast.Call) and ast.unparse(n.func).endswith("client.get")
    ]
    assert [ast.literal_eval(c.args[0]) for c in calls] == ["/"]


def test_the_own_service_workflow_gates_on_the_file_init_writes() -> None:
    """.github/workflows/spikegate-own-service.yml runs `spikegate run` on spikegate.toml,
    publishes the reports of that run directory even when it failed, and ends with the
    gate's exit code."""
    yaml = pytest.importorskip("yaml")
    path = Path(__file__).resolve().parents[3] / ".github/workflows/spikegate-own-service.yml"
    doc = yaml.safe_load(path.read_text())
    job = doc["jobs"]["gate"]
    assert job["env"]["SCENARIO"] == "spikegate.toml" == SCENARIO_FILE
    steps = job["steps"]
    gate = next(s for s in steps if s.get("id") == "gate")
    assert 'spikegate run "$SCENARIO" --no-live --out "$RUN_DIR"' in gate["run"]
    assert "set +e" in gate["run"] and "exit_code=$code" in gate["run"]
    after = steps[steps.index(gate) + 1 :]
    assert all("always()" in s.get("if", "") for s in after)
    junit = next(s for s in after if "junit" in s.get("uses", ""))
    assert junit["with"]["report_paths"] == "${{ env.RUN_DIR }}/junit.xml"
    assert any("summary.md" in s.get("run", "") for s in after)
    assert after[-1]["run"].strip() == "exit ${{ steps.gate.outputs.exit_code || 4 }}"
