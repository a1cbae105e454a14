"""A ProxyServer on loopback with the example rules, not started: for the glue tests that drive
its methods directly (the loop check, the sending socket, the audit flush)."""

from __future__ import annotations

from pathlib import Path

from proxy.active_rules import ActiveRules
from proxy.server import ProxyServer, ServerSettings
from proxy.sip.addresses import Target
from proxy.sip.policy import ProxyConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ProxyConfig(
    advertised=(Target("udp", "127.0.0.1", 5060),),
    pbx=Target("udp", "127.0.0.1", 5070),
    trunk=Target("udp", "127.0.0.1", 5080),
    secret=b"s",
)


def example_server(settings: ServerSettings) -> ProxyServer:
    return ProxyServer(CONFIG, ActiveRules.load(ROOT / "rules" / "example.yaml"), settings)
