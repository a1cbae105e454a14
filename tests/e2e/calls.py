"""Building the two SIPp sides of the calls the end-to-end tests place through the proxy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.e2e.proxy_process import Endpoint, ProxyProcess
from tests.e2e.sipp import SippResult, SippSide, assert_all_succeeded, run_pair

# Display names the example rules give their numbers; a number without one shows itself.
NUMBER_NAMES = {"+442071234567": "ACME UK"}


@dataclass(frozen=True)
class Outbound:
    """An outbound call: who dials what, and the number the trunk must see."""

    pbx_user: str
    destination: str
    expected_number: str

    def pbx_variables(self) -> dict[str, str]:
        return {"pbx_user": self.pbx_user, "destination": self.destination}

    def trunk_variables(self, trunk_host: str) -> dict[str, str]:
        return {
            "expected_number": self.expected_number,
            "expected_display": NUMBER_NAMES.get(self.expected_number, self.expected_number),
            "expected_host": trunk_host,
        }


# Outbound flows: (trunk side scenario, PBX side scenario).
PBX_HANGS_UP = ("trunk_uas_call.xml", "pbx_uac_call.xml")
TRUNK_HANGS_UP = ("trunk_uas_hangup.xml", "pbx_uac_remote_hangup.xml")
CANCELLED = ("trunk_uas_cancel.xml", "pbx_uac_cancel.xml")
BUSY = ("trunk_uas_busy.xml", "pbx_uac_busy.xml")


def outbound_sides(
    call: Outbound,
    proxy: ProxyProcess,
    flow: tuple[str, str] = PBX_HANGS_UP,
    calls: int = 1,
    rate: float | None = None,
) -> tuple[SippSide, SippSide]:
    """The trunk side (server, on the proxy's trunk address) and the PBX side (client)."""
    trunk_scenario, pbx_scenario = flow
    timeout_s = 30 if rate is None else 30 + int(calls / rate)
    trunk = SippSide(
        name="trunk",
        scenario=trunk_scenario,
        host=proxy.trunk.host,
        port=proxy.trunk.port,
        transport=proxy.trunk.transport,
        variables=call.trunk_variables(proxy.trunk.host),
        calls=calls,
        timeout_s=timeout_s + 10,
    )
    pbx = SippSide(
        name="pbx",
        scenario=pbx_scenario,
        host=proxy.pbx.host,
        port=proxy.pbx.port,
        transport=proxy.pbx.transport,
        remote=proxy.listen.address(),
        variables=call.pbx_variables(),
        calls=calls,
        rate=rate,
        timeout_s=timeout_s,
    )
    return trunk, pbx


def place_outbound(
    call: Outbound,
    proxy: ProxyProcess,
    workdir: Path,
    flow: tuple[str, str] = PBX_HANGS_UP,
    calls: int = 1,
    rate: float | None = None,
) -> tuple[SippResult, SippResult]:
    """Run an outbound flow through the proxy and assert every call succeeded on both sides."""
    trunk, pbx = outbound_sides(call, proxy, flow, calls, rate)
    results = run_pair(trunk, pbx, workdir)
    assert_all_succeeded(results, calls, proxy.log_tail())
    return results


def inbound_sides(caller: str, callee: str, proxy: ProxyProcess) -> tuple[SippSide, SippSide]:
    """The PBX side (server) and the trunk side (client, bound to the proxy's trunk address)."""
    trunk_host = proxy.trunk.host
    pbx = SippSide(
        name="pbx",
        scenario="pbx_uas_inbound.xml",
        host=proxy.pbx.host,
        port=proxy.pbx.port,
        transport=proxy.pbx.transport,
        variables={
            "expected_from": f'"Remote {caller}" <sip:{caller}@{trunk_host}>',
            "expected_to": f"<sip:{callee}@{trunk_host}>",
        },
        timeout_s=40,
    )
    trunk = SippSide(
        name="trunk",
        scenario="trunk_uac_inbound.xml",
        host=trunk_host,
        port=proxy.trunk.port,
        transport=proxy.trunk.transport,
        remote=proxy.listen.address(),
        variables={"caller": caller, "callee": callee},
    )
    return pbx, trunk


def loopback(port: int, transport: str = "udp") -> Endpoint:
    return Endpoint("127.0.0.1", port, transport)
