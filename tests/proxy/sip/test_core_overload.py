"""Overload and bounded state (issues 6, 7): above `max_transactions` live server transactions, or
while the glue says the loop lags, new INVITEs get 503 + Retry-After at once (a Shed event, no
state kept); in-dialog requests, responses, ACK and CANCEL keep flowing; admission resumes as soon
as the load drops. Fake clock throughout."""

from __future__ import annotations

import dataclasses

from proxy.sip.core import ProxyCore
from proxy.sip.events import Shed
from tests.proxy.sip.support import (
    CALLEE,
    ORIGINAL_FROM,
    PBX,
    PBX_SOURCE,
    TRUNK,
    TRUNK_CONTACT,
    TRUNK_SOURCE,
    Clocked,
    FixedPolicy,
    forwarded_invite,
    in_dialog,
    invite,
    make_core,
    pbx_cancel,
    response_to,
    sent_to,
    start_line,
    value,
    values,
)


def bounded(max_transactions: int, max_dialogs: int = 100_000) -> Clocked:
    core = make_core()
    config = dataclasses.replace(
        core.config, max_transactions=max_transactions, max_dialogs=max_dialogs
    )
    return Clocked(ProxyCore(config, FixedPolicy()))


def new_invite(n: int) -> bytes:
    return invite(branch=f"z9hG4bK-new-{n}", call_id=f"new-{n}@pbx")


def test_invites_over_the_bound_get_503_with_retry_after_and_no_state() -> None:
    clocked = bounded(2)
    for n in range(2):
        assert sent_to(clocked.receive(new_invite(n), PBX_SOURCE), TRUNK)
    out = clocked.receive(new_invite(2), PBX_SOURCE)
    (refusal,) = out
    assert refusal.target == PBX
    assert start_line(refusal.data) == "SIP/2.0 503 Service Unavailable"
    assert value(refusal.data, "Retry-After") == "5"
    assert value(refusal.data, "CSeq") == "1 INVITE"
    assert clocked.core.server_transaction_count == 2
    assert clocked.core.counters["shed"] == 1
    shed = [e for e in clocked.core.events_to_handle() if isinstance(e, Shed)]
    assert shed == [Shed(PBX_SOURCE, "transactions", 5)]


def test_a_new_invite_from_the_trunk_is_shed_too() -> None:
    clocked = bounded(0)
    out = clocked.receive(invite(to="1001"), TRUNK_SOURCE)
    assert [start_line(o.data) for o in out] == ["SIP/2.0 503 Service Unavailable"]
    assert out[0].target == TRUNK


def test_admission_resumes_as_soon_as_the_pending_call_is_answered() -> None:
    """The bound counts calls being set up; a transaction that answered and only lingers to
    absorb retransmissions (RFC 6026 Accepted, Timer L: 32 s) does not hold a place, or the
    bound would shed at max_transactions / 64 s of calls per second."""
    clocked = bounded(1)
    fwd = forwarded_invite(clocked, new_invite(0))
    assert clocked.core.pending_transaction_count == 1
    assert start_line(clocked.receive(new_invite(1), PBX_SOURCE)[0].data).startswith(
        "SIP/2.0 503"
    )
    clocked.receive(response_to(fwd, 200, "OK"), TRUNK_SOURCE, at=0.1)
    assert clocked.core.pending_transaction_count == 0
    assert clocked.core.server_transaction_count == 1  # still absorbing in Accepted
    assert sent_to(clocked.receive(new_invite(2), PBX_SOURCE), TRUNK)
    assert clocked.core.pending_transaction_count == 1  # the call admitted just now


def test_in_dialog_requests_responses_ack_and_cancel_flow_while_shedding() -> None:
    clocked = bounded(1)
    fwd = forwarded_invite(clocked, invite())  # the one admitted call, ringing
    (ringing,) = sent_to(clocked.receive(response_to(fwd, 180, "Ringing"), TRUNK_SOURCE), PBX)
    assert start_line(ringing) == "SIP/2.0 180 Ringing"
    clocked.core.set_overloaded(True)
    assert start_line(clocked.receive(new_invite(1), PBX_SOURCE)[0].data).startswith("SIP/2.0 503")
    out = clocked.receive(pbx_cancel(), PBX_SOURCE)  # CANCEL: answered and forwarded
    assert [start_line(o.data) for o in out if o.target == PBX] == ["SIP/2.0 200 OK"]
    assert [start_line(d).split()[0] for d in sent_to(out, TRUNK)] == ["CANCEL"]
    (terminated,) = sent_to(
        clocked.receive(response_to(fwd, 487, "Request Terminated"), TRUNK_SOURCE), PBX
    )
    assert start_line(terminated) == "SIP/2.0 487 Request Terminated"


def test_an_established_dialog_keeps_working_while_the_loop_lags() -> None:
    clocked = Clocked(make_core())
    fwd = forwarded_invite(clocked)
    ok = response_to(fwd, 200, "OK", extra=f"Contact: <{TRUNK_CONTACT}>")
    (ok_up,) = sent_to(clocked.receive(ok, TRUNK_SOURCE, at=0.1), PBX)
    (route,) = values(ok_up, "Record-Route")
    clocked.core.set_overloaded(True)
    for method, cseq in (("ACK", 1), ("INVITE", 2), ("BYE", 3)):  # a re-INVITE is in-dialog
        request = in_dialog(
            method,
            uri=TRUNK_CONTACT,
            via=f"SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-dlg-{cseq};rport",
            from_=ORIGINAL_FROM,
            to=CALLEE,
            cseq=cseq,
            route=route,
        )
        assert sent_to(clocked.receive(request, PBX_SOURCE, at=0.2 + cseq), TRUNK), method
    assert clocked.core.counters["shed"] == 0


def test_loop_lag_sheds_and_recovery_admits_again() -> None:
    clocked = Clocked(make_core())
    clocked.core.set_overloaded(True)
    assert clocked.core.overloaded
    (refusal,) = clocked.receive(new_invite(0), PBX_SOURCE)
    assert start_line(refusal.data) == "SIP/2.0 503 Service Unavailable"
    assert [e for e in clocked.core.events_to_handle() if isinstance(e, Shed)] == [
        Shed(PBX_SOURCE, "loop lag", 5)
    ]
    assert clocked.core.transaction_count == 0
    clocked.core.set_overloaded(False)
    assert sent_to(clocked.receive(new_invite(1), PBX_SOURCE, at=0.5), TRUNK)


def test_the_dialog_memory_is_capped_by_the_config() -> None:
    clocked = bounded(20_000, max_dialogs=3)
    for n in range(10):
        forwarded_invite(clocked, new_invite(n))
    assert clocked.core.dialog_count == 3


def test_memory_of_ended_transactions_is_released() -> None:
    """A flood of INVITEs to a trunk that never answers: the dialog memory stays within its
    bound meanwhile, and once their timers fire nothing is left (transactions, timers, and the
    remembered dialogs of calls that never got a 2xx)."""
    clocked = bounded(20_000, max_dialogs=100)
    for n in range(500):
        clocked.receive(new_invite(n), PBX_SOURCE, at=n * 0.001)
    assert clocked.core.transaction_count == 1000  # server + client each
    assert clocked.core.dialog_count == 100
    clocked.advance(200.0)
    assert clocked.core.transaction_count == 0
    assert clocked.core.get_timer() is None
    assert clocked.core.dialog_count == 0


def test_the_ack_of_a_shed_invites_503_ends_here() -> None:
    """The 503 of a shed INVITE is sent without state, so no transaction absorbs its ACK; the
    ACK carries our own To tag (Call-ID and From tag decide it), is known as ours, and is never
    forwarded to the trunk as if it were in a dialog (RFC 3261 17.2.1)."""
    clocked = bounded(0)
    (refusal,) = clocked.receive(new_invite(7), PBX_SOURCE)
    to_line = value(refusal.data, "To")
    assert ";tag=cp" in to_line
    ack = in_dialog(
        "ACK",
        uri="sip:00442079460000@127.0.0.1:5060",
        via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-new-7;rport",
        from_=ORIGINAL_FROM,
        to=to_line,
        call_id="new-7@pbx",
        cseq=1,
    )
    assert clocked.receive(ack, PBX_SOURCE) == []
    assert clocked.core.counters["acks_of_our_answers"] == 1
    # The same 503 again for a retransmission: the To tag does not change.
    (again,) = clocked.receive(new_invite(7), PBX_SOURCE)
    assert value(again.data, "To") == to_line
