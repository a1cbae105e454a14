"""`--max-transactions`, `--max-dialogs`, `--max-loop-lag`, `--no-answer-timeout`,
`--failover-statuses`: flags to ProxyConfig/ServerSettings."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from proxy.run_cli import SettingsError, add_run_command, build_settings, merged_settings

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = ("--rules", str(ROOT / "rules" / "example.yaml"), "--pbx", "127.0.0.1:5070",
            "--trunk", "127.0.0.1:5080", "--secret", "s")


def settings_from(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="callerid-proxy")
    add_run_command(parser.add_subparsers())
    return parser.parse_args(["run", *REQUIRED, *argv])


def test_defaults() -> None:
    config, server, _ = build_settings(merged_settings(settings_from()))
    assert (config.max_transactions, config.max_dialogs) == (3_000, 100_000)
    assert server.max_loop_lag == 0.1
    assert server.max_busy == 0.95


def test_flags_reach_the_core_and_the_server() -> None:
    args = settings_from(
        "--max-transactions", "500", "--max-dialogs", "7", "--max-loop-lag", "0.25"
    )
    config, server, _ = build_settings(merged_settings(args))
    assert (config.max_transactions, config.max_dialogs) == (500, 7)
    assert server.max_loop_lag == 0.25
    _, server, _ = build_settings(merged_settings(settings_from("--max-busy", "0.8")))
    assert server.max_busy == 0.8
    for bad in ("0", "1.5", "most"):
        with pytest.raises(SettingsError, match=r"--max-busy: expected a share from 0\.1 to 1\.0"):
            build_settings(merged_settings(settings_from("--max-busy", bad)))


@pytest.mark.parametrize("value", ["0", "-3"])
def test_a_bound_must_be_positive(value: str) -> None:
    with pytest.raises(SettingsError, match="--max-transactions: expected a whole number from 1 "):
        build_settings(merged_settings(settings_from("--max-transactions", value)))


def test_trunk_availability_flags() -> None:
    config, _, _ = build_settings(merged_settings(settings_from()))
    assert config.no_answer_timeout == 2.0
    assert config.failover_statuses == frozenset((408, 500, 502, 503, 504))
    args = settings_from("--no-answer-timeout", "0", "--failover-statuses", "503, 408")
    config, _, _ = build_settings(merged_settings(args))
    assert config.no_answer_timeout is None
    assert config.failover_statuses == frozenset((503, 408))


# A 4xx or 6xx is the callee's answer (busy, declined...), never a reason to try another trunk.
@pytest.mark.parametrize("value", ["200", "abc", "503,", "486", "503,603", "404"])
def test_bad_failover_statuses_are_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="--failover-statuses"):
        build_settings(merged_settings(settings_from("--failover-statuses", value)))


def test_keepalive_and_selection_flags() -> None:
    config, _, _ = build_settings(merged_settings(settings_from()))
    assert (config.probe_interval, config.probe_failures, config.probe_successes) == (None, 3, 2)
    assert config.round_robin is False
    args = settings_from(
        "--probe-interval", "5", "--probe-failures", "4", "--probe-successes", "1", "--round-robin"
    )
    config, _, _ = build_settings(merged_settings(args))
    assert (config.probe_interval, config.probe_failures, config.probe_successes) == (5.0, 4, 1)
    assert config.round_robin is True


def test_large_over_tcp_sides() -> None:
    config, _, _ = build_settings(merged_settings(settings_from()))
    assert config.large_over_tcp == frozenset()
    args = settings_from("--large-over-tcp", "trunk", "--large-over-tcp", "pbx")
    config, _, _ = build_settings(merged_settings(args))
    assert config.large_over_tcp == frozenset({"pbx", "trunk"})
    with pytest.raises(SettingsError, match="--large-over-tcp"):
        build_settings({**merged_settings(settings_from()), "large_over_tcp": ["phone"]})
