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
from array import array
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


NEVER = math.nan  # an unset time in the unboxed state below


class _Streak:
    """A value over its bound for `sustain` seconds and not lower than when it went over.

    Its state (since when, from what value) is kept unboxed, like the detector's (below)."""

    def __init__(self) -> None:
        self._state = array("d", [NEVER, 0.0])  # since (NEVER: not over), start value

    def over(self, now: float, value: float, bound: float, sustain: float) -> bool:
        state = self._state
        if value <= bound:
            state[0] = NEVER
            return False
        since = state[0]
        if math.isnan(since):
            state[0], state[1] = now, value
            return False
        if now - since < sustain:
            return False
        if value >= state[1] * FALLING:
            return True
        # Falling (the backlog of one pause being worked off): judge the next period afresh.
        state[0], state[1] = now, value
        return False


# Slots of OverloadDetector._values.
_DELAY, _BUSY, _SMOOTHED, _FRACTION, _STEERED, _CALM_SINCE = range(6)


class OverloadDetector:
    """Its figures, re-made at every sample (20 a second) and kept until the next one, are
    unboxed in arrays (issue 7): a float kept across samples is served from the first pymalloc
    pool with room, during and after a flood one of the flood's, whose arena it then pins."""

    def __init__(self, limits: OverloadLimits) -> None:
        self.limits = limits
        self.overloaded = False
        self.cause = ""
        # delay, busy share, smoothed busy share, fraction, steered, calm since (NEVER: not)
        self._values = array("d", [0.0, 0.0, 0.0, 0.0, 0.0, NEVER])
        self._sojourns = array("d")  # the last PROBE_RUN received
        self._queue = _Streak()

    @property
    def delay(self) -> float:
        """The worst queueing delay of the last sample."""
        return self._values[_DELAY]

    @property
    def busy_share(self) -> float:
        """Of the last interval."""
        return self._values[_BUSY]

    @property
    def busy_smoothed(self) -> float:
        return self._values[_SMOOTHED]

    @property
    def fraction(self) -> float:
        """Of new INVITEs to shed: 0 admits all, 1 sheds all."""
        return self._values[_FRACTION]

    def sample(self, sample: Sample) -> bool:
        """Take one sample; True when the overload state or the fraction shed changed."""
        limits, values = self.limits, self._values
        elapsed = max(sample.elapsed, 1e-6)
        values[_BUSY] = min(1.0, max(0.0, sample.busy / elapsed))
        weight = 1.0 - math.exp(-elapsed / limits.busy_window)
        values[_SMOOTHED] += weight * (values[_BUSY] - values[_SMOOTHED])
        sojourns = self._sojourns
        sojourns.extend(sample.sojourns)
        del sojourns[:-PROBE_RUN]
        last_sojourn = sojourns[-1] if sojourns else 0.0
        queued = max(sample.lag, sample.backlog)
        previous = values[_DELAY]
        values[_DELAY] = max(queued, last_sojourn, sample.outstanding)
        cause = self._cause(sample, queued)
        was_overloaded, was_fraction = self.overloaded, values[_FRACTION]
        if not self.overloaded and cause:
            self.overloaded, self.cause = True, cause
            values[_STEERED] = ENTRY
        if self.overloaded:
            self._steer(previous)
        values[_FRACTION] = values[_STEERED]
        calm = (
            values[_FRACTION] <= 0.0
            and values[_DELAY] < limits.max_delay * TARGET
            and values[_SMOOTHED] < limits.max_busy * BUSY_RECOVERY
        )
        if not (self.overloaded and calm):
            values[_CALM_SINCE] = NEVER
        elif math.isnan(values[_CALM_SINCE]):
            values[_CALM_SINCE] = sample.now
        elif sample.now - values[_CALM_SINCE] >= HOLD:
            self.overloaded, self.cause, values[_CALM_SINCE] = False, "", NEVER
        return self.overloaded != was_overloaded or values[_FRACTION] != was_fraction

    def _steer(self, previous: float) -> None:
        values = self._values
        target = self.limits.max_delay * TARGET
        delay = values[_DELAY]
        change = GAIN * (delay - target) + TREND * max(0.0, delay - previous)
        if change < 0.0 and values[_BUSY] < IDLE:
            change = min(change, -RELEASE)  # the load is gone: admit again at once
        values[_STEERED] = min(1.0, max(0.0, values[_STEERED] + change))

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
