"""bandwidth: paces bytes to ``rate`` KB/s (KB = 1000 B); rate 0 holds all data (a freeze).

Large chunks leave in slices of at most 100 ms worth of bytes so data trickles steadily.
The pacing clock is per link and carries no credit across idle periods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._base import INT64_MAX, Chunk, Stub, attribute


@dataclass(eq=False)
class BandwidthToxic:
    rate: int = attribute("KB/s", maximum=INT64_MAX // 1000)

    async def pipe(self, chunk: Chunk, stub: Stub) -> None:
        data = chunk.data
        while data and stub.alive:
            if self.rate == 0:
                await stub.sleep_until(math.inf)
                continue
            size = min(len(data), max(1, self.rate * 100))
            start = max(stub.state.get("next", 0.0), stub.now())
            deadline = start + size / (self.rate * 1000.0)
            if not await stub.sleep_until(deadline):
                continue
            stub.state["next"] = deadline
            await stub.emit(Chunk(data[:size], chunk.stamp))
            data = data[size:]
        if data or chunk.eof:
            await stub.emit(Chunk(data, chunk.stamp, chunk.eof))
