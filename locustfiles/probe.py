"""Load a user's locustfile and pick its User class (imports locust: Locust processes only).

    python -m spikegate.locustfiles.probe PATH [USER]
        exit 0: prints the chosen class name
        exit 2: prints one line on stderr ("spikegate-probe: ...") saying what is wrong

The harness runs this as a subprocess before anything starts (harness/loadgen.
probe_locustfile); user.py uses the same functions inside Locust. The file is imported with
its own folder first on sys.path (its own imports work), under its file name as module name
unless that name is taken (then `_spikegate_locustfile_<name>`). The class is `load.user`
when given, else the only concrete User subclass the file defines (classes it only imports
count when it defines none).
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import traceback
from pathlib import Path
from types import ModuleType

from locust import User

__all__ = ["LocustfileError", "choose_user_class", "import_locustfile", "load_user_class", "main"]

PROBE_PREFIX = "spikegate-probe:"  # before the one error line (harness/loadgen.py reads it)
NO_USER_CLASS = "a locustfile needs a class deriving from locust's User, HttpUser or FastHttpUser"


class LocustfileError(ValueError):
    """The locustfile cannot be used; the message names the file and the fix."""


def import_locustfile(path: str | Path) -> ModuleType:
    """Import the file at `path` (absolute or relative to the working directory)."""
    file = Path(path).expanduser()
    if not file.is_absolute():
        file = Path.cwd() / file
    if not file.exists():
        raise LocustfileError(f"load.locustfile: {file} does not exist")
    if not file.is_file():
        raise LocustfileError(f"load.locustfile: {file} is not a file (give a .py file)")
    if file.suffix != ".py":
        raise LocustfileError(f"load.locustfile: {file} is not a .py file")
    folder = str(file.parent)
    if folder in sys.path:
        sys.path.remove(folder)
    sys.path.insert(0, folder)  # kept: imports inside tasks run later
    name = file.stem
    if not name.isidentifier() or name in sys.modules:
        name = f"_spikegate_locustfile_{''.join(c if c.isalnum() else '_' for c in file.stem)}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise LocustfileError(f"load.locustfile: {file} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt at import included
        sys.modules.pop(name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise LocustfileError(
            f"load.locustfile: importing {file} failed: {_last_line(exc, file)}"
        ) from None
    return module


def _last_line(exc: BaseException, file: Path) -> str:
    """The last line of the traceback, and where in the user's file it came from."""
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    if isinstance(exc, SyntaxError) and exc.lineno is not None:
        return f"{last} (line {exc.lineno})"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == file]
    return f"{last} (line {frames[-1].lineno})" if frames else last


def _is_concrete_user(value: object) -> bool:
    return (
        inspect.isclass(value) and issubclass(value, User) and not getattr(value, "abstract", False)
    )


def choose_user_class(module: ModuleType, name: str | None) -> type[User]:
    """`name` from the module, else its only concrete User class."""
    where = getattr(module, "__file__", None) or module.__name__
    if name is not None:
        value = getattr(module, name, None)
        if value is None:
            found = sorted(k for k, v in vars(module).items() if _is_concrete_user(v))
            listed = f"; its User classes: {', '.join(found)}" if found else f"; {NO_USER_CLASS}"
            raise LocustfileError(f"load.user = {name!r}: {where} has no class {name}{listed}")
        if not (inspect.isclass(value) and issubclass(value, User)):
            raise LocustfileError(
                f"load.user = {name!r}: {name} in {where} is not a class deriving from "
                "locust's User, HttpUser or FastHttpUser"
            )
        if getattr(value, "abstract", False):
            raise LocustfileError(
                f"load.user = {name!r}: {name} in {where} is abstract (abstract = True): "
                "name a concrete subclass"
            )
        return _with_tasks(value, where)
    own = [
        v
        for v in vars(module).values()
        if _is_concrete_user(v) and getattr(v, "__module__", None) == module.__name__
    ]
    found = own or [v for v in vars(module).values() if _is_concrete_user(v)]
    if not found:
        raise LocustfileError(f"load.locustfile: {where}: {NO_USER_CLASS}")
    if len(found) > 1:
        names = ", ".join(sorted(c.__name__ for c in found))
        raise LocustfileError(
            f"load.locustfile: {where} defines several User classes ({names}): "
            "set load.user to the one to run"
        )
    return _with_tasks(found[0], where)


def _with_tasks(cls: type[User], where: str) -> type[User]:
    if not cls.tasks:
        raise LocustfileError(
            f"load.locustfile: {cls.__name__} in {where} has no tasks: give it @task methods "
            "or a tasks list"
        )
    return cls


def load_user_class(path: str | Path, name: str | None) -> type[User]:
    return choose_user_class(import_locustfile(path), name)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2:
        sys.stderr.write("usage: python -m spikegate.locustfiles.probe PATH [USER]\n")
        return 2
    try:
        cls = load_user_class(args[0], args[1] if len(args) == 2 else None)
    except LocustfileError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the user's error said
        sys.stderr.write(f"{PROBE_PREFIX} {message}\n")
        return 2
    sys.stdout.write(f"{cls.__name__}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
