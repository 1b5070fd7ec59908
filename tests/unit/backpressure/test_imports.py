"""The primitives stay framework-free: importing them pulls in no web framework."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("fastapi", "starlette", "uvicorn", "aiohttp", "httpx", "redis", "aiokafka", "locust")


def test_importing_backpressure_loads_no_framework() -> None:
    """A fresh interpreter that imports target.backpressure has none of the web/IO stacks loaded."""
    code = (
        "import sys, json, spikegate.target.backpressure as bp\n"
        "import spikegate.target.backpressure.decision, spikegate.target.backpressure.clock\n"
        "import pkgutil, importlib\n"
        "for m in pkgutil.iter_modules(bp.__path__):\n"
        "    importlib.import_module('spikegate.target.backpressure.' + m.name)\n"
        f"print(json.dumps(sorted(n for n in sys.modules if n.split('.')[0] in {FORBIDDEN!r})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == []
