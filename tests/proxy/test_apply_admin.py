"""`callerid-proxy apply --admin`: the reload goes through the real proxy's admin endpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.ports import free_port
from tests.e2e.proxy_process import wait_for_status_file

EXAMPLE = Path(__file__).resolve().parents[2] / "rules" / "example.yaml"


TOKEN = "admin-test-token"


def _cli(*args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    """The CLI with the admin token in its environment (as an operator's shell would have it)."""
    env = {k: v for k, v in os.environ.items() if k != "CALLERID_PROXY_ADMIN_TOKEN"}
    if token is not None:
        env["CALLERID_PROXY_ADMIN_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args], capture_output=True, text=True, timeout=30,
        env=env,
    )


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A proxy on free loopback ports with an admin endpoint; its rules file and admin address."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(EXAMPLE.read_text())
    admin = f"127.0.0.1:{free_port()}"
    pid_file = tmp_path / "proxy.pid"
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "run", "--rules", str(rules),
         "--listen", f"127.0.0.1:{free_port()}", "--pbx", "127.0.0.1:5070",
         "--trunk", "127.0.0.1:5080", "--secret", "s", "--pid-file", str(pid_file),
         "--admin", admin, "--admin-token", TOKEN],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    wait_for_status_file(process, pid_file)
    yield rules, admin
    process.terminate()
    assert process.wait(timeout=10) == 0


def test_apply_through_the_admin_endpoint(running: tuple[Path, str], tmp_path: Path) -> None:
    rules, admin = running
    rules.write_text(rules.read_text().replace('"1001": "+3228880001"', '"1001": "+33144556677"'))
    result = _cli("apply", str(rules), "--admin", admin, "--pid-file", str(tmp_path / "none"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("applied version ")
    explained = _cli("check", str(rules))
    assert result.stdout.split()[2] in explained.stdout  # the version the proxy confirmed


def test_apply_reports_the_proxys_refusal_with_its_errors(
    running: tuple[Path, str], tmp_path: Path
) -> None:
    rules, admin = running
    rules.write_text(rules.read_text() + "bogus: 1\n")  # the proxy's own file is now invalid
    valid = tmp_path / "valid.yaml"
    valid.write_text(EXAMPLE.read_text())
    result = _cli("apply", str(valid), "--admin", admin)
    assert result.returncode == 1
    assert "refused" in result.stderr
    assert "unknown key 'bogus'" in result.stderr


def test_apply_without_the_token_or_with_a_wrong_one_is_refused(
    running: tuple[Path, str]
) -> None:
    rules, admin = running
    for token in (None, "wrong"):
        result = _cli("apply", str(rules), "--admin", admin, token=token)
        assert result.returncode == 1
        assert "the admin endpoint refused" in result.stderr


def test_apply_sends_the_token_given_as_a_flag(running: tuple[Path, str]) -> None:
    rules, admin = running
    result = _cli("apply", str(rules), "--admin", admin, "--admin-token", TOKEN, token=None)
    assert result.returncode == 0, result.stderr


def test_apply_to_an_admin_address_where_nothing_listens_fails(tmp_path: Path) -> None:
    result = _cli("apply", str(EXAMPLE), "--admin", f"127.0.0.1:{free_port()}", "--timeout", "2")
    assert result.returncode == 1
    assert "no proxy answering" in result.stderr
