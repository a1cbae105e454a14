"""One benchmark run (a system, a transport, a rate, a duration) and its numbers."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from bench import capture, machine_speed, proc_stats
from bench.sipp_run import (
    CALLS_FILE,
    RTD_NAMES,
    UAC_SCENARIO,
    UAS_SCENARIO,
    SippInstance,
    SippOutcome,
    SippSpec,
)
from bench.sipp_stats import Latency, latencies
from bench.systems import Baseline, Running, System, gc_figures, shed_count
from tests.e2e.ports import free_port

UAC_MARGIN_S = 40  # a SIPp UAC may run this much longer than its calls take to place
DRAIN_S = 1.0  # after the UAC ends, time for the trunk side's last messages


@dataclass(frozen=True)
class RunResult:
    """Numbers of one run; None where a figure could not be measured (see `notes`)."""

    system: str
    transport: str
    rate: float
    duration_s: float
    attempted: int | None
    ok: int | None
    failed: int | None
    """attempted - ok, where ok = calls successful on both sides (not finished counts too)"""
    pbx_failed: int | None
    trunk_failed: int | None
    retransmissions: int | None
    check_failures: int | None
    invite_100_p50_ms: float | None
    invite_100_p99_ms: float | None
    invite_200_p50_ms: float | None
    invite_200_p99_ms: float | None
    cpu_s: float | None
    cpu_s_per_1000_calls: float | None
    peak_rss_mb: float | None
    processes: int | None
    gc_max_pause_ms: float | None
    gc_pauses_over_5ms: int | None
    latency_source: str
    """"capture" (kernel timestamps on lo, bench/capture.py) or "sipp" (4 ms ticks)"""
    wall_s: float
    notes: str
    # New INVITEs the proxy answered 503 itself (overload shedding, its /metrics): among the
    # failed calls, those refused at once rather than lost; failed - shed failed once admitted.
    shed: int | None = None
    # Distinct calls whose INVITE got a 503 (loopback capture only): `shed` counts 503s, and a
    # retransmitted INVITE shed again counts twice, which hid admitted calls that failed.
    shed_calls: int | None = None
    # INVITE->503 of the shed calls, p50/p99 ms (loopback capture only: the target is 50 ms).
    invite_503_p50_ms: float | None = None
    invite_503_p99_ms: float | None = None
    # The machine's speed on each CPU just before and just after the calls
    # (bench/machine_speed.py: CPU ms of a fixed workload, lower is faster): CPU figures of rows
    # compare only at like speeds.
    speed_before_ms: tuple[float, ...] | None = None
    speed_after_ms: tuple[float, ...] | None = None

    @property
    def failed_pct(self) -> float | None:
        if not self.attempted or self.failed is None:
            return None
        return 100.0 * self.failed / self.attempted

    @property
    def failed_admitted(self) -> int | None:
        """Failed calls the proxy had admitted (not answered 503 at once): the target is 0.
        Failed less the calls shed: counted per call where the capture saw them, else the
        proxy's count of 503s (over TCP nothing is retransmitted, so each is one call)."""
        if self.failed is None or self.shed is None:
            return None
        refused = self.shed if self.shed_calls is None else self.shed_calls
        return max(0, self.failed - refused)


def baseline_calls(source: Path, target: Path) -> Path:
    """The calls file for the baseline: with no proxy the trunk sees the PBX's own From, so
    each call expects its extension as the number and "Extension N" as the display name."""
    lines = source.read_text().splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        if line.strip():
            user, destination, *_ = line.split(";")
            out.append(f"{user};{destination};{user};Extension {user}")
    target.write_text("\n".join(out) + "\n")
    return target


@dataclass(frozen=True)
class Load:
    """What a SIPp pair offers: `rate` calls/s for `duration_s` seconds over `transport`."""

    transport: str
    rate: float
    duration_s: float

    @property
    def calls(self) -> int:
        return max(1, round(self.rate * self.duration_s))


@dataclass(frozen=True)
class Measured:
    """A run's numbers and what its two SIPp instances left (their stat timelines)."""

    result: RunResult
    pbx: SippOutcome
    trunk: SippOutcome


def run_one(
    system: System, transport: str, rate: float, duration_s: float, workdir: Path,
    capture_latency: bool = False,
) -> RunResult:  # fmt: skip
    """Start `system`, place rate x duration calls through it, collect, stop it.

    `capture_latency` (UDP only, needs CAP_NET_RAW) times the PBX leg on the loopback interface
    instead of with SIPp's coarse clock."""
    workdir.mkdir(parents=True, exist_ok=True)
    trunk_port, pbx_port = free_port(), free_port()
    inject = CALLS_FILE
    if isinstance(system, Baseline):
        inject = baseline_calls(CALLS_FILE, workdir / "calls-baseline.csv")
    running = system.start(transport, trunk_port, pbx_port, workdir)
    try:
        return measure(system, running, Load(transport, rate, duration_s),
                       (trunk_port, pbx_port), workdir, inject=inject,
                       capture_latency=capture_latency).result  # fmt: skip
    finally:
        code = running.stop()
        if code not in (0, None) and running.process is not None:
            print(f"  {system.name} exited with {code} on SIGTERM", flush=True)


def measure(
    system: System, running: Running, load: Load, ports: tuple[int, int], workdir: Path, *,
    inject: Path = CALLS_FILE, capture_latency: bool = False, drain_s: float = DRAIN_S,
    stat_period: str = "1",
) -> Measured:  # fmt: skip
    """Place `load` through the already running system with a new SIPp pair: the trunk side
    on ports[0] (where the system sends), the PBX side on ports[1]; the pair's files go to
    `workdir`. The system is left running. `stat_period`: SIPp's -fd (stat rows' spacing)."""
    trunk_port, pbx_port = ports
    transport, rate, duration_s = load.transport, load.rate, load.duration_s
    uac_timeout = int(duration_s) + UAC_MARGIN_S
    uas = SippInstance(
        SippSpec("trunk", UAS_SCENARIO, trunk_port, transport, timeout_s=uac_timeout + 30,
                 expected_host=running.expected_host, stat_period=stat_period),
        workdir,
    )  # fmt: skip
    uac = SippInstance(
        SippSpec("pbx", UAC_SCENARIO, pbx_port, transport, timeout_s=uac_timeout,
                 remote=running.remote, calls=load.calls, rate=rate, inject=inject,
                 stat_period=stat_period),
        workdir,
    )  # fmt: skip
    notes: list[str] = list(running.notes)
    captured: capture.LoopbackCapture | None = None
    uas.start()
    try:
        uas.wait_bound()
        if capture_latency and transport == "udp":
            captured = capture.LoopbackCapture(pbx_port)
            captured.start()
        speed_before = machine_speed.speed_by_cpu()
        before = proc_stats.sample(running.root_pid) if running.root_pid else None
        started = time.perf_counter()
        uac.start()
        if not uac.wait(uac_timeout + 15):
            notes.append("PBX SIPp did not finish in time")
            uac.quit()
        wall_s = time.perf_counter() - started
        time.sleep(drain_s)
        after = proc_stats.sample(running.root_pid) if running.root_pid else None
        speed_after = machine_speed.speed_by_cpu()
        metrics = running.metrics()
    finally:
        uas.quit()
        uac.quit()
        pbx_leg = captured.stop().milliseconds() if captured is not None else None
    if not running.alive():
        notes.append(f"{system.name} died during the run")
    pbx, trunk = uac.outcome(), uas.outcome()
    lat = latencies(pbx.rtt_texts, RTD_NAMES)
    if pbx_leg is not None:
        lat = {name: Latency.of(pbx_leg[name]) for name in (*RTD_NAMES, "invite_503")}
    result = _result(system, transport, rate, duration_s, wall_s, pbx, trunk,
                     (before, after), metrics, notes, (lat, "capture" if pbx_leg else "sipp"))
    if pbx_leg is not None and result.shed is not None:
        result = dataclasses.replace(result, shed_calls=len(pbx_leg["invite_503"]))
    result = dataclasses.replace(result, speed_before_ms=speed_before, speed_after_ms=speed_after)
    return Measured(result, pbx, trunk)


def _result(
    system: System, transport: str, rate: float, duration_s: float, wall_s: float,
    pbx: SippOutcome, trunk: SippOutcome,
    samples: tuple[proc_stats.ProcSample | None, proc_stats.ProcSample | None],
    metrics: str | None, notes: list[str], timing: tuple[dict[str, Latency], str],
) -> RunResult:  # fmt: skip
    if pbx.counters is None:
        notes.append(f"no PBX SIPp stats: {pbx.errors_tail[-200:]}")
    if trunk.counters is None:
        notes.append("no trunk SIPp stats")
    p, t = pbx.counters, trunk.counters
    lat, latency_source = timing
    before, after = samples
    cpu_s = after.cpu_s - before.cpu_s if before and after else None
    gc = gc_figures(metrics) if metrics else None
    attempted = p.created if p else None
    # A failed check does not stop SIPp's call flow (the call is counted failed at its end), so
    # a call the trunk side failed may look successful on the PBX side: a call is ok on both.
    ok = min(p.successful, t.successful) if p and t else None
    return RunResult(
        system=system.name, transport=transport, rate=rate, duration_s=duration_s,
        attempted=attempted, ok=ok,
        failed=attempted - ok if attempted is not None and ok is not None else None,
        pbx_failed=p.failed if p else None, trunk_failed=t.failed if t else None,
        retransmissions=p.retransmissions + t.retransmissions if p and t else None,
        check_failures=p.check_failures + t.check_failures if p and t else None,
        invite_100_p50_ms=lat["invite_100"].p50_ms, invite_100_p99_ms=lat["invite_100"].p99_ms,
        invite_200_p50_ms=lat["invite_200"].p50_ms, invite_200_p99_ms=lat["invite_200"].p99_ms,
        cpu_s=cpu_s,
        cpu_s_per_1000_calls=cpu_s * 1000 / attempted if cpu_s is not None and attempted else None,
        peak_rss_mb=after.hwm_kb / 1024 if after else None,
        processes=len(after.pids) if after else None,
        gc_max_pause_ms=gc.max_pause_ms if gc else None,
        gc_pauses_over_5ms=gc.slow_pauses if gc else None,
        latency_source=latency_source, wall_s=wall_s, notes="; ".join(notes),
        shed=shed_count(metrics) if metrics else None,
        invite_503_p50_ms=lat["invite_503"].p50_ms if "invite_503" in lat else None,
        invite_503_p99_ms=lat["invite_503"].p99_ms if "invite_503" in lat else None,
    )  # fmt: skip
