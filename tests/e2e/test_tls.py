"""SIP over TLS on both sides of the proxy, with certificates the test makes.

Debian's SIPp has no TLS, so stunnel stands in front of it: the PBX's SIPp (TCP) -> stunnel
client (which verifies the proxy's certificate against the test CA) -> the proxy's `tls:` listen
address; the proxy's `tls:` trunk -> stunnel server (presenting the trunk's certificate) -> the
trunk's SIPp (TCP). The trunk's scenario checks the caller ID, as over UDP and TCP.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.certs import TestCa
from tests.e2e.calls import PBX_HANGS_UP, Outbound, loopback, outbound_sides
from tests.e2e.ports import free_port
from tests.e2e.proxy_process import Endpoint, ProxyProcess
from tests.e2e.sipp import SippSide, assert_all_succeeded, run_with_servers
from tests.e2e.stunnel import STUNNEL, stunnel
from tests.e2e.test_dns_trunk import NamedTrunk
from tests.loopback_dns import loopback_dns

pytestmark = pytest.mark.skipif(STUNNEL is None, reason="stunnel (Debian stunnel4) not installed")

TRUNK_HOST = "127.0.0.3"  # not the PBX's address: the trunk side is told apart by it
SECOND_TRUNK_HOST = "127.0.0.4"
CALL = Outbound("1002", "00442079460000", "+442071234567")


@pytest.fixture
def ca(tmp_path: Path) -> TestCa:
    return TestCa(tmp_path)


@pytest.fixture
def proxies(tmp_path: Path, rules_file: Path) -> Iterator[list[ProxyProcess]]:
    started: list[ProxyProcess] = []
    yield started
    codes = [(proxy.stop(), proxy) for proxy in started]
    bad = [proxy.log_tail() for code, proxy in codes if code != 0]
    assert not bad, "a proxy did not exit 0 on SIGTERM\n" + "\n".join(bad)


def start_proxy(
    proxies: list[ProxyProcess], tmp_path: Path, rules_file: Path, pbx: Endpoint,
    trunks: Sequence[Endpoint], extra_args: Sequence[str],
) -> ProxyProcess:
    proxy = ProxyProcess(
        workdir=tmp_path, rules=rules_file, listen=loopback(free_port()), pbx=pbx,
        trunk=trunks[0], extra_trunks=trunks[1:], extra_args=extra_args,
    )
    proxies.append(proxy)
    proxy.start()
    return proxy


def trunk_sipp(name: str, port: int, transport: str, host: str = TRUNK_HOST) -> SippSide:
    return SippSide(
        name=name, scenario=PBX_HANGS_UP[0], host=host, port=port, transport=transport,
        variables=CALL.trunk_variables(host), timeout_s=40,
    )


def test_a_call_over_tls_on_both_sides_shows_the_rules_caller_id(
    tmp_path: Path, rules_file: Path, ca: TestCa, proxies: list[ProxyProcess]
) -> None:
    proxy_cert = ca.issue("proxy", ["localhost"], ["127.0.0.1"])
    trunk_cert = ca.issue("trunk", ["localhost"], [TRUNK_HOST])
    tls_listen = free_port()
    pbx_tunnel = free_port()
    trunk_tls = Endpoint(TRUNK_HOST, free_port(TRUNK_HOST), "tls")
    trunk_tcp = free_port(TRUNK_HOST)
    proxy = start_proxy(
        proxies, tmp_path, rules_file, loopback(free_port(), "tcp"), [trunk_tls],
        ["--listen", f"tls:127.0.0.1:{tls_listen}", "--tls-cert", str(proxy_cert.cert),
         "--tls-key", str(proxy_cert.key), "--tls-ca", str(ca.ca_file)],
    )
    with stunnel(tmp_path, "pbx", ("127.0.0.1", pbx_tunnel), ("127.0.0.1", tls_listen),
                 client=True, ca_file=ca.ca_file, check_ip="127.0.0.1") as pbx_log, \
         stunnel(tmp_path, "trunk", (TRUNK_HOST, trunk_tls.port), (TRUNK_HOST, trunk_tcp),
                 client=False, issued=trunk_cert):
        _, pbx = outbound_sides(CALL, proxy)
        pbx = dataclasses.replace(pbx, remote=f"127.0.0.1:{pbx_tunnel}")
        trunks, pbx_result = run_with_servers([trunk_sipp("trunk", trunk_tcp, "tcp")], pbx,
                                              tmp_path)
        context = proxy.log_tail() + "\n" + pbx_log.read_text(errors="replace")[-3000:]
        assert_all_succeeded([*trunks, pbx_result], calls=1, context=context)
    # Both hops really were TLS: the trunk saw our TLS Via and Record-Route.
    assert f"SIP/2.0/TLS 127.0.0.1:{tls_listen}" in trunks[0].messages
    assert f"<sip:127.0.0.1:{tls_listen};transport=tls;lr" in trunks[0].messages


@pytest.mark.parametrize("verify", [True, False], ids=["verified", "verification-off"])
def test_a_trunk_certificate_for_another_name_is_refused_unless_verification_is_off(
    tmp_path: Path, rules_file: Path, ca: TestCa, proxies: list[ProxyProcess], verify: bool
) -> None:
    """Verified: the TLS trunk is a transport failure, the call fails over to the second trunk.
    Off: the first trunk takes the call."""
    wrong = ca.issue("wrong", ["wrong.example"], [])
    trunk_tls = Endpoint(TRUNK_HOST, free_port(TRUNK_HOST), "tls")
    trunk_tcp = free_port(TRUNK_HOST)
    second = Endpoint(SECOND_TRUNK_HOST, free_port(SECOND_TRUNK_HOST), "udp")
    args = ["--tls-ca", str(ca.ca_file)] + ([] if verify else ["--tls-no-verify"])
    proxy = start_proxy(proxies, tmp_path, rules_file, loopback(free_port()), [trunk_tls, second],
                        args)
    answering = (trunk_sipp("trunk2", second.port, "udp", SECOND_TRUNK_HOST) if verify
                 else trunk_sipp("trunk1", trunk_tcp, "tcp"))
    with stunnel(tmp_path, "trunk", (TRUNK_HOST, trunk_tls.port), (TRUNK_HOST, trunk_tcp),
                 client=False, issued=wrong):
        _, pbx = outbound_sides(CALL, proxy)
        trunks, pbx_result = run_with_servers([answering], pbx, tmp_path)
        assert_all_succeeded([*trunks, pbx_result], calls=1, context=proxy.log_tail())
    log = proxy.log_file.read_text()
    assert ("certificate verify failed" in log) is verify, proxy.log_tail()


def test_a_tls_trunk_found_by_srv_is_verified_against_its_domain(
    tmp_path: Path, rules_file: Path, ca: TestCa, proxies: list[ProxyProcess]
) -> None:
    """`--trunk tls:trunk.test`: `_sips._tcp.trunk.test` SRV -> its target's address, and the
    certificate checked against `trunk.test` (RFC 5922 7.2), not against an IP or the SRV
    target's name: a certificate for trunk.test only is accepted."""
    trunk_cert = ca.issue("trunk", ["trunk.test"], [])
    trunk_tls, trunk_tcp = free_port(TRUNK_HOST), free_port(TRUNK_HOST)
    with loopback_dns() as dns_server:
        dns_server.set("_sips._tcp.trunk.test", "SRV", 60, [f"10 0 {trunk_tls} sbc1.trunk.test."])
        dns_server.set("sbc1.trunk.test", "A", 60, [TRUNK_HOST])
        proxy = start_proxy(
            proxies, tmp_path, rules_file, loopback(free_port()),
            [NamedTrunk("trunk.test", 0, "tls")],
            ["--tls-ca", str(ca.ca_file), "--dns-server", dns_server.option()],
        )
        with stunnel(tmp_path, "trunk", (TRUNK_HOST, trunk_tls), (TRUNK_HOST, trunk_tcp),
                     client=False, issued=trunk_cert):
            _, pbx = outbound_sides(CALL, proxy)
            trunks, pbx_result = run_with_servers([trunk_sipp("trunk", trunk_tcp, "tcp")], pbx,
                                                  tmp_path)
            assert_all_succeeded([*trunks, pbx_result], calls=1, context=proxy.log_tail())
