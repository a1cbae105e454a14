"""The recovery run: one system process, an overload, then at once a normal rate.

Issue 6: "At 2x the highest rate one worker holds, the calls it admits complete (0 failed among
admitted) and the rest get 503 within 50 ms; after the overload, the next 10 s at a normal rate
show 0 failures." The ladder starts each system afresh for every rate, so it cannot tell the
second part; this run keeps ONE started process (no restart) for two phases:

1. overload: a SIPp pair offers the overload rate (by default 2x the highest rate at which that
   system and transport had 0 failed calls in the ladder) for the ladder's duration;
2. recovery: as soon as phase 1's PBX side has ended (every call it placed answered, refused or
   timed out, so each overload call is counted in phase 1 and only there) and its trunk side
   has been stopped, a fresh pair offers the recovery rate (default 250 calls/s for 10 s): the
   trunk side on the same port (the system sends there), the PBX side on a new port, so late
   retransmissions of phase 1 reach neither of phase 2's counters.

"After the overload" is timed from when phase 1's PBX side had placed its last call (its first
-trace_stat row with every call created; both pairs write a row every 0.1 s, so the times below
are known to 0.1 s): phase 2 placed its first call `started_after_s` later (the time phase 1's
calls in flight took to end, plus about 0.5 s to swap the pair); `first_ok_after_s` is when
both sides had completed a phase-2 call, `last_failed_after_s` when either side counted its
last failed phase-2 call (None: none failed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.ladder import Load, Measured, RunResult, measure
from bench.sipp_stats import first_at, last_rise_at
from bench.systems import System
from tests.e2e.ports import free_port

STAT_PERIOD = "100ms"  # SIPp's -fd in both phases: the times are known to 0.1 s
HANDOVER_DRAIN_S = 0.2  # after phase 1's PBX side ended, before its trunk side is stopped
MAX_OVERLOAD = 10_000.0  # calls/s; twice Kamailio's 3,000 would be 6,000
DEFAULT_RATE = 250.0
DEFAULT_DURATION_S = 10.0


@dataclass(frozen=True)
class RecoveryPlan:
    """What one recovery run offers, and why that overload rate."""

    system: System
    overload: Load
    recovery: Load
    overload_why: str


@dataclass(frozen=True)
class RecoveryResult:
    """Both phases of one recovery run. `recovery.shed` counts the 503s of phase 2 alone and
    `recovery.gc_pauses_over_5ms` its slow collections (gc_max_pause_ms, a maximum over the
    process's life, is left out)."""

    system: str
    transport: str
    overload_why: str
    overload: RunResult
    recovery: RunResult
    started_after_s: float | None
    first_ok_after_s: float | None
    last_failed_after_s: float | None


def overload_rate(runs: Sequence[RunResult], system: str, transport: str) -> tuple[float, str]:
    """2x the highest ladder rate at which `system` had 0 failed calls over `transport` (2x the
    lowest rate tried if it held none), at most MAX_OVERLOAD; and the reason, for the notes."""
    own = [run for run in runs if (run.system, run.transport) == (system, transport)]
    if not own:
        raise ValueError(f"no ladder run of {system} over {transport}")
    held = [run.rate for run in own if run.failed == 0]
    if held:
        base, why = max(held), "the highest ladder rate with 0 failed calls"
    else:
        base, why = min(run.rate for run in own), "the lowest ladder rate (none had 0 failed)"
    rate = min(2 * base, MAX_OVERLOAD)
    capped = " (capped)" if rate < 2 * base else ""
    return rate, f"{rate:g}/s = 2 x {base:g}/s, {why}{capped}"


def run_recovery(plan: RecoveryPlan, workdir: Path, capture_limit: float = 0.0) -> RecoveryResult:
    """Start the system once, run both phases through it, stop it.

    `capture_limit`: UDP phases up to this rate are timed on the loopback interface."""
    workdir.mkdir(parents=True, exist_ok=True)
    system, transport = plan.system, plan.overload.transport
    trunk_port, pbx_port = free_port(), free_port()
    running = system.start(transport, trunk_port, pbx_port, workdir)
    try:
        over = measure(system, running, plan.overload, (trunk_port, pbx_port),
                       workdir / "overload", capture_latency=plan.overload.rate <= capture_limit,
                       drain_s=HANDOVER_DRAIN_S, stat_period=STAT_PERIOD)  # fmt: skip
        after = measure(system, running, plan.recovery, (trunk_port, free_port()),
                        workdir / "recovery", stat_period=STAT_PERIOD,
                        capture_latency=plan.recovery.rate <= capture_limit)  # fmt: skip
    finally:
        code = running.stop()
        if code not in (0, None) and running.process is not None:
            print(f"  {system.name} exited with {code} on SIGTERM", flush=True)
    return recovery_result(plan, over, after)


def _minus(later: int | None, earlier: int | None) -> int | None:
    return None if later is None or earlier is None else later - earlier


def _since(moment: float | None, origin: float | None) -> float | None:
    return None if moment is None or origin is None else moment - origin


def recovery_result(plan: RecoveryPlan, over: Measured, after: Measured) -> RecoveryResult:
    """The figures of a recovery run from its two phases' measurements (pure)."""
    ended = first_at(over.pbx.timeline, lambda c: c.created >= plan.overload.calls)
    began = first_at(after.pbx.timeline, lambda c: c.created > 0)
    firsts = [first_at(side.timeline, lambda c: c.successful > 0) for side in (after.pbx,
                                                                               after.trunk)]
    lasts = [last_rise_at(side.timeline, lambda c: c.failed) for side in (after.pbx, after.trunk)]
    last_failed = max((t for t in lasts if t is not None), default=None)
    first_ok = None if None in firsts else max(t for t in firsts if t is not None)
    second = after.result
    notes = [second.notes] if second.notes else []
    if ended is None:
        notes.append("phase 1 has no stat row with all its calls placed: times not known")
    p, t = after.pbx.counters, after.trunk.counters
    if p is not None and t is not None and t.created > p.created:
        notes.append(f"the trunk side saw {t.created - p.created} calls more than the PBX side "
                     "placed (late INVITEs of phase 1)")  # fmt: skip
    recovery = dataclasses.replace(
        second, shed=_minus(second.shed, over.result.shed), gc_max_pause_ms=None,
        gc_pauses_over_5ms=_minus(second.gc_pauses_over_5ms, over.result.gc_pauses_over_5ms),
        notes="; ".join(notes),
    )  # fmt: skip
    return RecoveryResult(
        system=plan.system.name, transport=plan.overload.transport,
        overload_why=plan.overload_why, overload=over.result, recovery=recovery,
        started_after_s=_since(began, ended), first_ok_after_s=_since(first_ok, ended),
        last_failed_after_s=_since(last_failed, ended),
    )  # fmt: skip
