"""latency: each chunk is released at arrival + latency + uniform[-jitter, jitter).

Delays are measured from the chunk's arrival stamp, so a burst is not delayed cumulatively;
the stamp moves to the release time, so two latency toxics add up.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._base import Chunk, Stub, attribute


@dataclass(eq=False)
class LatencyToxic:
    latency: int = attribute("ms")
    jitter: int = attribute("ms")

    async def pipe(self, chunk: Chunk, stub: Stub) -> None:
        if not chunk.eof:
            offset_ms = stub.rng.uniform(-self.jitter, self.jitter) if self.jitter else 0.0
            while stub.alive:
                deadline = chunk.stamp + max(0.0, self.latency + offset_ms) / 1000.0
                if await stub.sleep_until(deadline):
                    chunk.stamp = max(chunk.stamp, deadline)
                    break
        await stub.emit(chunk)
