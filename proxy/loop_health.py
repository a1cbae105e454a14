"""Is the event loop responsive? A periodic tick on the loop records when it last ran.

`/healthz` answers from the age of the last tick, not from the fact that its own handler runs:
a loop stalled for seconds (a blocking call, a GC pause, a CPU-starved host) shows a stale tick
even though the handler eventually gets to answer.

The proxy server does not `start()` its ticker: its overload check, already periodic, calls
`tick()` every TICK_INTERVAL (one loop timer instead of two). The check and the GC pacer keep
the same beat (`next_beat`), so an idle loop wakes once for both.
"""

from __future__ import annotations

import asyncio
import math
from array import array
from collections.abc import Callable

TICK_INTERVAL = 0.25
STALE_AFTER = 2.0  # seconds without a tick: the loop is not responsive


def next_beat(now: float, interval: float) -> float:
    """The first multiple of `interval` on the loop's clock at least half an interval after
    `now` (so between 0.5 and 1.5 intervals away, one on average): periodic jobs with the same
    interval (the overload check, the GC pacer) scheduled on it run in one wakeup of an idle
    loop instead of one each, wherever each started. The half interval keeps a job that ran
    late from running again at once: the overload check after a stall still comes at least
    half an interval later (it came a whole one later when scheduled an interval after each
    run)."""
    return (math.floor((now + interval / 2) / interval) + 1.0) * interval


class LoopTicker:
    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_tick: list[Callable[[], None]] = []
        # last tick (loop time), the longest a tick came late (s), unboxed (issue 7): a float
        # or int re-made per tick during a flood and kept would pin a pymalloc arena of it
        self._times = array("d", [self._loop.time(), 0.0])
        self._ticks = array("q", [0])
        self._handle: asyncio.TimerHandle | None = None

    @property
    def ticks(self) -> int:
        return self._ticks[0]

    @property
    def last_tick(self) -> float:
        return self._times[0]

    @property
    def max_lag(self) -> float:
        """The longest a tick came late, in seconds."""
        return self._times[1]

    def add(self, callback: Callable[[], None]) -> None:
        """Run `callback` on every tick (cheap work only: it delays the tick)."""
        self._on_tick.append(callback)

    def start(self) -> None:
        self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def age(self) -> float:
        """Seconds since the last tick, as of now."""
        return self._loop.time() - self.last_tick

    def responsive(self) -> bool:
        return self.age() < STALE_AFTER

    def _schedule(self) -> None:
        self._handle = self._loop.call_later(TICK_INTERVAL, self._tick)

    def tick(self, now: float) -> None:
        """A tick at loop time `now` (driven by another periodic callback)."""
        times = self._times
        lag = now - times[0] - TICK_INTERVAL
        if lag > times[1]:
            times[1] = lag
        times[0] = now
        self._ticks[0] += 1
        for callback in self._on_tick:
            callback()

    def _tick(self) -> None:
        self.tick(self._loop.time())
        self._schedule()
