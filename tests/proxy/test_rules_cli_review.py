"""Defects found in review of the rules commands: each test failed before its fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "rules" / "example.yaml"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args], capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize("admin", [":8080", "127.0.0.1:99999", "127.0.0.1:0", "[::1]:65536"])
def test_apply_admin_address_without_host_or_with_an_impossible_port_is_a_usage_error(
    admin: str,
) -> None:
    # These were sent to urllib, which answered "Name or service not known" or similar.
    result = _cli("apply", str(EXAMPLE), "--admin", admin)
    assert result.returncode == 2, result
    assert f"--admin expects HOST:PORT, got {admin!r}" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_of_a_value_with_an_impossible_tag_reports_its_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(EXAMPLE.read_text().replace("country: BE", "country: !!timestamp BE"))
    result = _cli("check", str(broken))
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert f"{broken}:3: error: country" in result.stderr
