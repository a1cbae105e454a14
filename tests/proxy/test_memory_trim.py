"""MemoryTrimmer: a collection and malloc_trim once a flood's transactions have ended, and once
more when its last ones are gone."""

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
    assert trimmer.tick(0) is True  # and once more when its last transactions are gone
    assert trimmer.tick(0) is False  # twice per flood
    assert calls == [1, 1] and trimmer.trims == 2
    for live in (2000, 100):  # the next flood trims again
        trimmer.tick(live)
    assert trimmer.trims == 3


def test_without_glibc_it_still_collects_and_counts() -> None:
    trimmer = MemoryTrimmer(flood=10)
    trimmer._trim = None  # as on musl or macOS
    trimmer.tick(50)
    assert trimmer.tick(0) is True and trimmer.trims == 1


def test_a_second_pass_once_the_floods_last_transactions_are_gone() -> None:
    now = [0.0]
    trimmer = MemoryTrimmer(flood=100, trim=lambda: 1, clock=lambda: now[0], settle=40.0)
    for live in (3000, 6000, 2000):
        assert trimmer.tick(live) is False
    assert trimmer.tick(600) is True  # first pass: under a tenth of the peak
    for live in (500, 200, 61):  # the tail still draining (Timer H runs 32 s)
        now[0] += 5
        assert trimmer.tick(live) is False
    assert trimmer.tick(60) is True  # second pass: under a hundredth, their free lists emptied
    assert trimmer.tick(0) is False and trimmer.trims == 2


def test_the_second_pass_also_comes_after_the_settle_time_under_steady_traffic() -> None:
    now = [0.0]
    trimmer = MemoryTrimmer(flood=100, trim=lambda: 1, clock=lambda: now[0], settle=40.0)
    trimmer.tick(5000)
    assert trimmer.tick(400) is True
    now[0] = 39.0
    assert trimmer.tick(300) is False  # normal calls keep 300 transactions alive
    now[0] = 40.0
    assert trimmer.tick(300) is True and trimmer.trims == 2
    now[0] = 100.0
    assert trimmer.tick(300) is False  # until the next flood


def test_each_pass_first_has_the_core_give_back_its_tables_capacity() -> None:
    """Issue 7: the core's tables keep their peak capacity until told to shrink."""
    order: list[str] = []

    def trim() -> int:
        order.append("trim")
        return 1

    trimmer = MemoryTrimmer(flood=100, trim=trim, shrink=lambda: order.append("shrink"))
    trimmer.tick(500)
    assert trimmer.tick(0) is True
    assert order == ["shrink", "trim"]
