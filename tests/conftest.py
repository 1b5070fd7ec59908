"""Session-wide test settings."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Live-run pointers of the runs the tests start go to a temporary directory, never into
    the user's runtime directory (harness/liverun.py); child processes inherit it."""
    old = os.environ.get("SPIKEGATE_RUNTIME_DIR")
    os.environ["SPIKEGATE_RUNTIME_DIR"] = str(tmp_path_factory.mktemp("runtime"))
    yield
    if old is None:
        os.environ.pop("SPIKEGATE_RUNTIME_DIR", None)
    else:
        os.environ["SPIKEGATE_RUNTIME_DIR"] = old
