"""reset_peer: drops the first chunk, waits ``timeout`` ms, then resets the connection (RST).

If the toxic is removed while waiting, the held chunk is delivered after all.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._base import Chunk, Stub, attribute


@dataclass(eq=False)
class ResetPeerToxic:
    timeout: int = attribute("ms")

    async def pipe(self, chunk: Chunk, stub: Stub) -> None:
        start = stub.now()
        while stub.alive:
            if await stub.sleep_until(start + self.timeout / 1000.0):
                stub.reset()
                return
        await stub.emit(chunk)
