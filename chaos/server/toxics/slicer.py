"""slicer: splits chunks into slices of average_size +- size_variation bytes, ``delay`` us apart.

Every byte is preserved, in order.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._base import Chunk, Stub, attribute


@dataclass(eq=False)
class SlicerToxic:
    average_size: int = attribute("bytes")
    size_variation: int = attribute("bytes")
    delay: int = attribute("us")

    async def pipe(self, chunk: Chunk, stub: Stub) -> None:
        data, pos = chunk.data, 0
        while pos < len(data) and stub.alive:
            variation = self.size_variation
            size = self.average_size + (stub.rng.randint(-variation, variation) if variation else 0)
            piece = data[pos : pos + max(1, size)]
            pos += len(piece)
            await stub.emit(Chunk(piece, chunk.stamp))
            if pos < len(data) and self.delay:
                await stub.sleep_until(stub.now() + self.delay / 1e6)
        if pos < len(data) or chunk.eof:
            await stub.emit(Chunk(data[pos:], chunk.stamp, chunk.eof))

    def check(self) -> str | None:
        if self.average_size < 1:
            return f"average_size must be >= 1 (bytes), got {self.average_size}"
        if self.size_variation >= self.average_size:
            return (
                f"size_variation must be < average_size ({self.average_size}), "
                f"got {self.size_variation}"
            )
        return None
