"""Benchmark: what the asyncio glue adds to a call, without sockets or other processes.

    python3 bench/bench_glue.py [--calls 3000] [--rounds 3]

The calls of bench/bench_calls.py (INVITE, 100, 180, 200, ACK, BYE, 200) go once straight into
the sans-IO core (receive + datagrams_to_send + events_to_handle + get_timer, as the glue calls
them) and once through a real `ProxyServer` on a running loop (`on_message`: the core, its
output sent through the UDP endpoint, its events to the metrics and the log, the core's timer
re-armed) whose UDP transport only counts datagrams. The difference per call is the glue's own
Python cost; the kernel's (sendto, recvfrom, waking the peer) comes on top in a live run.

The core costs 20 times the glue, so that difference drowns in the core's noise on a busy
machine; `replay` then times the glue alone: the same calls' core output (datagrams, events,
timer deadlines), recorded once, replayed by a stand-in core that does no work. CPU time of this
process (process_time), best of `--rounds`. Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python3 bench/bench_glue.py` puts bench/, not the repo, first
    sys.path.insert(0, str(REPO))

from bench.bench_calls import PBX, TRUNK, answer, in_dialog, invite  # noqa: E402
from bench.bench_parser import make_core  # noqa: E402
from proxy.active_rules import ActiveRules  # noqa: E402
from proxy.server import ProxyServer, ServerSettings  # noqa: E402
from proxy.sip.addresses import Source  # noqa: E402
from proxy.sip.core import ProxyCore  # noqa: E402
from proxy.transport import UdpEndpoint  # noqa: E402

Deliver = Callable[[bytes, Source], list[bytes]]


class CountingTransport:
    """A UDP transport that keeps the last datagrams instead of sending them."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5060) if name == "sockname" else default


def core_only(core: ProxyCore, loop_time: Callable[[], float]) -> Deliver:
    def deliver(data: bytes, source: Source) -> list[bytes]:
        core.receive(data, source, loop_time())
        out = [o.data for o in core.datagrams_to_send()]
        core.events_to_handle()
        core.get_timer()
        return out

    return deliver


def through_server(server: ProxyServer, transport: CountingTransport) -> Deliver:
    def deliver(data: bytes, source: Source) -> list[bytes]:
        transport.sent.clear()
        server.on_message(data, source)
        return list(transport.sent)

    return deliver


def one_call(deliver: Deliver, n: int) -> None:
    out = deliver(invite(n), PBX)
    forwarded = next(d for d in out if d.startswith(b"INVITE"))
    deliver(answer(forwarded, 100, "Trying"), TRUNK)
    deliver(answer(forwarded, 180, "Ringing"), TRUNK)
    ok = deliver(answer(forwarded, 200, "OK", contact=True), TRUNK)[0]
    deliver(in_dialog("ACK", ok, n, 4711), PBX)
    bye = deliver(in_dialog("BYE", ok, n, 4712), PBX)[0]
    deliver(answer(bye, 200, "OK"), TRUNK)


def timed(deliver: Deliver, first: int, calls: int) -> float:
    """CPU seconds per call (GC off while timed: both paths leave the same garbage)."""
    gc.collect()
    gc.disable()
    try:
        started = time.process_time()
        for n in range(first, first + calls):
            one_call(deliver, n)
        return (time.process_time() - started) / calls
    finally:
        gc.enable()


def make_server(directory: Path) -> tuple[ProxyServer, CountingTransport]:
    core = make_core()
    rules = ActiveRules.load(REPO / "rules" / "example.yaml")
    settings = ServerSettings(listen=(("127.0.0.1", 5060),), pid_file=directory / "p.pid")
    server = ProxyServer(core.config, rules, settings)
    server.core = core  # bench_calls' core and fixed policy, for the same work as core_only
    transport = CountingTransport()
    endpoint = UdpEndpoint(server)
    endpoint.connection_made(transport)  # type: ignore[arg-type]
    server._udp.append(("127.0.0.1", endpoint))
    return server, transport


async def measure(calls: int, rounds: int) -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    best_core, best_server = float("inf"), float("inf")
    with tempfile.TemporaryDirectory() as directory:
        for index in range(rounds):
            first = index * 2 * calls
            best_core = min(best_core, timed(core_only(make_core(), loop.time), first, calls))
            server, transport = make_server(Path(directory))
            best_server = min(best_server, timed(through_server(server, transport),
                                                 first + calls, calls))  # fmt: skip
            if server._timer is not None:
                server._timer.cancel()
    return best_core, best_server


class ReplayCore:
    """Gives back, message by message, what the real core gave for the same calls."""

    def __init__(self, real: ProxyCore, recorded: list[tuple[list[Any], list[Any], Any]]) -> None:
        self.config = real.config
        self.counters = real.counters
        self.overloaded = False
        self._recorded = recorded
        self._next: tuple[list[Any], list[Any], Any] = ([], [], None)
        self._index = 0

    def receive(self, data: bytes, source: Source, now: float) -> None:
        self._next = self._recorded[self._index]
        self._index += 1

    def datagrams_to_send(self) -> list[Any]:
        out, self._next = self._next[0], ([], self._next[1], self._next[2])
        return out

    def events_to_handle(self) -> list[Any]:
        return self._next[1]

    def get_timer(self) -> Any:
        return self._next[2]

    def set_overloaded(self, overloaded: bool) -> None:
        self.overloaded = overloaded


def record(calls: int, loop_time: Callable[[], float]) -> list[tuple[list[Any], list[Any], Any]]:
    core = make_core()
    recorded: list[tuple[list[Any], list[Any], Any]] = []

    def deliver(data: bytes, source: Source) -> list[bytes]:
        core.receive(data, source, loop_time())
        out = core.datagrams_to_send()
        recorded.append((out, core.events_to_handle(), core.get_timer()))
        return [o.data for o in out]

    for n in range(calls):
        one_call(deliver, n)
    return recorded


async def replay(calls: int, rounds: int) -> float:
    loop = asyncio.get_running_loop()
    recorded = record(calls, loop.time)
    best = float("inf")
    with tempfile.TemporaryDirectory() as directory:
        for _ in range(rounds):
            server, transport = make_server(Path(directory))
            replaying = ReplayCore(server.core, recorded)
            server.core = replaying  # type: ignore[assignment]
            deliver = through_server(server, transport)
            messages = [(b"", PBX)] * len(recorded)
            gc.collect()
            gc.disable()
            try:
                started = time.process_time()
                for data, source in messages:
                    deliver(data, source)
                best = min(best, (time.process_time() - started) / calls)
            finally:
                gc.enable()
            if server._timer is not None:
                server._timer.cancel()
    return best


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        run: Callable[[Any], Any] = asyncio.run
    else:
        run = uvloop.run
    calls, rounds = max(1, min(args.calls, 100_000)), max(1, min(args.rounds, 10))
    core, server = run(measure(calls, rounds))
    glue = run(replay(calls, rounds * 2))
    print(f"core alone        {core * 1e6:8.1f} us CPU per call")
    print(f"through the glue  {server * 1e6:8.1f} us CPU per call")
    print(f"difference        {(server - core) * 1e6:8.1f} us CPU per call")
    print(f"glue alone        {glue * 1e6:8.1f} us CPU per call (core output replayed; Python "
          "only: the kernel's send/receive comes on top live)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
