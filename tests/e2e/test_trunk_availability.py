"""Issue 8's trunk availability targets, with the real proxy and real SIPp (flows in
tests/e2e/trunk_availability.py): the behaviour is asserted, the times are printed (run with -s;
bench/failover_times.py puts them in a table). Bounds are on behaviour (the no-answer timeout,
not Timer B; ICMP, not the no-answer timeout), never tight timings."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.trunk_availability import (
    all_down_then_primary_back,
    refusing_primary,
    silent_primary,
    unreachable_primary,
)

TIMER_B_S = 32.0
# Probes every 0.5 s, down after 3 unanswered (each fails at the 2 s no-answer timeout): the
# primary is down about 3 s after the start, after the first call has tried it.
PROBES = ["--probe-interval", "0.5", "--probe-failures", "3"]


def test_a_silent_primary_is_failed_over_at_the_no_answer_timeout_then_skipped(
    tmp_path: Path, rules_file: Path
) -> None:
    times = silent_primary(tmp_path, rules_file, PROBES)
    print(f"\nsilent primary: {times}")
    assert 2.0 <= times.first_call < 10.0 < TIMER_B_S  # the 2 s no-answer timeout, not Timer B
    assert times.second_call < 2.0  # no wait for the primary (it got no INVITE: checked)


def test_a_primary_refusing_with_503_hands_the_call_to_the_secondary(
    tmp_path: Path, rules_file: Path
) -> None:
    times = refusing_primary(tmp_path, rules_file, "503")
    print(f"\n503 primary: {times}")
    assert times.failover < 2.0  # on the 503 itself, not a timeout


def test_an_icmp_unreachable_primary_fails_over_at_once(tmp_path: Path, rules_file: Path) -> None:
    times = unreachable_primary(tmp_path, rules_file, no_answer_timeout_s=20.0)
    print(f"\nICMP-unreachable primary: {times}")
    assert times.failover < 5.0  # ICMP: far under the 20 s no-answer timeout


def test_with_every_trunk_down_503_and_the_primary_back_is_used_again(
    tmp_path: Path, rules_file: Path
) -> None:
    times = all_down_then_primary_back(
        tmp_path, rules_file, ["--probe-interval", "0.5", "--probe-failures", "2"], successes=2
    )
    print(f"\nall down, then primary back: {times}")
    assert times.refused < 2.0  # refused at once, no trunk tried
