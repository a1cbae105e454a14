"""The recovery run (bench/recovery.py): SIPp stat timelines, the overload rate it picks, its
report table and JSON, and both phases through one real proxy process on a tiny scale."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench import report
from bench.ladder import Load, RunResult
from bench.recovery import RecoveryPlan, RecoveryResult, overload_rate, run_recovery
from bench.sipp_stats import first_at, last_rise_at, timeline
from bench.systems import Baseline, CallerIdProxy
from tests.e2e.sipp import SIPP

needs_sipp = pytest.mark.skipif(SIPP is None, reason="sipp is not installed (sip-tester)")

HEADER = "StartTime;CurrentTime;TotalCallCreated;SuccessfulCall(C);FailedCall(C)"


def _stat(*rows: tuple[float, int, int, int]) -> str:
    lines = [HEADER]
    for at, created, ok, failed in rows:
        stamp = f"2026-12-02\t02:11:32.000000\t{at:.6f}"
        lines.append(f"{stamp};{stamp};{created};{ok};{failed}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ stat timelines
def test_timeline_reads_every_row_with_its_unix_time() -> None:
    rows = timeline(_stat((100.0, 0, 0, 0), (100.1, 5, 2, 1), (100.2, 9, 6, 3)))
    assert [row.at for row in rows] == pytest.approx([100.0, 100.1, 100.2])
    assert [(r.counters.created, r.counters.successful, r.counters.failed) for r in rows] == [
        (0, 0, 0), (5, 2, 1), (9, 6, 3)
    ]
    assert timeline("") == () and timeline(HEADER + "\n") == ()


@pytest.mark.parametrize(
    ("rows", "first_ok", "last_failed"),
    [
        # failures early, then only successes: the row where the count reached its final 3
        ([(1.0, 0, 0, 0), (1.1, 4, 0, 2), (1.2, 8, 1, 3), (1.3, 9, 5, 3)], 1.2, 1.2),
        ([(1.0, 0, 0, 0), (1.1, 4, 3, 0), (1.2, 4, 4, 0)], 1.1, None),  # none failed
        ([(1.0, 2, 0, 0), (1.1, 2, 0, 2)], None, 1.1),  # none succeeded
        ([], None, None),
    ],
)
def test_first_success_and_last_failure(
    rows: list[tuple[float, int, int, int]], first_ok: float | None, last_failed: float | None
) -> None:
    parsed = timeline(_stat(*rows))
    assert first_at(parsed, lambda c: c.successful > 0) == first_ok
    assert last_rise_at(parsed, lambda c: c.failed) == last_failed


# ------------------------------------------------------------------ the overload rate
def _run(system: str, transport: str, rate: float, failed: int | None) -> RunResult:
    return RunResult(
        system=system, transport=transport, rate=rate, duration_s=10.0, attempted=100,
        ok=None if failed is None else 100 - failed, failed=failed, pbx_failed=None,
        trunk_failed=None, retransmissions=0, check_failures=0, invite_100_p50_ms=1.0,
        invite_100_p99_ms=2.0, invite_200_p50_ms=3.0, invite_200_p99_ms=4.0, cpu_s=1.0,
        cpu_s_per_1000_calls=1.0, peak_rss_mb=50.0, processes=1, gc_max_pause_ms=None,
        gc_pauses_over_5ms=None, latency_source="sipp", wall_s=10.0, notes="",
    )  # fmt: skip


LADDER = [
    _run("p", "udp", 250, 0), _run("p", "udp", 500, 0), _run("p", "udp", 1000, 12),
    _run("p", "udp", 2000, 0),  # held again at a higher rate: the highest held counts
    _run("p", "tcp", 250, 0), _run("p", "tcp", 500, 3), _run("p", "tcp", 1000, None),
    _run("k", "udp", 3000, 0), _run("q", "udp", 500, 1), _run("q", "udp", 250, 7),
    _run("big", "udp", 6000, 0),
]  # fmt: skip


@pytest.mark.parametrize(
    ("system", "transport", "rate", "why"),
    [
        ("p", "udp", 4000.0, "2 x 2000/s, the highest ladder rate with 0 failed calls"),
        ("p", "tcp", 500.0, "2 x 250/s, the highest ladder rate with 0 failed calls"),
        ("k", "udp", 6000.0, "2 x 3000/s"),
        ("q", "udp", 500.0, "2 x 250/s, the lowest ladder rate (none had 0 failed)"),
        ("big", "udp", 10_000.0, "(capped)"),
    ],
)
def test_overload_is_twice_the_highest_rate_held(
    system: str, transport: str, rate: float, why: str
) -> None:
    chosen, reason = overload_rate(LADDER, system, transport)
    assert chosen == rate and why in reason


def test_overload_rate_needs_a_ladder_run_of_the_system() -> None:
    with pytest.raises(ValueError, match="no ladder run"):
        overload_rate(LADDER, "k", "tcp")


# ------------------------------------------------------------------ report
def _recovery(last_failed: float | None) -> RecoveryResult:
    over = dataclasses.replace(_run("callerid-proxy", "udp", 1000, 300), shed=300,
                               invite_503_p99_ms=41.234)  # fmt: skip
    after = dataclasses.replace(
        _run("callerid-proxy", "udp", 250, 0 if last_failed is None else 2), shed=0,
        invite_200_p99_ms=6.5, latency_source="capture",
    )  # fmt: skip
    return RecoveryResult(
        system="callerid-proxy", transport="udp", overload_why="1000/s = 2 x 500/s",
        overload=over, recovery=after, started_after_s=0.31, first_ok_after_s=0.52,
        last_failed_after_s=last_failed,
    )  # fmt: skip


def test_recovery_table_json_and_readme(tmp_path: Path) -> None:
    results = [_recovery(None), _recovery(1.25)]
    rows = report.recovery_table(results).splitlines()
    assert len(rows) == 4 and rows[0].count("|") == len(report.RECOVERY_COLUMNS) + 1
    cells = [[cell.strip() for cell in row.split("|")[1:-1]] for row in rows[2:]]
    column = report.RECOVERY_COLUMNS.index
    assert cells[0][column("overload calls/s")] == "1,000"
    assert cells[0][column("overload 503 shed")] == "300"
    assert cells[0][column("overload failed among admitted")] == "0"
    assert cells[0][column("overload INVITE→503 p99 ms")] == "41.23"
    assert cells[0][column("then calls/s x s")] == "250 x 10"
    assert cells[0][column("started s after")] == "0.3"
    assert cells[0][column("INVITE→200 p99 ms")] == "6.50"
    assert (cells[0][column("failed")], cells[0][column("last failed s after")]) == ("0", "-")
    assert (cells[1][column("failed")], cells[1][column("last failed s after")]) == ("2", "1.2")
    meta = {"date": "D", "command": "C", "machine": "M", "remarks": []}
    runs = [_run("callerid-proxy", "udp", 500, 0)]
    report.write_json(tmp_path / "r.json", runs, meta, results)
    text = (tmp_path / "r.json").read_text()
    assert report.recoveries_from_json(text) == results
    assert report.runs_from_json(text) == runs
    assert report.recoveries_from_json('{"runs": []}') == []  # a file from before
    assert "## Recovery after overload" in report.markdown(runs, meta, results)
    assert "Recovery" not in report.markdown(runs, meta)
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{report.README_BEGIN}\nold\n{report.README_END}\nb\n")
    assert report.update_readme(readme, report.tables(runs, results), meta)
    assert report.recovery_table(results) in readme.read_text()


def test_the_ladder_plans_one_recovery_run_per_transport_and_system() -> None:
    from bench import vs_kamailio

    args = vs_kamailio.parse_args(["--transports", "udp,tcp", "--recovery-rate", "100"])
    chosen = [Baseline(), CallerIdProxy()]
    ladder = [_run("callerid-proxy", "udp", 250, 0), _run("callerid-proxy", "tcp", 250, 5)]
    plans = vs_kamailio.recovery_plans(args, chosen, ladder)
    assert [(p.system.name, p.overload, p.recovery) for p in plans] == [
        ("callerid-proxy", Load("udp", 500, 10), Load("udp", 100, 10)),
        ("callerid-proxy", Load("tcp", 500, 10), Load("tcp", 100, 10)),
    ]
    given = vs_kamailio.parse_args(["--transports", "udp", "--recovery-overload", "700"])
    assert [p.overload.rate for p in vs_kamailio.recovery_plans(given, chosen, ladder)] == [700]
    assert vs_kamailio.parse_args(["--no-recovery"]).no_recovery


# ------------------------------------------------------------------ one process, both phases
@needs_sipp
def test_overload_then_recovery_through_one_proxy_process(tmp_path: Path) -> None:
    plan = RecoveryPlan(CallerIdProxy(), Load("udp", 60, 2), Load("udp", 20, 2), "given")
    result = run_recovery(plan, tmp_path)
    over, after = result.overload, result.recovery
    # each phase counts its own SIPp pair's calls only, none of the other's
    assert (over.attempted, after.attempted) == (120, 40), (over.notes, after.notes)
    assert over.rate == 60 and after.rate == 20
    assert after.ok is not None and after.failed is not None and after.ok + after.failed == 40
    assert after.retransmissions is not None and after.shed is not None
    assert after.invite_200_p99_ms is not None
    assert over.shed is not None and over.failed_admitted is not None
    assert result.started_after_s is not None and result.first_ok_after_s is not None
    assert (result.last_failed_after_s is None) == (after.failed == 0)
    assert (tmp_path / "overload" / "pbx").is_dir() and (tmp_path / "recovery" / "pbx").is_dir()
