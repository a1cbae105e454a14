"""RFC 3261 timer values, the Timer names, and a deadline queue. The core never reads a clock:
`now` is passed in."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from enum import Enum
from typing import TypeVar, cast

T1 = 0.5  # RTT estimate
T2 = 4.0  # maximum retransmit interval for non-INVITE requests and INVITE responses
T4 = 5.0  # maximum duration a message remains in the network
TIMER_B = 64 * T1  # INVITE client transaction timeout
TIMER_C = 180.0  # proxy INVITE transaction timeout after a provisional response (16.6 step 11)
TIMER_D = 32.0  # wait time for response retransmissions (UDP)
TIMER_F = 64 * T1  # non-INVITE client transaction timeout
TIMER_H = 64 * T1  # wait time for ACK receipt
TIMER_J = 64 * T1  # wait time for non-INVITE request retransmissions (UDP)
TIMER_L = 64 * T1  # RFC 6026 Accepted state: absorb INVITE retransmissions after a 2xx

# Compaction: the heap is rebuilt from the live timers once stale entries outnumber them.
_COMPACT_SLACK = 64


class Timer(Enum):
    """RFC 3261 17 (A-K, table 4) and RFC 6026 (L) timers, by their letter."""

    A = "A"  # INVITE client: request retransmission (UDP)
    B = "B"  # INVITE client: transaction timeout
    C = "C"  # proxy INVITE: no final after a provisional (RFC 3261 16.6 step 11)
    D = "D"  # INVITE client: absorb response retransmissions
    E = "E"  # non-INVITE client: request retransmission (UDP)
    F = "F"  # non-INVITE client: transaction timeout
    G = "G"  # INVITE server: non-2xx final retransmission (UDP)
    H = "H"  # INVITE server: wait for the ACK
    I = "I"  # noqa: E741  INVITE server: absorb ACK retransmissions
    J = "J"  # non-INVITE server: absorb request retransmissions
    K = "K"  # non-INVITE client: absorb response retransmissions
    L = "L"  # INVITE server, RFC 6026 Accepted: absorb INVITE retransmissions after a 2xx
    # Not in RFC 3261: a trunk that sends no provisional within this time is failed over (like
    # Kamailio's fr_timer; RFC 3261 16.7 leaves when to give up on a branch to the proxy).
    NO_ANSWER = "no-answer"

    # Members are singletons compared by identity: hash them so too (Enum's own __hash__ is
    # Python code, and timers are hashed on every arm, cancel and pop).
    __hash__ = object.__hash__


Owner = tuple[Hashable, ...]
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Table(dict[K, V]):
    """A long-lived table (transactions, timers): a dict that the cyclic collector tracks from
    birth and never untracks. A plain dict whose items are all untracked is untracked by a full
    collection and tracked again, as a young object, by its next insertion, so that the next
    collections walk all of its 100,000 records again. A Table created at start-up is instead
    moved out of every collection for good by `gc.freeze()` (proxy/gc_monitor.py)."""

    __slots__ = ()

    def shrink(self) -> None:
        """Give back the capacity a flood left (issue 7): a dict's hash table never shrinks when
        items are deleted, so 6,000 transactions leave 150 KB per table behind them. In place,
        the object stays the frozen start-up one: `clear()` frees the table and re-adding the
        live items sizes a new one for them. O(len): for quiet moments (the memory trim)."""
        items = list(self.items())
        self.clear()
        self.update(items)


class TimerQueue:
    """Deadlines keyed by (owner, name). Re-arming replaces; cancelled entries are skipped when
    they reach the top and the heap is compacted when they outnumber the live ones, so its size
    stays within twice the live timers (plus a small slack) however many are cancelled.

    Owners are tuples (transaction keys) and names strings: every entry is one flat tuple of
    atoms, (deadline, sequence, name, *owner), with no tuple inside, so the garbage collector
    stops tracking it the first time it looks (a nested key would survive into the next
    generation first). Some 100,000 timers of finished calls then cost collections nothing."""

    def __init__(self) -> None:
        # The unique sequence decides ties: names and owners are never compared. The list is
        # never replaced (compacted in place): frozen at start-up, collections never walk it.
        self._heap: list[tuple[Hashable, ...]] = []
        self._armed: Table[tuple[Hashable, ...], int] = Table()  # (name, *owner) -> sequence
        self._sequence = itertools.count()

    def arm(self, owner: Owner, name: str, deadline: float) -> None:
        sequence = next(self._sequence)
        self._armed[(name, *owner)] = sequence
        heapq.heappush(self._heap, (deadline, sequence, name, *owner))
        if len(self._heap) > 2 * len(self._armed) + _COMPACT_SLACK:
            self._compact()

    def cancel(self, owner: Owner, name: str) -> None:
        self._armed.pop((name, *owner), None)

    def cancel_all(self, owner: Owner, names: tuple[str, ...]) -> None:
        armed = self._armed
        for name in names:
            armed.pop((name, *owner), None)

    def is_armed(self, owner: Owner, name: str) -> bool:
        return (name, *owner) in self._armed

    def next_deadline(self) -> float | None:
        self._drop_stale()
        return cast(float, self._heap[0][0]) if self._heap else None

    def pop_due(self, now: float) -> list[tuple[Owner, str]]:
        due: list[tuple[Owner, str]] = []
        heap, armed = self._heap, self._armed
        while heap and cast(float, heap[0][0]) <= now:
            entry = heapq.heappop(heap)
            key = entry[2:]
            if armed.get(key) == entry[1]:
                del armed[key]
                due.append((key[1:], cast(str, key[0])))
        return due

    def __len__(self) -> int:
        return len(self._armed)

    @property
    def heap_size(self) -> int:
        """Entries held, live and stale: what the queue costs in memory."""
        return len(self._heap)

    def shrink(self) -> None:
        """After a flood: drop the stale entries and give back the heap's and the armed table's
        capacity (a list keeps its size when entries are popped until it is half empty, a dict
        forever). O(live timers): for quiet moments (the memory trim)."""
        self._compact()
        self._armed.shrink()

    def _drop_stale(self) -> None:
        heap, armed = self._heap, self._armed
        while heap:
            entry = heap[0]
            if armed.get(entry[2:]) == entry[1]:
                return
            heapq.heappop(heap)

    def _compact(self) -> None:
        """In place: the heap stays the one long-lived list (a new list of 100,000 entries
        would be a young object that the next collections walk)."""
        armed, heap = self._armed, self._heap
        heap[:] = [e for e in heap if armed.get(e[2:]) == e[1]]  # also shrinks its capacity
        heapq.heapify(heap)
