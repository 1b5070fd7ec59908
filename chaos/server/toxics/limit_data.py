"""limit_data: forwards at most ``bytes`` per connection and direction, then closes."""

from __future__ import annotations

from dataclasses import dataclass

from ._base import INT64_MAX, Chunk, Stub, attribute


@dataclass(eq=False)
class LimitDataToxic:
    bytes: int = attribute("bytes", maximum=INT64_MAX)

    async def pipe(self, chunk: Chunk, stub: Stub) -> None:
        if chunk.eof:
            await stub.emit(chunk)
            return
        sent = int(stub.state.get("sent", 0))
        room = self.bytes - sent
        if room > 0:
            piece = chunk.data[:room]
            stub.state["sent"] = sent + len(piece)
            await stub.emit(Chunk(piece, chunk.stamp))
        if stub.state.get("sent", 0) >= self.bytes:
            stub.close()
