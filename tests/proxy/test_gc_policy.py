"""The process's GC policy (issue 6): start-up objects frozen, CPython's thresholds, and young
collections paced by time from the loop so that none walks more than one interval's objects."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from proxy.gc_monitor import THRESHOLDS, GcPacer, apply_gc_policy, generation_due


@pytest.fixture
def gc_settings() -> Iterator[None]:
    """Whatever a test sets is put back: thresholds, frozen objects, automatic collection."""
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        gc.enable()


def test_the_live_policy_freezes_start_up_objects_and_sets_the_thresholds(
    gc_settings: None,
) -> None:
    start_up = [[n] for n in range(100)]  # tracked objects alive at start-up (lists stay so)
    apply_gc_policy()
    assert gc.get_threshold() == THRESHOLDS
    assert gc.get_freeze_count() >= len(start_up)
    assert all(gc.is_tracked(obj) for obj in start_up)
    assert not any(obj is start_up for obj in gc.get_objects())  # in no generation


def test_generation_due_is_the_oldest_past_its_threshold(gc_settings: None) -> None:
    gc.disable()  # no automatic collection changes the counts meanwhile
    gc.collect()
    gc.set_threshold(1_000_000, 1_000, 1_000)
    assert generation_due() == 0
    gc.collect(0)  # one young collection since the last of generation 1
    gc.set_threshold(1_000_000, 0, 1_000)
    assert generation_due() == 1
    gc.collect(1)  # one collection of generation 1 since the last full one
    gc.set_threshold(1_000_000, 1_000, 0)
    assert generation_due() == 2


def test_a_tick_collects_the_generation_due(gc_settings: None) -> None:
    collected: list[int] = []

    def collect(generation: int) -> int:
        collected.append(generation)
        return 0

    gc.disable()
    gc.collect()
    pacer = GcPacer(collect=collect)
    gc.set_threshold(1_000_000, 1_000, 1_000)
    assert pacer.tick() == 0
    gc.collect(0)
    gc.set_threshold(1_000_000, 0, 1_000)
    assert pacer.tick() == 1
    assert collected == [0, 1] and pacer.collections == 2


def test_the_pacer_runs_on_the_loop_until_stopped() -> None:
    collected: list[int] = []

    def collect(generation: int) -> int:
        collected.append(generation)
        return 0

    async def main() -> tuple[int, int]:
        pacer = GcPacer(interval=0.01, collect=collect)
        with pacer.running(asyncio.get_running_loop()):
            await asyncio.sleep(0.2)
        during = len(collected)
        await asyncio.sleep(0.05)
        return during, len(collected)

    during, after = asyncio.run(main())
    assert during >= 2
    assert after == during  # stopped: no collection after


def test_a_pacer_stopped_between_its_beat_and_its_collection_collects_nothing() -> None:
    """CI found it: the beat schedules the collection for the next loop turn; a stop() that came
    in between let that one collection run after the pacer was stopped."""
    collected: list[int] = []

    def collect(generation: int) -> int:
        collected.append(generation)
        return 0

    async def main() -> None:
        loop = asyncio.get_running_loop()
        pacer = GcPacer(interval=3600.0, collect=collect)
        pacer._run(loop)  # the beat fires: the collection is queued for the next turn
        pacer.stop()
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(main())
    assert collected == []


def test_the_pacer_keeps_its_count_unboxed() -> None:
    """Issue 7: an int re-made per paced collection and kept would pin a flood's arena."""
    pacer = GcPacer(collect=lambda generation: 0)
    for _ in range(300):
        pacer.tick()
    assert pacer.collections == 300
    assert not any(isinstance(value, int) for value in vars(pacer).values()), vars(pacer)

