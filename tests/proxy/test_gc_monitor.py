"""The GC pause monitor: collections are timed per generation and exposed as Prometheus metrics."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from proxy.gc_monitor import BUCKETS, GcMonitor


class StepClock:
    """A clock that moves `step` seconds every time it is read."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.now = 100.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def sample(registry: CollectorRegistry, name: str, generation: int, **labels: str) -> float:
    value = registry.get_sample_value(name, {"generation": str(generation), **labels})
    assert value is not None, f"no sample {name} for generation {generation}"
    return value


@pytest.fixture
def monitor(registry: CollectorRegistry) -> Iterator[GcMonitor]:
    gc_monitor = GcMonitor()
    registry.register(gc_monitor)
    with gc_monitor.installed():
        yield gc_monitor


def test_a_forced_collection_is_recorded(monitor: GcMonitor, registry: CollectorRegistry) -> None:
    gc.disable()  # only the forced collection
    try:
        before = sample(registry, "callerid_proxy_gc_pause_seconds_count", 2)
        gc.collect()
        after = sample(registry, "callerid_proxy_gc_pause_seconds_count", 2)
    finally:
        gc.enable()
    assert after == before + 1
    assert sample(registry, "callerid_proxy_gc_pause_seconds_sum", 2) > 0
    assert sample(registry, "callerid_proxy_gc_pause_max_seconds", 2) > 0
    assert monitor.pauses[2].count >= 1


def test_each_generation_is_counted_on_its_own(
    monitor: GcMonitor, registry: CollectorRegistry
) -> None:
    gc.disable()  # no automatic collection of another generation in between
    try:
        counts = [monitor.pauses[g].count for g in (0, 1, 2)]
        gc.collect(0)
        after = [monitor.pauses[g].count for g in (0, 1, 2)]
    finally:
        gc.enable()
    assert after == [counts[0] + 1, counts[1], counts[2]]


def test_slow_pauses_are_counted_logged_and_land_in_their_bucket(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    clock = StepClock(0.030)  # every collection "takes" 30 ms
    monitor = GcMonitor(slow_s=0.005, log_over_s=0.020, clock=clock)
    registry.register(monitor)
    with caplog.at_level(logging.WARNING, logger="callerid_proxy.gc"), monitor.installed():
        gc.collect()
    assert monitor.slow_pauses >= 1
    assert monitor.max_pause_s == pytest.approx(0.030)
    assert sample(registry, "callerid_proxy_gc_slow_pauses_total", 2) >= 1
    under_20ms = sample(registry, "callerid_proxy_gc_pause_seconds_bucket", 2, le="0.02")
    under_50ms = sample(registry, "callerid_proxy_gc_pause_seconds_bucket", 2, le="0.05")
    assert (under_20ms, under_50ms) == (0, monitor.pauses[2].count)
    assert "paused the loop 30.0 ms" in caplog.text


def test_fast_pauses_are_neither_slow_nor_logged(caplog: pytest.LogCaptureFixture) -> None:
    monitor = GcMonitor(slow_s=0.005, log_over_s=0.020, clock=StepClock(0.001))
    with caplog.at_level(logging.WARNING, logger="callerid_proxy.gc"), monitor.installed():
        gc.collect()
    assert monitor.pauses[2].count >= 1
    assert monitor.slow_pauses == 0
    assert caplog.text == ""


def test_uninstall_stops_recording() -> None:
    monitor = GcMonitor()
    with monitor.installed():
        gc.collect()
    recorded = monitor.pauses[2].count
    gc.collect()
    assert monitor.pauses[2].count == recorded
    assert monitor._callback not in gc.callbacks


def test_metrics_text_has_the_histogram(monitor: GcMonitor, registry: CollectorRegistry) -> None:
    gc.collect()
    text = generate_latest(registry).decode()
    assert 'callerid_proxy_gc_pause_seconds_bucket{generation="2",le="0.005"}' in text
    assert 'callerid_proxy_gc_pause_seconds_bucket{generation="2",le="+Inf"}' in text
    assert len([line for line in text.splitlines() if 'generation="2",le=' in line]) == (
        len(BUCKETS) + 1
    )
