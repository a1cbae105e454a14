"""The benchmark script runs (small sizes; speed is printed, never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_rules.py"


def test_benchmark_runs_and_reports_load_and_resolve() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--users", "50", "--rules", "20", "--calls", "100"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.startswith("load: 50 users, 20 rules")
    assert result.stdout.count("us/call") == 4
    assert "-> step 2: advanced rule #11" in result.stdout
