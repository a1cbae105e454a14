"""Benchmark: the same SIPp ladder through callerid-proxy and through Kamailio 5.6, one run.

    python3 bench/vs_kamailio.py [--rates 250,500,1000,2000,3000] [--duration 10]
        [--transports udp,tcp] [--workers 1,2] [--out bench/results] [--update-readme]
        [--recovery-overload RATE] [--recovery-rate 250] [--recovery-duration 10] [--no-recovery]
        [--python /usr/bin/python3.11 ...]

For every transport and rate it runs, each on fresh free loopback ports:
  - baseline: the PBX SIPp straight to the trunk SIPp (no proxy), for the latency added;
  - callerid-proxy (`python -m proxy run`, the code on PYTHONPATH) with bench/rules.yaml, once
    per --workers value (N > 1 only when `proxy run --help` lists --workers); with --python,
    once more per --workers value under each such interpreter, the proxy installed into a
    venv of it (bench/interpreters.py: which CPython runs it changes the CPU per call a lot);
  - Kamailio (bench/kamailio/kamailio.cfg, `-m 1024 -M 64`), the same job: tm, record_route,
    uac_replace_from with restore_mode auto, P-Asserted-Identity replaced, the same rules.
The PBX side (bench/scenarios/pbx_uac.xml) places rate x duration calls of 100 ms (INVITE, 100,
180, 200, ACK, BYE, 200) mixing the rules (bench/scenarios/calls.csv) and fails a call whose
responses do not carry its own From; the trunk side (bench/scenarios/trunk_uas.xml) fails a call
whose From or P-Asserted-Identity do not carry the expected number.

Then, unless --no-recovery, the recovery run (bench/recovery.py) for every transport and every
system but the baseline: ONE started process takes the overload rate (--recovery-overload, by
default 2x the highest ladder rate at which that system had 0 failed calls over that
transport) for --duration, then, once that PBX SIPp has ended, a fresh SIPp pair (trunk side on
the same port, PBX side on a new one) offers --recovery-rate for --recovery-duration through the
same process; for that second phase: attempted/ok/failed, 503s, retransmissions, INVITE->200
p99, and how long after the overload's last call the first call succeeded and the last failed.

Per run: calls attempted/ok/failed (PBX side), retransmissions (both sides), caller-ID check
failures (both sides' failed regexp/strcmp checks), INVITE->100 and INVITE->200 p50/p99 (SIPp
-trace_rtt; SIPp's clock ticks in 4 ms steps here), the p99 INVITE->200 added over the baseline,
CPU seconds per 1,000 calls (utime+stime from /proc of the system's process tree: every
Kamailio process), peak RSS (sum of VmHWM over the tree; Kamailio's shared memory is counted in
each process that touched it) and, for callerid-proxy, the max GC pause and the pauses over
5 ms (its /metrics, proxy/gc_monitor.py). Writes <out>/<UTC time>.md/.json/.png and
<out>/latest.md/.json/.png; --update-readme puts the tables in README.md's Performance section.
Loopback only; SIPp runs on the same cores. Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python3 bench/vs_kamailio.py` puts bench/, not the repo, first
    sys.path.insert(0, str(REPO))

from bench import capture, interpreters, recovery, report  # noqa: E402
from bench.ladder import Load, RunResult, run_one  # noqa: E402
from bench.recovery import RecoveryPlan, RecoveryResult, overload_rate, run_recovery  # noqa: E402
from bench.systems import (  # noqa: E402
    Baseline,
    CallerIdProxy,
    Kamailio,
    System,
    check_kamailio_config,
    find_kamailio,
    proxy_supports_workers,
)
from tests.e2e.sipp import SIPP  # noqa: E402

DEFAULT_RATES = (250.0, 500.0, 1000.0, 2000.0, 3000.0)
TRANSPORTS = ("udp", "tcp")
MAX_DURATION_S = 60.0
MAX_RATE = 10_000.0
SIPP_CLOCK_NOTE = (
    "Latencies marked (SIPp) are SIPp's -trace_rtt response times; SIPp reads a coarse clock "
    "(4 ms ticks on this kernel), so they are multiples of 4 ms and an added latency under 4 ms "
    "shows as 0."
)
SPEED_NOTE = (
    "The machine speed column is the CPU milliseconds of a fixed workload on each CPU just "
    "before and just after each run's calls (bench/machine_speed.py; lower is faster): this "
    "VM's two vCPUs often differ by 1.8x and which one is slow changes within minutes, so "
    "compare CPU per call only between rows of like speed."
)
CAPTURE_NOTE = (
    "Latencies with decimals were timed on the loopback interface (bench/capture.py: kernel "
    "timestamps of the PBX leg's first INVITE, 100 and 200 per call), for UDP runs up to {rate:g} "
    "calls/s; the capture costs the benchmark process a few microseconds per datagram."
)


def _list(text: str, kind: type[float] | type[int], what: str) -> list[Any]:
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of {what}: {text}") from error
    if not values or any(value <= 0 for value in values):
        raise argparse.ArgumentTypeError(f"{what} must be positive")
    return values


def _rates(text: str) -> list[float]:
    rates: list[float] = _list(text, float, "rates")
    if any(rate > MAX_RATE for rate in rates):
        raise argparse.ArgumentTypeError(f"rates are at most {MAX_RATE:g} calls/s")
    return rates


def _rate(text: str) -> float:
    rates = _rates(text)
    if len(rates) != 1:
        raise argparse.ArgumentTypeError(f"one rate, not a list: {text}")
    return rates[0]


def _workers(text: str) -> list[int]:
    return list(_list(text, int, "worker counts"))


def _duration(text: str) -> float:
    value = float(text)
    if not 0 < value <= MAX_DURATION_S:
        raise argparse.ArgumentTypeError(f"duration is 0-{MAX_DURATION_S:g} s")
    return value


def _transports(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    if not chosen or any(part not in TRANSPORTS for part in chosen):
        raise argparse.ArgumentTypeError(f"transports are {', '.join(TRANSPORTS)}; got {text!r}")
    return chosen


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", type=_rates, default=list(DEFAULT_RATES),
                        help="comma-separated offered calls/s (default 250,500,1000,2000,3000)")
    parser.add_argument("--duration", type=_duration, default=10.0,
                        help="seconds of calls per run (default 10)")
    parser.add_argument("--transports", type=_transports, default=list(TRANSPORTS),
                        help="udp, tcp or both (default udp,tcp: the ladder on each)")
    parser.add_argument("--workers", type=_workers, default=[1],
                        help="callerid-proxy worker counts to run, e.g. 1,2 (default 1)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results",
                        help="directory for the .md/.json/.png results (default bench/results)")
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between runs")
    parser.add_argument("--no-kamailio", action="store_true", help="run callerid-proxy only")
    parser.add_argument("--no-baseline", action="store_true", help="skip the no-proxy runs")
    parser.add_argument("--update-readme", action="store_true",
                        help="write the table into README.md between the performance markers")
    parser.add_argument("--capture-max-rate", type=float, default=None,
                        help="time the PBX leg on lo (kernel timestamps, needs root) for UDP "
                             "runs up to this rate; 0: SIPp's timers only (default: every "
                             "rate, so that INVITE->503 is timed where the proxy sheds)")
    parser.add_argument("--note", action="append", default=[],
                        help="a remark for the results, e.g. 'final run on a quiet machine'")
    parser.add_argument("--proxy-arg", action="append", default=[], metavar="ARG",
                        help="pass ARG to `proxy run` (repeat it; e.g. --proxy-arg=--max-busy "
                             "--proxy-arg=1)")
    parser.add_argument("--recovery-overload", type=_rate, metavar="RATE",
                        help="calls/s of the recovery run's overload phase (default: per system "
                             "and transport, 2x the highest ladder rate with 0 failed calls)")
    parser.add_argument("--recovery-rate", type=_rate, default=recovery.DEFAULT_RATE,
                        help=f"calls/s after the overload (default {recovery.DEFAULT_RATE:g})")
    parser.add_argument("--recovery-duration", type=_duration,
                        default=recovery.DEFAULT_DURATION_S,
                        help="seconds after the overload (default "
                             f"{recovery.DEFAULT_DURATION_S:g})")
    parser.add_argument("--no-recovery", action="store_true",
                        help="skip the recovery runs (overload, then a normal rate, one process)")
    parser.add_argument("--python", action="append", default=[], metavar="PATH",
                        help="also run callerid-proxy under this interpreter (repeat it): a "
                             "venv of it with the proxy installed by its pip (bench/"
                             "interpreters.py), one row per --workers value")
    parser.add_argument("--keep", type=Path,
                        help="keep SIPp and system logs here (default: a temporary directory)")
    return parser.parse_args(argv)  # fmt: skip


def systems(args: argparse.Namespace, remarks: list[str]) -> list[System]:
    chosen: list[System] = [] if args.no_baseline else [Baseline()]
    workers: list[int] = args.workers
    if any(n > 1 for n in workers) and not proxy_supports_workers():
        remarks.append("`proxy run` has no --workers option yet: ran one worker only.")
        workers = [1]
    supported = any(n > 1 for n in workers)
    for n in dict.fromkeys(workers):
        chosen.append(CallerIdProxy(n if supported else None, tuple(args.proxy_arg)))
    default = interpreters.this_interpreter()
    remarks.append(f"callerid-proxy rows without a (python ...) suffix ran under "
                   f"{default.executable} ({default.label}), the code on PYTHONPATH.")
    for python in args.python:
        chosen += other_interpreter(python, args, workers if supported else [None], remarks)
    if args.no_kamailio:
        return chosen
    binary = find_kamailio()
    if binary is None:
        print("kamailio is not installed: install it with `apt-get install kamailio` "
              "(Debian's package, 5.6); running callerid-proxy alone.", flush=True)  # fmt: skip
        remarks.append("Kamailio was not installed: callerid-proxy alone.")
        return chosen
    ok, output = check_kamailio_config(binary)
    if not ok:
        raise SystemExit(f"bench/kamailio/kamailio.cfg does not load:\n{output[-2000:]}")
    chosen.append(Kamailio(binary))
    return chosen


def other_interpreter(
    python: str, args: argparse.Namespace, workers: Sequence[int | None], remarks: list[str]
) -> list[System]:
    """callerid-proxy under `python`, installed into a venv of it (kept for the whole run in
    args.python_dir); none, with a remark saying why, when that cannot be done."""
    directory = Path(tempfile.mkdtemp(prefix="venv-", dir=args.python_dir))
    print(f"installing callerid-proxy for {python} in {directory} ...", flush=True)
    try:
        installed = interpreters.install(python, REPO, directory)
        found = interpreters.probe(str(installed))
    except interpreters.InterpreterError as error:
        print(f"  cannot: {error}", file=sys.stderr, flush=True)
        remarks.append(f"{python}: not run ({str(error)[:200]}).")
        return []
    remarks.append(f"callerid-proxy rows marked ({found.label}) ran under {python} "
                   "(in a venv of it, the proxy installed by its pip from this checkout's "
                   "files: the core compiled with that interpreter's headers and flags).")
    return [CallerIdProxy(n, tuple(args.proxy_arg), python=str(installed), label=found.label)
            for n in dict.fromkeys(workers)]  # fmt: skip


def _version(command: list[str]) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    except OSError:
        return "?"
    text = (result.stdout + result.stderr).strip().splitlines()
    return next((line.strip() for line in text if line.strip()), "?")


def metadata(argv: Sequence[str], remarks: list[str]) -> dict[str, Any]:
    commit = _version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}",
        "python": sys.version.split()[0],
        "sipp": _version([SIPP or "sipp", "-v"]),
        "kamailio": _version([find_kamailio() or "kamailio", "-v"]),
        "proxy_code": f"{os.environ.get('PYTHONPATH') or REPO} (git {commit})",
        "command": "python3 bench/vs_kamailio.py " + " ".join(argv),
        "remarks": remarks,
    }


def shown(value: float | int | None, unit: str = "", digits: int = 2, missing: str = "?") -> str:
    """A figure for the progress lines: rounded, or `missing` when it could not be measured."""
    return missing if value is None else f"{round(value, digits):g}{unit}"


def print_run(run: RunResult) -> None:
    show = shown
    print(
        f"  {run.transport} {run.rate:>6g}/s {run.system:<18} attempted {show(run.attempted)} "
        f"ok {show(run.ok)} failed {show(run.failed)} (503 shed {show(run.shed)}, admitted "
        f"{show(run.failed_admitted)}, 503 p99 {show(run.invite_503_p99_ms, ' ms')}) "
        f"checks {show(run.check_failures)} "
        f"retrans {show(run.retransmissions)} inv200 p99 {show(run.invite_200_p99_ms, ' ms')} "
        f"cpu/1000 calls {show(run.cpu_s_per_1000_calls, ' s')} "
        f"gc max {show(run.gc_max_pause_ms, ' ms', 1)}"
        + (f"  [{run.notes}]" if run.notes else ""),
        flush=True,
    )


def capture_rate(args: argparse.Namespace, remarks: list[str]) -> float:
    """The highest rate whose UDP runs are timed on lo (0: none)."""
    limit = float(args.capture_max_rate if args.capture_max_rate is not None else
                  max([*args.rates, args.recovery_overload or 0.0, 2 * max(args.rates)]))
    if limit <= 0 or "udp" not in args.transports:
        return 0.0
    if not capture.available():
        remarks.append("No CAP_NET_RAW: latencies from SIPp's timers only.")
        return 0.0
    remarks.append(CAPTURE_NOTE.format(rate=limit))
    return limit


def ladder(args: argparse.Namespace, chosen: Sequence[System], workdir: Path) -> list[RunResult]:
    runs: list[RunResult] = []
    for transport in args.transports:
        for rate in args.rates:
            for system in chosen:
                if runs:
                    time.sleep(args.pause)
                name = f"{transport}-{rate:g}-{system.name.replace(' ', '')}"
                run = run_one(system, transport, rate, args.duration, workdir / name,
                              capture_latency=rate <= args.capture_limit)
                print_run(run)
                runs.append(run)
    return runs


def print_recovery(result: RecoveryResult) -> None:
    def show(value: float | int | None, digits: int = 1) -> str:
        return shown(value, digits=digits, missing="-")

    over, after = result.overload, result.recovery
    last = result.last_failed_after_s
    last_failed = "none" if last is None else f"+{show(last)} s"
    print(
        f"  {result.transport} recovery {result.system:<18} overload {over.rate:g}/s: attempted "
        f"{show(over.attempted)} ok {show(over.ok)} 503 shed {show(over.shed)} failed among "
        f"admitted {show(over.failed_admitted)}; then {after.rate:g}/s from "
        f"+{show(result.started_after_s)} s: attempted {show(after.attempted)} ok "
        f"{show(after.ok)} failed {show(after.failed)} 503s {show(after.shed)} retrans "
        f"{show(after.retransmissions)} inv200 p99 {show(after.invite_200_p99_ms, 2)} ms, "
        f"first ok +{show(result.first_ok_after_s)} s, last failed {last_failed}"
        + (f"  [{after.notes}]" if after.notes else ""),
        flush=True,
    )


def recovery_plans(
    args: argparse.Namespace, chosen: Sequence[System], runs: Sequence[RunResult]
) -> list[RecoveryPlan]:
    """One recovery run per transport and system but the baseline."""
    plans = []
    for transport in args.transports:
        for system in chosen:
            if isinstance(system, Baseline):
                continue
            rate, why = overload_rate(runs, system.name, transport)
            if args.recovery_overload is not None:
                rate, why = args.recovery_overload, f"{args.recovery_overload:g}/s (given)"
            plans.append(RecoveryPlan(
                system, Load(transport, rate, args.duration),
                Load(transport, args.recovery_rate, args.recovery_duration), why,
            ))  # fmt: skip
    return plans


def recovery_runs(
    args: argparse.Namespace, chosen: Sequence[System], runs: Sequence[RunResult], workdir: Path
) -> list[RecoveryResult]:
    results: list[RecoveryResult] = []
    if args.no_recovery:
        return results
    for plan in recovery_plans(args, chosen, runs):
        time.sleep(args.pause)
        name = f"recovery-{plan.overload.transport}-{plan.system.name.replace(' ', '')}"
        result = run_recovery(plan, workdir / name, args.capture_limit)
        print_recovery(result)
        results.append(result)
    return results


def measure_all(
    args: argparse.Namespace, chosen: Sequence[System], workdir: Path
) -> tuple[list[RunResult], list[RecoveryResult]]:
    runs = ladder(args, chosen, workdir)
    return runs, recovery_runs(args, chosen, runs, workdir)


def write_results(
    out: Path, runs: Sequence[RunResult], meta: dict[str, Any],
    recovered: Sequence[RecoveryResult] = (),
) -> Path:  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    markdown = out / f"{stamp}.md"
    markdown.write_text(report.markdown(runs, meta, recovered))
    report.write_json(out / f"{stamp}.json", runs, meta, recovered)
    try:
        report.plot(out / f"{stamp}.png", runs)
    except ImportError:
        print("matplotlib is missing (pip install -e '.[bench]'): no plot", file=sys.stderr)
    for suffix in (".md", ".json", ".png"):
        if (out / f"{stamp}{suffix}").exists():
            shutil.copyfile(out / f"{stamp}{suffix}", out / f"latest{suffix}")
    return markdown


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if SIPP is None:
        print("sipp is not on PATH: apt-get install sip-tester", file=sys.stderr)
        return 2
    remarks = [*args.note, SIPP_CLOCK_NOTE, SPEED_NOTE]
    args.capture_limit = capture_rate(args, remarks)
    with tempfile.TemporaryDirectory(prefix="vs_kamailio-python-") as python_dir:
        args.python_dir = python_dir  # the venvs of --python, for the whole run
        return run(args, argv, remarks)


def run(args: argparse.Namespace, argv: Sequence[str], remarks: list[str]) -> int:
    chosen = systems(args, remarks)
    meta = metadata(argv, remarks)
    print(f"{meta['machine']}; systems: {', '.join(s.name for s in chosen)}; "
          f"code: {meta['proxy_code']}", flush=True)  # fmt: skip
    try:
        if args.keep is not None:
            runs, recovered = measure_all(args, chosen, args.keep)
        else:
            with tempfile.TemporaryDirectory(prefix="vs_kamailio-") as directory:
                runs, recovered = measure_all(args, chosen, Path(directory))
    except KeyboardInterrupt:
        print("interrupted; every system started was stopped", file=sys.stderr)
        return 130
    markdown = write_results(args.out, runs, meta, recovered)
    tables = report.tables(runs, recovered)
    print(f"\n{tables}\n\nwrote {markdown} (and .json, .png, latest.*)")
    if args.update_readme and not report.update_readme(REPO / "README.md", tables, meta):
        print("README.md has no performance table markers", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
