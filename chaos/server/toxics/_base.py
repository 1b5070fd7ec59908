"""What every toxic sees: the chunk it acts on and the stub that connects it to its link.

A toxic is a small mutable dataclass whose fields are its JSON attributes (each field carries
its unit and allowed range in ``metadata``) with one method, ``pipe(chunk, stub)``: it acts on
one chunk and hands what survives to ``stub.emit``. Optional capabilities are separate
one-method interfaces (``Attaching``, ``Cleanup``, ``Checked``), like upstream's Go toxics.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

INT64_MAX = 2**63 - 1
# Durations beyond ~24.8 days overflow event-loop timers; nobody means them.
DURATION_MAX = 2**31 - 1


def attribute(unit: str, maximum: int = DURATION_MAX, minimum: int = 0) -> Any:
    """A toxic attribute: a JSON integer in [minimum, maximum], default 0."""
    return dataclasses.field(default=0, metadata={"unit": unit, "min": minimum, "max": maximum})


@dataclass(slots=True)
class Chunk:
    """One socket read (up to 32 KiB) stamped with its arrival time; ``eof`` marks the end."""

    data: bytes
    stamp: float
    eof: bool = False


class Stub(Protocol):
    """A toxic's view of one direction of one connection."""

    rng: random.Random
    state: dict[str, float]

    @property
    def alive(self) -> bool:
        """True while this toxic still applies to the link and the link is open."""

    def now(self) -> float:
        """Monotonic time in seconds (the clock of ``Chunk.stamp``)."""

    async def emit(self, chunk: Chunk) -> None:
        """Pass a chunk on to the rest of the chain (and finally the destination socket)."""

    async def sleep_until(self, deadline: float) -> bool:
        """Sleep; True at the deadline, False early when the chain changed or the link closed."""

    def set_timer(self, delay_s: float | None, callback: Callable[[], None]) -> None:
        """(Re)arm this toxic's one timer on this link; None disarms it."""

    def close(self) -> None:
        """Close the whole connection after flushing what was already written."""

    def reset(self) -> None:
        """Reset the whole connection (RST to both peers)."""


class Toxic(Protocol):
    async def pipe(self, chunk: Chunk, stub: Stub) -> None:
        """Act on one chunk; hand what survives to ``stub.emit``."""


@runtime_checkable
class Attaching(Protocol):
    def attach(self, stub: Stub) -> None:
        """Called when the toxic starts applying to a link (and again after an update)."""


@runtime_checkable
class Cleanup(Protocol):
    def cleanup(self, stub: Stub) -> None:
        """Called when the toxic stops applying to a link that is still open."""


@runtime_checkable
class Checked(Protocol):
    def check(self) -> str | None:
        """Cross-attribute validation: an error message, or None when valid."""
