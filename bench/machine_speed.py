"""How fast this machine runs a fixed CPU workload right now: the benchmark's yardstick for
comparing rows measured minutes apart.

On a shared host (a VM whose neighbours come and go) the same work costs up to 1.8x more CPU
time from one minute to the next (measured 2026-12-03: `bench/bench_calls.py` gave 503 and
915 us per call within ten minutes). CPU per call of two systems measured at different moments
is only comparable when the machine ran at the same speed for both, so each run records this
index just before and just after its calls: the CPU milliseconds of a fixed mix of the work a
proxy does (dict lookups, string and bytes scans, small allocations), the best of a few
repeats, so that a preemption does not count (process time) and only the machine's speed does.
Lower is faster; a row whose index is 30% above another's ran on a 30% slower machine.

It is taken on each CPU in turn (`speed_by_cpu`): on this VM the two vCPUs often run at
different speeds, ~2.3 and ~4.2 ms, and which is the slow one changes over minutes (the host
places them on its cores), so a one-process system's CPU per call depends on the vCPU it ran on.
"""

from __future__ import annotations

import os
import time

REPEATS = 5
_HEAD = (
    b"INVITE sip:0044207946@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1"
    b"\r\nFrom: <sip:1001@pbx.example.com>;tag=1\r\nTo: <sip:0044207946@127.0.0.1>\r\n"
    b"Call-ID: speed@pbx\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
)


def workload(rounds: int = 400) -> int:
    """A fixed mix of interpreter work (2.2-4.8 ms on this VM's vCPUs); returns a checksum
    so that nothing of it can be skipped."""
    table: dict[str, int] = {}
    checksum = 0
    for n in range(rounds):
        text = _HEAD.decode("latin-1")
        lines = text.split("\r\n")
        for line in lines:
            name, _, value = line.partition(":")
            key = f"{name.lower()}-{n % 64}"
            table[key] = table.get(key, 0) + len(value)
        checksum += _HEAD.count(b"\r\n") + len(table) + sum(len(line) for line in lines)
    return checksum + sum(table.values())


def speed_index_ms(repeats: int = REPEATS) -> float:
    """The best CPU time, in ms, of `repeats` runs of `workload`."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        started = time.process_time()
        workload()
        best = min(best, time.process_time() - started)
    return best * 1000.0


def speed_by_cpu(repeats: int = REPEATS) -> tuple[float, ...]:
    """`speed_index_ms` on each CPU this process may use, in CPU order: the calling thread is
    pinned to each in turn, then given its affinity back (Linux, as the rest of the benchmark,
    which reads /proc)."""
    allowed = os.sched_getaffinity(0)
    figures: list[float] = []
    try:
        for cpu in sorted(allowed):
            os.sched_setaffinity(0, {cpu})
            figures.append(speed_index_ms(repeats))
    finally:
        os.sched_setaffinity(0, allowed)
    return tuple(figures)
