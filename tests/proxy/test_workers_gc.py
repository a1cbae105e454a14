"""A `--workers` supervisor shows each worker's GC pauses at /metrics (issue 6: the two-worker
benchmark rows had none), read from what each worker's /status reports."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from bench.bench_calls import PBX, invite
from bench.bench_glue import make_server
from bench.systems import gc_figures
from proxy.workers import Worker, WorkersGc


def worker(index: int, max_pause_s: float, slow: int, inbox: socket.socket) -> Worker:
    return Worker(index=index, pid_file=Path(f"/nonexistent/w{index}.pid"), command=[],
                  inbox=inbox, admin=None, gc_max_pause_s=max_pause_s,
                  gc_slow_pauses=slow)  # fmt: skip


def test_the_supervisor_metrics_carry_every_workers_gc_pauses() -> None:
    left, right = socket.socketpair()
    try:
        registry = CollectorRegistry()
        registry.register(WorkersGc([worker(0, 0.0021, 0, left), worker(1, 0.0063, 2, right)]))
        text = generate_latest(registry).decode()
    finally:
        left.close()
        right.close()
    assert 'callerid_proxy_gc_pause_max_seconds{worker="1"} 0.0063' in text
    assert 'callerid_proxy_gc_slow_pauses_total{worker="1"} 2.0' in text
    figures = gc_figures(text)  # what the benchmark reads: the worst worker, the sum
    assert figures is not None
    assert (round(figures.max_pause_ms, 1), figures.slow_pauses) == (6.3, 2)


async def _status_keys(directory: Path) -> tuple[object, object, object]:
    server, _ = make_server(directory)
    server.on_message(invite(1), PBX)  # arms the core's timer (Timer A toward the trunk)
    assert server._timer is not None
    server._timer.cancel()
    server._on_timer()  # as the loop would, early: one wakeup
    status = server.status()
    return status["gc_max_pause_s"], status["gc_slow_pauses"], status["timer_wakeups"]


def test_a_worker_reports_its_gc_pauses_and_timer_wakeups_in_its_status(tmp_path: Path) -> None:
    max_pause, slow, wakeups = asyncio.run(_status_keys(tmp_path))
    assert isinstance(max_pause, float) and max_pause >= 0.0
    assert isinstance(slow, int) and slow >= 0
    assert wakeups == 1
