"""probe_locustfile: the user's locustfile checked in a subprocess before a run starts; each
problem is one UsageError line (exit 2) naming the file and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from spikegate.harness.errors import UsageError
from spikegate.harness.loadgen import probe_locustfile

HEADER = "from locust import HttpUser, User, FastHttpUser, TaskSet, task\n"
ONE_TASK = "    @task\n    def t(self):\n        pass\n"


def write(folder: Path, name: str, body: str) -> str:
    path = folder / name
    path.write_text(body)
    return str(path)


def problem(path: str, user: str | None = None) -> UsageError:
    with pytest.raises(UsageError) as info:
        probe_locustfile(path, user)
    assert info.value.exit_code == 2
    assert "Traceback" not in str(info.value)
    return info.value


def test_the_only_user_class_is_chosen_and_its_own_imports_work(tmp_path: Path) -> None:
    write(tmp_path, "shared_paths.py", "HOME = '/'\n")
    body = HEADER + "from shared_paths import HOME\n\nclass Visitor(HttpUser):\n" + ONE_TASK
    assert probe_locustfile(write(tmp_path, "visit.py", body), None) == "Visitor"


def test_a_named_class_is_chosen_among_several(tmp_path: Path) -> None:
    body = HEADER + "class A(HttpUser):\n" + ONE_TASK + "class B(FastHttpUser):\n" + ONE_TASK
    path = write(tmp_path, "two.py", body)
    assert probe_locustfile(path, "B") == "B"
    msg = str(problem(path))
    assert "several User classes (A, B)" in msg and "set load.user" in msg


def test_imported_base_classes_and_abstract_ones_are_not_candidates(tmp_path: Path) -> None:
    body = HEADER + "class Base(User):\n    abstract = True\n" + ONE_TASK
    body += "class Real(Base):\n    pass\n"
    assert probe_locustfile(write(tmp_path, "based.py", body), None) == "Real"
    assert "is abstract" in str(problem(write(tmp_path, "based2.py", body), "Base"))


def test_a_missing_file_or_not_python_is_named(tmp_path: Path) -> None:
    assert "does not exist" in str(problem(str(tmp_path / "nope.py")))
    assert "is not a .py file" in str(problem(write(tmp_path, "load.txt", "x = 1\n")))
    assert "is not a file" in str(problem(str(tmp_path)))


def test_an_import_error_gives_the_last_line_of_the_traceback_and_the_line(
    tmp_path: Path,
) -> None:
    body = HEADER + "\nBROKEN = undefined_name + 1\n"
    msg = str(problem(write(tmp_path, "broken.py", body)))
    assert "importing" in msg and "NameError: name 'undefined_name' is not defined" in msg
    assert "(line 3)" in msg
    msg = str(problem(write(tmp_path, "syntax.py", "class X(:\n")))
    assert "SyntaxError" in msg and "(line 1)" in msg
    msg = str(problem(write(tmp_path, "missing_dep.py", "import no_such_module_here\n")))
    assert "ModuleNotFoundError: No module named 'no_such_module_here'" in msg
    msg = str(problem(write(tmp_path, "exits.py", "raise SystemExit(3)\n")))
    assert "SystemExit" in msg


def test_no_user_class_says_what_a_locustfile_needs(tmp_path: Path) -> None:
    body = HEADER + "class NotAUser:\n    pass\n"
    msg = str(problem(write(tmp_path, "none.py", body)))
    assert "a locustfile needs a class deriving from locust's User, HttpUser or FastHttpUser" in msg


def test_a_named_class_that_is_missing_lists_the_ones_there(tmp_path: Path) -> None:
    body = HEADER + "class Shopper(HttpUser):\n" + ONE_TASK + "helper = 3\n"
    path = write(tmp_path, "shop.py", body)
    msg = str(problem(path, "Buyer"))
    assert "load.user = 'Buyer'" in msg and "no class Buyer" in msg and "Shopper" in msg
    assert "is not a class deriving from locust's User" in str(problem(path, "helper"))


def test_a_user_class_without_tasks_is_refused(tmp_path: Path) -> None:
    body = HEADER + "class Idle(HttpUser):\n    pass\n"
    assert "has no tasks" in str(problem(write(tmp_path, "idle.py", body)))
