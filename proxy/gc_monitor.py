"""How long the cyclic garbage collector stops the event loop (issue 6).

A collection runs on the thread that allocates, so while it runs no datagram is read and no
timer fires; a long one makes every peer retransmit. `GcMonitor` times each collection with a
`gc.callbacks` hook (`time.perf_counter` at "start" and "stop"), per generation, and exposes
them at scrape time as Prometheus metrics:

- `callerid_proxy_gc_pause_seconds{generation}`: histogram of pause durations,
- `callerid_proxy_gc_pause_max_seconds{generation}`: the longest pause since install,
- `callerid_proxy_gc_slow_pauses_total{generation}`: pauses longer than `slow_s` (5 ms).

A pause longer than `log_over_s` is also logged as a warning. The callback does a few additions
and one bisect per collection; nothing happens per packet.
"""

from __future__ import annotations

import asyncio
import bisect
import contextvars
import gc
import logging
import time
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from proxy.loop_health import next_beat

log = logging.getLogger("callerid_proxy.gc")

GENERATIONS = (0, 1, 2)
# Upper bounds in seconds; 5 ms is one of them so a scrape can tell pauses over the target.
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
SLOW_S = 0.005
LOG_OVER_S = 0.05
# The process's automatic collection thresholds once started (see `apply_gc_policy`): with the
# pacer below, the automatic young collection is only a backstop for bursts.
THRESHOLDS = (5_000, 10, 100)
PACE_S = 0.05  # the pacer's young collection interval (seconds)


def apply_gc_policy(thresholds: tuple[int, int, int] = THRESHOLDS) -> None:
    """The GC policy of a started proxy (and of the benchmarks that measure it): start-up
    objects (rules, phonenumbers metadata, the core and its tables) never die, so they are moved
    out of every collection (`gc.freeze`), and the automatic thresholds are set. A finished call
    lingers only as untracked records (proxy/sip/transaction_layer.py), in tables frozen here
    (proxy/sip/timers.py `Table`): a full collection then walks almost nothing."""
    gc.freeze()  # no full collection first: it would stall the just-started loop
    gc.set_threshold(*thresholds)


def generation_due() -> int:
    """The oldest generation whose count passed its threshold (CPython's own choice when it
    collects automatically), else 0."""
    counts, thresholds = gc.get_count(), gc.get_threshold()
    for generation in (2, 1):
        if counts[generation] > thresholds[generation]:
            return generation
    return 0


class GcPacer:
    """Young collections by time, not only by count (issue 6: no pause over 5 ms).

    CPython collects the young generation when allocations minus deallocations pass the first
    threshold. A finished call's records live ~32 s (Timers D, H, J, L): once the first calls'
    records die as fast as new ones are made, that difference hardly grows, the young
    generation fills with 10,000+ records and the collection that finally comes walks them all.
    Collecting every `interval` (50 ms: ~1,000 objects at 1,000 calls/s, well under a
    millisecond) bounds what each collection walks by the traffic of one interval; the older
    generations follow CPython's thresholds (`generation_due`)."""

    def __init__(
        self, interval: float = PACE_S, collect: Callable[[int], int] = gc.collect
    ) -> None:
        self.interval = interval
        self._collect = collect
        self._handle: asyncio.TimerHandle | None = None
        self._context = contextvars.copy_context()  # one for every run, not a copy each
        # unboxed (issue 7): an int re-made per run and kept would pin a flood's pymalloc arena
        self._collections = array("q", [0])

    @property
    def collections(self) -> int:
        return self._collections[0]

    def tick(self) -> int:
        """One paced collection; the generation it collected."""
        generation = generation_due()
        self._collect(generation)
        self._collections[0] += 1
        return generation

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        # on the beat the overload check keeps too (proxy/loop_health.py): one idle wakeup
        deadline = next_beat(loop.time(), self.interval)
        self._handle = loop.call_at(deadline, self._run, loop, context=self._context)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    @contextmanager
    def running(self, loop: asyncio.AbstractEventLoop) -> Iterator[GcPacer]:
        self.start(loop)
        try:
            yield self
        finally:
            self.stop()

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        self.start(loop)
        # After the other timers of this loop turn: the overload check shares the beat, and
        # measures the loop's lateness before this collection, not including it.
        loop.call_soon(self._paced_tick, context=self._context)

    def _paced_tick(self) -> None:
        # stop() may come between the beat and this turn (the call_soon handle is not kept):
        # a stopped pacer collects nothing more
        if self._handle is not None:
            self.tick()


class GenerationPauses:
    """Pauses of one generation: count, total, maximum, slow ones, per-bucket counts.

    Kept unboxed (issue 7): a value re-made at each collection of a flood and kept afterwards
    would pin a pymalloc arena of the flood's once the flood's own objects are gone."""

    def __init__(self) -> None:
        self._counts = array("q", bytes(8 * 2))  # count, slow
        self._seconds = array("d", bytes(8 * 2))  # total, maximum
        self.buckets = array("q", bytes(8 * (len(BUCKETS) + 1)))

    @property
    def count(self) -> int:
        return self._counts[0]

    @property
    def slow(self) -> int:
        return self._counts[1]

    @property
    def total_s(self) -> float:
        return self._seconds[0]

    @property
    def max_s(self) -> float:
        return self._seconds[1]

    def add(self, duration_s: float, slow_s: float) -> None:
        self._counts[0] += 1
        self._seconds[0] += duration_s
        if duration_s > self._seconds[1]:
            self._seconds[1] = duration_s
        if duration_s > slow_s:
            self._counts[1] += 1
        self.buckets[bisect.bisect_left(BUCKETS, duration_s)] += 1

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, cumulative count) pairs, "+Inf" last, as a Prometheus histogram has them."""
        pairs: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(BUCKETS, self.buckets, strict=False):
            running += count
            pairs.append((repr(bound), running))
        pairs.append(("+Inf", self.count))
        return pairs


class GcMonitor(Collector):
    """Times garbage collections once `install()`ed; a Prometheus collector of the results."""

    def __init__(
        self,
        slow_s: float = SLOW_S,
        log_over_s: float | None = LOG_OVER_S,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.slow_s = slow_s
        self.log_over_s = log_over_s
        self._clock = clock
        self._started: float | None = None
        self.pauses = {generation: GenerationPauses() for generation in GENERATIONS}

    # ------------------------------------------------------------------ hook
    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        while self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    @contextmanager
    def installed(self) -> Iterator[GcMonitor]:
        self.install()
        try:
            yield self
        finally:
            self.uninstall()

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = self._clock()
            return
        if self._started is None:  # installed in the middle of a collection
            return
        duration_s = self._clock() - self._started
        self._started = None
        generation = int(info.get("generation", 2))
        self.pauses.setdefault(generation, GenerationPauses()).add(duration_s, self.slow_s)
        if self.log_over_s is not None and duration_s > self.log_over_s:
            log.warning(
                "garbage collection of generation %d paused the loop %.1f ms (%s collected)",
                generation, duration_s * 1000, info.get("collected", "?"),
            )  # fmt: skip

    # ------------------------------------------------------------------ read
    @property
    def max_pause_s(self) -> float:
        return max(pauses.max_s for pauses in self.pauses.values())

    @property
    def slow_pauses(self) -> int:
        return sum(pauses.slow for pauses in self.pauses.values())

    def collect(self) -> Iterator[Any]:
        histogram = HistogramMetricFamily(
            "callerid_proxy_gc_pause_seconds",
            "Time the cyclic garbage collector stopped the process, per generation",
            labels=["generation"],
        )
        maximum = GaugeMetricFamily(
            "callerid_proxy_gc_pause_max_seconds",
            "Longest garbage-collection pause since start-up, per generation",
            labels=["generation"],
        )
        slow = CounterMetricFamily(
            "callerid_proxy_gc_slow_pauses",
            f"Garbage-collection pauses longer than {self.slow_s * 1000:g} ms, per generation",
            labels=["generation"],
        )
        for generation, pauses in sorted(self.pauses.items()):
            label = [str(generation)]
            histogram.add_metric(label, pauses.cumulative(), pauses.total_s)
            maximum.add_metric(label, pauses.max_s)
            slow.add_metric(label, pauses.slow)
        yield histogram
        yield maximum
        yield slow
