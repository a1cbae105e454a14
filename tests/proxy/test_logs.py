"""Log output: text lines or one JSON object per line, with the call fields given as `extra`;
the start line lists every address; the pid file belongs to the proxy that wrote it."""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from proxy import control, logs
from proxy.metrics import EventLog
from proxy.sip.addresses import Target
from proxy.sip.events import CallerIdDecided
from tests.e2e.ports import free_port
from tests.e2e.proxy_process import wait_for_status_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_RULES = ROOT / "rules" / "example.yaml"
CALL = {
    "event": "invite", "call_id": "c1@pbx", "user": "1001", "destination": "0044207946",
    "shown": "+3228880001", "rule": "uk", "rules_version": "abc123", "trunk": "udp:192.0.2.1:5060",
    "status": 200,
}


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def emit(log_format: str, level: str = "info", extra: dict[str, object] | None = None) -> str:
    stream = io.StringIO()
    logs.configure(level, log_format, stream)
    logging.getLogger("callerid_proxy.test").info("call %s routed", "c1", extra=extra)
    return stream.getvalue()


@pytest.mark.usefixtures("restore_root_logger")
def test_json_is_one_object_per_line_with_the_call_fields() -> None:
    (line,) = emit("json", extra=CALL).splitlines()
    data = json.loads(line)
    assert {k: data[k] for k in CALL} == CALL
    assert (data["level"], data["logger"], data["message"]) == (
        "info", "callerid_proxy.test", "call c1 routed"
    )
    assert data["time"].endswith("Z")
    stamp = datetime.fromisoformat(data["time"].replace("Z", "+00:00"))
    assert stamp.utcoffset() == timedelta(0)
    assert abs(stamp.timestamp() - datetime.now().timestamp()) < 60


@pytest.mark.usefixtures("restore_root_logger")
def test_json_leaves_out_fields_the_record_does_not_carry() -> None:
    data = json.loads(emit("json", extra={"event": "start"}))
    assert set(data) == {"time", "level", "logger", "message", "event"}


@pytest.mark.usefixtures("restore_root_logger")
def test_json_carries_the_exception() -> None:
    stream = io.StringIO()
    logs.configure("info", "json", stream)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("callerid_proxy").exception("internal error")
    data = json.loads(stream.getvalue())
    assert "RuntimeError: boom" in data["exception"]
    assert data["level"] == "error"


@pytest.mark.usefixtures("restore_root_logger")
def test_text_is_the_classic_line_then_the_fields() -> None:
    line = emit("text", extra={"call_id": "c1@pbx", "status": 486}).rstrip("\n")
    assert " INFO callerid_proxy.test: call c1 routed call_id=c1@pbx status=486" in line
    assert "\n" not in line


@pytest.mark.usefixtures("restore_root_logger")
def test_the_level_filters() -> None:
    assert emit("json", level="warning") == ""
    assert emit("text", level="debug") != ""


# ----------------------------------------------------------------- the proxy process
def start_proxy(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], Path, int]:
    pid_file = tmp_path / "p.pid"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "run", "--rules", str(EXAMPLE_RULES),
         "--listen", f"127.0.0.1:{port}", "--pbx", "127.0.0.1:5070",
         "--trunk", "127.0.0.1:5080", "--trunk", "tcp:127.0.0.2:5081",
         "--trusted", "10.9.0.0/16", "--secret", "s", "--pid-file", str(pid_file), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    wait_for_status_file(process, pid_file)
    return process, pid_file, port


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=10)
    return err


def test_the_start_line_in_json_lists_every_address(tmp_path: Path) -> None:
    process, _, port = start_proxy(tmp_path, "--log-format", "json")
    err = stop(process)
    records = [json.loads(line) for line in err.splitlines()]
    (start,) = [r for r in records if r.get("event") == "start"]
    message = start["message"]
    assert message.startswith(f"callerid-proxy {logs.software_version()} started:")
    for part in (f"listen 127.0.0.1:{port}", "pbx udp:127.0.0.1:5070",
                 "trunks udp:127.0.0.1:5080, tcp:127.0.0.2:5081", "trusted 10.9.0.0/16",
                 "admin off"):
        assert part in message
    assert start["rules_version"] in message


def test_a_second_proxy_on_the_same_pid_file_is_refused_and_leaves_it(tmp_path: Path) -> None:
    first, pid_file, _ = start_proxy(tmp_path)
    try:
        second = subprocess.run(
            [sys.executable, "-m", "proxy", "run", "--rules", str(EXAMPLE_RULES),
             "--listen", f"127.0.0.1:{free_port()}", "--pbx", "127.0.0.1:5070",
             "--trunk", "127.0.0.1:5080", "--secret", "s", "--pid-file", str(pid_file)],
            capture_output=True, text=True, timeout=30, check=False,
        )
        assert second.returncode == 1
        assert f"belongs to callerid-proxy process {first.pid}, which is running" in second.stderr
        assert control.read_pid_file(pid_file) == first.pid
        status = control.read_status(control.status_path(pid_file))
        assert status is not None and status.pid == first.pid
    finally:
        stop(first)
    assert not pid_file.exists()


def test_a_pid_file_naming_a_dead_process_or_another_program_is_taken_over(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "p.pid"
    dead = subprocess.Popen(["true"])
    dead.wait(timeout=10)
    other = subprocess.Popen(["sleep", "30"])
    try:
        for pid in (dead.pid, other.pid):
            pid_file.write_text(f"{pid}\n")
            control.refuse_live_pid_file(pid_file)  # neither is a callerid-proxy: no error
        assert not control.is_callerid_proxy(other.pid)
    finally:
        other.kill()
        other.wait(timeout=10)


def test_only_the_writer_removes_the_files(tmp_path: Path) -> None:
    pid_file = tmp_path / "p.pid"
    control.write_pid_file(pid_file, 4242)
    control.remove_own_files(pid_file, 4243)
    assert control.read_pid_file(pid_file) == 4242
    control.remove_own_files(pid_file, 4242)
    assert not pid_file.exists()


def test_only_the_writer_removes_the_status_file(tmp_path: Path) -> None:
    pid_file = tmp_path / "p.pid"
    state = control.status_path(pid_file)
    status = control.ProxyStatus(4242, "v1", "r.yaml", 0, True, "v1", (), 0.0)
    control.write_status(state, status)
    control.remove_own_files(pid_file, 4243)
    assert control.read_status(state) == status
    control.remove_own_files(pid_file, 4242)
    assert not state.exists()


# What the wire may carry into a log line: a Call-ID or user with ESC sequences, NUL, a C1 control
# (the quoted-pairs of RFC 3261 25.1 allow control characters in a display name).
HOSTILE = "esc\x1b[2J\x1b[31mFAKE\x00\x85\x7f@x"
ESCAPED = "esc\\x1b[2J\\x1b[31mFAKE\\x00\\x85\\x7f@x"


@pytest.mark.usefixtures("restore_root_logger")
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_control_characters_from_the_wire_never_reach_the_log_raw(log_format: str) -> None:
    """Logged through a record (a refusal), and through the audit line's direct path."""
    stream = io.StringIO()
    logs.configure("info", log_format, stream)
    logging.getLogger("callerid_proxy.core").warning("refused INVITE %s", HOSTILE,
                                                     extra={"call_id": HOSTILE})
    audit = EventLog()
    audit.handle([CallerIdDecided(HOSTILE, "1002" + HOSTILE, "0044", "+442071234567", None,
                                  "rule", "v1", Target("udp", "127.0.0.1", 5080), "advanced",
                                  False)])
    audit.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    for line in lines:
        assert all(ch.isprintable() for ch in line), repr(line)
        if log_format == "text":
            assert ESCAPED in line, line
        else:  # escaped in the line, the same text once decoded
            assert any(HOSTILE in str(value) for value in json.loads(line).values()), line


def test_escaping_leaves_printable_text_alone() -> None:
    text = "refused INVITE from 127.0.0.1:5070 with 400: Durée \"é\""
    assert logs.escape_controls(text) is text
