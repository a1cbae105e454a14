"""deploy/: the systemd unit passes `systemd-analyze verify` and its command lines are ones our CLI
accepts; the example config builds; the proxy tells systemd READY=1 once it listens."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from proxy import control, rules_cli, run_cli
from proxy.cli import build_parser
from tests.e2e.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "callerid-proxy.service"
EXAMPLE_RULES = ROOT / "rules" / "example.yaml"
INSTALLED = "/usr/local/bin/callerid-proxy"


def unit_service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def command(key: str) -> list[str]:
    argv = shlex.split(unit_service()[key])
    assert argv[0] == INSTALLED
    return argv[1:]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    script = shutil.which("callerid-proxy")
    if script is None:
        pytest.skip("callerid-proxy is not installed on PATH (verify checks ExecStart exists)")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INSTALLED, script))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    # verify exits 0 on unknown keys and bad values, only printing them: none may appear.
    complaints = [line for line in result.stderr.splitlines() if unit.name in line]
    assert complaints == []


def test_verify_would_see_a_broken_unit(tmp_path: Path) -> None:
    """The check above is not vacuous: the same run reports a typo in the unit."""
    if shutil.which("systemd-analyze") is None or shutil.which("callerid-proxy") is None:
        pytest.skip("no systemd-analyze or callerid-proxy here")
    unit = tmp_path / UNIT.name
    text = UNIT.read_text().replace(INSTALLED, str(shutil.which("callerid-proxy")))
    unit.write_text(text.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert "NoNewPrivilege" in result.stderr


def test_the_hardening_is_there() -> None:
    service = unit_service()
    assert service["Type"] == "notify"
    for key, value in {
        "DynamicUser": "yes", "ProtectSystem": "strict", "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
        "AmbientCapabilities": "CAP_NET_BIND_SERVICE", "PrivateTmp": "yes",
        "RuntimeDirectory": "callerid-proxy",
    }.items():
        assert service[key] == value


def test_exec_start_is_a_valid_run_command_line() -> None:
    args = build_parser().parse_args(command("ExecStart"))
    assert args.handler is run_cli.run_command
    assert args.pid_file == "/run/callerid-proxy/callerid-proxy.pid"  # the RuntimeDirectory
    assert args.config == Path("/etc/callerid-proxy/callerid-proxy.yaml")


def test_exec_reload_is_a_valid_apply_on_the_same_pid_file() -> None:
    args = build_parser().parse_args(command("ExecReload"))
    assert args.handler is rules_cli.run_apply
    start = build_parser().parse_args(command("ExecStart"))
    assert args.pid_file == Path(start.pid_file)
    assert args.rules_file == Path("/etc/callerid-proxy/rules.yaml")  # rules: in the config


def test_the_example_config_builds_with_the_units_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(run_cli.SECRET_ENV, "example")
    argv = command("ExecStart")
    argv[argv.index("--config") + 1] = str(DEPLOY / "callerid-proxy.yaml")
    settings = run_cli.merged_settings(build_parser().parse_args(argv))
    config, server, rules_path = run_cli.build_settings(settings)
    assert rules_path == DEPLOY / "rules.yaml"  # /etc/callerid-proxy/rules.yaml once installed
    assert server.pid_file == Path("/run/callerid-proxy/callerid-proxy.pid")
    assert len(config.trunks) == 2
    assert server.admin == ("127.0.0.1", 9060)


# ----------------------------------------------------------------- sd_notify
def test_sd_notify_without_systemd_does_nothing() -> None:
    assert control.sd_notify("READY=1", {}) is False
    assert control.sd_notify("READY=1", {"NOTIFY_SOCKET": "relative"}) is False


def test_sd_notify_to_an_abstract_socket() -> None:
    name = f"callerid-proxy-test-{free_port()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(5)
        assert control.sd_notify("READY=1", {"NOTIFY_SOCKET": "@" + name}) is True
        assert listener.recv(100) == b"READY=1"


def test_the_proxy_says_ready_once_it_listens(tmp_path: Path) -> None:
    notify = tmp_path / "notify"
    port = free_port()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(notify))
        listener.settimeout(20)
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "run", "--rules", str(EXAMPLE_RULES),
             "--listen", f"127.0.0.1:{port}", "--pbx", "127.0.0.1:5070",
             "--trunk", "127.0.0.1:5080", "--secret", "s",
             "--pid-file", str(tmp_path / "p.pid")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "NOTIFY_SOCKET": str(notify)},
        )
        try:
            assert listener.recv(100) == b"READY=1"
            assert control.read_pid_file(tmp_path / "p.pid") == process.pid  # after start()
        finally:
            process.terminate()
            process.wait(timeout=10)
