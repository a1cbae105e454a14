"""Review findings on the proxy core (RFC 3261 16/17, RFC 6026, Kamailio tm behaviour): each test
is one interop bug a PBX <-> trunk deployment would hit."""

from __future__ import annotations

from proxy.sip.addresses import Source
from tests.proxy.sip.support import (
    BACKUP,
    CALLEE,
    ORIGINAL_FROM,
    PBX,
    PBX_CONTACT,
    PBX_SOURCE,
    REWRITTEN_FROM,
    TRUNK,
    TRUNK_SOURCE,
    Clocked,
    forwarded_invite,
    in_dialog,
    invite,
    make_core,
    pbx_cancel,
    response_to,
    sent_to,
    start_line,
    two_trunks,
    value,
    values,
    with_header_replaced,
)


def established(clocked: Clocked) -> tuple[bytes, bytes, str]:
    """An answered outbound call: the INVITE the trunk got, the trunk's 200, our Record-Route."""
    fwd = forwarded_invite(clocked)
    ok = response_to(fwd, 200, "OK", extra="Contact: <sip:callee@127.0.0.1:5080>")
    (to_pbx,) = sent_to(clocked.receive(ok, TRUNK_SOURCE, at=0.1), PBX)
    (record_route,) = values(to_pbx, "Record-Route")
    return fwd, ok, record_route


# ----------------------------------------------------------------- routing
def test_pbx_outbound_proxy_route_is_removed_from_the_initial_invite() -> None:
    """Asterisk `outbound_proxy=sip:proxy\\;lr` (and FreeSWITCH/pjsip alike) put our URI in a
    Route header of the initial INVITE. RFC 3261 16.4: the proxy removes its own Route entry;
    left in, the trunk's SBC loose-routes the INVITE back to us (or rejects it)."""
    clocked = Clocked(make_core())
    request = invite(extra="Route: <sip:127.0.0.1:5060;lr>\r\n")
    fwd = forwarded_invite(clocked, request)
    assert values(fwd, "Route") == []


def test_inbound_call_from_the_second_trunk_keeps_its_dialog_on_that_trunk() -> None:
    """An inbound call arriving from `--trunk` #2: the PBX's BYE must go back to trunk #2, not
    to trunk #1, which knows nothing of the call."""
    clocked = two_trunks()
    backup_source = Source("udp", BACKUP.host, BACKUP.port)
    inbound = (
        b"INVITE sip:1001@127.0.0.1:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.2:5090;branch=z9hG4bK-in-1;rport\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: <sip:+442079460000@127.0.0.2>;tag=caller-1\r\n"
        b"To: <sip:+3228880001@127.0.0.1>\r\n"
        b"Call-ID: in-1@trunk2\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"Contact: <sip:caller@127.0.0.2:5090>\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    (to_pbx,) = sent_to(clocked.receive(inbound, backup_source, at=0.0), PBX)
    ok = response_to(to_pbx, 200, "OK", to_tag="pbx-2", extra=f"Contact: <{PBX_CONTACT}>")
    (answer,) = sent_to(clocked.receive(ok, PBX_SOURCE, at=0.1), BACKUP)
    (record_route,) = values(answer, "Record-Route")
    bye = in_dialog(
        "BYE",
        uri="sip:caller@127.0.0.2:5090",
        via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-pbx-bye;rport",
        from_="<sip:+3228880001@127.0.0.1>;tag=pbx-2",
        to="<sip:+442079460000@127.0.0.2>;tag=caller-1",
        call_id="in-1@trunk2",
        route=record_route,
    )
    out = clocked.receive(bye, PBX_SOURCE, at=5.0)
    (forwarded,) = sent_to(out, BACKUP)
    assert start_line(forwarded) == "BYE sip:caller@127.0.0.2:5090 SIP/2.0"
    assert sent_to(out, TRUNK) == []


def test_second_trunk_connecting_over_tcp_from_an_ephemeral_port_is_the_trunk() -> None:
    """A TCP trunk opens its own connections from ephemeral ports; the first trunk's host is
    recognised for that, the second trunk's must be too (else 403 for its calls)."""
    clocked = two_trunks()
    source = Source("tcp", BACKUP.host, 40123, connection=7)
    request = invite(call_id="in-2@trunk2").replace(
        b"SIP/2.0/UDP 127.0.0.1:5070", b"SIP/2.0/TCP 127.0.0.2:40123"
    )
    out = clocked.receive(request, source, at=0.0)
    assert [start_line(o.data) for o in out if o.target.host == BACKUP.host] == [
        "SIP/2.0 100 Trying"
    ]
    assert len(sent_to(out, PBX)) == 1


# ----------------------------------------------------------------- CANCEL and ACK
def test_stateless_cancel_carries_the_branch_the_invite_was_forwarded_with() -> None:
    """After a restart the CANCEL is forwarded statelessly; RFC 3261 9.1/17.2.3: the trunk only
    matches it to the INVITE when its top Via branch is the INVITE's."""
    before = Clocked(make_core())
    fwd = forwarded_invite(before)
    restarted = Clocked(make_core())
    (cancel,) = sent_to(restarted.receive(pbx_cancel(), PBX_SOURCE, at=1.0), TRUNK)
    assert values(cancel, "Via")[0] == values(fwd, "Via")[0]


def test_ack_to_the_pbx_for_its_non_2xx_keeps_the_pbx_s_to() -> None:
    """RFC 3261 17.1.1.3: the ACK's To equals the To of the response it acknowledges. A trunk
    re-INVITE that the PBX answers 491: the ACK the proxy sends the PBX carries the PBX's own To,
    not the identity the trunk sees."""
    clocked = Clocked(make_core())
    _, _, record_route = established(clocked)
    reinvite = in_dialog(
        "INVITE",
        uri=PBX_CONTACT,
        via="SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-trunk-reinv;rport",
        from_=CALLEE,
        to=REWRITTEN_FROM,
        cseq=2,
        route=record_route,
    )
    (forwarded,) = sent_to(clocked.receive(reinvite, TRUNK_SOURCE, at=5.0), PBX)
    assert value(forwarded, "To") == ORIGINAL_FROM
    pending = response_to(forwarded, 491, "Request Pending")
    out = clocked.receive(pending, PBX_SOURCE, at=5.1)
    (ack,) = sent_to(out, PBX)
    assert start_line(ack) == f"ACK {PBX_CONTACT} SIP/2.0"
    assert value(ack, "To") == value(pending, "To") == ORIGINAL_FROM
    (relayed,) = sent_to(out, TRUNK)
    assert value(relayed, "To") == REWRITTEN_FROM


# ----------------------------------------------------------------- Timer C and late 2xx
def test_timer_c_is_reset_by_every_provisional_other_than_100() -> None:
    """RFC 3261 16.7 step 2 (Kamailio restart_fr_on_each_reply): a call into a queue that keeps
    sending 183s is not cancelled 180 s after the first one."""
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    clocked.receive(response_to(fwd, 180, "Ringing"), TRUNK_SOURCE, at=0.1)
    clocked.receive(response_to(fwd, 183, "Session Progress"), TRUNK_SOURCE, at=170.0)
    fired = clocked.advance(200.0)
    assert [start_line(o.data) for _, o in fired] == []
    fired = clocked.advance(350.1)  # Timer C: 180 s after the 183
    assert sorted(start_line(o.data) for _, o in fired) == [
        "CANCEL sip:00442079460000@127.0.0.1:5060 SIP/2.0",
        "SIP/2.0 408 Request Timeout",
    ]


def test_2xx_crossing_the_timer_c_cancel_still_reaches_the_pbx_at_once() -> None:
    """RFC 3261 16.7 step 5 / 16.8: a 2xx is always forwarded, even after the proxy answered
    408 itself. The first 2xx must not be dropped (over TCP there is no retransmission)."""
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    clocked.receive(response_to(fwd, 180, "Ringing"), TRUNK_SOURCE, at=0.1)
    fired = clocked.advance(180.2)
    assert "SIP/2.0 408 Request Timeout" in [start_line(o.data) for _, o in fired]
    ok = response_to(fwd, 200, "OK")
    (to_pbx,) = sent_to(clocked.receive(ok, TRUNK_SOURCE, at=180.3), PBX)
    assert start_line(to_pbx) == "SIP/2.0 200 OK"
    assert value(to_pbx, "From") == ORIGINAL_FROM
    assert len(values(to_pbx, "Via")) == 1


# ----------------------------------------------------------------- stateless restore
def test_2xx_retransmission_with_a_reformatted_from_is_still_restored() -> None:
    """A retransmitted 2xx goes statelessly; Sofia-SIP/pjsip re-serialise From (spacing, case)
    rather than copying bytes. The PBX must still get its own From, recognised by the tag."""
    clocked = Clocked(make_core())
    _, ok, _ = established(clocked)
    reformatted = with_header_replaced(
        ok, "from", 'From: "+3228880001"<sip:+3228880001@127.0.0.1>;tag=pbx-tag-1'
    )
    (to_pbx,) = sent_to(clocked.receive(reformatted, TRUNK_SOURCE, at=0.6), PBX)
    assert value(to_pbx, "From") == ORIGINAL_FROM


# ----------------------------------------------------------------- state leaks
def test_a_final_that_cannot_be_relayed_does_not_leave_the_server_transaction_for_ever() -> None:
    """A trunk answering with our Via only (it dropped the PBX's): the answer is dropped, but
    the server transaction must still end (else one leaked entry per such request)."""
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    head, body = response_to(fwd, 486, "Busy Here").split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    first_via = next(i for i, line in enumerate(lines) if line.startswith(b"Via:"))
    stripped = b"\r\n".join(lines[: first_via + 1] + lines[first_via + 2 :]) + b"\r\n\r\n" + body
    assert len(values(stripped, "Via")) == 1
    clocked.receive(stripped, TRUNK_SOURCE, at=0.1)
    clocked.advance(600.0)
    assert clocked.core.transaction_count == 0
