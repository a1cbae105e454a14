"""`run` settings for TLS and DNS trunks: flags, config keys, what the server is handed."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from proxy.run_cli import SettingsError, add_run_command, build_settings, merged_settings
from proxy.sip.addresses import Target
from tests.certs import TestCa
from tests.loopback_dns import loopback_dns

ROOT = Path(__file__).resolve().parents[2]
RULES = str(ROOT / "rules" / "example.yaml")


def parse_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="callerid-proxy")
    add_run_command(parser.add_subparsers())
    return parser.parse_args(["run", *argv])


def test_tls_listen_flags_give_a_tls_server_and_tls_addresses(tmp_path: Path) -> None:
    issued = TestCa(tmp_path).issue("proxy", ["localhost"], ["127.0.0.1"])
    args = parse_args(
        "--rules", RULES, "--pbx", "tls:127.0.0.1:5071", "--trunk", "tls:127.0.0.1:5081",
        "--listen", "127.0.0.1:5060", "--listen", "tls:127.0.0.1:5061",
        "--tls-cert", str(issued.cert), "--tls-key", str(issued.key), "--tls-no-verify",
    )
    config, server, _ = build_settings(merged_settings(args))
    assert server.listen == (("127.0.0.1", 5060),)
    assert server.tls_listen == (("127.0.0.1", 5061),)
    assert Target("tls", "127.0.0.1", 5061) in config.advertised
    assert config.trunk == Target("tls", "127.0.0.1", 5081)
    assert config.pbx == Target("tls", "127.0.0.1", 5071)
    assert server.tls is not None and server.tls.server is not None
    assert not server.tls.client.check_hostname  # --tls-no-verify


def test_tls_config_keys_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    ca = TestCa(tmp_path)
    ca.issue("proxy", ["localhost"], ["127.0.0.1"])
    path = tmp_path / "proxy.yaml"
    path.write_text(
        f"rules: {RULES}\npbx: 127.0.0.1:5070\ntrunk: tls:127.0.0.1:5081\n"
        "listen: [127.0.0.1:5060, tls:127.0.0.1:5061]\n"
        "tls_cert: proxy.pem\ntls_key: proxy.key\ntls_ca: ca.pem\ntls_verify: true\n"
    )
    settings = merged_settings(parse_args("--config", str(path)))
    assert settings["tls_cert"] == tmp_path / "proxy.pem"
    _, server, _ = build_settings(settings)
    assert server.tls is not None and server.tls.client.check_hostname


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"listen": ["127.0.0.1:5060", "tls:127.0.0.1:5061"]}, "needs --tls-cert"),
        ({"listen": ["tls:127.0.0.1:5061"]}, "at least one plain"),
        ({"tls_verify": "maybe"}, "--tls-no-verify: expected true or false"),
        ({"trunk": ["127.0.0.1"]}, "--trunk: expected HOST:PORT"),
    ],
)
def test_tls_and_trunk_settings_refused(extra: dict[str, object], message: str) -> None:
    settings = {"rules": RULES, "pbx": "127.0.0.1:5070", "trunk": ["127.0.0.1:5080"], **extra}
    with pytest.raises(SettingsError, match=message):
        build_settings(settings)


def test_a_trunk_name_is_resolved_at_start_and_handed_to_the_server_for_refreshes() -> None:
    with loopback_dns() as dns_server:
        dns_server.set("_sip._tcp.trunk.test", "SRV", 60, ["10 0 5090 a.trunk.test."])
        dns_server.set("a.trunk.test", "A", 60, ["127.0.0.9"])
        args = parse_args("--rules", RULES, "--pbx", "127.0.0.1:5070",
                          "--trunk", "tcp:trunk.test", "--trunk", "127.0.0.1:5080",
                          "--dns-server", dns_server.option())
        config, server, _ = build_settings(merged_settings(args))
    assert config.trunks == (Target("tcp", "127.0.0.9", 5090), Target("udp", "127.0.0.1", 5080))
    assert server.trunk_resolver is not None


def test_a_trunk_name_that_does_not_resolve_at_start_is_refused() -> None:
    with loopback_dns() as dns_server:
        settings = {"rules": RULES, "pbx": "127.0.0.1:5070", "trunk": ["nowhere.test"],
                    "dns_server": dns_server.option()}
        with pytest.raises(SettingsError, match="no --trunk could be resolved"):
            build_settings(settings)


def test_a_tls_trunk_without_a_tls_listener_is_still_shown_tls_in_our_via() -> None:
    settings = {"rules": RULES, "pbx": "127.0.0.1:5070", "trunk": ["tls:127.0.0.1:5081"],
                "listen": ["127.0.0.1:5060"]}
    config, server, _ = build_settings(settings)
    assert server.tls_listen == ()
    assert config.facing("trunk", "tls", "127.0.0.1") == Target("tls", "127.0.0.1", 5060)
    plain = {"rules": RULES, "pbx": "127.0.0.1:5070", "trunk": ["127.0.0.1:5081"]}
    assert all(t.transport != "tls" for t in build_settings(plain)[0].advertised)
