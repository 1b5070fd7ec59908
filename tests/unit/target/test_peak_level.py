"""PeakLevel: the auction's in-flight high-water mark over the last 1-2 s, on a fake clock."""

from __future__ import annotations

from spikegate.target.auction import PeakLevel
from spikegate.target.backpressure.clock import FakeClock


def test_a_peak_between_two_scrapes_is_still_seen() -> None:
    clock = FakeClock()
    peak = PeakLevel(clock)
    peak.note(1)
    peak.note(7)  # a burst of a few milliseconds
    clock.advance(0.01)
    assert peak.value(level_now=0) == 7


def test_the_peak_is_kept_through_the_next_second_then_forgotten() -> None:
    clock = FakeClock()  # starts on a whole second
    peak = PeakLevel(clock)
    peak.note(7)
    clock.advance(1.0)
    assert peak.value(level_now=2) == 7  # the previous second still counts
    peak.note(3)
    assert peak.value(level_now=0) == 7
    clock.advance(1.0)
    assert peak.value(level_now=0) == 3  # the 7 is two seconds old now
    clock.advance(1.0)
    assert peak.value(level_now=1) == 1  # nothing noted lately: the level now


def test_a_gap_of_seconds_does_not_carry_an_old_peak() -> None:
    clock = FakeClock()
    peak = PeakLevel(clock)
    peak.note(9)
    clock.advance(5.0)
    peak.note(2)
    assert peak.value(level_now=0) == 2


def test_the_value_is_never_below_the_level_now() -> None:
    peak = PeakLevel(FakeClock())
    assert peak.value(level_now=4) == 4
