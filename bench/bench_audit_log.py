"""Benchmark: the per-call caller-ID audit line, as the live proxy writes it.

    python3 bench/bench_audit_log.py [--calls 100000] [--rounds 3] [--format text|json]
                                     [--budget 0] [--per-tick 25]

Logging is set up as `callerid-proxy run --log-level info --audit-log-budget 0` does it
(`logs.configure` then `log_summary.install`), writing to a file; `EventLog.handle` gets one
`CallerIdDecided` per call, and every `--per-tick` calls the loop tick comes (the proxy's
50 ms overload check; 25 calls per tick is 500 calls/s) and writes what is pending. CPU time of
this process (process_time) per call, best of `--rounds`. Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python3 bench/bench_audit_log.py` puts bench/, not the repo
    sys.path.insert(0, str(REPO))

from proxy import log_summary, logs  # noqa: E402
from proxy.metrics import EventLog  # noqa: E402
from proxy.sip.addresses import Target  # noqa: E402
from proxy.sip.events import CallerIdDecided  # noqa: E402

TRUNK = Target("udp", "127.0.0.1", 5080)


def decisions(count: int) -> list[CallerIdDecided]:
    return [
        CallerIdDecided(
            f"{index}-3122@127.0.0.1", "1002", "00442079460000", "+442071234567", "ACME UK",
            "step 2: advanced rule #1 (destination_prefix '0044', line 17) matches",
            "95e1625f631d", TRUNK, "step 2", False,
        )
        for index in range(count)
    ]


def one_round(events: Sequence[CallerIdDecided], args: argparse.Namespace, path: Path) -> float:
    """CPU seconds for `events`, one `handle` per call, a tick every `args.per_tick` calls."""
    per_tick: int = args.per_tick
    log = EventLog()
    tick = getattr(log, "flush", None)  # absent before the audit writer
    with path.open("w", encoding="utf-8") as stream:
        root = logging.getLogger()
        saved = list(root.handlers), root.level
        try:
            logs.configure("info", args.format, stream, audit_budget=args.budget)
            summary = log_summary.install()
            started = time.process_time()
            for index, event in enumerate(events, 1):
                log.handle([event])
                if tick is not None and index % per_tick == 0:
                    tick()
            if tick is not None:
                tick()
            spent = time.process_time() - started
            summary.detach()
        finally:
            root.handlers[:] = saved[0]
            root.setLevel(saved[1])
    return spent


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    events = decisions(args.calls)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.log"
        best = min(one_round(events, args, path) for _ in range(args.rounds))
        lines = len(path.read_text(encoding="utf-8").splitlines())
    print(f"{args.calls} audit decisions, format {args.format}, budget {args.budget}, "
          f"tick every {args.per_tick}: {best / args.calls * 1e6:.2f} us CPU per call "
          f"(best of {args.rounds}); {lines} lines written")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--budget", type=int, default=0)
    parser.add_argument("--per-tick", type=int, default=25)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main()
