"""noop: passes every chunk through untouched."""

from __future__ import annotations

from dataclasses import dataclass

from ._base import Chunk, Stub


@dataclass(eq=False)
class NoopToxic:
    async def pipe(self, chunk: Chunk, stub: Stub) -> None:
        await stub.emit(chunk)
