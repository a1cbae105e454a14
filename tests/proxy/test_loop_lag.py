"""The glue measures event-loop lag with one periodic callback and tells the core: a loop blocked
past `max_loop_lag` sheds new INVITEs, and admission resumes once the lag is gone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from proxy.gc_monitor import GcPacer
from proxy.loop_health import next_beat
from proxy.server import ServerSettings
from proxy.sip.addresses import Source
from proxy.sip.core import ProxyCore
from tests.proxy.example_server import example_server


class DrivenClock:
    """The loop as the overload check sees it, with its clock and its one timer driven by the
    test: a check runs when the test says, so "late" is exact and no other load on the host
    can move a check (the real-time version of this test failed once beside a CPU-heavy job:
    its short sleep outlasted the interval and put an on-time check between two stalls)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.now = loop.time()
        self.due: tuple[float, Callable[[], None]] | None = None

    def time(self) -> float:
        return self.now

    def call_at(
        self, when: float, callback: Callable[[], None], *, context: object = None
    ) -> asyncio.TimerHandle:
        assert self.due is None, "one periodic check at a time"
        self.due = (when, callback)
        return self.loop.call_at(when + 3600.0, lambda: None)  # a real handle, never due

    def run_check(self, late: float = 0.0) -> float:
        """Run the scheduled check `late` seconds after it was due; its lateness as measured."""
        assert self.due is not None
        when, callback = self.due
        self.due = None
        self.now = when + late
        callback()
        return self.now - when


async def _lag_and_recover(tmp_path: Path) -> list[bool]:
    settings = ServerSettings(
        listen=(("127.0.0.1", 5060),), pid_file=tmp_path / "p.pid", max_loop_lag=0.1,
        lag_interval=0.02,
    )
    server = example_server(settings)
    clock = DrivenClock(server._loop)
    server._loop = clock  # type: ignore[assignment]
    server.cpu_clock = lambda: 0.0  # the loop's thread idle: only the lag can overload
    seen = [server.core.overloaded]
    server._schedule_lag_check()
    clock.run_check()
    assert server.loop_lag == 0.0
    clock.run_check(late=0.3)  # one stall (a GC pass, the scheduler): not yet overload
    assert server.loop_lag == pytest.approx(0.3)
    seen.append(server.core.overloaded)
    clock.run_check(late=0.3)  # stalled again at the next check: overloaded
    seen.append(server.core.overloaded)
    checks = 0
    while server.core.overloaded and checks < 10:  # checks on time again: 0.2 s of them
        clock.run_check()
        checks += 1
    assert server.loop_lag == 0.0
    seen.append(server.core.overloaded)
    server._loop = clock.loop
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


@pytest.mark.parametrize(
    ("now", "interval", "beat"),
    [
        (0.0, 0.05, 0.05),
        (0.01, 0.05, 0.05),
        (0.024, 0.05, 0.05),
        (0.026, 0.05, 0.1),  # under half an interval to the next beat: the one after
        (0.07, 0.05, 0.1),
        (0.05, 0.05, 0.1),  # a job run on its beat: the next beat
        (123.456, 0.25, 123.75),
        (7.999, 2.0, 10.0),
    ],
)
def test_next_beat(now: float, interval: float, beat: float) -> None:
    assert next_beat(now, interval) == pytest.approx(beat)
    assert interval / 2 <= next_beat(now, interval) - now < 1.5 * interval + 1e-9


async def _deadlines(tmp_path: Path) -> tuple[float, float, float, float]:
    settings = ServerSettings(listen=(("127.0.0.1", 5060),), pid_file=tmp_path / "p.pid")
    server = example_server(settings)
    pacer = GcPacer(interval=settings.lag_interval)
    loop = asyncio.get_running_loop()
    server._schedule_lag_check()
    await asyncio.sleep(0.013)  # started at another moment than the check
    pacer.start(loop)
    try:
        assert server._lag_handle is not None and pacer._handle is not None
        first = (server._lag_handle.when(), pacer._handle.when())
        await asyncio.sleep(0.12)  # both ran twice or so, each rescheduling itself
        assert server._lag_handle is not None and pacer._handle is not None
        return (*first, server._lag_handle.when(), pacer._handle.when())
    finally:
        pacer.stop()
        await server.stop()


def test_the_overload_check_and_the_gc_pacer_share_one_wakeup(tmp_path: Path) -> None:
    check, pacer, check_later, pacer_later = asyncio.run(_deadlines(tmp_path))
    # started at different moments, they first wait for beats at most one apart...
    assert abs(check - pacer) == pytest.approx(0.0) or abs(check - pacer) == pytest.approx(0.05)
    # ...and once each has run, they keep the same one: an idle loop wakes once for both
    assert check_later == pacer_later > max(check, pacer)


async def _collection_and_check_order() -> list[str]:
    loop = asyncio.get_running_loop()
    order: list[str] = []

    def collect(generation: int) -> int:
        order.append("collect")
        return 0

    pacer = GcPacer(interval=0.05, collect=collect)
    pacer.start(loop)
    try:
        assert pacer._handle is not None
        # the overload check on the same beat, its timer made after the pacer's
        loop.call_at(pacer._handle.when(), order.append, "check")
        await asyncio.sleep(0.08)
        return order[:2]
    finally:
        pacer.stop()


def test_the_paced_collection_runs_after_the_check_of_its_beat() -> None:
    # so the check measures the loop's lateness without the collection in it
    assert asyncio.run(_collection_and_check_order()) == ["check", "collect"]
