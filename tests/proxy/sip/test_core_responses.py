"""Responses from the trunk: our Via off, the PBX's From back, 100 hop by hop, stateless 2xx."""

from __future__ import annotations

import pytest

from proxy.sip.addresses import Source
from proxy.sip.events import Dropped
from tests.proxy.sip.support import (
    ORIGINAL_FROM,
    PBX,
    TRUNK,
    TRUNK_SOURCE,
    Clocked,
    forwarded_invite,
    invite,
    make_core,
    our_via_removed,
    response_to,
    sent_to,
    value,
    values,
    with_header_replaced,
)


def pbx_view(response: bytes) -> bytes:
    """Exactly what the PBX must receive for a trunk `response` to the forwarded INVITE."""
    restored = with_header_replaced(response, "from", "From: " + ORIGINAL_FROM)
    return our_via_removed(restored)


@pytest.mark.parametrize(
    ("status", "reason"),
    [(180, "Ringing"), (183, "Session Progress"), (200, "OK")],
)
def test_response_reaches_the_pbx_without_our_via_and_with_its_from(
    status: int, reason: str
) -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    response = response_to(fwd, status, reason, extra="Contact: <sip:callee@127.0.0.1:5080>")
    out = clocked.receive(response, TRUNK_SOURCE, at=0.1)
    assert [o.data for o in out] == [pbx_view(response)]
    assert out[0].target == PBX
    assert value(out[0].data, "From") == ORIGINAL_FROM
    assert values(out[0].data, "Via") == [
        "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-inv-1;rport=5070;received=127.0.0.1"
    ]


def test_response_is_sent_to_the_received_and_rport_of_the_pbx_via() -> None:
    clocked = Clocked(make_core())
    nat = Source("udp", "127.0.0.1", 40000)
    out = clocked.receive(invite(), nat)
    fwd = sent_to(out, TRUNK)[0]
    out = clocked.receive(response_to(fwd, 180, "Ringing"), TRUNK_SOURCE, at=0.1)
    assert [(o.target.host, o.target.port) for o in out] == [("127.0.0.1", 40000)]


def test_our_via_as_first_value_of_a_comma_joined_line_is_removed() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    ours, pbx = values(fwd, "Via")
    response = with_header_replaced(response_to(fwd, 180, "Ringing"), "via", f"Via: {ours}, {pbx}")
    out = clocked.receive(response, TRUNK_SOURCE, at=0.1)
    (to_pbx,) = sent_to(out, PBX)
    assert values(to_pbx, "Via") == [pbx]
    assert to_pbx == with_header_replaced(
        with_header_replaced(response, "via", f"Via: {pbx}"), "from", "From: " + ORIGINAL_FROM
    )


def test_our_via_first_of_three_comma_joined_keeps_the_other_two() -> None:
    clocked = Clocked(make_core())
    request = invite().replace(
        b"branch=z9hG4bK-inv-1;rport",
        b"branch=z9hG4bK-inv-1;rport, SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-phone",
    )
    fwd = forwarded_invite(clocked, request)
    vias = values(fwd, "Via")
    joined = ", ".join(vias)
    response = with_header_replaced(response_to(fwd, 200, "OK"), "via", f"Via: {joined}")
    (to_pbx,) = sent_to(clocked.receive(response, TRUNK_SOURCE, at=0.1), PBX)
    assert values(to_pbx, "Via") == [vias[1]]
    assert vias[1].endswith("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-phone")


def test_100_trying_from_the_trunk_is_not_relayed_and_stops_retransmissions() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    out = clocked.receive(response_to(fwd, 100, "Trying", to_tag=None), TRUNK_SOURCE, at=0.1)
    assert out == []
    assert [o for _, o in clocked.advance(31.0)] == []


def test_2xx_retransmission_after_the_transaction_ended_is_relayed_with_from_restored() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    ok = response_to(fwd, 200, "OK", extra="Contact: <sip:callee@127.0.0.1:5080>")
    first = sent_to(clocked.receive(ok, TRUNK_SOURCE, at=0.1), PBX)
    assert first == [pbx_view(ok)]
    clocked.advance(200.0)  # every timer of the INVITE transaction has run out
    assert clocked.core.transaction_count == 0
    again = clocked.receive(ok, TRUNK_SOURCE, at=200.5)
    assert [(o.data, o.target) for o in again] == [(pbx_view(ok), PBX)]


def test_2xx_retransmission_reaching_a_restarted_proxy_is_restored_from_the_token() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    ok = response_to(fwd, 200, "OK")
    restarted = Clocked(make_core())
    out = restarted.receive(ok, TRUNK_SOURCE, at=1.0)
    assert [(o.data, o.target) for o in out] == [(pbx_view(ok), PBX)]


def test_immediate_2xx_retransmission_is_relayed_too() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    ok = response_to(fwd, 200, "OK")
    clocked.receive(ok, TRUNK_SOURCE, at=0.1)
    assert sent_to(clocked.receive(ok, TRUNK_SOURCE, at=0.6), PBX) == [pbx_view(ok)]


def test_provisional_retransmissions_are_each_relayed_with_from_restored() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    ringing = response_to(fwd, 180, "Ringing")
    for at in (0.1, 0.2):
        assert sent_to(clocked.receive(ringing, TRUNK_SOURCE, at=at), PBX) == [pbx_view(ringing)]


def test_response_whose_top_via_is_not_ours_is_dropped() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    _, pbx = values(fwd, "Via")
    stray = with_header_replaced(response_to(fwd, 180, "Ringing"), "via", f"Via: {pbx}")
    assert clocked.receive(stray, TRUNK_SOURCE, at=0.1) == []
    assert clocked.core.counters["dropped"] == 1


def test_timer_b_answers_the_pbx_once_with_408_for_the_invite() -> None:
    clocked = Clocked(make_core())
    forwarded_invite(clocked)
    late = [o for _, o in clocked.advance(32.0) if o.target == PBX]
    assert [value(o.data, "CSeq") for o in late] == ["1 INVITE"]
    assert late[0].data.startswith(b"SIP/2.0 408 Request Timeout\r\n")


def test_stateless_2xx_relay_also_removes_our_via_from_a_comma_joined_line() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    ours, pbx = values(fwd, "Via")
    ok = with_header_replaced(response_to(fwd, 200, "OK"), "via", f"Via: {ours}, {pbx}")
    restarted = Clocked(make_core())
    (to_pbx,) = sent_to(restarted.receive(ok, TRUNK_SOURCE, at=1.0), PBX)
    assert values(to_pbx, "Via") == [pbx]
    assert value(to_pbx, "From") == ORIGINAL_FROM


@pytest.mark.parametrize(
    ("upstream_via", "reason"),
    [
        ("SIP/2.0/UDP pbx.invalid:5070;branch=z9hG4bK-host", "a host name"),
        ("SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK-bcast", "broadcast"),
        ("SIP/2.0/UDP 224.0.1.75:5060;branch=z9hG4bK-mcast", "multicast"),
    ],
)
def test_a_stateless_relay_never_goes_to_a_name_or_a_broadcast(
    upstream_via: str, reason: str
) -> None:
    """Without a transaction the next Via decides; a name would need DNS on the hot path."""
    core = make_core()
    response = (
        "SIP/2.0 200 OK\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKcp0123456789;rport\r\n"
        f"Via: {upstream_via}\r\n"
        "From: <sip:1001@pbx.invalid>;tag=a\r\nTo: <sip:2@127.0.0.1>;tag=b\r\n"
        "Call-ID: relay-nowhere@pbx\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    core.receive(response, TRUNK_SOURCE, 0.0)
    assert core.datagrams_to_send() == []
    assert core.counters["dropped"] == 1
    (dropped,) = core.events_to_handle()
    assert isinstance(dropped, Dropped)
    assert reason in dropped.detail
