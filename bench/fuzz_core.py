"""Fuzz the whole sans-IO core for a long, bounded run (issue 7: 1,000,000 inputs, 0 exceptions).

    python3 bench/fuzz_core.py [--count 1000000] [--seed 4475] [--max-seconds 3600]

The generators of tests/proxy/sip/fuzz_support.py (the CI-sized run is test_fuzz_core.py):
mutated RFC 4475 messages (tests/data/rfc4475), mutated answers to requests the core forwarded,
random bytes; from the PBX, the trunk and an outsider; datagrams and streams cut anywhere.
Prints inputs/s as it goes and, at the end, the count, exceptions and bad outputs (each with
the input index: `random.Random(input_seed(seed, index))` replays it). Exit status 1 if any.
Stops at --count inputs or after --max-seconds, whichever comes first.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence

from tests.proxy.sip.fuzz_support import FuzzRun

REPORT_EVERY = 50_000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=4475)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args(argv)
    logging.getLogger("callerid_proxy").setLevel(logging.CRITICAL)  # refusals are expected
    run = FuzzRun(seed=args.seed)
    started = time.monotonic()
    deadline = started + args.max_seconds
    for index in range(args.count):
        run.one(index)
        if (index + 1) % REPORT_EVERY == 0:
            elapsed = time.monotonic() - started
            print(
                f"{index + 1} inputs, {(index + 1) / elapsed:.0f} inputs/s, "
                f"exceptions={len(run.exceptions)}, bad outputs={len(run.bad_outputs)}",
                flush=True,
            )
        if time.monotonic() > deadline:
            print(f"stopped by --max-seconds {args.max_seconds:g}")
            break
    elapsed = time.monotonic() - started
    print(
        f"done: seed {args.seed}, {run.inputs} inputs in {elapsed:.0f} s "
        f"({run.inputs / elapsed:.0f} inputs/s), exceptions={len(run.exceptions)}, "
        f"bad outputs={len(run.bad_outputs)}"
    )
    for line in (run.exceptions + run.bad_outputs)[:20]:
        print(" ", line)
    return 1 if run.exceptions or run.bad_outputs else 0


if __name__ == "__main__":
    raise SystemExit(main())
