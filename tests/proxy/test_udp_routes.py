"""The socket a UDP datagram leaves from is worked out once per next hop, and that memory is
bounded (a stateless relay toward many stray hosts cannot grow it)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from proxy.server import UDP_ROUTES, ProxyServer, ServerSettings
from proxy.sip.addresses import Target
from proxy.transport import UdpEndpoint
from tests.proxy.example_server import CONFIG, example_server


def _server(tmp_path: Path) -> tuple[ProxyServer, UdpEndpoint, UdpEndpoint]:
    settings = ServerSettings(listen=(("127.0.0.1", 5060),), pid_file=tmp_path / "p.pid")
    server = example_server(settings)
    v4, v6 = cast(UdpEndpoint, object()), cast(UdpEndpoint, object())
    server._udp = [("127.0.0.1", v4), ("::1", v6)]
    return server, v4, v6


async def test_each_family_leaves_from_its_own_socket_and_the_choice_is_remembered(
    tmp_path: Path,
) -> None:
    server, v4, v6 = _server(tmp_path)
    assert server._udp_for(CONFIG.pbx) is v4
    assert server._udp_for(Target("udp", "::1", 5080)) is v6
    assert set(server._udp_routes) == {("127.0.0.1", 5070), ("::1", 5080)}
    server._udp = []  # remembered: the list is not read again for a known next hop
    assert server._udp_for(CONFIG.pbx) is v4


async def test_the_memory_of_next_hops_is_bounded(tmp_path: Path) -> None:
    server, v4, v6 = _server(tmp_path)
    for n in range(3 * UDP_ROUTES):
        host = f"10.{n // 65536}.{n // 256 % 256}.{n % 256}" if n % 2 else f"fd00::{n:x}"
        assert server._udp_for(Target("udp", host, 5060)) is (v4 if n % 2 else v6)
        assert len(server._udp_routes) <= UDP_ROUTES
