"""What a SIPp run of the benchmark left behind: final counters (-trace_stat), their timeline
(one -trace_stat row per -fd period) and per-call response times (-trace_rtt), read into plain
numbers. Pure functions of the files' text."""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

# SIPp counts a failed check (check_it / check_it_inverse on a regexp or a strcmp) in these.
CHECK_FAILURE_COLUMNS = (
    "FailedRegexpDoesntMatch(C)",
    "FailedRegexpShouldntMatch(C)",
    "FailedRegexpHdrNotFound(C)",
    "FailedStrcmpDoesntMatch(C)",
    "FailedStrcmpShouldntMatch(C)",
)


@dataclass(frozen=True)
class SippCounters:
    """The cumulative counters of one SIPp instance at the end of its run."""

    created: int
    successful: int
    failed: int
    retransmissions: int
    check_failures: int
    timeouts: int
    unexpected: int

    @classmethod
    def from_row(cls, row: Mapping[str, str]) -> SippCounters:
        def count(column: str) -> int:
            return int(row.get(column) or 0)

        return cls(
            created=count("TotalCallCreated"),
            successful=count("SuccessfulCall(C)"),
            failed=count("FailedCall(C)"),
            retransmissions=count("Retransmissions(C)"),
            check_failures=sum(count(column) for column in CHECK_FAILURE_COLUMNS),
            timeouts=count("FailedTimeoutOnRecv(C)") + count("FailedMaxUDPRetrans(C)"),
            unexpected=count("FailedUnexpectedMessage(C)"),
        )


def _stat_rows(stat_csv: str) -> list[dict[str, str]]:
    rows = [row for row in csv.reader(io.StringIO(stat_csv), delimiter=";") if any(row)]
    if len(rows) < 2:
        return []
    header = rows[0]
    return [dict(zip(header, row, strict=False)) for row in rows[1:]]


def final_counters(stat_csv: str) -> SippCounters | None:
    """The last row of a `-trace_stat` CSV (';'-separated, header first), or None if empty."""
    rows = _stat_rows(stat_csv)
    return SippCounters.from_row(rows[-1]) if rows else None


@dataclass(frozen=True)
class StatRow:
    """One `-trace_stat` row: the cumulative counters at `at` (Unix time, s)."""

    at: float
    counters: SippCounters


def _unix_time(stamp: str) -> float | None:
    """SIPp writes a time as "2026-12-02<TAB>02:11:32.183830<TAB>1796177492.183830"."""
    try:
        return float(stamp.split("\t")[-1])
    except ValueError:
        return None


def timeline(stat_csv: str) -> tuple[StatRow, ...]:
    """Every row of a `-trace_stat` CSV in order: SIPp writes one per -fd period and one at
    its end, so a counter's change is known to within that period."""
    out = []
    for row in _stat_rows(stat_csv):
        at = _unix_time(row.get("CurrentTime", ""))
        if at is not None:
            out.append(StatRow(at, SippCounters.from_row(row)))
    return tuple(out)


def first_at(rows: Sequence[StatRow], holds: Callable[[SippCounters], bool]) -> float | None:
    """The time of the first row whose counters satisfy `holds` (None: no such row)."""
    return next((row.at for row in rows if holds(row.counters)), None)


def last_rise_at(rows: Sequence[StatRow], value: Callable[[SippCounters], int]) -> float | None:
    """The time of the row where `value` (a cumulative counter) reached its final figure, i.e.
    when it last grew; None if it never rose above 0."""
    if not rows or value(rows[-1].counters) == 0:
        return None
    final = value(rows[-1].counters)
    return first_at(rows, lambda counters: value(counters) >= final)


def response_times(rtt_csv: str) -> dict[str, list[float]]:
    """Per timer name, every response time (ms) in a `-trace_rtt` CSV.

    Its rows are `Date_ms;response_time_ms;rtd_no`; SIPp reads a coarse clock, so the values
    are whole ticks of the kernel's jiffy (4 ms at HZ=250).
    """
    times: dict[str, list[float]] = defaultdict(list)
    for row in csv.reader(io.StringIO(rtt_csv), delimiter=";"):
        if len(row) < 3 or row[0] == "Date_ms":
            continue
        try:
            value = float(row[1])
        except ValueError:
            continue
        times[row[2].strip()].append(value)
    return dict(times)


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile (fraction 0.5 = median, 0.99 = p99); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Latency:
    """p50/p99 of one timer, in ms, and how many calls had it."""

    samples: int
    p50_ms: float | None
    p99_ms: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Latency:
        return cls(len(values), percentile(values, 0.50), percentile(values, 0.99))


def latencies(rtt_texts: Iterable[str], names: Sequence[str]) -> dict[str, Latency]:
    """p50/p99 per timer over one or more `-trace_rtt` files (SIPp may write several)."""
    merged: dict[str, list[float]] = defaultdict(list)
    for text in rtt_texts:
        for name, values in response_times(text).items():
            merged[name].extend(values)
    return {name: Latency.of(merged.get(name, [])) for name in names}
