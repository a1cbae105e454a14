"""GET /status tells the last reload's outcome and errors, not only the version in force."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from proxy import control
from tests.e2e.ports import wait_until
from tests.e2e.proxy_process import proxy_with_admin

EXAMPLE = Path(__file__).resolve().parents[2] / "rules" / "example.yaml"


def get_status(admin: str) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{admin}/status", timeout=5) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data


def reload_and_wait(process: subprocess.Popen[str], pid_file: Path, seq: int) -> None:
    process.send_signal(signal.SIGHUP)

    def reloaded() -> bool:
        status = control.read_status(control.status_path(pid_file))
        return status is not None and status.reload_seq > seq

    wait_until(reloaded, 10.0, "the reload to be reported")


def test_status_shows_a_refused_reload_then_a_good_one(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(EXAMPLE.read_text())
    pid_file = tmp_path / "proxy.pid"
    with proxy_with_admin(rules, pid_file) as (process, admin):
        first = get_status(admin)
        assert first["last_reload"] == {
            "ok": True, "version": first["active_version"], "errors": []
        }
        rules.write_text(EXAMPLE.read_text() + "bogus: 1\n")
        reload_and_wait(process, pid_file, 0)
        refused = get_status(admin)
        assert refused["last_reload"]["ok"] is False
        assert refused["last_reload"]["version"] is None
        assert any("bogus" in error for error in refused["last_reload"]["errors"])
        assert refused["active_version"] == first["active_version"]
        rules.write_text(EXAMPLE.read_text())
        reload_and_wait(process, pid_file, 1)
        assert get_status(admin)["last_reload"]["ok"] is True
