"""`callerid-proxy run` settings: addresses, the config file under the flags, what is required."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from proxy.run_cli import (
    SECRET_ENV,
    SettingsError,
    add_run_command,
    build_settings,
    merged_settings,
    parse_hostport,
    parse_target,
    run_command,
)
from proxy.sip.addresses import Target

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_RULES = ROOT / "rules" / "example.yaml"
REQUIRED = {"rules": str(EXAMPLE_RULES), "pbx": "127.0.0.1:5070", "trunk": ["127.0.0.1:5080"]}


def parse_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="callerid-proxy")
    add_run_command(parser.add_subparsers())
    return parser.parse_args(["run", *argv])


# ----------------------------------------------------------------- addresses
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5060", ("127.0.0.1", 5060)),
        ("192.0.2.1:1", ("192.0.2.1", 1)),
        ("10.0.0.1:65535", ("10.0.0.1", 65535)),
        ("[::1]:5060", ("::1", 5060)),
        ("[2001:db8::1]:5080", ("2001:db8::1", 5080)),
        ("[2001:DB8:0:0::1]:5080", ("2001:db8::1", 5080)),
        ("[::ffff:192.0.2.1]:5060", ("::ffff:c000:201", 5060)),
    ],
)
def test_parse_hostport(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text) == expected


def test_parse_hostport_resolves_a_name_once_to_an_ip_literal() -> None:
    host, port = parse_hostport("localhost:5060")
    assert port == 5060
    assert ipaddress.ip_address(host).is_loopback


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1",
        "127.0.0.1:",
        ":5060",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:50x",
        "127.0.0.1:-1",
        "[::1]",
        "[::1]:",
        "[::1]5060",
        "[]:5060",
        "",
    ],
)
def test_parse_hostport_refuses(text: str) -> None:
    with pytest.raises(SettingsError):
        parse_hostport(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5080", Target("udp", "127.0.0.1", 5080)),
        ("udp:127.0.0.1:5080", Target("udp", "127.0.0.1", 5080)),
        ("tcp:127.0.0.1:5080", Target("tcp", "127.0.0.1", 5080)),
        ("TCP:127.0.0.1:5080", Target("tcp", "127.0.0.1", 5080)),
        ("tcp:[::1]:5060", Target("tcp", "::1", 5060)),
        ("udp:[2001:db8::2]:5070", Target("udp", "2001:db8::2", 5070)),
        ("[::1]:5060", Target("udp", "::1", 5060)),
        ("tls:[::1]:5061", Target("tls", "::1", 5061)),
        ("TLS:127.0.0.1:5061", Target("tls", "127.0.0.1", 5061)),
    ],
)
def test_parse_target(text: str, expected: Target) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize("text", ["tcp:", "tcp:127.0.0.1", "sctp:127.0.0.1:5060", "tls:[::1]"])
def test_parse_target_refuses(text: str) -> None:
    with pytest.raises(SettingsError):
        parse_target(text)


# ----------------------------------------------------------------- required settings
@pytest.mark.parametrize("missing", ["rules", "pbx", "trunk"])
def test_missing_required_setting(missing: str) -> None:
    settings: dict[str, Any] = {k: v for k, v in REQUIRED.items() if k != missing}
    with pytest.raises(SettingsError, match=f"--{missing} is required"):
        build_settings(settings)


@pytest.mark.parametrize("missing", ["--rules", "--pbx", "--trunk"])
def test_run_without_a_required_flag_exits_2(
    missing: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = {"--rules": str(EXAMPLE_RULES), "--pbx": "127.0.0.1:5070",
             "--trunk": "127.0.0.1:5080"}
    argv = [item for flag, val in flags.items() if flag != missing for item in (flag, val)]
    assert run_command(parse_args(*argv)) == 2
    assert f"{missing} is required" in capsys.readouterr().err


def test_run_with_a_rules_file_that_does_not_load_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("country: BE\n")
    args = parse_args("--rules", str(bad), "--pbx", "127.0.0.1:5070", "--trunk", "127.0.0.1:5080",
                      "--secret", "s")
    assert run_command(args) == 1
    assert "rules refused" in capsys.readouterr().err


def test_defaults() -> None:
    config, server, rules_path = build_settings({**REQUIRED, "secret": "s"})
    assert rules_path == EXAMPLE_RULES
    assert config.pbx == Target("udp", "127.0.0.1", 5070)
    assert config.trunk == Target("udp", "127.0.0.1", 5080)
    assert config.extra_trunks == ()
    assert config.trusted == ()
    assert config.advertised == (Target("udp", "127.0.0.1", 5060), Target("tcp", "127.0.0.1", 5060))
    assert server.listen == (("127.0.0.1", 5060),)
    assert server.pid_file == Path("callerid-proxy.pid")
    assert server.max_message == 64 * 1024
    assert server.tcp_idle_timeout == 120.0


def test_several_trunks_listens_and_trusted() -> None:
    config, server, _ = build_settings({
        **REQUIRED,
        "secret": "s",
        "trunk": ["tcp:192.0.2.10:5060", "udp:192.0.2.11:5060"],
        "listen": ["127.0.0.1:5060", "[::1]:5062"],
        "trusted": ["10.1.0.0/16", "2001:db8::/32", "192.0.2.7"],
    })
    assert config.trunk == Target("tcp", "192.0.2.10", 5060)
    assert config.extra_trunks == (Target("udp", "192.0.2.11", 5060),)
    assert server.listen == (("127.0.0.1", 5060), ("::1", 5062))
    assert Target("udp", "::1", 5062) in config.advertised
    assert Target("tcp", "::1", 5062) in config.advertised
    assert config.trusted == (
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("192.0.2.7/32"),
    )


def test_invalid_trusted_network() -> None:
    with pytest.raises(SettingsError, match="trusted"):
        build_settings({**REQUIRED, "secret": "s", "trusted": ["10.0.0.0/33"]})


def test_wildcard_listen_needs_an_advertised_address() -> None:
    with pytest.raises(SettingsError, match="advertise"):
        build_settings({**REQUIRED, "secret": "s", "listen": ["0.0.0.0:5060"]})
    config, _, _ = build_settings(
        {**REQUIRED, "secret": "s", "listen": ["0.0.0.0:5060"], "advertise": "192.0.2.5"}
    )
    assert config.advertised == (Target("udp", "192.0.2.5", 5060), Target("tcp", "192.0.2.5", 5060))


# ----------------------------------------------------------------- secret
def test_secret_setting_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "from-env")
    config, _, _ = build_settings({**REQUIRED, "secret": "from-flag"})
    assert config.secret == b"from-flag"


def test_secret_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "from-env")
    config, _, _ = build_settings(dict(REQUIRED))
    assert config.secret == b"from-env"


def test_random_secret_with_a_warning_when_none_is_given(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with caplog.at_level(logging.WARNING):
        first, _, _ = build_settings(dict(REQUIRED))
        second, _, _ = build_settings(dict(REQUIRED))
    assert len(first.secret) >= 16
    assert first.secret != second.secret
    assert "random secret" in caplog.text


# ----------------------------------------------------------------- config file and flags
def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proxy.yaml"
    path.write_text(text)
    return path


def test_config_file_alone(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    path = write_config(tmp_path, (
        "rules: rules/mine.yaml\n"
        "listen: 127.0.0.1:5090\n"
        "pbx: tcp:127.0.0.1:5070\n"
        "trunk: udp:[::1]:5080\n"
        "trusted: 10.0.0.0/8\n"
        "pid_file: run/proxy.pid\n"
        "secret: from-file\n"
        "max_message: 4096\n"
        "tcp_idle_timeout: 30\n"
    ))
    settings = merged_settings(parse_args("--config", str(path)))
    assert settings["rules"] == tmp_path / "rules" / "mine.yaml"  # relative to the file
    assert settings["pid_file"] == tmp_path / "run" / "proxy.pid"
    assert settings["listen"] == ["127.0.0.1:5090"]  # a scalar becomes a one-item list
    assert settings["trunk"] == ["udp:[::1]:5080"]
    assert settings["trusted"] == ["10.0.0.0/8"]
    config, server, rules_path = build_settings(settings)
    assert rules_path == tmp_path / "rules" / "mine.yaml"
    assert config.pbx == Target("tcp", "127.0.0.1", 5070)
    assert config.trunk == Target("udp", "::1", 5080)
    assert config.secret == b"from-file"
    assert server.listen == (("127.0.0.1", 5090),)
    assert (server.max_message, server.tcp_idle_timeout) == (4096, 30.0)


def test_flags_win_over_the_config_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, (
        f"rules: {EXAMPLE_RULES}\n"
        "pbx: 127.0.0.1:5070\n"
        "trunk: [udp:127.0.0.1:5080, udp:127.0.0.1:5081]\n"
        "listen: [127.0.0.1:5060]\n"
        "secret: from-file\n"
        "log_level: debug\n"
    ))
    args = parse_args(
        "--config", str(path), "--trunk", "tcp:127.0.0.1:6080", "--pbx", "udp:127.0.0.1:6070",
        "--secret", "from-flag", "--listen", "[::1]:6060",
    )
    settings = merged_settings(args)
    config, server, rules_path = build_settings(settings)
    assert config.trunk == Target("tcp", "127.0.0.1", 6080)
    assert config.extra_trunks == ()  # a flag list replaces the file's list, it does not extend it
    assert config.pbx == Target("udp", "127.0.0.1", 6070)
    assert config.secret == b"from-flag"
    assert server.listen == (("::1", 6060),)
    assert rules_path == EXAMPLE_RULES  # not given as a flag: the file's
    assert settings["log_level"] == "debug"


def test_absolute_rules_path_in_the_config_stays(tmp_path: Path) -> None:
    path = write_config(tmp_path, f"rules: {EXAMPLE_RULES}\n")
    assert merged_settings(parse_args("--config", str(path)))["rules"] == EXAMPLE_RULES


def test_the_example_config_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "example")
    settings = merged_settings(parse_args("--config", str(ROOT / "examples" / "proxy.yaml")))
    config, _, rules_path = build_settings(settings)
    assert rules_path.resolve() == EXAMPLE_RULES
    assert config.trunk == Target("udp", "127.0.0.1", 5080)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "mapping"),
        ("rules: r.yaml\nlisten_on: 1.2.3.4:5\n",
         r"proxy\.yaml:2: unknown setting listen_on \(did you mean listen\?\)"),
        ("rules: [unclosed\n", r"cannot read config .*proxy\.yaml:2"),
        ("rules: a\nrules: b\n", r"proxy\.yaml:2: rules is given twice"),
    ],
)
def test_bad_config_files(tmp_path: Path, text: str, message: str) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(SettingsError, match=message):
        merged_settings(parse_args("--config", str(path)))


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read config"):
        merged_settings(parse_args("--config", str(tmp_path / "nope.yaml")))


def test_config_missing_a_required_setting_is_reported_after_merging(tmp_path: Path) -> None:
    path = write_config(tmp_path, f"rules: {EXAMPLE_RULES}\npbx: 127.0.0.1:5070\n")
    with pytest.raises(SettingsError, match="--trunk is required"):
        build_settings(merged_settings(parse_args("--config", str(path))))
    settings = merged_settings(parse_args("--config", str(path), "--trunk", "127.0.0.1:5080"))
    config, _, _ = build_settings({**settings, "secret": "s"})
    assert config.trunk == Target("udp", "127.0.0.1", 5080)


def test_run_on_a_taken_address_exits_1_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "proxy", "run", "--rules", str(EXAMPLE_RULES),
             "--listen", f"127.0.0.1:{port}", "--pbx", "127.0.0.1:5070",
             "--trunk", "127.0.0.1:5080", "--secret", "s",
             "--pid-file", str(tmp_path / "p.pid")],
            capture_output=True, text=True, timeout=30, check=False,
        )
    assert result.returncode == 1
    assert "cannot listen" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "p.pid").exists()


def test_each_side_can_be_shown_its_own_address() -> None:
    settings = {**REQUIRED, "secret": "s", "listen": ["0.0.0.0:5060"],
                "advertise_pbx": "10.0.0.1", "advertise_trunk": "203.0.113.5"}
    config, _, _ = build_settings(settings)
    assert (config.pbx_facing, config.trunk_facing) == ("10.0.0.1", "203.0.113.5")
    assert config.advertised == (
        Target("udp", "10.0.0.1", 5060), Target("tcp", "10.0.0.1", 5060),
        Target("udp", "203.0.113.5", 5060), Target("tcp", "203.0.113.5", 5060),
    )
    assert config.facing("trunk", "udp", "198.51.100.7") == Target("udp", "203.0.113.5", 5060)
    assert config.facing("pbx", "tcp", "10.0.0.9") == Target("tcp", "10.0.0.1", 5060)


def test_a_nat_address_for_the_trunk_beside_a_specific_listen_address() -> None:
    settings = {**REQUIRED, "secret": "s", "listen": ["10.0.0.1:5070"],
                "advertise_trunk": "203.0.113.5"}
    config, _, _ = build_settings(settings)
    assert config.facing("pbx", "udp", "10.0.0.9") == Target("udp", "10.0.0.1", 5070)
    assert config.facing("trunk", "udp", "198.51.100.7") == Target("udp", "203.0.113.5", 5070)


def test_a_wildcard_listen_with_only_one_side_shown_is_refused() -> None:
    with pytest.raises(SettingsError, match="--advertise-pbx and --advertise-trunk"):
        build_settings({**REQUIRED, "secret": "s", "listen": ["0.0.0.0:5060"],
                        "advertise_trunk": "203.0.113.5"})


def test_the_side_addresses_come_from_flags() -> None:
    args = parse_args("--rules", str(EXAMPLE_RULES), "--pbx", "127.0.0.1:5070",
                      "--trunk", "127.0.0.1:5080", "--advertise-pbx", "127.0.0.2",
                      "--advertise-trunk", "127.0.0.3")
    settings = merged_settings(args)
    assert (settings["advertise_pbx"], settings["advertise_trunk"]) == ("127.0.0.2", "127.0.0.3")


# ----------------------------------------------------------------- every value checked, by name
@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('max_message: "big"', r"proxy\.yaml:4: max_message: expected a whole number .*got 'big'"),
        ("max_message: 12", r"proxy\.yaml:4: max_message: expected a whole number from 1024"),
        ("max_message: true", r"proxy\.yaml:4: max_message: expected .*got true"),
        ("tcp_idle_timeout: [1]", r"proxy\.yaml:4: tcp_idle_timeout: expected a number of "
         r"seconds .*got a list \[1\]"),
        ("tcp_idle_timeout: .nan", r"proxy\.yaml:4: tcp_idle_timeout: expected a number"),
        ("admin: 30360", r"proxy\.yaml:4: admin: expected HOST:PORT, got 30360"),
        ('admin: "30360"', r"proxy\.yaml:4: admin: expected HOST:PORT, got '30360'"),
        ("listen: [127.0.0.1:5060, nope]", r"proxy\.yaml:4: listen: item 2: expected HOST:PORT"),
        ("trusted: 10.0.0.0/33", r"proxy\.yaml:4: trusted: expected an address or a network"),
        ("log_level: verbose", r"proxy\.yaml:4: log_level: expected one of debug, info"),
        ("log_level: debg", r"log_level: .*\(did you mean debug\?\)"),
        ("log_format: jsn", r"proxy\.yaml:4: log_format: .*\(did you mean json\?\)"),
        ("advertise: 'bad name!'", r"proxy\.yaml:4: advertise: expected an IP address or a "
         "host name"),
        ("secret: {a: 1}", r"proxy\.yaml:4: secret: expected text, got a mapping"),
        ("pid_file: [a]", r"proxy\.yaml:4: pid_file: expected a file name"),
    ],
)
def test_a_bad_config_value_names_the_setting_and_the_line(
    tmp_path: Path, line: str, message: str
) -> None:
    path = write_config(tmp_path, (
        f"rules: {EXAMPLE_RULES}\npbx: 127.0.0.1:5070\ntrunk: 127.0.0.1:5080\n{line}\n"
    ))
    with pytest.raises(SettingsError, match=message):
        build_settings(merged_settings(parse_args("--config", str(path))))


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--max-message", "big", r"^--max-message: expected a whole number"),
        ("--tcp-idle-timeout", "-1", r"^--tcp-idle-timeout: expected a number of seconds"),
        ("--admin", "30360", r"^--admin: expected HOST:PORT, got '30360'"),
        ("--log-level", "verbose", r"^--log-level: expected one of debug, info, warning, error"),
        ("--log-format", "xml", r"^--log-format: expected one of text, json"),
        ("--trunk", "tcp:127.0.0.1", r"^--trunk: item 2: expected HOST:PORT"),
        ("--trusted", "x/8", r"^--trusted: expected an address or a network"),
        ("--advertise-trunk", "a..b", r"^--advertise-trunk: expected an IP address or a host"),
    ],
)
def test_a_bad_flag_names_the_flag(flag: str, value: str, message: str) -> None:
    args = parse_args("--rules", str(EXAMPLE_RULES), "--pbx", "127.0.0.1:5070",
                      "--trunk", "127.0.0.1:5080", flag, value)
    with pytest.raises(SettingsError, match=message):
        build_settings(merged_settings(args))


def test_a_flag_over_a_bad_file_value_wins_and_is_checked_as_a_flag(tmp_path: Path) -> None:
    path = write_config(tmp_path, (
        f"rules: {EXAMPLE_RULES}\npbx: 127.0.0.1:5070\ntrunk: 127.0.0.1:5080\nmax_message: big\n"
    ))
    _, server, _ = build_settings(merged_settings(
        parse_args("--config", str(path), "--max-message", "2048", "--secret", "s")
    ))
    assert server.max_message == 2048
    with pytest.raises(SettingsError, match=r"^--max-message: "):
        build_settings(merged_settings(parse_args("--config", str(path), "--max-message", "x")))


@pytest.mark.parametrize(
    "argv",
    [
        ("--max-message", "big"),
        ("--log-level", "verbose"),
        ("--advertise", "sbc..example"),
    ],
)
def test_run_refuses_bad_values_with_exit_2_and_no_traceback(
    argv: tuple[str, ...], tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "run", "--rules", str(EXAMPLE_RULES),
         "--pbx", "127.0.0.1:5070", "--trunk", "127.0.0.1:5080",
         "--pid-file", str(tmp_path / "p.pid"), *argv],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"callerid-proxy run: {argv[0]}: expected")
    assert "Traceback" not in result.stderr


def test_a_config_file_error_reaches_the_operator_with_its_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, f"rules: {EXAMPLE_RULES}\npbx: 127.0.0.1:5070\n"
                                  "trunk: 127.0.0.1:5080\ntcp_idle_timeout: [1]\n")
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "run", "--config", str(path)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 2
    assert f"{path}:4: tcp_idle_timeout: expected a number of seconds" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_mistyped_flag_gets_a_suggestion() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "run", "--rules", str(EXAMPLE_RULES), "--max-mesage",
         "4096"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 2
    assert "--max-mesage (did you mean --max-message?)" in result.stderr


def test_version() -> None:
    from importlib.metadata import version

    result = subprocess.run(
        [sys.executable, "-m", "proxy", "--version"],
        capture_output=True, text=True, timeout=30, check=True,
    )
    assert result.stdout.strip() == f"callerid-proxy {version('callerid-proxy')}"


# ----------------------------------------------------------------- an advertised host name
def test_advertise_takes_a_host_name_as_is() -> None:
    config, _, _ = build_settings(
        {**REQUIRED, "secret": "s", "listen": ["0.0.0.0:5060"], "advertise": "SBC.Example.COM"}
    )
    assert config.advertised == (
        Target("udp", "sbc.example.com", 5060), Target("tcp", "sbc.example.com", 5060)
    )


def test_each_side_may_be_shown_a_name() -> None:
    config, _, _ = build_settings({
        **REQUIRED, "secret": "s", "listen": ["0.0.0.0:5060"],
        "advertise_pbx": "[::1]", "advertise_trunk": "sbc.example.com.",
    })
    assert (config.pbx_facing, config.trunk_facing) == ("::1", "sbc.example.com")
    assert config.facing("trunk", "udp", "198.51.100.7") == Target("udp", "sbc.example.com", 5060)


# ----------------------------------------------------------------- the table drives the flags
def test_every_setting_is_a_flag_and_a_config_key(tmp_path: Path) -> None:
    from proxy.run_cli import SETTINGS

    for row in SETTINGS.values():
        if row.const is not None:  # a switch (--tls-no-verify): no value on the command line
            assert getattr(parse_args(row.option), row.name) == row.const
        else:
            given = getattr(parse_args(row.option, "x"), row.name)
            assert given == (["x"] if row.repeatable else "x")
        path = write_config(tmp_path, f"{row.name}: x\n")
        assert row.name in merged_settings(parse_args("--config", str(path)))
    assert {"log_format", "log_level", "max_message"} <= set(SETTINGS)


# ----------------------------------------------------------------- rows of other kinds
def test_a_const_flag_and_a_boolean_key_from_one_row(tmp_path: Path) -> None:
    from proxy.settings import Setting, add_flags, boolean, table, validate

    rows = table([Setting("tls_verify", boolean, True, "verify peers", const=False,
                          flag_name="--tls-no-verify")])
    parser = argparse.ArgumentParser()
    add_flags(parser, rows)
    assert parser.parse_args(["--tls-no-verify"]).tls_verify is False
    assert parser.parse_args([]).tls_verify is None  # absent: the file's value or the default
    assert validate(rows, {}, {}) == {"tls_verify": True}
    assert validate(rows, {"tls_verify": "no"}, {}) == {"tls_verify": False}
    with pytest.raises(SettingsError, match=r"^f\.yaml:3: tls_verify: expected true or false"):
        validate(rows, {"tls_verify": "maybe"}, {"tls_verify": "f.yaml:3: tls_verify"})
