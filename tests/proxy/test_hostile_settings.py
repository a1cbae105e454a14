"""The issue-7 settings: TCP limits and the admin token, from flags, `--config` and environment."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from proxy.admin import ADMIN_TOKEN_ENV
from proxy.run_cli import SettingsError, add_run_command, build_settings, merged_settings
from proxy.tcp_accept import TcpLimits

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = ["--rules", str(ROOT / "rules" / "example.yaml"), "--pbx", "127.0.0.1:5070",
            "--trunk", "127.0.0.1:5080"]  # fmt: skip


def settings_of(*argv: str) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="callerid-proxy")
    add_run_command(parser.add_subparsers())
    return merged_settings(parser.parse_args(["run", *REQUIRED, *argv]))


def test_defaults() -> None:
    _, server, _ = build_settings(settings_of())
    assert server.tcp == TcpLimits()
    assert server.tcp.max_per_source == 8 and server.tcp.message_deadline == 5.0
    assert server.admin_token is None


def test_flags_and_config_keys(tmp_path: Path) -> None:
    _, server, _ = build_settings(settings_of(
        "--tcp-max-connections", "100", "--tcp-max-per-source", "3",
        "--tcp-message-deadline", "2.5", "--tcp-max-write-buffer", "4096",
    ))  # fmt: skip
    assert server.tcp == TcpLimits(100, 3, 2.5, 4096)
    config = tmp_path / "proxy.yaml"
    config.write_text("tcp_max_per_source: 2\nadmin: 127.0.0.1:9060\nadmin_token: sekrit\n")
    _, server, _ = build_settings(settings_of("--config", str(config)))
    assert server.tcp.max_per_source == 2 and server.admin_token == "sekrit"


def test_a_limit_that_is_not_positive_is_refused_naming_the_flag() -> None:
    for flag in ("--tcp-max-per-source", "--tcp-max-connections", "--tcp-max-write-buffer"):
        with pytest.raises(SettingsError, match=f"{flag}: expected a whole number from "):
            build_settings(settings_of(flag, "-1"))
        with pytest.raises(SettingsError, match=f"{flag}: expected a whole number from "):
            build_settings(settings_of(flag, "0"))
    with pytest.raises(SettingsError, match="--tcp-message-deadline: expected a number of sec"):
        build_settings(settings_of("--tcp-message-deadline", "0"))


def test_the_token_comes_from_the_environment_and_guards_a_public_admin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    with pytest.raises(SettingsError, match="not a loopback address: give --admin-token"):
        build_settings(settings_of("--admin", "0.0.0.0:9060"))
    monkeypatch.setenv(ADMIN_TOKEN_ENV, "from-env")
    _, server, _ = build_settings(settings_of("--admin", "0.0.0.0:9060"))
    assert server.admin_token == "from-env"
    _, server, _ = build_settings(settings_of("--admin", "0.0.0.0:9060", "--admin-token", "f"))
    assert server.admin_token == "f"  # the flag wins
