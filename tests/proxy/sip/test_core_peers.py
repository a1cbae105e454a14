"""Scale-out behind a dispatcher: OPTIONS keepalives answered by the proxy itself, and a peer
instance (same secret, `--peer`) carrying on the dialogs another instance record-routed."""

from __future__ import annotations

from proxy.sip.addresses import Target
from proxy.sip.core import ProxyCore
from proxy.sip.policy import ProxyConfig
from tests.proxy.sip.support import (
    CALLEE,
    ORIGINAL_FROM,
    PBX,
    PBX_SOURCE,
    PROXY,
    REWRITTEN_FROM,
    SECRET,
    TRUNK,
    TRUNK_SOURCE,
    Clocked,
    FixedPolicy,
    forwarded_invite,
    in_dialog,
    make_core,
    response_to,
    sent_to,
    start_line,
    value,
    values,
)

INSTANCE_B = Target("udp", "127.0.0.1", 5062)


def options(uri: str, route: str = "") -> bytes:
    return (
        f"OPTIONS {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-ping-1;rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:dispatcher@127.0.0.1>;tag=ds-1\r\n"
        f"To: <{uri}>\r\nCall-ID: ping-1@ds\r\nCSeq: 1 OPTIONS\r\n{route}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_an_options_to_the_proxy_itself_is_answered_here() -> None:
    clocked = Clocked(make_core())
    out = clocked.receive(options("sip:127.0.0.1:5060"), PBX_SOURCE)
    assert [(o.target, start_line(o.data)) for o in out] == [(PBX, "SIP/2.0 200 OK")]
    assert value(out[0].data, "Call-ID") == "ping-1@ds"
    assert clocked.core.counters["options_answered"] == 1


def test_an_options_to_a_user_or_with_a_route_is_relayed() -> None:
    for request in (options("sip:1001@127.0.0.1:5060"),
                    options("sip:127.0.0.1:5060", "Route: <sip:10.9.9.9;lr>\r\n")):
        out = Clocked(make_core()).receive(request, PBX_SOURCE)
        assert sent_to(out, TRUNK), out


def instance_b(peers: tuple[Target, ...]) -> Clocked:
    config = ProxyConfig(
        advertised=(INSTANCE_B, Target("tcp", INSTANCE_B.host, INSTANCE_B.port)),
        pbx=PBX, trunk=TRUNK, secret=SECRET, peers=peers,
    )
    return Clocked(ProxyCore(config, FixedPolicy()))


def pbx_bye_of_a_call_through_instance_a() -> bytes:
    instance_a = Clocked(make_core())
    fwd = forwarded_invite(instance_a)
    ok = response_to(fwd, 200, "OK", extra="Contact: <sip:callee@127.0.0.1:5080>")
    (to_pbx,) = sent_to(instance_a.receive(ok, TRUNK_SOURCE, at=0.1), PBX)
    route = ", ".join(reversed(values(to_pbx, "Record-Route")))
    assert route.startswith(f"<sip:{PROXY.hostport()};lr;cid=")
    return in_dialog(
        "BYE", uri="sip:callee@127.0.0.1:5080",
        via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-pbx-bye;rport",
        from_=ORIGINAL_FROM, to=CALLEE, route=route,
    )


def test_a_peer_restores_the_dialog_of_another_instance_from_its_route() -> None:
    bye = pbx_bye_of_a_call_through_instance_a()
    peer_a = (Target("udp", PROXY.host, PROXY.port), Target("tcp", PROXY.host, PROXY.port))
    (forwarded,) = sent_to(instance_b(peer_a).receive(bye, PBX_SOURCE, at=2.0), TRUNK)
    assert values(forwarded, "Route") == []
    assert value(forwarded, "From") == REWRITTEN_FROM
    assert values(forwarded, "Via")[0].startswith("SIP/2.0/UDP 127.0.0.1:5062;branch=")


def test_without_peer_the_other_instances_route_is_left_and_from_is_not_restored() -> None:
    """Not told that A is a peer, B takes A's Route entry for another proxy's: left in place,
    and the request goes where it says (RFC 3261 16.12), here A on the trunk's host."""
    bye = pbx_bye_of_a_call_through_instance_a()
    (forwarded,) = sent_to(instance_b(()).receive(bye, PBX_SOURCE, at=2.0), PROXY)
    assert value(forwarded, "From") == ORIGINAL_FROM  # the PBX's own identity leaks out
    assert values(forwarded, "Route")[0].startswith(f"<sip:{PROXY.hostport()};lr;cid=")
