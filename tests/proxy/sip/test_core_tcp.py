"""Stream legs: replies on the PBX's own connection, no retransmission timers on a reliable leg,
and the double Record-Route of a UDP-to-TCP call taken out again in the dialog."""

from __future__ import annotations

from proxy.sip.addresses import Source, Target
from tests.proxy.sip.support import (
    CALLEE,
    ORIGINAL_FROM,
    PBX,
    PBX_SOURCE,
    REWRITTEN_FROM,
    Clocked,
    forwarded_invite,
    in_dialog,
    invite,
    make_core,
    response_to,
    sent_to,
    start_line,
    value,
    values,
)

PBX_TCP = Source("tcp", "127.0.0.1", 40000, connection=7)
TCP_TRUNK = Target("tcp", "127.0.0.1", 5080)
# The trunk answering on the connection the proxy opened to it: the port is the proxy's view.
TCP_TRUNK_SOURCE = Source("tcp", "127.0.0.1", 5080, connection=3, dialled=TCP_TRUNK)


def tcp_invite() -> bytes:
    return invite().replace(
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-inv-1;rport",
        b"Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-inv-1;rport",
    )


def test_answers_to_a_tcp_pbx_go_back_on_its_connection() -> None:
    clocked = Clocked(make_core())
    out = clocked.receive(tcp_invite(), PBX_TCP)
    (trying,) = [o for o in out if o.data.startswith(b"SIP/2.0 100")]
    assert (trying.target, trying.connection) == (PBX_TCP.reply_target(), 7)
    (fwd,) = [o.data for o in out if o.target.port == 5080]
    assert values(fwd, "Via")[1] == (
        "SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-inv-1;rport=40000;received=127.0.0.1"
    )
    # PBX on TCP, trunk on UDP: two Record-Route entries, the top one facing the trunk
    top, second = values(fwd, "Record-Route")
    assert top.startswith("<sip:127.0.0.1:5060;lr;cid=")  # the dialog's token rides once, on top
    assert second == "<sip:127.0.0.1:5060;transport=tcp;lr>"
    out = clocked.receive(response_to(fwd, 180, "Ringing"), Source("udp", "127.0.0.1", 5080))
    assert [(o.target, o.connection, value(o.data, "From")) for o in out] == [
        (PBX_TCP.reply_target(), 7, ORIGINAL_FROM)
    ]


def test_no_timer_g_toward_a_tcp_pbx() -> None:
    clocked = Clocked(make_core())
    out = clocked.receive(tcp_invite(), PBX_TCP)
    (fwd,) = [o.data for o in out if o.target.port == 5080]
    out = clocked.receive(response_to(fwd, 486, "Busy Here"), Source("udp", "127.0.0.1", 5080))
    assert [start_line(o.data) for o in out if o.connection == 7] == ["SIP/2.0 486 Busy Here"]
    assert [o for _, o in clocked.advance(100.0) if o.connection == 7] == []
    assert clocked.core.transaction_count == 0


def test_response_from_the_tcp_trunk_on_the_dialled_connection_is_the_trunks() -> None:
    clocked = Clocked(make_core(trunk=TCP_TRUNK))
    fwd = forwarded_invite(clocked)
    ephemeral = Source("tcp", "127.0.0.1", 41234, connection=3, dialled=TCP_TRUNK)
    out = clocked.receive(response_to(fwd, 200, "OK"), ephemeral, at=0.1)
    assert [(o.target, value(o.data, "From")) for o in out] == [(PBX, ORIGINAL_FROM)]


def test_udp_pbx_to_tcp_trunk_dialog_takes_both_route_entries_out() -> None:
    clocked = Clocked(make_core(trunk=TCP_TRUNK))
    fwd = forwarded_invite(clocked)
    ok = response_to(fwd, 200, "OK", extra="Contact: <sip:callee@127.0.0.1:5080;transport=tcp>")
    (to_pbx,) = sent_to(clocked.receive(ok, TCP_TRUNK_SOURCE, at=0.1), PBX)
    route = ", ".join(reversed(values(to_pbx, "Record-Route")))  # the UAC's route set
    assert route.count("cid=") == 1
    assert route.startswith("<sip:127.0.0.1:5060;lr>, ")  # the entry facing the PBX first

    bye = in_dialog(
        "BYE", uri="sip:callee@127.0.0.1:5080;transport=tcp",
        via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-pbx-bye;rport",
        from_=ORIGINAL_FROM, to=CALLEE, route=route,
    )
    out = clocked.receive(bye, PBX_SOURCE, at=2.0)
    (forwarded,) = [o.data for o in out if o.target == TCP_TRUNK]
    assert values(forwarded, "Route") == []
    assert value(forwarded, "From") == REWRITTEN_FROM
    assert values(forwarded, "Via")[0].startswith("SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK")

    trunk_route = ", ".join(values(ok, "Record-Route"))
    trunk_bye = in_dialog(
        "BYE", uri="sip:1001@127.0.0.1:5070",
        via="SIP/2.0/TCP 127.0.0.1:5080;branch=z9hG4bK-trunk-bye",
        from_=CALLEE, to=REWRITTEN_FROM, route=trunk_route, cseq=1,
    )
    out = clocked.receive(trunk_bye, TCP_TRUNK_SOURCE, at=3.0)
    (to_pbx_bye,) = sent_to(out, PBX)
    assert value(to_pbx_bye, "To") == ORIGINAL_FROM
    assert values(to_pbx_bye, "Route") == []
    assert values(to_pbx_bye, "Via")[0].startswith("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK")
