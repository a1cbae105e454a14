"""Issue 7 in-process: the silent-trunk flood through the sans-IO core on a fake clock, and where
the memory it leaves behind lives.

    python3 bench/flood_memory.py [--calls 20000] [--rate 2000] [--tracemalloc 25] [--mallocstats]

Drives `ProxyCore` (one trunk, like bench/hostile.py's proxy) with `--calls` INVITEs at `--rate`
a second from the PBX to a trunk that never answers, fires every timer until every transaction
has ended, then runs what proxy/memory_trim.py runs (the core's `shrink()`, a full collection,
`malloc_trim(0)`) and
prints: RSS before / at peak / after, split into glibc's [heap] and anonymous mappings
(/proc/self/smaps: pymalloc's 1 MiB arenas are anonymous mmaps), pymalloc's arena count
(`sys._debugmallocstats`), the objects alive by type (gc.get_objects) and, with --tracemalloc N,
the N source lines that allocated what is still alive. Asserts nothing.
"""

from __future__ import annotations

import argparse
import collections
import gc
import logging
import os
import re
import sys
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.mallocstats import mallocstats  # noqa: E402
from proxy.memory_trim import _malloc_trim  # noqa: E402
from proxy.metrics import EventLog, EventMetrics  # noqa: E402
from proxy.sip.events import Event  # noqa: E402
from proxy.sip.policy import CallerIdDecision  # noqa: E402
from tests.proxy.sip.support import (  # noqa: E402
    PBX_SOURCE,
    Clocked,
    FixedPolicy,
    invite,
    make_core,
)


class QuietPolicy(FixedPolicy):
    """FixedPolicy without its record of calls (which would keep two strings per call)."""

    def decide(self, user: str, destination: str) -> CallerIdDecision:
        return CallerIdDecision(self.number, self.name, "test", "v1")

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def rss_kb() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE_KB


def smaps_kb() -> dict[str, int]:
    """Resident KB: glibc's [heap], anonymous mappings, everything else."""
    out = {"heap": 0, "anon": 0, "other": 0}
    kind = "other"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            kind = "heap" if line.endswith("[heap]") else "anon" if len(fields) == 5 else "other"
        elif fields[0] == "Rss:":
            out[kind] += int(fields[1])
    return out


def arenas(text: str) -> str:
    """pymalloc's arena counters."""
    wanted = ("arenas allocated current", "arenas highwater", "bytes in allocated blocks",
              "bytes in available blocks")
    lines = (line.strip("# ").split("=") for line in text.splitlines())
    return "; ".join(f"{name.strip()} {value.strip()}" for name, *rest in lines
                     for value in rest if name.strip().startswith(wanted))


def pools(text: str) -> dict[int, tuple[int, int, int]]:
    """Per size class: pools, blocks in use, blocks free."""
    table = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 5 and all(f.isdigit() for f in fields):
            table[int(fields[1])] = (int(fields[2]), int(fields[3]), int(fields[4]))
    return table


def by_type() -> collections.Counter[str]:
    return collections.Counter(type(obj).__qualname__ for obj in gc.get_objects())


def report(label: str) -> None:
    parts = smaps_kb()
    print(f"{label:>6}: RSS {rss_kb() / 1024:6.1f} MB (heap {parts['heap'] / 1024:.1f}, "
          f"anon {parts['anon'] / 1024:.1f}, other {parts['other'] / 1024:.1f})")


class Glue:
    """What proxy/server.py does with the core's events: metrics per event, then the log."""

    def __init__(self) -> None:
        self.metrics = EventMetrics()
        self.log = EventLog()
        logging.disable(logging.WARNING)  # no handler here: lines would go to stderr

    def handle(self, events: list[Event]) -> None:
        for event in events:
            self.metrics.observe(event)
        self.log.handle(events)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="N")
    parser.add_argument("--mallocstats", action="store_true")
    parser.add_argument("--no-shrink", action="store_true", help="skip the core's shrink()")
    parser.add_argument("--glue", action="store_true",
                        help="hand the events to the proxy's EventMetrics and EventLog too")
    args = parser.parse_args(argv)
    trim = _malloc_trim()
    clocked = Clocked(make_core(QuietPolicy()))
    glue = Glue() if args.glue else None
    for n in range(50):  # first-use allocations (caches, interned names) out of the count
        clocked.receive(invite(branch=f"z9hG4bK-warm-{n}", call_id=f"warm-{n}@pbx"), PBX_SOURCE)
    clocked.advance(clocked.now + 200.0)
    clocked.fired.clear()
    events = clocked.core.events_to_handle()
    if glue is not None:
        glue.handle(events)
    gc.collect()
    if trim:
        trim()
    if args.tracemalloc:
        tracemalloc.start(8)
    types_before = by_type()
    report("idle")
    idle_stats = mallocstats()
    if args.mallocstats:
        print("        " + arenas(idle_stats))
    step = 1.0 / args.rate
    peak = 0
    for n in range(args.calls):
        request = invite(branch=f"z9hG4bK-silent-{n}", call_id=f"silent-{n}@pbx")
        clocked.receive(request, PBX_SOURCE)
        clocked.advance(clocked.now + step)
        clocked.fired.clear()
        events = clocked.core.events_to_handle()  # the glue takes them (EventLog, metrics)
        if glue is not None:
            glue.handle(events)
        if n % 1000 == 0:
            peak = max(peak, rss_kb())
    print(f"  peak: RSS {max(peak, rss_kb()) / 1024:6.1f} MB, "
          f"{clocked.core.transaction_count} transactions")
    clocked.advance(clocked.now + 200.0)
    clocked.fired.clear()
    events = clocked.core.events_to_handle()
    if glue is not None:
        glue.handle(events)
    print(f"  done: {clocked.core.transaction_count} transactions, "
          f"{clocked.core.dialog_count} dialogs, timer {clocked.core.get_timer()}")
    del events  # the last batch: thousands of TimedOut
    report("ended")
    if not args.no_shrink:
        clocked.core.shrink()  # what proxy/memory_trim.py's pass does first
    gc.collect()
    if trim:
        trim()
    report("trim")
    if args.mallocstats:
        stats_after = mallocstats()
        print("        " + arenas(stats_after))
        idle_pools = pools(idle_stats)
        for size, (count, used, free) in sorted(pools(stats_after).items()):
            was = idle_pools.get(size, (0, 0, 0))
            if count > was[0]:
                print(f"        size {size:4d}: pools {was[0]} -> {count}, "
                      f"blocks used {was[1]} -> {used}, free {free}")
    grown = by_type() - types_before
    print("  objects alive by type, more than idle:", dict(grown.most_common(12)))
    if args.tracemalloc:
        snapshot = tracemalloc.take_snapshot()
        stats = snapshot.statistics("lineno")
        total = sum(s.size for s in stats)
        print(f"  tracemalloc: {total / 1024:.0f} KB traced alive")
        for stat in stats[: args.tracemalloc]:
            print(f"    {stat.size / 1024:8.1f} KB {stat.count:7d} {stat.traceback[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
