"""Benchmark: whole calls through the sans-IO core with a fake clock, and what the GC does.

    python3 bench/bench_calls.py [--calls 5000] [--gc-policy live|default] [--profile] [--top 25]

Each call is INVITE, 100 (hop), 180, 200, ACK, BYE, 200 between a fake PBX and a fake trunk; the
clock moves 1 ms per call and every timer due is fired, so transactions also end. Prints the cost
per message kind (microseconds), the time spent in garbage collections (`gc.callbacks`, per
generation), the objects the cyclic collector had to free, and optionally a cProfile listing.
By default the live proxy's GC policy is applied once the core exists (`apply_gc_policy`: frozen
start-up objects, its thresholds), so the pauses are those production would see; `--calls 10000`
is 10 s at 1,000 calls/s. Asserts nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python3 bench/bench_calls.py` puts bench/, not the repo, first
    sys.path.insert(0, str(REPO))

from bench.bench_parser import make_core  # noqa: E402  (the same core and fixed policy)
from proxy.gc_monitor import PACE_S, THRESHOLDS, GcPacer, apply_gc_policy  # noqa: E402
from proxy.sip.addresses import Source  # noqa: E402
from proxy.sip.core import ProxyCore  # noqa: E402

PBX = Source("udp", "127.0.0.1", 5070)
TRUNK = Source("udp", "127.0.0.1", 5080)
SDP = (
    "v=0\r\no=- 1 1 IN IP4 10.0.0.10\r\ns=-\r\nc=IN IP4 10.0.0.10\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 8\r\n"
)


def invite(n: int) -> bytes:
    return (
        f"INVITE sip:0044207946{n % 10000:04d}@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;rport;branch=z9hG4bKPj{n:08x}\r\n"
        f'From: "Alice" <sip:1001@pbx.example.com>;tag=pbx-{n}\r\n'
        f"To: <sip:0044207946{n % 10000:04d}@127.0.0.1>\r\n"
        f"Contact: <sip:1001@127.0.0.1:5070;ob>\r\n"
        f"Call-ID: bench-{n}@pbx.example.com\r\nCSeq: 4711 INVITE\r\nMax-Forwards: 70\r\n"
        f"P-Preferred-Identity: <sip:1001@pbx.example.com>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n{SDP}"
    ).encode()


def answer(request: bytes, status: int, reason: str, *, contact: bool = False) -> bytes:
    """What the UAS answers: Via, From, To (+tag), Call-ID, CSeq, Record-Route copied."""
    lines = [f"SIP/2.0 {status} {reason}"]
    for line in request.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]:
        lower = line.lower()
        if lower.startswith(("via:", "from:", "call-id:", "cseq:", "record-route:")):
            lines.append(line)
        elif lower.startswith("to:"):
            lines.append(line if "tag=" in line else line + ";tag=trunk-1")
    if contact:
        lines.append("Contact: <sip:callee@127.0.0.1:5080>")
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode("latin-1")


def in_dialog(method: str, ok: bytes, n: int, cseq: int) -> bytes:
    """The PBX's ACK or BYE for call `n`, routed by the Record-Route the 200 OK carried."""
    head = ok.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    routes = [
        line.split(":", 1)[1].strip() for line in head if line.lower().startswith("record-route:")
    ]
    to = next(line.split(":", 1)[1].strip() for line in head if line.lower().startswith("to:"))
    route = "".join(f"Route: {r}\r\n" for r in routes)
    return (
        f"{method} sip:callee@127.0.0.1:5080 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;rport;branch=z9hG4bK{method}{n:08x}\r\n{route}"
        f'From: "Alice" <sip:1001@pbx.example.com>;tag=pbx-{n}\r\nTo: {to}\r\n'
        f"Call-ID: bench-{n}@pbx.example.com\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


class Driver:
    """Plays PBX and trunk; times each `receive` by message kind."""

    def __init__(self, core: ProxyCore) -> None:
        self.core = core
        self.now = 0.0
        self.pacer: GcPacer | None = None  # the live proxy's paced young collections
        self._paced_at = 0.0
        self.spent: dict[str, float] = defaultdict(float)
        self.messages: dict[str, int] = defaultdict(int)

    def send(self, kind: str, data: bytes, source: Source) -> list[bytes]:
        started = time.process_time()
        self.core.receive(data, source, self.now)
        out = [o.data for o in self.core.datagrams_to_send()]
        self.core.events_to_handle()  # taken as the glue does (kept, they would pile up)
        self.spent[kind] += time.process_time() - started
        self.messages[kind] += 1
        return out

    def fire_timers(self) -> None:
        started = time.process_time()
        while (deadline := self.core.get_timer()) is not None and deadline <= self.now:
            self.core.handle_timer(self.now)
            self.core.datagrams_to_send()
            self.core.events_to_handle()
        self.spent["timers"] += time.process_time() - started

    def call(self, n: int) -> None:
        out = self.send("INVITE", invite(n), PBX)
        forwarded = next(d for d in out if d.startswith(b"INVITE"))
        self.send("100", answer(forwarded, 100, "Trying"), TRUNK)
        self.send("180", answer(forwarded, 180, "Ringing"), TRUNK)
        ok = self.send("200 INVITE", answer(forwarded, 200, "OK", contact=True), TRUNK)[0]
        self.send("ACK", in_dialog("ACK", ok, n, 4711), PBX)
        bye = self.send("BYE", in_dialog("BYE", ok, n, 4712), PBX)[0]
        self.send("200 BYE", answer(bye, 200, "OK"), TRUNK)
        self.now += 0.001
        self.fire_timers()
        if self.pacer is not None and self.now - self._paced_at >= self.pacer.interval:
            self._paced_at = self.now  # the live loop's 50 ms tick, on the fake clock
            self.pacer.tick()

    def drain(self) -> None:
        self.now += 3600.0
        self.fire_timers()


def run(calls: int, ready: Callable[[Driver], None] | None = None) -> Driver:
    """`calls` calls through a new core; `ready` is called once it exists (the live proxy's GC
    policy is applied after start-up)."""
    driver = Driver(make_core())
    if ready is not None:
        ready(driver)
    for n in range(calls):
        driver.call(n)
    driver.drain()
    return driver


def _thresholds(text: str) -> tuple[int, int, int]:
    first, second, third = (int(part) for part in text.split(","))
    return first, second, third


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--profile", action="store_true", help="print a cProfile listing")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--gc-off", action="store_true",
                        help="time with the cyclic collector disabled (CPU of the core alone)")
    parser.add_argument("--gc-policy", choices=("live", "default"), default="live",
                        help="live: the proxy's freeze and thresholds (default); default: Python's")
    parser.add_argument("--thresholds", type=_thresholds, default=THRESHOLDS,
                        help="the live policy's gc.set_threshold, e.g. 20000,20,50")
    parser.add_argument("--pace", type=float, default=PACE_S,
                        help="paced young collections, every PACE s of the fake clock (0: off)")
    args = parser.parse_args(argv)
    run(200)  # warm up

    pauses: dict[int, list[float]] = defaultdict(list)
    started_at: list[float] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started_at.append(time.process_time())
        elif started_at:
            pauses[int(info["generation"])].append(time.process_time() - started_at.pop())

    def ready(driver: Driver) -> None:  # the core exists: the live proxy's policy, timed
        if args.gc_policy == "live":
            apply_gc_policy(args.thresholds)
            paced = args.pace > 0 and not args.gc_off  # --gc-off: no collection at all
            driver.pacer = GcPacer(args.pace) if paced else None
        else:
            gc.collect()
        gc.callbacks.append(on_gc)

    if args.gc_off:
        gc.disable()
    started = time.process_time()
    driver = run(args.calls, ready)
    elapsed = time.process_time() - started
    gc.callbacks.remove(on_gc)
    gc.disable()
    freed = gc.collect()
    gc.enable()

    print(f"{args.calls} calls, {elapsed / args.calls * 1e6:.0f} us CPU per call (driver included)")
    for kind, spent in driver.spent.items():
        count = driver.messages.get(kind) or args.calls
        print(f"  {kind:<12} {spent / count * 1e6:8.1f} us")
    every = [pause for generation in pauses.values() for pause in generation]
    paced = args.gc_policy == "live" and args.pace and not args.gc_off
    pace = f", paced every {args.pace * 1e3:g} ms" if paced else ""
    print(f"gc ({args.gc_policy} policy, thresholds {gc.get_threshold()}{pace}): {len(every)} "
          f"collections, {sum(every) * 1e3:.1f} ms in total, longest "
          f"{max(every, default=0.0) * 1e3:.2f} ms, {sum(p > 0.005 for p in every)} over 5 ms; "
          f"{freed} objects left for the cyclic collector")
    for generation, times in sorted(pauses.items()):
        print(f"  generation {generation}: {len(times)} collections, longest "
              f"{max(times) * 1e3:.2f} ms, mean {sum(times) / len(times) * 1e3:.2f} ms")
    print(f"transactions left: {driver.core.transaction_count}")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run(args.calls)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
