"""RFC 3261 timer values, the Timer names, and a deadline queue. The core never reads a clock:
`now` is passed in."""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable
from enum import Enum
from typing import Final, TypeVar, cast

T1: Final = 0.5  # RTT estimate
T2: Final = 4.0  # maximum retransmit interval for non-INVITE requests and INVITE responses
T4: Final = 5.0  # maximum duration a message remains in the network
TIMER_B: Final = 64 * T1  # INVITE client transaction timeout
# proxy INVITE transaction timeout after a provisional response (16.6 step 11)
TIMER_C: Final = 180.0
TIMER_D: Final = 32.0  # wait time for response retransmissions (UDP)
TIMER_F: Final = 64 * T1  # non-INVITE client transaction timeout
TIMER_H: Final = 64 * T1  # wait time for ACK receipt
TIMER_J: Final = 64 * T1  # wait time for non-INVITE request retransmissions (UDP)
TIMER_L: Final = 64 * T1  # RFC 6026 Accepted state: absorb INVITE retransmissions after a 2xx

# The queue's slots: deadlines are grouped by 1/SLOTS_PER_SECOND s (a power of two, so that
# `deadline * SLOTS_PER_SECOND` is exact and a slot's bounds never round the wrong way), kept in
# WHEEL_SIZE buckets made at start-up (64 s of slots: every RFC 3261 timer but C fits in one turn).
SLOTS_PER_SECOND: Final = 64
WHEEL_SIZE: Final = 4096  # a power of two: a slot's bucket is `slot & _WHEEL_MASK`
_WHEEL_MASK: Final = WHEEL_SIZE - 1


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
TimerKey = tuple[Hashable, ...]  # (name, *owner)
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
    """Deadlines keyed by (owner, name): a hashed timing wheel (Varghese and Lauck's scheme 6)
    of slots of 1/SLOTS_PER_SECOND s, the slots in use found through a heap of slot numbers.

    Every operation touches one slot: arming puts the timer in the slot of its deadline (taking
    it out of the one it was in, if re-armed), cancelling deletes it from its slot at once, firing
    takes a slot at a time. So nothing stale is kept and there is no compaction: the heap with
    lazy deletion this replaces was rebuilt whenever its stale entries outnumbered the live ones,
    an O(n) pass that stopped the loop for 24 ms at 40,000 live timers, every few seconds under
    load (a call leaves ~3 timers that live 32 s, Timers J, L and D: about 100,000 at 1,000 calls
    per second), and showed in the p99 INVITE->200 (17.9 ms at 1,000 calls/s, development run).
    The slot heap holds one int per slot in use, at most the horizon times SLOTS_PER_SECOND
    (11,520 for Timer C's 180 s) however many timers there are. Deadlines stay exact: each timer
    keeps its own, `pop_due` fires only those <= now, and each slot keeps its earliest as timers
    are armed (after a cancel it may be earlier than what is left: one wakeup that fires
    nothing, which finds the slot's true earliest).

    What the collector sees: keys (name, *owner) and entries (deadline, sequence, slot) are flat
    tuples of atoms, untracked the first time a collection looks (a key (owner, name) would wait
    for a second look whenever the owner tuple is still tracked at the first: measured, that
    made generation-1 collections five times longer); the buckets, the tables and the heap are
    made here, at start-up, and frozen there (proxy/gc_monitor.py), so some 100,000 timers of
    finished calls cost collections nothing."""

    def __init__(self) -> None:
        self._slot_of: Table[TimerKey, int] = Table()  # (name, *owner) -> its slot
        # Bucket `slot & _WHEEL_MASK`: {(name, *owner): (deadline, sequence, slot)} of the slots
        # that share it (64 s apart); the sequence orders equal deadlines.
        self._wheel: list[Table[TimerKey, tuple[float, int, int]]] = [
            Table() for _ in range(WHEEL_SIZE)
        ]
        self._count: Table[int, int] = Table()  # slot -> timers in it (0: emptied by cancels)
        self._earliest: Table[int, float] = Table()  # slot -> a deadline <= each one in it
        self._heap: list[int] = []  # the slots in `_count`, each once, as a heap
        self._sequence = 0  # the last one given out

    def arm(self, owner: Owner, name: str, deadline: float) -> None:
        if deadline - deadline != 0.0:  # inf or nan (0 for every finite float): refused before
            raise ValueError(f"timer {name} armed with a deadline of {deadline}")  # floor raises
        slot = math.floor(deadline * SLOTS_PER_SECOND)
        key = _key(owner, name)
        previous = self._slot_of.get(key)
        if previous is not None:
            self._remove(key, previous)
        self._slot_of[key] = slot
        self._sequence += 1
        self._wheel[slot & _WHEEL_MASK][key] = (deadline, self._sequence, slot)
        count = self._count.get(slot)
        if count is None:
            self._count[slot] = 1
            self._earliest[slot] = deadline
            heapq.heappush(self._heap, slot)
            return
        self._count[slot] = count + 1
        if deadline < self._earliest[slot]:
            self._earliest[slot] = deadline

    def cancel(self, owner: Owner, name: str) -> None:
        key = _key(owner, name)
        slot = self._slot_of.pop(key, None)
        if slot is not None:
            self._remove(key, slot)

    def cancel_all(self, owner: Owner, names: tuple[str, ...]) -> None:
        slot_of = self._slot_of
        for name in names:
            key = _key(owner, name)
            slot = slot_of.pop(key, None)
            if slot is not None:
                self._remove(key, slot)

    def is_armed(self, owner: Owner, name: str) -> bool:
        return _key(owner, name) in self._slot_of

    def next_deadline(self) -> float | None:
        heap, count = self._heap, self._count
        while heap:
            slot = heap[0]
            if count[slot]:
                return self._earliest[slot]
            self._drop_first_slot()  # emptied by cancels
        return None

    def pop_due(self, now: float) -> list[tuple[Owner, str]]:
        """The timers whose deadline is <= now, in deadline order (arming order for equal
        deadlines), no longer armed."""
        heap, count = self._heap, self._count
        fired: list[tuple[Owner, str]] = []
        if math.isnan(now) or not heap:
            return fired
        # +inf: every slot lies before now (deadlines are finite: `arm`).
        current = math.floor(now * SLOTS_PER_SECOND) if now < math.inf else max(heap) + 1
        while heap and heap[0] <= current:
            slot = heap[0]
            if count[slot] and self._fire(slot, slot < current, now, fired):
                break  # the current slot, with timers after now left in it
            self._drop_first_slot()
        return fired

    def __len__(self) -> int:
        return len(self._slot_of)

    @property
    def slot_count(self) -> int:
        """Slots held: in use, or emptied by cancels and not reached yet."""
        return len(self._heap)

    def shrink(self) -> None:
        """After a flood: forget the slots cancels emptied and give back the tables' peak
        capacity (a dict's hash table never shrinks, a list not until half empty), in place:
        the objects stay the frozen start-up ones. O(live timers + wheel): for quiet moments
        (the memory trim)."""
        count, earliest = self._count, self._earliest
        for slot in [slot for slot, timers in count.items() if not timers]:
            del count[slot]
            del earliest[slot]
        self._heap[:] = sorted(count)  # a sorted list is a heap
        self._slot_of.shrink()
        count.shrink()
        earliest.shrink()
        for bucket in self._wheel:
            bucket.shrink()

    def _fire(
        self, slot: int, whole: bool, now: float, fired: list[tuple[Owner, str]]
    ) -> bool:
        """Disarm the slot's due timers (all of them if `whole`) and add them to `fired` in
        order; True if some are left (then the slot's count and earliest are theirs). One pass
        over the bucket, none when woken before the slot's earliest deadline. Besides what it
        returns, this makes nothing that outlives it: the young generation then counts one
        allocation per timer fired, so that firing 100,000 at once is collected as it goes,
        not walked at once afterwards (a deallocation, even of an untracked tuple, takes one off
        the count CPython collects by)."""
        if not whole and now < self._earliest[slot]:
            return True  # nothing in it is due yet
        bucket = self._wheel[slot & _WHEEL_MASK]
        due: list[tuple[TimerKey, tuple[float, int, int]]] = []
        earliest = math.inf
        for key, entry in bucket.items():
            if entry[2] != slot:
                continue  # a slot one or more turns of the wheel later
            if whole or entry[0] <= now:
                due.append((key, entry))
            elif entry[0] < earliest:
                earliest = entry[0]
        due.sort(key=_entry)  # (deadline, sequence, slot): the sequence is unique
        slot_of = self._slot_of
        for key, _ in due:
            del bucket[key]
            del slot_of[key]
            fired.append((key[1:], cast(str, key[0])))
        left = self._count[slot] - len(due)
        if not left:
            return False
        self._count[slot] = left
        self._earliest[slot] = earliest
        return True

    def _remove(self, key: TimerKey, slot: int) -> None:
        del self._wheel[slot & _WHEEL_MASK][key]
        self._count[slot] -= 1  # the slot stays until reached (bounded by the horizon)

    def _drop_first_slot(self) -> None:
        slot = heapq.heappop(self._heap)
        del self._count[slot]
        del self._earliest[slot]
        bucket = self._wheel[slot & _WHEEL_MASK]
        if not bucket:
            # A dict keeps its hash table when emptied: 4,096 buckets that each held ~50
            # timers at 1,000 calls/s would keep ~9 MB, and after a flood their tables, made
            # during it, would keep its pymalloc arenas (issue 7). Cleared, an empty bucket
            # holds none, and the next timer in it gets a new one.
            bucket.clear()


def _key(owner: Owner, name: str) -> TimerKey:
    """(name, *owner), by a concatenation: the compiled core builds the starred form through a
    list and then a tuple."""
    return (name,) + owner  # noqa: RUF005


def _entry(item: tuple[TimerKey, tuple[float, int, int]]) -> tuple[float, int, int]:
    return item[1]
