"""The pid/status file contract between `apply` and the proxy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from proxy import control
from proxy.control import ProxyStatus

STATUS = ProxyStatus(
    pid=4242,
    active_version="95e1625f631d",
    rules_path="/etc/callerid/rules.yaml",
    reload_seq=3,
    last_reload_ok=False,
    last_reload_version=None,
    last_reload_errors=("rules.yaml:4: number '+1' is not a valid E.164 number",),
    updated_at=1_700_000_000.25,
)


def test_status_path_appends_to_the_pid_file_name() -> None:
    assert control.status_path(Path("run/callerid-proxy.pid")) == Path(
        "run/callerid-proxy.pid.status"
    )


def test_status_json_round_trip() -> None:
    text = STATUS.to_json()
    assert json.loads(text)["last_reload_errors"] == list(STATUS.last_reload_errors)
    assert ProxyStatus.from_json(text) == STATUS


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("pid", "4242"),
        ("pid", True),
        ("reload_seq", None),
        ("last_reload_ok", 1),
        ("last_reload_errors", "oops"),
        ("last_reload_errors", [1]),
        ("last_reload_version", 5),
        ("updated_at", "now"),
        ("active_version", None),
    ],
)
def test_status_with_wrong_types_is_rejected(key: str, value: object) -> None:
    data = json.loads(STATUS.to_json())
    data[key] = value
    with pytest.raises(ValueError):
        ProxyStatus.from_json(json.dumps(data))


def test_write_status_replaces_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "p.pid.status"
    control.write_status(path, STATUS)
    newer = ProxyStatus(**{**STATUS.__dict__, "reload_seq": 4, "last_reload_ok": True})
    control.write_status(path, newer)
    assert control.read_status(path) == newer
    assert [p.name for p in tmp_path.iterdir()] == ["p.pid.status"]


def test_read_status_is_none_when_missing_or_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "p.pid.status"
    assert control.read_status(path) is None
    for corrupt in ("", "{", "[]", '{"pid": 1}', "\xff"):
        path.write_text(corrupt)
        assert control.read_status(path) is None
    path.write_bytes(b"\xff\xfe")
    assert control.read_status(path) is None


def test_pid_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "p.pid"
    control.write_pid_file(path, 1234)
    assert path.read_text() == "1234\n"
    assert control.read_pid_file(path) == 1234


@pytest.mark.parametrize("content", ["", "abc", "-5", "0", "12 34", "1.5"])
def test_read_pid_file_rejects_garbage(tmp_path: Path, content: str) -> None:
    path = tmp_path / "p.pid"
    path.write_text(content)
    assert control.read_pid_file(path) is None
    assert control.read_pid_file(tmp_path / "missing.pid") is None


def test_request_reload_without_pid_file(tmp_path: Path) -> None:
    result = control.request_reload(tmp_path / "none.pid", "abc", 1.0)
    assert result.outcome is control.Outcome.NO_PROXY
    assert "no readable pid file" in result.message


def test_request_reload_with_dead_pid(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pid_file = tmp_path / "p.pid"
    control.write_pid_file(pid_file, dead.pid)
    result = control.request_reload(pid_file, "abc", 1.0)
    assert result.outcome is control.Outcome.NO_PROXY
    assert f"process {dead.pid}" in result.message and "not running" in result.message


def test_request_reload_does_not_signal_a_process_without_status(tmp_path: Path) -> None:
    # SIGHUP would kill this sleeper: a pid without a matching status must not be signalled.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        pid_file = tmp_path / "p.pid"
        control.write_pid_file(pid_file, sleeper.pid)
        result = control.request_reload(pid_file, "abc", 1.0)
        assert result.outcome is control.Outcome.NO_PROXY
        assert "nothing was sent" in result.message
        control.write_status(control.status_path(pid_file), STATUS)  # describes pid 4242
        assert control.request_reload(pid_file, "abc", 1.0).outcome is control.Outcome.NO_PROXY
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
