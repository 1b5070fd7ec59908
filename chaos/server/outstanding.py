"""Outstanding requests per proxy: connections whose client waits for an answer.

    client ──read──> [rise: not outstanding -> outstanding] ──> upstream
    client <─write── [fall: first answer bytes written back] <── (toxics) <── upstream
                     [fall: the connection closes while outstanding]

Protocol-agnostic and measured at the proxy, so the target cannot misreport it: a
connection becomes outstanding when the proxy reads bytes from the client while it is not
outstanding, and stops when the first bytes of an answer are *written* to the client socket
(an answer held by a downstream toxic is still outstanding) or when the connection closes.

``reached[level]`` counts every rise of the count to ``level`` and never goes down, so any
scraper derives the exact peak since its own previous scrape (the level then, every level
whose count rose, the level now), however late or rarely it scrapes and however many others
scrape too (the same scheme as the target's ``spikegate_auction_inflight_reached_total``).
"""

from __future__ import annotations

__all__ = ["Outstanding"]


class Outstanding:
    """The current count of one proxy, and how often each level was reached."""

    __slots__ = ("count", "reached")

    def __init__(self) -> None:
        self.count = 0
        self.reached: list[int] = [0]  # index = level; level 0 is never "reached"

    def rise(self) -> None:
        self.count = count = self.count + 1
        if count == len(self.reached):
            self.reached.append(1)
        else:
            self.reached[count] += 1

    def fall(self) -> None:
        self.count -= 1

    def levels(self) -> list[tuple[int, int]]:
        """(level, times reached) for every level reached so far, lowest first."""
        return [(level, n) for level, n in enumerate(self.reached) if level and n]
