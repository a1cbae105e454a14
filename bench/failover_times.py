"""Benchmark: how fast the proxy fails over between trunks, against issue 8's targets.

    python3 bench/failover_times.py [--runs 3]

Runs the flows of tests/e2e/test_trunk_availability.py (real proxy, real SIPp on loopback; see
tests/e2e/trunk_availability.py) `--runs` times and prints, per measure, the median and the worst
run next to its target. Times come from the SIPp message logs (one wall clock for every side).
Asserts nothing: a busy machine shows in the numbers, not as a failure.

Flows:
- silent primary (bound, never answers; probes every 0.5 s, down after 3 unanswered): the first
  call waits the 2 s no-answer timeout then completes on the secondary; once /status shows the
  primary down, the next call goes straight to the secondary;
- primary answering 503; primary UDP port closed (ICMP port unreachable, no-answer timeout 20 s);
- both trunk ports closed with probes on (0.5 s, down after 2): the PBX gets 503; then a SIPp
  answering OPTIONS and INVITE starts on the primary's port: up after 2 answered probes, and the
  next call is its.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python3 bench/failover_times.py` puts bench/, not the repo, first
    sys.path.insert(0, str(REPO))

from tests.e2e.conftest import EXAMPLE_RULES  # noqa: E402
from tests.e2e.sipp import SIPP  # noqa: E402
from tests.e2e.trunk_availability import (  # noqa: E402
    AllDownTimes,
    FailoverTimes,
    SilentPrimaryTimes,
    all_down_then_primary_back,
    refusing_primary,
    silent_primary,
    unreachable_primary,
)

SILENT_PROBES = ["--probe-interval", "0.5", "--probe-failures", "3"]
DOWN_PROBES = ["--probe-interval", "0.5", "--probe-failures", "2"]
RECOVERY_SUCCESSES = 2
MAX_RUNS = 20


@dataclass(frozen=True)
class Measure:
    name: str
    target: str  # the target, or what bounds it
    target_s: float | None  # None: informational


@dataclass(frozen=True)
class Run:
    silent: SilentPrimaryTimes
    refused: FailoverTimes
    icmp: FailoverTimes
    down: AllDownTimes


MEASURES: list[tuple[Measure, Callable[[Run], float]]] = [
    (Measure("silent primary: 1st call INVITE->200 (via secondary)", "<= 2.5 s", 2.5),
     lambda r: r.silent.first_call),
    (Measure("silent primary: marked down (launch -> /status)", "3 probes x 0.5 s + 2 s",
             None), lambda r: r.silent.primary_down_after),
    (Measure("after down: INVITE->200 minus trunk's own answer", "<= 100 ms", 0.1),
     lambda r: r.silent.second_call - r.silent.second_trunk_answer),
    (Measure("503 from primary -> INVITE at secondary", "<= 100 ms", 0.1),
     lambda r: r.refused.failover),
    (Measure("503 failover: call INVITE->200", "-", None), lambda r: r.refused.call),
    (Measure("ICMP unreachable: PBX INVITE -> INVITE at secondary", "<= 100 ms", 0.1),
     lambda r: r.icmp.failover),
    (Measure("all trunks down: INVITE->503", "<= 100 ms", 0.1), lambda r: r.down.refused),
    (Measure("all down: both marked down (launch -> /status)", "2 probes (ICMP)", None),
     lambda r: r.down.all_down_after),
    (Measure("recovery: primary up (its SIPp start -> /status)", "2 probes x 0.5 s", None),
     lambda r: r.down.primary_up_after),
    (Measure("recovery: call on the primary INVITE->200", "-", None),
     lambda r: r.down.call_on_primary),
]


def one_run(workdir: Path, rules: Path) -> Run:
    return Run(
        silent=silent_primary(workdir, rules, SILENT_PROBES),
        refused=refusing_primary(workdir, rules, "503"),
        icmp=unreachable_primary(workdir, rules, no_answer_timeout_s=20.0),
        down=all_down_then_primary_back(workdir, rules, DOWN_PROBES, RECOVERY_SUCCESSES),
    )


def seconds(value: float) -> str:
    return f"{value * 1e3:8.1f} ms" if value < 1.0 else f"{value:8.3f} s "


def table(runs: Sequence[Run]) -> str:
    lines = [f"{'measure':<56} {'target':<24} {'median':>11} {'worst':>11}  verdict"]
    for measure, get in MEASURES:
        values = [get(run) for run in runs]
        worst = max(values)
        verdict = "-" if measure.target_s is None else (
            "met" if worst <= measure.target_s else "MISSED")  # fmt: skip
        lines.append(f"{measure.name:<56} {measure.target:<24} "
                     f"{seconds(statistics.median(values)):>11} {seconds(worst):>11}  {verdict}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help=f"1..{MAX_RUNS} (default 3)")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= MAX_RUNS:
        parser.error(f"--runs: 1..{MAX_RUNS}")
    if SIPP is None:
        print("sipp is not on PATH (Debian: apt-get install sip-tester)", file=sys.stderr)
        return 2
    runs = []
    with tempfile.TemporaryDirectory(prefix="failover-times-") as tmp:
        rules = Path(tmp) / "rules.yaml"
        rules.write_text(EXAMPLE_RULES)
        for n in range(args.runs):
            workdir = Path(tmp) / f"run{n + 1}"
            workdir.mkdir()
            runs.append(one_run(workdir, rules))
            print(f"run {n + 1}/{args.runs} done", file=sys.stderr)
    print(table(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
