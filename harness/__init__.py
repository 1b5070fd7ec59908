"""Spikegate's harness: orchestrator, scenario model, supervision, checker, reports and CLI."""

from __future__ import annotations

from spikegate import __version__

__all__ = ["__version__"]
