"""Issue 7: which objects made during the silent-trunk flood still pin pymalloc arenas in the
live proxy, a minute after.

    python3 bench/arena_pins.py [--settle 60] [--scale 1] [--no-apply] [--trace] [--out DIR]

Runs the proxy as bench/hostile.py does (10,000-user rules, PBX and trunk on loopback) with
bench/arena_hook/sitecustomize.py loaded into it, marks the idle state (SIGUSR1: pymalloc's
statistics and the ids of the objects alive), runs hostile.py's silent-trunk attack with its
probe calls, waits `--settle` seconds, then asks the proxy for its report (SIGUSR2): pymalloc's
arena counts at idle and now, and the small objects made since idle and still alive, placed in
their pools and arenas (arenas numbered from the idle count up are the flood's), with their
reprs and referrers. `--trace` uses tracemalloc instead (allocation sites of every small block,
objects or not); it slows the proxy ~10x, so most of the flood is shed, and with shedding off
(`--proxy-args "--max-loop-lag 60 --max-busy 1"`) the flood's own transactions are still alive
after the settle time, even at `--scale 0.1`: useful for where blocks come from, not for the
aftermath. Loopback only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import hostile  # noqa: E402
from tests.e2e.ports import wait_until  # noqa: E402
from tests.proxy.hostile_support import running_proxy  # noqa: E402

HOOK = REPO / "bench" / "arena_hook"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settle", type=float, default=60.0)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--no-apply", action="store_true", help="no reload during the attack")
    parser.add_argument("--trace", action="store_true",
                        help="tracemalloc's allocation sites (slow: most of the flood is shed)")
    parser.add_argument("--proxy-args", default="",
                        help="more flags for the proxy, e.g. '--max-loop-lag 60 --max-busy 1' "
                        "so that --trace's slower proxy still admits the flood")
    parser.add_argument("--out", type=Path, help="directory for the report (default: printed)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="arena-pins-") as tmp:
        out = args.out or Path(tmp) / "out"
        out.mkdir(parents=True, exist_ok=True)
        rules = Path(tmp) / "rules.yaml"
        rules.write_text(hostile.rules_text(args.users))
        env = {**os.environ, "PYTHONPATH": str(HOOK), "ARENA_PINS_OUT": str(out),
               "ARENA_PINS_MODE": "trace" if args.trace else "ids"}
        extra = args.proxy_args.split()
        with running_proxy(Path(tmp), extra, rules=rules, env=env) as proxy:
            time.sleep(1.0)
            proxy.process.send_signal(signal.SIGUSR1)
            wait_until(lambda: (out / "idle_mallocstats.txt").exists(), 30.0, "the idle mark")
            time.sleep(1.0)
            row = hostile.measure(proxy, "silent-trunk", hostile.silent_trunk, args.scale,
                                  args.settle, apply=not args.no_apply)
            proxy.process.send_signal(signal.SIGUSR2)
            wait_until(lambda: (out / "report.txt").exists(), 300.0, "the report")
            time.sleep(0.5)
            hostile.print_table([row])
            print((out / "report.txt").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
