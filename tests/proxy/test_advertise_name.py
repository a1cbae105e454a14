"""A proxy shown to the trunk by a host name (`--advertise-trunk sbc.example.com`): the name goes
into Via and Record-Route as is, the trunk's answers and in-dialog requests come back to it."""

from __future__ import annotations

from proxy.run_cli import build_settings
from proxy.sip.addresses import Source, Target
from proxy.sip.core import ProxyCore
from tests.proxy.sip.support import (
    ORIGINAL_FROM,
    Clocked,
    FixedPolicy,
    in_dialog,
    invite,
    response_to,
    sent_to,
    value,
    values,
)
from tests.proxy.test_run_settings import EXAMPLE_RULES

NAME = "sbc.example.com"
PBX = Target("udp", "10.0.0.9", 5060)
PBX_SOURCE = Source("udp", "10.0.0.9", 5060)
TRUNK = Target("udp", "198.51.100.7", 5060)
TRUNK_SOURCE = Source("udp", "198.51.100.7", 5060)


def named() -> Clocked:
    config, _, _ = build_settings({
        "rules": str(EXAMPLE_RULES), "pbx": "10.0.0.9:5060", "trunk": ["198.51.100.7:5060"],
        "secret": "s", "listen": ["0.0.0.0:5060"],
        "advertise_pbx": "10.0.0.1", "advertise_trunk": "SBC.example.com",
    })
    return Clocked(ProxyCore(config, FixedPolicy()))


def test_the_trunk_sees_the_name_and_the_dialog_comes_back() -> None:
    clocked = named()
    pbx_invite = invite().replace(b"127.0.0.1:5070", b"10.0.0.9:5060")
    (fwd,) = sent_to(clocked.receive(pbx_invite, PBX_SOURCE), TRUNK)
    assert values(fwd, "Via")[0].startswith(f"SIP/2.0/UDP {NAME}:5060;branch=z9hG4bK")
    top, second = values(fwd, "Record-Route")
    assert top.startswith(f"<sip:{NAME}:5060;lr;cid=")
    assert second == "<sip:10.0.0.1:5060;lr>"
    ok = response_to(fwd, 200, "OK", extra="Contact: <sip:callee@198.51.100.7>")
    (to_pbx,) = sent_to(clocked.receive(ok, TRUNK_SOURCE, at=0.1), PBX)
    assert value(to_pbx, "From") == ORIGINAL_FROM
    bye = in_dialog(
        "BYE",
        uri="sip:+3228880001@10.0.0.9:5060",
        via="SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-bye-t;rport",
        from_=value(ok, "To"),
        to=value(fwd, "From"),
        route=", ".join(values(ok, "Record-Route")),
    )
    (forwarded,) = sent_to(clocked.receive(bye, TRUNK_SOURCE, at=1.0), PBX)
    assert values(forwarded, "Route") == []
    assert value(forwarded, "To") == ORIGINAL_FROM
