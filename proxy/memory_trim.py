"""Give memory back after a flood (issue 7: RSS back near its idle value a minute after).

CPython frees the objects of ended transactions, but the allocator keeps the pages: glibc's heap
only shrinks from its top, and pymalloc's arenas only when wholly empty. Once the transactions a
flood created have ended (the count falls back under a tenth of its peak), one full collection
and glibc's `malloc_trim(0)` return the free pages to the system. It runs at most once per flood
and never while traffic is high, so it costs nothing on the hot path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Callable

log = logging.getLogger("callerid_proxy.memory")
FLOOD = 1000  # live transactions that count as a flood worth trimming after


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
    def __init__(self, flood: int = FLOOD, trim: Callable[[], int] | None = None) -> None:
        self._flood = flood
        self._trim = trim if trim is not None else _malloc_trim()
        self._peak = 0
        self.trims = 0

    def tick(self, live_transactions: int) -> bool:
        """Called periodically with the live transaction count; True when it trimmed."""
        if live_transactions >= self._flood:  # a flood (again): remember how high it went
            self._peak = max(self._peak, live_transactions)
        if self._peak == 0 or live_transactions > self._peak // 10:
            return False
        self._peak = 0  # the flood is over: wait for the next one
        gc.collect()
        released = self._trim() if self._trim is not None else 0
        self.trims += 1
        if log.isEnabledFor(logging.INFO):
            log.info("flood over (%d live transactions): memory trimmed (%s)", live_transactions,
                     "pages returned" if released else "nothing to return")
        return True
