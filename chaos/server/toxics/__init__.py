"""The toxics, one module each, listed in one explicit name -> class dict."""

from __future__ import annotations

from ._base import Attaching, Checked, Chunk, Cleanup, Stub, Toxic
from .bandwidth import BandwidthToxic
from .latency import LatencyToxic
from .limit_data import LimitDataToxic
from .noop import NoopToxic
from .reset_peer import ResetPeerToxic
from .slicer import SlicerToxic
from .slow_close import SlowCloseToxic
from .timeout import TimeoutToxic

TOXICS: dict[str, type[Toxic]] = {
    "latency": LatencyToxic,
    "bandwidth": BandwidthToxic,
    "slow_close": SlowCloseToxic,
    "timeout": TimeoutToxic,
    "reset_peer": ResetPeerToxic,
    "slicer": SlicerToxic,
    "limit_data": LimitDataToxic,
    "noop": NoopToxic,
}

# Go type names, used in decoding errors so messages match upstream's.
GO_TYPE_NAMES: dict[str, str] = {
    "latency": "LatencyToxic",
    "bandwidth": "BandwidthToxic",
    "slow_close": "SlowCloseToxic",
    "timeout": "TimeoutToxic",
    "reset_peer": "ResetToxic",
    "slicer": "SlicerToxic",
    "limit_data": "LimitDataToxic",
    "noop": "NoopToxic",
}

__all__ = [
    "GO_TYPE_NAMES",
    "TOXICS",
    "Attaching",
    "BandwidthToxic",
    "Checked",
    "Chunk",
    "Cleanup",
    "LatencyToxic",
    "LimitDataToxic",
    "NoopToxic",
    "ResetPeerToxic",
    "SlicerToxic",
    "SlowCloseToxic",
    "Stub",
    "TimeoutToxic",
    "Toxic",
]
