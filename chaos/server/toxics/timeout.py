"""timeout: drops all data; closes the connection after ``timeout`` ms without data (0 = never).

Removing the toxic closes the connection too (as upstream does).
"""

from __future__ import annotations

from dataclasses import dataclass

from ._base import Chunk, Stub, attribute


@dataclass(eq=False)
class TimeoutToxic:
    timeout: int = attribute("ms")

    async def pipe(self, chunk: Chunk, stub: Stub) -> None:
        if chunk.eof:
            await stub.emit(chunk)
        else:
            self.attach(stub)  # data restarts the idle clock; the chunk itself is dropped

    def attach(self, stub: Stub) -> None:
        stub.set_timer(self.timeout / 1000.0 if self.timeout else None, stub.close)

    def cleanup(self, stub: Stub) -> None:
        stub.close()
