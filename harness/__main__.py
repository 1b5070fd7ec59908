"""`python -m spikegate.harness` is the `spikegate` command."""

from __future__ import annotations

from spikegate.harness.cli import run

run()
