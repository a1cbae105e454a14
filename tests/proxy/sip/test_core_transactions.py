"""Transactions with a fake clock: retransmissions, RFC 3261 timers, non-2xx ACK, CANCEL."""

from __future__ import annotations

import pytest

from proxy.sip.addresses import Target
from tests.proxy.sip.support import (
    ORIGINAL_FROM,
    PBX,
    PBX_SOURCE,
    PBX_VIA,
    TRUNK,
    TRUNK_SOURCE,
    Clocked,
    forwarded_invite,
    in_dialog,
    invite,
    make_core,
    param,
    pbx_cancel,
    response_to,
    sent_to,
    start_line,
    value,
    values,
)

# RFC 3261 17.1.1.2: Timer A doubles from T1 (0.5 s) until Timer B (64*T1) ends it.
INVITE_RETRANSMISSIONS = [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
# RFC 3261 17.1.2.2: Timer E doubles up to T2 (4 s) until Timer F (64*T1).
NON_INVITE_RETRANSMISSIONS = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
# RFC 3261 17.2.1: Timer G for a non-2xx final over UDP, T1 doubling up to T2, until Timer H.
FINAL_RETRANSMISSIONS = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]


def options(branch: str = "z9hG4bK-opt-1") -> bytes:
    return in_dialog(
        "OPTIONS",
        uri="sip:trunk.example.com",
        via=f"SIP/2.0/UDP 127.0.0.1:5070;branch={branch}",
        from_=ORIGINAL_FROM,
        to="<sip:trunk.example.com>",
        call_id="opt-1@pbx",
        cseq=1,
    )


def pbx_ack(final: bytes, *, branch: str = "z9hG4bK-inv-1") -> bytes:
    """The ACK the PBX sends for a non-2xx final: same branch as its INVITE, To from the final."""
    return in_dialog(
        "ACK",
        uri="sip:00442079460000@127.0.0.1:5060",
        via=f"SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport",
        from_=ORIGINAL_FROM,
        to=value(final, "To"),
        cseq=1,
    )


# ----------------------------------------------------------------- retransmissions from the PBX
def test_retransmitted_invite_before_any_answer_gets_100_again_and_is_not_forwarded() -> None:
    clocked = Clocked(make_core())
    forwarded_invite(clocked)
    out = clocked.receive(invite(), PBX_SOURCE, at=0.2)
    assert sent_to(out, TRUNK) == []
    assert [start_line(o.data) for o in out] == ["SIP/2.0 100 Trying"]
    assert out[0].target == PBX
    assert clocked.core.counters["retransmissions_absorbed"] == 1


def test_retransmitted_invite_gets_the_last_relayed_provisional() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    (ringing_to_pbx,) = sent_to(
        clocked.receive(response_to(fwd, 180, "Ringing"), TRUNK_SOURCE, at=0.1), PBX
    )
    for at in (1.0, 2.0):
        out = clocked.receive(invite(), PBX_SOURCE, at=at)
        assert [o.data for o in out] == [ringing_to_pbx]
        assert out[0].target == PBX


def test_retransmitted_invite_after_a_non_2xx_gets_that_final_again() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    (busy_to_pbx,) = sent_to(
        clocked.receive(response_to(fwd, 486, "Busy Here"), TRUNK_SOURCE, at=0.1), PBX
    )
    out = clocked.receive(invite(), PBX_SOURCE, at=0.3)
    assert [(o.data, o.target) for o in out] == [(busy_to_pbx, PBX)]


def test_retransmitted_invite_after_the_2xx_is_absorbed_silently() -> None:
    """RFC 6026 Accepted state: the 2xx is retransmitted end to end by the UAS, not by us."""
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    clocked.receive(response_to(fwd, 200, "OK"), TRUNK_SOURCE, at=0.1)
    assert clocked.receive(invite(), PBX_SOURCE, at=0.3) == []


def test_a_retransmitted_invite_is_never_forwarded_twice_over_the_whole_transaction() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    forwarded = [fwd]
    for at in (0.5, 1.5, 3.5):
        forwarded += sent_to(clocked.receive(invite(), PBX_SOURCE, at=at), TRUNK)
    clocked.receive(response_to(fwd, 180, "Ringing"), TRUNK_SOURCE, at=4.0)
    for at in (5.0, 9.0):
        forwarded += sent_to(clocked.receive(invite(), PBX_SOURCE, at=at), TRUNK)
    retransmitted_by_timer = [o.data for _, o in clocked.fired if o.target == TRUNK]
    assert forwarded == [fwd]
    assert retransmitted_by_timer == [fwd] * 3  # Timer A at 0.5, 1.5, 3.5 before the 180


# ----------------------------------------------------------------- Timer A / B
def test_timer_a_retransmits_the_invite_to_the_trunk_at_t1_doubling() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    fired = clocked.advance(31.9)
    assert [(at, o.data, o.target) for at, o in fired] == [
        (at, fwd, TRUNK) for at in INVITE_RETRANSMISSIONS
    ]


def test_timer_b_answers_408_to_the_pbx_and_stops_retransmitting() -> None:
    clocked = Clocked(make_core())
    forwarded_invite(clocked)
    clocked.advance(31.9)
    fired = clocked.advance(32.0)
    assert [(at, o.target, start_line(o.data)) for at, o in fired] == [
        (32.0, PBX, "SIP/2.0 408 Request Timeout")
    ]
    timeout = fired[0][1].data
    assert value(timeout, "From") == ORIGINAL_FROM
    assert values(timeout, "Via") == [PBX_VIA]
    assert value(timeout, "CSeq") == "1 INVITE"
    assert param(value(timeout, "To"), "tag")
    assert clocked.core.counters["timeouts"] == 1
    later = clocked.advance(40.0)
    assert [o.target for _, o in later] == [PBX] * len([o for _, o in later])  # only Timer G


def test_no_timer_a_toward_a_tcp_trunk_but_timer_b_still_answers() -> None:
    clocked = Clocked(make_core(trunk=Target("tcp", "127.0.0.1", 5080)))
    forwarded_invite(clocked)
    fired = clocked.advance(32.0)
    assert [(at, o.target, start_line(o.data)) for at, o in fired] == [
        (32.0, PBX, "SIP/2.0 408 Request Timeout")
    ]


def test_a_provisional_stops_timer_a_and_b() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    clocked.receive(response_to(fwd, 180, "Ringing"), TRUNK_SOURCE, at=0.1)
    assert clocked.advance(60.0) == []


def test_timer_c_cancels_a_call_ringing_for_ever_and_answers_408() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    clocked.receive(response_to(fwd, 180, "Ringing"), TRUNK_SOURCE, at=0.1)
    fired = clocked.advance(180.1)
    assert [(o.target, start_line(o.data).split(" ")[0]) for _, o in fired] == [
        (TRUNK, "CANCEL"), (PBX, "SIP/2.0"),
    ]
    assert start_line(fired[1][1].data) == "SIP/2.0 408 Request Timeout"


# ----------------------------------------------------------------- Timer E / F
def test_timer_e_retransmits_a_non_invite_capped_at_t2_and_timer_f_answers_408() -> None:
    clocked = Clocked(make_core())
    out = clocked.receive(options(), PBX_SOURCE)
    assert out[0].target == TRUNK and len(out) == 1  # no 100 Trying for a non-INVITE
    fwd = out[0].data
    fired = clocked.advance(32.0)
    retransmissions = [(at, o.data) for at, o in fired if o.target == TRUNK]
    assert retransmissions == [(at, fwd) for at in NON_INVITE_RETRANSMISSIONS]
    answers = [(at, start_line(o.data)) for at, o in fired if o.target == PBX]
    assert answers == [(32.0, "SIP/2.0 408 Request Timeout")]
    assert value(fired[-1][1].data, "CSeq") == "1 OPTIONS"


def test_timer_e_goes_to_t2_after_a_provisional() -> None:
    clocked = Clocked(make_core())
    (fwd,) = sent_to(clocked.receive(options(), PBX_SOURCE), TRUNK)
    clocked.advance(0.5)  # first retransmission at T1
    out = clocked.receive(response_to(fwd, 100, "Trying", to_tag=None), TRUNK_SOURCE, at=0.7)
    assert out == []
    fired = clocked.advance(12.0)
    assert [at for at, o in fired if o.target == TRUNK] == [1.5, 5.5, 9.5]


def test_non_invite_final_ends_retransmissions_and_is_relayed() -> None:
    clocked = Clocked(make_core())
    (fwd,) = sent_to(clocked.receive(options(), PBX_SOURCE), TRUNK)
    ok = response_to(fwd, 200, "OK")
    out = clocked.receive(ok, TRUNK_SOURCE, at=0.2)
    assert [(o.target, start_line(o.data)) for o in out] == [(PBX, "SIP/2.0 200 OK")]
    assert clocked.advance(60.0) == []
    assert clocked.core.transaction_count == 0


def test_retransmitted_non_invite_gets_the_final_again() -> None:
    clocked = Clocked(make_core())
    (fwd,) = sent_to(clocked.receive(options(), PBX_SOURCE), TRUNK)
    (ok_to_pbx,) = sent_to(clocked.receive(response_to(fwd, 200, "OK"), TRUNK_SOURCE, at=0.2), PBX)
    out = clocked.receive(options(), PBX_SOURCE, at=1.0)
    assert [(o.data, o.target) for o in out] == [(ok_to_pbx, PBX)]


def test_retransmitted_non_invite_before_any_answer_is_absorbed_silently() -> None:
    clocked = Clocked(make_core())
    clocked.receive(options(), PBX_SOURCE)
    assert clocked.receive(options(), PBX_SOURCE, at=0.3) == []


# ----------------------------------------------------------------- transport failure
@pytest.mark.parametrize("method", ["INVITE", "OPTIONS"])
def test_transport_failure_toward_the_trunk_answers_503(method: str) -> None:
    clocked = Clocked(make_core())
    request = invite() if method == "INVITE" else options()
    clocked.receive(request, PBX_SOURCE)
    clocked.core.transport_failed(TRUNK, 0.01)
    out = clocked.core.datagrams_to_send()
    assert [(o.target, start_line(o.data)) for o in out] == [
        (PBX, "SIP/2.0 503 Service Unavailable")
    ]
    assert value(out[0].data, "CSeq") == f"1 {method}"
    assert [o.target for _, o in clocked.advance(40.0)].count(TRUNK) == 0  # no retransmission
    assert clocked.core.counters["transport_failures"] == 1


def test_transport_failure_of_another_target_changes_nothing() -> None:
    clocked = Clocked(make_core())
    clocked.receive(invite(), PBX_SOURCE)
    clocked.core.transport_failed(Target("udp", "127.0.0.1", 9999), 0.01)
    assert clocked.core.datagrams_to_send() == []


# ----------------------------------------------------------------- non-2xx final and its ACK
def test_486_is_relayed_and_the_proxy_acks_the_trunk_itself() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    busy = response_to(fwd, 486, "Busy Here")
    out = clocked.receive(busy, TRUNK_SOURCE, at=0.1)
    (to_pbx,) = sent_to(out, PBX)
    assert start_line(to_pbx) == "SIP/2.0 486 Busy Here"
    assert value(to_pbx, "From") == ORIGINAL_FROM
    assert values(to_pbx, "Via") == [values(fwd, "Via")[1]]
    (ack,) = sent_to(out, TRUNK)
    assert start_line(ack) == "ACK sip:00442079460000@127.0.0.1:5060 SIP/2.0"
    assert values(ack, "Via") == [values(fwd, "Via")[0]]  # same branch as the INVITE
    assert value(ack, "To") == value(busy, "To") == "<sip:00442079460000@127.0.0.1>;tag=trunk-1"
    assert value(ack, "From") == value(fwd, "From")
    assert value(ack, "Call-ID") == "call-1@pbx"
    assert value(ack, "CSeq") == "1 ACK"
    assert value(ack, "Max-Forwards") == "70"
    assert value(ack, "Content-Length") == "0"


def test_pbx_ack_for_the_486_is_absorbed_and_stops_timer_g() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    (busy_to_pbx,) = sent_to(
        clocked.receive(response_to(fwd, 486, "Busy Here"), TRUNK_SOURCE, at=0.1), PBX
    )
    fired = clocked.advance(2.0)
    assert [(at, o.data, o.target) for at, o in fired] == [
        (0.6, busy_to_pbx, PBX), (1.6, busy_to_pbx, PBX)
    ]
    assert clocked.receive(pbx_ack(busy_to_pbx), PBX_SOURCE, at=2.1) == []
    assert clocked.core.counters["ack_absorbed"] == 1
    assert clocked.advance(100.0) == []
    assert clocked.core.transaction_count == 0


def test_timer_g_retransmits_the_486_until_timer_h_without_ack() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    (busy_to_pbx,) = sent_to(
        clocked.receive(response_to(fwd, 486, "Busy Here"), TRUNK_SOURCE, at=1.0), PBX
    )
    fired = clocked.advance(100.0)
    assert [(at, o.data, o.target) for at, o in fired] == [
        (1.0 + at, busy_to_pbx, PBX) for at in FINAL_RETRANSMISSIONS
    ]
    assert clocked.core.transaction_count == 0


def test_retransmitted_486_from_the_trunk_is_acked_again_not_relayed() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    busy = response_to(fwd, 486, "Busy Here")
    (first_ack,) = sent_to(clocked.receive(busy, TRUNK_SOURCE, at=0.1), TRUNK)
    out = clocked.receive(busy, TRUNK_SOURCE, at=0.3)
    assert [(o.data, o.target) for o in out] == [(first_ack, TRUNK)]


def test_pbx_ack_over_a_comma_joined_via_is_absorbed() -> None:
    clocked = Clocked(make_core())
    request = invite().replace(
        b"branch=z9hG4bK-inv-1;rport",
        b"branch=z9hG4bK-inv-1;rport, SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK-x",
    )
    fwd = forwarded_invite(clocked, request)
    (busy_to_pbx,) = sent_to(
        clocked.receive(response_to(fwd, 486, "Busy Here"), TRUNK_SOURCE, at=0.1), PBX
    )
    assert clocked.receive(pbx_ack(busy_to_pbx), PBX_SOURCE, at=0.2) == []


# ----------------------------------------------------------------- CANCEL
def assert_cancel_for(cancel: bytes, fwd: bytes) -> None:
    assert start_line(cancel) == "CANCEL sip:00442079460000@127.0.0.1:5060 SIP/2.0"
    assert values(cancel, "Via") == [values(fwd, "Via")[0]]  # the forwarded INVITE's branch
    assert value(cancel, "From") == value(fwd, "From")
    assert value(cancel, "To") == value(fwd, "To")
    assert value(cancel, "Call-ID") == value(fwd, "Call-ID")
    assert value(cancel, "CSeq") == "1 CANCEL"


def test_cancel_after_a_provisional_200_to_the_pbx_and_cancel_to_the_trunk() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    clocked.receive(response_to(fwd, 180, "Ringing"), TRUNK_SOURCE, at=0.1)
    out = clocked.receive(pbx_cancel(), PBX_SOURCE, at=1.0)
    (ok,) = sent_to(out, PBX)
    assert start_line(ok) == "SIP/2.0 200 OK"
    assert value(ok, "CSeq") == "1 CANCEL"
    assert values(ok, "Via") == [PBX_VIA]
    (cancel,) = sent_to(out, TRUNK)
    assert_cancel_for(cancel, fwd)


def test_cancel_before_any_provisional_waits_for_one() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    out = clocked.receive(pbx_cancel(), PBX_SOURCE, at=0.1)
    assert [(o.target, start_line(o.data)) for o in out] == [(PBX, "SIP/2.0 200 OK")]
    fired = clocked.advance(0.4)
    assert fired == []
    out = clocked.receive(response_to(fwd, 100, "Trying", to_tag=None), TRUNK_SOURCE, at=0.45)
    (cancel,) = sent_to(out, TRUNK)
    assert_cancel_for(cancel, fwd)
    assert sent_to(out, PBX) == []


def test_the_487_is_relayed_acked_and_the_pbx_ack_absorbed() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    clocked.receive(response_to(fwd, 180, "Ringing"), TRUNK_SOURCE, at=0.1)
    (cancel,) = sent_to(clocked.receive(pbx_cancel(), PBX_SOURCE, at=1.0), TRUNK)
    assert clocked.receive(response_to(cancel, 200, "OK"), TRUNK_SOURCE, at=1.1) == []
    terminated = response_to(fwd, 487, "Request Terminated")
    out = clocked.receive(terminated, TRUNK_SOURCE, at=1.2)
    (to_pbx,) = sent_to(out, PBX)
    assert start_line(to_pbx) == "SIP/2.0 487 Request Terminated"
    assert value(to_pbx, "From") == ORIGINAL_FROM
    assert value(to_pbx, "CSeq") == "1 INVITE"
    (ack,) = sent_to(out, TRUNK)
    assert start_line(ack).startswith("ACK ")
    assert values(ack, "Via") == [values(fwd, "Via")[0]]
    assert clocked.receive(pbx_ack(to_pbx), PBX_SOURCE, at=1.3) == []
    assert clocked.advance(100.0) == []


def test_retransmitted_cancel_gets_the_200_again_and_sends_no_second_cancel() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    clocked.receive(response_to(fwd, 180, "Ringing"), TRUNK_SOURCE, at=0.1)
    (ok,) = sent_to(clocked.receive(pbx_cancel(), PBX_SOURCE, at=1.0), PBX)
    out = clocked.receive(pbx_cancel(), PBX_SOURCE, at=1.2)
    assert [(o.data, o.target) for o in out] == [(ok, PBX)]


def test_cancel_is_retransmitted_by_timer_e_until_answered() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    clocked.receive(response_to(fwd, 180, "Ringing"), TRUNK_SOURCE, at=0.1)
    (cancel,) = sent_to(clocked.receive(pbx_cancel(), PBX_SOURCE, at=1.0), TRUNK)
    fired = clocked.advance(2.6)
    assert [(at, o.data) for at, o in fired if o.target == TRUNK] == [(1.5, cancel), (2.5, cancel)]


def test_cancel_without_a_matching_invite_is_forwarded_statelessly() -> None:
    clocked = Clocked(make_core())
    out = clocked.receive(pbx_cancel(), PBX_SOURCE)
    (cancel,) = sent_to(out, TRUNK)
    assert start_line(cancel).startswith("CANCEL ")
    assert value(cancel, "Max-Forwards") == "69"
    assert len(values(cancel, "Via")) == 2


def test_pending_cancel_never_sent_when_the_trunk_answers_final_directly() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    clocked.receive(pbx_cancel(), PBX_SOURCE, at=0.1)
    out = clocked.receive(response_to(fwd, 486, "Busy Here"), TRUNK_SOURCE, at=0.2)
    assert [start_line(data) for data in sent_to(out, TRUNK)] == [
        "ACK sip:00442079460000@127.0.0.1:5060 SIP/2.0"
    ]
    assert [start_line(data) for data in sent_to(out, PBX)] == ["SIP/2.0 486 Busy Here"]


def test_pending_cancel_and_a_silent_trunk_end_with_408() -> None:
    clocked = Clocked(make_core())
    forwarded_invite(clocked)
    clocked.receive(pbx_cancel(), PBX_SOURCE, at=0.1)
    fired = clocked.advance(32.0)
    assert [start_line(o.data) for _, o in fired if o.target == TRUNK] == [
        "INVITE sip:00442079460000@127.0.0.1:5060 SIP/2.0"
    ] * len(INVITE_RETRANSMISSIONS)
    assert [(at, start_line(o.data)) for at, o in fired if o.target == PBX] == [
        (32.0, "SIP/2.0 408 Request Timeout")
    ]


def test_cancel_after_the_final_gets_200_and_nothing_goes_to_the_trunk() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    clocked.receive(response_to(fwd, 486, "Busy Here"), TRUNK_SOURCE, at=0.1)
    out = clocked.receive(pbx_cancel(), PBX_SOURCE, at=0.2)
    assert [(o.target, start_line(o.data)) for o in out] == [(PBX, "SIP/2.0 200 OK")]


def test_after_timer_c_the_487_is_acked_but_not_relayed_over_our_408() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    clocked.receive(response_to(fwd, 180, "Ringing"), TRUNK_SOURCE, at=0.1)
    clocked.advance(180.1)
    out = clocked.receive(response_to(fwd, 487, "Request Terminated"), TRUNK_SOURCE, at=180.2)
    assert [start_line(data) for data in sent_to(out, TRUNK)] == [
        "ACK sip:00442079460000@127.0.0.1:5060 SIP/2.0"
    ]
    assert [o for o in out if o.data.startswith(b"SIP/2.0 487")] == []


def test_a_late_final_after_timer_b_is_acked_not_relayed_over_our_408() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    clocked.advance(32.0)
    late = response_to(fwd, 486, "Busy Here")
    out = clocked.receive(late, TRUNK_SOURCE, at=32.1)
    assert [start_line(data) for data in sent_to(out, TRUNK)] == [
        "ACK sip:00442079460000@127.0.0.1:5060 SIP/2.0"
    ]
    assert [o for o in out if o.data.startswith(b"SIP/2.0 486")] == []
    again = clocked.receive(late, TRUNK_SOURCE, at=33.0)  # its retransmission: ACKed again
    assert [start_line(o.data) for o in again] == ["ACK sip:00442079460000@127.0.0.1:5060 SIP/2.0"]
    clocked.advance(32.1 + 32.0)
    assert clocked.core.transaction_count == 0


def test_a_late_2xx_after_timer_b_still_goes_end_to_end() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    clocked.advance(32.0)
    out = clocked.receive(response_to(fwd, 200, "OK"), TRUNK_SOURCE, at=32.1)
    assert [start_line(o.data) for o in out if o.target == PBX] == ["SIP/2.0 200 OK"]
    assert value(next(o.data for o in out if o.target == PBX), "From") == ORIGINAL_FROM
