"""Spikegate: a load-testing and chaos harness that proves a service degrades gracefully.

Installed layout (the repository's top-level folders map onto one import name, so nothing
clashes with a user's own `harness`, `target` or `chaos` module):

    spikegate.harness      <- harness/       orchestrator, scenario model, checker, CLI
    spikegate.target       <- target/        the reference ad server
    spikegate.chaos        <- chaos/         the embedded chaos proxy and fault catalog
    spikegate.locustfiles  <- locustfiles/   what runs inside the Locust subprocesses
    spikegate.scenarios    <- scenarios/     the shipped scenarios (package data)
    spikegate.contract     <- spikegate/contract/  what those processes agree on
"""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("spikegate")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"
