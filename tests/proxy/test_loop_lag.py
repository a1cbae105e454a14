"""The glue measures event-loop lag with one periodic callback and tells the core: a loop blocked
past `max_loop_lag` sheds new INVITEs, and admission resumes once the lag is gone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from proxy.server import ServerSettings
from proxy.sip.addresses import Source
from proxy.sip.core import ProxyCore
from tests.proxy.example_server import example_server


async def _lag_and_recover(tmp_path: Path) -> list[bool]:
    settings = ServerSettings(
        listen=(("127.0.0.1", 5060),), pid_file=tmp_path / "p.pid", max_loop_lag=0.1,
        lag_interval=0.02,
    )
    server = example_server(settings)
    seen = [server.core.overloaded]
    server._schedule_lag_check()
    await asyncio.sleep(0.05)
    time.sleep(0.3)  # one stall (a GC pass, the scheduler): not yet overload
    await asyncio.sleep(0.01)
    seen.append(server.core.overloaded)
    time.sleep(0.3)  # stalled again at the next check: overloaded
    await asyncio.sleep(0.01)
    seen.append(server.core.overloaded)
    assert server.status()["loop_lag"] > 0.1
    await asyncio.sleep(0.2)  # checks on time again
    seen.append(server.core.overloaded)
    await server.stop()
    return seen


def test_loop_lag_sets_and_clears_overload(tmp_path: Path) -> None:
    assert asyncio.run(_lag_and_recover(tmp_path)) == [False, False, True, False]


class SlowReceive:
    """The core with its `receive` replaced (a compiled core's methods cannot be patched);
    everything else, reads and writes, goes to the core."""

    def __init__(self, core: ProxyCore, receive: Callable[[bytes, Source, float], None]) -> None:
        object.__setattr__(self, "_core", core)
        object.__setattr__(self, "receive", receive)

    def __getattr__(self, name: str) -> object:
        return getattr(self._core, name)

    def __setattr__(self, name: str, value: object) -> None:
        setattr(self._core, name, value)


async def _busy_and_recover(tmp_path: Path) -> list[bool]:
    """Datagrams handled one by one never make the loop late, yet at 100% of the time spent on
    them the kernel queue behind grows: the busy share starts shedding too (a share, which the
    queueing delay then steers). The busy share is the loop
    thread's CPU time; the work here sleeps, so the thread's clock is a fake that counts the
    time spent in that work, and its smoothing window is short for a short test."""
    settings = ServerSettings(
        listen=(("127.0.0.1", 5060),), pid_file=tmp_path / "p.pid", max_loop_lag=0.1,
        lag_interval=0.02, max_busy=0.9, busy_window=0.05,
    )
    server = example_server(settings)
    worked = [0.0]

    def work(data: bytes, source: Source, now: float) -> None:
        started = time.perf_counter()
        time.sleep(0.003)
        worked[0] += time.perf_counter() - started

    server.cpu_clock = lambda: worked[0]
    server.core = SlowReceive(server.core, work)  # type: ignore[assignment]
    source = Source("udp", "127.0.0.1", 5070)
    seen = [server.core.overloaded]
    server._schedule_lag_check()
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:  # back to back, each message 3 ms, the loop never late
        server.on_message(b"x", source)
        await asyncio.sleep(0)
    seen.append(server.overload.overloaded)
    assert server.status()["loop_lag"] < 0.1 and server.busy_share > 0.9
    await asyncio.sleep(0.4)  # idle: no queue, the share steered to 0: every INVITE admitted
    seen.append(server.core.overloaded or server.overload.fraction > 0.0)
    await server.stop()
    return seen


def test_a_loop_busy_all_the_time_sheds_though_never_late(tmp_path: Path) -> None:
    assert asyncio.run(_busy_and_recover(tmp_path)) == [False, True, False]
