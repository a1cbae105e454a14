"""In-dialog requests go where RFC 3261 16.12 says (the first Route left after ours, else the
Request-URI), but only ever to the dialog's peer: its host, another port or transport."""

from __future__ import annotations

import pytest

from proxy.sip.addresses import Target
from proxy.sip.grammar import parse_sip_uri
from proxy.sip.next_hop import dialog_next_hop
from tests.proxy.sip.support import (
    PBX,
    TRUNK,
    TRUNK_SOURCE,
    Clocked,
    forwarded_invite,
    in_dialog,
    make_core,
    response_to,
    values,
)

PBX_UDP = Target("udp", "10.0.0.5", 5060, "pbx.example.com")
PBX_V6 = Target("udp", "2001:db8::5", 5060)


@pytest.mark.parametrize(("configured", "route", "uri", "expected"), [
    # the PBX's Contact over TLS, as it reached us: that port, TLS, the name kept for its cert
    (PBX_UDP, None, "sip:1002@10.0.0.5:5071;transport=tls", Target("tls", "10.0.0.5", 5071)),
    (PBX_UDP, None, "sips:1002@10.0.0.5", Target("tls", "10.0.0.5", 5061)),
    (PBX_UDP, None, "sip:1002@10.0.0.5;transport=TCP", Target("tcp", "10.0.0.5", 5060)),
    (PBX_UDP, None, "sip:1002@10.0.0.5:5070", Target("udp", "10.0.0.5", 5070)),
    (PBX_UDP, None, "sip:1002@10.0.0.5", PBX_UDP),
    (PBX_UDP, None, "sip:1002@10.0.0.5;transport=sctp", PBX_UDP),  # not ours to speak
    # another host: never followed (no open relay), whatever it asks for
    (PBX_UDP, None, "sip:1002@192.0.2.66:5071;transport=tls", PBX_UDP),
    (PBX_UDP, None, "sip:1002@pbx.example.com:5070", PBX_UDP),
    (PBX_UDP, None, None, PBX_UDP),  # a tel: Request-URI
    # a Route left after ours comes first (the trunk's own Record-Route)
    (TRUNK, "sip:127.0.0.1:5090;lr", "sip:callee@127.0.0.1:5080", Target("udp", "127.0.0.1", 5090)),
    (TRUNK, "sip:198.51.100.4:5060;lr", "sip:callee@127.0.0.1:5085", TRUNK),
    (TRUNK, "<not a uri>", "sip:callee@127.0.0.1:5085", TRUNK),
    (PBX_V6, None, "sip:1002@[2001:DB8:0::5]:5070", Target("udp", "2001:db8::5", 5070)),
])
def test_next_hop(configured: Target, route: str | None, uri: str | None, expected: Target) -> None:
    got = dialog_next_hop(configured, route, parse_sip_uri(uri) if uri else None)
    assert got == expected
    assert got.name == configured.name


def test_the_trunks_bye_reaches_the_pbx_at_its_contact_over_its_transport() -> None:
    """An outbound call from a PBX whose Contact says TCP: the trunk's BYE goes to the PBX
    over TCP at that port, not over `--pbx`'s UDP (an interop finding: a TCP-only PBX never
    got the BYE, a TLS one got it in the clear)."""
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    ok = response_to(fwd, 200, "OK", extra="Contact: <sip:callee@127.0.0.1:5080>")
    (to_pbx,) = [o for o in clocked.receive(ok, TRUNK_SOURCE, at=0.1) if o.target == PBX]
    (record_route,) = values(to_pbx.data, "Record-Route")
    bye = in_dialog(
        "BYE", uri="sip:1001@127.0.0.1:5072;transport=tcp",
        via="SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-trunk-bye",
        from_="<sip:00442079460000@127.0.0.1>;tag=trunk-1",
        to='"+3228880001" <sip:+3228880001@127.0.0.1>;tag=pbx-tag-1', route=record_route,
    )
    out = clocked.receive(bye, TRUNK_SOURCE, at=1.0)
    assert [o.target for o in out if o.data.startswith(b"BYE ")] == [
        Target("tcp", "127.0.0.1", 5072)
    ]


def test_a_contact_naming_the_other_side_is_not_followed() -> None:
    """PBX, trunk and proxy on one host (loopback): a trunk's request whose Request-URI names
    the trunk's own port would be reflected: it goes to the PBX as configured."""
    clocked = Clocked(make_core())
    forwarded_invite(clocked)
    for number, uri in enumerate(("sip:x@127.0.0.1:5080", "sip:x@127.0.0.1:5080;transport=tcp")):
        bye = in_dialog(
            "BYE", uri=uri, via=f"SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-reflect-{number}",
            from_="<sip:00442079460000@127.0.0.1>;tag=trunk-1",
            to='"+3228880001" <sip:+3228880001@127.0.0.1>;tag=pbx-tag-1',
            call_id=f"reflect-{number}@trunk",
        )
        out = clocked.receive(bye, TRUNK_SOURCE, at=1.0)
        assert [o.target for o in out if o.data.startswith(b"BYE ")] == [PBX], uri
