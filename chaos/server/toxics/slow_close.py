"""slow_close: data untouched; the close that follows EOF is delayed by ``delay`` ms."""

from __future__ import annotations

from dataclasses import dataclass

from ._base import Chunk, Stub, attribute


@dataclass(eq=False)
class SlowCloseToxic:
    delay: int = attribute("ms")

    async def pipe(self, chunk: Chunk, stub: Stub) -> None:
        if chunk.eof:
            start = stub.now()
            while stub.alive and not await stub.sleep_until(start + self.delay / 1000.0):
                pass
        await stub.emit(chunk)
