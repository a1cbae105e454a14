"""A trunk given as a host name, resolved with SRV through a DNS server the test runs on loopback
(`--dns-server`): priority order as failover order, re-resolution on TTL, and a DNS failure
that keeps the last good answer. Every call is checked by the SIPp trunk that takes it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.calls import PBX_HANGS_UP, Outbound, loopback, outbound_sides
from tests.e2e.ports import free_port
from tests.e2e.proxy_process import Endpoint, ProxyProcess
from tests.e2e.sipp import SippSide, assert_all_succeeded, run_with_servers
from tests.loopback_dns import LoopbackDns, loopback_dns

CALL = Outbound("1001", "00442079460000", "+3228880001")
SRV_NAME = "_sip._udp.trunk.test"
TTL_S = 1


@dataclass(frozen=True)
class NamedTrunk(Endpoint):
    """`--trunk trunk.test`: a name without a port, so the proxy asks for SRV records."""

    def option(self) -> str:
        return f"{self.transport}:{self.host}"


@pytest.fixture
def dns_server() -> Iterator[LoopbackDns]:
    with loopback_dns() as server:
        yield server


def trunk(name: str, host: str, port: int, scenario: str, status: str | None = None) -> SippSide:
    variables = CALL.trunk_variables(host) | ({"status": status} if status else {})
    return SippSide(name=name, scenario=scenario, host=host, port=port, variables=variables,
                    timeout_s=30)


def test_srv_trunk_failover_ttl_refresh_and_dns_failure(
    tmp_path: Path, rules_file: Path, dns_server: LoopbackDns
) -> None:
    hosts = ("127.0.0.1", "127.0.0.3", "127.0.0.4")
    ports = [free_port(host) for host in hosts]
    # Listed backwards: the failover order must come from the priorities.
    dns_server.set(SRV_NAME, "SRV", TTL_S, [f"20 0 {ports[1]} backup.trunk.test.",
                                            f"10 0 {ports[0]} main.trunk.test."])
    dns_server.set("main.trunk.test", "A", TTL_S, [hosts[0]])
    dns_server.set("backup.trunk.test", "A", TTL_S, [hosts[1]])
    dns_server.set("third.trunk.test", "A", TTL_S, [hosts[2]])
    proxy = ProxyProcess(
        workdir=tmp_path, rules=rules_file, listen=loopback(free_port()),
        pbx=loopback(free_port()), trunk=NamedTrunk("trunk.test", 0),
        extra_args=["--dns-server", dns_server.option()],
    )
    proxy.start()
    try:
        _, pbx = outbound_sides(CALL, proxy, PBX_HANGS_UP)
        # 1. Priority 10 refuses with 503: the call goes to priority 20.
        results, pbx_result = run_with_servers(
            [trunk("main", hosts[0], ports[0], "trunk_uas_reject.xml", "503"),
             trunk("backup", hosts[1], ports[1], PBX_HANGS_UP[0])], pbx, tmp_path)
        assert_all_succeeded([*results, pbx_result], calls=1, context=proxy.log_tail())

        # 2. The TTL expires and the new answer replaces the old one.
        dns_server.set(SRV_NAME, "SRV", TTL_S, [f"10 0 {ports[2]} third.trunk.test."])
        proxy.wait_for_log(f"resolved to {hosts[2]}:{ports[2]}")
        third = trunk("third", hosts[2], ports[2], PBX_HANGS_UP[0])
        results, pbx_result = run_with_servers([third], pbx, tmp_path)
        assert_all_succeeded([*results, pbx_result], calls=1, context=proxy.log_tail())

        # 3. DNS fails: logged, and the last good answer is still used.
        dns_server.failing = True
        proxy.wait_for_log("DNS lookup failed")
        results, pbx_result = run_with_servers([third], pbx, tmp_path)
        assert_all_succeeded([*results, pbx_result], calls=1, context=proxy.log_tail())
    finally:
        assert proxy.stop() == 0, proxy.log_tail()
