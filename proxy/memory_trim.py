"""Give memory back after a flood (issue 7: RSS back near its idle value a minute after).

CPython frees the objects of ended transactions, but the allocator keeps the pages: glibc's heap
only shrinks from its top, and pymalloc's 1 MiB arenas only when wholly empty. Once the
transactions a flood created have ended (the count falls back under a tenth of its peak), one
full collection and glibc's `malloc_trim(0)` return the free pages to the system.

A second pass follows when the flood's last transactions are gone (under a hundredth of the peak,
or `SETTLE` seconds after the first pass, by when every transaction alive at the first pass has
ended: RFC 3261 17.1.1.2 and 17.2.1, Timers B and H are 64*T1 = 32 s): the first pass often runs
with hundreds of transactions still alive, whose objects, freed afterwards, refill CPython's free
lists (up to 2,000 tuples per size) and glibc's free chunks. Each pass first has the core give
back its tables' peak capacity (`ProxyCore.shrink`: a dict never shrinks on deletes; ~1.4 MB after
the silent-trunk flood). Neither pass can return pymalloc arenas that still hold a few live
blocks. Measured after the 20,000-INVITE silent-trunk flood (bench/flood_memory.py in-process,
and the live proxy): the live bytes are back at idle (+0.25 MB) and glibc's [heap] too, but extra
1 MiB arenas stay mapped, each pinned by one to a few small objects allocated during the flood
and still alive: counter values (`counters["received"] += 1` makes a new int each time; the last
one lives on, in a pool of the flood's), metric counters and floats, gauges, timer-handle
deadlines. Re-allocating those values afterwards does not help (pymalloc serves the copy from
the first partly used pool of its size, the very pool it pinned), so counts and per-sample
values that live on are kept unboxed (proxy/sip/counters.py `Counts` for the core's and the
metrics' counters; arrays in the histograms, the GC monitor and the loop ticker), and a
remembered dialog is two blocks (proxy/sip/dialogs.py). Measured in the live proxy
(bench/arena_pins.py: the objects made since idle and alive a minute after the flood, placed in
their pools and arenas), the last pins were of two kinds. Figures re-made at every loop check
and kept until the next (the gauges' (documentation, value) pairs, the overload detector's
floats, the check's own, the GC pacer's count, a copied context per timer): each new one is
served from the first pool with room, a flood's, so they are unboxed too. And the dialogs of the
calls set up during the flood, one or two blocks in each of several flood arenas: the shrink
below re-makes every remembered dialog, so the copies sit side by side in a pool with room and
the originals' arenas empty. What bounds the rest is how
many arenas the flood spreads over: a pending INVITE keeps its sent bytes, not a parse (3.6 KB
a call instead of 9.3; 14 extra arenas at the peak instead of 28). `PYTHONMALLOC=malloc`
avoids that at a CPU cost (see the README's Security section). At most two passes per flood,
never while traffic is high, so it costs nothing on the hot path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("callerid_proxy.memory")
FLOOD = 1000  # live transactions that count as a flood worth trimming after
SETTLE = 40.0  # seconds after the first pass: 64*T1 (32 s) and a margin


def _malloc_trim() -> Callable[[], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim with
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: int(trim(0))


class MemoryTrimmer:
    def __init__(
        self,
        flood: int = FLOOD,
        trim: Callable[[], int] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        settle: float = SETTLE,
        shrink: Callable[[], None] | None = None,
    ) -> None:
        self._flood = flood
        self._shrink = shrink  # the core's tables give back their peak capacity first
        self._trim = trim if trim is not None else _malloc_trim()
        self._clock = clock
        self._settle = settle
        self._peak = 0
        self._first_pass: float | None = None  # when the first pass ran, until the second
        self.trims = 0

    def tick(self, live_transactions: int) -> bool:
        """Called periodically with the live transaction count; True when it trimmed."""
        if live_transactions >= self._flood:  # a flood (again): remember how high it went
            if self._first_pass is not None and live_transactions > self._peak // 10:
                self._first_pass = None  # rising again: a new flood, start over
            self._peak = max(self._peak, live_transactions)
        if self._peak == 0:
            return False
        if self._first_pass is None:
            if live_transactions > self._peak // 10:
                return False
            self._first_pass = self._clock()
            return self._run(live_transactions, "flood over")
        settled = self._clock() - self._first_pass >= self._settle
        if live_transactions > self._peak // 100 and not settled:
            return False
        self._peak, self._first_pass = 0, None  # done: wait for the next flood
        return self._run(live_transactions, "flood's last transactions ended")

    def _run(self, live_transactions: int, stage: str) -> bool:
        if self._shrink is not None:
            self._shrink()
        gc.collect()
        released = self._trim() if self._trim is not None else 0
        self.trims += 1
        if log.isEnabledFor(logging.INFO):
            log.info("%s (%d live transactions): memory trimmed (%s)", stage, live_transactions,
                     "pages returned" if released else "nothing to return")
        return True
