"""A proxy between two networks shows each side its own address: the PBX a LAN address, the
trunk a public (or NAT) one, in Via and Record-Route; the dialog comes back through both."""

from __future__ import annotations

from proxy.sip.addresses import Source, Target
from proxy.sip.core import ProxyCore
from proxy.sip.policy import ProxyConfig
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

LAN, PUBLIC = "10.0.0.1", "203.0.113.5"  # documentation/private values: no traffic is sent
PBX = Target("udp", "10.0.0.9", 5060)
PBX_SOURCE = Source("udp", "10.0.0.9", 5060)
TRUNK = Target("udp", "198.51.100.7", 5060)
TRUNK_SOURCE = Source("udp", "198.51.100.7", 5060)


def two_sided() -> Clocked:
    advertised = tuple(
        Target(transport, host, 5060) for host in (LAN, PUBLIC) for transport in ("udp", "tcp")
    )
    config = ProxyConfig(
        advertised=advertised, pbx=PBX, trunk=TRUNK, secret=b"s",
        pbx_facing=LAN, trunk_facing=PUBLIC,
    )
    return Clocked(ProxyCore(config, FixedPolicy()))


def pbx_invite() -> bytes:
    return invite().replace(b"127.0.0.1:5070", b"10.0.0.9:5060")


def test_the_trunk_sees_the_public_address_and_the_pbx_the_lan_one() -> None:
    clocked = two_sided()
    (fwd,) = sent_to(clocked.receive(pbx_invite(), PBX_SOURCE), TRUNK)
    assert values(fwd, "Via")[0].startswith(f"SIP/2.0/UDP {PUBLIC}:5060;branch=z9hG4bK")
    top, second = values(fwd, "Record-Route")
    assert top.startswith(f"<sip:{PUBLIC}:5060;lr;cid=")
    assert second == f"<sip:{LAN}:5060;lr>"
    assert value(fwd, "From").startswith('"+3228880001" <sip:+3228880001@198.51.100.7>')


def test_the_dialog_comes_back_through_both_entries() -> None:
    clocked = two_sided()
    (fwd,) = sent_to(clocked.receive(pbx_invite(), PBX_SOURCE), TRUNK)
    ok = response_to(fwd, 200, "OK", extra="Contact: <sip:callee@198.51.100.7>")
    (to_pbx,) = sent_to(clocked.receive(ok, TRUNK_SOURCE, at=0.1), PBX)
    assert value(to_pbx, "From") == ORIGINAL_FROM
    bye = in_dialog(
        "BYE",
        uri="sip:callee@198.51.100.7",
        via="SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-bye;rport",
        from_=ORIGINAL_FROM,
        to=value(to_pbx, "To"),
        route=", ".join(reversed(values(to_pbx, "Record-Route"))),
    )
    (forwarded,) = sent_to(clocked.receive(bye, PBX_SOURCE, at=1.0), TRUNK)
    assert values(forwarded, "Route") == []
    assert value(forwarded, "From") == value(fwd, "From")
    assert values(forwarded, "Via")[0].startswith(f"SIP/2.0/UDP {PUBLIC}:5060;")


def test_an_inbound_call_shows_the_pbx_the_lan_address_on_top() -> None:
    clocked = two_sided()
    inbound = (
        b"INVITE sip:3228880000@10.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-in-1\r\n"
        b"Max-Forwards: 70\r\nFrom: <sip:+442079460000@198.51.100.7>;tag=t1\r\n"
        b"To: <sip:+3228880000@203.0.113.5>\r\nCall-ID: in-1@trunk\r\nCSeq: 1 INVITE\r\n"
        b"Contact: <sip:+442079460000@198.51.100.7>\r\nContent-Length: 0\r\n\r\n"
    )
    (fwd,) = sent_to(clocked.receive(inbound, TRUNK_SOURCE), PBX)
    assert values(fwd, "Via")[0].startswith(f"SIP/2.0/UDP {LAN}:5060;branch=z9hG4bK")
    mark = clocked.core.config.identity_seal.mark("in-1@trunk")  # no identity: the dialog's mark
    assert values(fwd, "Record-Route") == [
        f"<sip:{LAN}:5060;lr;dlg={mark}>", f"<sip:{PUBLIC}:5060;lr>"
    ]
