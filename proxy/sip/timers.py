"""RFC 3261 timer values and a deadline queue. The core never reads a clock: `now` is passed in."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from dataclasses import dataclass

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


@dataclass(order=True, frozen=True, slots=True)
class _Entry:
    deadline: float
    sequence: int
    owner: Hashable
    name: str


class TimerQueue:
    """Deadlines keyed by (owner, name). Re-arming replaces; cancelled ones are skipped lazily."""

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._armed: dict[tuple[Hashable, str], int] = {}
        self._sequence = itertools.count()

    def arm(self, owner: Hashable, name: str, deadline: float) -> None:
        sequence = next(self._sequence)
        self._armed[(owner, name)] = sequence
        heapq.heappush(self._heap, _Entry(deadline, sequence, owner, name))

    def cancel(self, owner: Hashable, name: str) -> None:
        self._armed.pop((owner, name), None)

    def cancel_all(self, owner: Hashable, names: tuple[str, ...]) -> None:
        for name in names:
            self._armed.pop((owner, name), None)

    def is_armed(self, owner: Hashable, name: str) -> bool:
        return (owner, name) in self._armed

    def next_deadline(self) -> float | None:
        self._drop_stale()
        return self._heap[0].deadline if self._heap else None

    def pop_due(self, now: float) -> list[tuple[Hashable, str]]:
        due: list[tuple[Hashable, str]] = []
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0].deadline > now:
                return due
            entry = heapq.heappop(self._heap)
            del self._armed[(entry.owner, entry.name)]
            due.append((entry.owner, entry.name))

    def __len__(self) -> int:
        return len(self._armed)

    def _drop_stale(self) -> None:
        while self._heap:
            head = self._heap[0]
            if self._armed.get((head.owner, head.name)) == head.sequence:
                return
            heapq.heappop(self._heap)
