"""MemoryTrimmer: one collection and malloc_trim once a flood's transactions have ended."""

from __future__ import annotations

from proxy.memory_trim import MemoryTrimmer


def test_trims_once_after_a_flood_ends_and_not_under_normal_traffic() -> None:
    calls: list[int] = []

    def trim() -> int:
        calls.append(1)
        return 1

    trimmer = MemoryTrimmer(flood=100, trim=trim)
    for live in (5, 40, 90, 20, 0):  # never a flood: nothing to give back
        assert trimmer.tick(live) is False
    for live in (500, 3000, 2500, 400):  # the flood, still draining
        assert trimmer.tick(live) is False
    assert trimmer.tick(250) is True  # under a tenth of the peak: trimmed
    assert trimmer.tick(0) is False  # once per flood
    assert calls == [1] and trimmer.trims == 1
    for live in (2000, 100):  # the next flood trims again
        trimmer.tick(live)
    assert trimmer.trims == 2


def test_without_glibc_it_still_collects_and_counts() -> None:
    trimmer = MemoryTrimmer(flood=10)
    trimmer._trim = None  # as on musl or macOS
    trimmer.tick(50)
    assert trimmer.tick(0) is True and trimmer.trims == 1
