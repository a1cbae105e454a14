"""bench/hostile.py's own arithmetic: the log's worst minute and the issue-7 targets it prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.hostile import Row, RssSampler


def test_the_worst_minute_is_the_most_logged_in_any_60_seconds() -> None:
    sampler = RssSampler(0, Path("unused"))
    # 10 KB/s for 30 s, quiet for 60 s, then 1 KB/s for 100 s
    size, samples = 0, []
    for second in range(190):
        size += 10_000 if second < 30 else 0 if second < 90 else 1_000
        samples.append((float(second), size))
    sampler.log_sizes = samples
    assert sampler.worst_minute() == 300_000 - 10_000  # the burst, measured from its first sample
    sampler.log_sizes = samples[100:]
    assert sampler.worst_minute() == 60_000


def row(rss: tuple[float, float, float, float | None], log_minute: int) -> Row:
    probe: Any = None
    return Row("a", "v", rss, 1.0, probe, 0, log_minute, 0)


def test_the_targets_column_names_what_was_missed() -> None:
    assert row((40, 80, 80, 48), 99_999).targets() == "met"
    assert row((40, 82, 82, 55), 100_000).targets() == "MISSED peak 2.05x, settled +38%, log/min"
    assert row((40, 60, 60, None), 0).targets() == "met"  # no --settle: not judged
