"""Session-wide test settings."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

# Property tests judge behaviour, never speed: no per-example deadline (Hypothesis's default
# 200 ms fails an example that a busy machine merely stalled) and no too-slow health check
# (data generation is slower on a loaded machine too). Speed has its own tests.
settings.register_profile("spikegate", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("spikegate")


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
