"""Failover between several --trunk's, with the real proxy and real SIPp on every side.

Trunk 1 listens on 127.0.0.1, trunk 2 on 127.0.0.3, so the From / P-Asserted-Identity host each
trunk's scenario checks proves the request was built anew for that trunk; the BYE that trunk 2's
scenario expects proves our Record-Route's `tr=N` sends the dialog to the trunk that took the call.
Every check lives in the SIPp scenarios (see sipp_scenarios/); a failed check fails that side's
call, which shows in its exit code and stat CSV.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.e2e.calls import BUSY, PBX_HANGS_UP, TRUNK_HANGS_UP, Outbound, outbound_sides
from tests.e2e.conftest import StartProxy
from tests.e2e.ports import free_port, is_bound
from tests.e2e.proxy_process import Endpoint, ProxyProcess
from tests.e2e.sipp import SippResult, SippSide, assert_all_succeeded, run_with_servers

SECOND_TRUNK_HOST = "127.0.0.3"
CALL = Outbound("1001", "00442079460000", "+3228880001")
REJECT = "trunk_uas_reject.xml"
ANSWER = "trunk_uas_call.xml"
# Statuses that make the proxy try the next trunk (README, "Failover").
FAILOVER_STATUSES = ["408", "500", "502", "503", "504"]


def second_trunk(transport: str) -> Endpoint:
    return Endpoint(SECOND_TRUNK_HOST, free_port(SECOND_TRUNK_HOST), transport)


def trunk_side(name: str, scenario: str, trunk: Endpoint, status: str | None = None) -> SippSide:
    """A SIPp trunk (server) on `trunk`, expecting CALL's number with `trunk`'s own host;
    `status` is the final response of trunk_uas_reject.xml."""
    variables = CALL.trunk_variables(trunk.host)
    if status is not None:
        variables["status"] = status
    return SippSide(
        name=name,
        scenario=scenario,
        host=trunk.host,
        port=trunk.port,
        transport=trunk.transport,
        variables=variables,
        timeout_s=40,
    )


def pbx_side(proxy: ProxyProcess, scenario: str) -> SippSide:
    """The PBX (client) playing `scenario` toward the proxy, as in the single-trunk tests."""
    _, pbx = outbound_sides(CALL, proxy, (ANSWER, scenario))
    return pbx


def place(
    proxy: ProxyProcess, trunks: Sequence[SippSide], pbx: SippSide, workdir: Path
) -> tuple[list[SippResult], SippResult]:
    """Run the trunks and the PBX; every side must have completed its one call."""
    trunk_results, pbx_result = run_with_servers(trunks, pbx, workdir)
    assert_all_succeeded([*trunk_results, pbx_result], calls=1, context=proxy.log_tail())
    return trunk_results, pbx_result


@pytest.mark.parametrize("status", FAILOVER_STATUSES)
def test_a_failing_first_trunk_hands_the_call_to_the_second_which_gets_the_bye(
    start_proxy: StartProxy, tmp_path: Path, status: str
) -> None:
    proxy = start_proxy("udp", extra_trunks=[second_trunk("udp")])
    (trunk2_endpoint,) = proxy.extra_trunks
    trunk1 = trunk_side("trunk1", REJECT, proxy.trunk, status)
    trunk2 = trunk_side("trunk2", ANSWER, trunk2_endpoint)
    place(proxy, [trunk1, trunk2], pbx_side(proxy, PBX_HANGS_UP[1]), tmp_path)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_the_second_trunk_hangs_up_and_its_bye_reaches_the_pbx_restored(
    start_proxy: StartProxy, tmp_path: Path, transport: str
) -> None:
    proxy = start_proxy(transport, extra_trunks=[second_trunk(transport)])
    (trunk2_endpoint,) = proxy.extra_trunks
    hangup_trunk, hangup_pbx = TRUNK_HANGS_UP
    trunk1 = trunk_side("trunk1", REJECT, proxy.trunk, "503")
    trunk2 = trunk_side("trunk2", hangup_trunk, trunk2_endpoint)
    place(proxy, [trunk1, trunk2], pbx_side(proxy, hangup_pbx), tmp_path)


def test_an_unreachable_tcp_trunk_fails_over_at_once_to_the_next(
    start_proxy: StartProxy, tmp_path: Path
) -> None:
    proxy = start_proxy("tcp", extra_trunks=[second_trunk("tcp")])
    (trunk2_endpoint,) = proxy.extra_trunks
    assert proxy.trunk.transport == trunk2_endpoint.transport == proxy.pbx.transport == "tcp"
    assert not is_bound(proxy.trunk.host, proxy.trunk.port, "tcp"), "trunk 1 must refuse"
    trunk2 = trunk_side("trunk2", ANSWER, trunk2_endpoint)
    pbx = pbx_side(proxy, PBX_HANGS_UP[1])
    # Connection refused is immediate: well inside the PBX's 10 s wait for each response.
    place(proxy, [trunk2], pbx, tmp_path)


@pytest.mark.parametrize(
    ("status1", "status2"), [("503", "503"), ("500", "503")], ids=["503-503", "500-503"]
)
def test_when_every_trunk_fails_the_pbx_hears_the_last_ones_answer(
    start_proxy: StartProxy, tmp_path: Path, status1: str, status2: str
) -> None:
    """500 then 503: the PBX's scenario accepts only the 503, so the first answer is not relayed."""
    proxy = start_proxy("udp", extra_trunks=[second_trunk("udp")])
    (trunk2_endpoint,) = proxy.extra_trunks
    trunk1 = trunk_side("trunk1", REJECT, proxy.trunk, status1)
    trunk2 = trunk_side("trunk2", REJECT, trunk2_endpoint, status2)
    place(proxy, [trunk1, trunk2], pbx_side(proxy, "pbx_uac_unavailable.xml"), tmp_path)


def test_a_busy_first_trunk_is_final_and_the_second_hears_nothing(
    start_proxy: StartProxy, tmp_path: Path
) -> None:
    proxy = start_proxy("udp", extra_trunks=[second_trunk("udp")])
    (trunk2_endpoint,) = proxy.extra_trunks
    busy_trunk, busy_pbx = BUSY
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as trunk2:
        trunk2.bind((trunk2_endpoint.host, trunk2_endpoint.port))
        trunk1 = trunk_side("trunk1", busy_trunk, proxy.trunk)
        place(proxy, [trunk1], pbx_side(proxy, busy_pbx), tmp_path)
        # The PBX has its 486 and sent the ACK: a failover would have reached trunk 2 by now.
        trunk2.settimeout(0.5)
        with pytest.raises(TimeoutError):
            data = trunk2.recv(65536)
            pytest.fail(f"trunk 2 got a datagram after a 486 on trunk 1:\n{data!r}")
