"""Spikegate's harness: orchestrator, scenario model, supervision, checker, reports and CLI."""

from __future__ import annotations

__version__ = "0.1.0"
