"""When to shed new INVITEs: a detector fed one sample per check interval, no I/O, no clock.

Overload means the offered load is above what one process handles: the queue in front of it
(the kernel's socket buffers, the loop's callbacks) grows without bound and every peer ends up
retransmitting. Two signals, like a carrier proxy's overload control:

- the queueing delay: how long a message waits before it is handled (the lateness of the
  check callback, the sojourn of a probe datagram through our own UDP socket, the bytes queued
  on our TCP connections at the rate we read them). Overload is that delay over its bound for
  `sustain` seconds *without falling*: the backlog a single long pause (a GC pass, the
  scheduler) leaves shrinks as it is worked off and is not overload; a backlog that keeps
  growing is;
- the share of CPU time the loop's thread used, smoothed over `busy_window` seconds: a process
  at its CPU limit for that long is about to fall behind even while its queues look short.

Either one starts shedding a fraction of new INVITEs (`fraction`, ENTRY at first), steered every
sample toward a queueing delay of TARGET times the bound, like PIE's drop probability (RFC 8033):
up while the delay is over the target or growing, down while it is under it (and at once when
the loop has gone idle). The CPU
share never sheds everything by itself: at capacity the loop is busy all the time while it keeps
up, so only the queue can tell how much to shed; shedding all until the smoothed share fell
(1 s) admitted nothing for seconds at a time. All or nothing would
swing between a long queue (new INVITEs admitted until it is seen) and an empty one (every new
INVITE refused while it drains); steering keeps the queue, and so the wait for a 503, short, and
admits what the process can take. At fraction 0 every new INVITE is admitted again at once; the
steering stays armed for HOLD seconds more (so a load just over capacity is steered, not
re-detected from scratch every time), then the overload ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DELAY_RECOVERY = 0.5  # overload ends when the delay is under this fraction of its bound
BUSY_RECOVERY = 0.85  # and the smoothed busy share under this fraction of its bound
PROBE_RUN = 3  # probe sojourns in a row over the bound, the last not below the first: it grows
STUCK = 5.0  # a probe outstanding this many times the bound: overloaded without waiting
FALLING = 0.9  # a value under this fraction of where its streak started is falling
TARGET = 0.4  # the queueing delay steered to while shedding a share, times the bound
GAIN = 2.0  # fraction added per sample and second of delay over the target
TREND = 2.0  # fraction added per sample and second the delay grew since the last sample
# A queue that empties says little of the load: the calls just admitted bring their responses,
# ACKs and BYEs for a while after their INVITE, so a shrinking delay lowers the share only as
# GAIN says (falling by TREND as well swung the share from all to half and the queue from empty
# to 300 ms, at 6x capacity, every second). An idle loop (busy share under IDLE) says the load
# has gone (at capacity, even shedding everything, it stays over 0.85): the share then falls
# by RELEASE per sample at least.
IDLE = 0.7
RELEASE = 0.25
ENTRY = 0.5  # the share shed when a growing queue is first seen, before steering
HOLD = 1.0  # seconds of nothing shed and a short queue before the steering is disarmed


@dataclass(frozen=True)
class OverloadLimits:
    max_delay: float = 0.1  # seconds a message may wait (`--max-loop-lag`)
    max_busy: float = 0.95  # CPU share of the loop's thread (`--max-busy`)
    sustain: float = 0.2  # seconds the lag or backlog must stay over its bound, not falling
    busy_window: float = 1.0  # time constant of the smoothed busy share, seconds


@dataclass(frozen=True)
class Sample:
    now: float
    lag: float  # seconds the check callback ran late
    busy: float  # CPU seconds the loop's thread used since the previous sample
    elapsed: float  # seconds since the previous sample
    sojourns: tuple[float, ...] = ()  # of the UDP probes received since, oldest first
    outstanding: float = 0.0  # age of the oldest probe not yet received (0: none)
    # seconds the oldest message has waited in our own queues: bytes on TCP connections at our
    # read rate, datagrams in the UDP read-ahead queue (proxy/read_ahead.py)
    backlog: float = 0.0


class _Streak:
    """A value over its bound for `sustain` seconds and not lower than when it went over."""

    def __init__(self) -> None:
        self._since: float | None = None
        self._start = 0.0

    def over(self, now: float, value: float, bound: float, sustain: float) -> bool:
        if value <= bound:
            self._since = None
            return False
        if self._since is None:
            self._since, self._start = now, value
            return False
        if now - self._since < sustain:
            return False
        if value >= self._start * FALLING:
            return True
        # Falling (the backlog of one pause being worked off): judge the next period afresh.
        self._since, self._start = now, value
        return False


class OverloadDetector:
    def __init__(self, limits: OverloadLimits) -> None:
        self.limits = limits
        self.overloaded = False
        self.delay = 0.0  # the worst queueing delay of the last sample
        self.busy_share = 0.0  # of the last interval
        self.busy_smoothed = 0.0
        self.cause = ""
        self.fraction = 0.0  # of new INVITEs to shed: 0 admits all, 1 sheds all
        self._steered = 0.0  # the part of `fraction` the queueing delay asks for
        self._calm_since: float | None = None  # nothing shed, short queue, CPU under its mark
        self._sojourns: list[float] = []  # the last PROBE_RUN received
        self._queue = _Streak()

    def sample(self, sample: Sample) -> bool:
        """Take one sample; True when the overload state or the fraction shed changed."""
        limits = self.limits
        elapsed = max(sample.elapsed, 1e-6)
        self.busy_share = min(1.0, max(0.0, sample.busy / elapsed))
        weight = 1.0 - math.exp(-elapsed / limits.busy_window)
        self.busy_smoothed += weight * (self.busy_share - self.busy_smoothed)
        self._sojourns = [*self._sojourns, *sample.sojourns][-PROBE_RUN:]
        last_sojourn = self._sojourns[-1] if self._sojourns else 0.0
        queued = max(sample.lag, sample.backlog)
        previous, self.delay = self.delay, max(queued, last_sojourn, sample.outstanding)
        cause = self._cause(sample, queued)
        was = (self.overloaded, self.fraction)
        if not self.overloaded and cause:
            self.overloaded, self.cause = True, cause
            self._steered = ENTRY
        if self.overloaded:
            self._steer(previous)
        self.fraction = self._steered
        calm = (
            self.fraction <= 0.0
            and self.delay < limits.max_delay * TARGET
            and self.busy_smoothed < limits.max_busy * BUSY_RECOVERY
        )
        if not (self.overloaded and calm):
            self._calm_since = None
        elif self._calm_since is None:
            self._calm_since = sample.now
        elif sample.now - self._calm_since >= HOLD:
            self.overloaded, self.cause, self._calm_since = False, "", None
        return (self.overloaded, self.fraction) != was

    def _steer(self, previous: float) -> None:
        target = self.limits.max_delay * TARGET
        change = GAIN * (self.delay - target) + TREND * max(0.0, self.delay - previous)
        if change < 0.0 and self.busy_share < IDLE:
            change = min(change, -RELEASE)  # the load is gone: admit again at once
        self._steered = min(1.0, max(0.0, self._steered + change))

    def _cause(self, sample: Sample, queued: float) -> str:
        limits = self.limits
        queue_over = self._queue.over(sample.now, queued, limits.max_delay, limits.sustain)
        run = self._sojourns
        if (
            len(run) == PROBE_RUN
            and min(run) > limits.max_delay
            and run[-1] >= run[0]
        ) or sample.outstanding - sample.lag > STUCK * limits.max_delay:
            # a probe stuck in the queue while the loop itself ran on time; a probe late only
            # because the whole loop stalled (this check ran late by as much) is one pause
            return "udp queue"
        if queue_over:
            return "loop lag" if sample.lag >= sample.backlog else "backlog"
        if self.busy_smoothed > limits.max_busy:
            return "busy"
        return ""
